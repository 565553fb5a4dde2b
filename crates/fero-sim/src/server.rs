//! [`SimServer`]: an in-process server with the reference server's semantics.
//!
//! Per collection: rows with a version (1 on insert, +1 per accepted write) and a `sync_id` from
//! one counter, a change feed holding each row once at its latest `sync_id`, pulls of `limit + 1`
//! rows to decide `has_more`, optimistic push (a change is written only when the stored version
//! equals its `base_version`; `None` only when the id is absent, tombstones included), replays by
//! [`MutationId`] answered with the original result, and tombstones that keep their last data.
//!
//! Every accepted write is also appended to a history the invariants read (which write superseded
//! which, which local edits reached the server).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use fero::{Clock, SyncCheckpoint, SyncId, Timestamp, Version};
use fero_protocol::{
    ChangeOutcome, ChangeResult, Digest, DigestResponse, Document, MAX_PAGE_SIZE, MutationId,
    PullRequest, PullResponse, PushRequest, PushResponse, Remote, RemoteError, RemoteErrorKind,
};

use crate::clock::SimClock;

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every guarded value here is updated in single steps under its lock; a panic elsewhere
    // cannot leave one half-written, so a poisoned lock is still safe to read.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The key a simulated edit writes into its document's data so the invariants can follow it:
/// `{"tag": "d1-17", ...}`.
pub const TAG_FIELD: &str = "tag";

/// The tag of a document's data, if it has one.
pub fn tag_of(data: &serde_json::Value) -> Option<&str> {
    data.get(TAG_FIELD).and_then(serde_json::Value::as_str)
}

/// One accepted write, as the server's history keeps it.
#[derive(Clone, Debug, PartialEq)]
pub struct Write {
    /// The collection.
    pub collection: String,
    /// The row's id.
    pub id: String,
    /// The version the write created.
    pub version: Version,
    /// The `base_version` the pushed change carried (what the writer had seen).
    pub base_version: Option<Version>,
    /// Its feed position.
    pub sync_id: SyncId,
    /// The write deleted the row.
    pub deleted: bool,
    /// The data the change carried (for a deletion, the change's data; the row keeps its last).
    pub data: serde_json::Value,
    /// The change's mutation id.
    pub mutation_id: MutationId,
}

#[derive(Debug, Default)]
struct Collection {
    rows: BTreeMap<String, Document>,
    /// sync_id -> id: one entry per row, at its latest write.
    feed: BTreeMap<SyncId, String>,
}

#[derive(Debug, Default)]
struct ServerState {
    collections: BTreeMap<String, Collection>,
    next_sync_id: u64,
    /// Results of written changes by mutation id; conflicts are not recorded, so a conflicted
    /// change may be sent again with the same id on a new base.
    mutations: BTreeMap<(String, u64), ChangeResult>,
    history: Vec<Write>,
    accepted_tags: BTreeSet<String>,
    blind_overwrite: bool,
    pushes: u64,
    pulls: u64,
    replays: u64,
}

/// An in-process sync server with the reference server's semantics. Cloning shares it.
///
/// It answers every call at once; latency, losses and restarts come from the fault layer in
/// front of it ([`SimRemote`](crate::SimRemote)). Its own [`Remote`] implementation is the
/// fault-free path.
///
/// # Examples
/// ```
/// use fero_protocol::{Change, MutationId, PullRequest, PushRequest, Remote};
/// use fero_sim::SimServer;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let server = SimServer::new();
/// let change = Change {
///     id: "a".into(),
///     base_version: None,
///     mutation_id: MutationId::new("device-0", 1),
///     deleted: false,
///     data: serde_json::json!({ "tag": "first" }),
/// };
/// server.push("docs", &PushRequest { changes: vec![change] }).await?;
/// let page = server.pull("docs", &PullRequest { checkpoint: None, limit: 10, subscription: None }).await?;
/// assert_eq!(page.items.len(), 1);
/// assert!(!page.has_more);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Default)]
pub struct SimServer {
    state: Arc<Mutex<ServerState>>,
    /// Shared by every clone, so [`set_clock`](Self::set_clock) reaches the copies a
    /// simulation's remotes hold.
    clock: Arc<Mutex<SimClock>>,
}

impl SimServer {
    /// An empty server.
    pub fn new() -> Self {
        Self::default()
    }

