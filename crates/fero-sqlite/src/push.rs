//! Pushing local edits: building the changes from the stored pending state, and recording the
//! server's answer in one transaction.

use std::collections::{HashMap, HashSet};

use fero::{PushAccepted, PushConflict, PushRejected, PushResult, SyncId, SyncPayload, Version};
use fero_protocol::{Change, ChangeOutcome, Document, MutationId, PushResponse};
use rusqlite::{Connection, OptionalExtension, params};

use crate::document::encode_json;
use crate::error::{Error, Result};
use crate::store::read_document;

/// One change as pushed, with what recording its acceptance needs.
#[derive(Debug, Clone)]
pub(crate) struct Pushed {
    pub(crate) change: Change,
    /// The content pushed, as stored: it becomes the base copy if the document was edited again.
    data: String,
}

impl Pushed {
    fn seq(&self) -> u64 {
        self.change.mutation_id.seq
    }
}

/// Builds the changes for the pending edits of `ids` from the stored rows (not from the copies
/// the engine holds, which may be older): each carries the document's newest state, its base
/// version, and the mutation id of its newest outbox entry, so pushing the same pending state
/// again, after a lost answer or a restart, carries the same id. Ids without a pending edit
/// (pushed or discarded since they were listed) are left out.
pub(crate) fn pending_changes(
    conn: &Connection,
    collection: &str,
    device: &str,
    ids: &[String],
) -> Result<Vec<Pushed>> {
    let mut seen = HashSet::with_capacity(ids.len());
    let mut changes = Vec::with_capacity(ids.len());
    for id in ids {
        if !seen.insert(id.as_str()) {
            continue;
        }
        let Some(doc) = read_document(conn, collection, id)? else {
            continue;
        };
        let Some(seq) = doc.mutation_seq.filter(|_| doc.locally_modified) else {
            continue;
        };
        let data = encode_json(&doc.data, id, "data")?;
        changes.push(Pushed {
            change: Change {
                id: doc.id,
                base_version: doc.base_version,
                mutation_id: MutationId::new(device, seq),
                deleted: doc.deleted,
                // The protocol ignores a deletion's content; do not send it.
                data: if doc.deleted {
                    serde_json::Value::Null
                } else {
                    doc.data
                },
            },
            data,
        });
    }
    Ok(changes)
}

/// Records the server's answer to `pushed` inside the caller's transaction and translates it for
/// the engine.
///
/// - Accepted: the outbox entries up to the pushed one leave; the document takes the new version
///   and `sync_id` and is no longer locally modified, unless it was edited again after the
///   pushed state, in which case the newer edit now rests on the accepted version.
/// - Conflict and rejected: nothing is written (the engine resolves or quarantines them).
///
/// An answer for a change that was not sent fails the whole call: nothing is recorded.
pub(crate) fn record_push(
    conn: &Connection,
    collection: &str,
    pushed: &[Pushed],
    response: PushResponse,
) -> Result<PushResult<Document>> {
    let by_mutation: HashMap<(&str, &MutationId), &Pushed> = pushed
        .iter()
        .map(|p| ((p.change.id.as_str(), &p.change.mutation_id), p))
        .collect();
    let mut result = PushResult::default();
    for answer in response.results {
        let Some(sent) = by_mutation
            .get(&(answer.id.as_str(), &answer.mutation_id))
            .copied()
        else {
            return Err(Error::UnexpectedPushResult {
                collection: collection.to_owned(),
                sent: pushed.len(),
                id: answer.id,
            });
        };
        match answer.outcome {
            ChangeOutcome::Accepted { version, sync_id } => {
                record_accepted(conn, collection, sent, version, sync_id)?;
                result.accepted.push(PushAccepted {
                    id: answer.id,
                    version,
                    sync_id,
                });
            }
            ChangeOutcome::Conflict { server } => result.conflicts.push(PushConflict {
                id: answer.id,
                server: server.map(|doc| SyncPayload {
                    deleted: doc.deleted,
                    item: doc,
                }),
            }),
            ChangeOutcome::Rejected { code, message } => result.rejected.push(PushRejected {
                id: answer.id,
                reason: format!("{code}: {message}"),
            }),
        }
    }
    Ok(result)
}

fn record_accepted(
    conn: &Connection,
    collection: &str,
    sent: &Pushed,
    version: Version,
    sync_id: SyncId,
) -> Result<()> {
    let id = sent.change.id.as_str();
    let operation = || format!("record the accepted push of {id:?} in {collection}");
    conn.prepare_cached("DELETE FROM fero_outbox WHERE collection = ?1 AND id = ?2 AND seq <= ?3")
        .and_then(|mut stmt| stmt.execute(params![collection, id, sent.seq()]))
        .map_err(Error::sqlite(operation()))?;
    let oldest_remaining: Option<u64> = conn
        .prepare_cached("SELECT min(seq) FROM fero_outbox WHERE collection = ?1 AND id = ?2")
        .and_then(|mut stmt| {
            stmt.query_row([collection, id], |row| row.get::<_, Option<u64>>(0))
                .optional()
                .map(Option::flatten)
        })
        .map_err(Error::sqlite(operation()))?;
    match oldest_remaining {
        // Not edited since the pushed state: the copy is the server's state now. (A row that is
        // no longer pending at that seq was discarded meanwhile; the next pull brings the
        // accepted state.)
        None => conn
            .prepare_cached(
                "UPDATE fero_documents SET version = ?3, base_version = ?3,
                     base_deleted = deleted, sync_id = ?4, locally_modified = 0,
                     pending_seq = NULL, mutation_seq = NULL, base_data = NULL
                 WHERE collection = ?1 AND id = ?2 AND locally_modified = 1
                   AND mutation_seq = ?5",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![collection, id, version.0, sync_id.0, sent.seq()])
            }),
        // Edited again: the newer edit stays pending, now on the accepted version, and the
        // pushed content is its base copy.
        Some(oldest) => conn
            .prepare_cached(
                "UPDATE fero_documents SET base_version = ?3, base_deleted = ?4,
                     base_data = ?5, sync_id = ?6, version = max(version, ?3 + 1),
                     pending_seq = ?7
                 WHERE collection = ?1 AND id = ?2 AND locally_modified = 1",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![
                    collection,
                    id,
                    version.0,
                    sent.change.deleted,
                    sent.data,
                    sync_id.0,
                    oldest
                ])
            }),
    }
    .map_err(Error::sqlite(operation()))?;
    Ok(())
}
