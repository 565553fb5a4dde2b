//! Partial sync by subscription: [`SubscriptionSync`] pulls one shared collection through a set
//! of [`Subscription`]s that may change while the app runs, each from its own checkpoint, as one
//! FeroSync feature; [`SqliteStore::subscribe`] and [`SqliteStore::unsubscribe`] change the set.
//!
//! # Why one handler
//! FeroSync's features are fixed when it is built, so subscriptions cannot be features. The set
//! lives in the store (table `fero_subscriptions`, so it survives a restart) and every fetch reads
//! it: a subscription added between two runs is pulled by the next, one dropped is not.
//!
//! # The composite checkpoint
//! The feature's checkpoint ([`SyncCheckpoint`]) is the handler's own:
//! - `last_sync_id` counts pages (each page's is one above the one it was fetched from), so it
//!   only grows, as the engine requires. It is not a server position.
//! - `cursor` is a JSON object: per subscription key ([`Subscription::key`]), the
//!   subscription's generation (see below), its own server checkpoint, and whether it is done
//!   in the current run.
//!
//! A fetch takes the first subscription by key that is not done, pulls one page of it
//! (`PullRequest::subscription`, from that subscription's checkpoint) and marks it done when the
//! server says no page follows. The page says "more to come" until the last one is done; that
//! page's checkpoint clears every done flag, so the next run pulls every subscription again. A
//! subscription that has nothing new (an empty page) is passed over inside the same fetch, since
//! an empty page would end the engine's pull. A subscription missing from the cursor, or
//! present with another generation, starts from no checkpoint; one no longer subscribed is left
//! out.
//!
//! Each subscription row has a generation, a number never handed out twice: a subscription
//! dropped and added again is a new one, which starts from the beginning, and a page fetched for
//! the old one is not taken for it.
//!
//! # Row tags
//! Table `fero_subscription_rows` records which subscription delivered which row, written in the
//! page's transaction:
//! - a live document tags the row with the page's subscription, even when the engine keeps it
//!   from the store (a pending edit on the same base, a parked conflict);
//! - a deletion (a tombstone that keeps its data) is applied as usual and clears every tag of
//!   the row;
//! - a *removal* (a tombstone whose data is JSON `null`: the row left the subscription, or the
//!   user lost access) clears the subscription's tag. When another subscription still tags the
//!   row, the row stays as it is; otherwise the removal is applied as usual (the row becomes a
//!   tombstone; a pending local edit meets the engine's conflict handling, or is kept and pushed).
//!
//! A removal of a row another subscription tags when the page is fetched is kept from the engine
//! (*withheld*), so it never reaches its conflict handling: a pending edit of a row the device
//! still reads is not dropped because one of two subscriptions let go of it.
//!
//! Which ids a page tags, untags and withholds travels in the page's own checkpoint (the `work`
//! of the cursor), so the transaction that saves the checkpoint gets the decisions of the fetch
//! that produced the page, however the engine overlaps fetches, and does that work; it stores
//! the checkpoint without it. That transaction is the page's apply, or, for a pull that ends on a
//! page left empty by withheld removals (the engine saves an empty page's checkpoint without an
//! apply), the metadata repo's `save_checkpoint` ([`SqliteStore::metadata_repo`]: this handler
//! needs the store's own repo). A page left empty by withheld removals before the end is not
//! sent: the next page of the pull is fetched in the same call, since an empty page would end
//! the engine's pull.
//!
//! The apply decides again, in its transaction: tags may have changed since the fetch (an
//! earlier page, an unsubscribe). A passed-on removal of a row now covered is dropped from the
//! page, with any conflict decision the engine took on it (the local edit stays pending); a
//! withheld removal of a row no longer covered is applied after all (a pending edit is kept and
//! pushed, as for any server change the engine did not see). A page whose subscription was
//! unsubscribed after its fetch writes none of its rows; its checkpoint is saved all the same.
//!
//! # Unsubscribing
//! [`SqliteStore::unsubscribe`] forgets the subscription and its tags and removes, in one
//! transaction, every row it tagged that no other subscription tags, except rows with a pending
//! local edit: those stay, with their outbox entries, and are pushed as usual. Rows are removed
//! outright, like [`SqliteStore::reset_collection`] removes them: no tombstone, no outbox entry
//! (the server is not told; the device just stops holding them).
//!
//! # Limits
//! - Pull-ahead is not supported: the handler's `prefetch_*` calls are the traits' defaults, a
//!   plain fetch that does not wait for the engine's [`PageGate`](fero::PageGate).
//! - [`SubscriptionSync::verify`] compares the store with the server's digest of the current
//!   subscriptions ([`Remote::subscriptions_digest`]).
//! - A row created on this device belongs to no subscription until a subscription delivers it;
//!   a row kept by an unsubscribe for its pending edit stays after its push, untagged, until a
//!   subscription delivers it again or the collection is reset.
//! - Sync a collection either with a [`SubscriptionSync`] or with a
//!   [`CollectionSync`], not both.
//! - A subscription the server refuses (an unknown rule, a 403) fails the feature's pull with
//!   [`Error::SubscriptionPull`], which names it, and holds up the subscriptions after it:
//!   unsubscribe it to let them go on. A 410 `resync_required` on any subscription resyncs the
//!   whole feature: every subscription is pulled again from scratch. The row tags are rebuilt
//!   by that pull: they are cleared when the resync begins.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use fero::{
    ApplyContext, ApplyResult, BackgroundSyncHandler, Conflict, FeatureKey, HandlerResult,
    InitialSyncHandler, PushResult, RemoteChanges, ResyncOutcome, ResyncReason, SyncBatchResult,
    SyncCheckpoint, SyncId, SyncPayload, Timestamp,
};
use fero_protocol::{Document, MAX_PAGE_SIZE, PullRequest, Remote, Subscription};
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::apply::{Page, apply_page};
use crate::document::{LocalDocument, check_collection, parse_json};
use crate::error::{Error, Result};
use crate::handler::CollectionSync;
use crate::metadata::write_checkpoint;
use crate::store::SqliteStore;
use crate::verify::VerifyReport;

