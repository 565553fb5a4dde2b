//! Dependencies and priority decide the order features run in; bad graphs are refused.

mod support;

use fero::memory::{MemoryRemote, MemoryStore};
use fero::{BuildError, FeatureSyncConfig, FeroSync, HandlerError, SyncEvent, SyncKind};
use support::*;

fn order(events: &[SyncEvent]) -> Vec<String> {
    events
        .iter()
        .filter(|e| {
            matches!(
                e,
                SyncEvent::BackgroundSyncStarted { .. } | SyncEvent::InitialSyncStarted { .. }
            )
        })
        .map(|e| e.feature().to_string())
        .collect()
}

#[tokio::test(start_paused = true)]
async fn dependencies_run_first_then_higher_priority_among_ready_features() {
    let remote = seeded_remote(10);
    let store = MemoryStore::new();
    let h = || store.handler(remote.clone());
    let sync = FeroSync::builder()
        .background_sync(
            "messages",
            h(),
            FeatureSyncConfig::new()
                .priority(100)
                .depends_on("contacts"),
        )
        .background_sync("settings", h(), FeatureSyncConfig::new().priority(1))
        .background_sync("contacts", h(), FeatureSyncConfig::new().priority(5))
        .background_sync(
            "avatars",
            h(),
            FeatureSyncConfig::new().priority(50).depends_on("contacts"),
        )
        .max_concurrent(1)
        .build()
        .unwrap();
    let mut events = sync.event_stream();
    let report = sync.sync_now().await.unwrap();
    // contacts (5) outranks settings (1); once contacts is done, messages (100) and avatars (50)
    // are ready and outrank settings.
    assert_eq!(
        order(&drain(&mut events)),
        ["contacts", "messages", "avatars", "settings"]
    );
    let finished: Vec<_> = report
        .outcomes
        .iter()
        .map(|o| o.feature.to_string())
        .collect();
    assert_eq!(finished, ["contacts", "messages", "avatars", "settings"]);
}

#[tokio::test(start_paused = true)]
async fn a_failed_dependency_skips_its_dependents_but_not_independent_features() {
    let broken = MemoryRemote::new();
    broken.fail_next_fetch(HandlerError::permanent("401 unauthorized"));
    let remote = seeded_remote(5);
    let store = MemoryStore::new();
    let sync = FeroSync::builder()
        .background_sync(
            "contacts",
            MemoryStore::new().handler(broken),
            FeatureSyncConfig::new(),
        )
        .background_sync(
            "messages",
            store.handler(remote.clone()),
            FeatureSyncConfig::new().depends_on("contacts"),
        )
        .background_sync(
            "threads",
            store.handler(remote.clone()),
            FeatureSyncConfig::new().depends_on("messages"),
        )
        .background_sync(
            "settings",
            store.handler(remote.clone()),
            FeatureSyncConfig::new(),
        )
        .build()
        .unwrap();
    let mut events = sync.event_stream();
    let err = sync.sync_now().await.unwrap_err();
    let report = err.report().expect("a run report");
    assert!(
        report
            .outcome("settings", SyncKind::Background)
            .unwrap()
            .is_success()
    );
    for (feature, dependency) in [("messages", "contacts"), ("threads", "messages")] {
        match &report
            .outcome(feature, SyncKind::Background)
            .unwrap()
            .result
        {
            fero::FeatureResult::Skipped { dependency: d } => assert_eq!(d.as_str(), dependency),
            other => panic!("{feature}: expected skipped, got {other:?}"),
        }
    }
    let skipped: Vec<_> = drain(&mut events)
        .into_iter()
        .filter_map(|e| match e {
            SyncEvent::SyncSkipped {
                feature,
                dependency,
                ..
            } => Some((feature.to_string(), dependency.to_string())),
            _ => None,
        })
        .collect();
    assert_eq!(
        skipped,
        [
            ("messages".into(), "contacts".into()),
            ("threads".into(), "messages".into())
        ]
    );
    assert!(err.to_string().contains("401 unauthorized"), "{err}");
}

