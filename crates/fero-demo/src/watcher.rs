//! [`Watcher`]: one task per device that reads fero's event stream and turns it into what the
//! story shows and counts: progress displays, per-cycle lines, conflicts, retries, and the
//! cancel of step 3.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use fero::{
    ConflictEvent, FeatureKey, FeroSync, SyncCheckpoint, SyncDirection, SyncEvent, SyncKind,
};
use futures::StreamExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::DemoError;
use crate::output::{FeatureProgress, Output};
use crate::remote::PullGate;

/// The name of the demo's own marker events (see [`Watcher::settle`]).
const MARK_EVENT: &str = "fero-demo.mark";

/// How long [`Watcher::settle`] waits for the watcher to catch up. It reads events as fast as
/// they come, so only a stopped watcher takes this long.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Cancels the device's sync when a feature's initial sync has applied `at_items` items (the
/// total across runs), once.
#[derive(Debug)]
pub struct CancelRule {
    /// The feature.
    pub feature: String,
    /// Items applied that trigger the cancel.
    pub at_items: u64,
    /// The gate that keeps the engine within a page of the watcher (see [`PullGate`]).
    pub gate: Arc<PullGate>,
}

/// What a device's events said, counted.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    /// Items applied by initial syncs, every run (a resumed run adds only what it fetched).
    pub initial_items: u64,
    /// Server changes applied by background cycles.
    pub pulled: u64,
    /// Local changes the server accepted in background cycles.
    pub pushed: u64,
    /// `Retrying` events.
    pub retries: u64,
    /// Events the watcher missed because it lagged.
    pub lagged: u64,
    /// Every `ConflictResolved` event, in order.
    pub conflicts: Vec<ConflictEvent>,
    /// Initial items of the cancel rule's feature when the watcher cancelled.
    pub cancelled_at: Option<u64>,
    /// Items each feature's initial sync had applied (every run) when it was cancelled.
    pub cancelled: BTreeMap<String, u64>,
    /// The `resumed_from` of each feature's latest `InitialSyncStarted`.
    pub started_from: BTreeMap<String, Option<SyncCheckpoint>>,
    /// Messages of failed runs (`InitialSyncFailed`, `BackgroundSyncFailed`).
    pub failures: Vec<String>,
}

