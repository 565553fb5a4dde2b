//! The handler traits users implement: fero calls them and never touches the app's data itself.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;

use crate::checkpoint::SyncCheckpoint;
use crate::conflict::Conflict;
use crate::gate::PageGate;
use crate::item::FeatureKey;
use crate::item::{LocalItem, ServerItem, SyncPayload};
use crate::page::{ApplyContext, ApplyResult, PushResult, RemoteChanges, SyncBatchResult};
use crate::resync::{ResyncOutcome, ResyncReason};

/// Whether retrying an operation can help.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// A passing failure (timeout, connection lost, 429, 5xx): retried with backoff.
    Transient,
    /// A failure retrying cannot fix (validation, permission, a bug): not retried.
    Permanent,
}

/// The error a handler returns: what failed, and whether a retry can help.
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use fero::HandlerError;
/// let err = HandlerError::transient("server answered 503").with_retry_after(Duration::from_secs(2));
/// assert!(err.is_transient());
/// assert_eq!(err.retry_after(), Some(Duration::from_secs(2)));
/// ```
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct HandlerError {
    kind: ErrorKind,
    message: String,
    retry_after: Option<Duration>,
    resync: Option<ResyncReason>,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl HandlerError {
    /// A transient failure: the engine retries it with the configured backoff.
    pub fn transient(message: impl Into<String>) -> Self {
        HandlerError {
            kind: ErrorKind::Transient,
            message: message.into(),
            retry_after: None,
            resync: None,
            source: None,
        }
    }

    /// A permanent failure: the engine does not retry it.
    pub fn permanent(message: impl Into<String>) -> Self {
        HandlerError {
            kind: ErrorKind::Permanent,
            message: message.into(),
            retry_after: None,
            resync: None,
            source: None,
        }
    }

    /// The server cannot continue from the checkpoint and asks for a resync (HTTP 410
    /// `resync_required`): a permanent error that, returned by a fetch, makes the engine pull the
    /// feature again from scratch (see [`crate::resync`]).
    ///
    /// # Examples
    /// ```
    /// use fero::{HandlerError, ResyncReason};
    /// let err = HandlerError::resync_required(ResyncReason::TombstonesPurged, "behind the horizon");
    /// assert_eq!(err.resync_reason(), Some(ResyncReason::TombstonesPurged));
    /// assert!(!err.is_transient());
    /// ```
    pub fn resync_required(reason: ResyncReason, message: impl Into<String>) -> Self {
        let mut error = HandlerError::permanent(message);
        error.resync = Some(reason);
        error
    }

    /// With [`resync_required`](Self::resync_required): why the server asks for a resync.
    pub fn resync_reason(&self) -> Option<ResyncReason> {
        self.resync
    }

    /// Attaches the underlying error.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// Asks the engine to wait at least `delay` before the next attempt (HTTP `Retry-After`).
    pub fn with_retry_after(mut self, delay: Duration) -> Self {
        self.retry_after = Some(delay);
        self
    }

    /// Transient or permanent.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// `true` for a transient failure.
    pub fn is_transient(&self) -> bool {
        self.kind == ErrorKind::Transient
    }

    /// The delay the remote asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// The message, without the source chain.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// The result type of handler calls.
pub type HandlerResult<T> = std::result::Result<T, HandlerError>;

/// Fetches a feature's data on first install and saves it locally, page by page.
///
/// # Contract
/// - `fetch_remote_data` returns the page after `checkpoint` (`None`: from the start), at most
///   `batch_size` items, in the server's order. It must not change local state.
/// - `save_to_local` writes a page. It is all or nothing: on `Err` nothing of the page may stay
///   written (the page is fetched again). Writing the same page twice must be harmless (after a
///   crash between apply and checkpoint, the page comes again). See [`ApplyContext`] for saving
///   the checkpoint in the same transaction.
/// - A [`HandlerError::transient`] error is retried with the feature's backoff (the wait is
///   cancellable, the attempts are bounded as for every handler call); a permanent one, or the
///   last attempt, fails the feature's run with its checkpoint unchanged. This holds for
///   `save_to_local` too: after a transient failure the engine fetches the page again from the
///   same checkpoint and calls `save_to_local` with it, so the page it retries is always a
///   fresh copy (the engine keeps none).
#[async_trait]
pub trait InitialSyncHandler: Send + Sync + 'static {
    /// The server's item type.
    type Item: ServerItem;

    /// Fetches the page after `checkpoint`.
    ///
    /// # Errors
    /// Transient or permanent [`HandlerError`]s as described above.
    async fn fetch_remote_data(
        &self,
        checkpoint: Option<&SyncCheckpoint>,
        batch_size: usize,
    ) -> HandlerResult<SyncBatchResult<Self::Item>>;

    /// Fetches the page after `checkpoint` while the page before it is being applied; `gate`
    /// opens when that apply ends.
    ///
    /// The default calls [`fetch_remote_data`](Self::fetch_remote_data) at once. A transport
    /// can do better: send the request at once and read the answer after
    /// [`PageGate::ready`], so the server's work overlaps the apply while a crash loses at most
    /// one page that was read (see [`PageGate`]).
    ///
    /// # Errors
    /// As [`fetch_remote_data`](Self::fetch_remote_data).
    async fn prefetch_remote_data(
        &self,
        checkpoint: Option<&SyncCheckpoint>,
        batch_size: usize,
        gate: &PageGate,
    ) -> HandlerResult<SyncBatchResult<Self::Item>> {
        let _ = gate;
        self.fetch_remote_data(checkpoint, batch_size).await
    }

    /// Writes one page locally.
    ///
    /// # Errors
    /// Transient or permanent [`HandlerError`]s; nothing of the page may stay written. A
    /// transient error is retried with backoff (the page is fetched again from the same
    /// checkpoint first); a permanent one ends the run and the checkpoint is not saved.
    async fn save_to_local(
        &self,
        items: Vec<SyncPayload<Self::Item>>,
        context: &ApplyContext,
    ) -> HandlerResult<ApplyResult>;

    /// The server asked for a resync (see [`crate::resync`]): the engine is about to clear the
    /// feature's checkpoint and pull it again from scratch. A store marks its synced rows of
    /// the feature unseen here, so [`end_resync`](Self::end_resync) can tell which rows the pull
    /// did not bring back. The default does nothing.
    ///
    /// # Errors
    /// A [`HandlerError`] fails the feature's run; the checkpoint is then left as it was.
    async fn begin_resync(&self, feature: &FeatureKey, reason: ResyncReason) -> HandlerResult<()> {
        let _ = (feature, reason);
        Ok(())
    }

    /// The pull from scratch reached the end of the feed: settle the rows it did not bring back
    /// (remove the synced ones for [`ResyncReason::TombstonesPurged`]; keep them, and queue for a
    /// push those the server lacks or holds at an older version, otherwise). Pending local edits
    /// are always kept. The default does nothing and reports nothing.
    ///
    /// # Errors
    /// A [`HandlerError`] fails the feature's run.
    async fn end_resync(
        &self,
        feature: &FeatureKey,
        reason: ResyncReason,
    ) -> HandlerResult<ResyncOutcome> {
        let _ = (feature, reason);
        Ok(ResyncOutcome::default())
    }

    /// A resync of the feature that began and did not end (the app stopped, or a page failed
    /// for good): the engine then continues it from the saved checkpoint, in resync mode, and
    /// ends it. A store that records its resyncs durably answers the reason here; the default
    /// answers `None`.
    ///
    /// # Errors
    /// A [`HandlerError`] fails the feature's run.
    async fn resync_in_progress(
        &self,
        feature: &FeatureKey,
    ) -> HandlerResult<Option<ResyncReason>> {
        let _ = feature;
        Ok(None)
    }
}

/// Pulls server changes, applies them, and pushes local edits, cycle after cycle.
///
/// # Contract
/// - `get_locally_modified` lists every item with a pending local edit (including local
///   deletions), oldest edit first. It is read once per pull and once per push round.
/// - `fetch_remote_changes` returns the page after `checkpoint`, as for
///   [`InitialSyncHandler::fetch_remote_data`].
/// - `apply_remote_changes` writes a page with conflicts already resolved; all or nothing, and
///   harmless to repeat. See [`RemoteChanges`] for what to do with local edits.
/// - A [`HandlerError::transient`] error of any call is retried with the feature's backoff
///   (cancellable, attempts bounded); a permanent one, or the last attempt, fails the feature's
///   cycle. For `apply_remote_changes` the retry fetches the page again from the unchanged
///   checkpoint, lists the local edits again and resolves its conflicts again.
/// - `push_local_changes` sends local edits and records the server's acceptances locally before it
///   returns (see [`PushResult`]). Items the server rejects as conflicts come back with the
///   server's state and are resolved by the feature's strategy.
/// - `merge_conflict` is called for [`ConflictResolutionStrategy::Custom`]: return the merged
///   item. `conflict_base` supplies the common base for a three-way merge where the store keeps it.
///
/// [`ConflictResolutionStrategy::Custom`]: crate::ConflictResolutionStrategy::Custom
#[async_trait]
pub trait BackgroundSyncHandler: Send + Sync + 'static {
    /// The local item type.
    type Local: LocalItem;
    /// The server's item type.
    type Server: ServerItem;

    /// Lists the items with pending local edits, oldest first.
    ///
    /// # Errors
    /// Transient or permanent [`HandlerError`]s.
    async fn get_locally_modified(&self) -> HandlerResult<Vec<Self::Local>>;

    /// Fetches the page of server changes after `checkpoint`.
    ///
    /// # Errors
    /// Transient or permanent [`HandlerError`]s.
    async fn fetch_remote_changes(
        &self,
        checkpoint: Option<&SyncCheckpoint>,
        batch_size: usize,
    ) -> HandlerResult<SyncBatchResult<Self::Server>>;

    /// Fetches the page after `checkpoint` while the page before it is being applied; `gate`
    /// opens when that apply ends. The default calls
    /// [`fetch_remote_changes`](Self::fetch_remote_changes) at once; see
    /// [`InitialSyncHandler::prefetch_remote_data`] for what a transport can do instead.
    ///
    /// # Errors
    /// As [`fetch_remote_changes`](Self::fetch_remote_changes).
    async fn prefetch_remote_changes(
        &self,
        checkpoint: Option<&SyncCheckpoint>,
        batch_size: usize,
        gate: &PageGate,
    ) -> HandlerResult<SyncBatchResult<Self::Server>> {
        let _ = gate;
        self.fetch_remote_changes(checkpoint, batch_size).await
    }

    /// Writes a page of server changes, conflicts resolved.
    ///
    /// # Errors
    /// Transient or permanent [`HandlerError`]s; nothing of the page may stay written. A
    /// transient error is retried with backoff (the page fetched again from the same
    /// checkpoint); a permanent one ends the cycle and the checkpoint is not saved.
    async fn apply_remote_changes(
        &self,
        changes: RemoteChanges<Self::Local, Self::Server>,
        context: &ApplyContext,
    ) -> HandlerResult<ApplyResult>;

    /// Pushes local edits and records the accepted ones locally.
    ///
    /// `items` is borrowed: the engine keeps the page for a retry and for resolving the
    /// conflicts the server reports, so a store that needs only ids copies only those.
    ///
    /// # Errors
    /// A transient error retries the whole page; a permanent one fails the feature's push.
    async fn push_local_changes(
        &self,
        items: &[Self::Local],
    ) -> HandlerResult<PushResult<Self::Server>>;

    /// Merges a conflict for [`ConflictResolutionStrategy::Custom`](crate::ConflictResolutionStrategy::Custom).
    ///
    /// # Errors
    /// The default implementation returns a permanent error: the conflict is then parked for
    /// manual resolution, with an event, and nothing is lost.
    async fn merge_conflict(
        &self,
        conflict: &Conflict<Self::Local, Self::Server>,
    ) -> HandlerResult<Self::Local> {
        Err(HandlerError::permanent(format!(
            "no merge for item {:?} of feature {}: implement BackgroundSyncHandler::merge_conflict \
             to use ConflictResolutionStrategy::Custom",
            conflict.local.id(),
            conflict.feature
        )))
    }

    /// The server state a local edit was based on, for a three-way merge.
    ///
    /// # Errors
    /// Transient or permanent [`HandlerError`]s. The default knows no base and returns `Ok(None)`.
    async fn conflict_base(&self, local: &Self::Local) -> HandlerResult<Option<Self::Server>> {
        let _ = local;
        Ok(None)
    }

    /// Drops the pending local edit of `id` (the app discarded a quarantined change).
    ///
    /// # Errors
    /// The default implementation returns a permanent error saying it is not supported.
    async fn discard_local_change(&self, id: &str) -> HandlerResult<()> {
        Err(HandlerError::permanent(format!(
            "cannot discard the local change of {id:?}: implement \
             BackgroundSyncHandler::discard_local_change"
        )))
    }

    /// The server asked for a resync (see [`crate::resync`]): the engine is about to clear the
    /// feature's checkpoint and pull it again from scratch. A store marks its synced rows of
    /// the feature unseen here, so [`end_resync`](Self::end_resync) can tell which rows the pull
    /// did not bring back. The default does nothing.
    ///
    /// # Errors
    /// A [`HandlerError`] fails the feature's run; the checkpoint is then left as it was.
    async fn begin_resync(&self, feature: &FeatureKey, reason: ResyncReason) -> HandlerResult<()> {
        let _ = (feature, reason);
        Ok(())
    }

    /// The pull from scratch reached the end of the feed: settle the rows it did not bring back
    /// (remove the synced ones for [`ResyncReason::TombstonesPurged`]; keep them, and queue for a
    /// push those the server lacks or holds at an older version, otherwise). Pending local edits
    /// are always kept. The default does nothing and reports nothing.
    ///
    /// # Errors
    /// A [`HandlerError`] fails the feature's run.
    async fn end_resync(
        &self,
        feature: &FeatureKey,
        reason: ResyncReason,
    ) -> HandlerResult<ResyncOutcome> {
        let _ = (feature, reason);
        Ok(ResyncOutcome::default())
    }

    /// A resync of the feature that began and did not end (the app stopped, or a page failed
    /// for good): the engine then continues it from the saved checkpoint, in resync mode, and
    /// ends it. A store that records its resyncs durably answers the reason here; the default
    /// answers `None`.
    ///
    /// # Errors
    /// A [`HandlerError`] fails the feature's run.
    async fn resync_in_progress(
        &self,
        feature: &FeatureKey,
    ) -> HandlerResult<Option<ResyncReason>> {
        let _ = feature;
        Ok(None)
    }
}

/// Compile-time check that both traits can be stored as trait objects.
#[allow(dead_code)]
mod object_safety {
    use super::*;
    use crate::item::{SyncId, Version};
    use serde::{Deserialize, Serialize};

    #[derive(Clone, Debug, Serialize, Deserialize)]
    struct Probe;

    impl LocalItem for Probe {
        fn id(&self) -> &str {
            ""
        }
        fn version(&self) -> Version {
            Version(0)
        }
        fn locally_modified(&self) -> bool {
            false
        }
        fn base_version(&self) -> Option<Version> {
            None
        }
    }

    impl ServerItem for Probe {
        fn id(&self) -> &str {
            ""
        }
        fn sync_id(&self) -> SyncId {
            SyncId(0)
        }
        fn version(&self) -> Version {
            Version(0)
        }
    }

    fn initial(_: &dyn InitialSyncHandler<Item = Probe>) {}
    fn background(_: &dyn BackgroundSyncHandler<Local = Probe, Server = Probe>) {}
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::Transient => "transient",
            ErrorKind::Permanent => "permanent",
        })
    }
}
