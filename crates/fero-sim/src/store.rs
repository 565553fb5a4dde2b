//! A device's local store: [`SimDoc`]s with pending edits, and the checkpoint, split into what
//! survives a crash ([`SimStore`]'s durable state) and what does not (everything else a device
//! holds: its `FeroSync`, handlers, event subscription and calls in flight).
//!
//! Every method that changes state is one durable step: it takes the store's lock, writes, and
//! releases it without awaiting in between, so a crash (the simulation dropping a device's
//! futures at an await point) lands before or after it, never inside. In particular a page and
//! its checkpoint are written in one step ([`SimStore::apply`] answers
//! [`ApplyResult::applied_with_checkpoint`]), as `fero-sqlite` does in one transaction.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use fero::{
    ApplyContext, ApplyResult, FeatureKey, InMemorySyncMetadataRepo, InitialSyncState, LocalItem,
    ParkedConflict, PushAccepted, PushConflict, PushRejected, PushResult, QuarantinedChange,
    RemoteChanges, RepoError, SyncCheckpoint, SyncMetadataRepo, SyncPayload, Timestamp, Version,
};
use fero_protocol::{Change, ChangeOutcome, Document, MutationId, PushResponse};
use serde::{Deserialize, Serialize};

use crate::broken::Broken;
use crate::error::StoreError;
use crate::server::lock;

/// How long the [`Broken::CheckpointBeforeData`] store waits between saving a page's checkpoint
/// and writing its data: long enough, next to the simulated network's delays, that a crash often
/// lands in between.
const CHECKPOINT_GAP: Duration = Duration::from_millis(40);

/// A document as a simulated device holds it.
///
/// # Versions
/// `version` is the local copy's version (the server's for an unmodified copy, +1 per local edit);
/// `base_version` the server version a pending edit was made on (`None` for a document the
/// server never acknowledged). A tombstone stays in the store with `deleted = true`, so a later
/// edit re-creates the row on the tombstone's version.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SimDoc {
    /// The id, unique in the collection.
    pub id: String,
    /// The content.
    pub data: serde_json::Value,
    /// The local copy's version.
    pub version: Version,
    /// The server version the copy (or its pending edit) rests on.
    pub base_version: Option<Version>,
    /// A local edit waits for the server's acknowledgement.
    pub modified: bool,
    /// A tombstone: deleted locally (pending) or on the server.
    pub deleted: bool,
    /// The sequence number of the pending state: the push carries it as the mutation id's `seq`,
    /// and it changes whenever the pending state does (an edit, a re-base), so a replay after a
    /// lost response is recognised and a re-based change is never mistaken for a replay.
    pub mutation_seq: Option<u64>,
}

impl LocalItem for SimDoc {
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

impl SimDoc {
    /// The change that pushes this document's pending state, with the stable mutation id
    /// `(device, mutation_seq)`. A document without a pending edit gets `seq` 0, which no edit
    /// ever receives.
    pub fn to_change(&self, device: &str) -> Change {
        Change {
            id: self.id.clone(),
            base_version: self.base_version,
            mutation_id: MutationId::new(device, self.mutation_seq.unwrap_or_default()),
            deleted: self.deleted,
            data: self.data.clone(),
        }
    }

    fn from_server(row: &Document, deleted: bool) -> SimDoc {
        SimDoc {
            id: row.id.clone(),
            data: row.data.clone(),
            version: row.version,
            base_version: Some(row.version),
            modified: false,
            deleted,
            mutation_seq: None,
        }
    }
}

#[derive(Debug)]
struct Stored {
    doc: SimDoc,
    /// The server state the copy rests on, for discarding an edit and for three-way merges.
    server: Option<Document>,
}

/// What survives a crash.
#[derive(Debug)]
struct Durable {
    /// Bumped by every crash: handles of an earlier incarnation are refused, so a process that
    /// "died" can never write again.
    incarnation: u64,
    docs: BTreeMap<String, Stored>,
    next_seq: u64,
    checkpoints: BTreeMap<FeatureKey, SyncCheckpoint>,
    /// Initial-sync state, parked conflicts, quarantine and last success.
    metadata: Arc<InMemorySyncMetadataRepo>,
}

/// A simulated device's local store. Cloning shares it.
///
/// A handle belongs to one incarnation of its device: after the device crashes every call on an
/// old handle fails with [`StoreError::Crashed`]; the restarted device gets fresh handles.
///
/// # Examples
/// ```
/// use fero_sim::SimStore;
/// let store = SimStore::new("device-0");
/// store.put("a", serde_json::json!({ "tag": "x" }))?;
/// let pending = store.modified()?;
/// assert_eq!(pending.len(), 1);
/// assert_eq!(pending[0].base_version, None);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct SimStore {
    durable: Arc<Mutex<Durable>>,
    device: Arc<str>,
    incarnation: u64,
    broken: Broken,
}

