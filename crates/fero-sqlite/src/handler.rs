//! [`CollectionSync`]: the store's side of a collection's sync, joined with any
//! [`Remote`], as both of fero's handler traits.

use std::fmt;
use std::sync::Arc;

use fero::{
    ApplyContext, ApplyResult, BackgroundSyncHandler, FeatureKey, HandlerResult,
    InitialSyncHandler, PageGate, PushResult, RemoteChanges, ResyncOutcome, ResyncReason,
    SyncBatchResult, SyncCheckpoint, SyncPayload,
};
use fero_protocol::{
    ContentDigestResponse, DigestVersion, Document, MAX_PAGE_SIZE, PullRequest, PushRequest, Remote,
};

use crate::apply::{Page, apply_page, restore_base};
use crate::document::LocalDocument;
use crate::error::{Error, Result};
use crate::push::{pending_changes, record_push};
use crate::store::{SqliteStore, read_document};
use crate::verify::VerifyReport;

/// One collection of a [`SqliteStore`] synced with a [`Remote`]: implements
/// [`InitialSyncHandler`] and [`BackgroundSyncHandler`], so an app supplies only the remote.
///
/// Made by [`SqliteStore::sync_handler`]. Register it with FeroSync under the collection's name;
/// for a collection with both an initial and a background sync, register a clone under both, and
/// they share one checkpoint.
///
/// # What each call does
/// - fetch: `remote.pull` after the checkpoint, at most `batch_size` (capped at the protocol's
///   [`MAX_PAGE_SIZE`]) documents; tombstones arrive as tombstone payloads. A page fetched ahead
///   (during the apply of the page before it) goes through [`Remote::pull_ahead`] with the
///   engine's [`PageGate`], so `HttpRemote` reads it only once that apply has ended.
/// - apply (`save_to_local`, `apply_remote_changes`): the page, and the checkpoint the engine
///   passes in [`ApplyContext`], in one transaction; the result says the checkpoint is saved.
///   A page whose checkpoint is behind the stored one, a repeated id, or data that is not a
///   JSON object is refused with a typed [`Error`] (as the source of the [`fero::HandlerError`])
///   and nothing of it is written. A pending edit the page drops (`discard_local`) or replaces
///   with other content (a merge's `rebase`) is recorded in the conflict log
///   ([`SqliteStore::conflict_log`]) in the same transaction.
/// - `get_locally_modified`: the pending documents, oldest edit first, read through an index.
/// - `push_local_changes`: the stored pending state of each listed document, with its base
///   version and mutation id; the accepted answers are recorded in one transaction before the
///   call returns.
/// - `conflict_base`: the stored copy of the server state an edit rests on.
/// - `discard_local_change`: restores that copy and drops the outbox entries.
/// - `begin_resync`, `end_resync` (after the server's 410 `resync_required`, see
///   [`fero::resync`]): every row of the collection becomes unseen; each row of the pull from
///   scratch is marked seen in its page's transaction, and a synced row the server holds at an
///   older version is queued to be pushed back. At the end, pending local edits are kept (and
///   pushed); synced rows not seen are removed for
///   [`ResyncReason::TombstonesPurged`], and kept and queued to be pushed back as new writes
///   otherwise (a server restored from a backup is healed, never trusted to delete).
///
/// # Examples
/// ```no_run
/// use fero::{FeatureSyncConfig, FeroSync};
/// # #[allow(dead_code)]
/// # async fn demo(remote: impl fero_protocol::Remote) -> Result<(), Box<dyn std::error::Error>> {
/// let store = fero_sqlite::SqliteStore::open("app.db").await?;
/// let contacts = store.sync_handler("contacts", remote)?;
/// let sync = FeroSync::builder()
///     .metadata_repo(store.metadata_repo())
///     .background_sync("contacts", contacts, FeatureSyncConfig::new())
///     .build()?;
/// sync.run().await?;
/// # Ok(()) }
/// ```
pub struct CollectionSync<R> {
    store: SqliteStore,
    collection: Arc<str>,
    remote: R,
}

impl<R: Clone> Clone for CollectionSync<R> {
    fn clone(&self) -> Self {
        CollectionSync {
            store: self.store.clone(),
            collection: Arc::clone(&self.collection),
            remote: self.remote.clone(),
        }
    }
}

