//! In-memory reference handlers: a [`MemoryRemote`] (a server with the reference server's
//! semantics: versions, `sync_id`, optimistic push, tombstones) and a [`MemoryStore`] (a local
//! document store with pending edits), joined by a [`MemoryHandler`].
//!
//! They serve the crate's examples and tests, and are the simple model fero's property tests
//! check the engine against. They are complete and correct, but keep everything in memory; use
//! `fero-sqlite` and `fero-http` for real apps.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::checkpoint::SyncCheckpoint;
use crate::conflict::Conflict;
use crate::handler::{BackgroundSyncHandler, HandlerError, HandlerResult, InitialSyncHandler};
use crate::item::{LocalItem, ServerItem, SyncId, SyncPayload, Version};
use crate::page::{
    ApplyContext, ApplyResult, PushAccepted, PushConflict, PushRejected, PushResult, RemoteChanges,
    SyncBatchResult,
};

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The state is plain data updated under the lock in single steps; a panic elsewhere cannot
    // leave it half-written, so a poisoned lock is still safe to use.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A server-side record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The id.
    pub id: String,
    /// Its place in the change feed.
    pub sync_id: SyncId,
    /// Its version.
    pub version: Version,
    /// Its content.
    pub data: serde_json::Value,
}

impl ServerItem for Record {
    fn id(&self) -> &str {
        &self.id
    }
    fn sync_id(&self) -> SyncId {
        self.sync_id
    }
    fn version(&self) -> Version {
        self.version
    }
}

/// A local document.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LocalRecord {
    /// The id.
    pub id: String,
    /// The local copy's version (server version, +1 per local edit).
    pub version: Version,
    /// The server version a pending edit was made on.
    pub base_version: Option<Version>,
    /// A pending local edit exists.
    pub modified: bool,
    /// The pending edit is a deletion.
    pub deleted: bool,
    /// Its content.
    pub data: serde_json::Value,
}

impl LocalItem for LocalRecord {
    fn id(&self) -> &str {
        &self.id
    }
    fn version(&self) -> Version {
        self.version
    }
    fn locally_modified(&self) -> bool {
        self.modified
    }
    fn base_version(&self) -> Option<Version> {
        self.base_version
    }
}

#[derive(Debug, Default)]
struct RemoteState {
    items: HashMap<String, (Record, bool)>,
    /// sync_id -> id: one entry per id, at its latest change.
    feed: BTreeMap<SyncId, String>,
    next_sync_id: u64,
    fetches: Vec<Option<SyncId>>,
    fail_fetches: Vec<HandlerError>,
    fail_pushes: Vec<HandlerError>,
    reject_ids: HashSet<String>,
    pushes: u64,
    history: Vec<(Record, bool)>,
}

/// An in-memory server with the reference server's semantics.
///
/// Cloning shares the server. Faults can be scripted (`fail_next_fetch`, `fail_next_push`,
/// `reject_pushes_of`) and fetches are logged, so tests can assert what was fetched.
#[derive(Clone, Debug, Default)]
pub struct MemoryRemote {
    state: Arc<Mutex<RemoteState>>,
}

impl MemoryRemote {
    /// An empty server.
    pub fn new() -> Self {
        Self::default()
    }

    fn write(state: &mut RemoteState, id: &str, data: serde_json::Value, deleted: bool) -> Record {
        state.next_sync_id += 1;
        let sync_id = SyncId(state.next_sync_id);
        let version = match state.items.get(id) {
            Some((old, _)) => {
                state.feed.remove(&old.sync_id);
                old.version.next()
            }
            None => Version(1),
        };
        let record = Record {
            id: id.to_owned(),
            sync_id,
            version,
            data,
        };
        state.feed.insert(sync_id, id.to_owned());
        state.items.insert(id.to_owned(), (record.clone(), deleted));
        state.history.push((record.clone(), deleted));
        record
    }