impl SimStore {
    /// An empty store for `device` (the device part of its mutation ids).
    pub fn new(device: impl AsRef<str>) -> Self {
        Self::with_broken(device, Broken::None)
    }

    pub(crate) fn with_broken(device: impl AsRef<str>, broken: Broken) -> Self {
        SimStore {
            durable: Arc::new(Mutex::new(Durable {
                incarnation: 0,
                docs: BTreeMap::new(),
                next_seq: 0,
                checkpoints: BTreeMap::new(),
                metadata: Arc::new(InMemorySyncMetadataRepo::new()),
            })),
            device: Arc::from(device.as_ref()),
            incarnation: 0,
            broken,
        }
    }

    /// The device's id.
    pub fn device(&self) -> &str {
        &self.device
    }

    /// Crashes the device: every existing handle is refused from now on. Returns the handle of
    /// the next incarnation (what a restarted process opens).
    pub(crate) fn crash(&self) -> SimStore {
        let mut durable = lock(&self.durable);
        durable.incarnation += 1;
        SimStore {
            durable: self.durable.clone(),
            device: self.device.clone(),
            incarnation: durable.incarnation,
            broken: self.broken,
        }
    }

    fn open(&self) -> Result<std::sync::MutexGuard<'_, Durable>, StoreError> {
        let durable = lock(&self.durable);
        if durable.incarnation != self.incarnation {
            return Err(StoreError::Crashed {
                device: self.device.to_string(),
                handle: self.incarnation,
                current: durable.incarnation,
            });
        }
        Ok(durable)
    }

    /// `false` once the device crashed after this handle was opened.
    pub fn is_current(&self) -> bool {
        lock(&self.durable).incarnation == self.incarnation
    }

    /// The document `id`, tombstones included (reads the durable state, whatever the handle).
    pub fn get(&self, id: &str) -> Option<SimDoc> {
        lock(&self.durable).docs.get(id).map(|s| s.doc.clone())
    }

    /// Every document by id, tombstones included (reads the durable state, whatever the handle).
    pub fn docs(&self) -> BTreeMap<String, SimDoc> {
        lock(&self.durable)
            .docs
            .iter()
            .map(|(id, s)| (id.clone(), s.doc.clone()))
            .collect()
    }

    /// The saved checkpoint of `feature` (reads the durable state, whatever the handle).
    pub fn checkpoint(&self, feature: &str) -> Option<SyncCheckpoint> {
        lock(&self.durable)
            .checkpoints
            .get(&FeatureKey::new(feature))
            .cloned()
    }

    /// Documents with a pending edit, oldest pending state first.
    ///
    /// # Errors
    /// [`StoreError::Crashed`] on a handle of an earlier incarnation.
    pub fn modified(&self) -> Result<Vec<SimDoc>, StoreError> {
        let durable = self.open()?;
        let mut docs: Vec<SimDoc> = durable
            .docs
            .values()
            .filter(|s| s.doc.modified)
            .map(|s| s.doc.clone())
            .collect();
        docs.sort_by_key(|d| d.mutation_seq);
        Ok(docs)
    }

    /// A local edit: writes `data` as a pending change of `id` (the edit and its outbox entry in
    /// one durable step).
    ///
    /// # Errors
    /// [`StoreError::Crashed`] on a handle of an earlier incarnation.
    pub fn put(&self, id: &str, data: serde_json::Value) -> Result<SimDoc, StoreError> {
        self.edit(id, data, false)
    }

    /// A local deletion of `id`; `Ok(None)` when there is no live document to delete.
    ///
    /// # Errors
    /// [`StoreError::Crashed`] on a handle of an earlier incarnation.
    pub fn delete(&self, id: &str, data: serde_json::Value) -> Result<Option<SimDoc>, StoreError> {
        let live = self.open()?.docs.get(id).is_some_and(|s| !s.doc.deleted);
        if !live {
            return Ok(None);
        }
        self.edit(id, data, true).map(Some)
    }

    fn edit(&self, id: &str, data: serde_json::Value, deleted: bool) -> Result<SimDoc, StoreError> {
        let mut durable = self.open()?;
        durable.next_seq += 1;
        let seq = durable.next_seq;
        let (version, base_version, server) = match durable.docs.remove(id) {
            Some(Stored { doc, server }) => {
                let base = if doc.modified {
                    doc.base_version
                } else {
                    Some(doc.version)
                };
                (doc.version.next(), base, server)
            }
            None => (Version(1), None, None),
        };
        let doc = SimDoc {
            id: id.to_owned(),
            data,
            version,
            base_version,
            modified: true,
            deleted,
            mutation_seq: Some(seq),
        };
        durable.docs.insert(
            id.to_owned(),
            Stored {
                doc: doc.clone(),
                server,
            },
        );
        Ok(doc)
    }

    /// Writes a page of server changes, conflicts resolved, following the
    /// [`RemoteChanges`] contract, and — when `context` carries one — the page's checkpoint in
    /// the same durable step.
    ///
    /// - An item whose document has a pending edit other than the one in `discard_local` keeps the edit:
    ///   the edit was made after the engine listed the modified items, and its push will conflict.
    /// - A `discard_local` edit that is still the pending one is dropped for the server's item.
    /// - A re-based edit rests on the server's version, under a new mutation id (its content or
    ///   base changed, so it is a new change; reusing the old id would make the server answer it
    ///   as a replay). If the document was edited again since the engine's copy, the newer edit's
    ///   content is the one kept.
    ///
    /// # Errors
    /// [`StoreError::Crashed`] on a handle of an earlier incarnation; nothing is written then.
    pub async fn apply(
        &self,
        changes: RemoteChanges<SimDoc, Document>,
        context: &ApplyContext,
    ) -> Result<ApplyResult, StoreError> {
        if self.broken == Broken::CheckpointBeforeData {
            if let Some(checkpoint) = &context.checkpoint {
                // Deliberately broken: the checkpoint is durable before the data is.
                self.open()?
                    .checkpoints
                    .insert(context.feature.clone(), checkpoint.clone());
                tokio::time::sleep(CHECKPOINT_GAP).await;
                let applied = self.write_changes(changes)?;
                return Ok(ApplyResult::applied_with_checkpoint(applied));
            }
        }
        let mut durable = self.open()?;
        let applied = Self::write_changes_in(&mut durable, changes, self.broken);
        match &context.checkpoint {
            Some(checkpoint) => {
                // The invariant the engine relies on: the page and its checkpoint in one step.
                durable
                    .checkpoints
                    .insert(context.feature.clone(), checkpoint.clone());
                Ok(ApplyResult::applied_with_checkpoint(applied))
            }
            None => Ok(ApplyResult::applied(applied)),
        }
    }

    fn write_changes(&self, changes: RemoteChanges<SimDoc, Document>) -> Result<usize, StoreError> {
        let mut durable = self.open()?;
        Ok(Self::write_changes_in(&mut durable, changes, self.broken))
    }

    fn write_changes_in(
        durable: &mut Durable,
        changes: RemoteChanges<SimDoc, Document>,
        broken: Broken,
    ) -> usize {
        // The edits that lost, by id and the pending state the engine decided on.
        let discard: BTreeMap<&str, Option<u64>> = changes
            .discard_local
            .iter()
            .map(|lost| (lost.id.as_str(), lost.mutation_seq))
            .collect();
        let mut applied = 0;
        for payload in &changes.items {
            let id = payload.item.id.as_str();
            let pending = durable
                .docs
                .get(id)
                .filter(|s| s.doc.modified)
                .map(|s| s.doc.mutation_seq);
            // Keep a pending edit unless it is exactly the one that lost; a newer one meets the
            // server's conflict check on its push (the RemoteChanges contract).
            let keep = pending.is_some_and(|seq| discard.get(id) != Some(&seq));
            if keep && broken != Broken::DropUnseenEdit {
                continue;
            }
            Self::write_server(durable, payload);
            applied += 1;
        }
        for rebase in changes.rebase {
            let server = rebase.server;
            let local = rebase.local;
            durable.next_seq += 1;
            let seq = durable.next_seq;
            let (data, deleted, floor) = match durable.docs.get(&local.id) {
                Some(s) if s.doc.modified && s.doc.mutation_seq != local.mutation_seq => {
                    (s.doc.data.clone(), s.doc.deleted, s.doc.version)
                }
                _ => (local.data, local.deleted, local.version),
            };
            let doc = SimDoc {
                id: local.id.clone(),
                data,
                version: server.item.version.next().max(floor),
                base_version: Some(server.item.version),
                modified: true,
                deleted,
                mutation_seq: Some(seq),
            };
            durable.docs.insert(
                local.id,
                Stored {
                    doc,
                    server: Some(server.item),
                },
            );
            applied += 1;
        }
        applied
    }

    fn write_server(durable: &mut Durable, payload: &SyncPayload<Document>) {
        let row = &payload.item;
        durable.docs.insert(
            row.id.clone(),
            Stored {
                doc: SimDoc::from_server(row, payload.deleted || row.deleted),
                server: Some(row.clone()),
            },
        );
    }

    /// Records the server's answer to a push of `pushed` in one durable step, and translates it
    /// for the engine: an accepted change takes the server's version (and stops being pending,
    /// unless the document was edited again meanwhile: that newer edit then rests on the accepted
    /// version).
    ///
    /// # Errors
    /// [`StoreError::Crashed`] on a handle of an earlier incarnation, or
    /// [`StoreError::PushAnswerMismatch`] when the answer does not match the request one to one
    /// (nothing is recorded then).
    pub fn record_push(
        &self,
        pushed: &[SimDoc],
        response: &PushResponse,
    ) -> Result<PushResult<Document>, StoreError> {
        if response.results.len() != pushed.len()
            || response
                .results
                .iter()
                .zip(pushed)
                .any(|(result, doc)| result.id != doc.id)
        {
            return Err(StoreError::PushAnswerMismatch {
                device: self.device.to_string(),
                sent: pushed.len(),
                answered: response.results.len(),
            });
        }
        let mut durable = self.open()?;
        let mut result = PushResult::default();
        for (doc, answer) in pushed.iter().zip(&response.results) {
            match &answer.outcome {
                ChangeOutcome::Accepted { version, sync_id } => {
                    if let Some(stored) = durable.docs.get_mut(&doc.id) {
                        let previous = stored.server.as_ref().map(|s| s.data.clone());
                        stored.server = Some(Document {
                            id: doc.id.clone(),
                            sync_id: *sync_id,
                            version: *version,
                            updated_at: Timestamp::default(),
                            deleted: doc.deleted,
                            data: if doc.deleted {
                                previous.unwrap_or_default()
                            } else {
                                doc.data.clone()
                            },
                        });
                        if stored.doc.mutation_seq == doc.mutation_seq {
                            stored.doc.version = *version;
                            stored.doc.base_version = Some(*version);
                            stored.doc.modified = false;
                            stored.doc.mutation_seq = None;
                        } else {
                            // Edited again while the push was in flight: the newer edit now
                            // rests on the accepted version.
                            stored.doc.base_version = Some(*version);
                            stored.doc.version = stored.doc.version.max(version.next());
                        }
                    }
                    result.accepted.push(PushAccepted {
                        id: doc.id.clone(),
                        version: *version,
                        sync_id: *sync_id,
                    });
                }
                ChangeOutcome::Conflict { server } => result.conflicts.push(PushConflict {
                    id: doc.id.clone(),
                    server: server.clone().map(|row| {
                        let deleted = row.deleted;
                        SyncPayload { item: row, deleted }
                    }),
                }),
                ChangeOutcome::Rejected { code, message } => result.rejected.push(PushRejected {
                    id: doc.id.clone(),
                    reason: format!("{code}: {message}"),
                }),
            }
        }
        Ok(result)
    }

    /// Drops the pending edit of `id`: the document returns to the server state it rests on, or
    /// disappears if the server never had it.
    ///
    /// # Errors
    /// [`StoreError::Crashed`] on a handle of an earlier incarnation.
    pub fn discard(&self, id: &str) -> Result<(), StoreError> {
        let mut durable = self.open()?;
        let server = durable.docs.get(id).and_then(|s| s.server.clone());
        match server {
            Some(row) => {
                let deleted = row.deleted;
                Self::write_server(&mut durable, &SyncPayload { item: row, deleted });
            }
            None => {
                durable.docs.remove(id);
            }
        }
        Ok(())
    }

    /// The server state `doc`'s pending edit was made on, when the store still has it.
    pub fn base_of(&self, doc: &SimDoc) -> Option<Document> {
        lock(&self.durable)
            .docs
            .get(&doc.id)
            .and_then(|s| s.server.clone())
            .filter(|row| Some(row.version) == doc.base_version)
    }

    /// The device's metadata repo: checkpoints in this store's durable state (written together
    /// with pages by [`apply`](Self::apply)), the rest in a durable in-memory repo.
    pub fn metadata_repo(&self) -> SimMetadataRepo {
        SimMetadataRepo {
            store: self.clone(),
        }
    }
}