/// Counts fetches in flight across features; each fetch takes one second of tokio time.
#[derive(Debug, Clone, Default)]
struct Gauge {
    now: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    max: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

#[fero::async_trait]
impl fero::InitialSyncHandler for Gauge {
    type Item = fero::memory::Record;
    async fn fetch_remote_data(
        &self,
        _: Option<&fero::SyncCheckpoint>,
        _: usize,
    ) -> fero::HandlerResult<fero::SyncBatchResult<fero::memory::Record>> {
        use std::sync::atomic::Ordering::SeqCst;
        let running = self.now.fetch_add(1, SeqCst) + 1;
        self.max.fetch_max(running, SeqCst);
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        self.now.fetch_sub(1, SeqCst);
        Ok(fero::SyncBatchResult::empty())
    }
    async fn save_to_local(
        &self,
        items: Vec<fero::SyncPayload<fero::memory::Record>>,
        _: &fero::ApplyContext,
    ) -> fero::HandlerResult<fero::ApplyResult> {
        Ok(fero::ApplyResult::applied(items.len()))
    }
}

#[tokio::test(start_paused = true)]
async fn independent_features_run_concurrently_up_to_the_limit() {
    let gauge = Gauge::default();
    let mut builder = FeroSync::builder().max_concurrent(3);
    for name in ["a", "b", "c", "d", "e"] {
        builder = builder.initial_sync(name, gauge.clone(), FeatureSyncConfig::new());
    }
    let started = tokio::time::Instant::now();
    let report = builder.build().unwrap().run().await.unwrap();
    assert_eq!(report.outcomes.len(), 5);
    assert_eq!(
        gauge.max.load(std::sync::atomic::Ordering::SeqCst),
        3,
        "never more than max_concurrent"
    );
    // Five one-second fetches, three at a time: two rounds, not five.
    assert_eq!(started.elapsed(), std::time::Duration::from_secs(2));
}

#[test]
fn a_dependency_cycle_is_refused_and_named() {
    let h = || MemoryStore::new().handler(MemoryRemote::new());
    let err = FeroSync::builder()
        .background_sync(
            "contacts",
            h(),
            FeatureSyncConfig::new().depends_on("messages"),
        )
        .background_sync(
            "messages",
            h(),
            FeatureSyncConfig::new().depends_on("contacts"),
        )
        .build()
        .unwrap_err();
    assert!(matches!(err, BuildError::DependencyCycle { .. }));
    assert_eq!(
        err.to_string(),
        "the background features' dependencies form a cycle: contacts -> messages -> contacts"
    );
}

#[test]
fn an_unknown_dependency_a_duplicate_key_and_a_zero_batch_are_refused() {
    let h = || MemoryStore::new().handler(MemoryRemote::new());
    let unknown = FeroSync::builder()
        .background_sync(
            "messages",
            h(),
            FeatureSyncConfig::new().depends_on("contacts"),
        )
        .build()
        .unwrap_err();
    assert!(matches!(unknown, BuildError::UnknownDependency { .. }));
    assert!(unknown.to_string().contains("messages depends on contacts"));
    let duplicate = FeroSync::builder()
        .initial_sync("prefs", h(), FeatureSyncConfig::new())
        .initial_sync("prefs", h(), FeatureSyncConfig::new())
        .build()
        .unwrap_err();
    assert!(matches!(duplicate, BuildError::DuplicateFeature { .. }));
    let zero = FeroSync::builder()
        .background_sync("a", h(), FeatureSyncConfig::new().batch_size(0))
        .build()
        .unwrap_err();
    assert!(matches!(zero, BuildError::ZeroBatchSize { .. }));
    assert!(matches!(
        FeroSync::builder().max_concurrent(0).build(),
        Err(BuildError::ZeroConcurrency)
    ));
}
