//! Per-feature status for UIs: the latest value, held in a `watch` channel.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::error::Error;
use crate::item::{FeatureKey, Timestamp};
use crate::metadata::InitialSyncState;
use crate::page::SyncKind;

/// What a feature is doing now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum SyncPhase {
    /// Registered, not run yet in this process.
    #[default]
    Idle,
    /// Waiting for its dependencies or a free slot in the current run.
    Pending,
    /// Running.
    Running {
        /// Initial or background.
        kind: SyncKind,
    },
    /// The last run completed.
    Completed,
    /// The last run failed (see [`FeatureStatus::last_error`]).
    Failed,
    /// The last run skipped it because a dependency did not complete.
    Skipped {
        /// The dependency.
        dependency: FeatureKey,
    },
    /// The last run was cancelled.
    Cancelled,
}

/// A feature's status, the thing a UI renders.
///
/// In memory only: counters restart with the process; the persisted state lives in the
/// [`SyncMetadataRepo`](crate::SyncMetadataRepo).
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct FeatureStatus {
    /// The feature.
    pub feature: FeatureKey,
    /// What it is doing.
    pub phase: SyncPhase,
    /// Its initial sync state (from the metadata repo, kept current).
    pub initial: InitialSyncState,
    /// Pages applied or pushed in the current (or last) run.
    pub pages: u64,
    /// Items applied or pushed in the current (or last) run.
    pub items: u64,
    /// The last error, until the next success.
    pub last_error: Option<Arc<Error>>,
    /// Conflicts parked for the app.
    pub parked_conflicts: usize,
    /// Changes quarantined after a permanent rejection.
    pub quarantined: usize,
    /// The last successful run (engine clock).
    pub last_success: Option<Timestamp>,
}

/// Every feature's status, by key.
pub type StatusMap = BTreeMap<FeatureKey, FeatureStatus>;
