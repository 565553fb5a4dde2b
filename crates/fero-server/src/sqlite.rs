//! [`SqliteStorage`]: the embedded backend (a file or in memory).
//!
//! # How it keeps the storage contract
//! - One writer connection behind a mutex: SQLite has one writer at a time anyway, and every
//!   write runs in one `BEGIN IMMEDIATE` transaction per request (never per row). The per-user
//!   counter that hands out `sync_id`s is read and written inside that transaction, so commit
//!   order is `sync_id` order and a reader paging by `sync_id` can never pass over a row that
//!   commits later.
//! - Reads of a file database run on a small pool of reader connections in WAL mode: each pull
//!   is one read transaction, one snapshot, so a page, its `has_more` and the horizon check agree.
//!   An in-memory database has a single connection for everything.
//! - All statements run on tokio's blocking pool (`spawn_blocking`), never on the async worker
//!   threads, through prepared statements cached per connection.
//! - **Schema.** `PRAGMA user_version` holds the schema version. Opening a file brings it up to
//!   date inside one `BEGIN IMMEDIATE` transaction that reads the version first, so two
//!   processes opening an old file at once migrate it once. Version 2 added `recorded_at` to
//!   `mutations`, for [`Storage::prune_mutations`]; version 3 added `collection`, so that a
//!   mutation id reused for another row is refused (`mutation_id_reused`); version 4 added
//!   `restore_epoch`, the database's random restore epoch ([`Storage::mark_restored`]).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use fero::{Clock, SyncId, SystemClock, Timestamp, Version};
use fero_protocol::{Change, ChangeOutcome, ChangeResult, ContentDigest, Digest, Document};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde_json::value::RawValue;

use crate::error::StorageError;
use crate::shared::{Access, SharedCursor, SharedDigest, SharedPage, SharedPushOutcome};
use crate::storage::{
    FeedPosition, PositionRefusal, PruneReport, PullPage, PurgeReport, PushOutcome, SeedReport,
    SeedRow, Storage, StoredDocument, check_position, new_epoch, replay_answer, seq_key, to_sql,
};
use crate::user::UserId;

mod shared;

/// The schema version this code writes (`PRAGMA user_version`): 1 was the first; 2 added
/// `mutations.recorded_at`; 3 added `mutations.collection`; 4 added `restore_epoch`; 5 added the
/// shared-collection tables ([`shared::SHARED_SCHEMA`]); 6 stores `shared_rows` clustered by
/// bucket ([`shared::CLUSTER_SHARED_ROWS`]).
const SCHEMA_VERSION: i64 = 6;