/// What [`SqliteStore::unsubscribe`] did.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct UnsubscribeReport {
    /// `false` when the collection had no such subscription; then nothing was changed.
    pub existed: bool,
    /// Rows removed from the store: the subscription delivered them, no other subscription
    /// covers them, and they held no pending local edit.
    pub removed: u64,
    /// Rows only this subscription covered that stay because they hold a pending local edit;
    /// the edit is still pushed.
    pub kept_pending: u64,
    /// Rows the subscription delivered that stay because another subscription covers them.
    pub still_covered: u64,
}

impl SqliteStore {
    /// Adds `subscription` to the subscriptions of `collection` that its
    /// [`SubscriptionSync`] pulls (see [`subscriptions_handler`](Self::subscriptions_handler)).
    /// Returns `true` when it is new, `false` when the collection already had it (by
    /// [`Subscription::key`]); then nothing changes.
    ///
    /// The subscription is stored, so it survives a restart. A running FeroSync pulls it, from
    /// the beginning, in its next run of the feature (call `sync_now` or `trigger` to pull it
    /// at once).
    ///
    /// # Errors
    /// [`Error::InvalidCollection`], [`Error::InvalidSubscription`] (an empty rule name),
    /// [`Error::Encode`] or [`Error::Sqlite`].
    pub async fn subscribe(&self, collection: &str, subscription: Subscription) -> Result<bool> {
        check_collection(collection)?;
        let key = subscription.key();
        if subscription.name.trim().is_empty() {
            return Err(Error::InvalidSubscription {
                collection: collection.to_owned(),
                subscription: key,
                reason: "its rule name is empty".into(),
            });
        }
        let text = serde_json::to_string(&subscription).map_err(|source| Error::Encode {
            what: "subscription",
            id: key.clone(),
            source,
        })?;
        let collection = collection.to_owned();
        let operation = format!("subscribe {collection} to {key}");
        let added = self
            .db()
            .write(&operation.clone(), move |tx| {
                tx.prepare_cached(
                    "INSERT INTO fero_subscriptions (collection, key, subscription)
                     VALUES (?1, ?2, ?3)
                     ON CONFLICT (collection, key) DO NOTHING",
                )
                .and_then(|mut stmt| stmt.execute(params![collection, key, text]))
                .map_err(Error::sqlite(operation))
            })
            .await?;
        Ok(added == 1)
    }

    /// Drops `subscription` (by [`Subscription::key`]) from the subscriptions of `collection`,
    /// and with it the rows only it covered, in one transaction:
    /// - rows it delivered that another subscription covers stay
    ///   ([`UnsubscribeReport::still_covered`]);
    /// - rows only it covered are removed ([`UnsubscribeReport::removed`]), except rows with a
    ///   pending local edit, which stay with their outbox entries and are still pushed
    ///   ([`UnsubscribeReport::kept_pending`]).
    ///
    /// Rows are removed without tombstones or outbox entries, as
    /// [`reset_collection`](Self::reset_collection) removes them: the server is not told. A page
    /// of the subscription fetched before and applied after this call writes none of its rows.
    /// Subscribing again later starts the subscription from the beginning.
    ///
    /// # Errors
    /// [`Error::InvalidCollection`] or [`Error::Sqlite`].
    pub async fn unsubscribe(
        &self,
        collection: &str,
        subscription: &Subscription,
    ) -> Result<UnsubscribeReport> {
        check_collection(collection)?;
        let key = subscription.key();
        let operation = format!("unsubscribe {collection} from {key}");
        let report = self
            .db()
            .write(&operation.clone(), {
                let (collection, key) = (collection.to_owned(), key.clone());
                move |tx| unsubscribe_in(tx, &collection, &key, &operation)
            })
            .await?;
        tracing::debug!(%collection, subscription = %key, ?report, "unsubscribed");
        Ok(report)
    }

    /// The subscriptions of `collection`, ordered by [`Subscription::key`] (the order a
    /// [`SubscriptionSync`] pulls them in).
    ///
    /// # Errors
    /// [`Error::InvalidCollection`], [`Error::Sqlite`] or [`Error::CorruptJson`].
    pub async fn subscriptions(&self, collection: &str) -> Result<Vec<Subscription>> {
        check_collection(collection)?;
        let collection = collection.to_owned();
        self.db()
            .read("list the subscriptions", move |tx| {
                Ok(list_subscriptions(tx, &collection)?
                    .into_iter()
                    .map(|current| current.subscription)
                    .collect())
            })
            .await
    }