    /// Writes `id` as another client would: a new version and a new `sync_id`.
    pub fn insert(&self, id: impl Into<String>, data: serde_json::Value) -> Record {
        Self::write(&mut lock(&self.state), &id.into(), data, false)
    }

    /// Deletes `id` as another client would (a tombstone).
    pub fn delete(&self, id: &str) -> Option<Record> {
        let mut state = lock(&self.state);
        let data = state.items.get(id)?.0.data.clone();
        Some(Self::write(&mut state, id, data, true))
    }

    /// The live records, by id: `(version, data)`.
    pub fn snapshot(&self) -> BTreeMap<String, (Version, serde_json::Value)> {
        lock(&self.state)
            .items
            .values()
            .filter(|(_, deleted)| !deleted)
            .map(|(r, _)| (r.id.clone(), (r.version, r.data.clone())))
            .collect()
    }

    /// A record and its tombstone flag.
    pub fn get(&self, id: &str) -> Option<(Record, bool)> {
        lock(&self.state).items.get(id).cloned()
    }

    /// The checkpoints fetches started from, in order (`None`: from the beginning).
    pub fn fetch_log(&self) -> Vec<Option<SyncId>> {
        lock(&self.state).fetches.clone()
    }

    /// Every write the server accepted, in order, with its tombstone flag.
    pub fn history(&self) -> Vec<(Record, bool)> {
        lock(&self.state).history.clone()
    }

    /// Push calls made.
    pub fn push_count(&self) -> u64 {
        lock(&self.state).pushes
    }

    /// The next fetch fails with `error` (queue several by calling again).
    pub fn fail_next_fetch(&self, error: HandlerError) {
        lock(&self.state).fail_fetches.push(error);
    }

    /// The next push fails with `error` before anything is written.
    pub fn fail_next_push(&self, error: HandlerError) {
        lock(&self.state).fail_pushes.push(error);
    }

    /// Drops every scripted failure not yet used (rejections included): faults switched off.
    pub fn clear_faults(&self) {
        let mut state = lock(&self.state);
        state.fail_fetches.clear();
        state.fail_pushes.clear();
        state.reject_ids.clear();
    }

    /// Pushes of `id` are rejected for good from now on (a validation failure).
    pub fn reject_pushes_of(&self, id: impl Into<String>) {
        lock(&self.state).reject_ids.insert(id.into());
    }

    /// Changes after `checkpoint`, at most `limit`.
    ///
    /// # Errors
    /// A scripted failure.
    pub fn fetch(
        &self,
        checkpoint: Option<&SyncCheckpoint>,
        limit: usize,
    ) -> HandlerResult<SyncBatchResult<Record>> {
        let mut state = lock(&self.state);
        state.fetches.push(checkpoint.map(|c| c.last_sync_id));
        if !state.fail_fetches.is_empty() {
            return Err(state.fail_fetches.remove(0));
        }
        let after = checkpoint.map_or(0, |c| c.last_sync_id.0);
        let mut items = Vec::with_capacity(limit.min(state.feed.len()));
        let mut more = false;
        for (_, id) in state.feed.range(SyncId(after.saturating_add(1))..) {
            if items.len() == limit {
                more = true;
                break;
            }
            let (record, deleted) = &state.items[id];
            items.push(SyncPayload {
                item: record.clone(),
                deleted: *deleted,
            });
        }
        Ok(match items.last() {
            Some(last) if more => {
                let cp = SyncCheckpoint::at(last.item.sync_id);
                SyncBatchResult::page(items, cp)
            }
            _ => SyncBatchResult::last(items),
        })
    }

