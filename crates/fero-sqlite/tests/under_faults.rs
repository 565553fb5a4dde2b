//! The real embedded store under the simulation kit's faults.
//!
//! fero-sim proves the engine with an in-memory device store; apps keep their data in
//! fero-sqlite. Here, per seed, three devices, each a [`SqliteStore`] in its own file with a
//! [`CollectionSync`] over a [`SimRemote`] (lost requests, responses lost after the server
//! applied, duplicate deliveries, 503s, slow calls) to one [`SimServer`], registered as the
//! initial and background feature of a [`FeroSync`] with a small batch size, run about a hundred
//! seeded steps:
//! - local puts and deletes on a small id space (so devices collide),
//! - syncs (`run` or `sync_now`),
//! - *windows*: a sync stopped at its n-th remote call, before the call or after the server
//!   answered, while the scheduler edits (on the same device too, preferring a document whose
//!   push may be in flight), syncs another device, races it (another device writes an id this
//!   one is pushing and syncs first, then this one edits it again), cancels the run, or crashes
//!   the device there,
//! - a sync dropped once a little (paused) time has passed: a crash wherever it stood (a
//!   deadline rather than a poll count, which would depend on whether a blocking task ends
//!   before its handle is first polled, and so would not replay),
//! - crashes of an idle device, faults switched on and off, fault-free rounds.
//!
//! A crash drops the device's `FeroSync`, handler and `SqliteStore` and opens the same file
//! again. Every remote call may fail or be repeated, so every run may fail; none may corrupt.
//!
//! # The invariants
//! After every step: a run fails only transiently; a checkpoint never goes backwards (across
//! reopens too) and never covers a server row the file lacks; no event subscriber lagged. At
//! quiescence (faults off, every device synced until a full round changes nothing): every device
//! holds exactly the server's rows (ids, versions, data, tombstones, `sync_id`s), nothing
//! pending, digests equal (`CollectionSync::verify`), checkpoint at the feed's end; and every
//! local edit the store acknowledged reached the server with its content, was superseded by a
//! later edit of the same id on that device, or was dropped with a record in its device's
//! conflict log ([`SqliteStore::conflict_log`], written in the transaction that dropped it, read
//! and acknowledged at every reopen and at quiescence). The `ConflictResolved` event is collected
//! too (across crashes), but it is not enough: a crash between the drop's commit and the event
//! loses the event, never the record.
//!
//! # Time
//! Each seed runs on its own current-thread runtime with tokio's paused clock, so the fault
//! layer's delays, timeouts and the backoff cost no real time. Every clock that stamps anything
//! (the engines', the stores' conflict logs, the simulated server's `updated_at`) is one
//! [`SimClock`] made on that runtime, so a seed's trace and rows are the same on every replay. fero-sqlite runs SQLite on
//! `spawn_blocking`; tokio does not auto-advance a paused clock while a blocking task runs, so
//! a timer never fires ahead of SQLite work, and a crash waits for the transaction a dropped
//! run left on the blocking pool with a timer (see [`World::crash`]), and a stop settles the same
//! way before it hands over (see [`Interruptible::call`]): a run stopped at a page fetched ahead
//! has then finished the apply of the page before, never left it racing the window's edits. No test sleeps for real.
//!
//! # Seeds
//! `FERO_FAULT_SEEDS=N` runs seeds `0..N` (24 by default); `FERO_FAULT_SEED=S` runs seed `S`
//! alone. A failure names its seed and step and prints the step trace.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use fero::{
    ConflictEvent, ConflictOutcome, ConflictResolutionStrategy, ExponentialBackoff, FeatureKey,
    FeatureSyncConfig, FeroSync, FeroSyncBuilder, FixedBackoff, RandomSource, RunReport,
    SeededRandom, SyncEvent, SyncEventStream, SyncMetadataRepo,
};
use fero_protocol::{
    DigestResponse, Document, PullRequest, PullResponse, PushRequest, PushResponse, Remote,
    RemoteError,
};
use fero_sim::{FaultCounts, FaultProfile, Sim, SimClock, SimRemote, SimServer};
use fero_sqlite::{
    CollectionSync, ConflictLogOutcome, ConflictRecord, LocalDocument, SqliteStore, StoreOptions,
};
use futures::{FutureExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::oneshot;

const COLLECTION: &str = "docs";
const DEVICES: usize = 3;
/// Distinct ids; the first `HOT_IDS` take a third of all edits, so devices collide often.
const IDS: u64 = 10;
const HOT_IDS: u64 = 3;
/// Steps before quiescence.
const STEPS: u64 = 100;
/// Seeds of a plain `cargo test`: about 0.3 s each in a debug build.
const DEFAULT_SEEDS: u64 = 24;
/// Rounds of "every device syncs" allowed at quiescence: two suffice without conflicts (push,
/// then everyone pulls); a conflict decided for the local side needs two more.
const MAX_QUIET_ROUNDS: usize = 10;
/// Far above what one step emits, so a lag can only mean a bug.
const EVENT_CAPACITY: usize = 1 << 12;
/// Longest trace tail a failure prints.
const TRACE_TAIL: usize = 150;

type Outcome<T = ()> = Result<T, String>;

/// Turns any error into the failure text, saying what was being done.
trait OrFail<T> {
    fn or_fail(self, what: impl FnOnce() -> String) -> Outcome<T>;
}

impl<T, E: fmt::Display> OrFail<T> for Result<T, E> {
    fn or_fail(self, what: impl FnOnce() -> String) -> Outcome<T> {
        self.map_err(|e| format!("{}: {e}", what()))
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Only this file's code holds these locks, in single steps; a poisoned one is still whole.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn below(random: &mut SeededRandom, n: u64) -> u64 {
    random.next_u64() % n.max(1)
}

fn chance(random: &mut SeededRandom, percent: u64) -> bool {
    below(random, 100) < percent
}

fn doc_id(n: u64) -> String {
    format!("doc-{n:02}")
}

fn id_number(id: &str) -> usize {
    id.trim_start_matches("doc-").parse().unwrap_or(0)
}

/// Where a stopped sync hands control to the scheduler.
struct Hook {
    /// Stop at the `remaining`-th call from now (only pushes counted with `pushes_only`).
    remaining: u64,
    pushes_only: bool,
    /// Stop after the server answered (the answer is held back) rather than before the call.
    after_answer: bool,
    /// Receives the sender that lets the call go on.
    stopped: oneshot::Sender<oneshot::Sender<()>>,
}

/// A device's remote: the simulation's fault layer, and a hook that stops the device's sync at
/// a chosen call until the scheduler lets it go on (or drops it: a crash there).
#[derive(Clone)]
struct Interruptible {
    inner: SimRemote,
    calls: Arc<AtomicU64>,
    hook: Arc<Mutex<Option<Hook>>>,
}

impl Interruptible {
    fn new(inner: SimRemote) -> Self {
        Interruptible {
            inner,
            calls: Arc::default(),
            hook: Arc::default(),
        }
    }

    fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    async fn call<T>(
        &self,
        push: bool,
        call: impl Future<Output = Result<T, RemoteError>> + Send,
    ) -> Result<T, RemoteError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let hook = {
            let mut hook = lock(&self.hook);
            match hook.as_mut() {
                Some(h) if push || !h.pushes_only => {
                    h.remaining -= 1;
                    if h.remaining == 0 { hook.take() } else { None }
                }
                _ => None,
            }
        };
        let Some(hook) = hook else {
            return call.await;
        };
        // Settle before stopping: the call may be a page fetched ahead, joined with the apply of
        // the page before, whose SQLite work runs on the blocking pool. How far that apply got
        // by the time this call was first polled depends on whether each blocking task ended
        // before its handle was first polled (up to the OS), so stopping at once would freeze
        // the run in a state a replay may not reach. The paused clock does not advance while a
        // blocking task runs, so this timer fires only once the apply went as far as it can
        // without this call: the same point on every replay (simulated time, not real time).
        tokio::time::sleep(Duration::from_millis(1)).await;
        if hook.after_answer {
            let answer = call.await;
            stop(hook.stopped).await;
            answer
        } else {
            stop(hook.stopped).await;
            call.await
        }
    }
}

/// Hands the scheduler a way to resume, and waits for it.
async fn stop(stopped: oneshot::Sender<oneshot::Sender<()>>) {
    let (go, wait) = oneshot::channel();
    if stopped.send(go).is_ok() {
        // An error means the scheduler dropped the sender: the run is being dropped too.
        let _ = wait.await;
    }
}

#[fero::async_trait]
impl Remote for Interruptible {
    async fn pull(
        &self,
        collection: &str,
        request: &PullRequest,
    ) -> Result<PullResponse, RemoteError> {
        self.call(false, self.inner.pull(collection, request)).await
    }

    async fn push(
        &self,
        collection: &str,
        request: &PushRequest,
    ) -> Result<PushResponse, RemoteError> {
        self.call(true, self.inner.push(collection, request)).await
    }

    async fn digest(&self, collection: &str) -> Result<DigestResponse, RemoteError> {
        self.call(false, self.inner.digest(collection)).await
    }
}

#[derive(Clone, Debug)]
enum Backoff {
    Fixed(FixedBackoff),
    Exponential(ExponentialBackoff),
}

impl Backoff {
    fn draw(random: &mut SeededRandom) -> Backoff {
        let attempts = 2 + below(random, 3) as u32;
        if chance(random, 50) {
            Backoff::Fixed(FixedBackoff::new(Duration::from_millis(20), attempts))
        } else {
            let exponential = ExponentialBackoff::new(
                Duration::from_millis(10),
                2.0,
                Duration::from_millis(500),
                attempts,
            )
            .unwrap_or_else(|e| unreachable!("a cap above the base is valid: {e}"));
            Backoff::Exponential(exponential)
        }
    }

    fn apply(&self, builder: FeroSyncBuilder) -> FeroSyncBuilder {
        match self {
            Backoff::Fixed(backoff) => builder.backoff(backoff.clone()),
            Backoff::Exponential(backoff) => builder.backoff(backoff.clone()),
        }
    }
}

/// What a stopped sync's window does while the sync waits.
#[derive(Clone, Debug)]
enum Action {
    Edit {
        device: usize,
        id: String,
        delete: bool,
    },
    Sync {
        device: usize,
    },
    /// Stop at a push; another device edits one of its pending ids and syncs; this device edits
    /// that id again.
    Race {
        device: usize,
        id: String,
    },
    Cancel,
    Crash,
}

#[derive(Clone, Debug)]
enum Op {
    Edit {
        device: usize,
        id: String,
        delete: bool,
    },
    Sync {
        device: usize,
        background_only: bool,
    },
    Window {
        device: usize,
        /// Calls from now until the one to stop at.
        calls: u64,
        after_answer: bool,
        action: Action,
    },
    /// A run dropped once `after` of (paused) time has passed: a crash wherever it stands.
    DropAfter {
        device: usize,
        after: Duration,
    },
    Crash {
        device: usize,
    },
    Faults {
        on: bool,
    },
    QuietRound,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Edit { device, id, delete } => {
                let what = if *delete { "delete" } else { "put" };
                write!(f, "{what} d{device} {id}")
            }
            Op::Sync {
                device,
                background_only,
            } => {
                let how = if *background_only { "sync_now" } else { "run" };
                write!(f, "{how} d{device}")
            }
            Op::Window {
                device,
                calls,
                after_answer,
                action,
            } => {
                let at = if *after_answer {
                    "after the answer of"
                } else {
                    "before"
                };
                write!(f, "run d{device}, stop {at} call +{calls}, then {action:?}")
            }
            Op::DropAfter { device, after } => {
                // Simulated (paused) time, the same on every replay.
                write!(
                    f,
                    "run d{device}, dropped after {after:?} of simulated time"
                )
            }
            Op::Crash { device } => write!(f, "crash d{device} while idle"),
            Op::Faults { on } => write!(f, "faults {}", if *on { "on" } else { "off" }),
            Op::QuietRound => f.write_str("a fault-free round: every device runs"),
        }
    }
}