    /// The sync handler of `collection` against `remote` that pulls the collection's
    /// subscriptions (see [`subscribe`](Self::subscribe) and the [module
    /// docs](crate::subscription)): both [`InitialSyncHandler`] and [`BackgroundSyncHandler`].
    /// Register it with FeroSync under the collection's name as feature key, as
    /// [`sync_handler`](Self::sync_handler)'s.
    ///
    /// Pushes, local edits, conflicts and resyncs work as for [`CollectionSync`]; pulls go
    /// through every subscription in turn, each from its own checkpoint. With no subscription a
    /// pull fetches nothing and asks the remote nothing.
    ///
    /// # Errors
    /// [`Error::InvalidCollection`] for a name the protocol refuses.
    ///
    /// # Examples
    /// ```no_run
    /// use fero::{FeatureSyncConfig, FeroSync};
    /// use fero_protocol::Subscription;
    /// # #[allow(dead_code)]
    /// # async fn demo(remote: impl fero_protocol::Remote + Clone) -> Result<(), Box<dyn std::error::Error>> {
    /// let store = fero_sqlite::SqliteStore::open("app.db").await?;
    /// let apollo = Subscription::new("project").param("project_id", "apollo");
    /// store.subscribe("tasks", apollo.clone()).await?;
    ///
    /// let tasks = store.subscriptions_handler("tasks", remote)?;
    /// let sync = FeroSync::builder()
    ///     .metadata_repo(store.metadata_repo())
    ///     .initial_sync("tasks", tasks.clone(), FeatureSyncConfig::new())
    ///     .background_sync("tasks", tasks, FeatureSyncConfig::new())
    ///     .build()?;
    /// sync.run().await?; // the tasks of apollo
    ///
    /// // Later, on the same FeroSync: one more project, pulled from its beginning.
    /// let gemini = Subscription::new("project").param("project_id", "gemini");
    /// store.subscribe("tasks", gemini).await?;
    /// sync.sync_now().await?;
    ///
    /// // Done with apollo: its tasks leave the device, except those with unpushed edits.
    /// let report = store.unsubscribe("tasks", &apollo).await?;
    /// println!("removed {}, kept {} with pending edits", report.removed, report.kept_pending);
    /// # Ok(()) }
    /// ```
    pub fn subscriptions_handler<R: Remote>(
        &self,
        collection: impl Into<String>,
        remote: R,
    ) -> Result<SubscriptionSync<R>> {
        Ok(SubscriptionSync {
            inner: self.sync_handler(collection, remote)?,
        })
    }
}

/// One shared collection of a [`SqliteStore`] synced with a [`Remote`] through the collection's
/// subscriptions: implements [`InitialSyncHandler`] and [`BackgroundSyncHandler`].
///
/// Made by [`SqliteStore::subscriptions_handler`]; register it (a clone for each trait) under
/// the collection's name. The set of subscriptions is the store's
/// ([`SqliteStore::subscribe`], [`SqliteStore::unsubscribe`]) and may change while FeroSync
/// runs. Everything but the pull is [`CollectionSync`]'s; the pull, the composite checkpoint and
/// the row tags are described in the [module docs](crate::subscription).
///
/// # `CollectionSync` versus `SubscriptionSync`
/// [`CollectionSync`] pulls everything the user may read of a collection, with the server's
/// checkpoint; `SubscriptionSync` pulls only what its subscriptions select, with a checkpoint of
/// its own that holds one server checkpoint per subscription, and removes a subscription's rows
/// when it is dropped.
pub struct SubscriptionSync<R> {
    inner: CollectionSync<R>,
}

impl<R: Clone> Clone for SubscriptionSync<R> {
    fn clone(&self) -> Self {
        SubscriptionSync {
            inner: self.inner.clone(),
        }
    }
}

impl<R> fmt::Debug for SubscriptionSync<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubscriptionSync")
            .field("inner", &self.inner)
            .finish()
    }
}

impl<R: Remote> SubscriptionSync<R> {
    /// The collection.
    pub fn collection(&self) -> &str {
        self.inner.collection()
    }

    /// The store.
    pub fn store(&self) -> &SqliteStore {
        self.inner.store()
    }

    /// The remote.
    pub fn remote(&self) -> &R {
        self.inner.remote()
    }

    /// Compares the store's copy of the collection with what its subscriptions select on the
    /// server: the count and content digest (version 2) of the store's live rows against
    /// [`Remote::subscriptions_digest`] for the current subscriptions (their union, narrowed
    /// by the server to what the user may read).
    ///
    /// Verify after a completed sync: rows not pulled yet show as drift. Rows the store holds
    /// outside every subscription (a row created on this device and not pushed yet, a row an
    /// unsubscribe kept for its pending edit) show as drift too.
    ///
    /// # Errors
    /// [`Error::Remote`] when the digest cannot be fetched (a server without subscriptions
    /// answers [`Unsupported`](fero_protocol::RemoteErrorKind::Unsupported)), [`Error::Sqlite`]
    /// when the local one cannot be read.
    pub async fn verify(&self) -> Result<VerifyReport> {
        let collection = self.collection();
        let subscriptions = self.store().subscriptions(collection).await?;
        let remote = self
            .remote()
            .subscriptions_digest(collection, &subscriptions)
            .await
            .map_err(|source| Error::Remote {
                collection: collection.to_owned(),
                source,
            })?;
        self.inner.verify_against(remote).await
    }

