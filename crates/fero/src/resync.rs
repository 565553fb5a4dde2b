//! Resync: pulling a feature again from scratch when the server cannot continue from its
//! checkpoint.
//!
//! A server answers "resync required" (HTTP 410 `resync_required` in fero's protocol) when a
//! pull's position is behind its tombstone purge horizon (deletions may have been missed) or
//! ahead of its feed (it was restored from an older backup). A handler reports it with
//! [`HandlerError::resync_required`](crate::HandlerError::resync_required); the engine then:
//!
//! 1. emits [`SyncEvent::ResyncStarted`];
//! 2. calls the handler's `begin_resync` (e.g. a store marks every synced row unseen);
//! 3. clears the feature's checkpoint and pulls it again from the beginning, page by page as
//!    usual (each page's checkpoint saved only after its apply); every apply's [`ApplyContext`]
//!    carries the reason in [`ApplyContext::resync`], and the page the server says is the last
//!    has [`ApplyContext::last_page`] set;
//! 4. calls the handler's `end_resync` once the pull has reached the end of the feed, which
//!    settles the rows the pull did not bring back (removes them for
//!    [`ResyncReason::TombstonesPurged`], keeps and re-pushes them otherwise) and answers a
//!    [`ResyncOutcome`];
//! 5. emits [`SyncEvent::ResyncCompleted`], and the cycle goes
//!    on (a background cycle pushes next, so re-queued rows reach the server in the same cycle).
//!
//! A resync that began and did not end (the app stopped, or a page failed for good) is continued
//! by the next pull, from its saved checkpoint, when the handler's `resync_in_progress` says so
//! (a store that records resyncs durably does); should the server refuse that checkpoint, the
//! resync starts over.
//!
//! An apply can ask for a resync too: a store that finds a pulled row older than the synced copy
//! it holds (the server lost writes without noticing it) fails the page with
//! `HandlerError::resync_required(ResyncReason::ServerBehind, ..)`; nothing of the page is
//! written and the resync starts the same way.
//!
//! A second "resync required" during the pull from scratch fails the feature with
//! [`Error::ResyncLoop`] instead of starting over: a server that cannot
//! serve its own feed from the beginning would otherwise be asked again forever.

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::checkpoint::SyncCheckpoint;
use crate::error::{Error, Operation, Result};
use crate::events::SyncEvent;
use crate::handler::{BackgroundSyncHandler, HandlerError, InitialSyncHandler};
use crate::item::{FeatureKey, SyncPayload};
use crate::page::{ApplyContext, ApplyResult, SyncKind};
use crate::pull::{Applier, Fetch, pull};
use crate::report::FeatureCounts;
use crate::sync::{FeatureSettings, Inner, RunCtx};

/// Why a server asks for a resync: it decides what becomes of the rows a device holds that the
/// pull from scratch does not bring back.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ResyncReason {
    /// The checkpoint is behind the server's tombstone purge horizon: deletions may have been
    /// missed. A synced row the pull does not bring back was deleted on the server and is removed
    /// locally; a row with a pending local edit is kept and pushed.
    TombstonesPurged,
    /// The checkpoint is ahead of the server's feed: the server lost writes it had acknowledged
    /// (restored from an older backup). Nothing is removed: rows the server lacks, and rows the
    /// device holds at a newer version than the server's, are pushed back to heal it.
    ServerBehind,
    /// A reason the transport did not recognise: handled like
    /// [`ServerBehind`](Self::ServerBehind), which keeps every row.
    Unknown,
}

impl ResyncReason {
    /// `true` when a synced row the pull from scratch did not bring back may be removed (only for
    /// [`TombstonesPurged`](Self::TombstonesPurged)); otherwise it is kept and pushed back.
    pub fn removes_unseen_rows(self) -> bool {
        self == ResyncReason::TombstonesPurged
    }
}

