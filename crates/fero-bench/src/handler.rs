//! [`StoreHandler`]: the handlers the in-process workloads register, joining a [`CompactStore`]
//! with a [`GeneratedFeed`] (pulls) and an [`AcceptAllSink`] (pushes).
//!
//! The store sits behind one mutex taken once per page (never per item), as an app's store
//! behind a connection would be.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use fero::{
    ApplyContext, ApplyResult, BackgroundSyncHandler, HandlerResult, InitialSyncHandler,
    PushResult, RemoteChanges, SyncBatchResult, SyncCheckpoint, SyncPayload, Version, async_trait,
};

use crate::data::{BenchDoc, BenchItem};
use crate::server::{AcceptAllSink, GeneratedFeed};
use crate::store::CompactStore;

/// A store shared between the handler and the workload that checks it afterwards.
pub type SharedStore = Arc<Mutex<CompactStore>>;

/// Locks the store. A poisoned lock means a handler panicked mid-page; the benchmark fails on
/// that panic anyway, and the store's own invariants hold record by record, so keep serving it.
pub fn lock(store: &SharedStore) -> MutexGuard<'_, CompactStore> {
    store
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Pulls from a generated feed into a compact store and pushes its edits to a sink.
///
/// # Examples
/// ```
/// use std::sync::Arc;
/// use fero::{FeatureSyncConfig, FeroSync, Version};
/// use fero_bench::handler::{StoreHandler, lock};
/// use fero_bench::server::{AcceptAllSink, GeneratedFeed};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let handler = StoreHandler::new(
///     Arc::new(GeneratedFeed::new(250, Version(1), 0)),
///     Arc::new(AcceptAllSink::new(fero::SyncId(250))),
/// );
/// let store = handler.store();
/// let sync = FeroSync::builder()
///     .initial_sync("items", handler, FeatureSyncConfig::new().batch_size(100))
///     .build()?;
/// sync.run().await?;
/// assert_eq!(lock(&store).len(), 250);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct StoreHandler {
    store: SharedStore,
    feed: Arc<GeneratedFeed>,
    sink: Arc<AcceptAllSink>,
}

impl StoreHandler {
    /// A handler over a new, empty store.
    pub fn new(feed: Arc<GeneratedFeed>, sink: Arc<AcceptAllSink>) -> Self {
        Self::with_store(SharedStore::default(), feed, sink)
    }

    /// A handler over an existing store.
    pub fn with_store(
        store: SharedStore,
        feed: Arc<GeneratedFeed>,
        sink: Arc<AcceptAllSink>,
    ) -> Self {
        StoreHandler { store, feed, sink }
    }

    /// The store it writes.
    pub fn store(&self) -> SharedStore {
        self.store.clone()
    }
}

#[async_trait]
impl InitialSyncHandler for StoreHandler {
    type Item = BenchItem;

    async fn fetch_remote_data(
        &self,
        checkpoint: Option<&SyncCheckpoint>,
        batch_size: usize,
    ) -> HandlerResult<SyncBatchResult<BenchItem>> {
        self.feed.fetch(checkpoint, batch_size)
    }

    async fn save_to_local(
        &self,
        items: Vec<SyncPayload<BenchItem>>,
        _context: &ApplyContext,
    ) -> HandlerResult<ApplyResult> {
        lock(&self.store).apply_server_page(&items);
        Ok(ApplyResult::applied(items.len()))
    }
}

#[async_trait]
impl BackgroundSyncHandler for StoreHandler {
    type Local = BenchDoc;
    type Server = BenchItem;

    async fn get_locally_modified(&self) -> HandlerResult<Vec<BenchDoc>> {
        Ok(lock(&self.store).modified())
    }

    async fn fetch_remote_changes(
        &self,
        checkpoint: Option<&SyncCheckpoint>,
        batch_size: usize,
    ) -> HandlerResult<SyncBatchResult<BenchItem>> {
        self.feed.fetch(checkpoint, batch_size)
    }