    /// One page of the subscriptions after `checkpoint` (see the module docs).
    async fn fetch(
        &self,
        checkpoint: Option<&SyncCheckpoint>,
        batch_size: usize,
    ) -> Result<SyncBatchResult<Document>> {
        let collection = self.collection().to_owned();
        let limit = u32::try_from(batch_size)
            .unwrap_or(MAX_PAGE_SIZE)
            .clamp(1, MAX_PAGE_SIZE);
        let (counter, from) = Composite::from_checkpoint(&collection, checkpoint);
        let current = self
            .store()
            .db()
            .read(&format!("list the subscriptions of {collection}"), {
                let collection = collection.clone();
                move |tx| list_subscriptions(tx, &collection)
            })
            .await?;
        let mut state = Composite::new(&collection);
        for sub in &current {
            let position = match from.subs.get(&sub.key) {
                Some(position) if position.generation == sub.generation => position.clone(),
                _ => Position::start(sub.generation),
            };
            state.subs.insert(sub.key.clone(), position);
        }
        // The work of the page fetched from `checkpoint` was done by the transaction that saved
        // it (or, for a checkpoint the engine holds in memory, by the apply that saved it).
        let mut work: Vec<Delivery> = Vec::new();
        while let Some(sub) = current.iter().find(|sub| !state.subs[&sub.key].done) {
            let request = PullRequest {
                checkpoint: state.subs[&sub.key].checkpoint.clone(),
                limit,
                subscription: Some(sub.subscription.clone()),
            };
            let response = self
                .remote()
                .pull(&collection, &request)
                .await
                .map_err(|source| Error::SubscriptionPull {
                    collection: collection.clone(),
                    subscription: sub.key.clone(),
                    source: Box::new(source),
                })?;
            let removals: Vec<String> = response
                .items
                .iter()
                .filter(|doc| is_removal(doc))
                .map(|doc| doc.id.clone())
                .collect();
            let covered = if removals.is_empty() {
                HashSet::new()
            } else {
                self.store()
                    .db()
                    .read(&format!("read the row tags of {collection}"), {
                        let (collection, key) = (collection.clone(), sub.key.clone());
                        move |tx| tagged_elsewhere(tx, &collection, &key, removals)
                    })
                    .await?
            };
            let raw_empty = response.items.is_empty();
            // A page that does not move cannot be asked again with any other answer; an empty
            // one ends the subscription's run as it would end the engine's pull.
            let stalled = request.checkpoint.as_ref() == Some(&response.checkpoint);
            let (items, delivery) = classify(sub, response.items, &covered);
            let position = state
                .subs
                .get_mut(&sub.key)
                .unwrap_or_else(|| unreachable!("every current subscription has a position"));
            position.checkpoint = Some(response.checkpoint);
            position.done = !response.has_more || raw_empty || stalled;
            if response.has_more && stalled && !raw_empty {
                tracing::warn!(
                    %collection,
                    subscription = %sub.key,
                    "the server's page has more to come but does not move the checkpoint; the \
                     subscription is done for this run"
                );
            }
            if !delivery.is_empty() {
                work.push(delivery);
            }
            if !items.is_empty() {
                let last = state.subs.values().all(|position| position.done);
                if last {
                    state.start_next_run();
                }
                state.work = work;
                let checkpoint = state.checkpoint(&collection, counter + 1)?;
                return Ok(if last {
                    SyncBatchResult::final_page(items, checkpoint)
                } else {
                    SyncBatchResult::page(items, checkpoint)
                });
            }
        }
        // The pull ends on an empty page, which the engine does not apply but saves with the
        // metadata repo: withheld removals are done by that save (`save_checkpoint`).
        state.start_next_run();
        state.work = work;
        let unchanged = match checkpoint {
            None => state.subs.is_empty() && state.work.is_empty(),
            Some(cp) => {
                state.work.is_empty()
                    && cp.cursor.as_deref() == Some(state.encode(&collection)?.as_str())
            }
        };
        Ok(match (unchanged, checkpoint) {
            (true, None) => SyncBatchResult::empty(),
            (true, Some(cp)) => SyncBatchResult::final_page(Vec::new(), cp.clone()),
            (false, _) => {
                SyncBatchResult::final_page(Vec::new(), state.checkpoint(&collection, counter + 1)?)
            }
        })
    }