/// The latest schema, for an empty database. An older file is migrated instead
/// ([`migrate`]); both must end in the same tables, columns and indexes.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS rows (
    owner      TEXT    NOT NULL,
    collection TEXT    NOT NULL,
    id         TEXT    NOT NULL,
    version    INTEGER NOT NULL,
    sync_id    INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    deleted    INTEGER NOT NULL DEFAULT 0,
    data       TEXT    NOT NULL,
    UNIQUE (owner, collection, id)
);
CREATE INDEX IF NOT EXISTS rows_feed ON rows (owner, collection, sync_id);
CREATE TABLE IF NOT EXISTS mutations (
    owner       TEXT    NOT NULL,
    device      TEXT    NOT NULL,
    seq         INTEGER NOT NULL,
    result      TEXT    NOT NULL,
    recorded_at INTEGER NOT NULL,
    collection  TEXT,
    PRIMARY KEY (owner, device, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS mutations_recorded ON mutations (recorded_at);
CREATE TABLE IF NOT EXISTS counters (
    owner TEXT    NOT NULL PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS horizons (
    owner      TEXT    NOT NULL,
    collection TEXT    NOT NULL,
    sync_id    INTEGER NOT NULL,
    PRIMARY KEY (owner, collection)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS restore_epoch (
    id    INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    epoch INTEGER NOT NULL
);
";

/// The restore epoch table of schema version 4, for [`migrate`].
const CREATE_RESTORE_EPOCH: &str = "CREATE TABLE IF NOT EXISTS restore_epoch (
    id    INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    epoch INTEGER NOT NULL
);";
const SELECT_EPOCH: &str = "SELECT epoch FROM restore_epoch WHERE id = 1";
const SET_EPOCH: &str = "INSERT INTO restore_epoch (id, epoch) VALUES (1, ?1)
     ON CONFLICT (id) DO UPDATE SET epoch = excluded.epoch";

const SELECT_PAGE: &str = "SELECT id, sync_id, version, updated_at, deleted, data FROM rows
     WHERE owner = ?1 AND collection = ?2 AND sync_id > ?3 ORDER BY sync_id LIMIT ?4";
const SELECT_ROW: &str = "SELECT id, sync_id, version, updated_at, deleted, data FROM rows
     WHERE owner = ?1 AND collection = ?2 AND id = ?3";
const SELECT_HORIZON: &str = "SELECT sync_id FROM horizons WHERE owner = ?1 AND collection = ?2";
const SELECT_MUTATION: &str =
    "SELECT result, collection FROM mutations WHERE owner = ?1 AND device = ?2 AND seq = ?3";
const INSERT_MUTATION: &str =
    "INSERT INTO mutations (owner, device, seq, result, recorded_at, collection)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
/// One batch of a prune: up to `?2` answers recorded before `?1` (which ones does not matter;
/// batches repeat until one comes back short).
const PRUNE_MUTATIONS: &str = "DELETE FROM mutations WHERE (owner, device, seq) IN (
         SELECT owner, device, seq FROM mutations WHERE recorded_at < ?1 LIMIT ?2)";
const SELECT_COUNTER: &str = "SELECT value FROM counters WHERE owner = ?1";
const UPSERT_COUNTER: &str = "INSERT INTO counters (owner, value) VALUES (?1, ?2)
     ON CONFLICT (owner) DO UPDATE SET value = excluded.value";
const UPSERT_ROW: &str =
    "INSERT INTO rows (owner, collection, id, version, sync_id, updated_at, deleted, data)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
     ON CONFLICT (owner, collection, id) DO UPDATE SET version = excluded.version,
         sync_id = excluded.sync_id, updated_at = excluded.updated_at,
         deleted = excluded.deleted, data = excluded.data";
const SEED_ROW: &str =
    "INSERT INTO rows (owner, collection, id, version, sync_id, updated_at, deleted, data)
     VALUES (?1, ?2, ?3, 1, ?4, ?5, ?6, ?7)
     ON CONFLICT (owner, collection, id) DO UPDATE SET version = rows.version + 1,
         sync_id = excluded.sync_id, updated_at = excluded.updated_at,
         deleted = excluded.deleted, data = excluded.data";
const SELECT_LIVE: &str =
    "SELECT id, version FROM rows WHERE owner = ?1 AND collection = ?2 AND deleted = 0";
const SELECT_LIVE_CONTENT: &str =
    "SELECT id, version, data FROM rows WHERE owner = ?1 AND collection = ?2 AND deleted = 0";
const RAISE_HORIZONS: &str = "INSERT INTO horizons (owner, collection, sync_id)
     SELECT owner, collection, MAX(sync_id) FROM rows WHERE deleted = 1 AND sync_id < ?1
     GROUP BY owner, collection
     ON CONFLICT (owner, collection) DO UPDATE SET sync_id = MAX(horizons.sync_id, excluded.sync_id)";
const DELETE_TOMBSTONES: &str = "DELETE FROM rows WHERE deleted = 1 AND sync_id < ?1";
/// [`RAISE_HORIZONS`] and [`DELETE_TOMBSTONES`] for the tombstones deleted before a time.
const RAISE_HORIZONS_DELETED_BEFORE: &str = "INSERT INTO horizons (owner, collection, sync_id)
     SELECT owner, collection, MAX(sync_id) FROM rows WHERE deleted = 1 AND updated_at < ?1
     GROUP BY owner, collection
     ON CONFLICT (owner, collection) DO UPDATE SET sync_id = MAX(horizons.sync_id, excluded.sync_id)";
const DELETE_TOMBSTONES_DELETED_BEFORE: &str =
    "DELETE FROM rows WHERE deleted = 1 AND updated_at < ?1";

/// Answers one prune transaction deletes at most: the writer is free for pushes between batches,
/// so a large backlog (the first prune after a long time) never holds a push up for more than
/// one batch's delete.
const PRUNE_BATCH: usize = 10_000;

/// Idle reader connections kept open; more are opened under load and closed afterwards.
const MAX_IDLE_READERS: usize = 4;

/// How long a statement waits for a lock held by another process before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The SQLite storage backend.
///
/// Cheap to clone (an `Arc` inside); all clones share the connections.
///
/// # Examples
/// ```
/// use fero_server::{SqliteStorage, Storage, UserId};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let storage = SqliteStorage::open_in_memory()?;
/// let digest = storage.digest(&UserId::new("alice"), "contacts").await?;
/// assert_eq!(digest.count(), 0);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct SqliteStorage {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Runs every write, and every read of an in-memory database.
    writer: Mutex<Connection>,
    /// Reader connections of a file database; `None` in memory.
    readers: Option<ReaderPool>,
    clock: Arc<dyn Clock>,
    /// Readable sets known to be stored.
    known_sets: crate::shared::KnownSets,
    /// Signs and checks shared cursors ([`shared::cursor_key`]).
    cursor_key: crate::shared::CursorKey,
}

#[derive(Debug)]
struct ReaderPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl SqliteStorage {
    /// Opens (creating if needed) the database file at `path`, in WAL mode; `":memory:"` opens an
    /// in-memory database instead.
    ///
    /// # Errors
    /// [`StorageError::Open`] when the file cannot be opened or its schema not be created.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StorageError> {
        SqliteStorage::open_with_clock(path, Arc::new(SystemClock))
    }

    /// An empty in-memory database, gone when the last clone is dropped.
    ///
    /// # Errors
    /// [`StorageError::Open`] when SQLite cannot create it.
    pub fn open_in_memory() -> Result<Self, StorageError> {
        SqliteStorage::open_with_clock(":memory:", Arc::new(SystemClock))
    }

    /// Like [`open`](Self::open), with the clock that stamps `updated_at` (informational only:
    /// the feed is ordered by `sync_id`, never by time) and the `recorded_at` of push answers
    /// (compared with the cut-off of [`Storage::prune_mutations`]).
    ///
    /// # Errors
    /// [`StorageError::Open`] when the file cannot be opened or its schema not be created.
    pub fn open_with_clock(
        path: impl AsRef<Path>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StorageError> {
        let path = path.as_ref();
        let in_memory = path == Path::new(":memory:");
        let open_error = |source: rusqlite::Error| StorageError::Open {
            path: path.to_path_buf(),
            source: Box::new(source),
        };
        let mut writer = if in_memory {
            Connection::open_in_memory().map_err(open_error)?
        } else {
            Connection::open(path).map_err(open_error)?
        };
        let cursor_key =
            prepare_writer(&mut writer, in_memory, clock.now()).map_err(|source| match source {
                Failure::Sql(source) => open_error(source),
                other => StorageError::Open {
                    path: path.to_path_buf(),
                    source: other.to_string().into(),
                },
            })?;
        let readers = (!in_memory).then(|| ReaderPool {
            path: path.to_path_buf(),
            idle: Mutex::new(Vec::new()),
        });
        Ok(SqliteStorage {
            inner: Arc::new(Inner {
                writer: Mutex::new(writer),
                readers,
                clock,
                known_sets: crate::shared::KnownSets::default(),
                cursor_key,
            }),
        })
    }

    /// Runs `work` on the blocking pool and names the operation in its error.
    async fn run<T, F>(
        &self,
        operation: &'static str,
        collection: &str,
        work: F,
    ) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, Failure> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        match tokio::task::spawn_blocking(move || work(&inner)).await {
            Ok(result) => result.map_err(|failure| failure.into_storage(operation, collection)),
            Err(join) => Err(StorageError::TaskFailed {
                operation,
                collection: collection.to_owned(),
                message: join.to_string(),
            }),
        }
    }
}