impl<R> fmt::Debug for CollectionSync<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CollectionSync")
            .field("collection", &self.collection)
            .field("store", &self.store)
            .field("remote", &std::any::type_name::<R>())
            .finish()
    }
}

impl<R: Remote> CollectionSync<R> {
    pub(crate) fn new(store: SqliteStore, collection: String, remote: R) -> Self {
        CollectionSync {
            store,
            collection: Arc::from(collection),
            remote,
        }
    }

    /// The collection.
    pub fn collection(&self) -> &str {
        &self.collection
    }

    /// The store.
    pub fn store(&self) -> &SqliteStore {
        &self.store
    }

    /// The remote.
    pub fn remote(&self) -> &R {
        &self.remote
    }

    /// Compares the server's count and digest of the collection with the store's: the content
    /// digest (version 2, [`Remote::content_digest`] and [`SqliteStore::content_digest`]) when
    /// the remote computes it, else version 1 ([`Remote::digest`] and [`SqliteStore::digest`]);
    /// [`VerifyReport::digest_version`] says which.
    ///
    /// A drift means rows the server has and the store does not (or at other versions), or the
    /// reverse: a missed page, a restored server backup; with version 2 also a row whose content
    /// differs at the same version (a corrupt or hand-edited local copy). When version 2 drifts,
    /// version 1 is compared too, and [`VerifyReport::content_drift`] says whether only content
    /// differs.
    ///
    /// To repair, call [`SqliteStore::reset_collection`] and then
    /// [`FeroSync::trigger_initial_sync`](fero::FeroSync::trigger_initial_sync) for the
    /// collection (or only the latter, which re-pulls everything over the existing rows and so
    /// rewrites a drifted row's content at its version). A verify run while server changes are
    /// still unpulled reports drift too: verify after a completed sync.
    ///
    /// # Errors
    /// [`Error::Remote`] when a digest cannot be fetched (a remote that does not compute
    /// version 2 is not an error: version 1 is compared), [`Error::Sqlite`] when the local one
    /// cannot be read.
    pub async fn verify(&self) -> Result<VerifyReport> {
        let remote_error = |source| Error::Remote {
            collection: self.collection.to_string(),
            source,
        };
        let remote = match self.remote.content_digest(&self.collection).await {
            Ok(remote) => remote,
            Err(error) if error.is_unsupported() => {
                tracing::debug!(
                    collection = %self.collection,
                    %error,
                    "the remote computes no content digest; verifying with digest version 1"
                );
                return self.verify_v1().await;
            }
            Err(error) => return Err(remote_error(error)),
        };
        let mut report = self.verify_against(remote).await?;
        if report.is_drift() {
            // Rare, so the second round trip is paid only here: same ids and versions with
            // other content is corruption or a hand edit, not a missed page.
            report.content_drift = self.verify_v1().await?.is_match();
        }
        Ok(report)
    }

    /// The store's content digest (version 2) of the collection against `remote`'s.
    pub(crate) async fn verify_against(
        &self,
        remote: ContentDigestResponse,
    ) -> Result<VerifyReport> {
        let local = self.store.content_digest(&self.collection).await?;
        Ok(VerifyReport {
            collection: self.collection.to_string(),
            digest_version: DigestVersion::V2,
            local_count: local.count(),
            local_digest: local.hex(),
            remote_count: remote.count,
            remote_digest: remote.digest,
            content_drift: false,
        })
    }

    /// [`verify`](Self::verify) with digest version 1 only.
    async fn verify_v1(&self) -> Result<VerifyReport> {
        let remote = self
            .remote
            .digest(&self.collection)
            .await
            .map_err(|source| Error::Remote {
                collection: self.collection.to_string(),
                source,
            })?;
        let local = self.store.digest(&self.collection).await?;
        Ok(VerifyReport {
            collection: self.collection.to_string(),
            digest_version: DigestVersion::V1,
            local_count: local.count(),
            local_digest: local.hex(),
            remote_count: remote.count,
            remote_digest: remote.digest,
            content_drift: false,
        })
    }

