//! [`FeroSync`], the orchestrator, and its [`FeroSyncBuilder`].
//!
//! FeroSync owns no data. It owns the feature graphs (validated once, at `build()`), the metadata
//! repo handle, the retry backoff, the conflict strategies, the event bus, the status map and the
//! cancellation token of the current run.
//!
//! # A run
//! 1. Initial sync for every initial feature whose initial sync has not completed (persisted
//!    state), in dependency order; among ready features, higher priority first; at most
//!    `max_concurrent` at once. A feature whose dependency failed is skipped with an event naming
//!    the dependency; independent features are not held back.
//! 2. A background cycle for every background feature, ordered the same way. A background
//!    feature whose own initial sync did not complete in this run is skipped.
//!
//! Runs never overlap: a run started while another is in flight waits for it.

use std::collections::{BTreeSet, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::{Notify, broadcast, watch};
use tokio_stream::wrappers::WatchStream;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::background::{BackgroundRunner, TypedBackground};
use crate::checkpoint::SyncCheckpoint;
use crate::clock::{Clock, SystemClock};
use crate::config::FeatureSyncConfig;
use crate::conflict::{ConflictOutcome, ConflictResolutionStrategy, ManualResolution};
use crate::error::{BuildError, Error, Operation, Result};
use crate::events::{SyncDirection, SyncEvent, SyncEventStream};
use crate::graph::FeatureGraph;
use crate::handler::{BackgroundSyncHandler, HandlerResult, InitialSyncHandler};
use crate::item::FeatureKey;
use crate::metadata::{
    InMemorySyncMetadataRepo, InitialSyncState, ParkedConflict, QuarantinedChange, RepoError,
    SyncMetadataRepo,
};
use crate::page::SyncKind;
use crate::pull::{InitialRunner, TypedInitial};
use crate::report::{FeatureCounts, FeatureOutcome, FeatureResult, RunReport};
use crate::retry::{
    self, BackoffStrategy, ExponentialBackoff, RandomSource, RetryDecision, SeededRandom,
};
use crate::status::{FeatureStatus, StatusMap, SyncPhase};

/// Events buffered per subscriber before it lags (see [`crate::events`]).
const DEFAULT_EVENT_CAPACITY: usize = 1_024;

/// Push rounds for one conflicting item before it is parked: enough for a device to win a race
/// against a few concurrent writers, bounded so a hot item cannot keep a cycle busy forever.
const DEFAULT_MAX_PUSH_ROUNDS: u32 = 3;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Guarded values are replaced in single assignments; a panic elsewhere cannot leave them
    // half-written, so a poisoned lock is still safe to use.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A feature's resolved settings: its own config with the engine's defaults filled in.
pub(crate) struct FeatureSettings {
    pub(crate) batch_size: usize,
    pub(crate) backoff: Arc<dyn BackoffStrategy>,
    pub(crate) strategy: ConflictResolutionStrategy,
}

struct Feature<R: ?Sized> {
    key: FeatureKey,
    settings: FeatureSettings,
    runner: Box<R>,
}

/// The cancellation token of one run.
pub(crate) struct RunCtx {
    token: CancellationToken,
}

impl RunCtx {
    /// A safe point: stop here if the run was cancelled.
    pub(crate) fn check(&self, key: &FeatureKey) -> Result<()> {
        if self.token.is_cancelled() {
            Err(Error::Cancelled {
                feature: key.clone(),
            })
        } else {
            Ok(())
        }
    }
}

pub(crate) struct Inner {
    initial: Vec<Feature<dyn InitialRunner>>,
    initial_graph: FeatureGraph,
    background: Vec<Feature<dyn BackgroundRunner>>,
    background_graph: FeatureGraph,
    pub(crate) repo: Arc<dyn SyncMetadataRepo>,
    random: Mutex<Box<dyn RandomSource>>,
    pub(crate) clock: Arc<dyn Clock>,
    max_concurrent: usize,
    pub(crate) max_push_rounds: u32,
    interval: Option<Duration>,
    events: Mutex<Option<broadcast::Sender<SyncEvent>>>,
    status: watch::Sender<StatusMap>,
    cancel: Mutex<CancellationToken>,
    run_lock: tokio::sync::Mutex<()>,
    disposed: AtomicBool,
    /// Stops the trigger loop (dispose, or the last handle dropped).
    shutdown: CancellationToken,
    pending: Mutex<BTreeSet<usize>>,
    wake: Arc<Notify>,
    loop_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shutdown.cancel();
        lock(&self.cancel).cancel();
    }
}

impl Inner {
    /// `true` while someone holds an event stream: an event built for nobody is skipped.
    pub(crate) fn has_event_subscribers(&self) -> bool {
        lock(&self.events)
            .as_ref()
            .is_some_and(|sender| sender.receiver_count() > 0)
    }

    pub(crate) fn emit(&self, event: SyncEvent) {
        if let Some(sender) = lock(&self.events).as_ref() {
            // No subscriber is not an error: events are for whoever listens.
            let _ = sender.send(event);
        }
    }

    fn set_status(&self, key: &FeatureKey, update: impl FnOnce(&mut FeatureStatus)) {
        self.status.send_modify(|map| {
            let status = map.entry(key.clone()).or_insert_with(|| FeatureStatus {
                feature: key.clone(),
                ..FeatureStatus::default()
            });
            update(status);
        });
    }