    pub(crate) fn with_clock(clock: SimClock, blind_overwrite: bool) -> Self {
        let server = SimServer {
            state: Arc::default(),
            clock: Arc::new(Mutex::new(clock)),
        };
        lock(&server.state).blind_overwrite = blind_overwrite;
        server
    }

    /// Makes every clone of this server stamp writes (`updated_at`) with `clock`.
    ///
    /// A [`SimClock`] measures time from the tokio clock of the runtime it was made in. A server
    /// built by a [`Sim`](crate::Sim) has the simulation's runtime's clock; a test that drives
    /// the server from a runtime of its own must hand it a clock made there, or every timestamp
    /// would include the real time between the two runtimes' starts and no seed would replay
    /// exactly.
    pub fn set_clock(&self, clock: SimClock) {
        *lock(&self.clock) = clock;
    }

    fn now(&self) -> Timestamp {
        let clock = *lock(&self.clock);
        clock.now()
    }

    /// Pulls synchronously (the [`Remote`] implementation awaits nothing else).
    ///
    /// # Errors
    /// A permanent [`RemoteError`] for a `limit` of 0 or above [`MAX_PAGE_SIZE`].
    pub fn pull_now(
        &self,
        collection: &str,
        request: &PullRequest,
    ) -> Result<PullResponse, RemoteError> {
        if request.limit == 0 || request.limit > MAX_PAGE_SIZE {
            return Err(RemoteError::new(
                RemoteErrorKind::Permanent,
                collection,
                format!(
                    "page size {} is outside 1..={MAX_PAGE_SIZE}: ask for fewer rows",
                    request.limit
                ),
            ));
        }
        let mut state = lock(&self.state);
        state.pulls += 1;
        let after = request.checkpoint.as_ref().map_or(0, |c| c.last_sync_id.0);
        let limit = request.limit as usize;
        let mut items = Vec::with_capacity(limit);
        let mut has_more = false;
        if let Some(coll) = state.collections.get(collection) {
            // limit + 1 rows: the extra one only says whether more follow.
            for (_, id) in coll.feed.range(SyncId(after.saturating_add(1))..) {
                if items.len() == limit {
                    has_more = true;
                    break;
                }
                if let Some(row) = coll.rows.get(id) {
                    items.push(row.clone());
                }
            }
        }
        let checkpoint = match items.last() {
            Some(last) => SyncCheckpoint::at(last.sync_id).with_updated_at(last.updated_at),
            // Nothing new: the position stays where the client stands.
            None => request.checkpoint.clone().unwrap_or_default(),
        };
        Ok(PullResponse {
            items,
            checkpoint,
            has_more,
        })
    }

    /// Pushes synchronously: every change of the request in order, as one transaction.
    ///
    /// # Errors
    /// None today; the signature matches [`Remote::push`].
    pub fn push_now(
        &self,
        collection: &str,
        request: &PushRequest,
    ) -> Result<PushResponse, RemoteError> {
        let now = self.now();
        let mut state = lock(&self.state);
        state.pushes += 1;
        let blind = state.blind_overwrite;
        let mut results = Vec::with_capacity(request.changes.len());
        for change in &request.changes {
            let key = (change.mutation_id.device.clone(), change.mutation_id.seq);
            if let Some(original) = state.mutations.get(&key) {
                // Exactly once: a replay gets the original answer and writes nothing.
                results.push(original.clone());
                state.replays += 1;
                continue;
            }
            let current = state
                .collections
                .get(collection)
                .and_then(|c| c.rows.get(&change.id));
            if !blind && current.map(|row| row.version) != change.base_version {
                results.push(ChangeResult {
                    id: change.id.clone(),
                    mutation_id: change.mutation_id.clone(),
                    outcome: ChangeOutcome::Conflict {
                        server: current.cloned(),
                    },
                });
                continue;
            }
            let (version, sync_id) = Self::write(&mut state, collection, change, now);
            let result = ChangeResult {
                id: change.id.clone(),
                mutation_id: change.mutation_id.clone(),
                outcome: ChangeOutcome::Accepted { version, sync_id },
            };
            state.mutations.insert(key, result.clone());
            results.push(result);
        }
        Ok(PushResponse { results })
    }

