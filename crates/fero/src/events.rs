//! Sync events: typed, per feature and per page (never per item), on a broadcast channel.
//!
//! # Lagging
//! Sync never waits for a subscriber. Each subscriber has a buffer of
//! [`FeroSyncBuilder::event_capacity`](crate::FeroSyncBuilder::event_capacity) events; one that
//! falls further behind loses the oldest ones and receives `Err(Lagged { missed })` saying how
//! many, then continues with the oldest event still buffered. A UI that must not miss the final
//! state reads [`FeroSync::status_stream`](crate::FeroSync::status_stream) as well, which always
//! holds the latest status.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use serde::Serialize;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use crate::checkpoint::SyncCheckpoint;
use crate::conflict::{ConflictOutcome, ConflictPhase, ConflictResolutionStrategy};
use crate::error::{Error, Operation};
use crate::item::{FeatureKey, Version};
use crate::page::SyncKind;
use crate::resync::ResyncReason;

/// A conflict and its outcome, with both versions.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct ConflictEvent {
    /// The feature.
    pub feature: FeatureKey,
    /// The item's id.
    pub id: String,
    /// Where it was found.
    pub phase: ConflictPhase,
    /// The strategy that decided it.
    pub strategy: ConflictResolutionStrategy,
    /// What became of it.
    pub outcome: ConflictOutcome,
    /// The local copy's version.
    pub local_version: Version,
    /// The server's version (`None` when the server has no such item).
    pub server_version: Option<Version>,
    /// The local item, serialised.
    pub local: serde_json::Value,
    /// The server's state, serialised (`null` when it has none).
    pub server: serde_json::Value,
    /// The server's state is a tombstone.
    pub server_deleted: bool,
}

/// Which half of a background cycle a progress event reports.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncDirection {
    /// Server changes coming in.
    Pull,
    /// Local changes going out.
    Push,
}

/// Something that happened during sync. Every variant names its feature.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum SyncEvent {
    /// The feature has not completed its initial sync; it will run.
    InitialSyncRequired {
        /// The feature.
        feature: FeatureKey,
    },
    /// Initial sync started (`resumed_from` is the saved checkpoint when it resumes).
    InitialSyncStarted {
        /// The feature.
        feature: FeatureKey,
        /// The checkpoint it resumes from.
        resumed_from: Option<SyncCheckpoint>,
    },
    /// A page of initial sync was applied and its checkpoint saved.
    InitialSyncProgress {
        /// The feature.
        feature: FeatureKey,
        /// Pages applied in this run.
        pages: u64,
        /// Items applied in this run.
        items: u64,
        /// The saved checkpoint.
        checkpoint: SyncCheckpoint,
    },
    /// Initial sync finished.
    InitialSyncCompleted {
        /// The feature.
        feature: FeatureKey,
        /// Pages applied in this run.
        pages: u64,
        /// Items applied in this run.
        items: u64,
        /// Time taken (tokio's clock).
        duration: Duration,
    },
    /// Initial sync failed.
    InitialSyncFailed {
        /// The feature.
        feature: FeatureKey,
        /// Why.
        error: Arc<Error>,
    },
    /// A background cycle started.
    BackgroundSyncStarted {
        /// The feature.
        feature: FeatureKey,
    },
    /// A page of a background cycle was applied (pull) or pushed (push).
    BackgroundSyncProgress {
        /// The feature.
        feature: FeatureKey,
        /// Pull or push.
        direction: SyncDirection,
        /// Pages done in this direction in this cycle.
        pages: u64,
        /// Items done in this direction in this cycle.
        items: u64,
    },
    /// A background cycle finished.
    BackgroundSyncCompleted {
        /// The feature.
        feature: FeatureKey,
        /// Server changes applied.
        pulled: u64,
        /// Local changes the server accepted.
        pushed: u64,
        /// Conflicts met.
        conflicts: u64,
        /// Time taken (tokio's clock).
        duration: Duration,
    },
    /// A background cycle failed.
    BackgroundSyncFailed {
        /// The feature.
        feature: FeatureKey,
        /// Why.
        error: Arc<Error>,
    },
    /// A feature did not run because a dependency did not complete.
    SyncSkipped {
        /// The skipped feature.
        feature: FeatureKey,
        /// Initial or background.
        kind: SyncKind,
        /// The dependency that did not complete.
        dependency: FeatureKey,
    },
    /// A transient failure; the operation runs again after `delay`.
    Retrying {
        /// The feature.
        feature: FeatureKey,
        /// The failed call.
        operation: Operation,
        /// Failed attempts so far.
        attempt: u32,
        /// The wait before the next attempt.
        delay: Duration,
        /// The failure's message.
        error: String,
    },
    /// A conflict was resolved (or parked).
    ConflictResolved(ConflictEvent),
    /// A local change the server rejected for good was quarantined.
    ChangeQuarantined {
        /// The feature.
        feature: FeatureKey,
        /// The item's id.
        id: String,
        /// The server's reason.
        reason: String,
    },
    /// The feature's work was cancelled at a safe point.
    Cancelled {
        /// The feature.
        feature: FeatureKey,
        /// Initial or background.
        kind: SyncKind,
    },
    /// The server asked for a resync: the feature is pulled again from scratch (see
    /// [`crate::resync`]).
    ResyncStarted {
        /// The feature.
        feature: FeatureKey,
        /// Why the server asked.
        reason: ResyncReason,
    },
    /// A resync's pull from scratch ended and the rows it did not bring back were settled.
    ResyncCompleted {
        /// The feature.
        feature: FeatureKey,
        /// Why the server asked.
        reason: ResyncReason,
        /// Synced rows removed (the server deleted them and purged the tombstones).
        removed: u64,
        /// Rows the pull did not bring back that were kept.
        kept: u64,
        /// Rows queued to be pushed back to the server.
        repushed: u64,
    },
    /// An app's own event, emitted with [`FeroSync::emit_sync_event`](crate::FeroSync::emit_sync_event).
    Custom {
        /// The feature it concerns.
        feature: FeatureKey,
        /// The event's name.
        name: String,
        /// Free-form details.
        detail: serde_json::Value,
    },
}

