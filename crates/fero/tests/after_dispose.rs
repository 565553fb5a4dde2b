//! `dispose()` promises `Error::Disposed` for later calls, but `retry_quarantined` answered
//! `Ok(())` and released a quarantined change, and `parked_conflicts`, `quarantined_changes` and
//! `sync_feature` did not check either. Every public method of `FeroSync` is called here after
//! `dispose()`: those returning a `Result` return `Error::Disposed` and change nothing; the others
//! do what their docs say for a disposed engine.

mod support;

use std::sync::Arc;

use fero::memory::{MemoryRemote, MemoryStore};
use fero::{
    ConflictPhase, Error, FeatureSyncConfig, FeroSync, InMemorySyncMetadataRepo, ManualResolution,
    ParkedConflict, QuarantinedChange, SyncCheckpoint, SyncEvent, SyncId, SyncMetadataRepo,
    Timestamp,
};
use futures::StreamExt;

fn assert_disposed<T: std::fmt::Debug>(what: &str, result: fero::Result<T>) {
    assert!(
        matches!(result, Err(Error::Disposed)),
        "{what} after dispose: expected Error::Disposed, got {result:?}"
    );
}

/// A disposed engine whose repo holds a checkpoint, a parked conflict and a quarantined change.
async fn disposed() -> (FeroSync, Arc<InMemorySyncMetadataRepo>) {
    let store = MemoryStore::new();
    let remote = MemoryRemote::new();
    let repo = Arc::new(InMemorySyncMetadataRepo::new());
    let key = "items".into();
    repo.save_checkpoint(&key, &SyncCheckpoint::at(SyncId(7)))
        .await
        .unwrap();
    repo.quarantine(&QuarantinedChange {
        feature: "items".into(),
        id: "q".into(),
        item: serde_json::json!({}),
        reason: "rejected".into(),
        quarantined_at: Timestamp(1),
    })
    .await
    .unwrap();
    repo.park_conflict(&ParkedConflict {
        feature: "items".into(),
        id: "p".into(),
        local: serde_json::json!({}),
        server: serde_json::Value::Null,
        server_deleted: false,
        server_version: None,
        phase: ConflictPhase::Push,
        reason: "manual".into(),
        parked_at: Timestamp(1),
    })
    .await
    .unwrap();
    let sync = FeroSync::builder()
        .metadata_repo_arc(repo.clone())
        .initial_sync(
            "items",
            store.handler(remote.clone()),
            FeatureSyncConfig::new(),
        )
        .background_sync("items", store.handler(remote), FeatureSyncConfig::new())
        .build()
        .unwrap();
    sync.dispose().await;
    (sync, repo)
}

#[tokio::test(start_paused = true)]
async fn every_method_returning_a_result_answers_disposed_and_changes_nothing() {
    let (sync, repo) = disposed().await;
    let key = "items".into();
    assert_disposed("run", sync.run().await);
    assert_disposed("start_sync", sync.start_sync().await);
    assert_disposed("sync_now", sync.sync_now().await);
    assert_disposed("sync_feature", sync.sync_feature("items").await);
    assert_disposed("trigger", sync.trigger("items"));
    assert_disposed(
        "trigger_initial_sync",
        sync.trigger_initial_sync("items").await,
    );
    assert_disposed(
        "resolve_conflict",
        sync.resolve_conflict("items", "p", ManualResolution::KeepServer)
            .await,
    );
    assert_disposed("parked_conflicts", sync.parked_conflicts("items").await);
    assert_disposed(
        "quarantined_changes",
        sync.quarantined_changes("items").await,
    );
    assert_disposed(
        "retry_quarantined",
        sync.retry_quarantined("items", "q").await,
    );
    assert_disposed(
        "discard_quarantined",
        sync.discard_quarantined("items", "q").await,
    );
    // Unknown features too: disposal is checked first.
    assert_disposed("sync_feature(unknown)", sync.sync_feature("nope").await);
    assert_disposed(
        "retry_quarantined(unknown)",
        sync.retry_quarantined("nope", "q").await,
    );
    // Nothing in the repo moved.
    assert_eq!(
        repo.checkpoint(&key).await.unwrap(),
        Some(SyncCheckpoint::at(SyncId(7)))
    );
    assert_eq!(repo.quarantined(&key).await.unwrap().len(), 1);
    assert_eq!(repo.parked_conflicts(&key).await.unwrap().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn methods_without_a_result_do_what_their_docs_say_after_dispose() {
    let (sync, _repo) = disposed().await;
    let before = sync.status();
    // The event stream is closed: a new subscriber's stream ends at once, and an app's event
    // goes nowhere.
    let mut events = sync.event_stream();
    sync.emit_sync_event(SyncEvent::Custom {
        feature: "items".into(),
        name: "after".into(),
        detail: serde_json::Value::Null,
    });
    assert!(events.next().await.is_none(), "the event stream has ended");
    assert!(sync.events().next().await.is_none());
    // Status reads the last values; cancel and a second dispose do nothing.
    sync.cancel();
    sync.dispose().await;
    assert_eq!(
        format!("{:?}", sync.status()),
        format!("{before:?}"),
        "status is left as it was"
    );
    assert!(sync.feature_status("items").is_some());
    assert!(sync.feature_status("nope").is_none());
    let mut statuses = sync.status_stream();
    assert!(
        statuses.next().await.is_some(),
        "the last statuses are still readable"
    );
    assert!(format!("{sync:?}").contains("disposed: true"));
}

#[tokio::test(start_paused = true)]
async fn retry_quarantined_refuses_an_unknown_feature_like_discard_quarantined() {
    let store = MemoryStore::new();
    let remote = MemoryRemote::new();
    let sync = support::single(&store, &remote, 10);
    for result in [
        sync.retry_quarantined("nope", "q").await,
        sync.discard_quarantined("nope", "q").await,
    ] {
        assert!(
            matches!(&result, Err(Error::UnknownFeature { feature, .. }) if feature.as_str() == "nope"),
            "{result:?}"
        );
    }
}
