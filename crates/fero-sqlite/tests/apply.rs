//! Applying pages of server changes: documents and checkpoint in one transaction, bad pages
//! refused with nothing written, and the `RemoteChanges` contract for local edits.

mod support;

use fero::{
    BackgroundSyncHandler, FeatureKey, InitialSyncHandler, LocalItem, Rebase, RemoteChanges,
    SyncCheckpoint, SyncId, SyncMetadataRepo, SyncPayload, Version,
};
use fero_sqlite::{Error, OutboxOp, SqliteStore};
use serde_json::json;
use support::{FakeRemote, doc, live, no_checkpoint, page_context, sqlite_error, tombstone};

const C: &str = "contacts";

async fn checkpoint(store: &SqliteStore) -> Option<SyncId> {
    store
        .metadata_repo()
        .checkpoint(&FeatureKey::new(C))
        .await
        .unwrap()
        .map(|c| c.last_sync_id)
}

/// Items `from..to` as server documents with `sync_id = index + 1`.
fn items(from: u64, to: u64) -> Vec<SyncPayload<fero_protocol::Document>> {
    live(
        (from..to)
            .map(|i| doc(&format!("c-{i:04}"), i + 1, 1, json!({"n": i})))
            .collect(),
    )
}

#[tokio::test]
async fn a_page_and_its_checkpoint_are_saved_together() {
    let store = SqliteStore::open_in_memory().await.unwrap();
    let handler = store.sync_handler(C, FakeRemote::new()).unwrap();
    let result = handler
        .save_to_local(items(0, 10), &page_context(C, 1, 10))
        .await
        .unwrap();
    assert_eq!(result.applied, 10);
    assert!(result.checkpoint_saved);
    assert!(result.failed.is_empty());
    assert_eq!(checkpoint(&store).await, Some(SyncId(10)));
    let first = store.get(C, "c-0000").await.unwrap().unwrap();
    assert_eq!(first.version, Version(1));
    assert_eq!(first.sync_id, Some(SyncId(1)));
    assert_eq!(LocalItem::base_version(&first), Some(Version(1)));
    assert!(!first.locally_modified);
    assert_eq!(store.count(C).await.unwrap(), 10);
    assert!(store.outbox(C).await.unwrap().is_empty());
}

#[tokio::test]
async fn an_apply_that_fails_mid_page_leaves_documents_and_checkpoint_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("atomic.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let handler = store.sync_handler(C, FakeRemote::new()).unwrap();
    handler
        .save_to_local(items(0, 1000), &page_context(C, 1, 1000))
        .await
        .unwrap();
    let before = store.digest(C).await.unwrap();
    // SQLite itself fails on the 500th row of the next page (as a full disk would).
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch(
            "CREATE TRIGGER fail_mid_page BEFORE INSERT ON fero_documents
             WHEN NEW.id = 'c-1499'
             BEGIN SELECT RAISE(ABORT, 'disk full (injected)'); END;",
        )
        .unwrap();
    let err = handler
        .save_to_local(items(1000, 2000), &page_context(C, 2, 2000))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("disk full (injected)"), "{err}");
    assert!(matches!(sqlite_error(&err), Error::Sqlite { .. }));
    assert_eq!(checkpoint(&store).await, Some(SyncId(1000)));
    assert_eq!(store.count(C).await.unwrap(), 1000);
    assert_eq!(store.get(C, "c-1000").await.unwrap(), None);
    assert_eq!(store.digest(C).await.unwrap(), before);
}

#[tokio::test]
async fn a_page_whose_checkpoint_is_behind_the_stored_one_is_refused() {
    let store = SqliteStore::open_in_memory().await.unwrap();
    let handler = store.sync_handler(C, FakeRemote::new()).unwrap();
    handler
        .save_to_local(items(0, 20), &page_context(C, 1, 20))
        .await
        .unwrap();
    let stale = live(vec![doc("c-0003", 4, 2, json!({"n": "stale"}))]);
    let err = handler
        .save_to_local(stale, &page_context(C, 2, 4))
        .await
        .unwrap_err();
    assert!(!err.is_transient());
    match sqlite_error(&err) {
        Error::CheckpointBehind {
            feature,
            stored,
            received,
        } => {
            assert_eq!(feature.as_str(), C);
            assert_eq!((*stored, *received), (SyncId(20), SyncId(4)));
        }
        other => panic!("expected CheckpointBehind, got {other:?}"),
    }
    assert!(sqlite_error(&err).is_bad_page());
    assert_eq!(checkpoint(&store).await, Some(SyncId(20)));
    let kept = store.get(C, "c-0003").await.unwrap().unwrap();
    assert_eq!((kept.version, kept.data), (Version(1), json!({"n": 3})));
}