    async fn fetch(
        &self,
        checkpoint: Option<&SyncCheckpoint>,
        batch_size: usize,
        gate: Option<&PageGate>,
    ) -> Result<SyncBatchResult<Document>> {
        let limit = u32::try_from(batch_size)
            .unwrap_or(MAX_PAGE_SIZE)
            .clamp(1, MAX_PAGE_SIZE);
        let request = PullRequest {
            checkpoint: checkpoint.cloned(),
            limit,
            subscription: None,
        };
        let response = match gate {
            None => self.remote.pull(&self.collection, &request).await,
            Some(gate) => {
                self.remote
                    .pull_ahead(&self.collection, &request, gate)
                    .await
            }
        }
        .map_err(|source| Error::Remote {
            collection: self.collection.to_string(),
            source,
        })?;
        let items = response
            .items
            .into_iter()
            .map(|doc| SyncPayload {
                deleted: doc.deleted,
                item: doc,
            })
            .collect();
        Ok(if response.has_more {
            SyncBatchResult::page(items, response.checkpoint)
        } else {
            SyncBatchResult::final_page(items, response.checkpoint)
        })
    }

    pub(crate) async fn apply(
        &self,
        changes: RemoteChanges<LocalDocument, Document>,
        context: &ApplyContext,
    ) -> Result<ApplyResult> {
        self.apply_with(changes, context, context.checkpoint.clone(), |_, _| Ok(()))
            .await
    }

    /// [`apply`](Self::apply) saving `checkpoint` (the engine's, or a store's own form of it)
    /// with the page, and running `prepare` in the page's transaction before the page is
    /// written: it may write its own rows and change the page (a
    /// [`SubscriptionSync`](crate::SubscriptionSync) tags rows and filters the page there).
    pub(crate) async fn apply_with<F>(
        &self,
        changes: RemoteChanges<LocalDocument, Document>,
        context: &ApplyContext,
        checkpoint: Option<SyncCheckpoint>,
        prepare: F,
    ) -> Result<ApplyResult>
    where
        F: FnOnce(&rusqlite::Connection, &mut Page) -> Result<()> + Send + 'static,
    {
        let saves_checkpoint = checkpoint.is_some();
        let mut page = Page {
            collection: self.collection.to_string(),
            items: changes.items,
            discard_local: changes.discard_local,
            rebase: changes.rebase,
            checkpoint: checkpoint.map(|cp| (context.feature.clone(), cp)),
            resync: context.resync.is_some(),
            now: self.store.db().clock.now(),
        };
        let operation = format!(
            "apply page {} of {} (feature {})",
            context.page, self.collection, context.feature
        );
        let applied = self
            .store
            .db()
            .write(&operation, move |tx| {
                prepare(tx, &mut page)?;
                apply_page(tx, page)
            })
            .await?;
        tracing::debug!(
            collection = %self.collection,
            feature = %context.feature,
            page = context.page,
            applied,
            checkpoint_saved = saves_checkpoint,
            "applied a page"
        );
        Ok(if saves_checkpoint {
            ApplyResult::applied_with_checkpoint(applied)
        } else {
            ApplyResult::applied(applied)
        })
    }

    /// Starts a resync of the collection: every row becomes unseen (see [`fero::resync`]).
    async fn resync_begin(&self, feature: &FeatureKey, reason: ResyncReason) -> Result<()> {
        self.resync_begin_with(feature, reason, |_, _| Ok(())).await
    }

    /// [`resync_begin`](Self::resync_begin), running `also` (with the collection) in the same
    /// transaction.
    pub(crate) async fn resync_begin_with<F>(
        &self,
        feature: &FeatureKey,
        reason: ResyncReason,
        also: F,
    ) -> Result<()>
    where
        F: FnOnce(&rusqlite::Connection, &str) -> Result<()> + Send + 'static,
    {
        let collection = self.collection.to_string();
        let operation = format!("start the resync ({reason}) of {collection} (feature {feature})");
        let generation = self
            .store
            .db()
            .write(&operation, move |tx| {
                let generation = crate::resync::begin(tx, &collection, reason)?;
                also(tx, &collection)?;
                Ok(generation)
            })
            .await?;
        tracing::info!(collection = %self.collection, %feature, %reason, generation, "resync started");
        Ok(())
    }

    /// Ends a resync: settles the rows the pull from scratch did not bring back.
    pub(crate) async fn resync_end(
        &self,
        feature: &FeatureKey,
        reason: ResyncReason,
    ) -> Result<ResyncOutcome> {
        let collection = self.collection.to_string();
        let operation = format!("end the resync ({reason}) of {collection} (feature {feature})");
        let outcome = self
            .store
            .db()
            .write(&operation, move |tx| {
                crate::resync::end(tx, &collection, reason)
            })
            .await?;
        tracing::info!(collection = %self.collection, %feature, %reason, ?outcome, "resync ended");
        Ok(outcome)
    }

