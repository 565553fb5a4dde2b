//! Property: whatever the feature graph, handler failures and cancels along the way, a final
//! clean run leaves every local store equal to its server, and no local edit is lost without a
//! conflict event.

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use fero::memory::{MemoryRemote, MemoryStore};
use fero::{
    ConflictOutcome, ConflictResolutionStrategy, FeatureSyncConfig, FeroSync, FixedBackoff,
    HandlerError, ManualResolution, SyncEvent,
};
use proptest::prelude::*;
use serde_json::json;
use support::*;

#[derive(Debug, Clone)]
enum Op {
    LocalPut { feature: usize, id: u8 },
    LocalDelete { feature: usize, id: u8 },
    ServerPut { feature: usize, id: u8 },
    ServerDelete { feature: usize, id: u8 },
    FailFetch { feature: usize, transient: bool },
    FailPush { feature: usize, transient: bool },
    FailApply { feature: usize },
    Run { cancel_after_pages: Option<u64> },
}

fn op(features: usize) -> impl Strategy<Value = Op> {
    let f = 0..features;
    prop_oneof![
        4 => (f.clone(), 0..12u8).prop_map(|(feature, id)| Op::LocalPut { feature, id }),
        1 => (f.clone(), 0..12u8).prop_map(|(feature, id)| Op::LocalDelete { feature, id }),
        3 => (f.clone(), 0..12u8).prop_map(|(feature, id)| Op::ServerPut { feature, id }),
        1 => (f.clone(), 0..12u8).prop_map(|(feature, id)| Op::ServerDelete { feature, id }),
        1 => (f.clone(), any::<bool>()).prop_map(|(feature, transient)| Op::FailFetch { feature, transient }),
        1 => (f.clone(), any::<bool>()).prop_map(|(feature, transient)| Op::FailPush { feature, transient }),
        1 => f.prop_map(|feature| Op::FailApply { feature }),
        3 => proptest::option::of(1..4u64).prop_map(|cancel_after_pages| Op::Run { cancel_after_pages }),
    ]
}

fn strategy() -> impl Strategy<Value = ConflictResolutionStrategy> {
    prop_oneof![
        Just(ConflictResolutionStrategy::HighestVersionWins),
        Just(ConflictResolutionStrategy::ServerWins),
        Just(ConflictResolutionStrategy::ClientWins),
        Just(ConflictResolutionStrategy::Custom),
        Just(ConflictResolutionStrategy::Manual),
    ]
}

/// Features 0..n, each depending on a random subset of the earlier ones (a DAG).
fn graph() -> impl Strategy<Value = Vec<Vec<usize>>> {
    (1..5usize).prop_flat_map(|n| {
        (0..n)
            .map(|i| {
                proptest::collection::vec(0..i.max(1), 0..=i.min(2))
                    .prop_map(move |d| if i == 0 { vec![] } else { d })
            })
            .collect::<Vec<_>>()
    })
}

struct Feature {
    remote: MemoryRemote,
    store: MemoryStore,
}