/// A [`SyncMetadataRepo`] over a [`SimStore`]'s durable state.
#[derive(Clone, Debug)]
pub struct SimMetadataRepo {
    store: SimStore,
}

impl SimMetadataRepo {
    fn rest(&self, operation: &str) -> Result<Arc<InMemorySyncMetadataRepo>, RepoError> {
        self.store
            .open()
            .map(|durable| durable.metadata.clone())
            .map_err(|e| RepoError::new(operation, e.to_string(), false))
    }
}

#[async_trait]
impl SyncMetadataRepo for SimMetadataRepo {
    async fn checkpoint(&self, feature: &FeatureKey) -> Result<Option<SyncCheckpoint>, RepoError> {
        let durable = self
            .store
            .open()
            .map_err(|e| RepoError::new("read checkpoint", e.to_string(), false))?;
        Ok(durable.checkpoints.get(feature).cloned())
    }

    async fn save_checkpoint(
        &self,
        feature: &FeatureKey,
        checkpoint: &SyncCheckpoint,
    ) -> Result<(), RepoError> {
        let mut durable = self
            .store
            .open()
            .map_err(|e| RepoError::new("save checkpoint", e.to_string(), false))?;
        durable
            .checkpoints
            .insert(feature.clone(), checkpoint.clone());
        Ok(())
    }

