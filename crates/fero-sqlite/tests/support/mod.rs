//! Shared test helpers: an in-process fake server speaking `fero_protocol::Remote` with the
//! reference server's semantics (versions, `sync_id` feed, optimistic push, idempotent mutation
//! ids, tombstones, digest), with scripted faults.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use fero::{
    ApplyContext, FeatureKey, SyncCheckpoint, SyncId, SyncKind, SyncPayload, Timestamp, Version,
};
use fero_protocol::{
    ChangeOutcome, ChangeResult, ContentDigest, ContentDigestResponse, Digest, DigestResponse,
    Document, MutationId, PullRequest, PullResponse, PushRequest, PushResponse, Remote,
    RemoteError, RemoteErrorKind, ResyncReason,
};
use serde_json::Value;

#[derive(Clone, Default)]
struct Collection {
    rows: HashMap<String, Document>,
    /// sync_id -> id, one entry per id at its latest write.
    feed: BTreeMap<u64, String>,
    answers: HashMap<MutationId, ChangeResult>,
    /// Tombstones up to here were purged: a pull from below answers resync_required.
    horizon: u64,
}

#[derive(Clone, Default)]
struct State {
    collections: HashMap<String, Collection>,
    next_sync_id: u64,
    fail_pulls: Vec<RemoteError>,
    fail_pulls_from: Option<SyncId>,
    fail_pushes: Vec<RemoteError>,
    lose_push_answers: u32,
    rejected_ids: HashSet<String>,
    pushes: Vec<PushRequest>,
    pulls: Vec<Option<SyncId>>,
    /// Set by `restore`: a pull from beyond the feed answers resync_required (server_behind).
    restored: bool,
    /// Checkpoints handed out by pulls that started from scratch (or from one of these): a pull
    /// from scratch reads past the purge horizon, as the real server's from-scratch cursor does.
    scratch: HashSet<u64>,
}

/// A copy of a fake server's state, as a backup.
#[derive(Clone)]
pub(crate) struct Backup(State);

/// A fake sync server. Clones share it.
#[derive(Clone, Default)]
pub(crate) struct FakeRemote {
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for FakeRemote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FakeRemote")
    }
}

fn write_row(
    state: &mut State,
    collection: &str,
    id: &str,
    data: Value,
    deleted: bool,
) -> Document {
    state.next_sync_id += 1;
    let sync_id = state.next_sync_id;
    let coll = state.collections.entry(collection.to_owned()).or_default();
    let version = match coll.rows.get(id) {
        Some(old) => {
            coll.feed.remove(&old.sync_id.0);
            old.version.next()
        }
        None => Version(1),
    };
    let doc = Document {
        id: id.to_owned(),
        sync_id: SyncId(sync_id),
        version,
        updated_at: Timestamp(1_700_000_000_000 + sync_id),
        deleted,
        data,
    };
    coll.feed.insert(sync_id, id.to_owned());
    coll.rows.insert(id.to_owned(), doc.clone());
    doc
}

impl FakeRemote {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// Another client writes `id`.
    pub(crate) fn write(&self, collection: &str, id: &str, data: Value) -> Document {
        write_row(&mut self.lock(), collection, id, data, false)
    }

    /// Another client deletes `id` (a tombstone).
    pub(crate) fn delete(&self, collection: &str, id: &str) -> Document {
        write_row(&mut self.lock(), collection, id, Value::Null, true)
    }

    /// Drops a row without a tombstone, as a restored backup would (drift).
    pub(crate) fn forget(&self, collection: &str, id: &str) {
        let mut state = self.lock();
        let coll = state.collections.entry(collection.to_owned()).or_default();
        if let Some(old) = coll.rows.remove(id) {
            coll.feed.remove(&old.sync_id.0);
        }
    }

    pub(crate) fn get(&self, collection: &str, id: &str) -> Option<Document> {
        self.lock()
            .collections
            .get(collection)
            .and_then(|c| c.rows.get(id).cloned())
    }

