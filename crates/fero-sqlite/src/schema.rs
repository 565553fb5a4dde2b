//! The schema, its ordered migrations (`PRAGMA user_version`), and the connection settings.
//!
//! # Tables
//! - `fero_meta`: key/value facts about this database (the device id).
//! - `fero_features`: per feature: checkpoint, initial-sync state, last success.
//! - `fero_parked`, `fero_quarantined`: parked conflicts and quarantined changes, oldest first.
//! - `fero_documents`: one row per (collection, id): the local copy and the server state it
//!   rests on (`base_*`), see [`LocalDocument`](crate::LocalDocument).
//! - `fero_outbox`: pending local mutations in order; `seq` is the per-device mutation sequence.
//! - `fero_resync`: per collection, the generation of its latest resync (see `resync_seen` on
//!   `fero_documents`) and, while one is under way, its reason.
//! - `fero_conflict_log`: local edits a conflict dropped or overwrote, until the app acknowledges
//!   them (see [`ConflictRecord`](crate::ConflictRecord)).
//! - `fero_subscriptions`: per collection, the subscriptions a
//!   [`SubscriptionSync`](crate::SubscriptionSync) pulls, each with a generation that is never
//!   reused.
//! - `fero_subscription_rows`: which subscription delivered which row (its tags), so an
//!   unsubscribe removes only the rows no other subscription still covers.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use crate::error::{Error, Result};