    /// Applies pushed changes with optimistic concurrency: a change is accepted only if its base
    /// version equals the server's current version (or it creates an id the server does not have).
    ///
    /// # Errors
    /// A scripted failure (nothing written).
    pub fn push(&self, changes: &[LocalRecord]) -> HandlerResult<PushResult<Record>> {
        let mut state = lock(&self.state);
        state.pushes += 1;
        if !state.fail_pushes.is_empty() {
            return Err(state.fail_pushes.remove(0));
        }
        let mut result = PushResult::default();
        for change in changes {
            if state.reject_ids.contains(&change.id) {
                result.rejected.push(PushRejected {
                    id: change.id.clone(),
                    reason: "rejected by validation".into(),
                });
                continue;
            }
            let current = state.items.get(&change.id).map(|(r, d)| (r.version, *d));
            let matches = match (current, change.base_version) {
                (None, None) => true,
                (Some((v, _)), Some(base)) => v == base,
                _ => false,
            };
            if matches {
                let record =
                    Self::write(&mut state, &change.id, change.data.clone(), change.deleted);
                result.accepted.push(PushAccepted {
                    id: record.id,
                    version: record.version,
                    sync_id: record.sync_id,
                });
            } else {
                let server = state.items.get(&change.id).map(|(r, d)| SyncPayload {
                    item: r.clone(),
                    deleted: *d,
                });
                result.conflicts.push(PushConflict {
                    id: change.id.clone(),
                    server,
                });
            }
        }
        Ok(result)
    }
}

#[derive(Debug, Default)]
struct StoreState {
    docs: HashMap<String, (LocalRecord, u64)>,
    /// The last server state of each id, for discarding an edit and for three-way merges.
    server_copies: HashMap<String, Record>,
    edit_seq: u64,
    fail_applies: Vec<HandlerError>,
    applied_pages: u64,
}

/// An in-memory local store: documents with pending edits.
///
/// Cloning shares the store.
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    state: Arc<Mutex<StoreState>>,
}

/// A merge function for [`ConflictResolutionStrategy::Custom`](crate::ConflictResolutionStrategy::Custom):
/// `(local data, server data, base data)` to merged data.
pub type MergeFn = Arc<
    dyn Fn(&serde_json::Value, &serde_json::Value, Option<&serde_json::Value>) -> serde_json::Value
        + Send
        + Sync,
