//! `InitialSyncHandler`'s contract said a transient error is retried with backoff, but the engine
//! never retried `save_to_local` / `apply_remote_changes`: one transient apply failure failed
//! the run. Now a transient apply error is retried with the feature's backoff (the page fetched
//! again from the unchanged checkpoint, the wait cancellable, attempts bounded as for fetch), a
//! permanent one ends the run, and the checkpoint is never saved for a failed apply.

mod scripted;
mod support;

use std::sync::Arc;
use std::time::Duration;

use fero::memory::LocalRecord;
use fero::{
    ConflictResolutionStrategy, Error, FeatureResult, FeatureSyncConfig, FeroSync, FixedBackoff,
    HandlerError, InMemorySyncMetadataRepo, Operation, RunReport, SyncBatchResult, SyncCheckpoint,
    SyncEvent, SyncId, SyncMetadataRepo, Version,
};
use scripted::{Scripted, rec};

const BOUND: Duration = Duration::from_secs(3_600);

/// Two pages: `a`, `b` up to sync_id 2, then `c` as the last page at 3.
fn two_pages() -> Scripted {
    Scripted::new(|from| match from.map(|c| c.last_sync_id.0) {
        None | Some(0) => SyncBatchResult::page(
            vec![rec("a", 1), rec("b", 2)],
            SyncCheckpoint::at(SyncId(2)),
        ),
        Some(2) => SyncBatchResult::final_page(vec![rec("c", 3)], SyncCheckpoint::at(SyncId(3))),
        Some(_) => SyncBatchResult::empty(),
    })
}

fn build(
    handler: &Scripted,
    repo: &Arc<InMemorySyncMetadataRepo>,
    background: bool,
    strategy: ConflictResolutionStrategy,
) -> FeroSync {
    let builder = FeroSync::builder()
        .metadata_repo_arc(repo.clone())
        .backoff(FixedBackoff::new(Duration::from_secs(1), 3))
        .conflict_strategy(strategy)
        .seed(7);
    let builder = if background {
        builder.background_sync("items", handler.clone(), FeatureSyncConfig::new())
    } else {
        builder.initial_sync("items", handler.clone(), FeatureSyncConfig::new())
    };
    builder.build().unwrap()
}

fn only_failure(result: fero::Result<RunReport>) -> Arc<Error> {
    let report = match result {
        Err(Error::FeaturesFailed { report }) => report,
        other => panic!("expected a failed run, got {other:?}"),
    };
    match &report.outcomes[0].result {
        FeatureResult::Failed(error) => error.clone(),
        other => panic!("expected a failure, got {other:?}"),
    }
}

fn apply_retries(events: &[SyncEvent]) -> Vec<u32> {
    events
        .iter()
        .filter_map(|e| match e {
            SyncEvent::Retrying {
                operation: Operation::Apply,
                attempt,
                ..
            } => Some(*attempt),
            _ => None,
        })
        .collect()
}

async fn checkpoint(repo: &InMemorySyncMetadataRepo) -> Option<SyncCheckpoint> {
    repo.checkpoint(&"items".into()).await.unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_transient_initial_apply_error_is_retried_after_the_backoff_and_applied_once() {
    let handler = two_pages().failing_applies([HandlerError::transient("disk busy")]);
    let repo = Arc::new(InMemorySyncMetadataRepo::new());
    let sync = build(&handler, &repo, false, Default::default());
    let mut events = sync.event_stream();
    let started = tokio::time::Instant::now();
    tokio::time::timeout(BOUND, sync.run())
        .await
        .expect("the run must end")
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "waited the backoff"
    );
    assert_eq!(
        handler.applied(),
        ["a", "b", "c"],
        "every item applied once"
    );
    assert_eq!(handler.applies(), 3, "one failed apply, then one per page");
    assert_eq!(checkpoint(&repo).await, Some(SyncCheckpoint::at(SyncId(3))));
    assert_eq!(apply_retries(&support::drain(&mut events)), [1]);
}

#[tokio::test(start_paused = true)]
async fn a_permanent_initial_apply_error_ends_the_run_with_the_checkpoint_unchanged() {
    let handler = two_pages().failing_applies([HandlerError::permanent("constraint violated")]);
    let repo = Arc::new(InMemorySyncMetadataRepo::new());
    let sync = build(&handler, &repo, false, Default::default());
    let mut events = sync.event_stream();
    let result = tokio::time::timeout(BOUND, sync.run())
        .await
        .expect("the run must end");
    let error = only_failure(result);
    assert!(
        matches!(
            &*error,
            Error::Handler {
                operation: Operation::Apply,
                attempts: 1,
                ..
            }
        ),
        "{error}"
    );
    assert_eq!(handler.applies(), 1, "a permanent error is not retried");
    assert!(handler.applied().is_empty());
    assert_eq!(checkpoint(&repo).await, None);
    assert!(apply_retries(&support::drain(&mut events)).is_empty());
}

#[tokio::test(start_paused = true)]
async fn transient_apply_errors_stop_after_the_backoffs_attempts() {
    let handler = two_pages().failing_applies((0..5).map(|_| HandlerError::transient("locked")));
    let repo = Arc::new(InMemorySyncMetadataRepo::new());
    let sync = build(&handler, &repo, false, Default::default());
    let result = tokio::time::timeout(BOUND, sync.run())
        .await
        .expect("the run must end");
    let error = only_failure(result);
    assert!(
        matches!(
            &*error,
            Error::Handler {
                operation: Operation::Apply,
                attempts: 3,
                ..
            }
        ),
        "{error}"
    );
    assert!(error.is_transient());
    assert_eq!(
        handler.applies(),
        3,
        "FixedBackoff(_, 3): three attempts in all"
    );
    assert_eq!(checkpoint(&repo).await, None);
}