/// A local edit the store acknowledged (`put` or `delete` returned).
#[derive(Clone, Debug)]
struct Edit {
    device: usize,
    id: String,
    /// The outbox sequence number the store gave it.
    seq: u64,
    /// `None` for a deletion.
    data: Option<Value>,
    step: u64,
}

/// One running incarnation of a device.
struct Live {
    store: SqliteStore,
    handler: CollectionSync<Interruptible>,
    sync: FeroSync,
    events: SyncEventStream,
}

struct Device {
    /// The store's device id: the `device` of every mutation id it pushes.
    name: String,
    path: PathBuf,
    remote: Interruptible,
    live: Option<Live>,
    /// The highest checkpoint seen, across incarnations.
    highest_checkpoint: u64,
}

/// Totals over a seed, for the summary line.
#[derive(Copy, Clone, Debug, Default)]
struct Stats {
    edits: u64,
    runs_ok: u64,
    runs_failed: u64,
    crashes: u64,
    windows_stopped: u64,
    conflicts: u64,
    dropped_by_conflict: u64,
    /// Dropped edits found in the conflict log without an event: a crash came between the drop's
    /// commit and the event.
    dropped_without_event: u64,
    quiet_rounds: u64,
    calls: u64,
    lost_requests: u64,
    lost_responses: u64,
    duplicates: u64,
    unavailable: u64,
}

