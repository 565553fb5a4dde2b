//! Shared helpers for fero's integration tests: event collection and seeding.
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use fero::memory::{MemoryRemote, MemoryStore};
use fero::{FeroSync, SyncEvent, SyncEventStream};
use futures::StreamExt;

/// Fills a remote with `n` records `item-0000001`…
pub fn seeded_remote(n: usize) -> MemoryRemote {
    let remote = MemoryRemote::new();
    for i in 1..=n {
        remote.insert(format!("item-{i:07}"), serde_json::json!({ "n": i }));
    }
    remote
}

/// Every event currently buffered on `stream`, without waiting for more.
pub fn drain(stream: &mut SyncEventStream) -> Vec<SyncEvent> {
    let mut out = Vec::new();
    while let Some(Some(item)) = futures::FutureExt::now_or_never(stream.next()) {
        out.push(item.expect("the test subscriber must not lag"));
    }
    out
}

/// A short name per event, for asserting order.
pub fn name(event: &SyncEvent) -> String {
    let kind = match event {
        SyncEvent::InitialSyncRequired { .. } => "initial_required",
        SyncEvent::InitialSyncStarted { .. } => "initial_started",
        SyncEvent::InitialSyncProgress { .. } => "initial_progress",
        SyncEvent::InitialSyncCompleted { .. } => "initial_completed",
        SyncEvent::InitialSyncFailed { .. } => "initial_failed",
        SyncEvent::BackgroundSyncStarted { .. } => "background_started",
        SyncEvent::BackgroundSyncProgress { .. } => "background_progress",
        SyncEvent::BackgroundSyncCompleted { .. } => "background_completed",
        SyncEvent::BackgroundSyncFailed { .. } => "background_failed",
        SyncEvent::SyncSkipped { .. } => "skipped",
        SyncEvent::Retrying { .. } => "retrying",
        SyncEvent::ConflictResolved(_) => "conflict",
        SyncEvent::ChangeQuarantined { .. } => "quarantined",
        SyncEvent::Cancelled { .. } => "cancelled",
        SyncEvent::Custom { .. } => "custom",
        _ => "other",
    };
    format!("{}:{kind}", event.feature())
}

/// Asserts the store holds exactly the remote's live records at their versions.
pub fn assert_converged(store: &MemoryStore, remote: &MemoryRemote) {
    let local = store.snapshot();
    let server = remote.snapshot();
    assert_eq!(
        local.len(),
        server.len(),
        "local and server hold different counts"
    );
    assert_eq!(local, server, "local store differs from the server");
}

/// A sync with one background feature over `store` and `remote`.
pub fn single(store: &MemoryStore, remote: &MemoryRemote, batch: usize) -> FeroSync {
    FeroSync::builder()
        .background_sync(
            "items",
            store.handler(remote.clone()),
            fero::FeatureSyncConfig::new().batch_size(batch),
        )
        .seed(1)
        .build()
        .expect("valid configuration")
}

pub const SECOND: Duration = Duration::from_secs(1);
