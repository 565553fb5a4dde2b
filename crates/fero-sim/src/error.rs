//! Errors: [`SimError`] for a simulation, [`Violation`] for a broken invariant, and
//! [`StoreError`] for the simulated device store.

use std::fmt;

use fero::HandlerError;

/// A guarantee the simulation checks.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Invariant {
    /// A device's saved checkpoint moved backwards.
    CheckpointWentBackwards,
    /// A device's saved checkpoint covers a server row the device's durable store does not hold.
    CheckpointPastData,
    /// A write the server acknowledged is neither current nor overwritten by a writer that had
    /// seen it.
    AcknowledgedWriteLost,
    /// A local edit never reached the server and no conflict event said it was dropped.
    LocalEditLostSilently,
    /// A sync started without ending (completed, failed or cancelled), or an event was lost.
    EventStreamGap,
    /// After faults stopped, the devices did not converge to the server's state.
    NotConverged,
    /// A sync failed although no fault was injected.
    SyncFailedWithoutFaults,
    /// A change delivered twice got two different answers.
    ReplayAnsweredDifferently,
    /// The engine or a handler panicked.
    Panicked,
}

impl fmt::Display for Invariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Invariant::CheckpointWentBackwards => "checkpoint never goes backwards",
            Invariant::CheckpointPastData => "checkpoint never passes durable data",
            Invariant::AcknowledgedWriteLost => "acknowledged writes are kept or superseded",
            Invariant::LocalEditLostSilently => "a dropped local edit produces a conflict event",
            Invariant::EventStreamGap => "every started sync ends, no event lost",
            Invariant::NotConverged => "devices converge to the server",
            Invariant::SyncFailedWithoutFaults => "sync succeeds without faults",
            Invariant::ReplayAnsweredDifferently => "a replayed change gets the original answer",
            Invariant::Panicked => "no panic",
        })
    }
}

/// A broken invariant: where, what, and how to replay it.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Violation {
    /// The seed.
    pub seed: u64,
    /// The step it was found at (0 before the first step; the quiescence phase counts on).
    pub step: u64,
    /// Which guarantee broke.
    pub invariant: Invariant,
    /// What exactly was seen.
    pub detail: String,
    /// The command that replays this seed with its step trace.
    pub replay: String,
    /// The step trace up to the violation.
    pub trace: Vec<String>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seed {} step {}: invariant \"{}\" violated: {}; replay with `{}`",
            self.seed, self.step, self.invariant, self.detail, self.replay
        )
    }
}

/// A simulation could not run, or found a violation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// The builder's settings are unusable.
    #[error("invalid simulation setup: {message}")]
    Config {
        /// What is wrong, and what to change.
        message: String,
    },
    /// The tokio runtime could not be built.
    #[error("could not start the simulation's tokio runtime: {source}")]
    Runtime {
        /// The runtime's error.
        #[source]
        source: std::io::Error,
    },
    /// A device's `FeroSync` could not be built.
    #[error("seed {seed}: device {device}'s FeroSync could not be built: {source}")]
    DeviceBuild {
        /// The seed.
        seed: u64,
        /// The device's index.
        device: usize,
        /// The builder's error.
        #[source]
        source: fero::BuildError,
    },
    /// A device index out of range.
    #[error("there is no device {device}: the simulation has {devices} device(s)")]
    NoSuchDevice {
        /// The index asked for.
        device: usize,
        /// Devices in the simulation.
        devices: usize,
    },
    /// An invariant was violated.
    #[error("{violation}")]
    Violation {
        /// The violation, with its trace.
        violation: Box<Violation>,
    },
}

impl SimError {
    /// The violation, when this error is one.
    pub fn violation(&self) -> Option<&Violation> {
        match self {
            SimError::Violation { violation } => Some(violation),
            _ => None,
        }
    }
}

/// The simulated device store refused a call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The handle belongs to a crashed incarnation of its device.
    #[error(
        "device {device} crashed: this store handle belongs to incarnation {handle} and the \
         store is at {current}; use the restarted device's handles"
    )]
    Crashed {
        /// The device.
        device: String,
        /// The handle's incarnation.
        handle: u64,
        /// The store's incarnation.
        current: u64,
    },
    /// A push answer that does not match its request one to one.
    #[error(
        "device {device}: the server answered {answered} result(s) for {sent} pushed change(s), \
         or in another order; nothing was recorded"
    )]
    PushAnswerMismatch {
        /// The device.
        device: String,
        /// Changes sent.
        sent: usize,
        /// Results received.
        answered: usize,
    },
}

impl From<StoreError> for HandlerError {
    fn from(error: StoreError) -> Self {
        HandlerError::permanent(error.to_string()).with_source(error)
    }
}