#[derive(Debug, Default)]
struct State {
    tally: Tally,
    /// Progress displays by feature, installed by the story for an initial sync.
    displays: BTreeMap<String, FeatureProgress>,
    /// Each feature's initial items before its current run, and in its current run.
    before_run: BTreeMap<String, u64>,
    in_run: BTreeMap<String, u64>,
    /// `(pages, items)` per feature and direction in the current background cycle.
    cycle: BTreeMap<(String, &'static str), (u64, u64)>,
}

/// A device's event watcher (see the module docs).
#[derive(Debug)]
pub struct Watcher {
    device: &'static str,
    sync: FeroSync,
    state: Arc<Mutex<State>>,
    show_cycles: Arc<AtomicBool>,
    marks: watch::Receiver<u64>,
    next_mark: AtomicU64,
    task: JoinHandle<()>,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // Every update is a few assignments made under the lock; a panic elsewhere cannot leave the
    // counters half-updated.
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Watcher {
    /// Subscribes to `sync`'s events and starts the task; `cancel` arms step 3's cancel.
    pub fn spawn(
        device: &'static str,
        sync: &FeroSync,
        output: &Output,
        cancel: Option<CancelRule>,
    ) -> Watcher {
        let state = Arc::new(Mutex::new(State::default()));
        let show_cycles = Arc::new(AtomicBool::new(false));
        let (marks_tx, marks) = watch::channel(0);
        let task = Task {
            device,
            sync: sync.clone(),
            output: output.clone(),
            state: Arc::clone(&state),
            show_cycles: Arc::clone(&show_cycles),
            cancel,
            marks: marks_tx,
        };
        let events = sync.event_stream();
        let task = tokio::spawn(task.run(events));
        Watcher {
            device,
            sync: sync.clone(),
            state,
            show_cycles,
            marks,
            next_mark: AtomicU64::new(0),
            task,
        }
    }

    /// Drives `progress` from `feature`'s initial-sync events from now on.
    pub fn show_progress(&self, feature: &str, progress: FeatureProgress) {
        lock(&self.state)
            .displays
            .insert(feature.to_owned(), progress);
    }

    /// Stops driving the progress displays and returns them by feature (to freeze them on
    /// screen).
    pub fn take_progress(&self) -> BTreeMap<String, FeatureProgress> {
        std::mem::take(&mut lock(&self.state).displays)
    }

    /// Prints a line per completed background cycle (pulled and pushed, pages and items) from
    /// now on, or stops.
    pub fn show_cycles(&self, show: bool) {
        self.show_cycles.store(show, Ordering::Relaxed);
    }

    /// The counts so far. Call [`settle`](Self::settle) first to include every event of a run
    /// that just returned.
    pub fn tally(&self) -> Tally {
        lock(&self.state).tally.clone()
    }

    /// Waits until the watcher has handled every event emitted before this call: it emits a
    /// marker event and waits for the watcher to reach it (the stream keeps the engine's order).
    ///
    /// # Errors
    /// [`DemoError::WatcherStopped`] when the watcher ended, [`DemoError::Timeout`] when it did
    /// not reach the marker within 30 s.
    pub async fn settle(&self) -> Result<(), DemoError> {
        let mark = self.next_mark.fetch_add(1, Ordering::Relaxed) + 1;
        self.sync.emit_sync_event(SyncEvent::Custom {
            feature: FeatureKey::new("fero-demo"),
            name: MARK_EVENT.to_owned(),
            detail: serde_json::json!(mark),
        });
        let mut marks = self.marks.clone();
        match tokio::time::timeout(SETTLE_TIMEOUT, marks.wait_for(|seen| *seen >= mark)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_closed)) => Err(DemoError::WatcherStopped {
                device: self.device,
            }),
            Err(_elapsed) => Err(DemoError::Timeout {
                device: self.device,
                what: "the event watcher catching up",
                waited: SETTLE_TIMEOUT,
            }),
        }
    }

    /// Waits for the task to end (after the engine was disposed) and returns the final counts.
    pub async fn finish(self) -> Tally {
        let Watcher { task, state, .. } = self;
        if let Err(join) = task.await {
            if join.is_panic() {
                std::panic::resume_unwind(join.into_panic());
            }
        }
        lock(&state).tally.clone()
    }
}

struct Task {
    device: &'static str,
    sync: FeroSync,
    output: Output,
    state: Arc<Mutex<State>>,
    show_cycles: Arc<AtomicBool>,
    cancel: Option<CancelRule>,
    marks: watch::Sender<u64>,
}

impl Task {
    async fn run(mut self, mut events: fero::SyncEventStream) {
        while let Some(event) = events.next().await {
            match event {
                Ok(event) => self.handle(event),
                Err(lagged) => {
                    lock(&self.state).tally.lagged += lagged.missed;
                    // The missed progress events' permits are lost with them: let the engine go
                    // on unheld (the cancel still fires at the next progress event).
                    if let Some(rule) = &self.cancel {
                        rule.gate.open();
                    }
                }
            }
        }
    }

