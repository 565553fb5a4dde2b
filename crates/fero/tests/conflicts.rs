//! Every conflict strategy, on pull and on push; every conflict emits one event with both
//! versions, and a losing local edit is never dropped silently.

mod support;

use std::sync::Arc;

use fero::memory::{MemoryRemote, MemoryStore};
use fero::{
    ConflictOutcome, ConflictPhase, ConflictResolutionStrategy, FeatureSyncConfig, FeroSync,
    ManualResolution, Version,
};
use serde_json::json;
use support::*;

/// A device in sync with one item at v1; then the device edits it (local v2 on base 1) and another
/// client writes it on the server (v2).
async fn diverged(strategy: ConflictResolutionStrategy) -> (FeroSync, MemoryStore, MemoryRemote) {
    let remote = MemoryRemote::new();
    remote.insert("x", json!({"name": "Ada"}));
    remote.insert("y", json!({"name": "Bob"}));
    let store = MemoryStore::new();
    let handler = store.handler(remote.clone()).with_merge(Arc::new(
        |local, server, base| json!({ "local": local, "server": server, "base": base }),
    ));
    let sync = FeroSync::builder()
        .background_sync(
            "contacts",
            handler,
            FeatureSyncConfig::new().conflict_strategy(strategy),
        )
        .build()
        .unwrap();
    sync.sync_now().await.unwrap();
    store.put("x", json!({"name": "Ada (device)"}));
    remote.insert("x", json!({"name": "Ada (server)"}));
    (sync, store, remote)
}

#[tokio::test(start_paused = true)]
async fn highest_version_wins_gives_a_tie_to_the_server_and_says_so() {
    let (sync, store, remote) = diverged(ConflictResolutionStrategy::HighestVersionWins).await;
    let mut events = sync.event_stream();
    sync.sync_now().await.unwrap();
    let c = conflicts(&drain(&mut events));
    assert_eq!(c.len(), 1);
    assert_eq!(
        (c[0].outcome, c[0].phase),
        (ConflictOutcome::ServerKept, ConflictPhase::Pull)
    );
    assert_eq!(
        (c[0].local_version, c[0].server_version),
        (Version(2), Some(Version(2)))
    );
    assert_eq!(c[0].local["data"], json!({"name": "Ada (device)"}));
    assert_eq!(c[0].server["data"], json!({"name": "Ada (server)"}));
    assert_eq!(
        store.get("x").unwrap().data,
        json!({"name": "Ada (server)"})
    );
    assert_converged(&store, &remote);
}

#[tokio::test(start_paused = true)]
async fn highest_version_wins_keeps_a_local_copy_with_more_edits() {
    let (sync, store, remote) = diverged(ConflictResolutionStrategy::HighestVersionWins).await;
    store.put("x", json!({"name": "Ada (device, again)"})); // local v3 against server v2
    let mut events = sync.event_stream();
    sync.sync_now().await.unwrap();
    let c = conflicts(&drain(&mut events));
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].outcome, ConflictOutcome::LocalKept);
    assert_eq!(
        remote.get("x").unwrap().0.data,
        json!({"name": "Ada (device, again)"})
    );
    assert_eq!(remote.get("x").unwrap().0.version, Version(3));
    assert_converged(&store, &remote);
}

#[tokio::test(start_paused = true)]
async fn server_wins_drops_the_local_edit_with_an_event() {
    let (sync, store, remote) = diverged(ConflictResolutionStrategy::ServerWins).await;
    let mut events = sync.event_stream();
    let report = sync.sync_now().await.unwrap();
    assert_eq!(report.totals().conflicts, 1);
    let c = conflicts(&drain(&mut events));
    assert_eq!(c[0].outcome, ConflictOutcome::ServerKept);
    assert_eq!(store.modified_count(), 0);
    assert_eq!(remote.push_count(), 0, "nothing left to push");
    assert_converged(&store, &remote);
}

#[tokio::test(start_paused = true)]
async fn client_wins_rebases_the_local_edit_and_pushes_it() {
    let (sync, store, remote) = diverged(ConflictResolutionStrategy::ClientWins).await;
    let mut events = sync.event_stream();
    let report = sync.sync_now().await.unwrap();
    assert_eq!(
        conflicts(&drain(&mut events))[0].outcome,
        ConflictOutcome::LocalKept
    );
    assert_eq!(report.totals().pushed, 1);
    assert_eq!(
        remote.get("x").unwrap().0.data,
        json!({"name": "Ada (device)"})
    );
    assert_converged(&store, &remote);
}