/// Migrations in order: entry `i` takes the schema from version `i` to `i + 1`. Append only; an
/// applied migration is never edited, or databases already past it would differ from new ones.
const MIGRATIONS: &[&str] = &[
    // 1: sync metadata.
    "CREATE TABLE fero_meta (
         key   TEXT PRIMARY KEY NOT NULL,
         value TEXT NOT NULL
     ) WITHOUT ROWID;
     CREATE TABLE fero_features (
         feature            TEXT PRIMARY KEY NOT NULL,
         checkpoint_sync_id INTEGER,
         checkpoint_at      INTEGER,
         checkpoint_cursor  TEXT,
         initial_state      TEXT NOT NULL DEFAULT 'pending'
                            CHECK (initial_state IN ('pending', 'completed')),
         last_success       INTEGER
     ) WITHOUT ROWID;
     CREATE TABLE fero_parked (
         seq     INTEGER PRIMARY KEY AUTOINCREMENT,
         feature TEXT NOT NULL,
         id      TEXT NOT NULL,
         body    TEXT NOT NULL,
         UNIQUE (feature, id)
     );
     CREATE TABLE fero_quarantined (
         seq     INTEGER PRIMARY KEY AUTOINCREMENT,
         feature TEXT NOT NULL,
         id      TEXT NOT NULL,
         body    TEXT NOT NULL,
         UNIQUE (feature, id)
     );",
    // 2: documents and the outbox.
    //
    // WITHOUT ROWID: the (collection, id) key is the only lookup path, so the table is one b-tree
    // instead of a table plus a unique index: half the writes per applied row.
    //
    // The partial index holds only rows with a pending edit, so a bulk pull writes nothing to it,
    // and listing the pending edits of a collection of a million synced rows reads only them.
    //
    // AUTOINCREMENT on the outbox: a mutation sequence number must never be handed out twice,
    // even after the entries holding the highest ones were removed, or the server would answer
    // a new change with the stored result of an old one (protocol notes §3).
    "CREATE TABLE fero_documents (
         collection       TEXT    NOT NULL,
         id               TEXT    NOT NULL,
         data             TEXT    NOT NULL,
         version          INTEGER NOT NULL,
         deleted          INTEGER NOT NULL DEFAULT 0,
         locally_modified INTEGER NOT NULL DEFAULT 0,
         pending_seq      INTEGER,
         mutation_seq     INTEGER,
         base_version     INTEGER,
         base_deleted     INTEGER NOT NULL DEFAULT 0,
         base_data        TEXT,
         sync_id          INTEGER,
         updated_at       INTEGER,
         PRIMARY KEY (collection, id)
     ) WITHOUT ROWID;
     CREATE INDEX fero_documents_pending
         ON fero_documents (collection, pending_seq) WHERE locally_modified = 1;
     CREATE TABLE fero_outbox (
         seq          INTEGER PRIMARY KEY AUTOINCREMENT,
         collection   TEXT    NOT NULL,
         id           TEXT    NOT NULL,
         op           TEXT    NOT NULL CHECK (op IN ('insert', 'update', 'delete')),
         base_version INTEGER,
         data         TEXT    NOT NULL
     );
     CREATE INDEX fero_outbox_document ON fero_outbox (collection, id, seq);",
    // 3: resync (a collection pulled again from scratch after the server's 410
    // `resync_required`). A row is seen by the current resync when `resync_seen` equals the
    // collection's generation in `fero_resync`; raising the generation marks every row unseen
    // without writing them. `reason` is set while a resync is under way; `repushed` counts the
    // rows its pages queued for a push.
    "ALTER TABLE fero_documents ADD COLUMN resync_seen INTEGER;
     CREATE TABLE fero_resync (
         collection TEXT    PRIMARY KEY NOT NULL,
         generation INTEGER NOT NULL,
         reason     TEXT,
         repushed   INTEGER NOT NULL DEFAULT 0
     ) WITHOUT ROWID;",
    // 4: the conflict log: local edits a conflict dropped or overwrote, written in the
    // transaction that drops them, removed when the app acknowledges them (`conflict_log.rs`).
    //
    // AUTOINCREMENT: a record's number is never handed out twice, so an app acknowledging the
    // numbers it read never removes a record written after it read them.
    "CREATE TABLE fero_conflict_log (
         log_id             INTEGER PRIMARY KEY AUTOINCREMENT,
         collection         TEXT    NOT NULL,
         id                 TEXT    NOT NULL,
         outcome            TEXT    NOT NULL CHECK (outcome IN ('dropped', 'overwritten')),
         local_version      INTEGER NOT NULL,
         local_mutation_seq INTEGER,
         local_deleted      INTEGER NOT NULL,
         local_data         TEXT    NOT NULL,
         server_version     INTEGER,
         recorded_at        INTEGER NOT NULL
     );",
    // 5: subscriptions (`subscription.rs`): the subsets of shared collections a device syncs,
    // and which subscription delivered which row.
    //
    // `generation` (AUTOINCREMENT, never reused) tells a subscription from an earlier one with
    // the same key that was dropped: a checkpoint or a page fetched for the earlier one must not
    // be taken for the new one, which starts from the beginning.
    //
    // `fero_subscription_rows` is keyed by subscription first (an unsubscribe reads its rows),
    // with an index by id (an apply asks whether another subscription still covers a row).
    "CREATE TABLE fero_subscriptions (
         generation   INTEGER PRIMARY KEY AUTOINCREMENT,
         collection   TEXT    NOT NULL,
         key          TEXT    NOT NULL,
         subscription TEXT    NOT NULL,
         UNIQUE (collection, key)
     );
     CREATE TABLE fero_subscription_rows (
         collection TEXT NOT NULL,
         key        TEXT NOT NULL,
         id         TEXT NOT NULL,
         PRIMARY KEY (collection, key, id)
     ) WITHOUT ROWID;
     CREATE INDEX fero_subscription_rows_id ON fero_subscription_rows (collection, id);",
];

/// The schema version this build migrates to.
pub(crate) const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// How durable a commit is.
///
/// Both settings keep the database consistent after any crash; they differ in how many of the
/// last commits survive a power loss.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Synchronous {
    /// `PRAGMA synchronous = NORMAL`. In WAL mode a commit appends to the write-ahead log before
    /// it returns, so it survives the process being killed (the OS holds the written pages); only
    /// an OS crash or power loss can drop the last commits, and then the database rolls back to an
    /// earlier consistent state (a page and its checkpoint together, never one without the other).
    /// The log is synced to disk at every WAL checkpoint instead of every commit.
    #[default]
    Normal,
    /// `PRAGMA synchronous = FULL`: every commit is synced to disk before it returns, so it also
    /// survives a power loss, at the cost of one disk sync per transaction.
    Full,
}