    /// The resync of the collection that began and did not end, if any.
    pub(crate) async fn resync_pending(&self) -> Result<Option<ResyncReason>> {
        let collection = self.collection.to_string();
        self.store
            .db()
            .read(
                &format!("read the resync under way of {collection}"),
                move |tx| crate::resync::in_progress(tx, &collection),
            )
            .await
    }

    pub(crate) async fn push(&self, items: &[LocalDocument]) -> Result<PushResult<Document>> {
        let collection = self.collection.to_string();
        let device = self.store.device_id().to_owned();
        let ids: Vec<String> = items.iter().map(|doc| doc.id.clone()).collect();
        let pushed = self
            .store
            .db()
            .read(&format!("read the pending edits of {collection}"), {
                let collection = collection.clone();
                move |tx| pending_changes(tx, &collection, &device, &ids)
            })
            .await?;
        if pushed.is_empty() {
            return Ok(PushResult::default());
        }
        let request = PushRequest {
            changes: pushed.iter().map(|p| p.change.clone()).collect(),
        };
        let response = self
            .remote
            .push(&collection, &request)
            .await
            .map_err(|source| Error::Remote {
                collection: collection.clone(),
                source,
            })?;
        // The outbox entries leave only here, in the transaction that records the answer.
        let result = self
            .store
            .db()
            .write(&format!("record a push of {collection}"), {
                let collection = collection.clone();
                move |tx| record_push(tx, &collection, &pushed, response)
            })
            .await?;
        tracing::debug!(
            %collection,
            accepted = result.accepted.len(),
            conflicts = result.conflicts.len(),
            rejected = result.rejected.len(),
            "recorded a push"
        );
        Ok(result)
    }
}

#[fero::async_trait]
impl<R: Remote> InitialSyncHandler for CollectionSync<R> {
    type Item = Document;

    async fn fetch_remote_data(
        &self,
        checkpoint: Option<&SyncCheckpoint>,
        batch_size: usize,
    ) -> HandlerResult<SyncBatchResult<Document>> {
        Ok(self.fetch(checkpoint, batch_size, None).await?)
    }

    async fn prefetch_remote_data(
        &self,
        checkpoint: Option<&SyncCheckpoint>,
        batch_size: usize,
        gate: &PageGate,
    ) -> HandlerResult<SyncBatchResult<Document>> {
        Ok(self.fetch(checkpoint, batch_size, Some(gate)).await?)
    }

    async fn save_to_local(
        &self,
        items: Vec<SyncPayload<Document>>,
        context: &ApplyContext,
    ) -> HandlerResult<ApplyResult> {
        Ok(self
            .apply(RemoteChanges::from_items(items), context)
            .await?)
    }

    async fn begin_resync(&self, feature: &FeatureKey, reason: ResyncReason) -> HandlerResult<()> {
        Ok(CollectionSync::resync_begin(self, feature, reason).await?)
    }

    async fn end_resync(
        &self,
        feature: &FeatureKey,
        reason: ResyncReason,
    ) -> HandlerResult<ResyncOutcome> {
        Ok(CollectionSync::resync_end(self, feature, reason).await?)
    }

    async fn resync_in_progress(
        &self,
        _feature: &FeatureKey,
    ) -> HandlerResult<Option<ResyncReason>> {
        Ok(self.resync_pending().await?)
    }
}

#[fero::async_trait]
impl<R: Remote> BackgroundSyncHandler for CollectionSync<R> {
    type Local = LocalDocument;
    type Server = Document;

    async fn get_locally_modified(&self) -> HandlerResult<Vec<LocalDocument>> {
        Ok(self.store.locally_modified(&self.collection).await?)
    }

    async fn fetch_remote_changes(
        &self,
        checkpoint: Option<&SyncCheckpoint>,
        batch_size: usize,
    ) -> HandlerResult<SyncBatchResult<Document>> {
        Ok(self.fetch(checkpoint, batch_size, None).await?)
    }

    async fn prefetch_remote_changes(
        &self,
        checkpoint: Option<&SyncCheckpoint>,
        batch_size: usize,
        gate: &PageGate,
    ) -> HandlerResult<SyncBatchResult<Document>> {
        Ok(self.fetch(checkpoint, batch_size, Some(gate)).await?)
    }

