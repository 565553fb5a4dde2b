//! [`Hooked`]: SQLite storage with test hooks around a few calls, every other call forwarded
//! unchanged, so a test that observes or stalls one call writes only that hook.

use async_trait::async_trait;
use fero::{SyncId, Timestamp};
use fero_protocol::{Change, ContentDigest, Digest};
use fero_server::{
    FeedPosition, PruneReport, PullPage, PurgeReport, PushOutcome, SeedReport, SeedRow,
    SqliteStorage, Storage, StorageError, UserId,
};

/// What a test does around [`Hooked`]'s calls; every hook does nothing by default.
#[async_trait]
pub trait Hooks: std::fmt::Debug + Send + Sync + 'static {
    /// Before a push reaches the storage (a gate may hold it here).
    async fn before_push(&self) {}
    /// Before a ping reaches the storage; an error is the ping's answer.
    fn before_ping(&self) -> Result<(), StorageError> {
        Ok(())
    }
    /// After a prune of push answers, with its cut-off and report.
    fn after_prune(
        &self,
        _started: tokio::time::Instant,
        _before: Timestamp,
        _report: &PruneReport,
    ) {
    }
    /// After a time-based tombstone purge, with its cut-off and report.
    fn after_purge(
        &self,
        _started: tokio::time::Instant,
        _before: Timestamp,
        _report: &PurgeReport,
    ) {
    }
}

/// SQLite storage whose calls go through `hooks`.
#[derive(Debug)]
pub struct Hooked<H> {
    pub inner: SqliteStorage,
    pub hooks: H,
}

#[async_trait]
impl<H: Hooks> Storage for Hooked<H> {
    async fn pull_from(
        &self,
        owner: &UserId,
        collection: &str,
        from: FeedPosition,
        limit: u32,
    ) -> Result<PullPage, StorageError> {
        self.inner.pull_from(owner, collection, from, limit).await
    }
    async fn push(
        &self,
        owner: &UserId,
        collection: &str,
        changes: Vec<Change>,
    ) -> Result<PushOutcome, StorageError> {
        self.hooks.before_push().await;
        self.inner.push(owner, collection, changes).await
    }
    async fn digest(&self, owner: &UserId, collection: &str) -> Result<Digest, StorageError> {
        self.inner.digest(owner, collection).await
    }
    async fn content_digest(
        &self,
        owner: &UserId,
        collection: &str,
    ) -> Result<ContentDigest, StorageError> {
        self.inner.content_digest(owner, collection).await
    }
    async fn purge_tombstones(&self, before: SyncId) -> Result<PurgeReport, StorageError> {
        self.inner.purge_tombstones(before).await
    }
    async fn purge_tombstones_deleted_before(
        &self,
        deleted_before: Timestamp,
    ) -> Result<PurgeReport, StorageError> {
        let started = tokio::time::Instant::now();
        let report = self
            .inner
            .purge_tombstones_deleted_before(deleted_before)
            .await?;
        self.hooks.after_purge(started, deleted_before, &report);
        Ok(report)
    }
    async fn prune_mutations(
        &self,
        recorded_before: Timestamp,
    ) -> Result<PruneReport, StorageError> {
        let started = tokio::time::Instant::now();
        let report = self.inner.prune_mutations(recorded_before).await?;
        self.hooks.after_prune(started, recorded_before, &report);
        Ok(report)
    }
    async fn seed(
        &self,
        owner: &UserId,
        collection: &str,
        rows: Vec<SeedRow>,
    ) -> Result<SeedReport, StorageError> {
        self.inner.seed(owner, collection, rows).await
    }
    async fn mark_restored(&self) -> Result<u64, StorageError> {
        self.inner.mark_restored().await
    }
    async fn ping(&self) -> Result<(), StorageError> {
        self.hooks.before_ping()?;
        self.inner.ping().await
    }
}
