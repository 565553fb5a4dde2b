//! What fero remembers between runs: [`SyncMetadataRepo`] and its in-memory implementation.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::checkpoint::SyncCheckpoint;
use crate::conflict::ConflictPhase;
use crate::item::{FeatureKey, Timestamp, Version};

/// A metadata repo failed to read or write.
#[derive(Debug, thiserror::Error)]
#[error("metadata repo failed to {operation}: {message}")]
pub struct RepoError {
    /// What it was doing ("save checkpoint", "read parked conflicts", ...).
    pub operation: String,
    /// What went wrong.
    pub message: String,
    /// Whether retrying can help (a busy database) or not (a corrupt file).
    pub transient: bool,
}

impl RepoError {
    /// A failure of `operation`.
    pub fn new(operation: impl Into<String>, message: impl Into<String>, transient: bool) -> Self {
        RepoError {
            operation: operation.into(),
            message: message.into(),
            transient,
        }
    }
}

/// Whether a feature's initial sync has completed. Persisted.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InitialSyncState {
    /// Not run yet, or interrupted (its checkpoint says where it stopped).
    #[default]
    Pending,
    /// Done; the feature's checkpoint is where background sync continues.
    Completed,
}

/// A conflict parked for the app to resolve, as the metadata repo keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ParkedConflict {
    /// The feature.
    pub feature: FeatureKey,
    /// The item's id.
    pub id: String,
    /// The local item with its pending edit, serialised.
    pub local: serde_json::Value,
    /// The server's state, serialised (`null` when the server has no such item).
    pub server: serde_json::Value,
    /// The server's state is a tombstone.
    pub server_deleted: bool,
    /// The server's version.
    pub server_version: Option<Version>,
    /// Where it was found.
    pub phase: ConflictPhase,
    /// Why it was parked.
    pub reason: String,
    /// When it was parked (the engine's clock).
    pub parked_at: Timestamp,
}

/// A local change the server rejected for good, kept aside so the rest of the push goes on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QuarantinedChange {
    /// The feature.
    pub feature: FeatureKey,
    /// The item's id.
    pub id: String,
    /// The rejected local item, serialised.
    pub item: serde_json::Value,
    /// The server's reason.
    pub reason: String,
    /// When it was quarantined (the engine's clock).
    pub quarantined_at: Timestamp,
}

/// Persistent sync state per feature: checkpoints, initial-sync status, last success, parked
/// conflicts and quarantined changes.
///
/// # Contract
/// - A saved value is durable when the call returns (for a persistent repo).
/// - `save_checkpoint` never loses a later checkpoint to an earlier one from the same engine: the
///   engine saves them strictly in page order.
/// - Errors are [`RepoError`]s; the engine retries transient ones like handler errors.
#[async_trait]
pub trait SyncMetadataRepo: Send + Sync + std::fmt::Debug + 'static {
    /// The feature's saved checkpoint.
    async fn checkpoint(&self, feature: &FeatureKey) -> Result<Option<SyncCheckpoint>, RepoError>;
    /// Saves the feature's checkpoint.
    async fn save_checkpoint(
        &self,
        feature: &FeatureKey,
        checkpoint: &SyncCheckpoint,
    ) -> Result<(), RepoError>;
    /// Forgets the feature's checkpoint (a forced initial sync starts from the beginning).
    async fn clear_checkpoint(&self, feature: &FeatureKey) -> Result<(), RepoError>;
    /// The feature's initial-sync state.
    async fn initial_sync_state(&self, feature: &FeatureKey)
    -> Result<InitialSyncState, RepoError>;
    /// Records the feature's initial-sync state.
    async fn set_initial_sync_state(
        &self,
        feature: &FeatureKey,
        state: InitialSyncState,
    ) -> Result<(), RepoError>;
    /// When the feature last synced successfully.
    async fn last_success(&self, feature: &FeatureKey) -> Result<Option<Timestamp>, RepoError>;
    /// Records a successful sync.
    async fn set_last_success(&self, feature: &FeatureKey, at: Timestamp) -> Result<(), RepoError>;
    /// Parks a conflict, replacing an earlier one for the same feature and id.
    async fn park_conflict(&self, conflict: &ParkedConflict) -> Result<(), RepoError>;
    /// The feature's parked conflicts, oldest first.
    async fn parked_conflicts(
        &self,
        feature: &FeatureKey,
    ) -> Result<Vec<ParkedConflict>, RepoError>;
    /// Removes a parked conflict (resolved); `Ok(false)` when there was none.
    async fn remove_parked_conflict(
        &self,
        feature: &FeatureKey,
        id: &str,
    ) -> Result<bool, RepoError>;
    /// Quarantines a change, replacing an earlier one for the same feature and id.
    async fn quarantine(&self, change: &QuarantinedChange) -> Result<(), RepoError>;
    /// The feature's quarantined changes, oldest first.
    async fn quarantined(&self, feature: &FeatureKey) -> Result<Vec<QuarantinedChange>, RepoError>;
    /// Removes a quarantined change; `Ok(false)` when there was none.
    async fn remove_quarantined(&self, feature: &FeatureKey, id: &str) -> Result<bool, RepoError>;
}