#[tokio::test]
async fn a_page_with_a_repeated_id_is_refused_and_nothing_of_it_is_written() {
    let store = SqliteStore::open_in_memory().await.unwrap();
    let handler = store.sync_handler(C, FakeRemote::new()).unwrap();
    let mut page = items(0, 50);
    page.push(SyncPayload::new(doc(
        "c-0007",
        51,
        2,
        json!({"n": "again"}),
    )));
    let err = handler
        .save_to_local(page, &page_context(C, 1, 51))
        .await
        .unwrap_err();
    assert!(
        matches!(sqlite_error(&err), Error::DuplicateId { id, .. } if id == "c-0007"),
        "{err}"
    );
    assert_eq!(store.count(C).await.unwrap(), 0);
    assert_eq!(checkpoint(&store).await, None);
}

#[tokio::test]
async fn a_document_whose_data_is_not_an_object_is_refused_mid_page() {
    let store = SqliteStore::open_in_memory().await.unwrap();
    let handler = store.sync_handler(C, FakeRemote::new()).unwrap();
    let mut page = items(0, 30);
    page[17].item.data = json!("not an object");
    let err = handler
        .save_to_local(page, &page_context(C, 1, 30))
        .await
        .unwrap_err();
    match sqlite_error(&err) {
        Error::InvalidDocument { id, reason, .. } => {
            assert_eq!(id, "c-0017");
            assert!(reason.contains("a string"), "{reason}");
        }
        other => panic!("expected InvalidDocument, got {other:?}"),
    }
    assert_eq!(store.count(C).await.unwrap(), 0);
    assert_eq!(checkpoint(&store).await, None);
}

#[tokio::test]
async fn applying_the_same_page_twice_is_harmless() {
    let store = SqliteStore::open_in_memory().await.unwrap();
    let handler = store.sync_handler(C, FakeRemote::new()).unwrap();
    handler
        .save_to_local(items(0, 100), &page_context(C, 1, 100))
        .await
        .unwrap();
    let digest = store.digest(C).await.unwrap();
    handler
        .save_to_local(items(0, 100), &page_context(C, 1, 100))
        .await
        .unwrap();
    assert_eq!(store.digest(C).await.unwrap(), digest);
    assert_eq!(store.count(C).await.unwrap(), 100);
    assert_eq!(checkpoint(&store).await, Some(SyncId(100)));
}

#[tokio::test]
async fn an_older_server_version_never_replaces_a_newer_copy() {
    let store = SqliteStore::open_in_memory().await.unwrap();
    let handler = store.sync_handler(C, FakeRemote::new()).unwrap();
    handler
        .save_to_local(
            live(vec![doc("a", 5, 3, json!({"v": 3}))]),
            &no_checkpoint(C),
        )
        .await
        .unwrap();
    let result = handler
        .save_to_local(
            live(vec![doc("a", 2, 2, json!({"v": 2}))]),
            &no_checkpoint(C),
        )
        .await
        .unwrap();
    assert_eq!(result.applied, 0);
    assert!(!result.checkpoint_saved);
    assert_eq!(
        store.get(C, "a").await.unwrap().unwrap().data,
        json!({"v": 3})
    );
}

#[tokio::test]
async fn a_tombstone_deletes_the_document_and_keeps_the_server_version() {
    let store = SqliteStore::open_in_memory().await.unwrap();
    let handler = store.sync_handler(C, FakeRemote::new()).unwrap();
    handler
        .save_to_local(items(0, 3), &page_context(C, 1, 3))
        .await
        .unwrap();
    handler
        .save_to_local(
            vec![tombstone("c-0001", 4, 2), tombstone("never-seen", 5, 7)],
            &page_context(C, 1, 5),
        )
        .await
        .unwrap();
    assert_eq!(store.get(C, "c-0001").await.unwrap(), None);
    let gone = store
        .get_including_deleted(C, "c-0001")
        .await
        .unwrap()
        .unwrap();
    assert!(gone.deleted && !gone.locally_modified);
    assert_eq!(gone.base_version, Some(Version(2)));
    assert!(
        store
            .get_including_deleted(C, "never-seen")
            .await
            .unwrap()
            .unwrap()
            .deleted
    );
    assert_eq!(store.count(C).await.unwrap(), 2);
    // A local put over a server tombstone rests on the tombstone's version.
    let back = store.put(C, "c-0001", json!({"n": "back"})).await.unwrap();
    assert_eq!(LocalItem::base_version(&back), Some(Version(2)));
    assert_eq!(back.version, Version(3));
}

