//! [`Sim`]: one seeded world of a server and N devices, its scheduler, and its invariants.
//!
//! One seed decides everything: the strategy, page size and backoff, the fault profile, every
//! step, every delay and every fault. Time is tokio's paused clock on a current-thread runtime,
//! so backoff waits and "days offline" take no real time, and a seed replays exactly.
//!
//! # A step
//! One of: a local edit or delete; a *window* in which some devices run a sync cycle while, at
//! seeded instants, other things happen (more edits, on the syncing devices too; a cancel; a
//! crash of a device mid-cycle; a server restart; a partition); faults switched on or off; a
//! device partitioned for days while the others go on; time passing; parked conflicts resolved.
//! After every step the per-step invariants are checked. [`Sim::run`] then switches faults off
//! and syncs every device until a full round changes nothing ([`Sim::quiesce`]), and checks that
//! every device equals the server and no local edit was lost silently.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fero::{
    BackgroundSyncHandler, ConflictResolutionStrategy, ExponentialBackoff, FeatureSyncConfig,
    FeroSync, ManualResolution, RandomSource, RunReport, SeededRandom, SyncEvent, SyncEventStream,
    SyncId,
};
use fero_protocol::Document;
use futures::{FutureExt, StreamExt};
use tokio::task::JoinHandle;

use crate::broken::Broken;
use crate::clock::SimClock;
use crate::error::{Invariant, SimError, Violation};
use crate::handler::{
    COLLECTION, DeviceContext, DynHandler, HandlerFactory, SharedHandler, SimHandler,
};
use crate::model::{self, Broke, Model, ModelCounts, OpenRuns};
use crate::network::{FaultCounts, FaultProfile, Network, SimRemote};
use crate::server::{SimServer, lock, tag_of};
use crate::store::{SimDoc, SimStore};

/// Rounds of "every device syncs" allowed at quiescence before the devices count as not
/// converging: two suffice without conflicts (push, then everyone pulls); each parked conflict
/// resolved needs at most two more.
const MAX_QUIET_ROUNDS: u64 = 12;

/// Long enough for any cycle in flight to end, retries and server downtime included.
const SETTLE: Duration = Duration::from_secs(3_600);

/// Events a device's subscription buffers; far above what one step emits, so the simulation
/// never lags (a lag is reported as an event-stream gap).
const EVENT_CAPACITY: usize = 1 << 14;

/// The strategies the simulation can check (a custom merge needs an app's merge function).
const STRATEGIES: [ConflictResolutionStrategy; 4] = [
    ConflictResolutionStrategy::HighestVersionWins,
    ConflictResolutionStrategy::ServerWins,
    ConflictResolutionStrategy::ClientWins,
    ConflictResolutionStrategy::Manual,
];

fn below(random: &mut SeededRandom, n: u64) -> u64 {
    random.next_u64() % n.max(1)
}

fn millis(random: &mut SeededRandom, max: u64) -> Duration {
    Duration::from_millis(below(random, max))
}

/// Removes and returns the run handles of `device`.
fn take_runs<T>(running: &mut Vec<(usize, T)>, device: usize) -> Vec<T> {
    let (mine, others): (Vec<_>, Vec<_>) = running.drain(..).partition(|(d, _)| *d == device);
    *running = others;
    mine.into_iter().map(|(_, handle)| handle).collect()
}

/// Configures a [`Sim`]; see [`Sim::builder`].
#[derive(Clone)]
pub struct SimBuilder {
    seed: u64,
    devices: usize,
    ids: usize,
    steps: u64,
    strategy: Option<ConflictResolutionStrategy>,
    faults: bool,
    factory: Option<HandlerFactory>,
    broken: Broken,
    strict_conflict_events: bool,
}

impl fmt::Debug for SimBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimBuilder")
            .field("seed", &self.seed)
            .field("devices", &self.devices)
            .field("ids", &self.ids)
            .field("steps", &self.steps)
            .field("strategy", &self.strategy)
            .field("faults", &self.faults)
            .field("custom_handler", &self.factory.is_some())
            .field("broken", &self.broken)
            .field("strict_conflict_events", &self.strict_conflict_events)
            .finish()
    }
}

impl Default for SimBuilder {
    fn default() -> Self {
        SimBuilder {
            seed: 0,
            devices: 3,
            ids: 20,
            steps: 60,
            strategy: None,
            faults: true,
            factory: None,
            broken: Broken::None,
            strict_conflict_events: true,
        }
    }
}

impl SimBuilder {
    /// The seed that decides everything (default 0).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Simulated devices (default 3).
    pub fn devices(mut self, devices: usize) -> Self {
        self.devices = devices;
        self
    }

    /// Distinct item ids the devices edit (default 20); a few of them are edited much more
    /// often than the rest, so devices collide.
    pub fn ids(mut self, ids: usize) -> Self {
        self.ids = ids;
        self
    }

    /// Steps before quiescence (default 60).
    pub fn steps(mut self, steps: u64) -> Self {
        self.steps = steps;
        self
    }

    /// The conflict strategy (default: drawn from the seed among highest-version-wins,
    /// server-wins, client-wins and manual).
    pub fn strategy(mut self, strategy: ConflictResolutionStrategy) -> Self {
        self.strategy = Some(strategy);
        self
    }

    /// Whether the network injects faults at all (default `true`; the scheduler switches them
    /// on and off).
    pub fn faults(mut self, faults: bool) -> Self {
        self.faults = faults;
        self
    }

    /// Builds each device's background handler with `factory` instead of [`SimHandler`]
    /// (at start and after every restart). The handler keeps its data in the context's
    /// [`SimStore`] so the invariants can read it, and talks to the server through the
    /// context's [`SimRemote`].
    pub fn handler<F, H>(mut self, factory: F) -> Self
    where
        F: Fn(DeviceContext) -> H + Send + Sync + 'static,
        H: BackgroundSyncHandler<Local = SimDoc, Server = Document>,
    {
        self.factory = Some(Arc::new(move |context| -> DynHandler {
            Arc::new(factory(context))
        }));
        self
    }