    async fn apply_remote_changes(
        &self,
        changes: RemoteChanges<LocalDocument, Document>,
        context: &ApplyContext,
    ) -> HandlerResult<ApplyResult> {
        Ok(self.apply(changes, context).await?)
    }

    async fn push_local_changes(
        &self,
        items: &[LocalDocument],
    ) -> HandlerResult<PushResult<Document>> {
        Ok(self.push(items).await?)
    }

    async fn conflict_base(&self, local: &LocalDocument) -> HandlerResult<Option<Document>> {
        let (collection, id) = (self.collection.to_string(), local.id.clone());
        let expected = local.base_version;
        let base = self
            .store
            .db()
            .read("read the base copy of a conflict", move |tx| {
                base_copy(tx, &collection, &id)
            })
            .await?;
        // Only the base the given copy rests on is its merge base.
        Ok(base.filter(|doc| Some(doc.version) == expected))
    }

    async fn discard_local_change(&self, id: &str) -> HandlerResult<()> {
        let (collection, id) = (self.collection.to_string(), id.to_owned());
        let operation = format!("discard the local change of {id:?} in {collection}");
        Ok(self
            .store
            .db()
            .write(&operation, move |tx| restore_base(tx, &collection, &id))
            .await?)
    }

    async fn begin_resync(&self, feature: &FeatureKey, reason: ResyncReason) -> HandlerResult<()> {
        Ok(CollectionSync::resync_begin(self, feature, reason).await?)
    }

    async fn end_resync(
        &self,
        feature: &FeatureKey,
        reason: ResyncReason,
    ) -> HandlerResult<ResyncOutcome> {
        Ok(CollectionSync::resync_end(self, feature, reason).await?)
    }

    async fn resync_in_progress(
        &self,
        _feature: &FeatureKey,
    ) -> HandlerResult<Option<ResyncReason>> {
        Ok(self.resync_pending().await?)
    }
}

/// The server state a row rests on, as a [`Document`]: the base copy for a pending edit, the row
/// itself for a synced one, `None` for a document the server never saw.
fn base_copy(conn: &rusqlite::Connection, collection: &str, id: &str) -> Result<Option<Document>> {
    use rusqlite::OptionalExtension;
    let Some(doc) = read_document(conn, collection, id)? else {
        return Ok(None);
    };
    let Some(version) = doc.base_version else {
        return Ok(None);
    };
    let (base_data, base_deleted, updated_at): (Option<String>, bool, Option<u64>) = conn
        .prepare_cached(
            "SELECT base_data, base_deleted, updated_at FROM fero_documents
             WHERE collection = ?1 AND id = ?2",
        )
        .and_then(|mut stmt| {
            stmt.query_row([collection, id], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
            })
            .optional()
        })
        .map_err(Error::sqlite(format!(
            "read the base copy of {id:?} in {collection}"
        )))?
        .unwrap_or((None, doc.deleted, None));
    let data = match base_data {
        Some(text) if doc.locally_modified => {
            crate::document::parse_json(&text, collection, id, "base data")?
        }
        _ => doc.data,
    };
    Ok(Some(Document {
        id: doc.id,
        sync_id: doc.sync_id.unwrap_or_default(),
        version,
        updated_at: fero::Timestamp(updated_at.unwrap_or_default()),
        deleted: base_deleted,
        data,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::list_modified_sql;

    #[tokio::test]
    async fn listing_pending_edits_reads_only_the_pending_index() {
        let store = SqliteStore::open_in_memory().await.unwrap();
        let plan: Vec<String> = store
            .db()
            .read("explain", |tx| {
                let sql = format!("EXPLAIN QUERY PLAN {}", list_modified_sql());
                let mut stmt = tx.prepare(&sql).unwrap();
                let rows = stmt
                    .query_map(["contacts"], |row| row.get::<_, String>(3))
                    .unwrap()
                    .collect::<rusqlite::Result<Vec<_>>>()
                    .unwrap();
                Ok(rows)
            })
            .await
            .unwrap();
        let plan = plan.join(" | ");
        assert!(
            plan.contains("USING INDEX fero_documents_pending"),
            "the pending-edit listing must use the partial index, plan: {plan}"
        );
        assert!(!plan.contains("TEMP B-TREE"), "no sort step, plan: {plan}");
    }
}