    /// Writes one change that passed the base check: new version, new `sync_id`, history entry.
    fn write(
        state: &mut ServerState,
        collection: &str,
        change: &fero_protocol::Change,
        now: Timestamp,
    ) -> (Version, SyncId) {
        state.next_sync_id += 1;
        let sync_id = SyncId(state.next_sync_id);
        let coll = state.collections.entry(collection.to_owned()).or_default();
        let current = coll.rows.get(&change.id);
        let version = current.map_or(Version(1), |row| row.version.next());
        // A tombstone keeps the last content it had, so a client can still show it.
        let data = match (change.deleted, current) {
            (true, Some(row)) => row.data.clone(),
            (true, None) => serde_json::Value::Null,
            (false, _) => change.data.clone(),
        };
        if let Some(old) = current.map(|row| row.sync_id) {
            coll.feed.remove(&old);
        }
        coll.feed.insert(sync_id, change.id.clone());
        coll.rows.insert(
            change.id.clone(),
            Document {
                id: change.id.clone(),
                sync_id,
                version,
                updated_at: now,
                deleted: change.deleted,
                data,
            },
        );
        if let Some(tag) = tag_of(&change.data) {
            state.accepted_tags.insert(tag.to_owned());
        }
        state.history.push(Write {
            collection: collection.to_owned(),
            id: change.id.clone(),
            version,
            base_version: change.base_version,
            sync_id,
            deleted: change.deleted,
            data: change.data.clone(),
            mutation_id: change.mutation_id.clone(),
        });
        (version, sync_id)
    }

    /// Writes `id` as another client would, on top of whatever the server holds: seeds data
    /// for scripted scenarios. Returns the new version.
    pub fn seed(&self, collection: &str, id: &str, data: serde_json::Value) -> Version {
        let now = self.now();
        let mut state = lock(&self.state);
        let base_version = state
            .collections
            .get(collection)
            .and_then(|c| c.rows.get(id))
            .map(|row| row.version);
        let seq = state.history.len() as u64 + 1;
        let change = fero_protocol::Change {
            id: id.to_owned(),
            base_version,
            mutation_id: MutationId::new("seed", seq),
            deleted: false,
            data,
        };
        Self::write(&mut state, collection, &change, now).0
    }

    /// The current row of `id` (tombstones included).
    pub fn row(&self, collection: &str, id: &str) -> Option<Document> {
        lock(&self.state)
            .collections
            .get(collection)
            .and_then(|c| c.rows.get(id).cloned())
    }

    /// Every current row of `collection` by id, tombstones included.
    pub fn rows(&self, collection: &str) -> BTreeMap<String, Document> {
        lock(&self.state)
            .collections
            .get(collection)
            .map(|c| c.rows.clone())
            .unwrap_or_default()
    }

    /// The count and digest of the live rows of `collection`.
    pub fn digest_now(&self, collection: &str) -> DigestResponse {
        let mut digest = Digest::default();
        for row in self.rows(collection).values().filter(|r| !r.deleted) {
            digest.add(&row.id, row.version.0);
        }
        DigestResponse {
            count: digest.count(),
            digest: digest.hex(),
        }
    }

    /// Every accepted write, oldest first.
    pub fn history(&self) -> Vec<Write> {
        lock(&self.state).history.clone()
    }

    /// `true` when a change carrying data tagged `tag` was accepted.
    pub fn accepted_tag(&self, tag: &str) -> bool {
        lock(&self.state).accepted_tags.contains(tag)
    }

    /// Push calls, pull calls and replays answered so far.
    pub fn call_counts(&self) -> (u64, u64, u64) {
        let state = lock(&self.state);
        (state.pushes, state.pulls, state.replays)
    }
}

#[async_trait]
impl Remote for SimServer {
    async fn pull(
        &self,
        collection: &str,
        request: &PullRequest,
    ) -> Result<PullResponse, RemoteError> {
        self.pull_now(collection, request)
    }

    async fn push(
        &self,
        collection: &str,
        request: &PushRequest,
    ) -> Result<PushResponse, RemoteError> {
        self.push_now(collection, request)
    }

