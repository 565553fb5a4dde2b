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

#[tokio::test(start_paused = true)]
async fn trigger_initial_sync_forgets_the_checkpoint_and_pulls_everything_again() {
    let remote = seeded_remote(120);
    let store = MemoryStore::new();
    let repo = Arc::new(InMemorySyncMetadataRepo::new());
    let sync = FeroSync::builder()
        .metadata_repo_arc(repo.clone())
        .initial_sync(
            "items",
            store.handler(remote.clone()),
            FeatureSyncConfig::new().batch_size(50),
        )
        .build()
        .unwrap();
    sync.run().await.unwrap();
    let pages = store.applied_pages();

    let report = sync.trigger_initial_sync("items").await.unwrap();

    assert_eq!(report.totals().pulled, 120);
    assert_eq!(store.applied_pages(), pages * 2);
    assert_eq!(
        repo.initial_sync_state(&"items".into()).await.unwrap(),
        fero::InitialSyncState::Completed
    );
    assert!(matches!(
        sync.trigger_initial_sync("nope").await,
        Err(fero::Error::UnknownFeature { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn a_failed_initial_sync_skips_the_same_features_background_cycle_and_resumes_next_run() {
    let remote = seeded_remote(30);
    let store = MemoryStore::new();
    let sync = FeroSync::builder()
        .initial_sync(
            "items",
            store.handler(remote.clone()),
            FeatureSyncConfig::new().batch_size(10),
        )
        .background_sync(
            "items",
            store.handler(remote.clone()),
            FeatureSyncConfig::new().batch_size(10),
        )
        .background_sync(
            "other",
            MemoryStore::new().handler(seeded_remote(1)),
            FeatureSyncConfig::new(),
        )
        .build()
        .unwrap();
    remote.fail_next_fetch(fero::HandlerError::permanent("maintenance"));
    let err = sync.run().await.unwrap_err();
    let report = err.report().unwrap();
    assert!(matches!(
        report
            .outcome("items", fero::SyncKind::Background)
            .unwrap()
            .result,
        fero::FeatureResult::Skipped { .. }
    ));
    assert!(
        report
            .outcome("other", fero::SyncKind::Background)
            .unwrap()
            .is_success()
    );

    sync.run().await.unwrap();
    assert_converged(&store, &remote);
}

#[tokio::test(start_paused = true)]
async fn sync_feature_runs_the_feature_after_its_dependencies_only() {
    let (a, b, c) = (seeded_remote(3), seeded_remote(4), seeded_remote(5));
    let (sa, sb, sc) = (MemoryStore::new(), MemoryStore::new(), MemoryStore::new());
    let sync = FeroSync::builder()
        .background_sync("contacts", sa.handler(a), FeatureSyncConfig::new())
        .background_sync(
            "messages",
            sb.handler(b),
            FeatureSyncConfig::new().depends_on("contacts"),
        )
        .background_sync("settings", sc.handler(c), FeatureSyncConfig::new())
        .build()
        .unwrap();
    let report = sync.sync_feature("messages").await.unwrap();
    let order: Vec<_> = report
        .outcomes
        .iter()
        .map(|o| o.feature.to_string())
        .collect();
    assert_eq!(order, ["contacts", "messages"]);
    assert_eq!((sa.len(), sb.len(), sc.len()), (3, 4, 0));
}