#[derive(Debug, Default)]
struct FeatureMetadata {
    checkpoint: Option<SyncCheckpoint>,
    initial: InitialSyncState,
    last_success: Option<Timestamp>,
    // BTreeMap by insertion counter keeps "oldest first" without a clock.
    parked: BTreeMap<u64, ParkedConflict>,
    quarantined: BTreeMap<u64, QuarantinedChange>,
    parked_index: HashMap<String, u64>,
    quarantined_index: HashMap<String, u64>,
}

/// A [`SyncMetadataRepo`] in memory: for tests, examples and apps that resync on every start.
///
/// Nothing survives the process; use `fero-sqlite`'s `SqliteSyncMetadataRepo` to persist.
///
/// # Examples
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), fero::RepoError> {
/// use fero::{FeatureKey, InMemorySyncMetadataRepo, SyncCheckpoint, SyncId, SyncMetadataRepo};
/// let repo = InMemorySyncMetadataRepo::new();
/// let key = FeatureKey::new("contacts");
/// repo.save_checkpoint(&key, &SyncCheckpoint::at(SyncId(7))).await?;
/// assert_eq!(repo.checkpoint(&key).await?, Some(SyncCheckpoint::at(SyncId(7))));
/// # Ok(()) }
/// ```
#[derive(Debug, Default)]
pub struct InMemorySyncMetadataRepo {
    features: Mutex<HashMap<FeatureKey, FeatureMetadata>>,
    counter: std::sync::atomic::AtomicU64,
}

impl InMemorySyncMetadataRepo {
    /// An empty repo.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, feature: &FeatureKey, f: impl FnOnce(&mut FeatureMetadata) -> T) -> T {
        // A poisoned lock only means another thread panicked mid-update of plain data; the map is
        // still consistent field by field, so keep serving it.
        let mut map = self
            .features
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(map.entry(feature.clone()).or_default())
    }

    fn next(&self) -> u64 {
        self.counter
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }
}

#[async_trait]
impl SyncMetadataRepo for InMemorySyncMetadataRepo {
    async fn checkpoint(&self, feature: &FeatureKey) -> Result<Option<SyncCheckpoint>, RepoError> {
        Ok(self.with(feature, |m| m.checkpoint.clone()))
    }

    async fn save_checkpoint(
        &self,
        feature: &FeatureKey,
        checkpoint: &SyncCheckpoint,
    ) -> Result<(), RepoError> {
        self.with(feature, |m| m.checkpoint = Some(checkpoint.clone()));
        Ok(())
    }

    async fn clear_checkpoint(&self, feature: &FeatureKey) -> Result<(), RepoError> {
        self.with(feature, |m| m.checkpoint = None);
        Ok(())
    }

    async fn initial_sync_state(
        &self,
        feature: &FeatureKey,
    ) -> Result<InitialSyncState, RepoError> {
        Ok(self.with(feature, |m| m.initial))
    }

    async fn set_initial_sync_state(
        &self,
        feature: &FeatureKey,
        state: InitialSyncState,
    ) -> Result<(), RepoError> {
        self.with(feature, |m| m.initial = state);
        Ok(())
    }