/// Sets the writer's pragmas and brings the schema to [`SCHEMA_VERSION`]; `now` stamps the push
/// answers a migration finds. Returns the database's cursor key.
fn prepare_writer(
    conn: &mut Connection,
    in_memory: bool,
    now: Timestamp,
) -> Result<crate::shared::CursorKey, Failure> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    if !in_memory {
        // WAL lets readers keep their snapshot while the writer commits.
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Failure::Setup(format!(
                "the database refused WAL mode (it stays in {mode:?} mode); use a local file system"
            )));
        }
    }
    // An acknowledged push must survive a power loss: the client drops its outbox entry on it.
    conn.execute_batch("PRAGMA synchronous = FULL;")?;
    // The version is read inside the write transaction: a second process opening the same old
    // file waits here, then finds it migrated.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let found: i64 = tx.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if found > SCHEMA_VERSION {
        return Err(Failure::Setup(format!(
            "the database has schema version {found}, newer than this server's {SCHEMA_VERSION}; \
             run a newer fero-server"
        )));
    }
    if found < SCHEMA_VERSION {
        migrate(&tx, found, now)?;
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    }
    let key = shared::cursor_key(&tx)?;
    tx.commit()?;
    Ok(key)
}

/// Brings a database of schema version `found` (0: empty) to [`SCHEMA_VERSION`], inside the
/// caller's transaction.
fn migrate(tx: &rusqlite::Transaction<'_>, found: i64, now: Timestamp) -> Result<(), Failure> {
    if found == 0 {
        tx.execute_batch(SCHEMA)?;
        tx.execute_batch(shared::SHARED_SCHEMA)?;
        set_new_epoch(tx)?;
        return Ok(());
    }
    if found < 2 {
        // Answers stored before retention existed count as recorded now, so they are kept for
        // a full retention period from the upgrade. A column added with a constant default
        // costs no rewrite of the table (the one that grew without bound); SQLite cannot drop
        // the default afterwards, and it is never used again: every insert names `recorded_at`.
        tx.execute_batch(&format!(
            "ALTER TABLE mutations ADD COLUMN recorded_at INTEGER NOT NULL DEFAULT {};
             CREATE INDEX IF NOT EXISTS mutations_recorded ON mutations (recorded_at);",
            to_sql(now.0)
        ))?;
        tracing::info!(
            from = found,
            to = 2,
            "migrated the SQLite schema: mutations.recorded_at"
        );
    }
    if found < 3 {
        // The collection an answer was recorded for, so that a mutation id reused for another
        // collection is refused rather than answered with the other row's result. Answers of
        // older versions have none (NULL): only their id is compared, until retention prunes
        // them. A nullable column without a default costs no rewrite.
        tx.execute_batch("ALTER TABLE mutations ADD COLUMN collection TEXT;")?;
        tracing::info!(
            from = found,
            to = 3,
            "migrated the SQLite schema: mutations.collection"
        );
    }
    if found < 4 {
        // The database's restore epoch, drawn now: cursors issued before carry none and keep
        // being checked against the feed's length only.
        tx.execute_batch(CREATE_RESTORE_EPOCH)?;
        set_new_epoch(tx)?;
        tracing::info!(
            from = found,
            to = 4,
            "migrated the SQLite schema: restore_epoch"
        );
    }
    if found < 5 {
        // Shared collections: new tables only, nothing existing changes.
        tx.execute_batch(shared::SHARED_SCHEMA)?;
        tracing::info!(
            from = found,
            to = 5,
            "migrated the SQLite schema: shared collections"
        );
    }
    if found == 5 {
        // Version 5's `shared_rows` is a rowid table: rewritten in bucket order. A file older
        // than 5 got the clustered table from `SHARED_SCHEMA` above.
        tx.execute_batch(shared::CLUSTER_SHARED_ROWS)?;
        tracing::info!(
            from = found,
            to = 6,
            "migrated the SQLite schema: shared_rows clustered by bucket"
        );
    }
    Ok(())
}

