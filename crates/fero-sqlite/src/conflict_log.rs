//! The conflict log: a durable record of every local edit a conflict dropped or overwrote,
//! written in the transaction that drops it, kept until the app acknowledges it.
//!
//! The engine's [`ConflictResolved`](fero::SyncEvent::ConflictResolved) event tells a listening
//! app at once, but an event lives in memory: a process that dies after the transaction that
//! dropped an edit committed and before the event was sent would lose the edit without a trace.
//! The log closes that gap: the drop and its record commit together, so after any crash the app
//! finds every dropped edit in [`SqliteStore::conflict_log`](crate::SqliteStore::conflict_log),
//! shows or re-applies it, and then calls
//! [`acknowledge_conflicts`](crate::SqliteStore::acknowledge_conflicts).

use fero::{Timestamp, Version};
use rusqlite::{Connection, params};
use serde::{Deserialize, Serialize};

use crate::document::{LocalDocument, encode_json, parse_json};
use crate::error::{Error, Result};

/// What a conflict did to the local edit a [`ConflictRecord`] keeps.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ConflictLogOutcome {
    /// The server's state won: the edit was dropped and the server's state written in its place
    /// (strategies `ServerWins`, `HighestVersionWins` with the server ahead, or an app's manual
    /// "keep server").
    Dropped,
    /// The edit's content was replaced by another the engine re-based in its place (a merge):
    /// the record keeps the content as the user left it.
    Overwritten,
}

impl ConflictLogOutcome {
    fn as_str(self) -> &'static str {
        match self {
            ConflictLogOutcome::Dropped => "dropped",
            ConflictLogOutcome::Overwritten => "overwritten",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "dropped" => Some(ConflictLogOutcome::Dropped),
            "overwritten" => Some(ConflictLogOutcome::Overwritten),
            _ => None,
        }
    }
}

/// One local edit a conflict dropped or overwrote, as [`SqliteStore::conflict_log`] returns it.
///
/// [`SqliteStore::conflict_log`]: crate::SqliteStore::conflict_log
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConflictRecord {
    /// The record's number, increasing in the order records were written; pass it to
    /// [`SqliteStore::acknowledge_conflicts`](crate::SqliteStore::acknowledge_conflicts).
    pub log_id: u64,
    /// The collection of the document.
    pub collection: String,
    /// The document's id.
    pub id: String,
    /// What happened to the edit.
    pub outcome: ConflictLogOutcome,
    /// The local version the edit had.
    pub local_version: Version,
    /// The outbox sequence number of the edit (its mutation id's `seq`), when it had one.
    pub local_mutation_seq: Option<u64>,
    /// The edit was a deletion.
    pub local_deleted: bool,
    /// The edit's content (for a deletion, the last content the document had).
    pub local_data: serde_json::Value,
    /// The server version that won, when the server state was known.
    pub server_version: Option<Version>,
    /// When the record was written, by the store's clock
    /// ([`StoreOptions::clock`](crate::StoreOptions::clock)).
    pub recorded_at: Timestamp,
}

/// Writes a record of `local` inside the caller's transaction.
pub(crate) fn record(
    conn: &Connection,
    collection: &str,
    local: &LocalDocument,
    outcome: ConflictLogOutcome,
    server_version: Option<Version>,
    recorded_at: Timestamp,
) -> Result<()> {
    let data = encode_json(&local.data, &local.id, "conflict log data")?;
    conn.prepare_cached(
        "INSERT INTO fero_conflict_log (collection, id, outcome, local_version,
             local_mutation_seq, local_deleted, local_data, server_version, recorded_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            collection,
            local.id,
            outcome.as_str(),
            local.version.0,
            local.mutation_seq,
            local.deleted,
            data,
            server_version.map(|v| v.0),
            recorded_at.0,
        ])
    })
    .map_err(Error::sqlite(format!(
        "record the {} local edit of {:?} in {collection}'s conflict log",
        outcome.as_str(),
        local.id
    )))?;
    Ok(())
}

/// Every unacknowledged record, oldest first.
pub(crate) fn read_all(conn: &Connection) -> Result<Vec<ConflictRecord>> {
    let operation = "read the conflict log";
    let rows = conn
        .prepare_cached(
            "SELECT log_id, collection, id, outcome, local_version, local_mutation_seq,
                 local_deleted, local_data, server_version, recorded_at
             FROM fero_conflict_log ORDER BY log_id",
        )
        .and_then(|mut stmt| {
            stmt.query_map([], |row| {
                Ok((
                    row.get::<_, u64>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, String>(3)?,
                    row.get::<_, u64>(4)?,
                    row.get::<_, Option<u64>>(5)?,
                    row.get::<_, bool>(6)?,
                    row.get::<_, String>(7)?,
                    row.get::<_, Option<u64>>(8)?,
                    row.get::<_, u64>(9)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(Error::sqlite(operation))?;
    rows.into_iter()
        .map(
            |(log_id, collection, id, outcome, version, seq, deleted, data, server, at)| {
                // The column's CHECK constraint admits only the known values.
                let outcome =
                    ConflictLogOutcome::parse(&outcome).unwrap_or(ConflictLogOutcome::Dropped);
                Ok(ConflictRecord {
                    local_data: parse_json(&data, &collection, &id, "conflict log data")?,
                    log_id,
                    collection,
                    id,
                    outcome,
                    local_version: Version(version),
                    local_mutation_seq: seq,
                    local_deleted: deleted,
                    server_version: server.map(Version),
                    recorded_at: Timestamp(at),
                })
            },
        )
        .collect()
}

/// Removes the records `log_ids`; returns how many existed.
pub(crate) fn acknowledge(conn: &Connection, log_ids: &[u64]) -> Result<u64> {
    let mut removed = 0;
    let mut stmt = conn
        .prepare_cached("DELETE FROM fero_conflict_log WHERE log_id = ?1")
        .map_err(Error::sqlite("prepare to acknowledge conflict log records"))?;
    for log_id in log_ids {
        removed += stmt.execute([log_id]).map_err(Error::sqlite(format!(
            "acknowledge conflict log record {log_id}"
        )))? as u64;
    }
    Ok(removed)
}