    async fn last_success(&self, feature: &FeatureKey) -> Result<Option<Timestamp>, RepoError> {
        Ok(self.with(feature, |m| m.last_success))
    }

    async fn set_last_success(&self, feature: &FeatureKey, at: Timestamp) -> Result<(), RepoError> {
        self.with(feature, |m| m.last_success = Some(at));
        Ok(())
    }

    async fn park_conflict(&self, conflict: &ParkedConflict) -> Result<(), RepoError> {
        let seq = self.next();
        self.with(&conflict.feature, |m| {
            if let Some(old) = m.parked_index.insert(conflict.id.clone(), seq) {
                m.parked.remove(&old);
            }
            m.parked.insert(seq, conflict.clone());
        });
        Ok(())
    }

    async fn parked_conflicts(
        &self,
        feature: &FeatureKey,
    ) -> Result<Vec<ParkedConflict>, RepoError> {
        Ok(self.with(feature, |m| m.parked.values().cloned().collect()))
    }

    async fn remove_parked_conflict(
        &self,
        feature: &FeatureKey,
        id: &str,
    ) -> Result<bool, RepoError> {
        Ok(self.with(feature, |m| match m.parked_index.remove(id) {
            Some(seq) => m.parked.remove(&seq).is_some(),
            None => false,
        }))
    }

    async fn quarantine(&self, change: &QuarantinedChange) -> Result<(), RepoError> {
        let seq = self.next();
        self.with(&change.feature, |m| {
            if let Some(old) = m.quarantined_index.insert(change.id.clone(), seq) {
                m.quarantined.remove(&old);
            }
            m.quarantined.insert(seq, change.clone());
        });
        Ok(())
    }

    async fn quarantined(&self, feature: &FeatureKey) -> Result<Vec<QuarantinedChange>, RepoError> {
        Ok(self.with(feature, |m| m.quarantined.values().cloned().collect()))
    }

    async fn remove_quarantined(&self, feature: &FeatureKey, id: &str) -> Result<bool, RepoError> {
        Ok(
            self.with(feature, |m| match m.quarantined_index.remove(id) {
                Some(seq) => m.quarantined.remove(&seq).is_some(),
                None => false,
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::item::SyncId;

    fn parked(id: &str, at: u64) -> ParkedConflict {
        ParkedConflict {
            feature: FeatureKey::new("f"),
            id: id.into(),
            local: serde_json::json!({"id": id}),
            server: serde_json::Value::Null,
            server_deleted: false,
            server_version: Some(Version(2)),
            phase: ConflictPhase::Pull,
            reason: "manual".into(),
            parked_at: Timestamp(at),
        }
    }

    #[tokio::test]
    async fn checkpoints_are_kept_per_feature_and_can_be_cleared() {
        let repo = InMemorySyncMetadataRepo::new();
        let (a, b) = (FeatureKey::new("a"), FeatureKey::new("b"));
        repo.save_checkpoint(&a, &SyncCheckpoint::at(SyncId(3)))
            .await
            .unwrap();
        assert_eq!(repo.checkpoint(&b).await.unwrap(), None);
        assert_eq!(
            repo.checkpoint(&a).await.unwrap().unwrap().last_sync_id,
            SyncId(3)
        );
        repo.clear_checkpoint(&a).await.unwrap();
        assert_eq!(repo.checkpoint(&a).await.unwrap(), None);
    }

    #[tokio::test]
    async fn parking_the_same_id_again_replaces_it_and_keeps_age_order() {
        let repo = InMemorySyncMetadataRepo::new();
        let f = FeatureKey::new("f");
        repo.park_conflict(&parked("x", 1)).await.unwrap();
        repo.park_conflict(&parked("y", 2)).await.unwrap();
        repo.park_conflict(&parked("x", 3)).await.unwrap();
        let ids: Vec<_> = repo
            .parked_conflicts(&f)
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(ids, ["y", "x"]);
        assert!(repo.remove_parked_conflict(&f, "x").await.unwrap());
        assert!(!repo.remove_parked_conflict(&f, "x").await.unwrap());
    }
}
