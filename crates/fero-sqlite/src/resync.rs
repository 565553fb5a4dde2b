//! A collection's resync (see [`fero::resync`]): which rows the pull from scratch brought back,
//! and what becomes of the others.
//!
//! # Marking rows unseen without writing them
//! `fero_resync` holds a generation per collection; `begin` raises it, which makes every row of
//! the collection unseen at once (a row is seen when its `resync_seen` equals the current
//! generation), so a resync of a million rows does not start with a million writes. Each pulled
//! row of a resync page is stamped with the generation in the page's transaction.
//!
//! # At the end ([`end`])
//! - A pending local edit is always kept (its push follows, conflicts as usual).
//! - [`ResyncReason::TombstonesPurged`]: a synced row not seen was deleted on the server and its
//!   tombstone purged: it is removed.
//! - Otherwise (the server is behind, or the reason is unknown): a synced live row not seen is
//!   kept and queued as a new write (an insert without base version), so the push recreates it
//!   on the server. Nothing is removed.
//!
//! During the pages ([`mark_seen`]), a synced row whose version is above the server's (the
//! server lost the newer writes) is queued for a push on the server's version, whatever the
//! reason: the server's versions only grow, so only a restored server can be behind a row.

use fero::{ResyncOutcome, ResyncReason};
use fero_protocol::Document;
use rusqlite::{Connection, OptionalExtension, params};

use crate::document::{OutboxOp, encode_json};
use crate::error::{Error, Result};
use crate::store::{append_outbox, read_document};

fn reason_text(reason: ResyncReason) -> String {
    // The same words as the protocol's `reason`, read back by `in_progress`.
    reason.to_string()
}

/// Starts a resync of `collection`: raises its generation (every row becomes unseen) and records
/// the reason. Returns the new generation.
pub(crate) fn begin(conn: &Connection, collection: &str, reason: ResyncReason) -> Result<u64> {
    let operation = || format!("start the resync of {collection}");
    conn.prepare_cached(
        "INSERT INTO fero_resync (collection, generation, reason, repushed)
         VALUES (?1, 1, ?2, 0)
         ON CONFLICT (collection) DO UPDATE SET
             generation = generation + 1, reason = excluded.reason, repushed = 0",
    )
    .and_then(|mut stmt| stmt.execute(params![collection, reason_text(reason)]))
    .map_err(Error::sqlite(operation()))?;
    generation(conn, collection)?.ok_or_else(|| Error::InvalidDocument {
        collection: collection.to_owned(),
        id: String::new(),
        reason: "the resync generation was not stored".into(),
    })
}

/// The reason of the collection's resync that began and did not end, if any.
pub(crate) fn in_progress(conn: &Connection, collection: &str) -> Result<Option<ResyncReason>> {
    let reason: Option<Option<String>> = conn
        .prepare_cached("SELECT reason FROM fero_resync WHERE collection = ?1")
        .and_then(|mut stmt| stmt.query_row([collection], |row| row.get(0)).optional())
        .map_err(Error::sqlite(format!(
            "read the resync under way of {collection}"
        )))?;
    Ok(reason.flatten().map(|text| match text.as_str() {
        "tombstones_purged" => ResyncReason::TombstonesPurged,
        "server_behind" => ResyncReason::ServerBehind,
        // Unknown keeps every row, the safe reading of anything else.
        _ => ResyncReason::Unknown,
    }))
}

/// The collection's current resync generation, if it ever resynced.
fn generation(conn: &Connection, collection: &str) -> Result<Option<u64>> {
    conn.prepare_cached("SELECT generation FROM fero_resync WHERE collection = ?1")
        .and_then(|mut stmt| stmt.query_row([collection], |row| row.get(0)).optional())
        .map_err(Error::sqlite(format!(
            "read the resync generation of {collection}"
        )))
}

/// Stamps the pulled rows of a resync page as seen, and queues for a push every synced row the
/// server holds at an older version than this device. Runs in the page's transaction, after the
/// page was written.
pub(crate) fn mark_seen(conn: &Connection, collection: &str, items: &[&Document]) -> Result<()> {
    let Some(generation) = generation(conn, collection)? else {
        return Ok(());
    };
    let mut repushed = 0u64;
    let mut stamp = conn
        .prepare_cached(
            "UPDATE fero_documents SET resync_seen = ?3 WHERE collection = ?1 AND id = ?2",
        )
        .map_err(Error::sqlite(format!(
            "prepare the resync stamp of {collection}"
        )))?;
    for doc in items {
        stamp
            .execute(params![collection, doc.id, generation])
            .map_err(|source| Error::Sqlite {
                operation: format!("mark {:?} of {collection} seen by the resync", doc.id),
                source,
            })?;
        if requeue_newer(conn, collection, doc)? {
            repushed += 1;
        }
    }
    if repushed > 0 {
        conn.prepare_cached(
            "UPDATE fero_resync SET repushed = repushed + ?2 WHERE collection = ?1",
        )
        .and_then(|mut stmt| stmt.execute(params![collection, repushed]))
        .map_err(Error::sqlite(format!(
            "count the re-pushed rows of {collection}"
        )))?;
    }
    Ok(())
}