>;

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// A handler joining this store with `remote`.
    pub fn handler(&self, remote: MemoryRemote) -> MemoryHandler {
        MemoryHandler {
            store: self.clone(),
            remote,
            merge: None,
        }
    }

    /// A local edit: writes `data` and marks the document modified.
    pub fn put(&self, id: impl Into<String>, data: serde_json::Value) {
        self.edit(id.into(), data, false);
    }

    /// A local deletion.
    pub fn delete(&self, id: &str) {
        let data = self.get(id).map(|d| d.data).unwrap_or_default();
        self.edit(id.to_owned(), data, true);
    }

    fn edit(&self, id: String, data: serde_json::Value, deleted: bool) {
        let mut state = lock(&self.state);
        state.edit_seq += 1;
        let seq = state.edit_seq;
        let record = match state.docs.remove(&id) {
            Some((old, _)) => LocalRecord {
                base_version: if old.modified {
                    old.base_version
                } else {
                    Some(old.version)
                },
                version: old.version.next(),
                modified: true,
                deleted,
                data,
                id: id.clone(),
            },
            None => LocalRecord {
                id: id.clone(),
                version: Version(1),
                base_version: None,
                modified: true,
                deleted,
                data,
            },
        };
        state.docs.insert(id, (record, seq));
    }

    /// A live document (`None` when absent or deleted locally).
    pub fn get(&self, id: &str) -> Option<LocalRecord> {
        lock(&self.state)
            .docs
            .get(id)
            .filter(|(d, _)| !d.deleted)
            .map(|(d, _)| d.clone())
    }

    /// Live documents.
    pub fn len(&self) -> usize {
        lock(&self.state)
            .docs
            .values()
            .filter(|(d, _)| !d.deleted)
            .count()
    }

    /// `true` with no live documents.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Documents with pending edits.
    pub fn modified_count(&self) -> usize {
        lock(&self.state)
            .docs
            .values()
            .filter(|(d, _)| d.modified)
            .count()
    }

    /// Pages applied so far.
    pub fn applied_pages(&self) -> u64 {
        lock(&self.state).applied_pages
    }

    /// The live documents, by id: `(version, data)`; comparable with [`MemoryRemote::snapshot`].
    pub fn snapshot(&self) -> BTreeMap<String, (Version, serde_json::Value)> {
        lock(&self.state)
            .docs
            .values()
            .filter(|(d, _)| !d.deleted)
            .map(|(d, _)| (d.id.clone(), (d.version, d.data.clone())))
            .collect()
    }

    /// Drops every scripted apply failure not yet used.
    pub fn clear_faults(&self) {
        lock(&self.state).fail_applies.clear();
    }

    /// The next apply fails with `error`, writing nothing.
    pub fn fail_next_apply(&self, error: HandlerError) {
        lock(&self.state).fail_applies.push(error);
    }

    fn write_server(state: &mut StoreState, payload: &SyncPayload<Record>) {
        let record = &payload.item;
        state
            .server_copies
            .insert(record.id.clone(), record.clone());
        if payload.deleted {
            state.docs.remove(&record.id);
        } else {
            let doc = LocalRecord {
                id: record.id.clone(),
                version: record.version,
                base_version: Some(record.version),
                modified: false,
                deleted: false,
                data: record.data.clone(),
            };
            state.docs.insert(record.id.clone(), (doc, 0));
        }
    }

    fn apply(&self, changes: RemoteChanges<LocalRecord, Record>) -> HandlerResult<ApplyResult> {
        let mut state = lock(&self.state);
        if !state.fail_applies.is_empty() {
            return Err(state.fail_applies.remove(0));
        }
        // The edits that lost, by id and the version the engine saw.
        let discard: HashMap<&str, Version> = changes
            .discard_local
            .iter()
            .map(|l| (l.id.as_str(), l.version))
            .collect();
        let mut applied = 0;
        for payload in &changes.items {
            let id = payload.item.id.as_str();
            let pending = state
                .docs
                .get(id)
                .filter(|(d, _)| d.modified)
                .map(|(d, _)| d.version);
            if let Some(version) = pending {
                if discard.get(id) != Some(&version) {
                    // An edit the engine did not see (or newer than the one that lost): keep
                    // it; its push will conflict (see RemoteChanges), so nothing is lost.
                    continue;
                }
            }
            Self::write_server(&mut state, payload);
            applied += 1;
        }
        for rebase in changes.rebase {
            let server = &rebase.server;
            state
                .server_copies
                .insert(server.item.id.clone(), server.item.clone());
            state.edit_seq += 1;
            let seq = state.edit_seq;
            let mut local = rebase.local;
            // Also onto a tombstone: the push then resurrects the item on the tombstone's version.
            local.base_version = Some(server.item.version);
            local.version = server.item.version.next().max(local.version);
            local.modified = true;
            state.docs.insert(local.id.clone(), (local, seq));
            applied += 1;
        }
        state.applied_pages += 1;
        Ok(ApplyResult::applied(applied))
    }
}

/// [`MemoryStore`] and [`MemoryRemote`] joined: both handler traits.
#[derive(Clone)]
pub struct MemoryHandler {
    store: MemoryStore,
    remote: MemoryRemote,
    merge: Option<MergeFn>,
}

impl std::fmt::Debug for MemoryHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryHandler")
            .field("store", &self.store)
            .field("remote", &self.remote)
            .field("merge", &self.merge.is_some())
            .finish()
    }
}

impl MemoryHandler {
    /// Uses `merge` for [`ConflictResolutionStrategy::Custom`](crate::ConflictResolutionStrategy::Custom).
    pub fn with_merge(mut self, merge: MergeFn) -> Self {
        self.merge = Some(merge);
        self
    }
}

#[async_trait]
impl InitialSyncHandler for MemoryHandler {
    type Item = Record;

    async fn fetch_remote_data(
        &self,
        checkpoint: Option<&SyncCheckpoint>,
        batch_size: usize,
    ) -> HandlerResult<SyncBatchResult<Record>> {
        self.remote.fetch(checkpoint, batch_size)
    }

