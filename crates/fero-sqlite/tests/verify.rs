//! Verifying the store against the server's digest, and repairing drift with
//! `reset_collection` plus `FeroSync::trigger_initial_sync`.

mod support;

use fero::{FeatureKey, FeatureSyncConfig, FeroSync, InitialSyncState, SyncMetadataRepo, Version};
use fero_sqlite::{ResetReport, SqliteStore};
use serde_json::json;
use support::FakeRemote;

const C: &str = "items";

fn server(n: usize) -> FakeRemote {
    let remote = FakeRemote::new();
    for i in 0..n {
        remote.write(C, &format!("item-{i:04}"), json!({ "n": i }));
    }
    remote
}

fn engine(store: &SqliteStore, remote: &FakeRemote) -> FeroSync {
    let handler = store.sync_handler(C, remote.clone()).unwrap();
    FeroSync::builder()
        .metadata_repo(store.metadata_repo())
        .initial_sync(C, handler.clone(), FeatureSyncConfig::new().batch_size(250))
        .background_sync(C, handler, FeatureSyncConfig::new().batch_size(250))
        .build()
        .unwrap()
}

#[tokio::test]
async fn verify_reports_a_match_after_a_sync() {
    let store = SqliteStore::open_in_memory().await.unwrap();
    let remote = server(600);
    remote.delete(C, "item-0007");
    let sync = engine(&store, &remote);
    sync.run().await.unwrap();
    let report = store
        .sync_handler(C, remote.clone())
        .unwrap()
        .verify()
        .await
        .unwrap();
    assert!(report.is_match(), "{report}");
    assert_eq!(report.local_count, 599);
    assert_eq!(report.remote_count, 599);
    assert_eq!(report.local_digest, report.remote_digest);
    sync.dispose().await;
}

#[tokio::test]
async fn pending_local_edits_do_not_count_as_drift() {
    let store = SqliteStore::open_in_memory().await.unwrap();
    let remote = server(20);
    let sync = engine(&store, &remote);
    sync.run().await.unwrap();
    store
        .put(C, "item-0001", json!({"n": "edited"}))
        .await
        .unwrap();
    store
        .put(C, "brand-new", json!({"n": "new"}))
        .await
        .unwrap();
    store.delete(C, "item-0002").await.unwrap();
    let handler = store.sync_handler(C, remote.clone()).unwrap();
    assert!(handler.verify().await.unwrap().is_match());
    sync.dispose().await;
}

#[tokio::test]
async fn drift_is_reported_and_healed_by_a_reset_and_a_new_initial_sync() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("drift.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let remote = server(600);
    let sync = engine(&store, &remote);
    sync.run().await.unwrap();
    let handler = store.sync_handler(C, remote.clone()).unwrap();

    // Local rows lost behind the store's back, and a server row gone without a tombstone.
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute(
            "DELETE FROM fero_documents WHERE id IN ('item-0010', 'item-0011')",
            [],
        )
        .unwrap();
    remote.forget(C, "item-0020");
    // A pending local edit must survive the repair.
    store
        .put(C, "item-0030", json!({"n": "mine"}))
        .await
        .unwrap();

    let report = handler.verify().await.unwrap();
    assert!(report.is_drift(), "{report}");
    assert_eq!((report.local_count, report.remote_count), (598, 599));
    assert!(report.to_string().contains("reset_collection"));

    let reset = store.reset_collection(C).await.unwrap();
    assert_eq!(
        reset,
        ResetReport {
            removed: 597,
            kept_pending: 1
        }
    );
    let key = FeatureKey::new(C);
    let repo = store.metadata_repo();
    assert_eq!(repo.checkpoint(&key).await.unwrap(), None);
    assert_eq!(
        repo.initial_sync_state(&key).await.unwrap(),
        InitialSyncState::Pending
    );
    assert_eq!(store.outbox(C).await.unwrap().len(), 1);

    sync.trigger_initial_sync(C).await.unwrap();
    let report = handler.verify().await.unwrap();
    assert!(report.is_match(), "{report}");
    assert_eq!(store.get(C, "item-0020").await.unwrap(), None);
    assert!(store.get(C, "item-0010").await.unwrap().is_some());
    let mine = store.get(C, "item-0030").await.unwrap().unwrap();
    assert_eq!(mine.data, json!({"n": "mine"}));
    assert!(mine.locally_modified);
    assert_eq!(fero::LocalItem::base_version(&mine), Some(Version(1)));

    // The kept edit still pushes normally afterwards.
    sync.sync_now().await.unwrap();
    assert_eq!(
        remote.get(C, "item-0030").unwrap().data,
        json!({"n": "mine"})
    );
    assert!(handler.verify().await.unwrap().is_match());
    sync.dispose().await;
}