    fn handle(&mut self, event: SyncEvent) {
        let shared = Arc::clone(&self.state);
        let mut state = lock(&shared);
        match event {
            SyncEvent::InitialSyncStarted {
                feature,
                resumed_from,
            } => {
                let key = feature.to_string();
                let before = state.before_run.get(&key).copied().unwrap_or(0)
                    + state.in_run.get(&key).copied().unwrap_or(0);
                state.before_run.insert(key.clone(), before);
                state.in_run.insert(key.clone(), 0);
                if let Some(display) = state.displays.get(&key) {
                    display.start();
                    if let Some(checkpoint) = &resumed_from {
                        display.note(&format!(
                            "resumed at sync_id {} ({before} items kept)",
                            checkpoint.last_sync_id
                        ));
                    }
                }
                state.tally.started_from.insert(key, resumed_from);
            }
            SyncEvent::InitialSyncProgress { feature, items, .. } => {
                let key = feature.to_string();
                let previous = state.in_run.insert(key.clone(), items).unwrap_or(0);
                state.tally.initial_items += items.saturating_sub(previous);
                let total = state.before_run.get(&key).copied().unwrap_or(0) + items;
                if let Some(display) = state.displays.get(&key) {
                    display.set_position(total);
                }
                self.check_cancel(&mut state, &key, total);
            }
            SyncEvent::InitialSyncCompleted {
                feature, duration, ..
            } => {
                if let Some(display) = state.displays.get(feature.as_str()) {
                    display.finish(&format!("done ({:.1} s)", duration.as_secs_f64()));
                }
            }
            SyncEvent::Cancelled {
                feature,
                kind: SyncKind::Initial,
            } => {
                let key = feature.to_string();
                let total = state.before_run.get(&key).copied().unwrap_or(0)
                    + state.in_run.get(&key).copied().unwrap_or(0);
                if let Some(display) = state.displays.get(&key) {
                    display.note(&format!("cancelled at {total} items"));
                }
                state.tally.cancelled.insert(key, total);
            }
            SyncEvent::InitialSyncFailed { feature, error }
            | SyncEvent::BackgroundSyncFailed { feature, error } => {
                let message = format!("{}: {error}", self.device);
                if let Some(display) = state.displays.get(feature.as_str()) {
                    display.note("failed");
                }
                self.output.line(&format!("  ! {message}"));
                state.tally.failures.push(message);
            }
            SyncEvent::BackgroundSyncStarted { feature } => {
                state.cycle.retain(|(key, _), _| key != feature.as_str());
            }
            SyncEvent::BackgroundSyncProgress {
                feature,
                direction,
                pages,
                items,
            } => {
                let direction = match direction {
                    SyncDirection::Pull => "pull",
                    SyncDirection::Push => "push",
                };
                state
                    .cycle
                    .insert((feature.to_string(), direction), (pages, items));
            }
            SyncEvent::BackgroundSyncCompleted {
                feature,
                pulled,
                pushed,
                conflicts,
                duration,
            } => {
                state.tally.pulled += pulled;
                state.tally.pushed += pushed;
                if self.show_cycles.load(Ordering::Relaxed) {
                    let key = feature.to_string();
                    let pages = |direction| {
                        state
                            .cycle
                            .get(&(key.clone(), direction))
                            .map_or(0, |(pages, _)| *pages)
                    };
                    self.output.line(&format!(
                        "  {} {:<17} ↓ pulled {pulled:>3} ({} page(s))  ↑ pushed {pushed:>3} \
                         ({} page(s))  conflicts {conflicts}  {:.0} ms",
                        self.device,
                        key,
                        pages("pull"),
                        pages("push"),
                        duration.as_secs_f64() * 1_000.0
                    ));
                }
            }
            SyncEvent::Retrying {
                feature,
                operation,
                attempt,
                delay,
                error,
            } => {
                state.tally.retries += 1;
                self.output.line(&format!(
                    "  {} {feature}: {operation} failed ({error}); attempt {} in {delay:?}",
                    self.device,
                    attempt + 1
                ));
            }
            SyncEvent::ConflictResolved(conflict) => state.tally.conflicts.push(conflict),
            SyncEvent::Custom { name, detail, .. } if name == MARK_EVENT => {
                if let Some(mark) = detail.as_u64() {
                    self.marks.send_replace(mark);
                }
            }
            _ => {}
        }
    }

    fn check_cancel(&mut self, state: &mut State, feature: &str, items: u64) {
        let Some(rule) = &self.cancel else { return };
        if rule.feature != feature || state.tally.cancelled_at.is_some() {
            return;
        }
        if items >= rule.at_items {
            state.tally.cancelled_at = Some(items);
            // Cancel first, then open the gate: the pull the gate was holding then meets a
            // cancelled run.
            self.sync.cancel();
            rule.gate.open();
            self.cancel = None;
        } else {
            rule.gate.page_seen();
        }
    }
}