    pub(crate) fn page_done(
        &self,
        key: &FeatureKey,
        kind: SyncKind,
        counts: &FeatureCounts,
        checkpoint: &SyncCheckpoint,
    ) {
        self.set_status(key, |s| {
            s.pages = counts.pages;
            s.items = counts.pulled;
        });
        match kind {
            SyncKind::Initial => self.emit(SyncEvent::InitialSyncProgress {
                feature: key.clone(),
                pages: counts.pages,
                items: counts.pulled,
                checkpoint: checkpoint.clone(),
            }),
            SyncKind::Background => {
                self.progress(key, SyncDirection::Pull, counts.pages, counts.pulled)
            }
        }
    }

    pub(crate) fn progress(
        &self,
        key: &FeatureKey,
        direction: SyncDirection,
        pages: u64,
        items: u64,
    ) {
        if direction == SyncDirection::Push {
            self.set_status(key, |s| s.pages = s.pages.max(pages));
        } else {
            self.set_status(key, |s| {
                s.pages = pages;
                s.items = items;
            });
        }
        self.emit(SyncEvent::BackgroundSyncProgress {
            feature: key.clone(),
            direction,
            pages,
            items,
        });
    }

    /// Runs a repo call, naming the feature in its error.
    pub(crate) async fn repo_call<T>(
        &self,
        key: &FeatureKey,
        call: impl Future<Output = std::result::Result<T, RepoError>>,
    ) -> Result<T> {
        call.await.map_err(|source| Error::Repo {
            feature: key.clone(),
            source,
        })
    }

    pub(crate) async fn repo_checkpoint(&self, key: &FeatureKey) -> Result<Option<SyncCheckpoint>> {
        self.repo_call(key, self.repo.checkpoint(key)).await
    }

    pub(crate) async fn repo_save_checkpoint(
        &self,
        key: &FeatureKey,
        checkpoint: &SyncCheckpoint,
    ) -> Result<()> {
        self.repo_call(key, self.repo.save_checkpoint(key, checkpoint))
            .await
    }