    async fn save_to_local(
        &self,
        items: Vec<SyncPayload<Record>>,
        _context: &ApplyContext,
    ) -> HandlerResult<ApplyResult> {
        self.store.apply(RemoteChanges::from_items(items))
    }
}

#[async_trait]
impl BackgroundSyncHandler for MemoryHandler {
    type Local = LocalRecord;
    type Server = Record;

    async fn get_locally_modified(&self) -> HandlerResult<Vec<LocalRecord>> {
        let state = lock(&self.store.state);
        let mut modified: Vec<_> = state.docs.values().filter(|(d, _)| d.modified).collect();
        modified.sort_by_key(|(_, seq)| *seq);
        Ok(modified.into_iter().map(|(d, _)| d.clone()).collect())
    }

    async fn fetch_remote_changes(
        &self,
        checkpoint: Option<&SyncCheckpoint>,
        batch_size: usize,
    ) -> HandlerResult<SyncBatchResult<Record>> {
        self.remote.fetch(checkpoint, batch_size)
    }

    async fn apply_remote_changes(
        &self,
        changes: RemoteChanges<LocalRecord, Record>,
        _context: &ApplyContext,
    ) -> HandlerResult<ApplyResult> {
        self.store.apply(changes)
    }

    async fn push_local_changes(&self, items: &[LocalRecord]) -> HandlerResult<PushResult<Record>> {
        let result = self.remote.push(items)?;
        let mut state = lock(&self.store.state);
        for accepted in &result.accepted {
            let Some(pushed) = items.iter().find(|i| i.id == accepted.id) else {
                continue;
            };
            state.server_copies.insert(
                accepted.id.clone(),
                Record {
                    id: accepted.id.clone(),
                    sync_id: accepted.sync_id,
                    version: accepted.version,
                    data: pushed.data.clone(),
                },
            );
            match state.docs.get_mut(&accepted.id) {
                // Unchanged since it was pushed: now in sync.
                Some((doc, _)) if doc.version == pushed.version => {
                    if doc.deleted {
                        state.docs.remove(&accepted.id);
                    } else {
                        doc.version = accepted.version;
                        doc.base_version = Some(accepted.version);
                        doc.modified = false;
                    }
                }
                // Edited again meanwhile: the new edit rests on the accepted version.
                Some((doc, _)) => {
                    doc.base_version = Some(accepted.version);
                    doc.version = doc.version.max(accepted.version.next());
                }
                None => {}
            }
        }
        Ok(result)
    }

    async fn merge_conflict(
        &self,
        conflict: &Conflict<LocalRecord, Record>,
    ) -> HandlerResult<LocalRecord> {
        let Some(merge) = &self.merge else {
            return Err(HandlerError::permanent(format!(
                "no merge function for {:?}: use MemoryHandler::with_merge",
                conflict.local.id
            )));
        };
        let mut merged = conflict.local.clone();
        merged.data = merge(
            &conflict.local.data,
            &conflict.server.item.data,
            conflict.base.as_ref().map(|b| &b.data),
        );
        merged.deleted = false;
        Ok(merged)
    }

    async fn conflict_base(&self, local: &LocalRecord) -> HandlerResult<Option<Record>> {
        let state = lock(&self.store.state);
        Ok(state
            .server_copies
            .get(&local.id)
            .filter(|r| Some(r.version) == local.base_version)
            .cloned())
    }

    async fn discard_local_change(&self, id: &str) -> HandlerResult<()> {
        let mut state = lock(&self.store.state);
        match state.server_copies.get(id).cloned() {
            Some(record) => Self::restore(&mut state, record),
            None => {
                state.docs.remove(id);
            }
        }
        Ok(())
    }
}

impl MemoryHandler {
    fn restore(state: &mut StoreState, record: Record) {
        MemoryStore::write_server(state, &SyncPayload::new(record));
    }
}