    /// Applies a page with its row tags (see the module docs).
    async fn apply(
        &self,
        changes: RemoteChanges<LocalDocument, Document>,
        context: &ApplyContext,
    ) -> Result<ApplyResult> {
        let collection = self.collection().to_owned();
        let parsed = context.checkpoint.as_ref().and_then(|checkpoint| {
            let composite = Composite::parse(checkpoint.cursor.as_deref()?)?;
            Some((checkpoint, composite))
        });
        let Some((checkpoint, mut composite)) = parsed else {
            // Not a page of this handler's pull (a conflict settled during a push, a manual
            // resolution, or a checkpoint of another handler): no rows to tag.
            return self.inner.apply(changes, context).await;
        };
        let work = std::mem::take(&mut composite.work);
        // Saved without the page's work, which this transaction does: a later run must not do it
        // again. (The engine keeps the checkpoint with the work for its next fetch, which
        // ignores it.)
        let saved = SyncCheckpoint {
            cursor: Some(composite.encode(&collection)?),
            ..checkpoint.clone()
        };
        self.inner
            .apply_with(changes, context, Some(saved), move |conn, page| {
                apply_work(conn, &collection, work, page)
            })
            .await
    }

    /// Starts a resync: the rows become unseen and the tags are cleared, to be rebuilt by the
    /// pull from scratch.
    async fn resync_begin(&self, feature: &FeatureKey, reason: ResyncReason) -> Result<()> {
        self.inner
            .resync_begin_with(feature, reason, |conn, collection| {
                conn.prepare_cached("DELETE FROM fero_subscription_rows WHERE collection = ?1")
                    .and_then(|mut stmt| stmt.execute([collection]))
                    .map_err(Error::sqlite(format!(
                        "clear the row tags of {collection} for a resync"
                    )))?;
                Ok(())
            })
            .await
    }
}

#[fero::async_trait]
impl<R: Remote> InitialSyncHandler for SubscriptionSync<R> {
    type Item = Document;

    async fn fetch_remote_data(
        &self,
        checkpoint: Option<&SyncCheckpoint>,
        batch_size: usize,
    ) -> HandlerResult<SyncBatchResult<Document>> {
        Ok(self.fetch(checkpoint, batch_size).await?)
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
        Ok(self.resync_begin(feature, reason).await?)
    }

    async fn end_resync(
        &self,
        feature: &FeatureKey,
        reason: ResyncReason,
    ) -> HandlerResult<ResyncOutcome> {
        Ok(self.inner.resync_end(feature, reason).await?)
    }

    async fn resync_in_progress(
        &self,
        _feature: &FeatureKey,
    ) -> HandlerResult<Option<ResyncReason>> {
        Ok(self.inner.resync_pending().await?)
    }
}

#[fero::async_trait]
impl<R: Remote> BackgroundSyncHandler for SubscriptionSync<R> {
    type Local = LocalDocument;
    type Server = Document;

    async fn get_locally_modified(&self) -> HandlerResult<Vec<LocalDocument>> {
        BackgroundSyncHandler::get_locally_modified(&self.inner).await
    }

    async fn fetch_remote_changes(
        &self,
        checkpoint: Option<&SyncCheckpoint>,
        batch_size: usize,
    ) -> HandlerResult<SyncBatchResult<Document>> {
        Ok(self.fetch(checkpoint, batch_size).await?)
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
        Ok(self.inner.push(items).await?)
    }

    async fn merge_conflict(
        &self,
        conflict: &Conflict<LocalDocument, Document>,
    ) -> HandlerResult<LocalDocument> {
        self.inner.merge_conflict(conflict).await
    }

    async fn conflict_base(&self, local: &LocalDocument) -> HandlerResult<Option<Document>> {
        self.inner.conflict_base(local).await
    }

    async fn discard_local_change(&self, id: &str) -> HandlerResult<()> {
        self.inner.discard_local_change(id).await
    }

    async fn begin_resync(&self, feature: &FeatureKey, reason: ResyncReason) -> HandlerResult<()> {
        Ok(self.resync_begin(feature, reason).await?)
    }

    async fn end_resync(
        &self,
        feature: &FeatureKey,
        reason: ResyncReason,
    ) -> HandlerResult<ResyncOutcome> {
        Ok(self.inner.resync_end(feature, reason).await?)
    }

    async fn resync_in_progress(
        &self,
        _feature: &FeatureKey,
    ) -> HandlerResult<Option<ResyncReason>> {
        Ok(self.inner.resync_pending().await?)
    }
}

/// A removal: the row left the subscription (or the user lost access). A deletion keeps its data.
fn is_removal(doc: &Document) -> bool {
    doc.deleted && doc.data.is_null()
}

/// A subscription as stored.
struct CurrentSubscription {
    key: String,
    generation: u64,
    subscription: Subscription,
}