    /// Strict accounting of dropped edits (default off): a conflict event that drops a local
    /// edit accounts only for the edit whose content it carries, so an edit made after the
    /// engine listed the modified items, and dropped by a decision taken on the older copy,
    /// counts as lost silently.
    ///
    /// On by default. It was off while fero's `RemoteChanges::discard_local` named ids only (a
    /// store could not tell the edit the engine decided on from a newer one and dropped both);
    /// the regression test `discarding_a_conflict_keeps_a_newer_local_edit` guards the fix.
    pub fn strict_conflict_events(mut self, strict: bool) -> Self {
        self.strict_conflict_events = strict;
        self
    }

    /// Selects a deliberately broken variant (see [`Broken`]).
    #[doc(hidden)]
    pub fn broken(mut self, broken: Broken) -> Self {
        self.broken = broken;
        self
    }

    /// Builds the world: runtime, server, devices.
    ///
    /// # Errors
    /// [`SimError::Config`] for zero devices or ids, or an unsupported strategy;
    /// [`SimError::Runtime`] when tokio cannot start; [`SimError::DeviceBuild`] when a
    /// device's engine cannot be built.
    pub fn build(self) -> Result<Sim, SimError> {
        if self.devices == 0 || self.ids == 0 {
            return Err(SimError::Config {
                message: format!(
                    "{} device(s) and {} id(s): a simulation needs at least one of each",
                    self.devices, self.ids
                ),
            });
        }
        if let Some(strategy) = self.strategy {
            if !STRATEGIES.contains(&strategy) {
                return Err(SimError::Config {
                    message: format!(
                        "strategy {strategy} is not simulated: use highest-version-wins, \
                         server-wins, client-wins or manual"
                    ),
                });
            }
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .map_err(|source| SimError::Runtime { source })?;
        let world = {
            let _context = runtime.enter();
            World::new(self)?
        };
        Ok(Sim { runtime, world })
    }
}

/// What a simulation did.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SimReport {
    /// The seed.
    pub seed: u64,
    /// The conflict strategy it ran with.
    pub strategy: ConflictResolutionStrategy,
    /// Steps taken (quiescence rounds not counted).
    pub steps: u64,
    /// Edits, conflicts and drops the model saw.
    pub model: ModelCounts,
    /// What the network did.
    pub faults: FaultCounts,
    /// Device crashes.
    pub crashes: u64,
    /// Cycles cancelled.
    pub cancels: u64,
    /// Server restarts.
    pub server_restarts: u64,
    /// Device partitions.
    pub partitions: u64,
    /// Sync runs that completed and that failed.
    pub runs: (u64, u64),
    /// Writes the server accepted.
    pub server_writes: usize,
    /// The step trace.
    pub trace: Vec<String>,
}

/// A deterministic simulation of a server and several devices under faults.
///
/// Build it with [`Sim::builder`], then either [`run`](Self::run) it (the seeded scheduler, then
/// quiescence and the final checks), or script it step by step with [`edit`](Self::edit),
/// [`sync`](Self::sync), [`crash`](Self::crash), [`partition`](Self::partition),
/// [`repair`](Self::repair) and friends. Every method checks the per-step invariants before it
/// returns. See the crate docs for an example.
pub struct Sim {
    runtime: tokio::runtime::Runtime,
    world: World,
}

impl fmt::Debug for Sim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sim")
            .field("seed", &self.world.seed)
            .field("step", &self.world.step)
            .field("devices", &self.world.devices.len())
            .finish_non_exhaustive()
    }
}

impl Sim {
    /// A builder with the defaults: seed 0, 3 devices, 20 ids, 60 steps, faults on.
    pub fn builder() -> SimBuilder {
        SimBuilder::default()
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.world.seed
    }

    /// The conflict strategy in use.
    pub fn strategy(&self) -> ConflictResolutionStrategy {
        self.world.strategy
    }

    /// Runs the seeded scheduler for the configured steps, then [`quiesce`](Self::quiesce).
    ///
    /// # Errors
    /// [`SimError::Violation`] with the seed, step, invariant and trace.
    pub fn run(mut self) -> Result<SimReport, SimError> {
        for _ in 0..self.world.steps {
            self.step()?;
        }
        self.quiesce()?;
        Ok(self.report())
    }

    /// One seeded step, then the per-step invariants.
    ///
    /// # Errors
    /// [`SimError::Violation`].
    pub fn step(&mut self) -> Result<(), SimError> {
        let world = &mut self.world;
        self.runtime.block_on(world.step())
    }

    /// Faults off, partitions repaired, server up; every device syncs (and resolves parked
    /// conflicts) until a full round changes nothing; then every device must equal the server,
    /// and every local edit must have reached it or been dropped with a conflict event.
    ///
    /// # Errors
    /// [`SimError::Violation`].
    pub fn quiesce(&mut self) -> Result<(), SimError> {
        let world = &mut self.world;
        self.runtime.block_on(world.quiesce())
    }

    /// A local edit of `id` on `device`, with fresh tagged data; returns the tag.
    ///
    /// # Errors
    /// [`SimError::NoSuchDevice`], [`SimError::Config`] for a crashed device, or a violation
    /// found by the checks.
    pub fn edit(&mut self, device: usize, id: &str) -> Result<String, SimError> {
        self.world.device(device)?;
        let world = &mut self.world;
        self.runtime.block_on(async {
            world.step += 1;
            world.note(format!("#{} edit d{device} {id}", world.step));
            let tag = world.local_edit(device, id, false)?;
            world.check_step()?;
            tag.ok_or_else(|| SimError::Config {
                message: format!("device {device} is crashed: restart it before editing"),
            })
        })
    }

    /// A local deletion of `id` on `device`; returns the tag, `None` when there was nothing to
    /// delete.
    ///
    /// # Errors
    /// [`SimError::NoSuchDevice`], or a violation found by the checks.
    pub fn delete(&mut self, device: usize, id: &str) -> Result<Option<String>, SimError> {
        self.world.device(device)?;
        let world = &mut self.world;
        self.runtime.block_on(async {
            world.step += 1;
            world.note(format!("#{} delete d{device} {id}", world.step));
            let exists = world.devices[device]
                .store
                .get(id)
                .is_some_and(|d| !d.deleted);
            let tag = if exists {
                world.local_edit(device, id, true)?
            } else {
                None
            };
            world.check_step()?;
            Ok(tag)
        })
    }