impl std::ops::AddAssign for Stats {
    fn add_assign(&mut self, o: Stats) {
        self.edits += o.edits;
        self.runs_ok += o.runs_ok;
        self.runs_failed += o.runs_failed;
        self.crashes += o.crashes;
        self.windows_stopped += o.windows_stopped;
        self.conflicts += o.conflicts;
        self.dropped_by_conflict += o.dropped_by_conflict;
        self.dropped_without_event += o.dropped_without_event;
        self.quiet_rounds += o.quiet_rounds;
        self.calls += o.calls;
        self.lost_requests += o.lost_requests;
        self.lost_responses += o.lost_responses;
        self.duplicates += o.duplicates;
        self.unavailable += o.unavailable;
    }
}

/// What a seed did: the trace and the server's final rows, for the replay check.
#[derive(Debug)]
struct SeedRun {
    trace: Vec<String>,
    rows: Vec<(String, u64, u64, u64, bool, Value)>,
    stats: Stats,
}

/// A seed's failure: where, what, and the trace.
#[derive(Debug)]
struct Failure {
    seed: u64,
    step: u64,
    detail: String,
    trace: Vec<String>,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "seed {} failed at step {}: {}\nreplay: FERO_FAULT_SEED={} cargo test -p fero-sqlite \
             --test under_faults -- --nocapture\ntrace (last {} lines):",
            self.seed,
            self.step,
            self.detail,
            self.seed,
            TRACE_TAIL.min(self.trace.len())
        )?;
        let start = self.trace.len().saturating_sub(TRACE_TAIL);
        for line in &self.trace[start..] {
            writeln!(f, "  {line}")?;
        }
        Ok(())
    }
}

struct World<'a> {
    random: SeededRandom,
    strategy: ConflictResolutionStrategy,
    batch_size: usize,
    backoff: Backoff,
    profile: FaultProfile,
    clock: SimClock,
    sim: &'a mut Sim,
    server: SimServer,
    devices: Vec<Device>,
    edits: Vec<Edit>,
    conflicts: Vec<(usize, ConflictEvent)>,
    /// Conflict log records read from each device's file (and acknowledged there), as an app
    /// reads them at start-up; the rest are read at quiescence.
    logged: Vec<(usize, ConflictRecord)>,
    next_tag: u64,
    faults_on: bool,
    /// The fault layer's counts when the trace last reported them.
    faults_seen: FaultCounts,
    step: u64,
    trace: Vec<String>,
    stats: Stats,
}

