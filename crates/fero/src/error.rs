//! Errors: [`BuildError`] when a [`FeroSync`](crate::FeroSync) is configured, [`Error`] when it
//! runs. Messages name the feature and, where the user can act, say what to do.

use crate::handler::HandlerError;
use crate::item::{FeatureKey, SyncId};
use crate::metadata::RepoError;
use crate::page::ApplyError;
use crate::report::{FeatureResult, RunReport};
use crate::resync::ResyncReason;
use crate::retry::BackoffError;

/// The handler call that failed.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Operation {
    /// Fetching a page of server data.
    Fetch,
    /// Applying a page locally.
    Apply,
    /// Listing locally modified items.
    ListModified,
    /// Pushing local changes.
    Push,
    /// Merging a conflict.
    Merge,
    /// Discarding a local change.
    Discard,
    /// Reading or writing the metadata repo.
    Metadata,
    /// Starting or ending a resync (`begin_resync`, `end_resync`).
    Resync,
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Operation::Fetch => "fetch",
            Operation::Apply => "apply",
            Operation::ListModified => "list locally modified items",
            Operation::Push => "push",
            Operation::Merge => "merge a conflict",
            Operation::Discard => "discard a local change",
            Operation::Metadata => "access the metadata repo",
            Operation::Resync => "resync",
        })
    }
}

/// A [`FeroSync`](crate::FeroSync) configuration was rejected by `build()`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// Two features of the same kind share a key.
    #[error("feature {feature} is registered twice as a {kind} feature: give each feature one key")]
    DuplicateFeature {
        /// The key.
        feature: FeatureKey,
        /// "initial" or "background".
        kind: &'static str,
    },
    /// A feature depends on a key that is not registered.
    #[error(
        "feature {feature} depends on {dependency}, which is not a registered {kind} feature: \
         register it or remove the dependency"
    )]
    UnknownDependency {
        /// The dependent feature.
        feature: FeatureKey,
        /// The missing dependency.
        dependency: FeatureKey,
        /// "initial" or "background".
        kind: &'static str,
    },
    /// The dependencies form a cycle.
    #[error("the {kind} features' dependencies form a cycle: {}", display_cycle(.cycle))]
    DependencyCycle {
        /// The features of the cycle, the first repeated at the end.
        cycle: Vec<FeatureKey>,
        /// "initial" or "background".
        kind: &'static str,
    },
    /// A batch size of zero.
    #[error("feature {feature} has batch_size 0: use at least 1 (1000 is the default)")]
    ZeroBatchSize {
        /// The feature.
        feature: FeatureKey,
    },
    /// `max_concurrent` of zero.
    #[error("max_concurrent is 0: at least one feature must be able to run")]
    ZeroConcurrency,
    /// The backoff's parameters were invalid.
    #[error(transparent)]
    Backoff(#[from] BackoffError),
}

fn display_cycle(cycle: &[FeatureKey]) -> String {
    cycle
        .iter()
        .map(FeatureKey::as_str)
        .collect::<Vec<_>>()
        .join(" -> ")
}

/// Bad data from a server: rejected before anything is applied, state left untouched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The page's checkpoint is behind the one it was fetched from.
    #[error(
        "the server's checkpoint went backwards from sync_id {previous} to {received}: the page \
         was not applied; check the server's pagination"
    )]
    CheckpointWentBackwards {
        /// The checkpoint the page was fetched from.
        previous: SyncId,
        /// The page's checkpoint.
        received: SyncId,
    },
    /// A page that says more pages follow ends at the position it was fetched from (same
    /// `last_sync_id`, same cursor): fetching from there again would return it again, forever.
    #[error(
        "the server sent a page with more to come that ends where it started (sync_id {last_sync_id}, \
         cursor {cursor:?}): the page was not applied and the run ended; the server must move its \
         checkpoint or cursor forward on every page it sends with has_more"
    )]
    NoProgress {
        /// The `last_sync_id` the page was fetched from and ended at.
        last_sync_id: SyncId,
        /// The cursor the page was fetched from and ended at.
        cursor: Option<String>,
    },
    /// The same id appears twice in one page.
    #[error("item {id:?} appears twice in one page: the page was not applied")]
    DuplicateId {
        /// The id.
        id: String,
    },
    /// An item has an empty id.
    #[error("an item of the page has an empty id: the page was not applied")]
    EmptyId,
    /// A page larger than the requested batch size.
    #[error(
        "the server sent {received} items for a batch size of {requested}: the page was not applied"
    )]
    PageTooLarge {
        /// The batch size asked for.
        requested: usize,
        /// The items received.
        received: usize,
    },
}