/// The subscriptions of `collection`, by key.
fn list_subscriptions(conn: &Connection, collection: &str) -> Result<Vec<CurrentSubscription>> {
    let rows: Vec<(String, u64, String)> = conn
        .prepare_cached(
            "SELECT key, generation, subscription FROM fero_subscriptions
             WHERE collection = ?1 ORDER BY key",
        )
        .and_then(|mut stmt| {
            stmt.query_map([collection], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(Error::sqlite(format!(
            "list the subscriptions of {collection}"
        )))?;
    rows.into_iter()
        .map(|(key, generation, text)| {
            let value = parse_json(&text, collection, &key, "subscription")?;
            let subscription =
                serde_json::from_value(value).map_err(|source| Error::CorruptJson {
                    collection: collection.to_owned(),
                    id: key.clone(),
                    what: "subscription",
                    source,
                })?;
            Ok(CurrentSubscription {
                key,
                generation,
                subscription,
            })
        })
        .collect()
}

/// The generation of the subscription `key` of `collection`, `None` when it is not subscribed.
fn generation(conn: &Connection, collection: &str, key: &str) -> Result<Option<u64>> {
    conn.prepare_cached(
        "SELECT generation FROM fero_subscriptions WHERE collection = ?1 AND key = ?2",
    )
    .and_then(|mut stmt| {
        stmt.query_row([collection, key], |row| row.get(0))
            .optional()
    })
    .map_err(Error::sqlite(format!(
        "read the subscription {key} of {collection}"
    )))
}

/// The ids of `ids` that a subscription other than `key` tags.
fn tagged_elsewhere(
    conn: &Connection,
    collection: &str,
    key: &str,
    ids: Vec<String>,
) -> Result<HashSet<String>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT 1 FROM fero_subscription_rows
             WHERE collection = ?1 AND id = ?2 AND key <> ?3 LIMIT 1",
        )
        .map_err(Error::sqlite(format!("read the row tags of {collection}")))?;
    let mut covered = HashSet::new();
    for id in ids {
        let found = stmt
            .exists(params![collection, id, key])
            .map_err(Error::sqlite(format!(
                "read the row tags of {id:?} in {collection}"
            )))?;
        if found {
            covered.insert(id);
        }
    }
    Ok(covered)
}

/// `true` when any subscription tags `id`.
fn tagged(conn: &Connection, collection: &str, id: &str) -> Result<bool> {
    conn.prepare_cached(
        "SELECT 1 FROM fero_subscription_rows WHERE collection = ?1 AND id = ?2 LIMIT 1",
    )
    .and_then(|mut stmt| stmt.exists([collection, id]))
    .map_err(Error::sqlite(format!(
        "read the row tags of {id:?} in {collection}"
    )))
}

fn tag(conn: &Connection, collection: &str, key: &str, id: &str) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO fero_subscription_rows (collection, key, id) VALUES (?1, ?2, ?3)
         ON CONFLICT DO NOTHING",
    )
    .and_then(|mut stmt| stmt.execute([collection, key, id]))
    .map_err(Error::sqlite(format!(
        "tag {id:?} of {collection} with subscription {key}"
    )))?;
    Ok(())
}

fn untag(conn: &Connection, collection: &str, key: &str, id: &str) -> Result<()> {
    conn.prepare_cached(
        "DELETE FROM fero_subscription_rows WHERE collection = ?1 AND key = ?2 AND id = ?3",
    )
    .and_then(|mut stmt| stmt.execute([collection, key, id]))
    .map_err(Error::sqlite(format!(
        "untag {id:?} of {collection} from subscription {key}"
    )))?;
    Ok(())
}

fn clear_tags(conn: &Connection, collection: &str, id: &str) -> Result<()> {
    conn.prepare_cached("DELETE FROM fero_subscription_rows WHERE collection = ?1 AND id = ?2")
        .and_then(|mut stmt| stmt.execute([collection, id]))
        .map_err(Error::sqlite(format!(
            "clear the tags of the deleted row {id:?} of {collection}"
        )))?;
    Ok(())
}

/// Splits a pulled page of `sub` into the items the engine gets and what the apply must do.
fn classify(
    sub: &CurrentSubscription,
    docs: Vec<Document>,
    covered: &HashSet<String>,
) -> (Vec<SyncPayload<Document>>, Delivery) {
    let mut delivery = Delivery {
        key: sub.key.clone(),
        generation: sub.generation,
        ..Delivery::default()
    };
    let mut items = Vec::with_capacity(docs.len());
    for doc in docs {
        if is_removal(&doc) {
            if covered.contains(&doc.id) {
                delivery.withheld.push(doc);
                continue;
            }
            delivery.removed.push(doc.id.clone());
        } else if doc.deleted {
            delivery.deleted.push(doc.id.clone());
        } else {
            delivery.live.push(doc.id.clone());
        }
        items.push(SyncPayload {
            deleted: doc.deleted,
            item: doc,
        });
    }
    (items, delivery)
}