fn check(
    deps: Vec<Vec<usize>>,
    strategy: ConflictResolutionStrategy,
    ops: Vec<Op>,
) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a test runtime");
    runtime.block_on(async move {
        let features: Vec<Feature> = (0..deps.len())
            .map(|_| Feature {
                remote: MemoryRemote::new(),
                store: MemoryStore::new(),
            })
            .collect();
        let cancel_at = Arc::new(AtomicU64::new(u64::MAX));
        let handle: Arc<std::sync::OnceLock<FeroSync>> = Arc::new(std::sync::OnceLock::new());
        let mut builder = FeroSync::builder()
            .conflict_strategy(strategy)
            .backoff(FixedBackoff::new(Duration::from_millis(1), 3))
            .seed(3);
        for (i, (feature, deps)) in features.iter().zip(&deps).enumerate() {
            let (cancel_at, handle) = (cancel_at.clone(), handle.clone());
            let handler = Hooked::new(
                feature
                    .store
                    .handler(feature.remote.clone())
                    .with_merge(Arc::new(|local, _server, _base| local.clone())),
            )
            .after_apply(move |page| {
                if page >= cancel_at.load(Ordering::SeqCst) {
                    cancel_at.store(u64::MAX, Ordering::SeqCst);
                    handle.get().expect("set").cancel();
                }
            });
            let mut config = FeatureSyncConfig::new().batch_size(3);
            for d in deps {
                config = config.depends_on(format!("f{d}"));
            }
            builder = builder.background_sync(format!("f{i}"), handler, config);
        }
        let sync = builder.build().expect("a DAG is a valid graph");
        handle.set(sync.clone()).expect("once");
        let mut events = sync.event_stream();
        let mut seen: Vec<SyncEvent> = Vec::new();
        let mut edit = 0u64;
        // The last local edit per (feature, id): its unique value.
        let mut last_local: HashMap<(usize, String), serde_json::Value> = HashMap::new();

        for op in ops {
            match op {
                Op::LocalPut { feature, id } => {
                    edit += 1;
                    let value = json!({ "edit": edit });
                    features[feature].store.put(format!("k{id}"), value.clone());
                    last_local.insert((feature, format!("k{id}")), value);
                }
                Op::LocalDelete { feature, id } => {
                    let key = format!("k{id}");
                    if features[feature].store.get(&key).is_some() {
                        features[feature].store.delete(&key);
                        last_local.remove(&(feature, key));
                    }
                }
                Op::ServerPut { feature, id } => {
                    edit += 1;
                    features[feature]
                        .remote
                        .insert(format!("k{id}"), json!({ "server": edit }));
                }
                Op::ServerDelete { feature, id } => {
                    features[feature].remote.delete(&format!("k{id}"));
                }
                Op::FailFetch { feature, transient } => {
                    features[feature].remote.fail_next_fetch(if transient {
                        HandlerError::transient("flaky network")
                    } else {
                        HandlerError::permanent("refused")
                    })
                }
                Op::FailPush { feature, transient } => {
                    features[feature].remote.fail_next_push(if transient {
                        HandlerError::transient("flaky network")
                    } else {
                        HandlerError::permanent("refused")
                    })
                }
                Op::FailApply { feature } => features[feature]
                    .store
                    .fail_next_apply(HandlerError::transient("busy")),
                Op::Run { cancel_after_pages } => {
                    cancel_at.store(cancel_after_pages.unwrap_or(u64::MAX), Ordering::SeqCst);
                    // Failures are expected here; what matters is the state they leave.
                    let _ = sync.sync_now().await;
                    cancel_at.store(u64::MAX, Ordering::SeqCst);
                    seen.extend(drain(&mut events));
                }
            }
        }
        // Clean runs: scripted faults are used up within a few runs; parked conflicts (manual
        // strategy) are resolved by "the app" keeping the local edit.
        for f in &features {
            f.remote.clear_faults();
            f.store.clear_faults();
        }
        let mut clean = false;
        for _ in 0..4 {
            for i in 0..features.len() {
                for p in sync.parked_conflicts(format!("f{i}")).await.unwrap() {
                    // A scripted fault may fail the resolution; the conflict then stays parked
                    // and is resolved on the next round.
                    let resolved = sync
                        .resolve_conflict(format!("f{i}"), &p.id, ManualResolution::KeepLocal)
                        .await;
                    if resolved.is_err() {
                        let key = format!("f{i}");
                        let still = sync
                            .parked_conflicts(key)
                            .await
                            .unwrap()
                            .iter()
                            .any(|q| q.id == p.id);
                        prop_assert!(still, "a failed resolution must leave the conflict parked");
                    }
                }
            }
            if sync.sync_now().await.is_ok()
                && features.iter().all(|f| f.store.modified_count() == 0)
            {
                clean = true;
                break;
            }
        }
        seen.extend(drain(&mut events));
        prop_assert!(clean, "the clean runs did not complete");
        for (i, f) in features.iter().enumerate() {
            prop_assert_eq!(
                f.store.snapshot(),
                f.remote.snapshot(),
                "feature f{} differs from its server",
                i
            );
        }
        // No local edit lost without a conflict event.
        let dropped: std::collections::HashSet<(String, String)> = seen
            .iter()
            .filter_map(|e| match e {
                SyncEvent::ConflictResolved(c) if c.outcome == ConflictOutcome::ServerKept => {
                    Some((c.feature.to_string(), c.id.clone()))
                }
                _ => None,
            })
            .collect();
        for ((feature, id), value) in &last_local {
            let reached = features[*feature]
                .remote
                .history()
                .iter()
                .any(|(r, _)| &r.id == id && &r.data == value);
            prop_assert!(
                reached || dropped.contains(&(format!("f{feature}"), id.clone())),
                "local edit {} of f{}/{} neither reached the server nor produced a conflict event",
                value,
                feature,
                id
            );
        }
        sync.dispose().await;
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_graphs_failures_and_cancels_still_converge_without_silent_loss(
        deps in graph(),
        strategy in strategy(),
        ops in proptest::collection::vec(op(4), 1..60),
    ) {
        let n = deps.len();
        let ops: Vec<Op> = ops.into_iter().map(|op| clamp(op, n)).collect();
        check(deps, strategy, ops)?;
    }
}

/// Maps an op generated for 4 features onto the `n` of this graph.
fn clamp(op: Op, n: usize) -> Op {
    let f = |feature: usize| feature % n;
    match op {
        Op::LocalPut { feature, id } => Op::LocalPut {
            feature: f(feature),
            id,
        },
        Op::LocalDelete { feature, id } => Op::LocalDelete {
            feature: f(feature),
            id,
        },
        Op::ServerPut { feature, id } => Op::ServerPut {
            feature: f(feature),
            id,
        },
        Op::ServerDelete { feature, id } => Op::ServerDelete {
            feature: f(feature),
            id,
        },
        Op::FailFetch { feature, transient } => Op::FailFetch {
            feature: f(feature),
            transient,
        },
        Op::FailPush { feature, transient } => Op::FailPush {
            feature: f(feature),
            transient,
        },
        Op::FailApply { feature } => Op::FailApply {
            feature: f(feature),
        },
        run @ Op::Run { .. } => run,
    }
}