impl std::fmt::Display for ResyncReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ResyncReason::TombstonesPurged => "tombstones_purged",
            ResyncReason::ServerBehind => "server_behind",
            ResyncReason::Unknown => "unknown",
        })
    }
}

/// What a resync did to the local rows, as the handler's `end_resync` reports it.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ResyncOutcome {
    /// Synced rows removed because the server no longer has them (tombstones purged).
    pub removed: u64,
    /// Rows the pull did not bring back that were kept (pending local edits, or every such row
    /// when the server is behind).
    pub kept: u64,
    /// Rows queued to be pushed back to the server (it lacks them, or holds an older version).
    pub repushed: u64,
}

impl ResyncOutcome {
    /// An outcome with these counts.
    pub fn new(removed: u64, kept: u64, repushed: u64) -> Self {
        ResyncOutcome {
            removed,
            kept,
            repushed,
        }
    }
}

/// The handler calls of a resync, type-erased so initial and background features share the flow.
pub(crate) trait ResyncHooks: Send + Sync {
    fn begin<'a>(
        &'a self,
        feature: &'a FeatureKey,
        reason: ResyncReason,
    ) -> BoxFuture<'a, std::result::Result<(), HandlerError>>;

    fn end<'a>(
        &'a self,
        feature: &'a FeatureKey,
        reason: ResyncReason,
    ) -> BoxFuture<'a, std::result::Result<ResyncOutcome, HandlerError>>;

    fn in_progress<'a>(
        &'a self,
        feature: &'a FeatureKey,
    ) -> BoxFuture<'a, std::result::Result<Option<ResyncReason>, HandlerError>>;
}

/// Implements [`ResyncHooks`] for a wrapper around a handler trait that has the three resync
/// hooks (`begin_resync`, `end_resync`, `resync_in_progress`): both handler traits do.
macro_rules! resync_hooks {
    ($(#[$doc:meta])* $name:ident: $handler:ident) => {
        $(#[$doc])*
        pub(crate) struct $name<'h, H>(pub(crate) &'h H);

        impl<H: $handler> ResyncHooks for $name<'_, H> {
            fn begin<'a>(
                &'a self,
                feature: &'a FeatureKey,
                reason: ResyncReason,
            ) -> BoxFuture<'a, std::result::Result<(), HandlerError>> {
                self.0.begin_resync(feature, reason)
            }

            fn end<'a>(
                &'a self,
                feature: &'a FeatureKey,
                reason: ResyncReason,
            ) -> BoxFuture<'a, std::result::Result<ResyncOutcome, HandlerError>> {
                self.0.end_resync(feature, reason)
            }

            fn in_progress<'a>(
                &'a self,
                feature: &'a FeatureKey,
            ) -> BoxFuture<'a, std::result::Result<Option<ResyncReason>, HandlerError>> {
                self.0.resync_in_progress(feature)
            }
        }
    };
}

resync_hooks!(
    /// [`ResyncHooks`] of an initial-sync handler.
    InitialHooks: InitialSyncHandler
);
resync_hooks!(
    /// [`ResyncHooks`] of a background-sync handler.
    BackgroundHooks: BackgroundSyncHandler
);

/// The reason of a failed fetch (the server's answer) or apply (a store that found the server
/// behind its rows) that asks for a resync.
fn resync_reason(error: &Error) -> Option<ResyncReason> {
    match error {
        Error::Handler {
            operation: Operation::Fetch | Operation::Apply,
            source,
            ..
        } => source.resync_reason(),
        _ => None,
    }
}

/// Passes each page on with the resync's reason in its context.
struct ResyncApply<'a, S> {
    inner: &'a mut dyn Applier<S>,
    reason: ResyncReason,
}

impl<S: Send> Applier<S> for ResyncApply<'_, S> {
    fn apply<'b>(
        &'b mut self,
        items: Vec<SyncPayload<S>>,
        context: &'b ApplyContext,
    ) -> BoxFuture<'b, Result<ApplyResult>> {
        Box::pin(async move {
            let context = context.clone().with_resync(Some(self.reason));
            self.inner.apply(items, &context).await
        })
    }
}