/// Writes the row tags of a page's work and fits the page to them, in the page's transaction
/// (before the page is written).
fn apply_work(
    conn: &Connection,
    collection: &str,
    work: Vec<Delivery>,
    page: &mut Page,
) -> Result<()> {
    // Ids of the page not to write: delivered by a subscription dropped since the fetch, or
    // removals of rows another subscription still covers.
    let mut dropped: HashSet<String> = HashSet::new();
    let mut removed = Vec::new();
    let mut withheld = Vec::new();
    for delivery in work {
        if generation(conn, collection, &delivery.key)? != Some(delivery.generation) {
            tracing::debug!(
                %collection,
                subscription = %delivery.key,
                "the subscription was dropped after its page was fetched; its rows are not applied"
            );
            dropped.extend(delivery.live);
            dropped.extend(delivery.deleted);
            dropped.extend(delivery.removed);
            continue;
        }
        for id in &delivery.live {
            tag(conn, collection, &delivery.key, id)?;
        }
        for id in &delivery.deleted {
            clear_tags(conn, collection, id)?;
        }
        for id in delivery.removed {
            untag(conn, collection, &delivery.key, &id)?;
            removed.push(id);
        }
        for doc in delivery.withheld {
            untag(conn, collection, &delivery.key, &doc.id)?;
            withheld.push(doc);
        }
    }
    // Decided after every tag of the page is written: a row the page brings live from another
    // subscription is covered.
    for id in removed {
        if tagged(conn, collection, &id)? {
            dropped.insert(id);
        }
    }
    if !dropped.is_empty() {
        // With the rows go the engine's conflict decisions on them: a pending edit of a row that
        // is not written stays pending (and is pushed), it is neither dropped nor rebased.
        page.items.retain(|p| !dropped.contains(&p.item.id));
        page.discard_local.retain(|l| !dropped.contains(&l.id));
        page.rebase.retain(|r| !dropped.contains(&r.local.id));
    }
    let mut present: HashSet<String> = page
        .items
        .iter()
        .map(|p| p.item.id.clone())
        .chain(page.rebase.iter().map(|r| r.local.id.clone()))
        .collect();
    for doc in withheld {
        // Withheld because another subscription covered the row when the page was fetched; it
        // no longer does, so the removal is applied after all. The engine never saw it: a pending
        // edit is kept by the write (and pushed), as for any change the engine did not list.
        if present.contains(&doc.id) || tagged(conn, collection, &doc.id)? {
            continue;
        }
        present.insert(doc.id.clone());
        page.items.push(SyncPayload {
            deleted: true,
            item: doc,
        });
    }
    Ok(())
}

/// Saves `feature`'s `checkpoint` inside the caller's transaction, for the metadata repo. A
/// subscription checkpoint that carries work (the withheld removals of a pull that ended on an
/// empty page, which the engine saves without an apply) has it done here, and is stored without
/// it, so a stored checkpoint never carries work.
pub(crate) fn save_checkpoint(
    conn: &Connection,
    feature: &FeatureKey,
    checkpoint: &SyncCheckpoint,
    now: Timestamp,
) -> Result<()> {
    let composite = checkpoint
        .cursor
        .as_deref()
        .and_then(Composite::parse)
        .filter(|composite| !composite.work.is_empty());
    let Some(mut composite) = composite else {
        return write_checkpoint(conn, feature, checkpoint);
    };
    let work = std::mem::take(&mut composite.work);
    let collection = composite.collection.clone();
    let saved = SyncCheckpoint {
        cursor: Some(composite.encode(&collection)?),
        ..checkpoint.clone()
    };
    let mut page = Page {
        collection: collection.clone(),
        items: Vec::new(),
        discard_local: Vec::new(),
        rebase: Vec::new(),
        checkpoint: Some((feature.clone(), saved)),
        resync: false,
        now,
    };
    apply_work(conn, &collection, work, &mut page)?;
    apply_page(conn, page)?;
    Ok(())
}

/// [`SqliteStore::unsubscribe`] inside the caller's transaction.
fn unsubscribe_in(
    conn: &Connection,
    collection: &str,
    key: &str,
    operation: &str,
) -> Result<UnsubscribeReport> {
    let sqlite = || Error::sqlite(operation.to_owned());
    let existed = conn
        .prepare_cached("DELETE FROM fero_subscriptions WHERE collection = ?1 AND key = ?2")
        .and_then(|mut stmt| stmt.execute([collection, key]))
        .map_err(sqlite())?
        > 0;
    if !existed {
        return Ok(UnsubscribeReport::default());
    }
    let elsewhere = "EXISTS (SELECT 1 FROM fero_subscription_rows o
                             WHERE o.collection = r.collection AND o.id = r.id AND o.key <> r.key)";
    let still_covered: u64 = conn
        .query_row(
            &format!(
                "SELECT count(*) FROM fero_subscription_rows r
                 WHERE r.collection = ?1 AND r.key = ?2 AND {elsewhere}"
            ),
            [collection, key],
            |row| row.get(0),
        )
        .map_err(sqlite())?;
    let kept_pending: u64 = conn
        .query_row(
            &format!(
                "SELECT count(*) FROM fero_subscription_rows r
                 JOIN fero_documents d ON d.collection = r.collection AND d.id = r.id
                 WHERE r.collection = ?1 AND r.key = ?2 AND d.locally_modified = 1
                   AND NOT {elsewhere}"
            ),
            [collection, key],
            |row| row.get(0),
        )
        .map_err(sqlite())?;
    // As `reset_collection` removes rows: outright, without outbox entries, and never a row with
    // a pending edit (the user's work, still to be pushed).
    let removed = conn
        .execute(
            &format!(
                "DELETE FROM fero_documents
                 WHERE collection = ?1 AND locally_modified = 0
                   AND id IN (SELECT r.id FROM fero_subscription_rows r
                              WHERE r.collection = ?1 AND r.key = ?2 AND NOT {elsewhere})"
            ),
            [collection, key],
        )
        .map_err(sqlite())? as u64;
    conn.execute(
        "DELETE FROM fero_subscription_rows WHERE collection = ?1 AND key = ?2",
        [collection, key],
    )
    .map_err(sqlite())?;
    Ok(UnsubscribeReport {
        existed,
        removed,
        kept_pending,
        still_covered,
    })
}