impl<'a> World<'a> {
    async fn new(seed: u64, sim: &'a mut Sim, dir: &Path) -> Outcome<World<'a>> {
        let mut random = SeededRandom::new(seed ^ 0x5eed_fa17);
        let strategies = [
            ConflictResolutionStrategy::HighestVersionWins,
            ConflictResolutionStrategy::ServerWins,
            ConflictResolutionStrategy::ClientWins,
        ];
        let strategy = strategies[below(&mut random, 3) as usize];
        let batch_size = 2 + below(&mut random, 6) as usize;
        let backoff = Backoff::draw(&mut random);
        let mut profile = FaultProfile::none();
        let mut fault = || 0.03 + f64::from(below(&mut random, 13) as u32) / 100.0;
        profile.lost_request = fault();
        profile.lost_response = fault();
        profile.duplicate = fault();
        profile.unavailable = fault();
        profile.slow = fault() / 3.0;
        // The simulation's server was built in the simulation's own runtime, whose clock started
        // at another (real) instant: stamped with it, every `updated_at` would carry the real
        // time between the two runtimes' starts, and no seed would replay exactly.
        let clock = SimClock::default();
        let server = sim.server().clone();
        server.set_clock(clock);
        let mut devices = Vec::with_capacity(DEVICES);
        for d in 0..DEVICES {
            let remote = sim
                .remote_for(d)
                .or_fail(|| format!("the simulation's remote of device {d}"))?;
            devices.push(Device {
                name: format!("device-{d}"),
                path: dir.join(format!("device-{d}.db")),
                remote: Interruptible::new(remote),
                live: None,
                highest_checkpoint: 0,
            });
        }
        let mut world = World {
            random,
            strategy,
            batch_size,
            backoff,
            profile,
            clock,
            sim,
            server,
            devices,
            edits: Vec::new(),
            conflicts: Vec::new(),
            logged: Vec::new(),
            next_tag: 0,
            faults_on: false,
            faults_seen: FaultCounts::default(),
            step: 0,
            trace: Vec::new(),
            stats: Stats::default(),
        };
        world.note(format!(
            "seed {seed}: {DEVICES} devices, {IDS} ids, strategy {strategy}, batch size \
             {batch_size}, backoff {:?}, faults {:?}",
            world.backoff, world.profile
        ));
        world.set_faults(true);
        for d in 0..DEVICES {
            world.open(d).await?;
        }
        Ok(world)
    }

    fn note(&mut self, line: String) {
        self.trace.push(line);
    }

    fn live(&self, d: usize) -> Outcome<&Live> {
        self.devices[d]
            .live
            .as_ref()
            .ok_or_else(|| format!("device {d} is not running"))
    }

    /// Opens the device's file (again) and builds its engine; the checkpoint must be where the
    /// last incarnation left it or later.
    async fn open(&mut self, d: usize) -> Outcome {
        let device = &self.devices[d];
        let options = StoreOptions::new()
            .device_id(device.name.clone())
            .clock(self.clock);
        let store = SqliteStore::open_with(&device.path, options)
            .await
            .or_fail(|| format!("open device {d}'s file"))?;
        if store.device_id() != device.name {
            return Err(format!(
                "device {d}'s file changed its device id to {:?}",
                store.device_id()
            ));
        }
        let handler = store
            .sync_handler(COLLECTION, device.remote.clone())
            .or_fail(|| "the sync handler".into())?;
        let config = FeatureSyncConfig::new().batch_size(self.batch_size);
        let builder = FeroSync::builder()
            .metadata_repo(store.metadata_repo())
            .initial_sync(COLLECTION, handler.clone(), config.clone())
            .background_sync(COLLECTION, handler.clone(), config)
            .conflict_strategy(self.strategy)
            .seed(self.random.next_u64())
            .clock(self.clock)
            .event_capacity(EVENT_CAPACITY);
        let sync = self
            .backoff
            .apply(builder)
            .build()
            .or_fail(|| format!("build device {d}'s engine"))?;
        // Subscribed before anything runs: no event of this incarnation is missed.
        let events = sync.event_stream();
        self.devices[d].live = Some(Live {
            store,
            handler,
            sync,
            events,
        });
        self.take_conflict_log(d).await?;
        self.check_checkpoint(d).await
    }

    /// Ends the device's process: the engine, the handler and the store are dropped, and the same
    /// file is opened again.
    async fn crash(&mut self, d: usize) -> Outcome {
        self.drain_events(d)?;
        self.stats.crashes += 1;
        drop(self.devices[d].live.take());
        // A run dropped mid-apply leaves its transaction on tokio's blocking pool, where it
        // commits (as if the process died right after the commit). The paused clock does not
        // advance while a blocking task runs, so this timer fires only after every such
        // transaction has ended: the next incarnation never races its predecessor's last write.
        tokio::time::sleep(Duration::from_millis(1)).await;
        self.note(format!("  d{d} crashed and reopened its file"));
        self.open(d).await
    }

    /// Reads the device's conflict log and acknowledges what it read, as an app does at start-up:
    /// the records join the world's, and the log must then be empty.
    async fn take_conflict_log(&mut self, d: usize) -> Outcome {
        let store = self.live(d)?.store.clone();
        let records = store
            .conflict_log()
            .await
            .or_fail(|| format!("device {d}'s conflict log"))?;
        let ids: Vec<u64> = records.iter().map(|r| r.log_id).collect();
        let removed = store
            .acknowledge_conflicts(&ids)
            .await
            .or_fail(|| format!("acknowledge device {d}'s conflict log"))?;
        if removed != ids.len() as u64 {
            return Err(format!(
                "device {d} acknowledged {} conflict log record(s) but removed {removed}",
                ids.len()
            ));
        }
        let left = store
            .conflict_log()
            .await
            .or_fail(|| format!("device {d}'s conflict log"))?;
        if !left.is_empty() {
            return Err(format!(
                "device {d}'s acknowledged conflict log still holds {left:?}"
            ));
        }
        for record in records {
            self.note(format!(
                "  d{d} conflict log #{} at {}: {} {:?} v{} seq {:?} {}, server v{:?}",
                record.log_id,
                record.recorded_at.0,
                record.id,
                record.outcome,
                record.local_version.0,
                record.local_mutation_seq,
                if record.local_deleted {
                    "deleted".to_owned()
                } else {
                    record.local_data.to_string()
                },
                record.server_version.map(|v| v.0)
            ));
            self.logged.push((d, record));
        }
        Ok(())
    }

    /// Adds what the fault layer did since the last report to the trace.
    fn note_faults(&mut self) {
        let now = self.sim.report().faults;
        let was = std::mem::replace(&mut self.faults_seen, now);
        let injected = [
            ("lost request", now.lost_requests - was.lost_requests),
            ("lost response", now.lost_responses - was.lost_responses),
            ("duplicate delivery", now.duplicates - was.duplicates),
            ("503", now.unavailable - was.unavailable),
        ];
        let injected: Vec<String> = injected
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(what, n)| format!("{what} x{n}"))
            .collect();
        if !injected.is_empty() {
            self.note(format!(
                "  faults over {} call(s): {}",
                now.calls - was.calls,
                injected.join(", ")
            ));
        }
    }

    fn set_faults(&mut self, on: bool) {
        self.faults_on = on;
        if on {
            self.sim.set_fault_profile(self.profile.clone());
        } else {
            self.sim.set_faults(false);
        }
    }

    fn draw_id(&mut self) -> String {
        if chance(&mut self.random, 33) {
            doc_id(below(&mut self.random, HOT_IDS))
        } else {
            doc_id(below(&mut self.random, IDS))
        }
    }

    fn draw_edit(&mut self) -> (usize, String, bool) {
        let device = below(&mut self.random, DEVICES as u64) as usize;
        let id = self.draw_id();
        let delete = chance(&mut self.random, 25);
        (device, id, delete)
    }

    fn draw(&mut self) -> Op {
        let device = below(&mut self.random, DEVICES as u64) as usize;
        match below(&mut self.random, 100) {
            0..=39 => {
                let (device, id, delete) = self.draw_edit();
                Op::Edit { device, id, delete }
            }
            40..=61 => Op::Sync {
                device,
                background_only: chance(&mut self.random, 33),
            },
            62..=83 => {
                let calls = 1 + below(&mut self.random, 6);
                let after_answer = chance(&mut self.random, 50);
                let action = match below(&mut self.random, 100) {
                    0..=39 => {
                        let (_, id, delete) = self.draw_edit();
                        // Half the time the stopped device itself is edited mid-run.
                        let edited = if chance(&mut self.random, 50) {
                            device
                        } else {
                            below(&mut self.random, DEVICES as u64) as usize
                        };
                        Action::Edit {
                            device: edited,
                            id,
                            delete,
                        }
                    }
                    40..=54 => Action::Sync {
                        device: (device + 1 + below(&mut self.random, DEVICES as u64 - 1) as usize)
                            % DEVICES,
                    },
                    55..=69 => Action::Race {
                        device: (device + 1 + below(&mut self.random, DEVICES as u64 - 1) as usize)
                            % DEVICES,
                        id: self.draw_id(),
                    },
                    70..=79 => Action::Cancel,
                    _ => Action::Crash,
                };
                Op::Window {
                    device,
                    calls,
                    after_answer,
                    action,
                }
            }
            84..=88 => Op::DropAfter {
                device,
                after: Duration::from_millis(below(&mut self.random, 150)),
            },
            89..=91 => Op::Crash { device },
            92..=96 => Op::Faults {
                on: chance(&mut self.random, 70),
            },
            _ => Op::QuietRound,
        }
    }

