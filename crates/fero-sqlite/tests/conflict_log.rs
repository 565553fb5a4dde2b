//! The conflict log: a local edit a conflict drops or overwrites is recorded in the transaction
//! that drops it, so a process that dies right after that commit (before the engine could send
//! its `ConflictResolved` event) still leaves the record; acknowledging removes it for good.
//!
//! The crash is in-process and deterministic: a handler around [`CollectionSync`] lets the
//! apply commit, then never returns (the process stops there); the run is dropped on a paused
//! clock's deadline, the engine and store are dropped, and the same file is opened again.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use fero::{
    ApplyContext, ApplyResult, BackgroundSyncHandler, Conflict, ConflictResolutionStrategy,
    FeatureSyncConfig, FeroSync, HandlerResult, PageGate, PushResult, RemoteChanges,
    SyncBatchResult, SyncCheckpoint, SyncEvent, Version,
};
use fero_protocol::Document;
use fero_sim::{SimClock, SimServer};
use fero_sqlite::{CollectionSync, ConflictLogOutcome, LocalDocument, SqliteStore, StoreOptions};
use futures::{FutureExt, StreamExt};
use serde_json::json;

const DOCS: &str = "docs";

/// [`CollectionSync`] with two test hooks: after an apply that drops a local edit commits, it
/// never returns (`crash_after_drop`, the process dies there); a `Custom` merge writes
/// `{"merged": true}`.
#[derive(Clone)]
struct Handler {
    inner: CollectionSync<SimServer>,
    crash_after_drop: Arc<AtomicBool>,
}

#[fero::async_trait]
impl BackgroundSyncHandler for Handler {
    type Local = LocalDocument;
    type Server = Document;

    async fn get_locally_modified(&self) -> HandlerResult<Vec<LocalDocument>> {
        self.inner.get_locally_modified().await
    }

    async fn fetch_remote_changes(
        &self,
        checkpoint: Option<&SyncCheckpoint>,
        batch_size: usize,
    ) -> HandlerResult<SyncBatchResult<Document>> {
        self.inner
            .fetch_remote_changes(checkpoint, batch_size)
            .await
    }

    async fn prefetch_remote_changes(
        &self,
        checkpoint: Option<&SyncCheckpoint>,
        batch_size: usize,
        gate: &PageGate,
    ) -> HandlerResult<SyncBatchResult<Document>> {
        self.inner
            .prefetch_remote_changes(checkpoint, batch_size, gate)
            .await
    }

    async fn apply_remote_changes(
        &self,
        changes: RemoteChanges<LocalDocument, Document>,
        context: &ApplyContext,
    ) -> HandlerResult<ApplyResult> {
        let drops = !changes.discard_local.is_empty();
        let applied = self.inner.apply_remote_changes(changes, context).await?;
        if drops && self.crash_after_drop.load(Ordering::SeqCst) {
            // Committed; the process dies before the engine sends the event.
            std::future::pending::<()>().await;
        }
        Ok(applied)
    }

    async fn push_local_changes(
        &self,
        items: &[LocalDocument],
    ) -> HandlerResult<PushResult<Document>> {
        self.inner.push_local_changes(items).await
    }

    async fn merge_conflict(
        &self,
        conflict: &Conflict<LocalDocument, Document>,
    ) -> HandlerResult<LocalDocument> {
        let mut merged = conflict.local.clone();
        merged.data = json!({ "merged": true });
        Ok(merged)
    }

    async fn conflict_base(&self, local: &LocalDocument) -> HandlerResult<Option<Document>> {
        self.inner.conflict_base(local).await
    }

    async fn discard_local_change(&self, id: &str) -> HandlerResult<()> {
        self.inner.discard_local_change(id).await
    }
}

async fn open(path: &Path, clock: SimClock) -> SqliteStore {
    SqliteStore::open_with(path, StoreOptions::new().device_id("device-a").clock(clock))
        .await
        .unwrap()
}

fn engine(
    store: &SqliteStore,
    server: &SimServer,
    strategy: ConflictResolutionStrategy,
    crash_after_drop: bool,
) -> FeroSync {
    let handler = Handler {
        inner: store.sync_handler(DOCS, server.clone()).unwrap(),
        crash_after_drop: Arc::new(AtomicBool::new(crash_after_drop)),
    };
    FeroSync::builder()
        .metadata_repo(store.metadata_repo())
        .background_sync(DOCS, handler, FeatureSyncConfig::new())
        .conflict_strategy(strategy)
        .build()
        .unwrap()
}

/// A device holding `a` at v1 from the server, with a pending local edit of it, while the server
/// moved `a` to v2: the next pull conflicts.
async fn conflicting(path: &Path, server: &SimServer, clock: SimClock) -> SqliteStore {
    server.seed(DOCS, "a", json!({ "v": "first" }));
    let store = open(path, clock).await;
    let sync = engine(
        &store,
        server,
        ConflictResolutionStrategy::ServerWins,
        false,
    );
    sync.run().await.unwrap();
    sync.dispose().await;
    store.put(DOCS, "a", json!({ "v": "local" })).await.unwrap();
    assert_eq!(server.seed(DOCS, "a", json!({ "v": "server" })), Version(2));
    store
}

