//! Conflicts: what one is, the strategies that resolve it, and how the decision is made.
//!
//! A conflict is one item changed locally (an edit the server has not acknowledged) and on the
//! server since the local edit's base version. It is found in two places: during a pull (the page
//! brings an item that has a pending local edit) and during a push (the server refuses a change
//! whose base version is stale and answers with its current state). Both are decided by the same
//! (crate-private) `decide` function from the feature's [`ConflictResolutionStrategy`], and every
//! conflict emits one
//! [`SyncEvent::ConflictResolved`](crate::SyncEvent::ConflictResolved) with both versions and the
//! outcome: a losing local edit is never dropped silently.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::item::{FeatureKey, LocalItem, ServerItem, SyncPayload};

/// How a feature resolves conflicts. Set globally on the builder, and per feature on its
/// [`FeatureSyncConfig`](crate::FeatureSyncConfig).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ConflictResolutionStrategy {
    /// The side with the higher version wins: the local copy's
    /// [`version`](LocalItem::version) against the server's. On a tie the server wins: its copy
    /// is the one every other device already has, so every device decides the same way.
    #[default]
    HighestVersionWins,
    /// The server's state always wins; the local edit is dropped (with an event).
    ServerWins,
    /// The local edit always wins; it is re-based onto the server's version and pushed again.
    ClientWins,
    /// The handler's [`merge_conflict`](crate::BackgroundSyncHandler::merge_conflict) produces the
    /// result, which is pushed as a new local edit. A failing merge parks the conflict.
    Custom,
    /// The conflict is parked in the metadata repo (shown in status and events) until the app
    /// calls [`FeroSync::resolve_conflict`](crate::FeroSync::resolve_conflict); the rest of the
    /// feature keeps syncing.
    Manual,
}

impl fmt::Display for ConflictResolutionStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConflictResolutionStrategy::HighestVersionWins => "highest-version-wins",
            ConflictResolutionStrategy::ServerWins => "server-wins",
            ConflictResolutionStrategy::ClientWins => "client-wins",
            ConflictResolutionStrategy::Custom => "custom",
            ConflictResolutionStrategy::Manual => "manual",
        })
    }
}

/// Where a conflict was found.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConflictPhase {
    /// A pulled page brought an item with a pending local edit.
    Pull,
    /// The server refused a pushed change for its stale base version.
    Push,
}

/// One conflict, as a merge sees it.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Conflict<L, S> {
    /// The feature.
    pub feature: FeatureKey,
    /// The local item with its pending edit.
    pub local: L,
    /// The server's current state.
    pub server: SyncPayload<S>,
    /// The common base (the server state the local edit was made on), where the handler keeps it.
    pub base: Option<S>,
    /// Where it was found.
    pub phase: ConflictPhase,
}

impl<L, S> Conflict<L, S> {
    /// A conflict without a known base.
    pub fn new(
        feature: FeatureKey,
        local: L,
        server: SyncPayload<S>,
        phase: ConflictPhase,
    ) -> Self {
        Conflict {
            feature,
            local,
            server,
            base: None,
            phase,
        }
    }
}

/// What became of a conflict.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ConflictOutcome {
    /// The server's state was kept; the local edit was dropped.
    ServerKept,
    /// The local edit was kept, re-based onto the server's version, to be pushed again.
    LocalKept,
    /// A merged item replaced both, to be pushed again.
    Merged,
    /// Parked for the app to resolve (manual strategy, a failed merge, or too many push rounds).
    Parked,
}

impl fmt::Display for ConflictOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConflictOutcome::ServerKept => "server kept",
            ConflictOutcome::LocalKept => "local kept",
            ConflictOutcome::Merged => "merged",
            ConflictOutcome::Parked => "parked",
        })
    }
}

/// The decision a strategy takes before any merge runs.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    TakeServer,
    KeepLocal,
    Merge,
    Park,
}