    async fn clear_checkpoint(&self, feature: &FeatureKey) -> Result<(), RepoError> {
        let mut durable = self
            .store
            .open()
            .map_err(|e| RepoError::new("clear checkpoint", e.to_string(), false))?;
        durable.checkpoints.remove(feature);
        Ok(())
    }

    async fn initial_sync_state(
        &self,
        feature: &FeatureKey,
    ) -> Result<InitialSyncState, RepoError> {
        self.rest("read initial sync state")?
            .initial_sync_state(feature)
            .await
    }

    async fn set_initial_sync_state(
        &self,
        feature: &FeatureKey,
        state: InitialSyncState,
    ) -> Result<(), RepoError> {
        self.rest("save initial sync state")?
            .set_initial_sync_state(feature, state)
            .await
    }

    async fn last_success(&self, feature: &FeatureKey) -> Result<Option<Timestamp>, RepoError> {
        self.rest("read last success")?.last_success(feature).await
    }

    async fn set_last_success(&self, feature: &FeatureKey, at: Timestamp) -> Result<(), RepoError> {
        self.rest("save last success")?
            .set_last_success(feature, at)
            .await
    }

    async fn park_conflict(&self, conflict: &ParkedConflict) -> Result<(), RepoError> {
        self.rest("park a conflict")?.park_conflict(conflict).await
    }