    /// Runs a handler call with the retry policy: transient failures wait the backoff's delay on
    /// tokio's clock (cancellable) and run again; permanent ones and exhausted attempts fail.
    /// With `cancellable`, a cancel also abandons the call in flight (safe for fetch, listing
    /// and push: nothing of theirs is half-applied locally).
    pub(crate) async fn attempt<T, F, Fut>(
        &self,
        run: &RunCtx,
        key: &FeatureKey,
        operation: Operation,
        settings: &FeatureSettings,
        cancellable: bool,
        mut call: F,
    ) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = HandlerResult<T>>,
    {
        let cancelled = || Error::Cancelled {
            feature: key.clone(),
        };
        let mut attempts = 0u32;
        loop {
            run.check(key)?;
            let result = if cancellable {
                tokio::select! {
                    biased;
                    _ = run.token.cancelled() => return Err(cancelled()),
                    result = call() => result,
                }
            } else {
                call().await
            };
            let error = match result {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            attempts += 1;
            self.wait_before_retry(run, key, operation, settings, error, attempts)
                .await?;
        }
    }

    /// After the `attempts`-th failed attempt of `operation`: asks the retry policy, and for a
    /// retry emits [`SyncEvent::Retrying`] and waits the backoff's delay on tokio's clock
    /// (cancellable). Returns `Ok` when the caller should attempt again; the handler error when
    /// it is permanent or the attempts are used up; [`Error::Cancelled`] when the run is
    /// cancelled during the wait.
    pub(crate) async fn wait_before_retry(
        &self,
        run: &RunCtx,
        key: &FeatureKey,
        operation: Operation,
        settings: &FeatureSettings,
        error: crate::handler::HandlerError,
        attempts: u32,
    ) -> Result<()> {
        let decision = {
            let mut random = lock(&self.random);
            retry::decide(&error, attempts, settings.backoff.as_ref(), random.as_mut())
        };
        match decision {
            RetryDecision::GiveUp => Err(Error::Handler {
                feature: key.clone(),
                operation,
                attempts,
                source: error,
            }),
            RetryDecision::Retry(delay) => {
                tracing::debug!(feature = %key, %operation, attempts, ?delay, error = %error, "retrying");
                self.emit(SyncEvent::Retrying {
                    feature: key.clone(),
                    operation,
                    attempt: attempts,
                    delay,
                    error: error.to_string(),
                });
                tokio::select! {
                    biased;
                    _ = run.token.cancelled() => Err(Error::Cancelled {
                        feature: key.clone(),
                    }),
                    _ = tokio::time::sleep(delay) => Ok(()),
                }
            }
        }
    }

    fn check_alive(&self) -> Result<()> {
        if self.disposed.load(Ordering::Acquire) {
            Err(Error::Disposed)
        } else {
            Ok(())
        }
    }

    fn run_ctx(&self) -> RunCtx {
        RunCtx {
            token: lock(&self.cancel).clone(),
        }
    }

    async fn refresh_counts(&self, key: &FeatureKey) {
        let parked = self.repo.parked_conflicts(key).await.map(|p| p.len());
        let quarantined = self.repo.quarantined(key).await.map(|q| q.len());
        self.set_status(key, |s| {
            if let Ok(parked) = parked {
                s.parked_conflicts = parked;
            }
            if let Ok(quarantined) = quarantined {
                s.quarantined = quarantined;
            }
        });
    }

    /// One feature's initial sync, with its events and status.
    async fn initial_one(&self, run: &RunCtx, node: usize, forced: bool) -> FeatureResult {
        let feature = &self.initial[node];
        let key = &feature.key;
        let state = match self.repo_call(key, self.repo.initial_sync_state(key)).await {
            Ok(state) => state,
            Err(e) => return self.failed(key, SyncKind::Initial, e),
        };
        if state == InitialSyncState::Completed && !forced {
            self.set_status(key, |s| {
                s.initial = InitialSyncState::Completed;
                s.phase = SyncPhase::Completed;
            });
            return FeatureResult::AlreadyCompleted;
        }
        let resumed_from = self.repo_checkpoint(key).await.ok().flatten();
        self.emit(SyncEvent::InitialSyncStarted {
            feature: key.clone(),
            resumed_from,
        });
        self.mark_running(key, SyncKind::Initial);
        let started = tokio::time::Instant::now();
        let span = tracing::info_span!("fero.feature", feature = %key, kind = "initial");
        let result = async {
            let mut counts = feature
                .runner
                .run(self, run, key, &feature.settings)
                .await?;
            self.repo_call(
                key,
                self.repo
                    .set_initial_sync_state(key, InitialSyncState::Completed),
            )
            .await?;
            self.repo_call(key, self.repo.set_last_success(key, self.clock.now()))
                .await?;
            counts.duration = started.elapsed();
            Ok::<_, Error>(counts)
        }
        .instrument(span)
        .await;
        match result {
            Ok(counts) => {
                self.mark_completed(key, SyncKind::Initial);
                self.emit(SyncEvent::InitialSyncCompleted {
                    feature: key.clone(),
                    pages: counts.pages,
                    items: counts.pulled,
                    duration: counts.duration,
                });
                FeatureResult::Completed(counts)
            }
            Err(e) => self.failed(key, SyncKind::Initial, e),
        }
    }

    fn mark_running(&self, key: &FeatureKey, kind: SyncKind) {
        self.set_status(key, |s| {
            s.phase = SyncPhase::Running { kind };
            s.pages = 0;
            s.items = 0;
        });
    }

    fn mark_completed(&self, key: &FeatureKey, kind: SyncKind) {
        let now = self.clock.now();
        self.set_status(key, |s| {
            s.phase = SyncPhase::Completed;
            if kind == SyncKind::Initial {
                s.initial = InitialSyncState::Completed;
            }
            s.last_error = None;
            s.last_success = Some(now);
        });
    }

    /// One feature's background cycle, with its events and status.
    async fn background_one(&self, run: &RunCtx, node: usize) -> FeatureResult {
        let feature = &self.background[node];
        let key = &feature.key;
        self.emit(SyncEvent::BackgroundSyncStarted {
            feature: key.clone(),
        });
        self.mark_running(key, SyncKind::Background);
        let started = tokio::time::Instant::now();
        let span = tracing::info_span!("fero.feature", feature = %key, kind = "background");
        let result = async {
            let mut counts = feature
                .runner
                .cycle(self, run, key, &feature.settings)
                .await?;
            self.repo_call(key, self.repo.set_last_success(key, self.clock.now()))
                .await?;
            counts.duration = started.elapsed();
            Ok::<_, Error>(counts)
        }
        .instrument(span)
        .await;
        self.refresh_counts(key).await;
        match result {
            Ok(counts) => {
                self.mark_completed(key, SyncKind::Background);
                self.emit(SyncEvent::BackgroundSyncCompleted {
                    feature: key.clone(),
                    pulled: counts.pulled,
                    pushed: counts.pushed,
                    conflicts: counts.conflicts,
                    duration: counts.duration,
                });
                FeatureResult::Completed(counts)
            }
            Err(e) => self.failed(key, SyncKind::Background, e),
        }
    }

    fn failed(&self, key: &FeatureKey, kind: SyncKind, error: Error) -> FeatureResult {
        if error.is_cancelled() {
            self.set_status(key, |s| s.phase = SyncPhase::Cancelled);
            self.emit(SyncEvent::Cancelled {
                feature: key.clone(),
                kind,
            });
            return FeatureResult::Cancelled;
        }
        tracing::warn!(feature = %key, ?kind, error = %error, "sync failed");
        let error = Arc::new(error);
        self.set_status(key, |s| {
            s.phase = SyncPhase::Failed;
            s.last_error = Some(error.clone());
        });
        self.emit(match kind {
            SyncKind::Initial => SyncEvent::InitialSyncFailed {
                feature: key.clone(),
                error: error.clone(),
            },
            SyncKind::Background => SyncEvent::BackgroundSyncFailed {
                feature: key.clone(),
                error: error.clone(),
            },
        });
        FeatureResult::Failed(error)
    }

    /// Runs `nodes` of one kind in dependency order (dependencies outside `nodes` count as
    /// satisfied), priority first among ready ones, at most `max_concurrent` at once.
    async fn run_phase(
        &self,
        run: &RunCtx,
        kind: SyncKind,
        nodes: &[usize],
        blocked: &[(usize, FeatureKey)],
        forced: bool,
        report: &mut RunReport,
    ) {
        #[derive(Clone, PartialEq)]
        enum State {
            Waiting,
            Running,
            Done,
            NotDone,
        }
        let graph = match kind {
            SyncKind::Initial => &self.initial_graph,
            SyncKind::Background => &self.background_graph,
        };
        let key_of = |n: usize| graph.key(n).clone();
        let wanted: HashSet<usize> = nodes.iter().copied().collect();
        let mut state = vec![State::Done; graph.len()];
        for &n in nodes {
            state[n] = State::Waiting;
            self.set_status(graph.key(n), |s| s.phase = SyncPhase::Pending);
        }
        let push_outcome = |report: &mut RunReport, n: usize, result: FeatureResult| {
            report.outcomes.push(FeatureOutcome {
                feature: key_of(n),
                kind,
                result,
            });
        };
        for (n, dependency) in blocked {
            if wanted.contains(n) {
                state[*n] = State::NotDone;
                self.skip(graph.key(*n), kind, dependency);
                push_outcome(
                    report,
                    *n,
                    FeatureResult::Skipped {
                        dependency: dependency.clone(),
                    },
                );
            }
        }
        let mut running: FuturesUnordered<BoxFuture<'_, (usize, FeatureResult)>> =
            FuturesUnordered::new();
        loop {
            // Skip what can no longer run, then start what is ready.
            let mut changed = true;
            while changed {
                changed = false;
                for &n in nodes {
                    if state[n] != State::Waiting {
                        continue;
                    }
                    if let Some(&dep) = graph
                        .dependencies(n)
                        .iter()
                        .find(|&&d| state[d] == State::NotDone)
                    {
                        state[n] = State::NotDone;
                        let dependency = graph.key(dep).clone();
                        self.skip(graph.key(n), kind, &dependency);
                        push_outcome(report, n, FeatureResult::Skipped { dependency });
                        changed = true;
                    }
                }
            }
            let mut ready: Vec<usize> = nodes
                .iter()
                .copied()
                .filter(|&n| {
                    state[n] == State::Waiting
                        && graph
                            .dependencies(n)
                            .iter()
                            .all(|&d| state[d] == State::Done)
                })
                .collect();
            graph.sort_ready(&mut ready);
            for n in ready {
                if running.len() >= self.max_concurrent {
                    break;
                }
                state[n] = State::Running;
                running.push(Box::pin(async move {
                    let result = match kind {
                        SyncKind::Initial => self.initial_one(run, n, forced).await,
                        SyncKind::Background => self.background_one(run, n).await,
                    };
                    (n, result)
                }));
            }
            let Some((n, result)) = running.next().await else {
                break;
            };
            state[n] = if matches!(
                result,
                FeatureResult::Completed(_) | FeatureResult::AlreadyCompleted
            ) {
                State::Done
            } else {
                State::NotDone
            };
            push_outcome(report, n, result);
        }
    }

    fn skip(&self, key: &FeatureKey, kind: SyncKind, dependency: &FeatureKey) {
        self.set_status(key, |s| {
            s.phase = SyncPhase::Skipped {
                dependency: dependency.clone(),
            }
        });
        self.emit(SyncEvent::SyncSkipped {
            feature: key.clone(),
            kind,
            dependency: dependency.clone(),
        });
    }

    /// A full run: initial sync where required, then background cycles of `background` nodes.
    async fn run_all(
        &self,
        initial: &[usize],
        background: &[usize],
        forced: bool,
    ) -> Result<RunReport> {
        self.check_alive()?;
        let _running = self.run_lock.lock().await;
        self.check_alive()?;
        let run = self.run_ctx();
        let mut report = RunReport::default();
        if !initial.is_empty() {
            for &n in initial {
                let key = &self.initial[n].key;
                let state = self.repo_call(key, self.repo.initial_sync_state(key)).await;
                if forced || matches!(state, Ok(InitialSyncState::Pending)) {
                    self.emit(SyncEvent::InitialSyncRequired {
                        feature: key.clone(),
                    });
                }
            }
            self.run_phase(&run, SyncKind::Initial, initial, &[], forced, &mut report)
                .await;
        }
        if !background.is_empty() {
            // A background feature whose own initial sync did not complete must not start.
            let blocked: Vec<(usize, FeatureKey)> = background
                .iter()
                .filter_map(|&n| {
                    let key = &self.background[n].key;
                    let own = self.initial_graph.node(key)?;
                    let own_initial_failed = report.outcomes.iter().any(|o| {
                        o.kind == SyncKind::Initial && &o.feature == key && !o.is_success()
                    });
                    (own_initial_failed && initial.contains(&own)).then(|| (n, key.clone()))
                })
                .collect();
            self.run_phase(
                &run,
                SyncKind::Background,
                background,
                &blocked,
                false,
                &mut report,
            )
            .await;
        }
        report.into_result()
    }

    fn all_initial(&self) -> Vec<usize> {
        (0..self.initial.len()).collect()
    }

    fn all_background(&self) -> Vec<usize> {
        (0..self.background.len()).collect()
    }
}

/// The orchestrator. A cheap handle: clones share one engine.
///
/// See the [module docs](self) for what a run does, and the crate docs for an example.
#[derive(Clone)]
pub struct FeroSync {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for FeroSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys = |features: &[Feature<dyn InitialRunner>]| {
            features.iter().map(|f| f.key.clone()).collect::<Vec<_>>()
        };
        f.debug_struct("FeroSync")
            .field("initial", &keys(&self.inner.initial))
            .field(
                "background",
                &self
                    .inner
                    .background
                    .iter()
                    .map(|f| f.key.clone())
                    .collect::<Vec<_>>(),
            )
            .field("disposed", &self.inner.disposed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl FeroSync {
    /// A builder with the defaults: in-memory metadata, highest version wins, exponential
    /// backoff, two features at once.
    pub fn builder() -> FeroSyncBuilder {
        FeroSyncBuilder::default()
    }

    /// Runs initial sync where required, then one background cycle of every background feature.
    ///
    /// # Errors
    /// [`Error::FeaturesFailed`] when any feature failed, was skipped or cancelled (its report
    /// says which and why; the others completed); [`Error::Disposed`] after [`dispose`](Self::dispose).
    pub async fn run(&self) -> Result<RunReport> {
        self.inner
            .run_all(
                &self.inner.all_initial(),
                &self.inner.all_background(),
                false,
            )
            .await
    }

    /// Like [`run`](Self::run), then keeps syncing in the background: on every
    /// [`trigger`](Self::trigger) and, if configured, every
    /// [`background_interval`](FeroSyncBuilder::background_interval), until
    /// [`dispose`](Self::dispose). Must be called inside a tokio runtime.
    ///
    /// # Errors
    /// As for [`run`](Self::run); the background loop is started even when the first run fails, so
    /// a later trigger can recover.
    pub async fn start_sync(&self) -> Result<RunReport> {
        self.inner.check_alive()?;
        self.ensure_loop();
        self.run().await
    }

    /// Runs one background cycle of every background feature now.
    ///
    /// # Errors
    /// As for [`run`](Self::run).
    pub async fn sync_now(&self) -> Result<RunReport> {
        self.inner
            .run_all(&[], &self.inner.all_background(), false)
            .await
    }

    /// Runs one background cycle of `feature` (and of what it depends on, first) now.
    ///
    /// # Errors
    /// [`Error::Disposed`] after [`dispose`](Self::dispose), [`Error::UnknownFeature`] for a key
    /// with no background feature, otherwise as for [`run`](Self::run).
    pub async fn sync_feature(&self, feature: impl Into<FeatureKey>) -> Result<RunReport> {
        self.inner.check_alive()?;
        let key = feature.into();
        let node = self.background_node(&key)?;
        let nodes: Vec<usize> = self
            .inner
            .background_graph
            .closure(&[node])
            .into_iter()
            .collect();
        self.inner.run_all(&[], &nodes, false).await
    }

    /// Asks for a background cycle of `feature` without waiting for it. Triggers that arrive
    /// while a cycle runs coalesce into one follow-up cycle. Starts the background loop if
    /// [`start_sync`](Self::start_sync) has not (outside a tokio runtime the request waits for
    /// the next `start_sync`).
    ///
    /// # Errors
    /// [`Error::UnknownFeature`] or [`Error::Disposed`].
    pub fn trigger(&self, feature: impl Into<FeatureKey>) -> Result<()> {
        self.inner.check_alive()?;
        let key = feature.into();
        let node = self.background_node(&key)?;
        lock(&self.inner.pending).insert(node);
        self.inner.wake.notify_one();
        self.ensure_loop();
        Ok(())
    }

    /// Forgets `feature`'s checkpoint and initial-sync state and runs its initial sync again from
    /// the beginning (for a feature without an initial handler, a background cycle from the
    /// beginning). Use it to repair drift found by a digest check.
    ///
    /// # Errors
    /// [`Error::Disposed`], [`Error::UnknownFeature`], a repo failure, or as for
    /// [`run`](Self::run).
    pub async fn trigger_initial_sync(&self, feature: impl Into<FeatureKey>) -> Result<RunReport> {
        self.inner.check_alive()?;
        let key = feature.into();
        let initial = self.inner.initial_graph.node(&key);
        let background = self.inner.background_graph.node(&key);
        if initial.is_none() && background.is_none() {
            return Err(Error::UnknownFeature {
                feature: key,
                hint: "",
            });
        }
        {
            // Reset under the run lock so no run is mid-page on this feature.
            let _running = self.inner.run_lock.lock().await;
            // A dispose that came while this call waited for the lock leaves the repo alone.
            self.inner.check_alive()?;
            self.inner
                .repo_call(&key, self.inner.repo.clear_checkpoint(&key))
                .await?;
            self.inner
                .repo_call(
                    &key,
                    self.inner
                        .repo
                        .set_initial_sync_state(&key, InitialSyncState::Pending),
                )
                .await?;
        }
        match initial {
            Some(n) => self.inner.run_all(&[n], &[], true).await,
            None => {
                self.inner
                    .run_all(&[], &background.into_iter().collect::<Vec<_>>(), false)
                    .await
            }
        }
    }

    /// Adds an app's own event to the stream. After [`dispose`](Self::dispose) the stream is
    /// closed and the event goes nowhere.
    pub fn emit_sync_event(&self, event: SyncEvent) {
        self.inner.emit(event);
    }

    /// Subscribes to sync events from now on. Ends after [`dispose`](Self::dispose) (at once if
    /// already disposed). See [`crate::events`] for what a slow subscriber loses.
    pub fn event_stream(&self) -> SyncEventStream {
        let receiver = match lock(&self.inner.events).as_ref() {
            Some(sender) => sender.subscribe(),
            None => {
                let (sender, receiver) = broadcast::channel(1);
                drop(sender);
                receiver
            }
        };
        SyncEventStream::new(receiver)
    }

    /// Alias of [`event_stream`](Self::event_stream).
    pub fn events(&self) -> SyncEventStream {
        self.event_stream()
    }

    /// Every feature's latest status, first the current value, then each change. A slow reader
    /// skips intermediate values but always sees the latest. After [`dispose`](Self::dispose) it
    /// still yields the last statuses, which no longer change.
    pub fn status_stream(&self) -> WatchStream<StatusMap> {
        WatchStream::new(self.inner.status.subscribe())
    }

    /// Every feature's status now (after [`dispose`](Self::dispose): as it was left).
    pub fn status(&self) -> StatusMap {
        self.inner.status.borrow().clone()
    }

    /// One feature's status now; `None` for an unknown key (after [`dispose`](Self::dispose): as
    /// it was left).
    pub fn feature_status(&self, feature: impl Into<FeatureKey>) -> Option<FeatureStatus> {
        self.inner.status.borrow().get(&feature.into()).cloned()
    }

    /// Stops the run in flight at its next safe point: no checkpoint is saved for a page whose
    /// apply did not finish, and a later run resumes from the last saved checkpoint. Runs started
    /// after this call are not affected. After [`dispose`](Self::dispose) there is nothing to
    /// cancel and it does nothing.
    pub fn cancel(&self) {
        let mut token = lock(&self.inner.cancel);
        token.cancel();
        *token = CancellationToken::new();
    }

    /// Cancels the run in flight, waits for it and the background loop to stop, and closes the
    /// event stream. Later calls of every method that returns a `Result` return
    /// [`Error::Disposed`] and change nothing; the others say in their docs what they do then
    /// (streams end or stay still, status reads the last values, events go nowhere). Calling it
    /// twice is harmless.
    pub async fn dispose(&self) {
        self.inner.disposed.store(true, Ordering::Release);
        self.inner.shutdown.cancel();
        self.cancel();
        let task = lock(&self.inner.loop_task).take();
        if let Some(task) = task {
            // The loop ends at the shutdown token; a panic inside it has already been reported.
            let _ = task.await;
        }
        // Taking the run lock waits for a run in flight to reach its safe point.
        drop(self.inner.run_lock.lock().await);
        lock(&self.inner.events).take();
    }

    /// Resolves a parked conflict (see [`ConflictResolutionStrategy::Manual`]). The kept or merged
    /// local edit is pushed in the next cycle.
    ///
    /// # Errors
    /// [`Error::Disposed`] after [`dispose`](Self::dispose), [`Error::UnknownFeature`],
    /// [`Error::NotParked`] when nothing is parked for `id`, [`Error::Decode`] for a merged value
    /// that is not the feature's local item type, or a handler or repo failure.
    pub async fn resolve_conflict(
        &self,
        feature: impl Into<FeatureKey>,
        id: &str,
        resolution: ManualResolution,
    ) -> Result<ConflictOutcome> {
        self.inner.check_alive()?;
        let key = feature.into();
        let node = self.background_node(&key)?;
        let _running = self.inner.run_lock.lock().await;
        self.inner.check_alive()?;
        let parked = self
            .inner
            .repo_call(&key, self.inner.repo.parked_conflicts(&key))
            .await?
            .into_iter()
            .find(|p| p.id == id)
            .ok_or_else(|| Error::NotParked {
                feature: key.clone(),
                id: id.to_owned(),
            })?;
        let feature = &self.inner.background[node];
        let outcome = feature
            .runner
            .resolve_parked(&self.inner, &key, parked, resolution)
            .await?;
        self.inner.refresh_counts(&key).await;
        Ok(outcome)
    }

    /// The feature's parked conflicts, oldest first.
    ///
    /// # Errors
    /// [`Error::Disposed`] after [`dispose`](Self::dispose), or a repo failure.
    pub async fn parked_conflicts(
        &self,
        feature: impl Into<FeatureKey>,
    ) -> Result<Vec<ParkedConflict>> {
        self.inner.check_alive()?;
        let key = feature.into();
        self.inner
            .repo_call(&key, self.inner.repo.parked_conflicts(&key))
            .await
    }

    /// The feature's quarantined changes, oldest first.
    ///
    /// # Errors
    /// [`Error::Disposed`] after [`dispose`](Self::dispose), or a repo failure.
    pub async fn quarantined_changes(
        &self,
        feature: impl Into<FeatureKey>,
    ) -> Result<Vec<QuarantinedChange>> {
        self.inner.check_alive()?;
        let key = feature.into();
        self.inner
            .repo_call(&key, self.inner.repo.quarantined(&key))
            .await
    }

    /// Releases a quarantined change: it is pushed again in the next cycle.
    ///
    /// # Errors
    /// [`Error::Disposed`] after [`dispose`](Self::dispose), [`Error::UnknownFeature`] for a key
    /// with no background feature, [`Error::NotParked`] when nothing is quarantined for `id`, or
    /// a repo failure.
    pub async fn retry_quarantined(&self, feature: impl Into<FeatureKey>, id: &str) -> Result<()> {
        self.inner.check_alive()?;
        let key = feature.into();
        self.background_node(&key)?;
        // As discard_quarantined: not while a run pushes this feature, and not once disposed.
        let _running = self.inner.run_lock.lock().await;
        self.inner.check_alive()?;
        let removed = self
            .inner
            .repo_call(&key, self.inner.repo.remove_quarantined(&key, id))
            .await?;
        self.inner.refresh_counts(&key).await;
        if removed {
            Ok(())
        } else {
            Err(Error::NotParked {
                feature: key,
                id: id.to_owned(),
            })
        }
    }

    /// Drops a quarantined change: the handler discards the local edit.
    ///
    /// # Errors
    /// [`Error::Disposed`], [`Error::UnknownFeature`], [`Error::NotParked`], or a handler or
    /// repo failure.
    pub async fn discard_quarantined(
        &self,
        feature: impl Into<FeatureKey>,
        id: &str,
    ) -> Result<()> {
        self.inner.check_alive()?;
        let key = feature.into();
        let node = self.background_node(&key)?;
        let _running = self.inner.run_lock.lock().await;
        self.inner.check_alive()?;
        let quarantined = self
            .inner
            .repo_call(&key, self.inner.repo.quarantined(&key))
            .await?;
        if !quarantined.iter().any(|q| q.id == id) {
            return Err(Error::NotParked {
                feature: key,
                id: id.to_owned(),
            });
        }
        self.inner.background[node].runner.discard(&key, id).await?;
        self.inner
            .repo_call(&key, self.inner.repo.remove_quarantined(&key, id))
            .await?;
        self.inner.refresh_counts(&key).await;
        Ok(())
    }

    fn background_node(&self, key: &FeatureKey) -> Result<usize> {
        self.inner
            .background_graph
            .node(key)
            .ok_or_else(|| Error::UnknownFeature {
                feature: key.clone(),
                hint: " as a background feature",
            })
    }

    /// Starts the trigger/timer loop once. It holds only a weak reference, so dropping every
    /// handle stops it.
    fn ensure_loop(&self) {
        let mut task = lock(&self.inner.loop_task);
        if task.is_some() || self.inner.disposed.load(Ordering::Acquire) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let wake = self.inner.wake.clone();
        let shutdown = self.inner.shutdown.clone();
        let interval = self.inner.interval;
        *task = Some(runtime.spawn(async move {
            let mut ticker = interval.map(|every| {
                let mut ticker =
                    tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                ticker
            });
            loop {
                let tick = async {
                    match ticker.as_mut() {
                        Some(t) => {
                            t.tick().await;
                        }
                        None => futures::future::pending::<()>().await,
                    }
                };
                let timer_fired = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = wake.notified() => false,
                    _ = tick => true,
                };
                let Some(inner) = weak.upgrade() else { return };
                let nodes: Vec<usize> = if timer_fired {
                    lock(&inner.pending).clear();
                    inner.all_background()
                } else {
                    std::mem::take(&mut *lock(&inner.pending))
                        .into_iter()
                        .collect()
                };
                if nodes.is_empty() {
                    continue;
                }
                let nodes: Vec<usize> =
                    inner.background_graph.closure(&nodes).into_iter().collect();
                // Failures are reported through events and status.
                let _ = inner.run_all(&[], &nodes, false).await;
            }
        }));
    }
}

/// Configures a [`FeroSync`]; validated by [`build`](Self::build).
pub struct FeroSyncBuilder {
    initial: Vec<(FeatureKey, FeatureSyncConfig, Box<dyn InitialRunner>)>,
    background: Vec<(FeatureKey, FeatureSyncConfig, Box<dyn BackgroundRunner>)>,
    repo: Option<Arc<dyn SyncMetadataRepo>>,
    strategy: ConflictResolutionStrategy,
    backoff: Arc<dyn BackoffStrategy>,
    random: Option<Box<dyn RandomSource>>,
    clock: Arc<dyn Clock>,
    max_concurrent: usize,
    max_push_rounds: u32,
    interval: Option<Duration>,
    event_capacity: usize,
}

impl std::fmt::Debug for FeroSyncBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeroSyncBuilder")
            .field(
                "initial",
                &self.initial.iter().map(|(k, _, _)| k).collect::<Vec<_>>(),
            )
            .field(
                "background",
                &self
                    .background
                    .iter()
                    .map(|(k, _, _)| k)
                    .collect::<Vec<_>>(),
            )
            .field("strategy", &self.strategy)
            .field("max_concurrent", &self.max_concurrent)
            .finish_non_exhaustive()
    }
}