/// Why a sync operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A handler call failed (after retries, for a transient error).
    #[error("feature {feature}: {operation} failed after {attempts} attempt(s): {source}")]
    Handler {
        /// The feature.
        feature: FeatureKey,
        /// The call.
        operation: Operation,
        /// Attempts made.
        attempts: u32,
        /// The handler's error.
        #[source]
        source: HandlerError,
    },
    /// The server sent bad data.
    #[error("feature {feature}: bad page from the server (page {page}): {source}")]
    Protocol {
        /// The feature.
        feature: FeatureKey,
        /// The page number in the current pull.
        page: u64,
        /// What was wrong.
        #[source]
        source: ProtocolError,
    },
    /// Items of a page could not be applied; no checkpoint was saved for it.
    #[error(
        "feature {feature}: {} item(s) of page {page} could not be applied (first: {:?}: {}); \
         the checkpoint was not saved and the page will be fetched again",
        failed.len(),
        failed.first().map(|f| f.id.as_str()).unwrap_or(""),
        failed.first().map(|f| f.message.as_str()).unwrap_or("")
    )]
    ApplyFailed {
        /// The feature.
        feature: FeatureKey,
        /// The page number.
        page: u64,
        /// The items that failed.
        failed: Vec<ApplyError>,
    },
    /// The metadata repo failed.
    #[error("feature {feature}: {source}")]
    Repo {
        /// The feature.
        feature: FeatureKey,
        /// The repo's error.
        #[source]
        source: RepoError,
    },
    /// The run was cancelled before the feature finished; state is consistent.
    #[error(
        "feature {feature}: cancelled; its checkpoint is consistent and the next run resumes it"
    )]
    Cancelled {
        /// The feature.
        feature: FeatureKey,
    },
    /// A dependency failed or was skipped, so the feature did not run.
    #[error("feature {feature} skipped: its dependency {dependency} did not complete")]
    DependencyFailed {
        /// The skipped feature.
        feature: FeatureKey,
        /// The dependency that did not complete.
        dependency: FeatureKey,
    },
    /// No feature has that key.
    #[error("no feature {feature} is registered{hint}")]
    UnknownFeature {
        /// The key asked for.
        feature: FeatureKey,
        /// What kind was looked for.
        hint: &'static str,
    },
    /// No parked conflict or quarantined change has that id.
    #[error("feature {feature}: nothing parked or quarantined for id {id:?}")]
    NotParked {
        /// The feature.
        feature: FeatureKey,
        /// The id.
        id: String,
    },
    /// A parked conflict has no server state to re-base a kept or merged edit on (the server had
    /// no such item when it refused the push).
    #[error(
        "feature {feature}: the server has no copy of {id:?} to re-base on; resolve it with \
         ManualResolution::KeepServer (drops the local edit) or recreate it under a new id"
    )]
    NothingToRebase {
        /// The feature.
        feature: FeatureKey,
        /// The id.
        id: String,
    },
    /// A stored conflict or a manual resolution could not be read as the feature's item type.
    #[error(
        "feature {feature}: item {id:?} does not deserialize as the feature's item type: {message}"
    )]
    Decode {
        /// The feature.
        feature: FeatureKey,
        /// The id.
        id: String,
        /// The serde error.
        message: String,
    },
    /// The server asked for a resync again while the feature was being pulled from scratch
    /// after a first request: the run stops here instead of starting over forever.
    #[error(
        "feature {feature}: the server asked for a resync ({second}) during the pull from \
         scratch of a resync ({first}): {message}; the server cannot serve its own feed from the \
         beginning; check its purge horizon and its database, then run the sync again"
    )]
    ResyncLoop {
        /// The feature.
        feature: FeatureKey,
        /// The reason of the resync under way.
        first: ResyncReason,
        /// The reason of the second request.
        second: ResyncReason,
        /// The server's message of the second request.
        message: String,
    },
    /// `dispose()` was called; this instance can no longer sync.
    #[error("this FeroSync was disposed: build a new one to sync again")]
    Disposed,
    /// Some features of a run did not complete; the report says which and why.
    #[error(
        "{} of {} feature run(s) did not complete: {report}",
        report.failures().count(),
        report.outcomes.len()
    )]
    FeaturesFailed {
        /// The whole run's report.
        report: Box<RunReport>,
    },
}

impl Error {
    /// `true` when retrying the whole run later can help (a transient handler or repo failure,
    /// or a cancellation).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Handler { source, .. } => source.is_transient(),
            Error::Repo { source, .. } => source.transient,
            Error::Cancelled { .. } => true,
            Error::FeaturesFailed { report } => report.failures().all(|o| match &o.result {
                FeatureResult::Failed(e) => e.is_transient(),
                FeatureResult::Cancelled | FeatureResult::Skipped { .. } => true,
                _ => false,
            }),
            _ => false,
        }
    }

    /// `true` for a cancellation.
    pub fn is_cancelled(&self) -> bool {
        match self {
            Error::Cancelled { .. } => true,
            Error::FeaturesFailed { report } => report
                .failures()
                .any(|o| matches!(o.result, FeatureResult::Cancelled)),
            _ => false,
        }
    }

    /// The run report, for [`Error::FeaturesFailed`].
    pub fn report(&self) -> Option<&RunReport> {
        match self {
            Error::FeaturesFailed { report } => Some(report),
            _ => None,
        }
    }

    /// The feature the error concerns, if any.
    pub fn feature(&self) -> Option<&FeatureKey> {
        match self {
            Error::Handler { feature, .. }
            | Error::Protocol { feature, .. }
            | Error::ApplyFailed { feature, .. }
            | Error::Repo { feature, .. }
            | Error::Cancelled { feature }
            | Error::DependencyFailed { feature, .. }
            | Error::UnknownFeature { feature, .. }
            | Error::NotParked { feature, .. }
            | Error::NothingToRebase { feature, .. }
            | Error::Decode { feature, .. }
            | Error::ResyncLoop { feature, .. } => Some(feature),
            Error::Disposed | Error::FeaturesFailed { .. } => None,
        }
    }
}

/// `Result` with fero's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cycle_is_named_in_the_message() {
        let e = BuildError::DependencyCycle {
            cycle: vec!["a".into(), "b".into(), "a".into()],
            kind: "background",
        };
        assert_eq!(
            e.to_string(),
            "the background features' dependencies form a cycle: a -> b -> a"
        );
    }
}
