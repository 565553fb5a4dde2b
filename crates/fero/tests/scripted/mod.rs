//! A handler for both sync kinds that serves pages from a script and records every call: for
//! tests of the page loop's edge cases (pages that do not move, applies that fail).
#![allow(dead_code, unreachable_pub)]

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use fero::memory::{LocalRecord, Record};
use fero::{
    ApplyContext, ApplyResult, BackgroundSyncHandler, HandlerError, HandlerResult,
    InitialSyncHandler, PushResult, RemoteChanges, SyncBatchResult, SyncCheckpoint, SyncId,
    SyncPayload, Version,
};

type Serve = dyn Fn(Option<&SyncCheckpoint>) -> SyncBatchResult<Record> + Send + Sync;

/// Fetches answer `serve(checkpoint)`; applies fail with the queued errors first, then record
/// what they wrote.
#[derive(Clone)]
pub struct Scripted {
    serve: Arc<Serve>,
    /// Fetches made (first and ahead).
    pub fetches: Arc<AtomicU64>,
    /// Apply calls made, failed ones included.
    pub applies: Arc<AtomicU64>,
    /// Ids of the server states written, in order, by applies that succeeded.
    pub applied: Arc<Mutex<Vec<String>>>,
    /// Ids of the local edits discarded by applies that succeeded.
    pub discarded: Arc<Mutex<Vec<String>>>,
    /// Errors the next applies return, one per call, before any succeeds.
    pub apply_errors: Arc<Mutex<VecDeque<HandlerError>>>,
    /// What `get_locally_modified` lists.
    pub local_edits: Arc<Mutex<Vec<LocalRecord>>>,
    /// Fetches after which every fetch fails permanently: a bound that makes a loop that never
    /// ends fail the test instead of hanging it.
    pub fetch_limit: u64,
}

impl std::fmt::Debug for Scripted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Scripted")
    }
}

impl Scripted {
    pub fn new(
        serve: impl Fn(Option<&SyncCheckpoint>) -> SyncBatchResult<Record> + Send + Sync + 'static,
    ) -> Self {
        Scripted {
            serve: Arc::new(serve),
            fetches: Default::default(),
            applies: Default::default(),
            applied: Default::default(),
            discarded: Default::default(),
            apply_errors: Default::default(),
            local_edits: Default::default(),
            fetch_limit: 50,
        }
    }

    /// Queues errors for the next applies.
    pub fn failing_applies(self, errors: impl IntoIterator<Item = HandlerError>) -> Self {
        self.apply_errors.lock().unwrap().extend(errors);
        self
    }

    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::SeqCst)
    }

    pub fn applies(&self) -> u64 {
        self.applies.load(Ordering::SeqCst)
    }

    pub fn applied(&self) -> Vec<String> {
        self.applied.lock().unwrap().clone()
    }

    fn fetch(&self, from: Option<&SyncCheckpoint>) -> HandlerResult<SyncBatchResult<Record>> {
        let n = self.fetches.fetch_add(1, Ordering::SeqCst) + 1;
        if n > self.fetch_limit {
            return Err(HandlerError::permanent(format!(
                "the test's fetch limit of {} was passed: the page loop does not end",
                self.fetch_limit
            )));
        }
        Ok((self.serve)(from))
    }

    fn apply(
        &self,
        items: &[SyncPayload<Record>],
        discard: &[LocalRecord],
    ) -> HandlerResult<ApplyResult> {
        self.applies.fetch_add(1, Ordering::SeqCst);
        if let Some(error) = self.apply_errors.lock().unwrap().pop_front() {
            return Err(error);
        }
        self.applied
            .lock()
            .unwrap()
            .extend(items.iter().map(|p| p.item.id.clone()));
        self.discarded
            .lock()
            .unwrap()
            .extend(discard.iter().map(|l| l.id.clone()));
        let mut edits = self.local_edits.lock().unwrap();
        edits.retain(|l| !discard.iter().any(|d| d.id == l.id));
        Ok(ApplyResult::applied(items.len()))
    }
}

/// A server record at `sync_id`, version 1.
pub fn rec(id: &str, sync_id: u64) -> SyncPayload<Record> {
    SyncPayload::new(Record {
        id: id.into(),
        sync_id: SyncId(sync_id),
        version: Version(1),
        data: serde_json::json!({ "from": "server" }),
    })
}

#[fero::async_trait]
impl InitialSyncHandler for Scripted {
    type Item = Record;
    async fn fetch_remote_data(
        &self,
        from: Option<&SyncCheckpoint>,
        _: usize,
    ) -> HandlerResult<SyncBatchResult<Record>> {
        self.fetch(from)
    }
    async fn save_to_local(
        &self,
        items: Vec<SyncPayload<Record>>,
        _: &ApplyContext,
    ) -> HandlerResult<ApplyResult> {
        self.apply(&items, &[])
    }
}

#[fero::async_trait]
impl BackgroundSyncHandler for Scripted {
    type Local = LocalRecord;
    type Server = Record;
    async fn get_locally_modified(&self) -> HandlerResult<Vec<LocalRecord>> {
        Ok(self.local_edits.lock().unwrap().clone())
    }
    async fn fetch_remote_changes(
        &self,
        from: Option<&SyncCheckpoint>,
        _: usize,
    ) -> HandlerResult<SyncBatchResult<Record>> {
        self.fetch(from)
    }
    async fn apply_remote_changes(
        &self,
        changes: RemoteChanges<LocalRecord, Record>,
        _: &ApplyContext,
    ) -> HandlerResult<ApplyResult> {
        self.apply(&changes.items, &changes.discard_local)
    }
    async fn push_local_changes(&self, _: &[LocalRecord]) -> HandlerResult<PushResult<Record>> {
        Ok(PushResult::default())
    }
}