    async fn digest(&self, collection: &str) -> Result<DigestResponse, RemoteError> {
        Ok(self.digest_now(collection))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fero_protocol::Change;

    fn change(id: &str, base: Option<u64>, seq: u64, tag: &str) -> Change {
        Change {
            id: id.into(),
            base_version: base.map(Version),
            mutation_id: MutationId::new("d", seq),
            deleted: false,
            data: serde_json::json!({ "tag": tag }),
        }
    }

    fn push(server: &SimServer, changes: Vec<Change>) -> Vec<ChangeOutcome> {
        server
            .push_now("docs", &PushRequest { changes })
            .unwrap()
            .results
            .into_iter()
            .map(|r| r.outcome)
            .collect()
    }

    #[test]
    fn a_stale_base_version_is_a_conflict_carrying_the_current_row() {
        let server = SimServer::new();
        push(&server, vec![change("a", None, 1, "t1")]);
        push(&server, vec![change("a", Some(1), 2, "t2")]);
        let outcome = push(&server, vec![change("a", Some(1), 3, "t3")]);
        match &outcome[0] {
            ChangeOutcome::Conflict { server: Some(row) } => assert_eq!(row.version, Version(2)),
            other => panic!("expected a conflict, got {other:?}"),
        }
        assert!(!server.accepted_tag("t3"));
    }

    #[test]
    fn a_create_conflicts_when_the_id_exists_even_as_a_tombstone() {
        let server = SimServer::new();
        push(&server, vec![change("a", None, 1, "t1")]);
        let mut delete = change("a", Some(1), 2, "t2");
        delete.deleted = true;
        push(&server, vec![delete]);
        assert!(matches!(
            push(&server, vec![change("a", None, 3, "t3")])[0],
            ChangeOutcome::Conflict { .. }
        ));
        // Writing on the tombstone's version brings the row back.
        assert!(matches!(
            push(&server, vec![change("a", Some(2), 4, "t4")])[0],
            ChangeOutcome::Accepted {
                version: Version(3),
                ..
            }
        ));
    }

    #[test]
    fn a_replayed_mutation_gets_the_original_answer_and_writes_nothing() {
        let server = SimServer::new();
        let first = push(&server, vec![change("a", None, 1, "t1")]);
        push(&server, vec![change("a", Some(1), 2, "t2")]);
        let replay = push(&server, vec![change("a", None, 1, "t1")]);
        assert_eq!(first, replay);
        assert_eq!(server.history().len(), 2);
        assert_eq!(server.row("docs", "a").unwrap().version, Version(2));
    }

    #[test]
    fn a_tombstone_keeps_its_last_data_and_moves_in_the_feed() {
        let server = SimServer::new();
        push(
            &server,
            vec![change("a", None, 1, "t1"), change("b", None, 2, "t2")],
        );
        let mut delete = change("a", Some(1), 3, "t3");
        delete.deleted = true;
        push(&server, vec![delete]);
        let page = server
            .pull_now(
                "docs",
                &PullRequest {
                    checkpoint: None,
                    limit: 10,
                    subscription: None,
                },
            )
            .unwrap();
        let ids: Vec<_> = page.items.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["b", "a"]);
        assert!(page.items[1].deleted);
        assert_eq!(tag_of(&page.items[1].data), Some("t1"));
    }

    #[test]
    fn has_more_is_decided_by_one_extra_row() {
        let server = SimServer::new();
        push(
            &server,
            vec![change("a", None, 1, "t1"), change("b", None, 2, "t2")],
        );
        let pull = |checkpoint, limit| {
            server
                .pull_now(
                    "docs",
                    &PullRequest {
                        checkpoint,
                        limit,
                        subscription: None,
                    },
                )
                .unwrap()
        };
        let exact = pull(None, 2);
        assert!(!exact.has_more);
        let first = pull(None, 1);
        assert!(first.has_more);
        let rest = pull(Some(first.checkpoint.clone()), 1);
        assert_eq!(rest.items[0].id, "b");
        assert!(!rest.has_more);
        let empty = pull(Some(rest.checkpoint.clone()), 1);
        assert!(empty.items.is_empty());
        assert_eq!(empty.checkpoint, rest.checkpoint);
    }

    #[test]
    fn the_blind_variant_accepts_a_stale_base() {
        let server = SimServer::with_clock(SimClock::default(), true);
        push(&server, vec![change("a", None, 1, "t1")]);
        push(&server, vec![change("a", Some(1), 2, "t2")]);
        assert!(matches!(
            push(&server, vec![change("a", Some(1), 3, "t3")])[0],
            ChangeOutcome::Accepted { .. }
        ));
    }
}
