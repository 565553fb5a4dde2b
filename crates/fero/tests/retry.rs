//! Transient failures are retried after the configured delays (on paused tokio time); permanent
//! ones are not; rejected pushes are quarantined without blocking the rest.

mod support;

use std::time::Duration;

use fero::memory::{MemoryRemote, MemoryStore};
use fero::{
    ExponentialBackoff, FeatureSyncConfig, FeroSync, FixedBackoff, HandlerError, Operation,
    SyncEvent,
};
use serde_json::json;
use support::*;

fn retries(events: &[SyncEvent]) -> Vec<(Operation, u32, Duration)> {
    events
        .iter()
        .filter_map(|e| match e {
            SyncEvent::Retrying {
                operation,
                attempt,
                delay,
                ..
            } => Some((*operation, *attempt, *delay)),
            _ => None,
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn transient_fetch_failures_are_retried_after_the_fixed_delay() {
    let remote = seeded_remote(10);
    remote.fail_next_fetch(HandlerError::transient("connection reset"));
    remote.fail_next_fetch(HandlerError::transient("503"));
    let store = MemoryStore::new();
    let sync = FeroSync::builder()
        .background_sync(
            "items",
            store.handler(remote.clone()),
            FeatureSyncConfig::new(),
        )
        .backoff(FixedBackoff::new(Duration::from_secs(5), 5))
        .build()
        .unwrap();
    let mut events = sync.event_stream();
    let started = tokio::time::Instant::now();
    sync.sync_now().await.unwrap();
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(10),
        "two waits of 5 s on tokio's clock"
    );
    let five = Duration::from_secs(5);
    assert_eq!(
        retries(&drain(&mut events)),
        [(Operation::Fetch, 1, five), (Operation::Fetch, 2, five)]
    );
    assert_converged(&store, &remote);
}

#[tokio::test(start_paused = true)]
async fn retry_after_from_the_remote_stretches_the_delay() {
    let remote = seeded_remote(1);
    remote
        .fail_next_fetch(HandlerError::transient("429").with_retry_after(Duration::from_secs(30)));
    let sync = single(&MemoryStore::new(), &remote, 100);
    let started = tokio::time::Instant::now();
    sync.sync_now().await.unwrap();
    assert!(started.elapsed() >= Duration::from_secs(30));
}

#[tokio::test(start_paused = true)]
async fn a_permanent_failure_is_not_retried() {
    let remote = seeded_remote(10);
    remote.fail_next_fetch(HandlerError::permanent("403 forbidden"));
    let store = MemoryStore::new();
    let sync = single(&store, &remote, 100);
    let mut events = sync.event_stream();
    let err = sync.sync_now().await.unwrap_err();
    assert_eq!(remote.fetch_log().len(), 1);
    assert!(retries(&drain(&mut events)).is_empty());
    assert!(!err.is_transient());
    let status = sync.feature_status("items").unwrap();
    assert_eq!(status.phase, fero::SyncPhase::Failed);
    let last = status.last_error.expect("the error is kept in the status");
    assert!(
        last.to_string()
            .contains("feature items: fetch failed after 1 attempt(s): 403 forbidden"),
        "{last}"
    );
}

#[tokio::test(start_paused = true)]
async fn retries_stop_when_the_attempts_are_used_up() {
    let remote = seeded_remote(1);
    for _ in 0..3 {
        remote.fail_next_fetch(HandlerError::transient("timeout"));
    }
    let sync = FeroSync::builder()
        .background_sync(
            "items",
            MemoryStore::new().handler(remote.clone()),
            FeatureSyncConfig::new(),
        )
        .backoff(FixedBackoff::new(Duration::from_millis(10), 3))
        .build()
        .unwrap();
    let err = sync.sync_now().await.unwrap_err();
    assert_eq!(remote.fetch_log().len(), 3);
    assert!(err.is_transient(), "a later run may succeed: {err}");
    assert!(err.to_string().contains("after 3 attempt(s)"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn a_feature_backoff_overrides_the_engine_backoff_and_jitter_replays_from_the_seed() {
    async fn delays(seed: u64) -> Vec<Duration> {
        let remote = seeded_remote(1);
        for _ in 0..4 {
            remote.fail_next_fetch(HandlerError::transient("flaky"));
        }
        let backoff =
            ExponentialBackoff::new(Duration::from_millis(100), 2.0, Duration::from_secs(1), 10)
                .unwrap();
        let sync = FeroSync::builder()
            .background_sync(
                "items",
                MemoryStore::new().handler(remote),
                FeatureSyncConfig::new().backoff(backoff),
            )
            .backoff(FixedBackoff::new(Duration::from_secs(3600), 2))
            .seed(seed)
            .build()
            .unwrap();
        let mut events = sync.event_stream();
        sync.sync_now().await.unwrap();
        retries(&drain(&mut events))
            .into_iter()
            .map(|(_, _, d)| d)
            .collect()
    }
    let first = delays(7).await;
    assert_eq!(first.len(), 4);
    assert_eq!(first, delays(7).await, "same seed, same jitter");
    for (i, d) in first.iter().enumerate() {
        assert!(
            *d <= Duration::from_millis(100 << i).min(Duration::from_secs(1)),
            "attempt {}: {d:?}",
            i + 1
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_transient_push_failure_retries_the_page_and_marks_nothing_pushed_before() {
    let remote = MemoryRemote::new();
    let store = MemoryStore::new();
    let sync = FeroSync::builder()
        .background_sync(
            "items",
            store.handler(remote.clone()),
            FeatureSyncConfig::new(),
        )
        .backoff(FixedBackoff::new(Duration::from_secs(1), 3))
        .build()
        .unwrap();
    store.put("a", json!(1));
    remote.fail_next_push(HandlerError::transient("502"));
    let report = sync.sync_now().await.unwrap();
    assert_eq!(report.totals().pushed, 1);
    assert_eq!(remote.push_count(), 2);
    assert_converged(&store, &remote);
}

#[tokio::test(start_paused = true)]
async fn a_rejected_change_is_quarantined_and_the_rest_is_pushed() {
    let remote = MemoryRemote::new();
    remote.reject_pushes_of("bad");
    let store = MemoryStore::new();
    let sync = single(&store, &remote, 100);
    store.put("good-1", json!(1));
    store.put("bad", json!("invalid"));
    store.put("good-2", json!(2));
    let mut events = sync.event_stream();
    let report = sync.sync_now().await.unwrap();
    assert_eq!(
        (report.totals().pushed, report.totals().quarantined),
        (2, 1)
    );
    assert!(
        drain(&mut events)
            .iter()
            .any(|e| matches!(e, SyncEvent::ChangeQuarantined { id, .. } if id == "bad"))
    );
    let q = sync.quarantined_changes("items").await.unwrap();
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].item["data"], json!("invalid"));
    assert_eq!(sync.feature_status("items").unwrap().quarantined, 1);

    // Quarantined changes are not pushed again until the app says so.
    let pushes = remote.push_count();
    sync.sync_now().await.unwrap();
    assert_eq!(remote.push_count(), pushes);
    sync.discard_quarantined("items", "bad").await.unwrap();
    assert!(store.get("bad").is_none());
    assert!(sync.quarantined_changes("items").await.unwrap().is_empty());
    assert_converged(&store, &remote);
}
