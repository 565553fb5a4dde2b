//! Applying a page of server changes: the documents and the feature's checkpoint in one
//! transaction, following the contract of [`fero::RemoteChanges`].

use std::collections::HashSet;

use fero::{FeatureKey, Rebase, SyncCheckpoint, SyncPayload, Timestamp};
use fero_protocol::Document;
use rusqlite::{Connection, OptionalExtension, params};

use crate::conflict_log::{self, ConflictLogOutcome};
use crate::document::{LocalDocument, OutboxOp, check_document, encode_json};
use crate::error::{Error, Result};
use crate::metadata::{read_checkpoint, write_checkpoint};
use crate::store::{append_outbox, read_document};

/// One page to apply.
#[derive(Debug)]
pub(crate) struct Page {
    pub(crate) collection: String,
    pub(crate) items: Vec<SyncPayload<Document>>,
    /// The local edits that lost a conflict, as the engine saw them.
    pub(crate) discard_local: Vec<LocalDocument>,
    pub(crate) rebase: Vec<Rebase<LocalDocument, Document>>,
    /// The feature and the checkpoint after this page, written with it.
    pub(crate) checkpoint: Option<(FeatureKey, SyncCheckpoint)>,
    /// A page of a resync's pull from scratch: its rows are marked seen (see `crate::resync`).
    pub(crate) resync: bool,
    /// The time a conflict log record written by this page carries.
    pub(crate) now: Timestamp,
}

/// Writes a server state unless the row holds a pending local edit or a newer server state.
///
/// - A pending edit is kept: either the engine resolved its conflict (then the id is in
///   `discard_local`, restored to its base before this runs, or in `rebase`), or the edit was made
///   after the engine listed the modified items, and its push will meet the server's conflict
///   check (the `RemoteChanges` contract).
/// - An older version never replaces a newer one, and the same version again is rewritten
///   unchanged, so replaying a page after a crash is harmless.
pub(crate) const UPSERT_SERVER_STATE: &str = "
    INSERT INTO fero_documents (collection, id, data, version, deleted, locally_modified,
        base_version, base_deleted, sync_id, updated_at)
    VALUES (?1, ?2, ?3, ?4, ?5, 0, ?4, ?5, ?6, ?7)
    ON CONFLICT (collection, id) DO UPDATE SET
        data = excluded.data, version = excluded.version, deleted = excluded.deleted,
        base_version = excluded.base_version, base_deleted = excluded.base_deleted,
        sync_id = excluded.sync_id, updated_at = excluded.updated_at
    WHERE fero_documents.locally_modified = 0
      AND (fero_documents.base_version IS NULL
           OR fero_documents.base_version <= excluded.base_version)";