    /// Runs one sync (`FeroSync::run`) of `device` to its end; the inner result is the run's.
    ///
    /// # Errors
    /// [`SimError::NoSuchDevice`], or a violation found by the checks.
    pub fn sync(&mut self, device: usize) -> Result<Result<RunReport, fero::Error>, SimError> {
        self.world.device(device)?;
        let world = &mut self.world;
        self.runtime.block_on(async {
            world.step += 1;
            world.note(format!("#{} sync d{device}", world.step));
            let result = world.sync_one(device).await?;
            world.check_step()?;
            Ok(result)
        })
    }

    /// Starts a sync of `device` and, `after` it began, makes a local edit of `id` on the same
    /// device while the cycle is in flight; waits for the sync to end. Returns the edit's tag.
    ///
    /// # Errors
    /// [`SimError::NoSuchDevice`], or a violation found by the checks.
    pub fn sync_while_editing(
        &mut self,
        device: usize,
        after: Duration,
        id: &str,
    ) -> Result<String, SimError> {
        let before = self.world.model.counts.edits;
        self.window(
            device,
            after,
            Action::Edit {
                device,
                id: id.to_owned(),
                delete: false,
            },
        )?;
        if self.world.model.counts.edits == before {
            return Err(SimError::Config {
                message: format!("device {device} was down: the edit of {id} did not happen"),
            });
        }
        Ok(format!("d{device}-{}", self.world.model.last_tag()))
    }

    /// Starts a sync of `device`, lets it run for `after` of simulated time, then crashes the
    /// device (its in-flight work is dropped wherever it stands) and restarts it from its
    /// durable state.
    ///
    /// # Errors
    /// [`SimError::NoSuchDevice`], or a violation found by the checks.
    pub fn crash_during_sync(&mut self, device: usize, after: Duration) -> Result<(), SimError> {
        self.window(device, after, Action::Crash { device })
    }

    /// Starts a sync of `device`, lets it run for `after`, then calls `cancel()` and waits for
    /// the run to stop.
    ///
    /// # Errors
    /// [`SimError::NoSuchDevice`], or a violation found by the checks.
    pub fn cancel_during_sync(&mut self, device: usize, after: Duration) -> Result<(), SimError> {
        self.window(device, after, Action::Cancel { device })
    }

    /// Starts a sync of `device`, lets it run for `after`, then restarts the server (calls in
    /// flight fail; it refuses calls for `down`).
    ///
    /// # Errors
    /// [`SimError::NoSuchDevice`], or a violation found by the checks.
    pub fn restart_server_during_sync(
        &mut self,
        device: usize,
        after: Duration,
        down: Duration,
    ) -> Result<(), SimError> {
        self.window(device, after, Action::RestartServer { down })
    }

    fn window(&mut self, device: usize, after: Duration, action: Action) -> Result<(), SimError> {
        self.world.device(device)?;
        let op = Op::Window {
            runners: vec![device],
            actions: vec![(after, action)],
        };
        let world = &mut self.world;
        self.runtime.block_on(async {
            world.step += 1;
            world.note(format!("#{} {op}", world.step));
            world.execute(op).await?;
            world.check_step()
        })
    }

    /// Crashes `device` now: its engine, handlers and subscriptions are dropped; only its
    /// durable state remains. It stays down until [`restart`](Self::restart).
    ///
    /// # Errors
    /// [`SimError::NoSuchDevice`], or a violation found by the checks.
    pub fn crash(&mut self, device: usize) -> Result<(), SimError> {
        self.world.device(device)?;
        let world = &mut self.world;
        self.runtime.block_on(async {
            world.crash_device(device)?;
            world.check_step()
        })
    }

    /// Restarts a crashed `device` from its durable state (nothing happens if it is running).
    ///
    /// # Errors
    /// [`SimError::NoSuchDevice`], [`SimError::DeviceBuild`], or a violation.
    pub fn restart(&mut self, device: usize) -> Result<(), SimError> {
        self.world.device(device)?;
        let world = &mut self.world;
        self.runtime.block_on(async {
            if world.devices[device].live.is_none() {
                world.start_device(device)?;
            }
            world.check_step()
        })
    }

    /// Crashes and restarts `device`.
    ///
    /// # Errors
    /// As for [`crash`](Self::crash) and [`restart`](Self::restart).
    pub fn bounce(&mut self, device: usize) -> Result<(), SimError> {
        self.crash(device)?;
        self.restart(device)
    }

    /// Cuts `device` off the network until [`repair`](Self::repair).
    ///
    /// # Errors
    /// [`SimError::NoSuchDevice`].
    pub fn partition(&mut self, device: usize) -> Result<(), SimError> {
        self.world.device(device)?;
        lock(&self.world.network).partition(device);
        self.world.note(format!("partition d{device}"));
        Ok(())
    }

    /// Reconnects `device`.
    ///
    /// # Errors
    /// [`SimError::NoSuchDevice`].
    pub fn repair(&mut self, device: usize) -> Result<(), SimError> {
        self.world.device(device)?;
        lock(&self.world.network).repair(device);
        self.world.note(format!("repair d{device}"));
        Ok(())
    }

    /// Restarts the server now; it refuses calls for `down`.
    pub fn restart_server(&mut self, down: Duration) {
        let _context = self.runtime.enter();
        lock(&self.world.network).restart_server(down);
        self.world.counts.server_restarts += 1;
        self.world.note(format!("restart server (down {down:?})"));
    }

    /// Lets `by` of simulated time pass (nothing runs meanwhile).
    pub fn elapse(&mut self, by: Duration) {
        self.runtime
            .block_on(async move { tokio::time::sleep(by).await });
        self.world.note(format!("elapse {by:?}"));
    }

    /// Switches fault injection on (with a seeded profile) or off.
    pub fn set_faults(&mut self, on: bool) {
        self.world.set_faults(on);
        self.world
            .note(format!("faults {}", if on { "on" } else { "off" }));
    }

    /// Switches fault injection on with exactly `profile` (for scripted scenarios).
    pub fn set_fault_profile(&mut self, profile: FaultProfile) {
        self.world.note(format!("faults on: {profile:?}"));
        let mut network = lock(&self.world.network);
        network.faults_on = true;
        network.profile = profile;
    }

    /// Checks the per-step invariants now.
    ///
    /// # Errors
    /// [`SimError::Violation`].
    pub fn check(&mut self) -> Result<(), SimError> {
        let world = &mut self.world;
        self.runtime.block_on(async { world.check_step() })
    }