/// [`pull`], and when the server asks for a resync, the resync described in the module docs.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn pull_or_resync<S: crate::item::ServerItem>(
    inner: &Inner,
    run: &RunCtx,
    key: &FeatureKey,
    kind: SyncKind,
    settings: &FeatureSettings,
    fetch: &Fetch<'_, S>,
    applier: &mut dyn Applier<S>,
    hooks: &dyn ResyncHooks,
    mut on_page: impl FnMut(&FeatureCounts, &SyncCheckpoint) + Send,
) -> Result<FeatureCounts> {
    let handler_error = |operation| {
        move |source| Error::Handler {
            feature: key.clone(),
            operation,
            attempts: 1,
            source,
        }
    };
    let pending = hooks
        .in_progress(key)
        .await
        .map_err(handler_error(Operation::Resync))?;
    let first = match pending {
        None => {
            pull(
                inner,
                run,
                key,
                kind,
                settings,
                fetch,
                applier,
                &mut on_page,
            )
            .await
        }
        Some(reason) => {
            // A resync that began and did not end: continue it from its saved checkpoint. Should
            // the server refuse that checkpoint (it was never cleared), start it over below.
            tracing::info!(feature = %key, %reason, "continuing an interrupted resync");
            inner.emit(SyncEvent::ResyncStarted {
                feature: key.clone(),
                reason,
            });
            let mut resync_apply = ResyncApply {
                inner: &mut *applier,
                reason,
            };
            match pull(
                inner,
                run,
                key,
                kind,
                settings,
                fetch,
                &mut resync_apply,
                &mut on_page,
            )
            .await
            {
                Ok(counts) => return end(inner, key, hooks, reason, counts).await,
                Err(error) => Err(error),
            }
        }
    };
    let error = match first {
        Ok(counts) => return Ok(counts),
        Err(error) => error,
    };
    let Some(reason) = resync_reason(&error) else {
        return Err(error);
    };
    tracing::warn!(feature = %key, %reason, error = %error, "the server asks for a resync");
    inner.emit(SyncEvent::ResyncStarted {
        feature: key.clone(),
        reason,
    });
    hooks
        .begin(key, reason)
        .await
        .map_err(handler_error(Operation::Resync))?;
    inner
        .repo_call(key, inner.repo.clear_checkpoint(key))
        .await?;
    let mut resync_apply = ResyncApply {
        inner: applier,
        reason,
    };
    let counts = match pull(
        inner,
        run,
        key,
        kind,
        settings,
        fetch,
        &mut resync_apply,
        &mut on_page,
    )
    .await
    {
        Ok(counts) => counts,
        Err(again) => {
            return Err(match resync_reason(&again) {
                Some(second) => Error::ResyncLoop {
                    feature: key.clone(),
                    first: reason,
                    second,
                    message: match &again {
                        Error::Handler { source, .. } => source.message().to_owned(),
                        other => other.to_string(),
                    },
                },
                None => again,
            });
        }
    };
    end(inner, key, hooks, reason, counts).await
}

/// Ends a resync whose pull reached the end of the feed: the handler settles the unseen rows.
async fn end(
    inner: &Inner,
    key: &FeatureKey,
    hooks: &dyn ResyncHooks,
    reason: ResyncReason,
    counts: FeatureCounts,
) -> Result<FeatureCounts> {
    let outcome = hooks
        .end(key, reason)
        .await
        .map_err(|source| Error::Handler {
            feature: key.clone(),
            operation: Operation::Resync,
            attempts: 1,
            source,
        })?;
    tracing::info!(feature = %key, %reason, ?outcome, pulled = counts.pulled, "resync completed");
    inner.emit(SyncEvent::ResyncCompleted {
        feature: key.clone(),
        reason,
        removed: outcome.removed,
        kept: outcome.kept,
        repushed: outcome.repushed,
    });
    Ok(counts)
}
