//! Digest version 2 covers each row's content. Version 1 covers `(id, version)` only, so a
//! local row whose content was changed behind the store's back at the same version (a corrupt or
//! hand-edited copy) went unnoticed by `verify()`. These tests change rows in the database file
//! directly and check that `verify()` reports the content drift, that the existing repair path
//! heals it, and that a remote without version 2 is still verified with version 1.

mod support;

use fero::{FeatureSyncConfig, FeroSync};
use fero_protocol::{
    DigestResponse, DigestVersion, PullRequest, PullResponse, PushRequest, PushResponse, Remote,
    RemoteError,
};
use fero_sqlite::SqliteStore;
use serde_json::{Value, json};
use support::FakeRemote;

const C: &str = "items";

fn row(i: usize) -> Value {
    json!({
        "name": format!("Zoë {i} — 東京"),
        "tags": ["a", { "nested": [i, 2.5, null, true] }],
        "address": { "street": "Rue de l'Église", "zip": format!("{i:05}") },
    })
}

fn server(n: usize) -> FakeRemote {
    let remote = FakeRemote::new();
    for i in 0..n {
        remote.write(C, &format!("item-{i:04}"), row(i));
    }
    remote
}

fn engine<R: Remote + Clone>(store: &SqliteStore, remote: &R) -> FeroSync {
    let handler = store.sync_handler(C, remote.clone()).unwrap();
    FeroSync::builder()
        .metadata_repo(store.metadata_repo())
        .initial_sync(C, handler.clone(), FeatureSyncConfig::new().batch_size(100))
        .background_sync(C, handler, FeatureSyncConfig::new().batch_size(100))
        .build()
        .unwrap()
}

/// Sets the stored text of `id` in the store's file, bypassing the store.
fn write_stored_text(path: &std::path::Path, id: &str, text: &str) {
    let changed = rusqlite::Connection::open(path)
        .unwrap()
        .execute(
            "UPDATE fero_documents SET data = ?1 WHERE collection = ?2 AND id = ?3",
            [text, C, id],
        )
        .unwrap();
    assert_eq!(changed, 1, "{id} is stored");
}

#[tokio::test]
async fn a_row_hand_edited_at_its_version_is_content_drift_that_a_new_initial_sync_heals() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let remote = server(300);
    let sync = engine(&store, &remote);
    sync.run().await.unwrap();
    let handler = store.sync_handler(C, remote.clone()).unwrap();
    let report = handler.verify().await.unwrap();
    assert!(report.is_match(), "{report}");
    assert_eq!(report.digest_version, DigestVersion::V2);
    assert_eq!(report.local_digest.len(), 32);

    let before = store.get(C, "item-0042").await.unwrap().unwrap();
    write_stored_text(&path, "item-0042", r#"{"name":"forged"}"#);

    // Version 1 cannot see it: same ids at the same versions.
    let (local_v1, remote_v1) = (
        store.digest(C).await.unwrap(),
        remote.digest(C).await.unwrap(),
    );
    assert_eq!(
        (local_v1.count(), local_v1.hex()),
        (remote_v1.count, remote_v1.digest)
    );
    // Version 2 does.
    let (local_v2, remote_v2) = (
        store.content_digest(C).await.unwrap(),
        remote.content_digest(C).await.unwrap(),
    );
    assert_eq!(local_v2.count(), remote_v2.count);
    assert_ne!(local_v2.hex(), remote_v2.digest);

    let report = handler.verify().await.unwrap();
    assert!(report.is_drift(), "{report}");
    assert!(report.is_content_drift(), "{report}");
    assert_eq!(report.digest_version, DigestVersion::V2);
    assert_eq!((report.local_count, report.remote_count), (300, 300));
    assert!(report.to_string().contains("content drift"), "{report}");

    // The documented repair without a reset: the initial sync re-pulls every row and rewrites
    // the same version with the server's content.
    sync.trigger_initial_sync(C).await.unwrap();
    let report = handler.verify().await.unwrap();
    assert!(report.is_match(), "{report}");
    assert!(!report.content_drift);
    let healed = store.get(C, "item-0042").await.unwrap().unwrap();
    assert_eq!(healed.data, before.data);
    assert_eq!(healed.version, before.version);
    sync.dispose().await;
}