#[tokio::test(start_paused = true)]
async fn custom_merges_with_local_server_and_base() {
    let (sync, store, remote) = diverged(ConflictResolutionStrategy::Custom).await;
    let mut events = sync.event_stream();
    sync.sync_now().await.unwrap();
    assert_eq!(
        conflicts(&drain(&mut events))[0].outcome,
        ConflictOutcome::Merged
    );
    let merged = remote.get("x").unwrap().0.data;
    assert_eq!(merged["local"], json!({"name": "Ada (device)"}));
    assert_eq!(merged["server"], json!({"name": "Ada (server)"}));
    assert_eq!(
        merged["base"],
        json!({"name": "Ada"}),
        "the common base reaches the merge"
    );
    assert_converged(&store, &remote);
}

#[tokio::test(start_paused = true)]
async fn a_failing_merge_parks_the_conflict_instead_of_dropping_anything() {
    let remote = MemoryRemote::new();
    remote.insert("x", json!(1));
    let store = MemoryStore::new();
    let sync = FeroSync::builder()
        .background_sync("c", store.handler(remote.clone()), FeatureSyncConfig::new())
        .conflict_strategy(ConflictResolutionStrategy::Custom) // no merge function given
        .build()
        .unwrap();
    sync.sync_now().await.unwrap();
    store.put("x", json!(2));
    remote.insert("x", json!(3));
    sync.sync_now().await.unwrap();
    let parked = sync.parked_conflicts("c").await.unwrap();
    assert_eq!(parked.len(), 1);
    assert!(
        parked[0].reason.contains("merge failed"),
        "{}",
        parked[0].reason
    );
    assert_eq!(
        store.get("x").unwrap().data,
        json!(2),
        "the local edit is kept"
    );
}

#[tokio::test(start_paused = true)]
async fn manual_parks_the_conflict_keeps_syncing_the_rest_and_resolves_on_request() {
    let (sync, store, remote) = diverged(ConflictResolutionStrategy::Manual).await;
    store.put("z", json!({"name": "new on device"}));
    remote.insert("y", json!({"name": "Bob (server)"}));
    let mut events = sync.event_stream();
    sync.sync_now().await.unwrap();

    let c = conflicts(&drain(&mut events));
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].outcome, ConflictOutcome::Parked);
    assert_eq!(
        store.get("x").unwrap().data,
        json!({"name": "Ada (device)"}),
        "local edit untouched"
    );
    assert_eq!(
        store.get("y").unwrap().data,
        json!({"name": "Bob (server)"}),
        "others keep syncing"
    );
    assert!(remote.get("z").is_some(), "other local edits are pushed");
    assert_eq!(sync.feature_status("contacts").unwrap().parked_conflicts, 1);

    // A parked item is neither pushed nor overwritten by later cycles.
    remote.insert("x", json!({"name": "Ada (server, again)"}));
    sync.sync_now().await.unwrap();
    assert_eq!(
        store.get("x").unwrap().data,
        json!({"name": "Ada (device)"})
    );

    let outcome = sync
        .resolve_conflict("contacts", "x", ManualResolution::KeepLocal)
        .await
        .unwrap();
    assert_eq!(outcome, ConflictOutcome::LocalKept);
    assert!(sync.parked_conflicts("contacts").await.unwrap().is_empty());
    sync.sync_now().await.unwrap();
    assert_eq!(
        remote.get("x").unwrap().0.data,
        json!({"name": "Ada (device)"})
    );
    assert_eq!(sync.feature_status("contacts").unwrap().parked_conflicts, 0);
    assert_converged(&store, &remote);
}

#[tokio::test(start_paused = true)]
async fn manual_resolution_can_keep_the_server_or_merge() {
    for (resolution, expected) in [
        (
            ManualResolution::KeepServer,
            json!({"name": "Ada (server)"}),
        ),
        (
            ManualResolution::Merged(json!({
                "id": "x", "version": 9, "base_version": null, "modified": true, "deleted": false,
                "data": {"name": "Ada (merged)"}
            })),
            json!({"name": "Ada (merged)"}),
        ),
    ] {
        let (sync, store, remote) = diverged(ConflictResolutionStrategy::Manual).await;
        sync.sync_now().await.unwrap();
        sync.resolve_conflict("contacts", "x", resolution)
            .await
            .unwrap();
        sync.sync_now().await.unwrap();
        assert_eq!(remote.get("x").unwrap().0.data, expected);
        assert_converged(&store, &remote);
    }
    let (sync, _, _) = diverged(ConflictResolutionStrategy::Manual).await;
    let err = sync
        .resolve_conflict("contacts", "nope", ManualResolution::KeepServer)
        .await
        .unwrap_err();
    assert!(matches!(err, fero::Error::NotParked { .. }), "{err}");
}