    async fn step(&mut self) -> Outcome {
        self.step += 1;
        let op = self.draw();
        self.note(format!("#{} {op}", self.step));
        let executed = self.execute(op).await;
        self.note_faults();
        executed?;
        for d in 0..DEVICES {
            self.drain_events(d)?;
        }
        self.check_step().await
    }

    async fn execute(&mut self, op: Op) -> Outcome {
        match op {
            Op::Edit { device, id, delete } => self.local_edit(device, &id, delete, false).await,
            Op::Sync {
                device,
                background_only,
            } => self.sync(device, background_only).await,
            Op::Window {
                device,
                calls,
                after_answer,
                action,
            } => self.window(device, calls, after_answer, action).await,
            Op::DropAfter { device, after } => {
                // A deadline on the paused clock, not a count of polls: whether a blocking task
                // ends before its handle is first polled is up to the OS, so poll counts differ
                // between replays, while the paused clock only moves once SQLite is idle.
                let sync = self.live(device)?.sync.clone();
                match tokio::time::timeout(after, sync.run()).await {
                    Ok(result) => self.record_run(device, &result),
                    Err(_) => {
                        drop(sync);
                        self.note(format!("  d{device}'s run dropped mid-way"));
                        self.crash(device).await
                    }
                }
            }
            Op::Crash { device } => self.crash(device).await,
            Op::Faults { on } => {
                self.set_faults(on);
                Ok(())
            }
            Op::QuietRound => {
                self.stats.quiet_rounds += 1;
                let faults_on = self.faults_on;
                self.set_faults(false);
                for d in 0..DEVICES {
                    self.sync(d, false).await?;
                }
                self.set_faults(faults_on);
                Ok(())
            }
        }
    }

    /// A local put (fresh tagged data) or delete; an acknowledged one joins the edit log. With
    /// `prefer_pending`, of a document with a pending edit when there is one.
    async fn local_edit(
        &mut self,
        d: usize,
        drawn: &str,
        delete: bool,
        prefer_pending: bool,
    ) -> Outcome {
        let store = self.live(d)?.store.clone();
        let n = id_number(drawn);
        let id = if prefer_pending {
            self.choose_pending(d, drawn).await?
        } else if delete {
            // Most drawn ids are not live on this device: delete one that is instead, chosen by
            // the drawn id, so deletions are as common as the schedule asks.
            let live: Vec<String> = store
                .query(COLLECTION)
                .await
                .or_fail(|| format!("device {d}'s documents"))?
                .into_iter()
                .map(|doc| doc.id)
                .collect();
            if live.is_empty() || live.iter().any(|l| l == drawn) {
                drawn.to_owned()
            } else {
                live[n % live.len()].clone()
            }
        } else {
            drawn.to_owned()
        };
        let (seq, data) = if delete {
            let deleted = store
                .delete(COLLECTION, &id)
                .await
                .or_fail(|| format!("device {d} deletes {id}"))?;
            if !deleted {
                self.note(format!("  d{d} delete {id}: nothing live to delete"));
                return Ok(());
            }
            let doc = store
                .get_including_deleted(COLLECTION, &id)
                .await
                .or_fail(|| format!("device {d} reads {id}"))?;
            (doc.and_then(|doc| doc.mutation_seq), None)
        } else {
            self.next_tag += 1;
            let data = json!({ "tag": format!("d{d}-{}", self.next_tag), "n": self.next_tag });
            let doc = store
                .put(COLLECTION, &id, data.clone())
                .await
                .or_fail(|| format!("device {d} puts {id}"))?;
            (doc.mutation_seq, Some(data))
        };
        let seq = seq.ok_or_else(|| {
            format!("device {d}'s acknowledged edit of {id} has no pending mutation sequence")
        })?;
        self.note(format!(
            "  d{d} {} {id} acknowledged as seq {seq}",
            data.as_ref()
                .map_or("deletion of".to_owned(), |v| format!("put {v} into"))
        ));
        self.stats.edits += 1;
        self.edits.push(Edit {
            device: d,
            id,
            seq,
            data,
            step: self.step,
        });
        Ok(())
    }

    /// One of the device's documents with a pending edit, chosen by the drawn id; the drawn id
    /// when none is pending.
    async fn choose_pending(&self, d: usize, drawn: &str) -> Outcome<String> {
        let pending: Vec<String> = self
            .live(d)?
            .store
            .locally_modified(COLLECTION)
            .await
            .or_fail(|| format!("device {d}'s pending documents"))?
            .into_iter()
            .map(|doc| doc.id)
            .collect();
        Ok(if pending.is_empty() {
            drawn.to_owned()
        } else {
            pending[id_number(drawn) % pending.len()].clone()
        })
    }

    async fn sync(&mut self, d: usize, background_only: bool) -> Outcome {
        let sync = self.live(d)?.sync.clone();
        let result = if background_only {
            sync.sync_now().await
        } else {
            sync.run().await
        };
        self.record_run(d, &result)
    }

    /// Notes a run's end; a run may fail under faults, but only transiently.
    fn record_run(&mut self, d: usize, result: &fero::Result<RunReport>) -> Outcome {
        match result {
            Ok(report) => {
                self.stats.runs_ok += 1;
                let totals = report.totals();
                self.note(format!(
                    "  d{d} run ok: {} page(s), pulled {}, pushed {}, conflicts {}",
                    totals.pages, totals.pulled, totals.pushed, totals.conflicts
                ));
                Ok(())
            }
            Err(error) => {
                self.stats.runs_failed += 1;
                let text = error.to_string();
                let first = text.lines().next().unwrap_or_default().to_owned();
                self.note(format!("  d{d} run failed: {first}"));
                if error.is_transient() {
                    Ok(())
                } else {
                    Err(format!(
                        "device {d}'s run failed for good (faults are transient): {error:?}"
                    ))
                }
            }
        }
    }