    /// `device`'s connection to the server through the fault layer: build your own handler on
    /// it, or call it directly (inside the simulation's time, e.g. from a handler).
    ///
    /// # Errors
    /// [`SimError::NoSuchDevice`].
    pub fn remote_for(&self, device: usize) -> Result<SimRemote, SimError> {
        Ok(self.world.device(device)?.remote.clone())
    }

    /// `device`'s store, as its current incarnation opens it.
    ///
    /// # Errors
    /// [`SimError::NoSuchDevice`].
    pub fn store(&self, device: usize) -> Result<SimStore, SimError> {
        Ok(self.world.device(device)?.store.clone())
    }

    /// `device`'s engine; `None` while the device is crashed.
    ///
    /// # Errors
    /// [`SimError::NoSuchDevice`].
    pub fn engine(&self, device: usize) -> Result<Option<FeroSync>, SimError> {
        Ok(self
            .world
            .device(device)?
            .live
            .as_ref()
            .map(|l| l.sync.clone()))
    }

    /// The server.
    pub fn server(&self) -> &SimServer {
        &self.world.server
    }

    /// The step trace so far.
    pub fn trace(&self) -> &[String] {
        &self.world.trace
    }

    /// What the simulation did so far.
    pub fn report(&self) -> SimReport {
        self.world.report()
    }
}

/// One thing that happens at a seeded instant inside a window.
#[derive(Clone, Debug)]
enum Action {
    Edit {
        device: usize,
        id: String,
        delete: bool,
    },
    Cancel {
        device: usize,
    },
    Crash {
        device: usize,
    },
    RestartServer {
        down: Duration,
    },
    Partition {
        device: usize,
        steps: u64,
    },
    /// A graceful shutdown (`dispose`) mid-cycle, then a restart.
    Shutdown {
        device: usize,
    },
    /// `trigger`: the engine's own background loop runs a cycle, concurrently with the
    /// scheduler's later steps.
    Trigger {
        device: usize,
    },
    /// A second run of a device while its first is in flight (runs must serialise).
    RunAgain {
        device: usize,
    },
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Edit { device, id, delete } => {
                write!(
                    f,
                    "{} d{device} {id}",
                    if *delete { "delete" } else { "edit" }
                )
            }
            Action::Cancel { device } => write!(f, "cancel d{device}"),
            Action::Crash { device } => write!(f, "crash d{device}"),
            Action::RestartServer { down } => write!(f, "restart server (down {down:?})"),
            Action::Partition { device, steps } => {
                write!(f, "partition d{device} for {steps} steps")
            }
            Action::Shutdown { device } => write!(f, "shut down d{device}"),
            Action::Trigger { device } => write!(f, "trigger d{device}"),
            Action::RunAgain { device } => write!(f, "run d{device} again"),
        }
    }
}

/// One step of the scheduler.
#[derive(Clone, Debug)]
enum Op {
    Edit {
        device: usize,
        id: String,
        delete: bool,
    },
    Window {
        runners: Vec<usize>,
        actions: Vec<(Duration, Action)>,
    },
    Faults {
        on: bool,
    },
    Partition {
        device: usize,
        steps: u64,
        offline: Duration,
    },
    Elapse {
        by: Duration,
    },
    Resolve {
        device: usize,
    },
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Edit { device, id, delete } => {
                write!(
                    f,
                    "{} d{device} {id}",
                    if *delete { "delete" } else { "edit" }
                )
            }
            Op::Window { runners, actions } => {
                let runners: Vec<String> = runners.iter().map(|d| format!("d{d}")).collect();
                write!(f, "sync [{}]", runners.join(" "))?;
                for (at, action) in actions {
                    write!(f, "; +{}ms {action}", at.as_millis())?;
                }
                Ok(())
            }
            Op::Faults { on } => write!(f, "faults {}", if *on { "on" } else { "off" }),
            Op::Partition {
                device,
                steps,
                offline,
            } => write!(
                f,
                "partition d{device} for {steps} steps, {}h pass",
                offline.as_secs() / 3600
            ),
            Op::Elapse { by } => write!(f, "elapse {}s", by.as_secs()),
            Op::Resolve { device } => write!(f, "resolve parked conflicts of d{device}"),
        }
    }
}

/// A running device: its engine and what observes it. Dropped by a crash.
struct Live {
    sync: FeroSync,
    events: SyncEventStream,
    open: OpenRuns,
    /// The engine's trigger loop may be running a cycle nobody awaits: the "every run ends"
    /// check waits for quiescence.
    triggered: bool,
}

struct Device {
    /// The handle of the current incarnation.
    store: SimStore,
    remote: SimRemote,
    live: Option<Live>,
    /// The highest checkpoint seen, for "never backwards".
    highest_checkpoint: SyncId,
}

#[derive(Copy, Clone, Debug, Default)]
struct Counts {
    crashes: u64,
    cancels: u64,
    server_restarts: u64,
    partitions: u64,
    runs_ok: u64,
    runs_failed: u64,
}

struct World {
    seed: u64,
    steps: u64,
    ids: usize,
    strategy: ConflictResolutionStrategy,
    batch_size: usize,
    backoff: ExponentialBackoff,
    random: SeededRandom,
    clock: SimClock,
    server: SimServer,
    network: Arc<Mutex<Network>>,
    devices: Vec<Device>,
    model: Model,
    factory: Option<HandlerFactory>,
    /// Partitioned devices and the step that repairs them.
    repairs: BTreeMap<usize, u64>,
    step: u64,
    trace: Vec<String>,
    replay: String,
    counts: Counts,
}