#[tokio::test]
async fn a_pending_local_edit_is_kept_when_the_page_does_not_discard_it() {
    let store = SqliteStore::open_in_memory().await.unwrap();
    let handler = store.sync_handler(C, FakeRemote::new()).unwrap();
    handler
        .save_to_local(items(0, 2), &page_context(C, 1, 2))
        .await
        .unwrap();
    store.put(C, "c-0000", json!({"n": "mine"})).await.unwrap();
    store.put(C, "fresh", json!({"n": "new"})).await.unwrap();
    let page = live(vec![
        doc("c-0000", 3, 2, json!({"n": "theirs"})),
        doc("fresh", 4, 1, json!({"n": "server fresh"})),
        doc("c-0001", 5, 2, json!({"n": "update"})),
    ]);
    let result = handler
        .apply_remote_changes(RemoteChanges::from_items(page), &page_context(C, 2, 5))
        .await
        .unwrap();
    assert_eq!(result.applied, 1);
    let mine = store.get(C, "c-0000").await.unwrap().unwrap();
    assert_eq!(mine.data, json!({"n": "mine"}));
    assert_eq!(LocalItem::base_version(&mine), Some(Version(1)));
    assert!(mine.locally_modified);
    assert_eq!(
        store.get(C, "fresh").await.unwrap().unwrap().data,
        json!({"n": "new"})
    );
    assert_eq!(
        store.get(C, "c-0001").await.unwrap().unwrap().data,
        json!({"n": "update"})
    );
    assert_eq!(store.outbox(C).await.unwrap().len(), 2);
    assert_eq!(checkpoint(&store).await, Some(SyncId(5)));
}

#[tokio::test]
async fn discard_local_drops_the_edit_and_its_outbox_entries_and_writes_the_server_state() {
    let store = SqliteStore::open_in_memory().await.unwrap();
    let handler = store.sync_handler(C, FakeRemote::new()).unwrap();
    handler
        .save_to_local(items(0, 2), &page_context(C, 1, 2))
        .await
        .unwrap();
    store.put(C, "c-0000", json!({"n": "mine"})).await.unwrap();
    store
        .put(C, "c-0000", json!({"n": "mine again"}))
        .await
        .unwrap();
    store.put(C, "c-0001", json!({"n": "kept"})).await.unwrap();
    let changes = RemoteChanges {
        items: live(vec![doc("c-0000", 3, 2, json!({"n": "theirs"}))]),
        discard_local: vec![store.get(C, "c-0000").await.unwrap().unwrap()],
        rebase: Vec::new(),
    };
    handler
        .apply_remote_changes(changes, &page_context(C, 2, 3))
        .await
        .unwrap();
    let theirs = store.get(C, "c-0000").await.unwrap().unwrap();
    assert_eq!(theirs.data, json!({"n": "theirs"}));
    assert_eq!(theirs.version, Version(2));
    assert!(!theirs.locally_modified);
    let outbox = store.outbox(C).await.unwrap();
    assert_eq!(outbox.len(), 1);
    assert_eq!(outbox[0].id, "c-0001");
}

#[tokio::test]
async fn a_rebase_keeps_the_local_content_on_the_server_version_with_a_new_mutation() {
    let store = SqliteStore::open_in_memory().await.unwrap();
    let handler = store.sync_handler(C, FakeRemote::new()).unwrap();
    handler
        .save_to_local(items(0, 1), &page_context(C, 1, 1))
        .await
        .unwrap();
    let listed = store.put(C, "c-0000", json!({"n": "mine"})).await.unwrap();
    let server = SyncPayload::new(doc("c-0000", 9, 4, json!({"n": "theirs"})));
    let changes = RemoteChanges {
        items: vec![server.clone()],
        discard_local: Vec::new(),
        rebase: vec![Rebase {
            local: listed.clone(),
            server,
        }],
    };
    let result = handler
        .apply_remote_changes(changes, &page_context(C, 2, 9))
        .await
        .unwrap();
    assert_eq!(result.applied, 1);
    let rebased = store.get(C, "c-0000").await.unwrap().unwrap();
    assert_eq!(rebased.data, json!({"n": "mine"}));
    assert_eq!(LocalItem::base_version(&rebased), Some(Version(4)));
    assert_eq!(rebased.version, Version(5));
    assert!(rebased.locally_modified);
    assert!(rebased.mutation_seq > listed.mutation_seq);
    let last = store.outbox(C).await.unwrap().pop().unwrap();
    assert_eq!(Some(last.mutation_id.seq), rebased.mutation_seq);
    assert_eq!(last.base_version, Some(Version(4)));
    assert_eq!(last.op, OutboxOp::Update);
    // The base copy is now the server's state.
    let base = handler.conflict_base(&rebased).await.unwrap().unwrap();
    assert_eq!(
        (base.version, base.data),
        (Version(4), json!({"n": "theirs"}))
    );
}

