//! Events in their documented order, lagging subscribers, triggers that coalesce, the timer,
//! cancel and dispose.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use fero::memory::MemoryStore;
use fero::{FeatureSyncConfig, FeroSync, SyncEvent};
use futures::StreamExt;
use serde_json::json;
use support::*;

#[tokio::test(start_paused = true)]
async fn a_background_cycle_emits_started_progress_and_completed_in_order() {
    let remote = seeded_remote(25);
    let store = MemoryStore::new();
    let sync = single(&store, &remote, 10);
    store.put("local-1", json!(1));
    let mut events = sync.event_stream();
    sync.sync_now().await.unwrap();
    let names: Vec<String> = drain(&mut events).iter().map(name).collect();
    assert_eq!(
        names,
        [
            "items:background_started",
            "items:background_progress",
            "items:background_progress",
            "items:background_progress",
            "items:background_progress",
            "items:background_completed"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn an_app_event_joins_the_stream_and_a_slow_subscriber_is_told_what_it_missed() {
    let remote = seeded_remote(100);
    let store = MemoryStore::new();
    let sync = FeroSync::builder()
        .background_sync(
            "items",
            store.handler(remote),
            FeatureSyncConfig::new().batch_size(1),
        )
        .event_capacity(8)
        .build()
        .unwrap();
    let mut slow = sync.event_stream();
    sync.sync_now().await.unwrap(); // ~100 events for a buffer of 8: sync never waits for us
    match slow.next().await {
        Some(Err(fero::Lagged { missed })) => assert!(missed > 90, "missed {missed}"),
        other => panic!("expected a lag notice, got {other:?}"),
    }
    // It then continues with the oldest events still buffered.
    let buffered = drain(&mut slow);
    assert_eq!(buffered.len(), 8);
    assert!(matches!(
        buffered.last(),
        Some(SyncEvent::BackgroundSyncCompleted { .. })
    ));
    sync.emit_sync_event(SyncEvent::Custom {
        feature: "items".into(),
        name: "hello".into(),
        detail: json!(1),
    });
    let rest = drain(&mut slow);
    assert!(matches!(rest.as_slice(), [SyncEvent::Custom { name, .. }] if name == "hello"));
}

#[tokio::test(start_paused = true)]
async fn triggers_during_a_cycle_coalesce_into_one_follow_up_cycle() {
    let remote = seeded_remote(30);
    let store = MemoryStore::new();
    let handle: Arc<std::sync::OnceLock<FeroSync>> = Arc::new(std::sync::OnceLock::new());
    let during = handle.clone();
    let fired = Arc::new(AtomicU64::new(0));
    let count = fired.clone();
    // While the first cycle applies its pages, three more triggers arrive.
    let handler = Hooked::new(store.handler(remote.clone())).after_apply(move |_| {
        if count.fetch_add(1, Ordering::SeqCst) < 3 {
            during
                .get()
                .expect("set before triggering")
                .trigger("items")
                .unwrap();
        }
    });
    let sync = FeroSync::builder()
        .background_sync("items", handler, FeatureSyncConfig::new().batch_size(10))
        .build()
        .unwrap();
    handle.set(sync.clone()).unwrap();
    let mut events = sync.event_stream();
    sync.trigger("items").unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
    let cycles = drain(&mut events)
        .iter()
        .filter(|e| matches!(e, SyncEvent::BackgroundSyncCompleted { .. }))
        .count();
    assert_eq!(
        cycles, 2,
        "the first cycle and one follow-up for the three triggers during it"
    );
    assert_converged(&store, &remote);
    assert!(matches!(
        sync.trigger("nope"),
        Err(fero::Error::UnknownFeature { .. })
    ));
    sync.dispose().await;
}

#[tokio::test(start_paused = true)]
async fn the_interval_runs_background_cycles_after_start_sync() {
    let remote = seeded_remote(1);
    let store = MemoryStore::new();
    let sync = FeroSync::builder()
        .background_sync(
            "items",
            store.handler(remote.clone()),
            FeatureSyncConfig::new(),
        )
        .background_interval(Duration::from_secs(60))
        .build()
        .unwrap();
    sync.start_sync().await.unwrap();
    let mut events = sync.event_stream();
    remote.insert("later", json!(2));
    tokio::time::sleep(Duration::from_secs(61)).await;
    let names: Vec<String> = drain(&mut events).iter().map(name).collect();
    assert!(
        names.contains(&"items:background_completed".to_string()),
        "{names:?}"
    );
    assert_converged(&store, &remote);
    sync.dispose().await;
}

#[tokio::test(start_paused = true)]
async fn dispose_cancels_the_run_in_flight_closes_the_stream_and_refuses_later_calls() {
    let remote = seeded_remote(1_000);
    let store = MemoryStore::new();
    let gate = Arc::new(tokio::sync::Notify::new());
    let opened = gate.clone();
    let handler = Hooked::new(store.handler(remote.clone())).after_apply(move |page| {
        if page == 2 {
            opened.notify_one();
        }
    });
    let sync = FeroSync::builder()
        .background_sync("items", handler, FeatureSyncConfig::new().batch_size(10))
        .build()
        .unwrap();
    let mut events = sync.event_stream();
    let running = tokio::spawn({
        let sync = sync.clone();
        async move { sync.sync_now().await }
    });
    gate.notified().await;
    sync.dispose().await;
    let err = running.await.unwrap().unwrap_err();
    assert!(err.is_cancelled(), "{err}");
    assert!(store.len() < 1_000, "stopped before the end");
    assert!(matches!(sync.run().await, Err(fero::Error::Disposed)));
    assert!(matches!(sync.trigger("items"), Err(fero::Error::Disposed)));
    // The stream drains what was sent, then ends.
    let mut rest = Vec::new();
    while let Some(e) = events.next().await {
        rest.push(e.unwrap());
    }
    assert!(
        rest.iter()
            .any(|e| matches!(e, SyncEvent::Cancelled { .. }))
    );
    assert!(
        sync.event_stream().next().await.is_none(),
        "a new subscriber sees an ended stream"
    );
    sync.dispose().await; // twice is harmless
}

#[tokio::test(start_paused = true)]
async fn a_cancel_before_any_run_does_not_affect_the_next_run() {
    let remote = seeded_remote(50);
    let store = MemoryStore::new();
    let sync = single(&store, &remote, 10);
    sync.cancel(); // no run in flight: the next run gets a fresh token
    sync.sync_now().await.unwrap();
    assert_converged(&store, &remote);
}

#[tokio::test(start_paused = true)]
async fn the_status_stream_shows_the_latest_status() {
    let remote = seeded_remote(30);
    let sync = single(&MemoryStore::new(), &remote, 10);
    let mut statuses = sync.status_stream();
    let first = statuses.next().await.unwrap();
    assert_eq!(first["items"].phase, fero::SyncPhase::Idle);
    sync.sync_now().await.unwrap();
    let latest = statuses.next().await.unwrap();
    let items = &latest["items"];
    assert_eq!(items.phase, fero::SyncPhase::Completed);
    assert_eq!((items.pages, items.items), (3, 30));
    assert!(items.last_success.is_some());
}
