//! What a page carries between the engine and the handlers: fetched batches, apply requests and
//! results, push results.

use serde::{Deserialize, Serialize};

use crate::checkpoint::SyncCheckpoint;
use crate::item::{FeatureKey, SyncId, SyncPayload, Version};
use crate::resync::ResyncReason;

/// One fetched page of server changes.
///
/// `checkpoint` is the position after this page:
/// - `Some(cp)` with `has_more = true` ([`page`](Self::page)): the engine applies `items`, saves
///   `cp` and fetches again from it.
/// - `Some(cp)` with `has_more = false` ([`final_page`](Self::final_page)): the engine applies
///   `items`, saves `cp` (an opaque server cursor included) and stops.
/// - `None` ([`last`](Self::last), fero_sync's "no more pages"): the engine applies `items` and
///   saves a checkpoint at their largest `sync_id`, then stops.
///
/// An empty page ends the pull as well (saving its checkpoint if it moves forward).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncBatchResult<S> {
    /// The changes of this page, in the server's order.
    pub items: Vec<SyncPayload<S>>,
    /// The position after this page; `None` when this is the last page.
    pub checkpoint: Option<SyncCheckpoint>,
    /// With a checkpoint: whether more pages may follow.
    #[serde(default)]
    pub has_more: bool,
}

impl<S> SyncBatchResult<S> {
    /// A page after which more may follow.
    pub fn page(items: Vec<SyncPayload<S>>, checkpoint: SyncCheckpoint) -> Self {
        SyncBatchResult {
            items,
            checkpoint: Some(checkpoint),
            has_more: true,
        }
    }

    /// The last page, with the server's checkpoint after it.
    pub fn final_page(items: Vec<SyncPayload<S>>, checkpoint: SyncCheckpoint) -> Self {
        SyncBatchResult {
            items,
            checkpoint: Some(checkpoint),
            has_more: false,
        }
    }

    /// The last page, without a server checkpoint (the engine derives one from the items).
    pub fn last(items: Vec<SyncPayload<S>>) -> Self {
        SyncBatchResult {
            items,
            checkpoint: None,
            has_more: false,
        }
    }

    /// No changes at all.
    pub fn empty() -> Self {
        SyncBatchResult {
            items: Vec::new(),
            checkpoint: None,
            has_more: false,
        }
    }
}

/// Which kind of sync a page belongs to.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncKind {
    /// First-install sync of a feature.
    Initial,
    /// Incremental pull and push.
    Background,
}

/// What the engine tells an apply call about the page it carries.
///
/// # Atomic apply
/// `checkpoint` is the position after this page. A store that is also the feature's
/// [`SyncMetadataRepo`](crate::SyncMetadataRepo) (as `fero-sqlite` is) may write the page and this
/// checkpoint in one transaction and answer [`ApplyResult::checkpoint_saved`] `= true`; the engine
/// then does not save it again. Any other store answers `false` and the engine saves the checkpoint
/// after the apply returned success, so the checkpoint is never ahead of the data.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ApplyContext {
    /// The feature the page belongs to.
    pub feature: FeatureKey,
    /// Initial or background sync.
    pub kind: SyncKind,
    /// The checkpoint after this page; `None` when the apply is not part of a pull (a conflict
    /// resolved during a push, or a manual resolution).
    pub checkpoint: Option<SyncCheckpoint>,
    /// 1-based page number within the current pull (0 outside a pull).
    pub page: u64,
    /// `true` when the server said no page follows this one. A pull can also end on an empty
    /// page, which is not applied: a store that must act at the end of a pull does it in
    /// `end_resync` (for a resync), not only here.
    pub last_page: bool,
    /// Set while the feature is pulled again from scratch after the server asked for a resync
    /// (see [`crate::resync`]): a store marks each row of the page as seen by this resync.
    pub resync: Option<ResyncReason>,
}

impl ApplyContext {
    /// A context for a page of a pull.
    pub fn new(
        feature: FeatureKey,
        kind: SyncKind,
        checkpoint: Option<SyncCheckpoint>,
        page: u64,
    ) -> Self {
        ApplyContext {
            feature,
            kind,
            checkpoint,
            page,
            last_page: false,
            resync: None,
        }
    }

    /// The same context with [`last_page`](Self::last_page) set to `last`.
    pub fn with_last_page(mut self, last: bool) -> Self {
        self.last_page = last;
        self
    }

    /// The same context with [`resync`](Self::resync) set to `reason`.
    pub fn with_resync(mut self, reason: Option<ResyncReason>) -> Self {
        self.resync = reason;
        self
    }
}