impl World {
    fn new(config: SimBuilder) -> Result<World, SimError> {
        let mut random = SeededRandom::new(config.seed);
        let strategy = config
            .strategy
            .unwrap_or(STRATEGIES[below(&mut random, STRATEGIES.len() as u64) as usize]);
        let batch_size = 2 + below(&mut random, 4) as usize;
        let attempts = 3 + below(&mut random, 3) as u32;
        let backoff = ExponentialBackoff::new(
            Duration::from_millis(50),
            2.0,
            Duration::from_secs(2),
            attempts,
        )
        .map_err(|e| SimError::Config {
            message: format!("the simulation's backoff is invalid: {e}"),
        })?;
        let profile = FaultProfile::random(&mut random);
        let clock = SimClock::default();
        let server = SimServer::with_clock(clock, config.broken == Broken::BlindOverwrite);
        let network = Arc::new(Mutex::new(Network::new(
            random.next_u64(),
            config.faults,
            profile.clone(),
        )));
        let devices = (0..config.devices)
            .map(|d| Device {
                store: SimStore::with_broken(format!("device-{d}"), config.broken),
                remote: SimRemote::new(d, server.clone(), network.clone()),
                live: None,
                highest_checkpoint: SyncId(0),
            })
            .collect();
        let mut replay = format!("cargo run -p fero-sim -- --seed {} --verbose", config.seed);
        let defaults = SimBuilder::default();
        if config.devices != defaults.devices {
            replay.push_str(&format!(" --devices {}", config.devices));
        }
        if config.ids != defaults.ids {
            replay.push_str(&format!(" --ids {}", config.ids));
        }
        if config.steps != defaults.steps {
            replay.push_str(&format!(" --steps {}", config.steps));
        }
        if let Some(strategy) = config.strategy {
            replay.push_str(&format!(" --strategy {strategy}"));
        }
        if !config.faults {
            replay.push_str(" --no-faults");
        }
        if config.strict_conflict_events {
            replay.push_str(" --strict-conflict-events");
        }
        if config.broken != Broken::None {
            replay.push_str(&format!(" --broken {}", config.broken.name()));
        }
        if config.factory.is_some() {
            replay = format!(
                "Sim::builder().seed({}) with the same handler and settings",
                config.seed
            );
        }
        let mut world = World {
            seed: config.seed,
            steps: config.steps,
            ids: config.ids,
            strategy,
            batch_size,
            backoff,
            random,
            clock,
            server,
            network,
            devices,
            model: Model::new(config.strict_conflict_events),
            factory: config.factory,
            repairs: BTreeMap::new(),
            step: 0,
            trace: Vec::new(),
            replay,
            counts: Counts::default(),
        };
        world.note(format!(
            "seed {}: {} devices, {} ids, {} steps, strategy {strategy}, batch size {batch_size}, \
             {attempts} attempts per call, faults {}{}",
            config.seed,
            config.devices,
            config.ids,
            config.steps,
            if config.faults { "on" } else { "off" },
            if config.broken == Broken::None {
                String::new()
            } else {
                format!(", BROKEN: {}", config.broken.name())
            }
        ));
        if config.faults {
            world.note(format!("  fault profile {profile:?}"));
        }
        for d in 0..world.devices.len() {
            world.start_device(d)?;
        }
        Ok(world)
    }

    fn device(&self, device: usize) -> Result<&Device, SimError> {
        self.devices.get(device).ok_or(SimError::NoSuchDevice {
            device,
            devices: self.devices.len(),
        })
    }

    /// Adds a line to the trace, after what the network did since the last line.
    fn note(&mut self, line: String) {
        let log = std::mem::take(&mut lock(&self.network).log);
        self.trace.extend(log);
        self.trace.push(line);
    }

    fn violation(&self, (invariant, detail): Broke) -> SimError {
        SimError::Violation {
            violation: Box::new(Violation {
                seed: self.seed,
                step: self.step,
                invariant,
                detail,
                replay: self.replay.clone(),
                trace: self.trace.clone(),
            }),
        }
    }

    fn report(&self) -> SimReport {
        let network = lock(&self.network);
        SimReport {
            seed: self.seed,
            strategy: self.strategy,
            steps: self.step,
            model: self.model.counts,
            faults: network.counts,
            crashes: self.counts.crashes,
            cancels: self.counts.cancels,
            server_restarts: self.counts.server_restarts,
            partitions: self.counts.partitions,
            runs: (self.counts.runs_ok, self.counts.runs_failed),
            server_writes: self.server.history().len(),
            trace: self.trace.clone(),
        }
    }

    fn set_faults(&mut self, on: bool) {
        let profile = FaultProfile::random(&mut self.random);
        let mut network = lock(&self.network);
        network.faults_on = on;
        if on {
            network.profile = profile;
        }
    }

    /// Builds the device's engine over its durable state (at start and after a crash).
    fn start_device(&mut self, d: usize) -> Result<(), SimError> {
        let device = &self.devices[d];
        let store = device.store.clone();
        let remote = device.remote.owned_by(&store);
        let config = FeatureSyncConfig::new().batch_size(self.batch_size);
        let builder = FeroSync::builder()
            .metadata_repo(store.metadata_repo())
            .conflict_strategy(self.strategy)
            .backoff(self.backoff.clone())
            .seed(self.random.next_u64())
            .clock(self.clock)
            .event_capacity(EVENT_CAPACITY);
        let builder = match &self.factory {
            Some(factory) => {
                let handler = factory(DeviceContext {
                    device: d,
                    store: store.clone(),
                    remote,
                    collection: COLLECTION.to_owned(),
                });
                builder.background_sync(COLLECTION, SharedHandler(handler), config)
            }
            None => {
                let handler = SimHandler::new(store.clone(), remote, COLLECTION);
                builder
                    .initial_sync(COLLECTION, handler.clone(), config.clone())
                    .background_sync(COLLECTION, handler, config)
            }
        };
        let sync = builder.build().map_err(|source| SimError::DeviceBuild {
            seed: self.seed,
            device: d,
            source,
        })?;
        let events = sync.event_stream();
        self.devices[d].live = Some(Live {
            sync,
            events,
            open: OpenRuns::default(),
            triggered: false,
        });
        Ok(())
    }

    /// Drops the device's engine and everything volatile; fences its old store handles.
    fn crash_device(&mut self, d: usize) -> Result<(), SimError> {
        self.counts.crashes += 1;
        self.stop_device(d, "crashed")
    }

    /// Ends the device's process (`how`: crashed or shut down): only durable state remains.
    fn stop_device(&mut self, d: usize, how: &str) -> Result<(), SimError> {
        self.drain(d)?;
        let device = &mut self.devices[d];
        device.live = None;
        device.store = device.store.crash();
        self.note(format!("  d{d} {how}"));
        Ok(())
    }