impl Default for FeroSyncBuilder {
    fn default() -> Self {
        FeroSyncBuilder {
            initial: Vec::new(),
            background: Vec::new(),
            repo: None,
            strategy: ConflictResolutionStrategy::default(),
            backoff: Arc::new(ExponentialBackoff::default()),
            random: None,
            clock: Arc::new(SystemClock),
            max_concurrent: 2,
            max_push_rounds: DEFAULT_MAX_PUSH_ROUNDS,
            interval: None,
            event_capacity: DEFAULT_EVENT_CAPACITY,
        }
    }
}

impl FeroSyncBuilder {
    /// Registers an initial-sync feature.
    pub fn initial_sync<H: InitialSyncHandler>(
        mut self,
        feature: impl Into<FeatureKey>,
        handler: H,
        config: FeatureSyncConfig,
    ) -> Self {
        self.initial
            .push((feature.into(), config, Box::new(TypedInitial(handler))));
        self
    }

    /// Registers a background-sync feature. A key registered with both kinds is one collection:
    /// one checkpoint, and background sync continues where initial sync ended.
    pub fn background_sync<H: BackgroundSyncHandler>(
        mut self,
        feature: impl Into<FeatureKey>,
        handler: H,
        config: FeatureSyncConfig,
    ) -> Self {
        self.background
            .push((feature.into(), config, Box::new(TypedBackground(handler))));
        self
    }