#[tokio::test]
async fn a_rebase_of_an_older_listing_keeps_the_newer_edit() {
    let store = SqliteStore::open_in_memory().await.unwrap();
    let handler = store.sync_handler(C, FakeRemote::new()).unwrap();
    handler
        .save_to_local(items(0, 1), &page_context(C, 1, 1))
        .await
        .unwrap();
    let listed = store
        .put(C, "c-0000", json!({"n": "listed"}))
        .await
        .unwrap();
    // The user edits again after the engine listed the modified items.
    store.put(C, "c-0000", json!({"n": "newer"})).await.unwrap();
    let changes = RemoteChanges {
        items: Vec::new(),
        discard_local: Vec::new(),
        rebase: vec![Rebase {
            local: listed,
            server: SyncPayload::new(doc("c-0000", 9, 4, json!({"n": "theirs"}))),
        }],
    };
    let result = handler
        .apply_remote_changes(changes, &no_checkpoint(C))
        .await
        .unwrap();
    assert_eq!(result.applied, 0);
    let kept = store.get(C, "c-0000").await.unwrap().unwrap();
    assert_eq!(kept.data, json!({"n": "newer"}));
    assert_eq!(LocalItem::base_version(&kept), Some(Version(1)));
}

#[tokio::test]
async fn a_failed_background_apply_rolls_back_discards_and_rebases_too() {
    let store = SqliteStore::open_in_memory().await.unwrap();
    let handler = store.sync_handler(C, FakeRemote::new()).unwrap();
    handler
        .save_to_local(items(0, 2), &page_context(C, 1, 2))
        .await
        .unwrap();
    let a = store.put(C, "c-0000", json!({"n": "a"})).await.unwrap();
    store.put(C, "c-0001", json!({"n": "b"})).await.unwrap();
    let outbox = store.outbox(C).await.unwrap();
    let changes = RemoteChanges {
        items: vec![
            SyncPayload::new(doc("c-0001", 5, 2, json!({"n": "theirs"}))),
            SyncPayload::new(doc("bad", 6, 1, json!(42))),
        ],
        discard_local: vec![store.get(C, "c-0001").await.unwrap().unwrap()],
        rebase: vec![Rebase {
            local: a,
            server: SyncPayload::new(doc("c-0000", 4, 2, json!({"n": "x"}))),
        }],
    };
    let err = handler
        .apply_remote_changes(changes, &page_context(C, 2, 6))
        .await
        .unwrap_err();
    assert!(matches!(sqlite_error(&err), Error::InvalidDocument { .. }));
    assert_eq!(store.outbox(C).await.unwrap(), outbox);
    assert_eq!(
        store.get(C, "c-0001").await.unwrap().unwrap().data,
        json!({"n": "b"})
    );
    assert_eq!(checkpoint(&store).await, Some(SyncId(2)));
    let saved = store
        .metadata_repo()
        .checkpoint(&FeatureKey::new(C))
        .await
        .unwrap();
    assert_eq!(saved, Some(SyncCheckpoint::at(SyncId(2))));
}

#[tokio::test]
async fn a_discard_keeps_an_edit_newer_than_the_one_the_engine_decided_on() {
    let store = SqliteStore::open_in_memory().await.unwrap();
    let handler = store.sync_handler(C, FakeRemote::new()).unwrap();
    handler
        .save_to_local(items(0, 1), &page_context(C, 1, 1))
        .await
        .unwrap();
    let seen = store.put(C, "c-0000", json!({"n": "seen"})).await.unwrap();
    // Edited again after the engine listed the modified documents.
    store.put(C, "c-0000", json!({"n": "newer"})).await.unwrap();
    let changes = RemoteChanges {
        items: live(vec![doc("c-0000", 3, 2, json!({"n": "theirs"}))]),
        discard_local: vec![seen],
        rebase: Vec::new(),
    };
    handler
        .apply_remote_changes(changes, &page_context(C, 2, 3))
        .await
        .unwrap();
    let kept = store.get(C, "c-0000").await.unwrap().unwrap();
    assert_eq!(kept.data, json!({"n": "newer"}));
    assert!(
        kept.locally_modified,
        "the newer edit stays pending for its own push"
    );
    assert_eq!(store.outbox(C).await.unwrap().len(), 2);
}