    /// Feeds every event a device emitted so far to the model and the stream checks.
    fn drain(&mut self, d: usize) -> Result<(), SimError> {
        // Conflicts of one drain, sorted by id: the engine publishes some batches in hash order,
        // and the trace must replay identically.
        let mut conflicts = Vec::new();
        let result = self.drain_into(d, &mut conflicts);
        conflicts.sort();
        self.trace
            .extend(conflicts.into_iter().map(|(_, line)| line));
        result
    }

    fn drain_into(
        &mut self,
        d: usize,
        conflicts: &mut Vec<(String, String)>,
    ) -> Result<(), SimError> {
        loop {
            let Some(live) = self.devices[d].live.as_mut() else {
                return Ok(());
            };
            let next = match live.events.next().now_or_never() {
                None | Some(None) => return Ok(()),
                Some(Some(next)) => next,
            };
            let event: SyncEvent = match next {
                Ok(event) => event,
                Err(lagged) => {
                    return Err(self
                        .violation((Invariant::EventStreamGap, format!("device {d}: {lagged}"))));
                }
            };
            if let Err(broke) = live.open.observe(d, &event) {
                return Err(self.violation(broke));
            }
            if let SyncEvent::ConflictResolved(c) = &event {
                let tag = |v: &serde_json::Value| {
                    v.get("data")
                        .and_then(tag_of)
                        .or_else(|| tag_of(v))
                        .unwrap_or("-")
                        .to_owned()
                };
                conflicts.push((
                    c.id.clone(),
                    format!(
                        "  d{d} conflict {} ({:?}): {}, local {} v{} vs server {} {:?}{}",
                        c.id,
                        c.phase,
                        c.outcome,
                        tag(&c.local),
                        c.local_version,
                        tag(&c.server),
                        c.server_version,
                        if c.server_deleted { " deleted" } else { "" }
                    ),
                ));
            }
            self.model.observe(d, &event);
        }
    }

    fn drain_all(&mut self) -> Result<(), SimError> {
        for d in 0..self.devices.len() {
            self.drain(d)?;
        }
        Ok(())
    }

    fn pick_id(&mut self) -> String {
        // Half the edits go to a few hot ids, so devices collide often.
        let hot = self.ids.min(4) as u64;
        let k = if below(&mut self.random, 2) == 0 {
            below(&mut self.random, hot)
        } else {
            below(&mut self.random, self.ids as u64)
        };
        format!("item-{k:02}")
    }

    fn pick_device(&mut self) -> usize {
        below(&mut self.random, self.devices.len() as u64) as usize
    }

    /// A local edit with a fresh tag; `None` when the device is down.
    fn local_edit(&mut self, d: usize, id: &str, delete: bool) -> Result<Option<String>, SimError> {
        self.drain_all()?;
        if self.devices[d].live.is_none() {
            self.note(format!("  d{d} is down: edit of {id} skipped"));
            return Ok(None);
        }
        let tag = self.model.new_tag(d);
        let store = self.devices[d].store.clone();
        let deletable = store.get(id).is_some_and(|doc| !doc.deleted);
        let written = if delete && deletable {
            let data = serde_json::json!({ "tag": tag, "by": d, "deleted": true });
            store.delete(id, data).map(|_| ())
        } else {
            let data = serde_json::json!({ "tag": tag, "by": d });
            store.put(id, data).map(|_| ())
        };
        if let Err(e) = written {
            return Err(self.violation((
                Invariant::Panicked,
                format!("device {d}'s own store refused a local edit: {e}"),
            )));
        }
        self.model.edit(d, id, tag.clone());
        Ok(Some(tag))
    }

    fn next_op(&mut self) -> Op {
        let roll = below(&mut self.random, 100);
        match roll {
            0..=37 => {
                let device = self.pick_device();
                let id = self.pick_id();
                let delete = below(&mut self.random, 5) == 0;
                Op::Edit { device, id, delete }
            }
            38..=79 => self.next_window(),
            80..=84 => {
                // Off for a while now and then, on most of the time.
                let on = !lock(&self.network).faults_on;
                if on || below(&mut self.random, 3) == 0 {
                    Op::Faults { on }
                } else {
                    self.next_window()
                }
            }
            85..=88 => Op::Partition {
                device: self.pick_device(),
                steps: 3 + below(&mut self.random, 8),
                offline: Duration::from_secs(3_600 * (12 + below(&mut self.random, 60))),
            },
            89..=92 => Op::Elapse {
                by: Duration::from_secs(60 * (1 + below(&mut self.random, 2_880))),
            },
            _ => Op::Resolve {
                device: self.pick_device(),
            },
        }
    }

    fn next_window(&mut self) -> Op {
        let n = self.devices.len();
        let count = match below(&mut self.random, 100) {
            0..=54 => 1,
            55..=79 => 2.min(n),
            _ => n,
        };
        let mut runners: Vec<usize> = (0..n).collect();
        // A seeded partial shuffle picks `count` distinct devices.
        for i in 0..count {
            let j = i + below(&mut self.random, (n - i) as u64) as usize;
            runners.swap(i, j);
        }
        runners.truncate(count);
        runners.sort_unstable();
        let mut actions = Vec::new();
        for _ in 0..below(&mut self.random, 4) {
            // Mostly edits on a syncing device: the edits an engine did not see.
            let device = if below(&mut self.random, 10) < 7 {
                runners[below(&mut self.random, runners.len() as u64) as usize]
            } else {
                self.pick_device()
            };
            let id = self.pick_id();
            let delete = below(&mut self.random, 5) == 0;
            let at = millis(&mut self.random, 200);
            actions.push((at, Action::Edit { device, id, delete }));
        }
        if below(&mut self.random, 100) < 40 {
            let device = runners[below(&mut self.random, runners.len() as u64) as usize];
            let action = match below(&mut self.random, 100) {
                0..=29 => Action::Cancel { device },
                30..=59 => Action::Crash { device },
                60..=74 => Action::RestartServer {
                    down: millis(&mut self.random, 1_500),
                },
                75..=81 => Action::Partition {
                    device,
                    steps: 1 + below(&mut self.random, 4),
                },
                82..=87 => Action::Shutdown { device },
                88..=93 => Action::Trigger { device },
                _ => Action::RunAgain { device },
            };
            // Most cycles take a few round trips of a few milliseconds each: the disruption lands
            // early enough to hit one in flight more often than not.
            actions.push((millis(&mut self.random, 250), action));
        }
        actions.sort_by_key(|(at, _)| *at);
        Op::Window { runners, actions }
    }

