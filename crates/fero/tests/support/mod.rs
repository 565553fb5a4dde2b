//! Shared helpers for fero's integration tests: event collection and seeding.
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use fero::memory::{MemoryRemote, MemoryStore};
use fero::{FeroSync, SyncEvent, SyncEventStream};
use futures::StreamExt;

/// Fills a remote with `n` records `item-0000001`…
pub fn seeded_remote(n: usize) -> MemoryRemote {
    let remote = MemoryRemote::new();
    for i in 1..=n {
        remote.insert(format!("item-{i:07}"), serde_json::json!({ "n": i }));
    }
    remote
}

/// Every event currently buffered on `stream`, without waiting for more.
pub fn drain(stream: &mut SyncEventStream) -> Vec<SyncEvent> {
    let mut out = Vec::new();
    while let Some(Some(item)) = futures::FutureExt::now_or_never(stream.next()) {
        out.push(item.expect("the test subscriber must not lag"));
    }
    out
}

/// A short name per event, for asserting order.
pub fn name(event: &SyncEvent) -> String {
    let kind = match event {
        SyncEvent::InitialSyncRequired { .. } => "initial_required",
        SyncEvent::InitialSyncStarted { .. } => "initial_started",
        SyncEvent::InitialSyncProgress { .. } => "initial_progress",
        SyncEvent::InitialSyncCompleted { .. } => "initial_completed",
        SyncEvent::InitialSyncFailed { .. } => "initial_failed",
        SyncEvent::BackgroundSyncStarted { .. } => "background_started",
        SyncEvent::BackgroundSyncProgress { .. } => "background_progress",
        SyncEvent::BackgroundSyncCompleted { .. } => "background_completed",
        SyncEvent::BackgroundSyncFailed { .. } => "background_failed",
        SyncEvent::SyncSkipped { .. } => "skipped",
        SyncEvent::Retrying { .. } => "retrying",
        SyncEvent::ConflictResolved(_) => "conflict",
        SyncEvent::ChangeQuarantined { .. } => "quarantined",
        SyncEvent::Cancelled { .. } => "cancelled",
        SyncEvent::Custom { .. } => "custom",
        _ => "other",
    };
    format!("{}:{kind}", event.feature())
}

/// Asserts the store holds exactly the remote's live records at their versions.
pub fn assert_converged(store: &MemoryStore, remote: &MemoryRemote) {
    let local = store.snapshot();
    let server = remote.snapshot();
    assert_eq!(
        local.len(),
        server.len(),
        "local and server hold different counts"
    );
    assert_eq!(local, server, "local store differs from the server");
}

/// A sync with one background feature over `store` and `remote`.
pub fn single(store: &MemoryStore, remote: &MemoryRemote, batch: usize) -> FeroSync {
    FeroSync::builder()
        .background_sync(
            "items",
            store.handler(remote.clone()),
            fero::FeatureSyncConfig::new().batch_size(batch),
        )
        .seed(1)
        .build()
        .expect("valid configuration")
}

pub const SECOND: Duration = Duration::from_secs(1);

use std::sync::Arc;

use fero::memory::{LocalRecord, MemoryHandler, Record};
use fero::{
    ApplyContext, ApplyResult, BackgroundSyncHandler, Conflict, HandlerResult, InitialSyncHandler,
    PageGate, PushResult, RemoteChanges, SyncBatchResult, SyncCheckpoint, SyncPayload,
};

type Hook = Arc<dyn Fn(u64) + Send + Sync>;

/// A MemoryHandler with hooks: after each applied page, and before each push.
#[derive(Clone)]
pub struct Hooked {
    pub inner: MemoryHandler,
    pub after_apply: Option<Hook>,
    pub before_push: Option<Hook>,
    pub before_fetch: Option<Hook>,
    pub before_apply: Option<Hook>,
    pushes: Arc<std::sync::atomic::AtomicU64>,
    /// Applies that have returned (counted at the very end of the apply call).
    pub completed_applies: Arc<std::sync::atomic::AtomicU64>,
    /// Per prefetch: was its gate open when it was called, and how many applies had returned
    /// when the gate let it through.
    pub prefetches: Arc<std::sync::Mutex<Vec<(bool, u64)>>>,
}

impl std::fmt::Debug for Hooked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hooked")
    }
}