    /// Where checkpoints and sync state persist (default: [`InMemorySyncMetadataRepo`]).
    pub fn metadata_repo(self, repo: impl SyncMetadataRepo) -> Self {
        self.metadata_repo_arc(Arc::new(repo))
    }

    /// [`metadata_repo`](Self::metadata_repo) for a shared repo.
    pub fn metadata_repo_arc(mut self, repo: Arc<dyn SyncMetadataRepo>) -> Self {
        self.repo = Some(repo);
        self
    }

    /// The conflict strategy of features that do not set their own.
    pub fn conflict_strategy(mut self, strategy: ConflictResolutionStrategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// The retry backoff of features that do not set their own
    /// (default: [`ExponentialBackoff::default`]).
    pub fn backoff(mut self, backoff: impl BackoffStrategy) -> Self {
        self.backoff = Arc::new(backoff);
        self
    }

    /// Seeds the jitter's random source, so retries replay exactly (default: from entropy).
    pub fn seed(mut self, seed: u64) -> Self {
        self.random = Some(Box::new(SeededRandom::new(seed)));
        self
    }

    /// A random source of your own for jitter.
    pub fn random_source(mut self, random: impl RandomSource + 'static) -> Self {
        self.random = Some(Box::new(random));
        self
    }

    /// The wall clock recorded as last success and parked-at time (default: the system's).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Features running at once (default 2).
    pub fn max_concurrent(mut self, max_concurrent: usize) -> Self {
        self.max_concurrent = max_concurrent;
        self
    }

    /// Push rounds for a conflicting item before it is parked (default 3).
    pub fn max_push_rounds(mut self, rounds: u32) -> Self {
        self.max_push_rounds = rounds.max(1);
        self
    }

    /// After [`FeroSync::start_sync`], run a background cycle of every feature this often.
    pub fn background_interval(mut self, every: Duration) -> Self {
        self.interval = Some(every);
        self
    }

    /// Events buffered per subscriber before it lags (default 1024).
    pub fn event_capacity(mut self, capacity: usize) -> Self {
        self.event_capacity = capacity.max(1);
        self
    }

    /// Validates the configuration and builds the engine.
    ///
    /// # Errors
    /// [`BuildError::DuplicateFeature`], [`BuildError::UnknownDependency`],
    /// [`BuildError::DependencyCycle`] (naming the cycle), [`BuildError::ZeroBatchSize`],
    /// [`BuildError::ZeroConcurrency`].
    pub fn build(self) -> std::result::Result<FeroSync, BuildError> {
        if self.max_concurrent == 0 {
            return Err(BuildError::ZeroConcurrency);
        }
        let backoff = self.backoff;
        let strategy = self.strategy;
        let settings = |key: &FeatureKey, config: &FeatureSyncConfig| {
            if config.batch_size == 0 {
                return Err(BuildError::ZeroBatchSize {
                    feature: key.clone(),
                });
            }
            Ok(FeatureSettings {
                batch_size: config.batch_size,
                backoff: config.backoff.clone().unwrap_or_else(|| backoff.clone()),
                strategy: config.strategy.unwrap_or(strategy),
            })
        };
        fn graph<R: ?Sized>(
            entries: &[(FeatureKey, FeatureSyncConfig, Box<R>)],
            kind: &'static str,
        ) -> std::result::Result<FeatureGraph, BuildError> {
            let mut seen = HashSet::new();
            for (key, _, _) in entries {
                if !seen.insert(key.clone()) {
                    return Err(BuildError::DuplicateFeature {
                        feature: key.clone(),
                        kind,
                    });
                }
            }
            let nodes: Vec<_> = entries
                .iter()
                .map(|(key, config, _)| (key.clone(), config.priority, config.dependencies.clone()))
                .collect();
            FeatureGraph::new(&nodes, kind)
        }
        let initial_graph = graph(&self.initial, "initial")?;
        let background_graph = graph(&self.background, "background")?;
        let mut initial = Vec::with_capacity(self.initial.len());
        let mut keys = Vec::new();
        for (key, config, runner) in self.initial {
            initial.push(Feature {
                settings: settings(&key, &config)?,
                key: key.clone(),
                runner,
            });
            keys.push(key);
        }
        let mut background = Vec::with_capacity(self.background.len());
        for (key, config, runner) in self.background {
            background.push(Feature {
                settings: settings(&key, &config)?,
                key: key.clone(),
                runner,
            });
            keys.push(key);
        }
        let status: StatusMap = keys
            .into_iter()
            .map(|key| {
                (
                    key.clone(),
                    FeatureStatus {
                        feature: key,
                        ..FeatureStatus::default()
                    },
                )
            })
            .collect();
        let (events, _) = broadcast::channel(self.event_capacity);
        let inner = Inner {
            initial,
            initial_graph,
            background,
            background_graph,
            repo: self
                .repo
                .unwrap_or_else(|| Arc::new(InMemorySyncMetadataRepo::new())),
            random: Mutex::new(
                self.random
                    .unwrap_or_else(|| Box::new(SeededRandom::from_entropy())),
            ),
            clock: self.clock,
            max_concurrent: self.max_concurrent,
            max_push_rounds: self.max_push_rounds,
            interval: self.interval,
            events: Mutex::new(Some(events)),
            status: watch::Sender::new(status),
            cancel: Mutex::new(CancellationToken::new()),
            run_lock: tokio::sync::Mutex::new(()),
            disposed: AtomicBool::new(false),
            shutdown: CancellationToken::new(),
            pending: Mutex::new(BTreeSet::new()),
            wake: Arc::new(Notify::new()),
            loop_task: Mutex::new(None),
        };
        Ok(FeroSync {
            inner: Arc::new(inner),
        })
    }
}