/// A synced row above the server's version becomes a pending edit on the server's version (the
/// server's state is its base copy), so the push writes it back. Returns `true` when it did.
fn requeue_newer(conn: &Connection, collection: &str, server: &Document) -> Result<bool> {
    let Some(local) = read_document(conn, collection, &server.id)? else {
        return Ok(false);
    };
    let newer =
        !local.locally_modified && local.base_version.is_some_and(|base| base > server.version);
    if !newer {
        return Ok(false);
    }
    let server_deleted = server.deleted;
    if local.deleted && server_deleted {
        return Ok(false);
    }
    let op = if local.deleted {
        OutboxOp::Delete
    } else if server_deleted {
        OutboxOp::Insert
    } else {
        OutboxOp::Update
    };
    let data = encode_json(&local.data, &local.id, "data")?;
    let outbox_data = if local.deleted { "null" } else { data.as_str() };
    let seq = append_outbox(
        conn,
        collection,
        &local.id,
        op,
        Some(server.version),
        outbox_data,
    )?;
    let base_data = encode_json(&server.data, &server.id, "base data")?;
    conn.prepare_cached(
        "UPDATE fero_documents SET locally_modified = 1, pending_seq = ?3, mutation_seq = ?3,
             base_version = ?4, base_deleted = ?5, base_data = ?6, sync_id = ?7
         WHERE collection = ?1 AND id = ?2",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            collection,
            local.id,
            seq,
            server.version.0,
            server_deleted,
            base_data,
            server.sync_id.0,
        ])
    })
    .map_err(Error::sqlite(format!(
        "queue {:?} of {collection} to be pushed back to a server behind it",
        local.id
    )))?;
    Ok(true)
}

/// Ends the resync of `collection`: settles the rows the pull did not bring back (see the module
/// docs) and reports what became of them.
pub(crate) fn end(
    conn: &Connection,
    collection: &str,
    reason: ResyncReason,
) -> Result<ResyncOutcome> {
    let operation = |what: &str| format!("end the resync of {collection}: {what}");
    let Some(generation) = generation(conn, collection)? else {
        // No begin was recorded (a handler used without `begin_resync`): nothing is unseen.
        return Ok(ResyncOutcome::default());
    };
    let unseen = "collection = ?1 AND (resync_seen IS NULL OR resync_seen < ?2)";
    let kept_pending: u64 = conn
        .query_row(
            &format!("SELECT count(*) FROM fero_documents WHERE {unseen} AND locally_modified = 1"),
            params![collection, generation],
            |row| row.get(0),
        )
        .map_err(Error::sqlite(operation("count the pending edits")))?;
    let repushed_in_pages: u64 = conn
        .query_row(
            "SELECT repushed FROM fero_resync WHERE collection = ?1",
            [collection],
            |row| row.get(0),
        )
        .map_err(Error::sqlite(operation("read the re-pushed count")))?;
    let mut outcome = ResyncOutcome::new(0, kept_pending, repushed_in_pages);
    if reason.removes_unseen_rows() {
        let removed = conn
            .execute(
                &format!("DELETE FROM fero_documents WHERE {unseen} AND locally_modified = 0"),
                params![collection, generation],
            )
            .map_err(Error::sqlite(operation(
                "remove the rows the server deleted",
            )))?;
        outcome.removed = removed as u64;
    } else {
        // Rows the server lacks: kept, and pushed back as new writes.
        // A pending edit of a row the server lacks is pushed as a creation.
        conn.execute(
            &format!(
                "UPDATE fero_documents SET base_version = NULL, base_deleted = 0, base_data = NULL
                 WHERE {unseen} AND locally_modified = 1 AND deleted = 0"
            ),
            params![collection, generation],
        )
        .map_err(Error::sqlite(operation(
            "re-base the pending edits on nothing",
        )))?;
        let ids: Vec<(String, String)> = conn
            .prepare(&format!(
                "SELECT id, data FROM fero_documents
                 WHERE {unseen} AND locally_modified = 0 AND deleted = 0 ORDER BY id"
            ))
            .and_then(|mut stmt| {
                stmt.query_map(params![collection, generation], |row| {
                    Ok((row.get(0)?, row.get(1)?))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(Error::sqlite(operation("list the rows the server lacks")))?;
        for (id, data) in &ids {
            let seq = append_outbox(conn, collection, id, OutboxOp::Insert, None, data)?;
            conn.prepare_cached(
                "UPDATE fero_documents SET locally_modified = 1, pending_seq = ?3,
                     mutation_seq = ?3, base_version = NULL, base_deleted = 0, base_data = NULL,
                     sync_id = NULL
                 WHERE collection = ?1 AND id = ?2",
            )
            .and_then(|mut stmt| stmt.execute(params![collection, id, seq]))
            .map_err(Error::sqlite(operation("queue a row the server lacks")))?;
        }
        outcome.kept += ids.len() as u64;
        outcome.repushed += ids.len() as u64;
    }
    conn.prepare_cached("UPDATE fero_resync SET reason = NULL, repushed = 0 WHERE collection = ?1")
        .and_then(|mut stmt| stmt.execute([collection]))
        .map_err(Error::sqlite(operation("close the resync")))?;
    Ok(outcome)
}
