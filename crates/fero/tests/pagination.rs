//! Initial and background pulls page by page, checkpoint after every page.

mod support;

use fero::memory::MemoryStore;
use fero::{
    FeatureSyncConfig, FeroSync, InMemorySyncMetadataRepo, SyncCheckpoint, SyncId, SyncMetadataRepo,
};
use std::sync::Arc;
use support::*;

#[tokio::test(start_paused = true)]
async fn initial_sync_pages_through_every_item_and_saves_the_last_checkpoint() {
    let remote = seeded_remote(2_500);
    let store = MemoryStore::new();
    let repo = Arc::new(InMemorySyncMetadataRepo::new());
    let sync = FeroSync::builder()
        .metadata_repo_arc(repo.clone())
        .initial_sync(
            "items",
            store.handler(remote.clone()),
            FeatureSyncConfig::new().batch_size(100),
        )
        .build()
        .unwrap();
    let mut events = sync.event_stream();
    let report = sync.run().await.unwrap();

    assert_converged(&store, &remote);
    assert_eq!(store.applied_pages(), 25);
    let counts = report.totals();
    assert_eq!((counts.pages, counts.pulled), (25, 2_500));
    let key = "items".into();
    assert_eq!(
        repo.checkpoint(&key).await.unwrap(),
        Some(SyncCheckpoint::at(SyncId(2_500)))
    );
    // Each page fetched exactly once: from the start, then after every full page.
    let log = remote.fetch_log();
    assert_eq!(log.len(), 25);
    assert_eq!(log[0], None);
    assert_eq!(log[24], Some(SyncId(2_400)));

    let names: Vec<String> = drain(&mut events).iter().map(name).collect();
    assert_eq!(
        names.first().map(String::as_str),
        Some("items:initial_required")
    );
    assert_eq!(names[1], "items:initial_started");
    assert_eq!(
        names
            .iter()
            .filter(|n| *n == "items:initial_progress")
            .count(),
        25
    );
    assert_eq!(
        names.last().map(String::as_str),
        Some("items:initial_completed")
    );
}

#[tokio::test(start_paused = true)]
async fn a_completed_initial_sync_is_not_run_again_and_background_continues_from_its_checkpoint() {
    let remote = seeded_remote(300);
    let store = MemoryStore::new();
    let sync = FeroSync::builder()
        .initial_sync(
            "items",
            store.handler(remote.clone()),
            FeatureSyncConfig::new().batch_size(100),
        )
        .background_sync(
            "items",
            store.handler(remote.clone()),
            FeatureSyncConfig::new().batch_size(100),
        )
        .build()
        .unwrap();
    sync.run().await.unwrap();
    let fetches_after_first_run = remote.fetch_log().len();
    remote.insert("item-new", serde_json::json!({"n": 0}));

    let report = sync.run().await.unwrap();

    assert!(matches!(
        report
            .outcome("items", fero::SyncKind::Initial)
            .unwrap()
            .result,
        fero::FeatureResult::AlreadyCompleted
    ));
    assert_eq!(
        report
            .outcome("items", fero::SyncKind::Background)
            .map(|o| o.is_success()),
        Some(true)
    );
    // Nothing pulled twice: the background pull started after the initial sync's last row.
    let later: Vec<_> = remote.fetch_log()[fetches_after_first_run..].to_vec();
    assert_eq!(later, vec![Some(SyncId(300))]);
    assert_converged(&store, &remote);
}

#[tokio::test(start_paused = true)]
async fn background_sync_pulls_only_changes_after_the_checkpoint_including_deletions() {
    let remote = seeded_remote(50);
    let store = MemoryStore::new();
    let sync = single(&store, &remote, 20);
    sync.sync_now().await.unwrap();
    remote.insert("item-0000003", serde_json::json!({"n": "three"}));
    remote.delete("item-0000007");
    let before = remote.fetch_log().len();

    let report = sync.sync_now().await.unwrap();

    assert_eq!(report.totals().pulled, 2);
    assert_eq!(remote.fetch_log()[before..], [Some(SyncId(50))]);
    assert!(store.get("item-0000007").is_none());
    assert_eq!(
        store.get("item-0000003").unwrap().data,
        serde_json::json!({"n": "three"})
    );
    assert_converged(&store, &remote);
}