    async fn step(&mut self) -> Result<(), SimError> {
        self.step += 1;
        let due: Vec<usize> = self
            .repairs
            .iter()
            .filter(|(_, at)| **at <= self.step)
            .map(|(d, _)| *d)
            .collect();
        for d in due {
            self.repairs.remove(&d);
            lock(&self.network).repair(d);
            self.note(format!("#{} repair d{d}", self.step));
        }
        let op = self.next_op();
        self.note(format!("#{} {op}", self.step));
        self.execute(op).await?;
        self.check_step()
    }

    async fn execute(&mut self, op: Op) -> Result<(), SimError> {
        match op {
            Op::Edit { device, id, delete } => {
                self.local_edit(device, &id, delete)?;
            }
            Op::Window { runners, actions } => self.window(&runners, &actions).await?,
            Op::Faults { on } => self.set_faults(on),
            Op::Partition {
                device,
                steps,
                offline,
            } => {
                self.partition(device, steps);
                tokio::time::sleep(offline).await;
            }
            Op::Elapse { by } => tokio::time::sleep(by).await,
            Op::Resolve { device } => {
                self.resolve_parked(device, false).await?;
            }
        }
        Ok(())
    }

    fn partition(&mut self, device: usize, steps: u64) {
        lock(&self.network).partition(device);
        self.repairs.insert(device, self.step + steps);
        self.counts.partitions += 1;
    }

    /// Some devices sync while the window's actions happen at their instants.
    async fn window(
        &mut self,
        runners: &[usize],
        actions: &[(Duration, Action)],
    ) -> Result<(), SimError> {
        let mut running: Vec<(usize, JoinHandle<fero::Result<RunReport>>)> = Vec::new();
        for &d in runners {
            let Some(live) = self.devices[d].live.as_ref() else {
                self.note(format!("  d{d} is down: no sync"));
                continue;
            };
            let sync = live.sync.clone();
            running.push((d, tokio::spawn(async move { sync.run().await })));
        }
        let start = tokio::time::Instant::now();
        let mut crashed = BTreeSet::new();
        for (at, action) in actions {
            tokio::time::sleep_until(start + *at).await;
            self.drain_all()?;
            match action {
                Action::Edit { device, id, delete } => {
                    self.local_edit(*device, id, *delete)?;
                }
                Action::Cancel { device } => {
                    if let Some(live) = &self.devices[*device].live {
                        live.sync.cancel();
                        self.counts.cancels += 1;
                        let over = running
                            .iter()
                            .all(|(d, handle)| d != device || handle.is_finished());
                        if over {
                            self.note(format!("  d{device}: cancel after the run ended"));
                        }
                    }
                }
                Action::Crash { device } => {
                    for handle in take_runs(&mut running, *device) {
                        handle.abort();
                        match handle.await {
                            Ok(result) => self.finish_run(*device, Ok(result))?,
                            Err(e) if e.is_panic() => self.finish_run(*device, Err(e))?,
                            Err(_) => self.note(format!("  d{device}: sync dropped in flight")),
                        }
                    }
                    if self.devices[*device].live.is_some() {
                        self.crash_device(*device)?;
                        crashed.insert(*device);
                    }
                }
                Action::Shutdown { device } => {
                    let Some(live) = self.devices[*device].live.as_ref() else {
                        continue;
                    };
                    let sync = live.sync.clone();
                    // Cancels the run in flight and waits for it to reach a safe point.
                    sync.dispose().await;
                    for handle in take_runs(&mut running, *device) {
                        let result = handle.await;
                        self.finish_run(*device, result)?;
                    }
                    self.stop_device(*device, "shut down")?;
                    crashed.insert(*device);
                }
                Action::Trigger { device } => {
                    if let Some(live) = self.devices[*device].live.as_mut() {
                        live.triggered = true;
                        if let Err(e) = live.sync.trigger(COLLECTION) {
                            self.note(format!("  d{device}: trigger refused: {e}"));
                        }
                    }
                }
                Action::RunAgain { device } => {
                    if let Some(live) = self.devices[*device].live.as_ref() {
                        let sync = live.sync.clone();
                        running.push((*device, tokio::spawn(async move { sync.run().await })));
                    }
                }
                Action::RestartServer { down } => {
                    lock(&self.network).restart_server(*down);
                    self.counts.server_restarts += 1;
                }
                Action::Partition { device, steps } => self.partition(*device, *steps),
            }
        }
        for (d, handle) in running {
            let result = handle.await;
            self.finish_run(d, result)?;
        }
        self.check_runs_ended(runners.iter().copied())?;
        for d in crashed {
            self.start_device(d)?;
            self.note(format!("  d{d} restarted"));
        }
        Ok(())
    }

    fn finish_run(
        &mut self,
        d: usize,
        result: Result<fero::Result<RunReport>, tokio::task::JoinError>,
    ) -> Result<(), SimError> {
        let result = match result {
            Ok(result) => result,
            Err(e) => {
                return Err(self.violation((
                    Invariant::Panicked,
                    format!("device {d}'s sync task ended abnormally: {e}"),
                )));
            }
        };
        self.record_run(d, &result);
        self.drain(d)
    }

    /// After the runs a step awaited: every sync they started has ended. A device whose trigger
    /// loop may be running a cycle nobody awaits is checked at quiescence instead.
    fn check_runs_ended(
        &mut self,
        devices: impl IntoIterator<Item = usize>,
    ) -> Result<(), SimError> {
        for d in devices {
            self.drain(d)?;
            if let Some(live) = self.devices[d].live.as_ref().filter(|l| !l.triggered) {
                live.open
                    .check_closed(d)
                    .map_err(|broke| self.violation(broke))?;
            }
        }
        Ok(())
    }

    fn record_run(&mut self, d: usize, result: &fero::Result<RunReport>) {
        match result {
            Ok(report) => {
                self.counts.runs_ok += 1;
                let t = report.totals();
                self.note(format!(
                    "  d{d}: ok, pulled {} pushed {} conflicts {}",
                    t.pulled, t.pushed, t.conflicts
                ));
            }
            Err(e) => {
                self.counts.runs_failed += 1;
                let mut text = e.to_string();
                if text.len() > 200 {
                    let cut = (0..=200).rev().find(|&i| text.is_char_boundary(i));
                    text.truncate(cut.unwrap_or(0));
                    text.push('…');
                }
                self.note(format!("  d{d}: {text}"));
            }
        }
    }