#[tokio::test(start_paused = true)]
async fn a_push_conflict_from_a_race_is_resolved_and_re_pushed() {
    let remote = MemoryRemote::new();
    remote.insert("x", json!(1));
    let store = MemoryStore::new();
    let racer = remote.clone();
    // Another client writes x after our pull and before our first push.
    let handler = Hooked::new(store.handler(remote.clone())).before_push(move |n| {
        if n == 1 {
            racer.insert("x", json!("server"));
        }
    });
    let sync = FeroSync::builder()
        .background_sync("c", handler, FeatureSyncConfig::new())
        .conflict_strategy(ConflictResolutionStrategy::ClientWins)
        .build()
        .unwrap();
    sync.sync_now().await.unwrap();
    store.put("x", json!("device"));
    let mut events = sync.event_stream();
    let report = sync.sync_now().await.unwrap();
    let c = conflicts(&drain(&mut events));
    assert_eq!(c.len(), 1);
    assert_eq!(
        (c[0].phase, c[0].outcome),
        (ConflictPhase::Push, ConflictOutcome::LocalKept)
    );
    assert_eq!(report.totals().pushed, 1);
    assert_eq!(remote.get("x").unwrap().0.data, json!("device"));
    assert_converged(&store, &remote);
}

#[tokio::test(start_paused = true)]
async fn an_item_that_keeps_conflicting_is_parked_after_the_push_rounds() {
    let remote = MemoryRemote::new();
    remote.insert("x", json!(0));
    let store = MemoryStore::new();
    let racer = remote.clone();
    let handler = Hooked::new(store.handler(remote.clone())).before_push(move |n| {
        racer.insert("x", json!(format!("server write {n}")));
    });
    let sync = FeroSync::builder()
        .background_sync("c", handler, FeatureSyncConfig::new())
        .conflict_strategy(ConflictResolutionStrategy::ClientWins)
        .max_push_rounds(2)
        .build()
        .unwrap();
    sync.sync_now().await.unwrap();
    store.put("x", json!("device"));
    let mut events = sync.event_stream();
    sync.sync_now().await.unwrap();
    let c = conflicts(&drain(&mut events));
    assert_eq!(c.last().unwrap().outcome, ConflictOutcome::Parked);
    assert_eq!(sync.parked_conflicts("c").await.unwrap().len(), 1);
    assert_eq!(
        store.get("x").unwrap().data,
        json!("device"),
        "the edit is parked, not lost"
    );
}

#[tokio::test(start_paused = true)]
async fn a_local_deletion_against_a_server_update_is_a_conflict_too() {
    let (sync, store, remote) = diverged(ConflictResolutionStrategy::ClientWins).await;
    store.delete("x");
    let mut events = sync.event_stream();
    sync.sync_now().await.unwrap();
    assert_eq!(conflicts(&drain(&mut events)).len(), 1);
    assert!(
        remote.get("x").unwrap().1,
        "the deletion won and is a tombstone on the server"
    );
    assert!(store.get("x").is_none());
    assert_converged(&store, &remote);
}

#[tokio::test(start_paused = true)]
async fn edits_parked_after_the_last_push_round_are_parked_in_id_order() {
    // With a HashMap the twelve would be parked (and their events sent) in a random order each
    // run, and a simulation seed would not replay.
    let ids: Vec<String> = (0..12).map(|n| format!("x{n:02}")).collect();
    let remote = MemoryRemote::new();
    for id in &ids {
        remote.insert(id, json!(0));
    }
    let store = MemoryStore::new();
    let racer = remote.clone();
    let racing = ids.clone();
    let handler = Hooked::new(store.handler(remote.clone())).before_push(move |n| {
        for id in &racing {
            racer.insert(id, json!(format!("server write {n}")));
        }
    });
    let sync = FeroSync::builder()
        .background_sync("c", handler, FeatureSyncConfig::new().batch_size(100))
        .conflict_strategy(ConflictResolutionStrategy::ClientWins)
        .max_push_rounds(2)
        .build()
        .unwrap();
    sync.sync_now().await.unwrap();
    // Written in reverse, so neither the edit order nor the push order is the id order.
    for id in ids.iter().rev() {
        store.put(id, json!("device"));
    }
    let mut events = sync.event_stream();
    sync.sync_now().await.unwrap();
    let parked_events: Vec<String> = conflicts(&drain(&mut events))
        .into_iter()
        .filter(|c| c.outcome == ConflictOutcome::Parked)
        .map(|c| c.id)
        .collect();
    assert_eq!(parked_events, ids);
    let parked: Vec<String> = sync
        .parked_conflicts("c")
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.id)
        .collect();
    assert_eq!(parked, ids);
}