/// The format of the composite cursor: a cursor that does not carry it is not one.
const COMPOSITE_FORMAT: u32 = 1;

/// How every composite cursor starts (its first field, see [`Composite`]).
const COMPOSITE_PREFIX: &str = "{\"fero_subscriptions\":";

/// The cursor of a [`SubscriptionSync`]'s checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Composite {
    /// [`COMPOSITE_FORMAT`]; the first field, so a cursor is recognised by its start.
    fero_subscriptions: u32,
    /// The collection.
    collection: String,
    /// Per subscription key, where it stands.
    #[serde(default)]
    subs: BTreeMap<String, Position>,
    /// What the transaction that saves this checkpoint must do for the page it ends: the apply
    /// of the page, or for an empty last page the metadata repo's save. Never stored: that
    /// transaction stores the checkpoint without it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    work: Vec<Delivery>,
}

/// Where one subscription stands.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Position {
    /// The subscription's generation this position belongs to.
    generation: u64,
    /// The server's checkpoint for the subscription; `None` before its first page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    checkpoint: Option<SyncCheckpoint>,
    /// Pulled to its end in the current run.
    #[serde(default)]
    done: bool,
}

impl Position {
    fn start(generation: u64) -> Position {
        Position {
            generation,
            checkpoint: None,
            done: false,
        }
    }
}

/// What a page of one subscription delivered, as its apply needs it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Delivery {
    key: String,
    generation: u64,
    /// Live documents: tagged.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    live: Vec<String>,
    /// Deletions (tombstones with data): every tag cleared.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    deleted: Vec<String>,
    /// Removals passed on in the page: untagged; dropped from the page when still covered.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    removed: Vec<String>,
    /// Removals kept from the engine: untagged; applied when no longer covered.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    withheld: Vec<Document>,
}

impl Delivery {
    fn is_empty(&self) -> bool {
        self.live.is_empty()
            && self.deleted.is_empty()
            && self.removed.is_empty()
            && self.withheld.is_empty()
    }
}

impl Composite {
    fn new(collection: &str) -> Composite {
        Composite {
            fero_subscriptions: COMPOSITE_FORMAT,
            collection: collection.to_owned(),
            subs: BTreeMap::new(),
            work: Vec::new(),
        }
    }

    /// The composite in `cursor`, `None` when it is not one.
    fn parse(cursor: &str) -> Option<Composite> {
        // Checked first, so the metadata repo parses no other handler's cursor.
        if !cursor.starts_with(COMPOSITE_PREFIX) {
            return None;
        }
        serde_json::from_str::<Composite>(cursor)
            .ok()
            .filter(|composite| composite.fero_subscriptions == COMPOSITE_FORMAT)
    }

    /// The page counter and composite a fetch starts from. A checkpoint of another form (the
    /// feature was synced by a [`CollectionSync`] before) starts every subscription from the
    /// beginning, with the counter above its `last_sync_id`.
    fn from_checkpoint(collection: &str, checkpoint: Option<&SyncCheckpoint>) -> (u64, Composite) {
        let Some(checkpoint) = checkpoint else {
            return (0, Composite::new(collection));
        };
        let parsed = checkpoint.cursor.as_deref().and_then(Composite::parse);
        if parsed.is_none() {
            tracing::warn!(
                %collection,
                last_sync_id = checkpoint.last_sync_id.0,
                "the feature's checkpoint is not a subscription checkpoint; every subscription \
                 starts from the beginning"
            );
        }
        (
            checkpoint.last_sync_id.0,
            parsed.unwrap_or_else(|| Composite::new(collection)),
        )
    }

    /// Clears every done flag: the next run pulls every subscription again.
    fn start_next_run(&mut self) {
        for position in self.subs.values_mut() {
            position.done = false;
        }
    }

    fn encode(&self, collection: &str) -> Result<String> {
        serde_json::to_string(self).map_err(|source| Error::Encode {
            what: "subscription checkpoint",
            id: collection.to_owned(),
            source,
        })
    }

    fn checkpoint(&self, collection: &str, counter: u64) -> Result<SyncCheckpoint> {
        Ok(SyncCheckpoint::at(SyncId(counter)).with_cursor(self.encode(collection)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_of_another_form_is_not_a_composite() {
        assert_eq!(Composite::parse("b1-abc"), None);
        assert_eq!(Composite::parse("{\"subs\":{}}"), None);
        assert_eq!(
            Composite::parse("{\"fero_subscriptions\":2,\"collection\":\"t\"}"),
            None
        );
        let composite = Composite::new("tasks");
        let text = composite.encode("tasks").unwrap();
        assert!(text.starts_with(COMPOSITE_PREFIX), "{text}");
        assert_eq!(Composite::parse(&text), Some(composite));
        let (counter, from) =
            Composite::from_checkpoint("tasks", Some(&SyncCheckpoint::at(SyncId(41))));
        assert_eq!((counter, from), (41, Composite::new("tasks")));
    }
}