    /// One run of `d` to its end, for scripted use and quiescence.
    async fn sync_one(&mut self, d: usize) -> Result<fero::Result<RunReport>, SimError> {
        self.drain_all()?;
        let Some(live) = self.devices[d].live.as_ref() else {
            return Err(SimError::Config {
                message: format!("device {d} is crashed: restart it before syncing"),
            });
        };
        let sync = live.sync.clone();
        let result = sync.run().await;
        self.record_run(d, &result);
        self.check_runs_ended([d])?;
        Ok(result)
    }

    /// Resolves `d`'s parked conflicts as an app would; returns how many.
    async fn resolve_parked(&mut self, d: usize, quiescence: bool) -> Result<usize, SimError> {
        let Some(live) = self.devices[d].live.as_ref() else {
            return Ok(0);
        };
        let sync = live.sync.clone();
        let mut parked = match sync.parked_conflicts(COLLECTION).await {
            Ok(parked) => parked,
            Err(e) => {
                return Err(self.violation((
                    Invariant::SyncFailedWithoutFaults,
                    format!("device {d}: reading parked conflicts failed: {e}"),
                )));
            }
        };
        parked.sort_by(|a, b| a.id.cmp(&b.id));
        let mut resolved = 0;
        for conflict in parked {
            self.drain_all()?;
            let store = self.devices[d].store.clone();
            let current = store.get(&conflict.id).filter(|doc| doc.modified);
            let mut merged_tag = None;
            let resolution = match (below(&mut self.random, 3), current) {
                (0, _) | (_, None) => ManualResolution::KeepServer,
                (1, _) => ManualResolution::KeepLocal,
                (_, Some(_)) if conflict.server.is_null() => ManualResolution::KeepLocal,
                (_, Some(doc)) => {
                    let tag = self.model.new_tag(d);
                    let merged = SimDoc {
                        data: serde_json::json!({ "tag": tag, "by": d, "merged": true }),
                        deleted: false,
                        ..doc
                    };
                    merged_tag = Some(tag);
                    ManualResolution::Merged(serde_json::to_value(&merged).unwrap_or_default())
                }
            };
            let what = format!("{resolution:?}");
            let what = what.split('(').next().unwrap_or_default().to_owned();
            match sync
                .resolve_conflict(COLLECTION, &conflict.id, resolution)
                .await
            {
                Ok(outcome) => {
                    resolved += 1;
                    if let Some(tag) = merged_tag {
                        self.model.edit(d, &conflict.id, tag);
                    }
                    self.note(format!(
                        "  d{d} resolved {} with {what}: {outcome}",
                        conflict.id
                    ));
                }
                Err(e) if quiescence => {
                    return Err(self.violation((
                        Invariant::SyncFailedWithoutFaults,
                        format!("device {d}: resolving {} failed: {e}", conflict.id),
                    )));
                }
                Err(e) => self.note(format!("  d{d} resolving {} failed: {e}", conflict.id)),
            }
        }
        self.drain(d)?;
        Ok(resolved)
    }

    /// The invariants checked after every step.
    fn check_step(&mut self) -> Result<(), SimError> {
        self.drain_all()?;
        let (log, mismatch) = {
            let mut network = lock(&self.network);
            (
                std::mem::take(&mut network.log),
                network.replay_mismatches.first().cloned(),
            )
        };
        self.trace.extend(log);
        if let Some(mismatch) = mismatch {
            return Err(self.violation((Invariant::ReplayAnsweredDifferently, mismatch)));
        }
        for d in 0..self.devices.len() {
            let store = self.devices[d].store.clone();
            let mut highest = self.devices[d].highest_checkpoint;
            model::check_checkpoint(d, &store, &self.server, &mut highest)
                .map_err(|broke| self.violation(broke))?;
            self.devices[d].highest_checkpoint = highest;
        }
        let acks = lock(&self.network).acks.clone();
        model::check_acks(&acks, &self.server).map_err(|broke| self.violation(broke))
    }

    async fn quiesce(&mut self) -> Result<(), SimError> {
        {
            let mut network = lock(&self.network);
            network.faults_on = false;
            network.repair_all();
            network.server_up();
        }
        self.repairs.clear();
        self.note(format!(
            "#{} quiescence: faults off, partitions repaired, server up",
            self.step + 1
        ));
        for d in 0..self.devices.len() {
            if self.devices[d].live.is_none() {
                self.start_device(d)?;
            }
        }
        // Cycles started by triggers finish (time is paused: an hour costs nothing), then
        // every sync any device started must have reported its end.
        tokio::time::sleep(SETTLE).await;
        for d in 0..self.devices.len() {
            if let Some(live) = self.devices[d].live.as_mut() {
                live.triggered = false;
            }
        }
        self.check_runs_ended(0..self.devices.len())?;
        for round in 1..=MAX_QUIET_ROUNDS {
            self.step += 1;
            self.note(format!("#{} quiescence round {round}", self.step));
            let mut quiet = true;
            for d in 0..self.devices.len() {
                match self.sync_one(d).await? {
                    Ok(report) => {
                        let t = report.totals();
                        if t.pulled + t.pushed + t.conflicts > 0 {
                            quiet = false;
                        }
                    }
                    Err(e) => {
                        return Err(self.violation((
                            Invariant::SyncFailedWithoutFaults,
                            format!("device {d} failed to sync with faults off: {e}"),
                        )));
                    }
                }
            }
            for d in 0..self.devices.len() {
                if self.resolve_parked(d, true).await? > 0 {
                    quiet = false;
                }
            }
            self.check_step()?;
            if quiet {
                for d in 0..self.devices.len() {
                    let store = self.devices[d].store.clone();
                    model::check_converged(d, &store, &self.server)
                        .map_err(|broke| self.violation(broke))?;
                }
                return self
                    .model
                    .check_no_edit_lost(&self.server)
                    .map_err(|broke| self.violation(broke));
            }
        }
        Err(self.violation((
            Invariant::NotConverged,
            format!("the devices still changed after {MAX_QUIET_ROUNDS} rounds of syncing"),
        )))
    }
}