    async fn apply_remote_changes(
        &self,
        changes: RemoteChanges<BenchDoc, BenchItem>,
        _context: &ApplyContext,
    ) -> HandlerResult<ApplyResult> {
        // The edits that lost, by id and the version the engine saw.
        let discard: HashMap<&str, Version> = changes
            .discard_local
            .iter()
            .map(|lost| (lost.id.as_str(), lost.version))
            .collect();
        let mut store = lock(&self.store);
        let mut applied = 0;
        for payload in &changes.items {
            let id = payload.item.id();
            if let Some(pending) = store.pending_version(id) {
                if discard.get(id) != Some(&pending) {
                    // An edit the engine did not see, or newer than the one that lost: keep it
                    // (RemoteChanges' contract); its push conflicts and is decided then.
                    continue;
                }
            }
            store.apply_server(&payload.item, payload.deleted);
            applied += 1;
        }
        for rebase in &changes.rebase {
            store.rebase(&rebase.local, &rebase.server);
            applied += 1;
        }
        Ok(ApplyResult::applied(applied))
    }

    async fn push_local_changes(&self, items: &[BenchDoc]) -> HandlerResult<PushResult<BenchItem>> {
        let result = self.sink.push(items);
        let mut next = 0;
        let acknowledged: Vec<_> = result
            .accepted
            .iter()
            .filter_map(|accepted| {
                // The sink answers in request order, so the pushed item is almost always the
                // next one.
                let position = if items.get(next).is_some_and(|i| i.id == accepted.id) {
                    Some(next)
                } else {
                    items.iter().position(|i| i.id == accepted.id)
                }?;
                next = position + 1;
                Some((accepted, items[position].version))
            })
            .collect();
        lock(&self.store).accept_page(&acknowledged);
        drop(acknowledged);
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fero::{FeatureKey, SyncId, SyncKind};

    fn handler_with_edit() -> (StoreHandler, BenchDoc) {
        let handler = StoreHandler::new(
            Arc::new(GeneratedFeed::new(0, Version(1), 0)),
            Arc::new(AcceptAllSink::new(SyncId(0))),
        );
        let item = BenchItem::generate(1, Version(1), SyncId(1));
        let mut store = lock(&handler.store);
        store.apply_server(&item, false);
        store.edit(item.id(), "Seen Edit", "seen@example.com", "seen", false);
        let seen = store.modified().remove(0);
        drop(store);
        (handler, seen)
    }

    fn server_wins(lost: BenchDoc) -> RemoteChanges<BenchDoc, BenchItem> {
        RemoteChanges {
            items: vec![SyncPayload::new(BenchItem::generate(
                1,
                Version(2),
                SyncId(2),
            ))],
            discard_local: vec![lost],
            rebase: Vec::new(),
        }
    }

    fn context() -> ApplyContext {
        ApplyContext::new(FeatureKey::new("items"), SyncKind::Background, None, 1)
    }

    #[tokio::test]
    async fn a_lost_edit_is_replaced_by_the_server_state() {
        let (handler, seen) = handler_with_edit();
        let result = handler
            .apply_remote_changes(server_wins(seen), &context())
            .await
            .unwrap();
        assert_eq!(result.applied, 1);
        let store = lock(&handler.store);
        assert_eq!(store.modified_count(), 0);
        assert_eq!(store.get("item-0000001").unwrap().version, Version(2));
    }

    #[tokio::test]
    async fn an_edit_newer_than_the_one_that_lost_is_kept() {
        let (handler, seen) = handler_with_edit();
        lock(&handler.store).edit("item-0000001", "Newer", "newer@example.com", "newer", false);
        let result = handler
            .apply_remote_changes(server_wins(seen), &context())
            .await
            .unwrap();
        assert_eq!(result.applied, 0);
        let store = lock(&handler.store);
        let doc = store.get("item-0000001").unwrap();
        assert!(doc.modified);
        assert_eq!(doc.body, "newer");
    }
}