/// A local edit that keeps its content after a conflict and now rests on the server's version.
///
/// The store writes `local` as a pending local edit whose base version is `server`'s version (the
/// next push then carries that base). The local copy's data is `local`'s: for
/// [`ClientWins`](crate::ConflictResolutionStrategy::ClientWins) the unchanged local item, for a
/// merge the merged one.
#[derive(Clone, Debug)]
pub struct Rebase<L, S> {
    /// The local content to keep.
    pub local: L,
    /// The server's current state it now rests on.
    pub server: SyncPayload<S>,
}

/// A page of server changes as the background apply receives it, conflicts already resolved.
///
/// # Contract for the store
/// - Write every item of `items` (tombstones delete).
/// - Each entry of `discard_local` is a local edit, as the engine saw it, that lost a conflict to
///   the server (an event was emitted): drop that pending edit and its outbox entry and write the
///   server's item, but only if the store still holds that same edit (same
///   [`version`](crate::LocalItem::version)). An edit made after the engine listed the modified
///   items is newer: keep it; its push will meet the server's conflict check and be decided with
///   its own event, so it is never dropped silently.
/// - For any other id of `items` that has a pending local edit, keep the edit: it was made after
///   the engine listed the modified items. Its push will carry a stale base version and the server
///   will answer with a conflict, which is then resolved, so nothing is lost.
/// - Write each entry of `rebase` as described on [`Rebase`].
#[derive(Clone, Debug)]
pub struct RemoteChanges<L, S> {
    /// Server states to write.
    pub items: Vec<SyncPayload<S>>,
    /// Local edits that lost a conflict, as the engine saw them.
    pub discard_local: Vec<L>,
    /// Local edits that won or were merged, re-based onto the server's version.
    pub rebase: Vec<Rebase<L, S>>,
}

impl<L, S> RemoteChanges<L, S> {
    /// Only server states, no conflict outcome.
    pub fn from_items(items: Vec<SyncPayload<S>>) -> Self {
        RemoteChanges {
            items,
            discard_local: Vec::new(),
            rebase: Vec::new(),
        }
    }

    /// The number of entries the store has to write.
    pub fn len(&self) -> usize {
        self.items.len() + self.rebase.len()
    }

    /// `true` when there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty() && self.rebase.is_empty()
    }
}

/// One item a store could not apply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyError {
    /// The item's id.
    pub id: String,
    /// Why it failed.
    pub message: String,
}

/// What an apply call did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApplyResult {
    /// Items written.
    pub applied: usize,
    /// `true` when the store saved the page's checkpoint in the same transaction as the items.
    pub checkpoint_saved: bool,
    /// Items that could not be applied. When it is not empty the engine saves no checkpoint for
    /// the page (the page will be fetched again) and reports
    /// [`Error::ApplyFailed`](crate::Error::ApplyFailed). A store must not report failures for a
    /// page whose checkpoint it saved.
    pub failed: Vec<ApplyError>,
}

impl ApplyResult {
    /// `applied` items written, checkpoint left to the engine.
    pub fn applied(applied: usize) -> Self {
        ApplyResult {
            applied,
            checkpoint_saved: false,
            failed: Vec::new(),
        }
    }

    /// `applied` items written together with the page's checkpoint, in one transaction.
    pub fn applied_with_checkpoint(applied: usize) -> Self {
        ApplyResult {
            applied,
            checkpoint_saved: true,
            failed: Vec::new(),
        }
    }
}

/// The server accepted a pushed change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushAccepted {
    /// The item's id.
    pub id: String,
    /// The version the server assigned.
    pub version: Version,
    /// The change's position in the server's feed.
    pub sync_id: SyncId,
}

/// The server refused a pushed change because its copy moved on since the change's base version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushConflict<S> {
    /// The item's id.
    pub id: String,
    /// The server's current state (`None` when the server has no such item).
    pub server: Option<SyncPayload<S>>,
}

/// The server refused a pushed change for good (validation, permission). It is quarantined.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushRejected {
    /// The item's id.
    pub id: String,
    /// The server's reason.
    pub reason: String,
}

/// The server's answer to one pushed page, item by item.
///
/// # Contract for the handler
/// Before `push_local_changes` returns, every accepted item is recorded in the local store with
/// its new version (no longer locally modified, unless edited again meanwhile), in the same
/// transaction that removes its outbox entry. An item in no list stays modified and is pushed
/// again in a later cycle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushResult<S> {
    /// Accepted changes.
    pub accepted: Vec<PushAccepted>,
    /// Changes refused for a stale base version, with the server's state.
    pub conflicts: Vec<PushConflict<S>>,
    /// Changes refused for good.
    pub rejected: Vec<PushRejected>,
}

impl<S> Default for PushResult<S> {
    fn default() -> Self {
        PushResult {
            accepted: Vec::new(),
            conflicts: Vec::new(),
            rejected: Vec::new(),
        }
    }
}