/// Applies `page` with `conn`, inside the caller's transaction: on `Err` the caller's
/// transaction rolls back and nothing of the page stays written. Returns the rows written.
pub(crate) fn apply_page(conn: &Connection, page: Page) -> Result<usize> {
    let collection = page.collection.as_str();
    if let Some((feature, received)) = &page.checkpoint {
        // A checkpoint behind the stored one means the server's feed went backwards (a restored
        // backup, a bug): applying it would write older states under a newer position.
        match read_checkpoint(conn, feature)? {
            Some(stored) if received.last_sync_id < stored.last_sync_id => {
                return Err(Error::CheckpointBehind {
                    feature: feature.clone(),
                    stored: stored.last_sync_id,
                    received: received.last_sync_id,
                });
            }
            _ => {}
        }
    }
    for lost in &page.discard_local {
        // Only the edit the engine decided on is dropped: an edit made after the engine listed
        // the modified documents is newer, stays pending, and meets the server's conflict check
        // on its push, where it is decided with its own event (never dropped silently).
        let stored = read_document(conn, collection, &lost.id)?;
        let same_edit = stored.is_some_and(|doc| {
            doc.locally_modified
                && doc.mutation_seq == lost.mutation_seq
                && doc.version == lost.version
        });
        if same_edit {
            // The record commits with the drop: no crash can lose the edit without it.
            let server_version = page
                .items
                .iter()
                .find(|payload| payload.item.id == lost.id)
                .map(|payload| payload.item.version);
            conflict_log::record(
                conn,
                collection,
                lost,
                ConflictLogOutcome::Dropped,
                server_version,
                page.now,
            )?;
            restore_base(conn, collection, &lost.id)?;
        }
    }
    let rebased: HashSet<&str> = page.rebase.iter().map(|r| r.local.id.as_str()).collect();
    let mut seen = HashSet::with_capacity(page.items.len());
    let mut applied = 0;
    let mut upsert = conn
        .prepare_cached(UPSERT_SERVER_STATE)
        .map_err(Error::sqlite(format!(
            "prepare the page upsert of {collection}"
        )))?;
    for payload in &page.items {
        let doc = &payload.item;
        if !seen.insert(doc.id.as_str()) {
            return Err(Error::DuplicateId {
                collection: collection.to_owned(),
                id: doc.id.clone(),
            });
        }
        let deleted = payload.deleted || doc.deleted;
        check_document(collection, &doc.id, &doc.data, deleted)?;
        if rebased.contains(doc.id.as_str()) {
            // The rebase below writes this id with the server state as its base.
            continue;
        }
        let data = encode_json(&doc.data, &doc.id, "data")?;
        let written = upsert
            .execute(params![
                collection,
                doc.id,
                data,
                doc.version.0,
                deleted,
                doc.sync_id.0,
                doc.updated_at.0,
            ])
            // The operation is named only on failure: formatting it for every row was 6% of a
            // page's apply (W7-move).
            .map_err(|source| Error::Sqlite {
                operation: format!("write document {:?} of {collection}", doc.id),
                source,
            })?;
        applied += written;
        if written == 0 && page.checkpoint.is_some() && !page.resync {
            // Refused: a pending edit, or a newer synced copy. Only the latter is news.
            check_not_behind(conn, collection, doc)?;
        }
    }
    let mut rebase_ids = HashSet::with_capacity(page.rebase.len());
    for rebase in page.rebase {
        if !rebase_ids.insert(rebase.local.id.clone()) {
            return Err(Error::DuplicateId {
                collection: collection.to_owned(),
                id: rebase.local.id,
            });
        }
        if write_rebase(conn, collection, rebase, page.now)? {
            applied += 1;
        }
    }
    if page.resync {
        let items: Vec<&Document> = page.items.iter().map(|p| &p.item).collect();
        crate::resync::mark_seen(conn, collection, &items)?;
    }
    if let Some((feature, checkpoint)) = &page.checkpoint {
        // Same transaction as the rows above: a crash leaves both or neither (exactly-once).
        write_checkpoint(conn, feature, checkpoint)?;
    }
    Ok(applied)
}

/// Fails with [`Error::ServerBehind`] when the synced live copy of `doc` is newer than `doc`.
///
/// A server's versions of a row only grow, and a row deleted and purged can come back at a lower
/// version only to a device that holds its tombstone (excluded here) or that was behind the
/// purge horizon (which gets a 410 first). So a live synced copy above the pulled version means
/// the server lost writes: the engine resyncs, even when the server did not notice it was
/// restored (another device's pushes may already have lengthened its feed past this device's
/// checkpoint).
fn check_not_behind(conn: &Connection, collection: &str, doc: &Document) -> Result<()> {
    let Some(local) = read_document(conn, collection, &doc.id)? else {
        return Ok(());
    };
    match local.base_version {
        Some(base) if !local.locally_modified && !local.deleted && base > doc.version => {
            Err(Error::ServerBehind {
                collection: collection.to_owned(),
                id: doc.id.clone(),
                local: base,
                server: doc.version,
            })
        }
        _ => Ok(()),
    }
}

/// Drops the pending edit of `id` and its outbox entries, restoring the server state it rested
/// on; a document the server never saw is removed.
pub(crate) fn restore_base(conn: &Connection, collection: &str, id: &str) -> Result<()> {
    let operation = || format!("discard the local edit of {id:?} in {collection}");
    conn.prepare_cached("DELETE FROM fero_outbox WHERE collection = ?1 AND id = ?2")
        .and_then(|mut stmt| stmt.execute([collection, id]))
        .map_err(Error::sqlite(operation()))?;
    conn.prepare_cached(
        "DELETE FROM fero_documents
         WHERE collection = ?1 AND id = ?2 AND locally_modified = 1 AND base_version IS NULL",
    )
    .and_then(|mut stmt| stmt.execute([collection, id]))
    .map_err(Error::sqlite(operation()))?;
    conn.prepare_cached(
        "UPDATE fero_documents SET data = coalesce(base_data, data), deleted = base_deleted,
             version = base_version, locally_modified = 0, pending_seq = NULL,
             mutation_seq = NULL, base_data = NULL
         WHERE collection = ?1 AND id = ?2 AND locally_modified = 1",
    )
    .and_then(|mut stmt| stmt.execute([collection, id]))
    .map_err(Error::sqlite(operation()))?;
    Ok(())
}