    /// Runs `d` until its remote call `calls` from now, does `action` while it waits there,
    /// then lets it go on (or crashes it there).
    async fn window(
        &mut self,
        d: usize,
        calls: u64,
        after_answer: bool,
        action: Action,
    ) -> Outcome {
        let remote = self.devices[d].remote.clone();
        let pushes_only = matches!(action, Action::Race { .. });
        let (stopped, on_stop) = oneshot::channel();
        *lock(&remote.hook) = Some(Hook {
            remaining: calls,
            pushes_only,
            after_answer,
            stopped,
        });
        let sync = self.live(d)?.sync.clone();
        let mut run = Box::pin(sync.run());
        let go = tokio::select! {
            biased;
            result = &mut run => {
                lock(&remote.hook).take();
                self.note(format!("  d{d}'s run ended before the stop"));
                return self.record_run(d, &result);
            }
            go = on_stop => go.or_fail(|| format!("device {d}'s stop hook vanished"))?,
        };
        self.stats.windows_stopped += 1;
        self.note(format!("  d{d} stopped at call {}", remote.calls()));
        match action {
            Action::Edit { device, id, delete } => {
                // On the stopped device, an edit of a document whose push may be in flight: the
                // store must keep it apart from the state the push carries.
                self.local_edit(device, &id, delete, device == d).await?;
            }
            Action::Sync { device } => self.sync(device, false).await?,
            Action::Race { device: other, id } => {
                // Another device writes the id this one is pushing and gets there first; then
                // this one edits it again while its push is in flight: a conflict on the push,
                // decided while a newer edit waits.
                let id = self.choose_pending(d, &id).await?;
                self.local_edit(other, &id, false, false).await?;
                self.sync(other, false).await?;
                self.local_edit(d, &id, false, false).await?;
            }
            Action::Cancel => sync.cancel(),
            Action::Crash => {
                drop(run);
                drop(go);
                drop(sync);
                return self.crash(d).await;
            }
        }
        // The run may already have been dropped by nothing else: it is still waiting for `go`.
        let _ = go.send(());
        let result = run.await;
        self.record_run(d, &result)
    }

    fn drain_events(&mut self, d: usize) -> Outcome {
        let Some(live) = self.devices[d].live.as_mut() else {
            return Ok(());
        };
        let mut seen = Vec::new();
        while let Some(Some(event)) = live.events.next().now_or_never() {
            match event {
                Ok(SyncEvent::ConflictResolved(conflict)) => seen.push(conflict),
                Ok(_) => {}
                Err(lagged) => return Err(format!("device {d}'s event subscriber: {lagged}")),
            }
        }
        for conflict in seen {
            self.stats.conflicts += 1;
            self.note(format!(
                "  d{d} conflict on {} ({:?}): {}, local v{} {}, server v{:?}",
                conflict.id,
                conflict.phase,
                conflict.outcome,
                conflict.local_version,
                conflict.local.get("data").unwrap_or(&Value::Null),
                conflict.server_version
            ));
            self.conflicts.push((d, conflict));
        }
        Ok(())
    }

    /// The checkpoint never moves backwards, and never covers a server row the file lacks: a row
    /// whose current `sync_id` is at or below it was delivered by that page or an earlier one,
    /// so the device holds it at that version or newer, or holds a pending edit of it.
    async fn check_checkpoint(&mut self, d: usize) -> Outcome {
        let store = self.live(d)?.store.clone();
        let checkpoint = store
            .metadata_repo()
            .checkpoint(&FeatureKey::new(COLLECTION))
            .await
            .or_fail(|| format!("read device {d}'s checkpoint"))?;
        let at = checkpoint.map_or(0, |c| c.last_sync_id.0);
        let highest = &mut self.devices[d].highest_checkpoint;
        if at < *highest {
            return Err(format!(
                "device {d}'s checkpoint went from sync_id {highest} back to {at}"
            ));
        }
        *highest = at;
        for row in self.server.rows(COLLECTION).values() {
            if row.sync_id.0 > at {
                continue;
            }
            let held = store
                .get_including_deleted(COLLECTION, &row.id)
                .await
                .or_fail(|| format!("device {d} reads {}", row.id))?;
            let covered = held
                .as_ref()
                .is_some_and(|doc| doc.locally_modified || doc.base_version >= Some(row.version));
            if !covered {
                return Err(format!(
                    "device {d}'s checkpoint is at sync_id {at}, past {} v{} (sync_id {}), but \
                     its file holds {held:?}",
                    row.id, row.version, row.sync_id
                ));
            }
        }
        Ok(())
    }

    async fn check_step(&mut self) -> Outcome {
        for d in 0..DEVICES {
            self.check_checkpoint(d).await?;
        }
        Ok(())
    }

    /// Every device's rows (tombstones included), outbox length, and the server's write count:
    /// a round that leaves this unchanged changed nothing.
    async fn fingerprint(&self) -> Outcome<(usize, Vec<(Vec<Option<LocalDocument>>, usize)>)> {
        let mut devices = Vec::with_capacity(DEVICES);
        for d in 0..DEVICES {
            let store = &self.live(d)?.store;
            let mut docs = Vec::with_capacity(IDS as usize);
            for n in 0..IDS {
                docs.push(
                    store
                        .get_including_deleted(COLLECTION, &doc_id(n))
                        .await
                        .or_fail(|| format!("device {d} reads {}", doc_id(n)))?,
                );
            }
            let outbox = store
                .outbox(COLLECTION)
                .await
                .or_fail(|| format!("device {d}'s outbox"))?;
            devices.push((docs, outbox.len()));
        }
        Ok((self.server.history().len(), devices))
    }

    /// Faults off; every device runs until a full round changes nothing; then the final checks.
    async fn quiesce(&mut self) -> Outcome {
        self.step += 1;
        self.note(format!("#{} quiescence: faults off", self.step));
        self.set_faults(false);
        let mut before = self.fingerprint().await?;
        let mut quiet = false;
        for round in 1..=MAX_QUIET_ROUNDS {
            for d in 0..DEVICES {
                let sync = self.live(d)?.sync.clone();
                let result = sync.run().await;
                self.record_run(d, &result)?;
                if let Err(error) = result {
                    return Err(format!(
                        "device {d}'s run failed without faults (round {round}): {error}"
                    ));
                }
                self.drain_events(d)?;
            }
            self.check_step().await?;
            let after = self.fingerprint().await?;
            if after == before {
                quiet = true;
                break;
            }
            before = after;
        }
        if !quiet {
            return Err(format!(
                "the devices still changed after {MAX_QUIET_ROUNDS} fault-free rounds"
            ));
        }
        for d in 0..DEVICES {
            self.check_converged(d).await?;
            self.take_conflict_log(d).await?;
        }
        self.check_no_edit_lost()
    }

