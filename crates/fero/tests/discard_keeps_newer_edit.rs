//! Regression: a local edit made after the engine listed the modified items (while the pull was
//! in flight) must not be dropped when the edit the engine saw loses a conflict. Found by the
//! simulation kit (seeds 3, 49, 54, 59) and by fero-sqlite's review: `RemoteChanges::discard_local`
//! carried only ids, so a store dropped the newer edit too, with no event naming it. It now
//! carries the local copy the decision was made on, and the newer edit gets its own conflict.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use fero::memory::{MemoryRemote, MemoryStore};
use fero::{
    ConflictOutcome, ConflictPhase, ConflictResolutionStrategy, FeatureSyncConfig, FeroSync,
    Version,
};
use serde_json::json;
use support::*;

#[tokio::test(start_paused = true)]
async fn an_edit_made_during_the_pull_survives_the_discard_of_the_edit_that_lost() {
    let remote = MemoryRemote::new();
    remote.insert("x", json!("v1"));
    let store = MemoryStore::new();
    let editor = store.clone();
    let armed = Arc::new(AtomicBool::new(false));
    let fire = armed.clone();
    // The edit lands after the engine listed the local edits and decided the page, just before
    // the store applies it (the engine lists them when the first page with items arrives).
    let handler = Hooked::new(store.handler(remote.clone())).before_apply(move |_| {
        if fire.swap(false, Ordering::SeqCst) {
            editor.put("x", json!("newer, made while the pull was in flight"));
        }
    });
    let sync = FeroSync::builder()
        .background_sync("c", handler, FeatureSyncConfig::new())
        .conflict_strategy(ConflictResolutionStrategy::ServerWins)
        .build()
        .unwrap();
    sync.sync_now().await.unwrap();
    store.put("x", json!("seen by the engine"));
    remote.insert("x", json!("server"));
    armed.store(true, Ordering::SeqCst);
    let mut events = sync.event_stream();

    sync.sync_now().await.unwrap();

    let c = conflicts(&drain(&mut events));
    assert_eq!(c.len(), 2, "one event per local edit that lost: {c:#?}");
    assert_eq!(
        (c[0].phase, c[0].local["data"].clone()),
        (ConflictPhase::Pull, json!("seen by the engine"))
    );
    assert_eq!(
        (c[1].phase, c[1].local["data"].clone()),
        (
            ConflictPhase::Push,
            json!("newer, made while the pull was in flight")
        )
    );
    assert!(c.iter().all(|e| e.outcome == ConflictOutcome::ServerKept));
    assert_eq!(c[1].local_version, Version(3));
    assert_converged(&store, &remote);
}