/// Writes a local edit that keeps its content after a conflict, now resting on the server's
/// state: a new outbox entry (a new mutation id, because the server's answer to the old one is
/// final) with the server's version as base, and the server's data as the base copy.
///
/// Returns `false` without writing when the stored edit is newer than the copy the engine
/// resolved: that edit is kept as is, and its push meets the conflict check again.
///
/// When the re-based content differs from the stored edit it replaces (a merge), the stored edit
/// is recorded in the conflict log in the same transaction.
fn write_rebase(
    conn: &Connection,
    collection: &str,
    rebase: Rebase<LocalDocument, Document>,
    now: Timestamp,
) -> Result<bool> {
    let Rebase { local, server } = rebase;
    let id = local.id.as_str();
    if server.item.id != local.id {
        return Err(Error::InvalidDocument {
            collection: collection.to_owned(),
            id: local.id.clone(),
            reason: format!(
                "a rebase pairs it with the server's document {:?}",
                server.item.id
            ),
        });
    }
    check_document(collection, id, &local.data, local.deleted)?;
    let server_deleted = server.deleted || server.item.deleted;
    check_document(collection, id, &server.item.data, server_deleted)?;
    let current = read_document(conn, collection, id)?;
    let newer_edit_stored = current.as_ref().is_some_and(|stored| {
        stored.locally_modified
            && matches!(
                (local.mutation_seq, stored.mutation_seq),
                (Some(seen), Some(newest)) if newest > seen
            )
    });
    if newer_edit_stored {
        return Ok(false);
    }
    if let Some(stored) = current.as_ref().filter(|stored| {
        stored.locally_modified
            && (stored.deleted != local.deleted || (!local.deleted && stored.data != local.data))
    }) {
        conflict_log::record(
            conn,
            collection,
            stored,
            ConflictLogOutcome::Overwritten,
            Some(server.item.version),
            now,
        )?;
    }
    let op = if local.deleted {
        OutboxOp::Delete
    } else if server_deleted {
        OutboxOp::Insert
    } else {
        OutboxOp::Update
    };
    let data = encode_json(&local.data, id, "data")?;
    let outbox_data = if local.deleted { "null" } else { data.as_str() };
    let server_version = server.item.version;
    let seq = append_outbox(conn, collection, id, op, Some(server_version), outbox_data)?;
    let pending_since: Option<u64> = conn
        .prepare_cached(
            "SELECT pending_seq FROM fero_documents
             WHERE collection = ?1 AND id = ?2 AND locally_modified = 1",
        )
        .and_then(|mut stmt| {
            stmt.query_row([collection, id], |row| row.get::<_, Option<u64>>(0))
                .optional()
                .map(Option::flatten)
        })
        .map_err(Error::sqlite(format!(
            "read the pending edit of {id:?} in {collection}"
        )))?;
    let version = server_version
        .next()
        .max(local.version)
        .max(current.map_or(local.version, |c| c.version));
    let base_data = encode_json(&server.item.data, id, "base data")?;
    conn.prepare_cached(
        "INSERT INTO fero_documents (collection, id, data, version, deleted, locally_modified,
             pending_seq, mutation_seq, base_version, base_deleted, base_data, sync_id,
             updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
         ON CONFLICT (collection, id) DO UPDATE SET
             data = excluded.data, version = excluded.version, deleted = excluded.deleted,
             locally_modified = 1, pending_seq = excluded.pending_seq,
             mutation_seq = excluded.mutation_seq, base_version = excluded.base_version,
             base_deleted = excluded.base_deleted, base_data = excluded.base_data,
             sync_id = excluded.sync_id, updated_at = excluded.updated_at",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            collection,
            id,
            data,
            version.0,
            local.deleted,
            pending_since.unwrap_or(seq),
            seq,
            server_version.0,
            server_deleted,
            base_data,
            server.item.sync_id.0,
            server.item.updated_at.0,
        ])
    })
    .map_err(Error::sqlite(format!(
        "write the rebased edit of {id:?} in {collection}"
    )))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use fero::{SyncId, Timestamp, Version};

    use super::*;
    use crate::schema::{Synchronous, open_file};

    /// A row of bench-spec shape: `item-0000001`…, name 20, email 30, body 100 characters.
    fn bench_doc(index: u64) -> Document {
        let letter = |offset: u64, len: usize| -> String {
            (0..len as u64)
                .map(|i| char::from(b'a' + ((index * 31 + offset + i * 7) % 26) as u8))
                .collect()
        };
        Document {
            id: format!("item-{:07}", index + 1),
            sync_id: SyncId(index + 1),
            version: Version(1),
            updated_at: Timestamp(1_700_000_000_000 + index),
            deleted: false,
            data: serde_json::json!({
                "name": letter(0, 20),
                "email": format!("{}@example.com", letter(1, 18)),
                "body": letter(2, 100),
            }),
        }
    }

    const ROWS: u64 = 200_000;
    const PAGE: u64 = 1_000;

    /// W4-raw: the floor for an initial sync into this schema. Run with
    /// `cargo test --release -p fero-sqlite -- --ignored --nocapture raw_insert_rate`.
    #[test]
    #[ignore = "a measurement, run in release"]
    fn raw_insert_rate_of_the_document_schema() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open_file(&dir.path().join("w4raw.db"), Synchronous::Normal).unwrap();
        let docs: Vec<Document> = (0..ROWS).map(bench_doc).collect();
        let started = Instant::now();
        for page in docs.chunks(PAGE as usize) {
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .unwrap();
            {
                let mut stmt = tx.prepare_cached(UPSERT_SERVER_STATE).unwrap();
                for doc in page {
                    let data = serde_json::to_string(&doc.data).unwrap();
                    stmt.execute(params![
                        "items",
                        doc.id,
                        data,
                        doc.version.0,
                        false,
                        doc.sync_id.0,
                        doc.updated_at.0
                    ])
                    .unwrap();
                }
            }
            tx.commit().unwrap();
        }
        let seconds = started.elapsed().as_secs_f64();
        let count: u64 = conn
            .query_row("SELECT count(*) FROM fero_documents", [], |r| r.get(0))
            .unwrap();
        assert_eq!(count, ROWS);
        println!(
            "{{\"workload\":\"W4-raw\",\"n\":{ROWS},\"batch\":{PAGE},\"seconds\":{seconds:.3},\
             \"items_per_s\":{:.0}}}",
            ROWS as f64 / seconds
        );
    }

    /// The same rows through the full apply path (validation, checkpoint in the transaction).
    #[test]
    #[ignore = "a measurement, run in release"]
    fn apply_path_insert_rate_of_the_document_schema() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open_file(&dir.path().join("apply.db"), Synchronous::Normal).unwrap();
        let pages: Vec<Vec<SyncPayload<Document>>> = (0..ROWS / PAGE)
            .map(|p| {
                (p * PAGE..(p + 1) * PAGE)
                    .map(|i| SyncPayload::new(bench_doc(i)))
                    .collect()
            })
            .collect();
        let feature = FeatureKey::new("items");
        let started = Instant::now();
        for (number, items) in pages.into_iter().enumerate() {
            let end = (number as u64 + 1) * PAGE;
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .unwrap();
            let page = Page {
                collection: "items".into(),
                items,
                discard_local: Vec::new(),
                rebase: Vec::new(),
                checkpoint: Some((feature.clone(), SyncCheckpoint::at(SyncId(end)))),
                resync: false,
                now: Timestamp(0),
            };
            assert_eq!(apply_page(&tx, page).unwrap(), PAGE as usize);
            tx.commit().unwrap();
        }
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "{{\"workload\":\"apply-path\",\"n\":{ROWS},\"batch\":{PAGE},\"seconds\":{seconds:.3},\
             \"items_per_s\":{:.0}}}",
            ROWS as f64 / seconds
        );
    }
}