/// How long a statement waits for another connection's write lock before it fails with a
/// transient "database is busy" error. Long enough for any page transaction of another process
/// to finish, short enough that a stuck process is reported.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Prepared statements kept per connection: every statement of the crate fits, so the hot ones
/// (the page upsert, the outbox insert) are compiled once per connection.
const STATEMENT_CACHE: usize = 64;

/// Opens (creating if needed) the database at `path`, sets it up and migrates it.
pub(crate) fn open_file(path: &Path, synchronous: Synchronous) -> Result<Connection> {
    let open_error = |source| Error::Open {
        path: path.to_owned(),
        source,
    };
    let mut conn = Connection::open(path).map_err(open_error)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(open_error)?;
    // WAL: readers never block the writer and a commit is one append to the log.
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .map_err(open_error)?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(path = %path.display(), mode, "sqlite refused WAL mode; using {mode}");
    }
    configure(&conn, synchronous).map_err(open_error)?;
    migrate(&mut conn, path)?;
    Ok(conn)
}

/// Opens a fresh in-memory database and migrates it.
pub(crate) fn open_memory() -> Result<Connection> {
    let path = Path::new(":memory:");
    let mut conn = Connection::open_in_memory().map_err(|source| Error::Open {
        path: path.to_owned(),
        source,
    })?;
    configure(&conn, Synchronous::Normal).map_err(|source| Error::Open {
        path: path.to_owned(),
        source,
    })?;
    migrate(&mut conn, path)?;
    Ok(conn)
}

fn configure(conn: &Connection, synchronous: Synchronous) -> rusqlite::Result<()> {
    let level = match synchronous {
        Synchronous::Normal => "NORMAL",
        Synchronous::Full => "FULL",
    };
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {level}; PRAGMA temp_store = MEMORY;"
    ))?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(())
}

/// Applies the migrations the database has not seen, each in its own immediate transaction that
/// also bumps `user_version`, so a crash mid-migration leaves the previous version intact.
pub(crate) fn migrate(conn: &mut Connection, path: &Path) -> Result<()> {
    let sqlite = |operation: &str| {
        let operation = format!("migrate the schema of {}: {operation}", path.display());
        move |source| Error::Sqlite { operation, source }
    };
    loop {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sqlite("begin"))?;
        let found: u32 = tx
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .map_err(sqlite("read user_version"))?;
        if found > SCHEMA_VERSION {
            return Err(Error::SchemaTooNew {
                path: path.to_owned(),
                found,
                supported: SCHEMA_VERSION,
            });
        }
        let Some(migration) = MIGRATIONS.get(found as usize) else {
            return Ok(());
        };
        tx.execute_batch(migration)
            .map_err(sqlite(&format!("apply migration {}", found + 1)))?;
        tx.pragma_update(None, "user_version", found + 1)
            .map_err(sqlite("set user_version"))?;
        tx.commit().map_err(sqlite("commit"))?;
        tracing::debug!(path = %path.display(), version = found + 1, "migrated sqlite schema");
    }
}

/// Reads the device id, storing `proposed` (or, without one, a fresh [`new_device_id`]) first if
/// the database has none yet. Stored once, so mutation ids stay the same across restarts; a fresh
/// id is drawn only when one is about to be stored.
pub(crate) fn device_id(
    conn: &mut Connection,
    proposed: Option<String>,
    path: &Path,
) -> Result<String> {
    let sqlite = Error::sqlite;
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sqlite("begin storing the device id"))?;
    let existing: Option<String> = tx
        .query_row(
            "SELECT value FROM fero_meta WHERE key = 'device_id'",
            [],
            |row| row.get(0),
        )
        .optional()
        .map_err(sqlite("read the device id"))?;
    let id = match existing {
        Some(id) => id,
        None => {
            let id = match proposed {
                Some(id) => id,
                None => new_device_id().map_err(|source| Error::DeviceId {
                    path: path.to_owned(),
                    source,
                })?,
            };
            tx.execute(
                "INSERT INTO fero_meta (key, value) VALUES ('device_id', ?1)",
                [&id],
            )
            .map_err(sqlite("store the device id"))?;
            id
        }
    };
    tx.commit().map_err(sqlite("commit the device id"))?;
    Ok(id)
}