    /// Live rows: id -> (version, data).
    pub(crate) fn live(&self, collection: &str) -> BTreeMap<String, (Version, Value)> {
        self.lock()
            .collections
            .get(collection)
            .map(|c| {
                c.rows
                    .values()
                    .filter(|d| !d.deleted)
                    .map(|d| (d.id.clone(), (d.version, d.data.clone())))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Deletes every tombstone of `collection` and raises its purge horizon to the newest one.
    pub(crate) fn purge_tombstones(&self, collection: &str) -> usize {
        let mut state = self.lock();
        // Positions handed out before the purge are ordinary positions again.
        state.scratch.clear();
        let coll = state.collections.entry(collection.to_owned()).or_default();
        let purged: Vec<Document> = coll.rows.values().filter(|d| d.deleted).cloned().collect();
        for doc in &purged {
            coll.rows.remove(&doc.id);
            coll.feed.remove(&doc.sync_id.0);
            coll.horizon = coll.horizon.max(doc.sync_id.0);
        }
        purged.len()
    }

    /// A copy of the whole server, as a backup.
    pub(crate) fn backup(&self) -> Backup {
        Backup(self.lock().clone())
    }

    /// Restores `backup`: every write after it is lost. Pulls from beyond the restored feed
    /// answer resync_required (server_behind), as the real server does.
    pub(crate) fn restore(&self, backup: &Backup) {
        let mut state = self.lock();
        let pushes = std::mem::take(&mut state.pushes);
        let pulls = std::mem::take(&mut state.pulls);
        *state = backup.0.clone();
        state.pushes = pushes;
        state.pulls = pulls;
        state.restored = true;
    }

    /// Restores `backup` like `restore`, but the server never notices: pulls from beyond its
    /// feed answer empty pages, as a server without a restore check does.
    pub(crate) fn restore_unnoticed(&self, backup: &Backup) {
        self.restore(backup);
        self.lock().restored = false;
    }

    pub(crate) fn fail_next_pull(&self, error: RemoteError) {
        self.lock().fail_pulls.push(error);
    }

    /// The next push fails before anything is written.
    /// Every pull starting at `checkpoint` fails for good (a server bug at that page).
    pub(crate) fn fail_pulls_from(&self, checkpoint: Option<SyncId>) {
        self.lock().fail_pulls_from = checkpoint;
    }

    pub(crate) fn fail_next_push(&self, error: RemoteError) {
        self.lock().fail_pushes.push(error);
    }

    /// The next push is committed, but its answer is lost (a transient error instead).
    pub(crate) fn lose_next_push_answer(&self) {
        self.lock().lose_push_answers += 1;
    }

    /// Pushes of `id` are rejected for good.
    pub(crate) fn reject(&self, id: &str) {
        self.lock().rejected_ids.insert(id.to_owned());
    }

    /// Every push request received, in order.
    pub(crate) fn pushes(&self) -> Vec<PushRequest> {
        self.lock().pushes.clone()
    }

    /// The checkpoints pulls started from.
    pub(crate) fn pulls(&self) -> Vec<Option<SyncId>> {
        self.lock().pulls.clone()
    }
}

pub(crate) fn transient(collection: &str, message: &str) -> RemoteError {
    RemoteError::new(RemoteErrorKind::Transient, collection, message)
}

#[fero::async_trait]
impl Remote for FakeRemote {
    async fn pull(
        &self,
        collection: &str,
        request: &PullRequest,
    ) -> Result<PullResponse, RemoteError> {
        let mut state = self.lock();
        let after = request.checkpoint.as_ref().map(|c| c.last_sync_id);
        state.pulls.push(after);
        if !state.fail_pulls.is_empty() {
            return Err(state.fail_pulls.remove(0));
        }
        if after.is_some() && state.fail_pulls_from == after {
            return Err(RemoteError::new(
                RemoteErrorKind::Permanent,
                collection,
                "injected: this page cannot be served",
            ));
        }
        let after = after.map_or(0, |s| s.0);
        let from_scratch = request.checkpoint.is_none() || state.scratch.contains(&after);
        if !from_scratch {
            let horizon = state.collections.get(collection).map_or(0, |c| c.horizon);
            if after < horizon {
                return Err(RemoteError::resync_required(
                    collection,
                    ResyncReason::TombstonesPurged,
                    format!("checkpoint {after} is behind the purge horizon {horizon}"),
                ));
            }
            if state.restored && after > state.next_sync_id {
                return Err(RemoteError::resync_required(
                    collection,
                    ResyncReason::ServerBehind,
                    format!(
                        "checkpoint {after} is ahead of the feed ({})",
                        state.next_sync_id
                    ),
                ));
            }
        }
        let limit = request.limit as usize;
        let Some(coll) = state.collections.get(collection) else {
            return Ok(PullResponse {
                items: Vec::new(),
                checkpoint: SyncCheckpoint::at(SyncId(after)),
                has_more: false,
            });
        };
        let mut items: Vec<Document> = coll
            .feed
            .range(after + 1..)
            .take(limit + 1)
            .map(|(_, id)| coll.rows[id].clone())
            .collect();
        let has_more = items.len() > limit;
        items.truncate(limit);
        let last = items.last().map_or(after, |d| d.sync_id.0);
        if from_scratch {
            state.scratch.insert(last);
        }
        Ok(PullResponse {
            items,
            checkpoint: SyncCheckpoint::at(SyncId(last)),
            has_more,
        })
    }

    async fn push(
        &self,
        collection: &str,
        request: &PushRequest,
    ) -> Result<PushResponse, RemoteError> {
        let mut state = self.lock();
        state.pushes.push(request.clone());
        if !state.fail_pushes.is_empty() {
            return Err(state.fail_pushes.remove(0));
        }
        let mut results = Vec::new();
        for change in &request.changes {
            let replay = state
                .collections
                .get(collection)
                .and_then(|c| c.answers.get(&change.mutation_id).cloned());
            if let Some(answer) = replay {
                results.push(answer);
                continue;
            }
            let outcome = if state.rejected_ids.contains(&change.id) {
                ChangeOutcome::Rejected {
                    code: "invalid".into(),
                    message: "rejected by validation".into(),
                }
            } else {
                let current = state
                    .collections
                    .get(collection)
                    .and_then(|c| c.rows.get(&change.id).cloned());
                let matches = match (&current, change.base_version) {
                    (None, None) => true,
                    (Some(doc), Some(base)) => doc.version == base,
                    _ => false,
                };
                if matches {
                    let data = if change.deleted {
                        Value::Null
                    } else {
                        change.data.clone()
                    };
                    let doc = write_row(&mut state, collection, &change.id, data, change.deleted);
                    ChangeOutcome::Accepted {
                        version: doc.version,
                        sync_id: doc.sync_id,
                    }
                } else {
                    ChangeOutcome::Conflict { server: current }
                }
            };
            let answer = ChangeResult {
                id: change.id.clone(),
                mutation_id: change.mutation_id.clone(),
                outcome,
            };
            state
                .collections
                .entry(collection.to_owned())
                .or_default()
                .answers
                .insert(change.mutation_id.clone(), answer.clone());
            results.push(answer);
        }
        if state.lose_push_answers > 0 {
            state.lose_push_answers -= 1;
            return Err(transient(
                collection,
                "connection reset after the push was sent",
            ));
        }
        Ok(PushResponse { results })
    }

    async fn digest(&self, collection: &str) -> Result<DigestResponse, RemoteError> {
        let state = self.lock();
        let mut digest = Digest::default();
        if let Some(coll) = state.collections.get(collection) {
            for doc in coll.rows.values().filter(|d| !d.deleted) {
                digest.add(&doc.id, doc.version.0);
            }
        }
        Ok(DigestResponse {
            count: digest.count(),
            digest: digest.hex(),
        })
    }

    async fn content_digest(&self, collection: &str) -> Result<ContentDigestResponse, RemoteError> {
        let state = self.lock();
        let mut digest = ContentDigest::default();
        if let Some(coll) = state.collections.get(collection) {
            for doc in coll.rows.values().filter(|d| !d.deleted) {
                digest.add(&doc.id, doc.version.0, &doc.data);
            }
        }
        Ok(ContentDigestResponse {
            version: 2,
            count: digest.count(),
            digest: digest.hex(),
        })
    }
}

/// A server document for direct handler calls.
pub(crate) fn doc(id: &str, sync_id: u64, version: u64, data: Value) -> Document {
    Document {
        id: id.to_owned(),
        sync_id: SyncId(sync_id),
        version: Version(version),
        updated_at: Timestamp(1_700_000_000_000 + sync_id),
        deleted: false,
        data,
    }
}

/// A tombstone for direct handler calls.
pub(crate) fn tombstone(id: &str, sync_id: u64, version: u64) -> SyncPayload<Document> {
    let mut d = doc(id, sync_id, version, Value::Null);
    d.deleted = true;
    SyncPayload::tombstone(d)
}

/// Live payloads.
pub(crate) fn live(docs: Vec<Document>) -> Vec<SyncPayload<Document>> {
    docs.into_iter().map(SyncPayload::new).collect()
}

/// The context of page `page` of a pull of `feature`, ending at `sync_id`.
pub(crate) fn page_context(feature: &str, page: u64, sync_id: u64) -> ApplyContext {
    ApplyContext::new(
        FeatureKey::new(feature),
        SyncKind::Initial,
        Some(SyncCheckpoint::at(SyncId(sync_id))),
        page,
    )
}

/// The context of an apply outside a pull (a conflict resolved during a push).
pub(crate) fn no_checkpoint(feature: &str) -> ApplyContext {
    ApplyContext::new(FeatureKey::new(feature), SyncKind::Background, None, 0)
}

/// The typed error behind a handler error.
pub(crate) fn sqlite_error(error: &fero::HandlerError) -> &fero_sqlite::Error {
    std::error::Error::source(error)
        .and_then(|s| s.downcast_ref::<fero_sqlite::Error>())
        .unwrap_or_else(|| panic!("expected a fero_sqlite::Error behind {error:?}"))
}