fn conflict_events(events: &mut fero::SyncEventStream) -> usize {
    let mut seen = 0;
    while let Some(Some(event)) = events.next().now_or_never() {
        if let Ok(SyncEvent::ConflictResolved(_)) = event {
            seen += 1;
        }
    }
    seen
}

#[tokio::test(start_paused = true)]
async fn a_crash_right_after_the_drop_leaves_its_record_and_acknowledging_removes_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("device.db");
    let clock = SimClock::default();
    let server = SimServer::new();
    server.set_clock(clock);
    let store = conflicting(&path, &server, clock).await;
    let edit = store.get(DOCS, "a").await.unwrap().unwrap();
    assert!(store.conflict_log().await.unwrap().is_empty());

    let sync = engine(
        &store,
        &server,
        ConflictResolutionStrategy::ServerWins,
        true,
    );
    let mut events = sync.event_stream();
    let dropped_at = clock_now(clock);
    // The paused clock moves only when nothing is left to run: the deadline passes once the
    // apply committed and the handler stopped for good.
    let run = tokio::time::timeout(Duration::from_secs(60), sync.run()).await;
    assert!(
        run.is_err(),
        "the run must stop right after the drop: {run:?}"
    );
    assert_eq!(
        conflict_events(&mut events),
        0,
        "the process died before the event"
    );
    drop((sync, events, store));

    let store = open(&path, clock).await;
    let held = store.get(DOCS, "a").await.unwrap().unwrap();
    assert_eq!(held.data, json!({ "v": "server" }), "the drop committed");
    assert!(!held.locally_modified);
    let log = store.conflict_log().await.unwrap();
    assert_eq!(log.len(), 1, "{log:?}");
    let record = &log[0];
    assert_eq!(record.collection, DOCS);
    assert_eq!(record.id, "a");
    assert_eq!(record.outcome, ConflictLogOutcome::Dropped);
    assert_eq!(record.local_data, json!({ "v": "local" }));
    assert!(!record.local_deleted);
    assert_eq!(record.local_version, edit.version);
    assert_eq!(record.local_mutation_seq, edit.mutation_seq);
    assert_eq!(record.server_version, Some(Version(2)));
    assert_eq!(
        record.recorded_at, dropped_at,
        "stamped by the store's clock"
    );

    assert_eq!(
        store.acknowledge_conflicts(&[record.log_id]).await.unwrap(),
        1
    );
    assert!(store.conflict_log().await.unwrap().is_empty());
    assert_eq!(
        store.acknowledge_conflicts(&[record.log_id]).await.unwrap(),
        0,
        "acknowledging twice is harmless"
    );
    drop(store);
    let store = open(&path, clock).await;
    assert!(
        store.conflict_log().await.unwrap().is_empty(),
        "an acknowledged record stays gone after a reopen"
    );
}

fn clock_now(clock: SimClock) -> fero::Timestamp {
    use fero::Clock;
    clock.now()
}

#[tokio::test(start_paused = true)]
async fn without_a_crash_the_event_and_the_record_both_tell_of_the_drop() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("device.db");
    let clock = SimClock::default();
    let server = SimServer::new();
    let store = conflicting(&path, &server, clock).await;
    let sync = engine(
        &store,
        &server,
        ConflictResolutionStrategy::ServerWins,
        false,
    );
    let mut events = sync.event_stream();
    sync.run().await.unwrap();
    assert_eq!(conflict_events(&mut events), 1);
    let log = store.conflict_log().await.unwrap();
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0].outcome, ConflictLogOutcome::Dropped);
    assert_eq!(log[0].local_data, json!({ "v": "local" }));
}

#[tokio::test(start_paused = true)]
async fn a_merge_that_replaces_the_edit_records_the_edit_as_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("device.db");
    let clock = SimClock::default();
    let server = SimServer::new();
    let store = conflicting(&path, &server, clock).await;
    let sync = engine(&store, &server, ConflictResolutionStrategy::Custom, false);
    sync.run().await.unwrap();
    let held = store.get(DOCS, "a").await.unwrap().unwrap();
    assert_eq!(held.data, json!({ "merged": true }));
    let log = store.conflict_log().await.unwrap();
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0].outcome, ConflictLogOutcome::Overwritten);
    assert_eq!(log[0].local_data, json!({ "v": "local" }));
    assert_eq!(log[0].server_version, Some(Version(2)));
}

#[tokio::test(start_paused = true)]
async fn a_kept_local_edit_is_not_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("device.db");
    let clock = SimClock::default();
    let server = SimServer::new();
    let store = conflicting(&path, &server, clock).await;
    let sync = engine(
        &store,
        &server,
        ConflictResolutionStrategy::ClientWins,
        false,
    );
    sync.run().await.unwrap();
    assert_eq!(
        server.rows(DOCS)["a"].data,
        json!({ "v": "local" }),
        "the edit won"
    );
    assert!(store.conflict_log().await.unwrap().is_empty());
}
