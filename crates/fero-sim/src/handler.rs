//! The device handler: [`SimHandler`] joins a [`SimStore`] with a [`Remote`] (in the
//! simulation, the device's faulty [`SimRemote`]). [`DeviceContext`] is what a user's handler
//! factory receives to build its own handler instead.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use fero::{
    ApplyContext, ApplyResult, BackgroundSyncHandler, Conflict, HandlerResult, InitialSyncHandler,
    PushResult, RemoteChanges, SyncBatchResult, SyncCheckpoint, SyncPayload,
};
use fero_protocol::{Document, PullRequest, PullResponse, PushRequest, Remote};

use crate::network::SimRemote;
use crate::store::{SimDoc, SimStore};

/// The collection (and feature key) the simulation syncs.
pub const COLLECTION: &str = "docs";

/// Turns a pull answer into the engine's page: `has_more` decides between
/// [`SyncBatchResult::page`] and [`SyncBatchResult::final_page`]; tombstones keep their flag.
pub fn batch_from(response: PullResponse) -> SyncBatchResult<Document> {
    let items = response
        .items
        .into_iter()
        .map(|row| {
            let deleted = row.deleted;
            SyncPayload { item: row, deleted }
        })
        .collect();
    if response.has_more {
        SyncBatchResult::page(items, response.checkpoint)
    } else {
        SyncBatchResult::final_page(items, response.checkpoint)
    }
}

/// A background (and initial) sync handler over a [`SimStore`] and a [`Remote`].
///
/// Pushes carry each pending state's stable mutation id ([`SimDoc::to_change`]); answers are
/// recorded in the store in one durable step ([`SimStore::record_push`]); pages are applied with
/// their checkpoint in one durable step ([`SimStore::apply`]).
#[derive(Clone)]
pub struct SimHandler {
    store: SimStore,
    remote: Arc<dyn Remote>,
    collection: Arc<str>,
}

impl fmt::Debug for SimHandler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimHandler")
            .field("device", &self.store.device())
            .field("collection", &self.collection)
            .finish_non_exhaustive()
    }
}

impl SimHandler {
    /// A handler syncing `store` with `collection` of `remote`.
    pub fn new(store: SimStore, remote: impl Remote, collection: impl AsRef<str>) -> Self {
        SimHandler {
            store,
            remote: Arc::new(remote),
            collection: Arc::from(collection.as_ref()),
        }
    }

    async fn fetch(
        &self,
        checkpoint: Option<&SyncCheckpoint>,
        batch_size: usize,
    ) -> HandlerResult<SyncBatchResult<Document>> {
        let request = PullRequest {
            checkpoint: checkpoint.cloned(),
            limit: u32::try_from(batch_size).unwrap_or(u32::MAX),
            subscription: None,
        };
        let response = self.remote.pull(&self.collection, &request).await?;
        Ok(batch_from(response))
    }
}

#[async_trait]
impl InitialSyncHandler for SimHandler {
    type Item = Document;

    async fn fetch_remote_data(
        &self,
        checkpoint: Option<&SyncCheckpoint>,
        batch_size: usize,
    ) -> HandlerResult<SyncBatchResult<Document>> {
        self.fetch(checkpoint, batch_size).await
    }

    async fn save_to_local(
        &self,
        items: Vec<SyncPayload<Document>>,
        context: &ApplyContext,
    ) -> HandlerResult<ApplyResult> {
        // Same rule as background apply: a pending edit (made before initial sync finished) is
        // kept, and its push conflicts on the server's newer version.
        Ok(self
            .store
            .apply(RemoteChanges::from_items(items), context)
            .await?)
    }
}

#[async_trait]
impl BackgroundSyncHandler for SimHandler {
    type Local = SimDoc;
    type Server = Document;

    async fn get_locally_modified(&self) -> HandlerResult<Vec<SimDoc>> {
        Ok(self.store.modified()?)
    }

    async fn fetch_remote_changes(
        &self,
        checkpoint: Option<&SyncCheckpoint>,
        batch_size: usize,
    ) -> HandlerResult<SyncBatchResult<Document>> {
        self.fetch(checkpoint, batch_size).await
    }

    async fn apply_remote_changes(
        &self,
        changes: RemoteChanges<SimDoc, Document>,
        context: &ApplyContext,
    ) -> HandlerResult<ApplyResult> {
        Ok(self.store.apply(changes, context).await?)
    }

    async fn push_local_changes(&self, items: &[SimDoc]) -> HandlerResult<PushResult<Document>> {
        let request = PushRequest {
            changes: items
                .iter()
                .map(|doc| doc.to_change(self.store.device()))
                .collect(),
        };
        let response = self.remote.push(&self.collection, &request).await?;
        Ok(self.store.record_push(items, &response)?)
    }

    async fn conflict_base(&self, local: &SimDoc) -> HandlerResult<Option<Document>> {
        Ok(self.store.base_of(local))
    }

    async fn discard_local_change(&self, id: &str) -> HandlerResult<()> {
        Ok(self.store.discard(id)?)
    }
}

/// What a handler factory receives for each device (at start and after every restart).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct DeviceContext {
    /// The device's index.
    pub device: usize,
    /// The device's store, as this incarnation opens it.
    pub store: SimStore,
    /// The device's connection to the server, through the fault layer.
    pub remote: SimRemote,
    /// The collection to sync ([`COLLECTION`]).
    pub collection: String,
}

/// A user's handler, type-erased so a factory can be stored in the builder.
pub(crate) type DynHandler = Arc<dyn BackgroundSyncHandler<Local = SimDoc, Server = Document>>;

/// Builds a device's handler.
pub(crate) type HandlerFactory = Arc<dyn Fn(DeviceContext) -> DynHandler + Send + Sync>;

/// A type-erased handler, registered with the engine in place of a user's concrete type.
pub(crate) struct SharedHandler(pub(crate) DynHandler);

#[async_trait]
impl BackgroundSyncHandler for SharedHandler {
    type Local = SimDoc;
    type Server = Document;

    async fn get_locally_modified(&self) -> HandlerResult<Vec<SimDoc>> {
        self.0.get_locally_modified().await
    }

    async fn fetch_remote_changes(
        &self,
        checkpoint: Option<&SyncCheckpoint>,
        batch_size: usize,
    ) -> HandlerResult<SyncBatchResult<Document>> {
        self.0.fetch_remote_changes(checkpoint, batch_size).await
    }

    async fn apply_remote_changes(
        &self,
        changes: RemoteChanges<SimDoc, Document>,
        context: &ApplyContext,
    ) -> HandlerResult<ApplyResult> {
        self.0.apply_remote_changes(changes, context).await
    }

    async fn push_local_changes(&self, items: &[SimDoc]) -> HandlerResult<PushResult<Document>> {
        self.0.push_local_changes(items).await
    }

    async fn merge_conflict(&self, conflict: &Conflict<SimDoc, Document>) -> HandlerResult<SimDoc> {
        self.0.merge_conflict(conflict).await
    }

    async fn conflict_base(&self, local: &SimDoc) -> HandlerResult<Option<Document>> {
        self.0.conflict_base(local).await
    }

    async fn discard_local_change(&self, id: &str) -> HandlerResult<()> {
        self.0.discard_local_change(id).await
    }
}