    /// The device holds exactly the server's rows, nothing pending, digests equal, and its
    /// checkpoint at the end of the feed.
    async fn check_converged(&self, d: usize) -> Outcome {
        let live = self.live(d)?;
        let store = &live.store;
        let rows: BTreeMap<String, Document> = self.server.rows(COLLECTION);
        for n in 0..IDS {
            let id = doc_id(n);
            let held = store
                .get_including_deleted(COLLECTION, &id)
                .await
                .or_fail(|| format!("device {d} reads {id}"))?;
            let same = match (rows.get(&id), &held) {
                (None, None) => true,
                (Some(row), Some(doc)) => {
                    !doc.locally_modified
                        && doc.version == row.version
                        && doc.base_version == Some(row.version)
                        && doc.sync_id == Some(row.sync_id)
                        && doc.deleted == row.deleted
                        && doc.data == row.data
                }
                _ => false,
            };
            if !same {
                return Err(format!(
                    "device {d} differs from the server on {id}: server {:?}, device {held:?}",
                    rows.get(&id)
                ));
            }
        }
        let live_ids: Vec<String> = store
            .query(COLLECTION)
            .await
            .or_fail(|| format!("device {d}'s documents"))?
            .into_iter()
            .map(|doc| doc.id)
            .collect();
        let server_live: Vec<String> = rows
            .values()
            .filter(|row| !row.deleted)
            .map(|row| row.id.clone())
            .collect();
        if live_ids != server_live {
            return Err(format!(
                "device {d} lists {live_ids:?} as live, the server {server_live:?}"
            ));
        }
        let outbox = store
            .outbox(COLLECTION)
            .await
            .or_fail(|| format!("device {d}'s outbox"))?;
        if !outbox.is_empty() {
            return Err(format!("device {d} still has an outbox: {outbox:?}"));
        }
        let verify = live
            .handler
            .verify()
            .await
            .or_fail(|| format!("verify device {d}"))?;
        if !verify.is_match() {
            return Err(format!("device {d}'s digest differs: {verify:?}"));
        }
        let quarantined = live
            .sync
            .quarantined_changes(COLLECTION)
            .await
            .or_fail(|| format!("device {d}'s quarantine"))?;
        if !quarantined.is_empty() {
            return Err(format!("device {d} quarantined {quarantined:?}"));
        }
        let end = rows.values().map(|row| row.sync_id.0).max().unwrap_or(0);
        let checkpoint = store
            .metadata_repo()
            .checkpoint(&FeatureKey::new(COLLECTION))
            .await
            .or_fail(|| format!("read device {d}'s checkpoint"))?
            .map_or(0, |c| c.last_sync_id.0);
        if checkpoint != end {
            return Err(format!(
                "device {d}'s checkpoint is at sync_id {checkpoint}, the feed ends at {end}"
            ));
        }
        Ok(())
    }

    /// Every acknowledged edit reached the server with its content, was superseded by a later
    /// edit of the same id on its device, or was dropped with a conflict event naming it.
    fn check_no_edit_lost(&mut self) -> Outcome {
        let history = self.server.history();
        for edit in &self.edits {
            let name = &self.devices[edit.device].name;
            let superseded = self
                .edits
                .iter()
                .any(|e| e.device == edit.device && e.id == edit.id && e.seq > edit.seq);
            if superseded {
                continue;
            }
            // A conflict decided for the local side re-bases the edit under a new (higher)
            // sequence number with the same content.
            let reached = history.iter().any(|w| {
                w.id == edit.id
                    && w.mutation_id.device == *name
                    && w.mutation_id.seq >= edit.seq
                    && match &edit.data {
                        Some(data) => !w.deleted && w.data == *data,
                        None => w.deleted,
                    }
            });
            if reached {
                continue;
            }
            // A dropped edit counts only with its durable record: the event alone dies with the
            // process if a crash comes between the drop's commit and the event.
            let logged = self.logged.iter().any(|(d, r)| {
                *d == edit.device
                    && r.id == edit.id
                    && r.outcome == ConflictLogOutcome::Dropped
                    && logs_edit(r, edit)
            });
            if logged {
                self.stats.dropped_by_conflict += 1;
                let told = self.conflicts.iter().any(|(d, c)| {
                    *d == edit.device
                        && c.id == edit.id
                        && c.outcome == ConflictOutcome::ServerKept
                        && names_edit(&c.local, edit)
                });
                if !told {
                    self.stats.dropped_without_event += 1;
                }
                continue;
            }
            return Err(format!(
                "device {}'s edit of {} (seq {}, step {}, {}) never reached the server, was not \
                 superseded, and its device's conflict log has no record of its drop",
                edit.device,
                edit.id,
                edit.seq,
                edit.step,
                edit.data
                    .as_ref()
                    .map_or("a deletion".to_owned(), |v| v.to_string())
            ));
        }
        Ok(())
    }
}

/// Whether a conflict event's local copy (a serialised [`LocalDocument`]) is `edit`, or its
/// re-based copy: the same content at the same or a later sequence number.
fn names_edit(local: &Value, edit: &Edit) -> bool {
    let Ok(doc) = serde_json::from_value::<LocalDocument>(local.clone()) else {
        return false;
    };
    doc.mutation_seq.is_some_and(|seq| seq >= edit.seq)
        && match &edit.data {
            Some(data) => !doc.deleted && doc.data == *data,
            None => doc.deleted,
        }
}

/// Whether a conflict log record keeps `edit`: the same content at the same or a later sequence
/// number (a re-based copy).
fn logs_edit(record: &ConflictRecord, edit: &Edit) -> bool {
    record.local_mutation_seq.is_some_and(|seq| seq >= edit.seq)
        && match &edit.data {
            Some(data) => !record.local_deleted && record.local_data == *data,
            None => record.local_deleted,
        }
}

