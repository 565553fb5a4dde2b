//! The document store: local edits with their outbox entries, reads, the device id, and every
//! piece surviving a reopen of the file.

use fero::{LocalItem, Version};
use fero_sqlite::{Error, OutboxOp, SqliteStore, StoreOptions};
use serde_json::json;

#[tokio::test]
async fn a_put_is_a_pending_edit_with_an_outbox_entry() {
    let store = SqliteStore::open_in_memory().await.unwrap();
    let doc = store
        .put("contacts", "ada", json!({"name": "Ada"}))
        .await
        .unwrap();
    assert_eq!(doc.id, "ada");
    assert_eq!(doc.data, json!({"name": "Ada"}));
    assert_eq!(doc.version, Version(1));
    assert_eq!(LocalItem::base_version(&doc), None);
    assert!(doc.locally_modified && !doc.deleted);
    let outbox = store.outbox("contacts").await.unwrap();
    assert_eq!(outbox.len(), 1);
    assert_eq!(outbox[0].op, OutboxOp::Insert);
    assert_eq!(outbox[0].mutation_id.device, store.device_id());
    assert_eq!(Some(outbox[0].mutation_id.seq), doc.mutation_seq);
    assert_eq!(outbox[0].base_version, None);
    assert_eq!(outbox[0].data, json!({"name": "Ada"}));
    assert_eq!(store.get("contacts", "ada").await.unwrap(), Some(doc));
}

#[tokio::test]
async fn every_local_edit_adds_one_to_the_version_and_gets_the_next_sequence_number() {
    let store = SqliteStore::open_in_memory().await.unwrap();
    store.put("c", "a", json!({"v": 1})).await.unwrap();
    store.put("c", "b", json!({"v": 1})).await.unwrap();
    let a = store.put("c", "a", json!({"v": 2})).await.unwrap();
    assert_eq!(a.version, Version(2));
    let seqs: Vec<u64> = store
        .outbox("c")
        .await
        .unwrap()
        .iter()
        .map(|e| e.mutation_id.seq)
        .collect();
    assert_eq!(seqs.len(), 3);
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert_eq!(a.mutation_seq, Some(seqs[2]));
    let ops: Vec<OutboxOp> = store
        .outbox("c")
        .await
        .unwrap()
        .iter()
        .map(|e| e.op)
        .collect();
    assert_eq!(ops, [OutboxOp::Insert, OutboxOp::Insert, OutboxOp::Update]);
}

#[tokio::test]
async fn a_delete_leaves_a_pending_tombstone_and_a_delete_entry() {
    let store = SqliteStore::open_in_memory().await.unwrap();
    store.put("c", "a", json!({"v": 1})).await.unwrap();
    assert!(store.delete("c", "a").await.unwrap());
    assert_eq!(store.get("c", "a").await.unwrap(), None);
    let tombstone = store
        .get_including_deleted("c", "a")
        .await
        .unwrap()
        .unwrap();
    assert!(tombstone.deleted && tombstone.locally_modified);
    assert_eq!(tombstone.version, Version(2));
    assert_eq!(store.count("c").await.unwrap(), 0);
    let outbox = store.outbox("c").await.unwrap();
    assert_eq!(outbox.last().unwrap().op, OutboxOp::Delete);
    assert_eq!(outbox.last().unwrap().data, json!(null));
    // Nothing live to delete: no new entry.
    assert!(!store.delete("c", "a").await.unwrap());
    assert!(!store.delete("c", "never").await.unwrap());
    assert_eq!(store.outbox("c").await.unwrap().len(), 2);
    // A put over the tombstone brings it back as an insert.
    let back = store.put("c", "a", json!({"v": 3})).await.unwrap();
    assert!(!back.deleted);
    assert_eq!(
        store.outbox("c").await.unwrap().last().unwrap().op,
        OutboxOp::Insert
    );
}

#[tokio::test]
async fn documents_outbox_and_device_id_survive_reopening_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("docs.db");
    let (device, outbox) = {
        let store = SqliteStore::open(&path).await.unwrap();
        store.put("notes", "n1", json!({"t": "one"})).await.unwrap();
        store.put("notes", "n2", json!({"t": "two"})).await.unwrap();
        store.delete("notes", "n2").await.unwrap();
        (
            store.device_id().to_owned(),
            store.outbox("notes").await.unwrap(),
        )
    };
    let store = SqliteStore::open(&path).await.unwrap();
    assert_eq!(store.device_id(), device);
    assert_eq!(store.outbox("notes").await.unwrap(), outbox);
    let n1 = store.get("notes", "n1").await.unwrap().unwrap();
    assert_eq!(n1.data, json!({"t": "one"}));
    assert!(n1.locally_modified);
    assert!(
        store
            .get_including_deleted("notes", "n2")
            .await
            .unwrap()
            .unwrap()
            .deleted
    );
    // Sequence numbers continue after a restart: never handed out twice.
    store
        .put("notes", "n3", json!({"t": "three"}))
        .await
        .unwrap();
    let last = store
        .outbox("notes")
        .await
        .unwrap()
        .last()
        .unwrap()
        .mutation_id
        .seq;
    assert!(outbox.iter().all(|e| e.mutation_id.seq < last));
}