/// A fresh device id: 128 bits from the operating system's random source (`getrandom`), as 32 hex
/// digits, the shape of a UUID v4 without its version bits. Used once per database, when it is
/// created. Devices must never share an id (mutation ids are `(device, seq)`), so no weaker
/// source (time, process id) is used as a fallback: a failing OS source is an error.
pub(crate) fn new_device_id() -> std::io::Result<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_at_version_one_is_migrated_and_keeps_its_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            conn.execute(
                "INSERT INTO fero_features (feature, checkpoint_sync_id) VALUES ('contacts', 42)",
                [],
            )
            .unwrap();
        }
        let conn = open_file(&path, Synchronous::Normal).unwrap();
        let version: u32 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        let cp: i64 = conn
            .query_row(
                "SELECT checkpoint_sync_id FROM fero_features WHERE feature = 'contacts'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(cp, 42);
        let docs: i64 = conn
            .query_row("SELECT count(*) FROM fero_documents", [], |r| r.get(0))
            .unwrap();
        assert_eq!(docs, 0);
    }

    #[test]
    fn a_database_at_version_two_gets_an_empty_conflict_log_and_keeps_its_documents() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v2.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.execute_batch(MIGRATIONS[1]).unwrap();
            conn.pragma_update(None, "user_version", 2).unwrap();
            conn.execute(
                "INSERT INTO fero_documents (collection, id, data, version) VALUES ('c', 'a', '{}', 1)",
                [],
            )
            .unwrap();
        }
        let conn = open_file(&path, Synchronous::Normal).unwrap();
        let version: u32 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        let docs: i64 = conn
            .query_row("SELECT count(*) FROM fero_documents", [], |r| r.get(0))
            .unwrap();
        assert_eq!(docs, 1);
        let records: i64 = conn
            .query_row("SELECT count(*) FROM fero_conflict_log", [], |r| r.get(0))
            .unwrap();
        assert_eq!(records, 0);
    }

    #[test]
    fn a_database_at_version_four_gets_empty_subscription_tables_and_keeps_its_documents() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v4.db");
        {
            let conn = Connection::open(&path).unwrap();
            for migration in &MIGRATIONS[..4] {
                conn.execute_batch(migration).unwrap();
            }
            conn.pragma_update(None, "user_version", 4).unwrap();
            conn.execute(
                "INSERT INTO fero_documents (collection, id, data, version) VALUES ('c', 'a', '{}', 1)",
                [],
            )
            .unwrap();
        }
        let conn = open_file(&path, Synchronous::Normal).unwrap();
        let version: u32 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        let count = |table: &str| -> i64 {
            conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
                .unwrap()
        };
        assert_eq!(count("fero_documents"), 1);
        assert_eq!(count("fero_subscriptions"), 0);
        assert_eq!(count("fero_subscription_rows"), 0);
    }

    #[test]
    fn migrating_twice_changes_nothing() {
        let mut conn = open_memory().unwrap();
        migrate(&mut conn, Path::new(":memory:")).unwrap();
        let version: u32 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
    }

    #[test]
    fn a_file_database_runs_in_wal_mode() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open_file(&dir.path().join("wal.db"), Synchronous::Normal).unwrap();
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }

    #[test]
    fn device_ids_differ_between_databases_and_stay_once_stored() {
        let here = Path::new(":memory:");
        let mut conn = open_memory().unwrap();
        let first = device_id(&mut conn, None, here).unwrap();
        let again = device_id(&mut conn, None, here).unwrap();
        assert_eq!(first, again);
        assert_eq!(first.len(), 32);
        assert!(first.bytes().all(|b| b.is_ascii_hexdigit()));
        let mut other = open_memory().unwrap();
        assert_ne!(device_id(&mut other, None, here).unwrap(), first);
        assert_ne!(new_device_id().unwrap(), new_device_id().unwrap());
    }
}