impl SyncEvent {
    /// The feature the event concerns.
    pub fn feature(&self) -> &FeatureKey {
        match self {
            SyncEvent::InitialSyncRequired { feature }
            | SyncEvent::InitialSyncStarted { feature, .. }
            | SyncEvent::InitialSyncProgress { feature, .. }
            | SyncEvent::InitialSyncCompleted { feature, .. }
            | SyncEvent::InitialSyncFailed { feature, .. }
            | SyncEvent::BackgroundSyncStarted { feature }
            | SyncEvent::BackgroundSyncProgress { feature, .. }
            | SyncEvent::BackgroundSyncCompleted { feature, .. }
            | SyncEvent::BackgroundSyncFailed { feature, .. }
            | SyncEvent::SyncSkipped { feature, .. }
            | SyncEvent::Retrying { feature, .. }
            | SyncEvent::ChangeQuarantined { feature, .. }
            | SyncEvent::Cancelled { feature, .. }
            | SyncEvent::ResyncStarted { feature, .. }
            | SyncEvent::ResyncCompleted { feature, .. }
            | SyncEvent::Custom { feature, .. } => feature,
            SyncEvent::ConflictResolved(c) => &c.feature,
        }
    }
}

/// A subscriber fell behind and lost `missed` events (see the module docs on lagging).
#[derive(Copy, Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the event subscriber lagged and missed {missed} event(s)")]
pub struct Lagged {
    /// Events lost.
    pub missed: u64,
}

/// The stream returned by [`FeroSync::event_stream`](crate::FeroSync::event_stream).
///
/// Ends after [`FeroSync::dispose`](crate::FeroSync::dispose).
pub struct SyncEventStream {
    inner: BroadcastStream<SyncEvent>,
}

impl std::fmt::Debug for SyncEventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncEventStream").finish_non_exhaustive()
    }
}

impl SyncEventStream {
    pub(crate) fn new(receiver: tokio::sync::broadcast::Receiver<SyncEvent>) -> Self {
        SyncEventStream {
            inner: BroadcastStream::new(receiver),
        }
    }
}

impl Stream for SyncEventStream {
    type Item = Result<SyncEvent, Lagged>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.inner).poll_next(cx).map(|next| {
            next.map(|item| {
                item.map_err(|BroadcastStreamRecvError::Lagged(missed)| Lagged { missed })
            })
        })
    }
}