#[tokio::test(start_paused = true)]
async fn a_cancel_during_the_apply_backoff_ends_the_run_at_once() {
    let handler = two_pages().failing_applies([HandlerError::transient("disk busy")]);
    let repo = Arc::new(InMemorySyncMetadataRepo::new());
    let sync = FeroSync::builder()
        .metadata_repo_arc(repo.clone())
        .backoff(FixedBackoff::new(Duration::from_secs(3_600), 3))
        .initial_sync("items", handler.clone(), FeatureSyncConfig::new())
        .build()
        .unwrap();
    let running = tokio::spawn({
        let sync = sync.clone();
        async move { sync.run().await }
    });
    // Paused time reaches this sleep's end long before the hour-long backoff's.
    tokio::time::sleep(Duration::from_secs(10)).await;
    sync.cancel();
    let result = tokio::time::timeout(Duration::from_secs(60), running)
        .await
        .expect("the cancel ends the wait")
        .unwrap();
    let report = result.unwrap_err().report().cloned().unwrap();
    assert!(matches!(
        report.outcomes[0].result,
        FeatureResult::Cancelled
    ));
    assert_eq!(handler.applies(), 1);
    assert_eq!(checkpoint(&repo).await, None);
}

/// A background feature at sync_id 0 with one pending local edit of `a` (made on version 0) that
/// the pulled `a` (version 1) conflicts with.
async fn background_with_edit(
    handler: Scripted,
    strategy: ConflictResolutionStrategy,
) -> (Scripted, Arc<InMemorySyncMetadataRepo>, FeroSync) {
    handler.local_edits.lock().unwrap().push(LocalRecord {
        id: "a".into(),
        version: Version(1),
        base_version: Some(Version(0)),
        modified: true,
        deleted: false,
        data: serde_json::json!({ "from": "device" }),
    });
    let repo = Arc::new(InMemorySyncMetadataRepo::new());
    repo.save_checkpoint(&"items".into(), &SyncCheckpoint::at(SyncId(0)))
        .await
        .unwrap();
    let sync = build(&handler, &repo, true, strategy);
    (handler, repo, sync)
}

#[tokio::test(start_paused = true)]
async fn a_transient_background_apply_error_is_retried_with_the_conflict_decided_again() {
    let (handler, repo, sync) = background_with_edit(
        two_pages().failing_applies([HandlerError::transient("disk busy")]),
        ConflictResolutionStrategy::HighestVersionWins,
    )
    .await;
    let mut events = sync.event_stream();
    tokio::time::timeout(BOUND, sync.sync_now())
        .await
        .expect("sync_now must return")
        .unwrap();
    assert_eq!(handler.applied(), ["a", "b", "c"]);
    // The server's `a` won (a tie goes to the server): the retried apply still discards the
    // local edit it replaces, though the failed attempt had taken it from the listed edits.
    assert_eq!(*handler.discarded.lock().unwrap(), ["a"]);
    assert!(handler.local_edits.lock().unwrap().is_empty());
    assert_eq!(checkpoint(&repo).await, Some(SyncCheckpoint::at(SyncId(3))));
    let events = support::drain(&mut events);
    assert_eq!(apply_retries(&events), [1]);
    assert_eq!(
        support::conflicts(&events).len(),
        1,
        "the conflict's event is sent once, for the apply that succeeded"
    );
}

#[tokio::test(start_paused = true)]
async fn a_conflict_parked_by_a_retried_background_apply_keeps_its_reason() {
    let (handler, _repo, sync) = background_with_edit(
        two_pages().failing_applies([HandlerError::transient("disk busy")]),
        ConflictResolutionStrategy::Manual,
    )
    .await;
    tokio::time::timeout(BOUND, sync.sync_now())
        .await
        .expect("sync_now must return")
        .unwrap();
    assert_eq!(
        handler.applied(),
        ["b", "c"],
        "the parked item waits for the app"
    );
    let parked = sync.parked_conflicts("items").await.unwrap();
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].id, "a");
    assert_eq!(parked[0].reason, "the feature's strategy is manual");
}

#[tokio::test(start_paused = true)]
async fn a_permanent_background_apply_error_ends_the_cycle_with_the_checkpoint_unchanged() {
    let (handler, repo, sync) = background_with_edit(
        two_pages().failing_applies([HandlerError::permanent("constraint violated")]),
        ConflictResolutionStrategy::HighestVersionWins,
    )
    .await;
    let result = tokio::time::timeout(BOUND, sync.sync_now())
        .await
        .expect("sync_now must return");
    let error = only_failure(result);
    assert!(
        matches!(
            &*error,
            Error::Handler {
                operation: Operation::Apply,
                attempts: 1,
                ..
            }
        ),
        "{error}"
    );
    assert_eq!(handler.applies(), 1);
    assert!(handler.applied().is_empty());
    assert_eq!(
        handler.local_edits.lock().unwrap().len(),
        1,
        "the edit is kept"
    );
    assert_eq!(checkpoint(&repo).await, Some(SyncCheckpoint::at(SyncId(0))));
}