#[tokio::test]
async fn the_device_id_is_generated_once_per_database() {
    let dir = tempfile::tempdir().unwrap();
    let a = SqliteStore::open(dir.path().join("a.db")).await.unwrap();
    let b = SqliteStore::open(dir.path().join("b.db")).await.unwrap();
    assert_ne!(a.device_id(), b.device_id());
    let fixed = SqliteStore::open_with(
        dir.path().join("c.db"),
        StoreOptions::new().device_id("phone-7"),
    )
    .await
    .unwrap();
    assert_eq!(fixed.device_id(), "phone-7");
    drop(fixed);
    // A stored id never changes, whatever the options say later.
    let again = SqliteStore::open_with(
        dir.path().join("c.db"),
        StoreOptions::new().device_id("other"),
    )
    .await
    .unwrap();
    assert_eq!(again.device_id(), "phone-7");
}

/// Device ids used to be a hash of the time and the process id: two stores created in the same
/// process at the same instant could share one, and so share mutation ids. They now come from
/// the operating system's random source.
#[tokio::test]
async fn generated_device_ids_are_random_128_bit_and_kept_across_reopen() {
    let mut seen = std::collections::HashSet::new();
    for _ in 0..64 {
        let store = SqliteStore::open_in_memory().await.unwrap();
        let id = store.device_id().to_owned();
        assert_eq!(id.len(), 32, "{id}");
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
        assert!(seen.insert(id), "two stores got the same device id");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kept.db");
    let first = SqliteStore::open(&path)
        .await
        .unwrap()
        .device_id()
        .to_owned();
    let reopened = SqliteStore::open(&path).await.unwrap();
    assert_eq!(reopened.device_id(), first);
    assert!(!seen.contains(&first));
}

#[tokio::test]
async fn query_lists_live_documents_by_id_and_pages_after_an_id() {
    let store = SqliteStore::open_in_memory().await.unwrap();
    for id in ["d", "b", "a", "e", "c"] {
        store.put("c", id, json!({"id": id})).await.unwrap();
    }
    store.put("other", "z", json!({})).await.unwrap();
    store.delete("c", "c").await.unwrap();
    let ids = |docs: Vec<fero_sqlite::LocalDocument>| -> Vec<String> {
        docs.into_iter().map(|d| d.id).collect()
    };
    assert_eq!(ids(store.query("c").await.unwrap()), ["a", "b", "d", "e"]);
    assert_eq!(
        ids(store.query_after("c", None, 2).await.unwrap()),
        ["a", "b"]
    );
    assert_eq!(
        ids(store.query_after("c", Some("b"), 2).await.unwrap()),
        ["d", "e"]
    );
    assert!(
        store
            .query_after("c", Some("e"), 2)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.count("c").await.unwrap(), 4);
    assert_eq!(store.count("empty").await.unwrap(), 0);
}

#[tokio::test]
async fn data_that_is_not_an_object_and_bad_names_are_refused_without_writing() {
    let store = SqliteStore::open_in_memory().await.unwrap();
    let err = store.put("c", "a", json!([1, 2])).await.unwrap_err();
    assert!(
        matches!(err, Error::InvalidDocument { ref id, .. } if id == "a"),
        "{err}"
    );
    let err = store.put("c", "", json!({})).await.unwrap_err();
    assert!(matches!(err, Error::EmptyId { .. }), "{err}");
    let err = store.put("Bad Name", "a", json!({})).await.unwrap_err();
    assert!(matches!(err, Error::InvalidCollection { .. }), "{err}");
    assert!(err.to_string().contains("Bad Name"));
    assert!(store.query("c").await.unwrap().is_empty());
    assert!(store.outbox("c").await.unwrap().is_empty());
}

#[tokio::test]
async fn a_put_writes_nothing_when_its_outbox_entry_cannot_be_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("atomic.db");
    let store = SqliteStore::open(&path).await.unwrap();
    store.put("c", "a", json!({"v": 1})).await.unwrap();
    // Make the outbox refuse the next entry, as a full disk would.
    let raw = rusqlite::Connection::open(&path).unwrap();
    raw.execute_batch(
        "CREATE TRIGGER refuse_outbox BEFORE INSERT ON fero_outbox
         BEGIN SELECT RAISE(ABORT, 'outbox refused by the test'); END;",
    )
    .unwrap();
    let err = store.put("c", "a", json!({"v": 2})).await.unwrap_err();
    assert!(
        err.to_string().contains("outbox refused by the test"),
        "{err}"
    );
    let err = store.put("c", "b", json!({"v": 1})).await.unwrap_err();
    assert!(matches!(err, Error::Sqlite { .. }), "{err}");
    assert_eq!(
        store.get("c", "a").await.unwrap().unwrap().data,
        json!({"v": 1})
    );
    assert_eq!(store.get("c", "b").await.unwrap(), None);
    assert_eq!(store.outbox("c").await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_database_from_a_newer_fero_sqlite_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("future.db");
    drop(SqliteStore::open(&path).await.unwrap());
    rusqlite::Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    let err = SqliteStore::open(&path).await.unwrap_err();
    assert!(
        matches!(err, Error::SchemaTooNew { found: 99, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("upgrade fero-sqlite"));
}

#[tokio::test]
async fn clones_share_one_database() {
    let store = SqliteStore::open_in_memory().await.unwrap();
    let clone = store.clone();
    clone.put("c", "a", json!({})).await.unwrap();
    assert_eq!(store.count("c").await.unwrap(), 1);
    assert_eq!(store.device_id(), clone.device_id());
}