/// Runs one seed to its end; `Err` names the step and carries the trace.
fn run_seed(seed: u64) -> Result<SeedRun, Box<Failure>> {
    let fail = |step: u64, detail: String, trace: Vec<String>| {
        Box::new(Failure {
            seed,
            step,
            detail,
            trace,
        })
    };
    // The simulation supplies the server and its fault layer; its own devices stay idle. Built
    // and dropped outside this seed's runtime: it owns a runtime of its own.
    let mut sim = Sim::builder()
        .seed(seed)
        .devices(DEVICES)
        .faults(false)
        .build()
        .map_err(|e| fail(0, format!("build the simulation: {e}"), Vec::new()))?;
    let dir = tempfile::tempdir()
        .map_err(|e| fail(0, format!("a temporary directory: {e}"), Vec::new()))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .map_err(|e| fail(0, format!("a runtime: {e}"), Vec::new()))?;
    let result = runtime.block_on(async {
        let mut world = match World::new(seed, &mut sim, dir.path()).await {
            Ok(world) => world,
            Err(detail) => return Err(fail(0, detail, Vec::new())),
        };
        let mut outcome = Ok(());
        for _ in 0..STEPS {
            outcome = world.step().await;
            if outcome.is_err() {
                break;
            }
        }
        if outcome.is_ok() {
            outcome = world.quiesce().await;
        }
        let faults = world.sim.report().faults;
        let mut stats = world.stats;
        stats.calls = faults.calls;
        stats.lost_requests = faults.lost_requests;
        stats.lost_responses = faults.lost_responses;
        stats.duplicates = faults.duplicates;
        stats.unavailable = faults.unavailable;
        let step = world.step;
        let trace = std::mem::take(&mut world.trace);
        match outcome {
            Err(detail) => Err(fail(step, detail, trace)),
            Ok(()) => {
                let rows = world
                    .server
                    .rows(COLLECTION)
                    .into_values()
                    .map(|r| {
                        (
                            r.id,
                            r.version.0,
                            r.sync_id.0,
                            r.updated_at.0,
                            r.deleted,
                            r.data,
                        )
                    })
                    .collect();
                Ok(SeedRun { trace, rows, stats })
            }
        }
    });
    // Dropping the runtime waits for anything left on its blocking pool before the files go.
    drop(runtime);
    drop(dir);
    drop(sim);
    result
}

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    match value.trim().parse() {
        Ok(n) => Some(n),
        Err(e) => panic!("{name}={value:?} is not a number: {e}"),
    }
}

/// Runs `seeds` on a few threads; panics with the lowest failing seed's report.
/// With `verbose`, prints each passing seed's trace too.
fn run_seeds(seeds: Vec<u64>, verbose: bool) -> Stats {
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, 4);
    let queue = Mutex::new(seeds.clone().into_iter());
    let results = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let Some(seed) = lock(&queue).next() else {
                        break;
                    };
                    let outcome =
                        std::panic::catch_unwind(|| run_seed(seed)).unwrap_or_else(|panic| {
                            let message = panic
                                .downcast_ref::<String>()
                                .cloned()
                                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                                .unwrap_or_default();
                            Err(Box::new(Failure {
                                seed,
                                step: 0,
                                detail: format!("panicked: {message}"),
                                trace: Vec::new(),
                            }))
                        });
                    if let (true, Ok(run)) = (verbose, &outcome) {
                        eprintln!("{}", run.trace.join("\n"));
                    }
                    lock(&results).push((seed, outcome));
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap_or_else(|p| p.into_inner());
    results.sort_by_key(|(seed, _)| *seed);
    let mut totals = Stats::default();
    let mut failed = Vec::new();
    for (seed, outcome) in results {
        match outcome {
            Ok(run) => totals += run.stats,
            Err(failure) => failed.push((seed, failure)),
        }
    }
    if let Some((_, failure)) = failed.first() {
        let failed_seeds: Vec<u64> = failed.iter().map(|(seed, _)| *seed).collect();
        panic!(
            "{} of {} seed(s) failed: {failed_seeds:?}\n{failure}",
            failed.len(),
            seeds.len()
        );
    }
    eprintln!("{} seed(s) passed: {totals:?}", seeds.len());
    totals
}

#[test]
fn sqlite_devices_converge_and_lose_no_edit_under_faults_and_crashes() {
    let single = env_u64("FERO_FAULT_SEED");
    let seeds: Vec<u64> = match single {
        Some(seed) => vec![seed],
        None => (0..env_u64("FERO_FAULT_SEEDS").unwrap_or(DEFAULT_SEEDS)).collect(),
    };
    let totals = run_seeds(seeds, single.is_some());
    // The schedule must actually reach what it claims to test.
    if single.is_none() {
        assert!(totals.crashes > 0, "no crash happened: {totals:?}");
        assert!(
            totals.windows_stopped > 0,
            "no run was stopped mid-way: {totals:?}"
        );
        assert!(totals.conflicts > 0, "no conflict happened: {totals:?}");
        assert!(
            totals.lost_responses > 0 && totals.duplicates > 0 && totals.lost_requests > 0,
            "the fault layer injected too little: {totals:?}"
        );
    }
}

#[test]
fn a_seed_replays_exactly() {
    // 222 and 310 failed or diverged before the server shared the test's clock and a window
    // waited for the stopped run's commit.
    let seeds = env_u64("FERO_FAULT_SEED").map_or(vec![1, 5, 14, 222, 310], |seed| vec![seed]);
    for seed in seeds {
        replays_exactly(seed);
    }
}

/// Runs `seed` twice: the same steps, the same faults, the same conflict log records (with their
/// times), the same end (the server's rows with their `updated_at`).
fn replays_exactly(seed: u64) {
    let first = run_seed(seed).unwrap_or_else(|failure| panic!("{failure}"));
    let second = run_seed(seed).unwrap_or_else(|failure| panic!("{failure}"));
    if let Some(at) = (0..first.trace.len().max(second.trace.len()))
        .find(|&i| first.trace.get(i) != second.trace.get(i))
    {
        let around =
            |trace: &[String]| trace[at.saturating_sub(8)..(at + 3).min(trace.len())].join("\n");
        panic!(
            "seed {seed} took a different path on its replay at trace line {at}:\nfirst:\n{}\nsecond:\n{}",
            around(&first.trace),
            around(&second.trace)
        );
    }
    assert_eq!(
        first.rows, second.rows,
        "seed {seed} ended differently on its replay"
    );
}