impl Hooked {
    pub fn new(inner: MemoryHandler) -> Self {
        Hooked {
            inner,
            after_apply: None,
            before_push: None,
            before_fetch: None,
            before_apply: None,
            pushes: Default::default(),
            completed_applies: Default::default(),
            prefetches: Default::default(),
        }
    }
    pub fn after_apply(mut self, hook: impl Fn(u64) + Send + Sync + 'static) -> Self {
        self.after_apply = Some(Arc::new(hook));
        self
    }
    pub fn before_fetch(mut self, hook: impl Fn(u64) + Send + Sync + 'static) -> Self {
        self.before_fetch = Some(Arc::new(hook));
        self
    }
    pub fn before_apply(mut self, hook: impl Fn(u64) + Send + Sync + 'static) -> Self {
        self.before_apply = Some(Arc::new(hook));
        self
    }
    pub fn before_push(mut self, hook: impl Fn(u64) + Send + Sync + 'static) -> Self {
        self.before_push = Some(Arc::new(hook));
        self
    }

    async fn through_gate(&self, gate: &PageGate) {
        let open_at_call = gate.is_open();
        gate.ready().await;
        let completed = self
            .completed_applies
            .load(std::sync::atomic::Ordering::SeqCst);
        self.prefetches
            .lock()
            .unwrap()
            .push((open_at_call, completed));
    }

    fn apply_returned(&self) {
        self.completed_applies
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

#[fero::async_trait]
impl InitialSyncHandler for Hooked {
    type Item = Record;
    async fn fetch_remote_data(
        &self,
        cp: Option<&SyncCheckpoint>,
        n: usize,
    ) -> HandlerResult<SyncBatchResult<Record>> {
        InitialSyncHandler::fetch_remote_data(&self.inner, cp, n).await
    }
    async fn save_to_local(
        &self,
        items: Vec<SyncPayload<Record>>,
        cx: &ApplyContext,
    ) -> HandlerResult<ApplyResult> {
        let r = self.inner.save_to_local(items, cx).await;
        if let (Ok(_), Some(hook)) = (&r, &self.after_apply) {
            hook(cx.page);
        }
        // Let other tasks run between pages, as a real store's I/O would.
        tokio::task::yield_now().await;
        self.apply_returned();
        r
    }
    async fn prefetch_remote_data(
        &self,
        cp: Option<&SyncCheckpoint>,
        n: usize,
        gate: &PageGate,
    ) -> HandlerResult<SyncBatchResult<Record>> {
        self.through_gate(gate).await;
        InitialSyncHandler::fetch_remote_data(self, cp, n).await
    }
}

#[fero::async_trait]
impl BackgroundSyncHandler for Hooked {
    type Local = LocalRecord;
    type Server = Record;
    async fn get_locally_modified(&self) -> HandlerResult<Vec<LocalRecord>> {
        self.inner.get_locally_modified().await
    }
    async fn fetch_remote_changes(
        &self,
        cp: Option<&SyncCheckpoint>,
        n: usize,
    ) -> HandlerResult<SyncBatchResult<Record>> {
        if let Some(hook) = &self.before_fetch {
            hook(cp.map_or(0, |c| c.last_sync_id.0));
        }
        self.inner.fetch_remote_changes(cp, n).await
    }
    async fn apply_remote_changes(
        &self,
        changes: RemoteChanges<LocalRecord, Record>,
        cx: &ApplyContext,
    ) -> HandlerResult<ApplyResult> {
        if let Some(hook) = &self.before_apply {
            hook(cx.page);
        }
        let r = self.inner.apply_remote_changes(changes, cx).await;
        if let (Ok(_), Some(hook)) = (&r, &self.after_apply) {
            hook(cx.page);
        }
        tokio::task::yield_now().await;
        self.apply_returned();
        r
    }
    async fn prefetch_remote_changes(
        &self,
        cp: Option<&SyncCheckpoint>,
        n: usize,
        gate: &PageGate,
    ) -> HandlerResult<SyncBatchResult<Record>> {
        self.through_gate(gate).await;
        BackgroundSyncHandler::fetch_remote_changes(self, cp, n).await
    }
    async fn push_local_changes(&self, items: &[LocalRecord]) -> HandlerResult<PushResult<Record>> {
        let n = self
            .pushes
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1;
        if let Some(hook) = &self.before_push {
            hook(n);
        }
        self.inner.push_local_changes(items).await
    }
    async fn merge_conflict(
        &self,
        conflict: &Conflict<LocalRecord, Record>,
    ) -> HandlerResult<LocalRecord> {
        self.inner.merge_conflict(conflict).await
    }
    async fn conflict_base(&self, local: &LocalRecord) -> HandlerResult<Option<Record>> {
        self.inner.conflict_base(local).await
    }
    async fn discard_local_change(&self, id: &str) -> HandlerResult<()> {
        self.inner.discard_local_change(id).await
    }
}

/// Conflict events among `events`.
pub fn conflicts(events: &[SyncEvent]) -> Vec<fero::ConflictEvent> {
    events
        .iter()
        .filter_map(|e| match e {
            SyncEvent::ConflictResolved(c) => Some(c.clone()),
            _ => None,
        })
        .collect()
}