    async fn parked_conflicts(
        &self,
        feature: &FeatureKey,
    ) -> Result<Vec<ParkedConflict>, RepoError> {
        self.rest("read parked conflicts")?
            .parked_conflicts(feature)
            .await
    }

    async fn remove_parked_conflict(
        &self,
        feature: &FeatureKey,
        id: &str,
    ) -> Result<bool, RepoError> {
        self.rest("remove a parked conflict")?
            .remove_parked_conflict(feature, id)
            .await
    }

    async fn quarantine(&self, change: &QuarantinedChange) -> Result<(), RepoError> {
        self.rest("quarantine a change")?.quarantine(change).await
    }

    async fn quarantined(&self, feature: &FeatureKey) -> Result<Vec<QuarantinedChange>, RepoError> {
        self.rest("read quarantined changes")?
            .quarantined(feature)
            .await
    }

    async fn remove_quarantined(&self, feature: &FeatureKey, id: &str) -> Result<bool, RepoError> {
        self.rest("remove a quarantined change")?
            .remove_quarantined(feature, id)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fero::{Rebase, SyncId, SyncKind};
    use fero_protocol::ChangeResult;

    fn row(id: &str, version: u64, sync_id: u64, tag: &str) -> Document {
        Document {
            id: id.into(),
            sync_id: SyncId(sync_id),
            version: Version(version),
            updated_at: Timestamp(0),
            deleted: false,
            data: serde_json::json!({ "tag": tag }),
        }
    }

    fn page(checkpoint: u64) -> ApplyContext {
        ApplyContext::new(
            FeatureKey::new("docs"),
            SyncKind::Background,
            Some(SyncCheckpoint::at(SyncId(checkpoint))),
            1,
        )
    }

    #[tokio::test]
    async fn a_page_and_its_checkpoint_are_written_in_one_step() {
        let store = SimStore::new("d");
        let result = store
            .apply(
                RemoteChanges::from_items(vec![SyncPayload::new(row("a", 1, 5, "s"))]),
                &page(5),
            )
            .await
            .unwrap();
        assert!(result.checkpoint_saved);
        assert_eq!(store.checkpoint("docs").unwrap().last_sync_id, SyncId(5));
        assert_eq!(store.get("a").unwrap().version, Version(1));
    }

    #[tokio::test]
    async fn an_edit_the_engine_did_not_see_survives_a_pulled_update() {
        let store = SimStore::new("d");
        store
            .put("a", serde_json::json!({ "tag": "mine" }))
            .unwrap();
        store
            .apply(
                RemoteChanges::from_items(vec![SyncPayload::new(row("a", 1, 5, "theirs"))]),
                &page(5),
            )
            .await
            .unwrap();
        let doc = store.get("a").unwrap();
        assert!(doc.modified);
        assert_eq!(doc.data["tag"], "mine");
    }

    #[tokio::test]
    async fn a_rebase_gets_a_new_mutation_id_and_keeps_a_newer_edit() {
        let store = SimStore::new("d");
        let listed = store
            .put("a", serde_json::json!({ "tag": "first" }))
            .unwrap();
        store
            .put("a", serde_json::json!({ "tag": "second" }))
            .unwrap();
        let changes = RemoteChanges {
            items: Vec::new(),
            discard_local: Vec::new(),
            rebase: vec![Rebase {
                local: listed.clone(),
                server: SyncPayload::new(row("a", 3, 9, "theirs")),
            }],
        };
        store.apply(changes, &page(9)).await.unwrap();
        let doc = store.get("a").unwrap();
        assert_eq!(doc.data["tag"], "second");
        assert_eq!(doc.base_version, Some(Version(3)));
        assert!(doc.mutation_seq > Some(2));
        assert!(doc.version > Version(3));
    }

    #[test]
    fn an_accepted_push_ends_the_pending_state_unless_edited_again() {
        let store = SimStore::new("d");
        let a = store.put("a", serde_json::json!({ "tag": "a1" })).unwrap();
        let b = store.put("b", serde_json::json!({ "tag": "b1" })).unwrap();
        store.put("b", serde_json::json!({ "tag": "b2" })).unwrap();
        let accepted = |doc: &SimDoc, version| ChangeResult {
            id: doc.id.clone(),
            mutation_id: doc.to_change("d").mutation_id,
            outcome: ChangeOutcome::Accepted {
                version: Version(version),
                sync_id: SyncId(version),
            },
        };
        let response = PushResponse {
            results: vec![accepted(&a, 1), accepted(&b, 1)],
        };
        let result = store.record_push(&[a, b], &response).unwrap();
        assert_eq!(result.accepted.len(), 2);
        assert!(!store.get("a").unwrap().modified);
        let b = store.get("b").unwrap();
        assert!(b.modified);
        assert_eq!(b.base_version, Some(Version(1)));
        assert_eq!(b.data["tag"], "b2");
    }

    #[test]
    fn a_crashed_handle_can_no_longer_write() {
        let store = SimStore::new("d");
        let restarted = store.crash();
        assert!(matches!(
            store.put("a", serde_json::Value::Null),
            Err(StoreError::Crashed { .. })
        ));
        assert!(restarted.put("a", serde_json::Value::Null).is_ok());
    }
}