#[tokio::test]
async fn a_corrupt_local_row_is_drift_that_a_reset_and_an_initial_sync_heal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let remote = server(50);
    let sync = engine(&store, &remote);
    sync.run().await.unwrap();
    let handler = store.sync_handler(C, remote.clone()).unwrap();

    write_stored_text(&path, "item-0007", r#"{"name": "trunc"#);
    let report = handler.verify().await.unwrap();
    assert!(report.is_content_drift(), "{report}");

    let reset = store.reset_collection(C).await.unwrap();
    assert_eq!(reset.removed, 50);
    sync.trigger_initial_sync(C).await.unwrap();
    let report = handler.verify().await.unwrap();
    assert!(report.is_match(), "{report}");
    assert_eq!(
        store.get(C, "item-0007").await.unwrap().unwrap().data,
        row(7)
    );
    sync.dispose().await;
}

#[tokio::test]
async fn the_same_content_in_another_key_order_and_spacing_is_no_drift() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let remote = server(10);
    let sync = engine(&store, &remote);
    sync.run().await.unwrap();

    write_stored_text(
        &path,
        "item-0003",
        "{ \"tags\" : [ \"a\", { \"nested\": [3, 2.50, null, true] } ],\n  \
         \"address\": {\"zip\": \"00003\", \"street\": \"Rue de l'\\u00c9glise\"},\n  \
         \"name\": \"Zo\u{eb} 3 \u{2014} \u{6771}\u{4eac}\" }",
    );
    let report = store
        .sync_handler(C, remote.clone())
        .unwrap()
        .verify()
        .await
        .unwrap();
    assert!(report.is_match(), "{report}");
    assert_eq!(report.digest_version, DigestVersion::V2);
    sync.dispose().await;
}

#[tokio::test]
async fn a_pending_edit_is_digested_by_the_server_copy_it_rests_on() {
    let store = SqliteStore::open_in_memory().await.unwrap();
    let remote = server(10);
    let sync = engine(&store, &remote);
    sync.run().await.unwrap();
    store
        .put(C, "item-0001", json!({ "name": "edited" }))
        .await
        .unwrap();
    let report = store
        .sync_handler(C, remote.clone())
        .unwrap()
        .verify()
        .await
        .unwrap();
    assert!(report.is_match(), "{report}");
    assert_eq!(report.digest_version, DigestVersion::V2);
    sync.dispose().await;
}

/// A remote written before digest version 2: it keeps the trait's default `content_digest`.
#[derive(Clone, Debug)]
struct VersionOneOnly(FakeRemote);

#[fero::async_trait]
impl Remote for VersionOneOnly {
    async fn pull(
        &self,
        collection: &str,
        request: &PullRequest,
    ) -> Result<PullResponse, RemoteError> {
        self.0.pull(collection, request).await
    }
    async fn push(
        &self,
        collection: &str,
        request: &PushRequest,
    ) -> Result<PushResponse, RemoteError> {
        self.0.push(collection, request).await
    }
    async fn digest(&self, collection: &str) -> Result<DigestResponse, RemoteError> {
        self.0.digest(collection).await
    }
}

#[tokio::test]
async fn a_remote_without_the_content_digest_is_verified_with_version_1() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let remote = VersionOneOnly(server(20));
    let sync = engine(&store, &remote);
    sync.run().await.unwrap();
    let error = remote.content_digest(C).await.unwrap_err();
    assert!(error.is_unsupported(), "{error}");

    let handler = store.sync_handler(C, remote.clone()).unwrap();
    let report = handler.verify().await.unwrap();
    assert!(report.is_match(), "{report}");
    assert_eq!(report.digest_version, DigestVersion::V1);
    assert_eq!(report.local_digest.len(), 16);
    assert!(report.to_string().contains("v1"), "{report}");

    // Version 1's blind spot, stated: it cannot see a content change at the same version.
    write_stored_text(&path, "item-0004", r#"{"name":"forged"}"#);
    let report = handler.verify().await.unwrap();
    assert!(report.is_match(), "{report}");
    assert!(!report.content_drift);
    sync.dispose().await;
}