/// Decides a conflict by strategy. Pure and deterministic: the same inputs give the same answer
/// on every device.
pub(crate) fn decide<L: LocalItem, S: ServerItem>(
    strategy: ConflictResolutionStrategy,
    local: &L,
    server: &SyncPayload<S>,
) -> Decision {
    match strategy {
        ConflictResolutionStrategy::HighestVersionWins => {
            // Ties go to the server (see the variant's docs).
            if local.version() > server.item.version() {
                Decision::KeepLocal
            } else {
                Decision::TakeServer
            }
        }
        ConflictResolutionStrategy::ServerWins => Decision::TakeServer,
        ConflictResolutionStrategy::ClientWins => Decision::KeepLocal,
        ConflictResolutionStrategy::Custom => Decision::Merge,
        ConflictResolutionStrategy::Manual => Decision::Park,
    }
}

/// `true` when a pulled server item conflicts with a local item that has a pending edit.
///
/// A pulled version equal to the edit's base version is the state the edit was made on (or the
/// device's own acknowledged write coming back), not a conflict; a lower one is stale.
pub(crate) fn pulled_item_conflicts<L: LocalItem, S: ServerItem>(local: &L, server: &S) -> bool {
    match local.base_version() {
        Some(base) => server.version() > base,
        None => true,
    }
}

/// How the app resolves a parked conflict with
/// [`FeroSync::resolve_conflict`](crate::FeroSync::resolve_conflict).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ManualResolution {
    /// Keep the server's state and drop the local edit.
    KeepServer,
    /// Keep the local edit, re-based on the server's version; it is pushed in the next cycle.
    KeepLocal,
    /// Replace both with this local item (serialised as the feature's local item type); it is
    /// pushed in the next cycle.
    Merged(serde_json::Value),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::item::{SyncId, Version};

    #[derive(Clone, Debug, Serialize, Deserialize)]
    struct L(u64, Option<u64>);
    impl LocalItem for L {
        fn id(&self) -> &str {
            "x"
        }
        fn version(&self) -> Version {
            Version(self.0)
        }
        fn locally_modified(&self) -> bool {
            true
        }
        fn base_version(&self) -> Option<Version> {
            self.1.map(Version)
        }
    }
    #[derive(Clone, Debug, Serialize, Deserialize)]
    struct S(u64);
    impl ServerItem for S {
        fn id(&self) -> &str {
            "x"
        }
        fn sync_id(&self) -> SyncId {
            SyncId(1)
        }
        fn version(&self) -> Version {
            Version(self.0)
        }
    }

    #[test]
    fn highest_version_wins_prefers_the_higher_version_and_gives_ties_to_the_server() {
        let s = ConflictResolutionStrategy::HighestVersionWins;
        assert_eq!(
            decide(s, &L(5, Some(3)), &SyncPayload::new(S(4))),
            Decision::KeepLocal
        );
        assert_eq!(
            decide(s, &L(4, Some(3)), &SyncPayload::new(S(4))),
            Decision::TakeServer
        );
        assert_eq!(
            decide(s, &L(4, Some(3)), &SyncPayload::new(S(9))),
            Decision::TakeServer
        );
    }

    #[test]
    fn fixed_strategies_ignore_versions() {
        let l = L(100, Some(1));
        let srv = SyncPayload::new(S(2));
        assert_eq!(
            decide(ConflictResolutionStrategy::ServerWins, &l, &srv),
            Decision::TakeServer
        );
        assert_eq!(
            decide(ConflictResolutionStrategy::ClientWins, &L(1, Some(1)), &srv),
            Decision::KeepLocal
        );
        assert_eq!(
            decide(ConflictResolutionStrategy::Custom, &l, &srv),
            Decision::Merge
        );
        assert_eq!(
            decide(ConflictResolutionStrategy::Manual, &l, &srv),
            Decision::Park
        );
    }

    #[test]
    fn a_pulled_item_at_the_base_version_is_not_a_conflict() {
        assert!(!pulled_item_conflicts(&L(4, Some(3)), &S(3)));
        assert!(!pulled_item_conflicts(&L(4, Some(3)), &S(2)));
        assert!(pulled_item_conflicts(&L(4, Some(3)), &S(4)));
        assert!(pulled_item_conflicts(&L(1, None), &S(1)));
    }
}