/// Reads the database's restore epoch (`None`: none recorded).
fn read_epoch(conn: &Connection) -> Result<Option<u64>, Failure> {
    let epoch: Option<i64> = conn
        .prepare_cached(SELECT_EPOCH)?
        .query_row([], |row| row.get(0))
        .optional()?;
    epoch
        .map(|epoch| from_sql(epoch, "restore_epoch", "epoch"))
        .transpose()
}

/// Gives the database a new random restore epoch, inside the caller's write transaction.
fn set_new_epoch(tx: &rusqlite::Transaction<'_>) -> Result<u64, Failure> {
    let old = read_epoch(tx)?;
    let epoch = new_epoch(old).map_err(|e| Failure::Setup(e.to_string()))?;
    tx.prepare_cached(SET_EPOCH)?
        .execute(params![to_sql(epoch)])?;
    Ok(epoch)
}

/// Locks a connection. A panic while it was held unwound through a `Transaction`, whose drop
/// rolled back, so the connection is consistent and the poison can be ignored.
fn lock(mutex: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Inner {
    /// Runs a read on a reader connection (the writer, in memory).
    fn read<T>(
        &self,
        work: impl FnOnce(&mut Connection) -> Result<T, Failure>,
    ) -> Result<T, Failure> {
        let Some(pool) = &self.readers else {
            return work(&mut lock(&self.writer));
        };
        let idle = pool
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let mut conn = match idle {
            Some(conn) => conn,
            None => {
                let conn = Connection::open(&pool.path)?;
                conn.busy_timeout(BUSY_TIMEOUT)?;
                conn.execute_batch("PRAGMA query_only = ON;")?;
                conn
            }
        };
        let result = work(&mut conn);
        let mut idle = pool.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE_READERS {
            idle.push(conn);
        }
        result
    }

    /// Runs a write in one `BEGIN IMMEDIATE` transaction on the writer connection.
    fn write<T>(
        &self,
        work: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T, Failure>,
    ) -> Result<T, Failure> {
        let mut conn = lock(&self.writer);
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let value = work(&tx)?;
        tx.commit()?;
        Ok(value)
    }
}

/// A failure inside a blocking task, before it knows its operation's name.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error(transparent)]
    Sql(#[from] rusqlite::Error),
    #[error("{message}")]
    Corrupt { id: String, message: String },
    #[error("the pull's position is refused: {0:?}")]
    Position(PositionRefusal),
    #[error("{0}")]
    Setup(String),
    /// An error already in its final form (from the shared-collection code).
    #[error(transparent)]
    Done(StorageError),
}

impl Failure {
    fn into_storage(self, operation: &'static str, collection: &str) -> StorageError {
        let collection = collection.to_owned();
        match self {
            Failure::Sql(source) => StorageError::Database {
                operation,
                collection,
                source: Box::new(source),
            },
            Failure::Corrupt { id, message } => StorageError::Corrupt {
                collection,
                id,
                message,
            },
            Failure::Position(refusal) => refusal.into_storage(&collection),
            Failure::Setup(message) => StorageError::Database {
                operation,
                collection,
                source: message.into(),
            },
            Failure::Done(error) => error,
        }
    }
}

fn from_sql(value: i64, id: &str, what: &str) -> Result<u64, Failure> {
    u64::try_from(value).map_err(|_| Failure::Corrupt {
        id: id.to_owned(),
        message: format!("{what} is negative ({value})"),
    })
}

/// A row as read from SQLite, before its JSON is parsed.
struct StoredRow {
    id: String,
    sync_id: i64,
    version: i64,
    updated_at: i64,
    deleted: bool,
    data: String,
}

impl StoredRow {
    fn read(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredRow> {
        Ok(StoredRow {
            id: row.get(0)?,
            sync_id: row.get(1)?,
            version: row.get(2)?,
            updated_at: row.get(3)?,
            deleted: row.get(4)?,
            data: row.get(5)?,
        })
    }

    /// The row with its content parsed: for a push's conflict answer.
    fn into_document(self) -> Result<Document, Failure> {
        let stored = self.into_stored()?;
        stored.to_document().map_err(|error| Failure::Corrupt {
            id: stored.id.clone(),
            message: format!("data is not JSON: {error}"),
        })
    }

    /// The row with its content as stored: for a pull page, which sends the text on verbatim.
    /// The text is checked to be JSON (no tree is built), so a corrupt row is still refused.
    fn into_stored(self) -> Result<StoredDocument, Failure> {
        let sync_id = SyncId(from_sql(self.sync_id, &self.id, "sync_id")?);
        let version = Version(from_sql(self.version, &self.id, "version")?);
        let updated_at = Timestamp(from_sql(self.updated_at, &self.id, "updated_at")?);
        let data = RawValue::from_string(self.data).map_err(|error| Failure::Corrupt {
            id: self.id.clone(),
            message: format!("data is not JSON: {error}"),
        })?;
        Ok(StoredDocument {
            id: self.id,
            sync_id,
            version,
            updated_at,
            deleted: self.deleted,
            data,
        })
    }
}

/// Hands out `sync_id`s from the owner's counter inside one write transaction.
struct Counter {
    next: i64,
    dirty: bool,
}

impl Counter {
    fn load(tx: &rusqlite::Transaction<'_>, owner: &str) -> Result<Counter, Failure> {
        let value: Option<i64> = tx
            .prepare_cached(SELECT_COUNTER)?
            .query_row(params![owner], |row| row.get(0))
            .optional()?;
        Ok(Counter {
            next: value.unwrap_or(0),
            dirty: false,
        })
    }

    fn take(&mut self) -> i64 {
        self.next += 1;
        self.dirty = true;
        self.next
    }

    /// Writes the counter back in the same transaction: the `sync_id`s handed out become visible
    /// together with the rows that carry them, or not at all.
    fn store(self, tx: &rusqlite::Transaction<'_>, owner: &str) -> Result<(), Failure> {
        if self.dirty {
            tx.prepare_cached(UPSERT_COUNTER)?
                .execute(params![owner, self.next])?;
        }
        Ok(())
    }
}

/// The stored answer to `change` when its mutation id was seen before (`owner`'s device and
/// sequence number `seq`), as [`replay_answer`] makes it.
fn replay_answer_of(
    tx: &rusqlite::Transaction<'_>,
    owner: &str,
    change: &Change,
    collection: &str,
    seq: i64,
) -> Result<Option<ChangeResult>, Failure> {
    let replayed: Option<(String, Option<String>)> = tx
        .prepare_cached(SELECT_MUTATION)?
        .query_row(params![owner, change.mutation_id.device, seq], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .optional()?;
    let Some((stored, recorded_collection)) = replayed else {
        return Ok(None);
    };
    let original: ChangeResult =
        serde_json::from_str(&stored).map_err(|error| Failure::Corrupt {
            id: format!("{}/{}", change.mutation_id.device, change.mutation_id.seq),
            message: format!("stored push result is not JSON: {error}"),
        })?;
    Ok(Some(replay_answer(
        change,
        collection,
        recorded_collection.as_deref(),
        original,
    )))
}

/// Records the answer to an accepted change under its mutation id, for replays.
fn record_answer(
    tx: &rusqlite::Transaction<'_>,
    now: Timestamp,
    owner: &str,
    collection: &str,
    seq: i64,
    result: &ChangeResult,
) -> Result<(), Failure> {
    let stored = serde_json::to_string(result).map_err(|error| Failure::Corrupt {
        id: result.id.clone(),
        message: format!("push result does not serialise: {error}"),
    })?;
    tx.prepare_cached(INSERT_MUTATION)?.execute(params![
        owner,
        result.mutation_id.device,
        seq,
        stored,
        to_sql(now.0),
        collection
    ])?;
    Ok(())
}

fn push_in(
    tx: &rusqlite::Transaction<'_>,
    now: Timestamp,
    owner: &str,
    collection: &str,
    changes: Vec<Change>,
) -> Result<PushOutcome, Failure> {
    let mut counter = Counter::load(tx, owner)?;
    let mut last_written = None;
    let mut results = Vec::with_capacity(changes.len());
    for change in changes {
        let seq = seq_key(change.mutation_id.seq);
        if let Some(answer) = replay_answer_of(tx, owner, &change, collection, seq)? {
            results.push(answer);
            continue;
        }
        let current = tx
            .prepare_cached(SELECT_ROW)?
            .query_row(params![owner, collection, change.id], StoredRow::read)
            .optional()?;
        let current_version = current
            .as_ref()
            .map(|row| from_sql(row.version, &row.id, "version"))
            .transpose()?;
        if current_version != change.base_version.map(|base| base.0) {
            let server = current.map(StoredRow::into_document).transpose()?;
            results.push(ChangeResult {
                id: change.id,
                mutation_id: change.mutation_id,
                outcome: ChangeOutcome::Conflict { server },
            });
            continue;
        }
        let version = current_version.unwrap_or(0).saturating_add(1);
        let sync_id = counter.take();
        // A tombstone keeps the last content it had, so a client can still show what was deleted.
        let data = match (change.deleted, current) {
            (true, Some(row)) => row.data,
            (true, None) => "null".to_owned(),
            (false, _) => change.data.to_string(),
        };
        tx.prepare_cached(UPSERT_ROW)?.execute(params![
            owner,
            collection,
            change.id,
            to_sql(version),
            sync_id,
            to_sql(now.0),
            change.deleted,
            data
        ])?;
        let sync_id = SyncId(from_sql(sync_id, &change.id, "sync_id")?);
        let result = ChangeResult {
            id: change.id,
            mutation_id: change.mutation_id,
            outcome: ChangeOutcome::Accepted {
                version: Version(version),
                sync_id,
            },
        };
        record_answer(tx, now, owner, collection, seq, &result)?;
        last_written = Some(sync_id);
        results.push(result);
    }
    counter.store(tx, owner)?;
    Ok(PushOutcome {
        results,
        last_written,
    })
}

fn pull_in(
    conn: &mut Connection,
    owner: &str,
    collection: &str,
    from: FeedPosition,
    limit: u32,
) -> Result<PullPage, Failure> {
    // One read transaction: the position checks, the page and `has_more` see one snapshot.
    let tx = conn.transaction()?;
    let page = {
        let horizon: Option<i64> = tx
            .prepare_cached(SELECT_HORIZON)?
            .query_row(params![owner, collection], |row| row.get(0))
            .optional()?;
        let horizon = SyncId(from_sql(horizon.unwrap_or(0), collection, "horizon")?);
        let head = if from.after.0 > 0 {
            let head: Option<i64> = tx
                .prepare_cached(SELECT_COUNTER)?
                .query_row(params![owner], |row| row.get(0))
                .optional()?;
            Some(SyncId(from_sql(head.unwrap_or(0), owner, "counter")?))
        } else {
            None
        };
        let epoch = read_epoch(&tx)?;
        check_position(from, head, horizon, epoch).map_err(Failure::Position)?;
        let mut statement = tx.prepare_cached(SELECT_PAGE)?;
        let wanted = i64::from(limit) + 1;
        let rows = statement.query_map(
            params![owner, collection, to_sql(from.after.0), wanted],
            StoredRow::read,
        )?;
        let mut items = Vec::with_capacity(usize::try_from(limit).unwrap_or(0));
        let mut has_more = false;
        for row in rows {
            let row = row?;
            if items.len() == usize::try_from(limit).unwrap_or(usize::MAX) {
                has_more = true;
                break;
            }
            items.push(row.into_stored()?);
        }
        PullPage {
            items,
            has_more,
            horizon,
            epoch,
        }
    };
    tx.commit()?;
    Ok(page)
}

fn seed_in(
    tx: &rusqlite::Transaction<'_>,
    now: Timestamp,
    owner: &str,
    collection: &str,
    rows: Vec<SeedRow>,
) -> Result<SeedReport, Failure> {
    let mut counter = Counter::load(tx, owner)?;
    let mut report = SeedReport::default();
    {
        let mut statement = tx.prepare_cached(SEED_ROW)?;
        for row in rows {
            let sync_id = counter.take();
            statement.execute(params![
                owner,
                collection,
                row.id,
                sync_id,
                to_sql(now.0),
                row.deleted,
                row.data.to_string()
            ])?;
            report.written += 1;
            report.last_sync_id = Some(SyncId(from_sql(sync_id, &row.id, "sync_id")?));
        }
    }
    counter.store(tx, owner)?;
    Ok(report)
}

#[async_trait]
impl Storage for SqliteStorage {
    async fn pull_from(
        &self,
        owner: &UserId,
        collection: &str,
        from: FeedPosition,
        limit: u32,
    ) -> Result<PullPage, StorageError> {
        let (owner, name) = (owner.clone(), collection.to_owned());
        self.run("pull", collection, move |inner| {
            inner.read(|conn| pull_in(conn, owner.as_str(), &name, from, limit))
        })
        .await
    }

    async fn push(
        &self,
        owner: &UserId,
        collection: &str,
        changes: Vec<Change>,
    ) -> Result<PushOutcome, StorageError> {
        let (owner, name) = (owner.clone(), collection.to_owned());
        self.run("push", collection, move |inner| {
            let now = inner.clock.now();
            inner.write(|tx| push_in(tx, now, owner.as_str(), &name, changes))
        })
        .await
    }

    async fn digest(&self, owner: &UserId, collection: &str) -> Result<Digest, StorageError> {
        let (owner, name) = (owner.clone(), collection.to_owned());
        self.run("digest", collection, move |inner| {
            inner.read(|conn| {
                let tx = conn.transaction()?;
                let mut digest = Digest::default();
                {
                    let mut statement = tx.prepare_cached(SELECT_LIVE)?;
                    let mut rows = statement.query(params![owner.as_str(), name])?;
                    while let Some(row) = rows.next()? {
                        let id: String = row.get(0)?;
                        let version = from_sql(row.get(1)?, &id, "version")?;
                        digest.add(&id, version);
                    }
                }
                tx.commit()?;
                Ok(digest)
            })
        })
        .await
    }

    async fn content_digest(
        &self,
        owner: &UserId,
        collection: &str,
    ) -> Result<ContentDigest, StorageError> {
        let (owner, name) = (owner.clone(), collection.to_owned());
        self.run("content digest", collection, move |inner| {
            inner.read(|conn| {
                // One read transaction: one snapshot of the rows, like `digest`.
                let tx = conn.transaction()?;
                let mut digest = ContentDigest::default();
                {
                    let mut statement = tx.prepare_cached(SELECT_LIVE_CONTENT)?;
                    let mut rows = statement.query(params![owner.as_str(), name])?;
                    while let Some(row) = rows.next()? {
                        let id = row.get_ref(0)?.as_str().map_err(rusqlite::Error::from)?;
                        let version = from_sql(row.get(1)?, id, "version")?;
                        let data = row.get_ref(2)?.as_str().map_err(rusqlite::Error::from)?;
                        digest
                            .add_json(id, version, data)
                            .map_err(|error| Failure::Corrupt {
                                id: id.to_owned(),
                                message: format!("data is not JSON: {error}"),
                            })?;
                    }
                }
                tx.commit()?;
                Ok(digest)
            })
        })
        .await
    }

    async fn shared_pull(
        &self,
        access: Arc<dyn Access>,
        collection: &str,
        cursor: Option<SharedCursor>,
        limit: u32,
    ) -> Result<SharedPage, StorageError> {
        let name = collection.to_owned();
        let limit = usize::try_from(limit).unwrap_or(usize::MAX).max(1);
        self.run("pull", collection, move |inner| {
            let page = inner.read(|conn| {
                let tx = conn.transaction()?;
                let page = {
                    let mut snapshot = shared::SqliteSnapshot {
                        tx: &tx,
                        collection: &name,
                    };
                    crate::shared::run_ready(crate::shared::pull_page(
                        &mut snapshot,
                        &inner.cursor_key,
                        access.as_ref(),
                        &name,
                        cursor,
                        limit,
                    ))
                    .map_err(Failure::Done)?
                };
                tx.commit()?;
                Ok(page)
            })?;
            // The sets the cursor names are stored before the cursor is handed out.
            let unknown = inner.known_sets.unknown(&page.new_sets);
            if !unknown.is_empty() {
                inner.write(|tx| shared::store_sets(tx, &unknown))?;
                inner.known_sets.record(&unknown);
            }
            Ok(page)
        })
        .await
    }

    async fn shared_readable(
        &self,
        access: Arc<dyn Access>,
    ) -> Result<BTreeSet<String>, StorageError> {
        self.run("readable set", "", move |inner| {
            inner.read(|conn| shared::readable_in(conn, access.as_ref()))
        })
        .await
    }

    async fn shared_push(
        &self,
        access: Arc<dyn Access>,
        collection: &str,
        changes: Vec<Change>,
    ) -> Result<SharedPushOutcome, StorageError> {
        let name = collection.to_owned();
        self.run("push", collection, move |inner| {
            let now = inner.clock.now();
            let mut touched = BTreeSet::new();
            let mut regranted = BTreeSet::new();
            let outcome = inner.write(|tx| {
                shared::push_in(
                    tx,
                    now,
                    access.as_ref(),
                    &name,
                    changes,
                    &mut touched,
                    &mut regranted,
                )
            })?;
            Ok(SharedPushOutcome {
                outcome,
                touched,
                regranted,
            })
        })
        .await
    }

    async fn shared_digest(
        &self,
        access: Arc<dyn Access>,
        collection: &str,
        content: bool,
    ) -> Result<SharedDigest, StorageError> {
        let name = collection.to_owned();
        self.run("digest", collection, move |inner| {
            inner.read(|conn| shared::digest_in(conn, access.as_ref(), &name, content))
        })
        .await
    }

    async fn purge_tombstones(&self, before: SyncId) -> Result<PurgeReport, StorageError> {
        self.run("purge tombstones", "", move |inner| {
            inner.write(|tx| {
                let before = to_sql(before.0);
                // The horizon is raised in the same transaction as the delete: no pull can see
                // the tombstones gone while the horizon still lets it through.
                let collections = tx
                    .prepare_cached(RAISE_HORIZONS)?
                    .execute(params![before])?;
                let purged = tx
                    .prepare_cached(DELETE_TOMBSTONES)?
                    .execute(params![before])?;
                Ok(PurgeReport {
                    purged: purged as u64,
                    collections: collections as u64,
                })
            })
        })
        .await
    }

    async fn purge_tombstones_deleted_before(
        &self,
        deleted_before: Timestamp,
    ) -> Result<PurgeReport, StorageError> {
        self.run("purge tombstones", "", move |inner| {
            inner.write(|tx| {
                let before = to_sql(deleted_before.0);
                // As in `purge_tombstones`: horizon and delete in one transaction.
                let collections = tx
                    .prepare_cached(RAISE_HORIZONS_DELETED_BEFORE)?
                    .execute(params![before])?;
                let purged = tx
                    .prepare_cached(DELETE_TOMBSTONES_DELETED_BEFORE)?
                    .execute(params![before])?;
                Ok(PurgeReport {
                    purged: purged as u64,
                    collections: collections as u64,
                })
            })
        })
        .await
    }

    async fn prune_mutations(
        &self,
        recorded_before: Timestamp,
    ) -> Result<PruneReport, StorageError> {
        self.run("prune mutations", "", move |inner| {
            let before = to_sql(recorded_before.0);
            let mut report = PruneReport::default();
            // One transaction per batch: the writer lock is released in between, so pushes
            // interleave with a long prune.
            loop {
                let deleted = inner.write(|tx| {
                    Ok(tx
                        .prepare_cached(PRUNE_MUTATIONS)?
                        .execute(params![before, PRUNE_BATCH])?)
                })?;
                report.pruned += deleted as u64;
                if deleted < PRUNE_BATCH {
                    return Ok(report);
                }
            }
        })
        .await
    }

    async fn seed(
        &self,
        owner: &UserId,
        collection: &str,
        rows: Vec<SeedRow>,
    ) -> Result<SeedReport, StorageError> {
        let (owner, name) = (owner.clone(), collection.to_owned());
        self.run("seed", collection, move |inner| {
            let now = inner.clock.now();
            inner.write(|tx| seed_in(tx, now, owner.as_str(), &name, rows))
        })
        .await
    }

    async fn mark_restored(&self) -> Result<u64, StorageError> {
        let epoch = self
            .run("mark_restored", "", |inner| inner.write(set_new_epoch))
            .await?;
        tracing::info!(epoch, "marked the database restored: a new restore epoch");
        Ok(epoch)
    }

    async fn ping(&self) -> Result<(), StorageError> {
        self.run("ping", "", |inner| {
            inner.read(|conn| {
                conn.query_row("SELECT 1", [], |row| row.get::<_, i64>(0))?;
                Ok(())
            })
        })
        .await
    }
}
