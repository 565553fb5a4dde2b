//! [`PostgresStorage`]: the backend for one or many server processes on one PostgreSQL database.
//!
//! # How it keeps the storage contract
//! - **Feed order never skips.** Every write transaction of a user first locks that user's row
//!   of `fero_counters` (`SELECT … FOR UPDATE`), hands out the next `sync_id`s from it and stores
//!   the new value before `COMMIT`. The lock is held until commit, and PostgreSQL makes a
//!   transaction visible before it releases its locks, so the next writer of that user reads the
//!   counter only after the previous one is visible: commit order is `sync_id` order per user,
//!   and a reader that sees `sync_id` s has already been able to see every smaller one. Writers
//!   of different users never wait on each other. (A `SEQUENCE` would hand out numbers at write
//!   time and let them become visible out of order: see the `naive_sequence` proof variant.)
//! - **One snapshot per page.** A pull runs in a `REPEATABLE READ READ ONLY` transaction: the
//!   horizon check and the page (`limit + 1` rows, for `has_more`) read one snapshot.
//! - **Optimistic push, also across processes.** The write itself checks the base version:
//!   `UPDATE … WHERE owner AND collection AND id AND version = $base`, and a create is
//!   `INSERT … ON CONFLICT DO NOTHING`. PostgreSQL re-checks the `WHERE` on the newest row
//!   version after waiting for a concurrent writer's lock, so of two pushes on one base exactly
//!   one updates a row; the other updates 0 rows and answers a conflict carrying the row it reads
//!   next, in the same transaction.
//! - **Exactly once.** `fero_mutations` holds `(owner, device, seq) → result`, written in the
//!   push's transaction. A push looks its mutation ids up after it took the counter lock, so two
//!   processes replaying one mutation at once are serialised: the second sees the first's commit
//!   and answers the stored result. Each answer carries its `recorded_at`;
//!   [`Storage::prune_mutations`] deletes old ones in bounded batches (`FOR UPDATE SKIP LOCKED`,
//!   so two processes pruning at once split the work instead of waiting on each other).
//! - **Live notices across processes.** A transaction that wrote rows calls
//!   `pg_notify('fero_changes', '{"user":…,"collection":…,"sync_id":…}')` before it commits;
//!   PostgreSQL delivers it only on commit, to every process's
//!   [`PostgresNotifier`](crate::PostgresNotifier).
//! - **Shared collections** (`postgres/shared.rs`) keep the same promises with one counter row
//!   per shared collection (`fero_shared_counters`, locked `FOR UPDATE` by every push to it),
//!   pulls in one `REPEATABLE READ READ ONLY` snapshot, and one notice per bucket a push touched.
//! - **Schema.** Versioned migrations in `fero_schema_migrations`, applied at connect time in
//!   one transaction under an advisory lock, so two processes starting at once apply each
//!   migration once. Indexes on tables that grow large are built after that transaction, with
//!   `CREATE INDEX CONCURRENTLY` (`CONCURRENT_INDEXES`), so migrating a live database never
//!   blocks the pushes of the processes still serving.
//!
//! Tables are prefixed `fero_`. Give each deployment a database of its own: the notification
//! channel is database-wide, so two deployments sharing one would hear each other's notices.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use fero::{Clock, SyncId, SystemClock, Timestamp, Version};
use fero_protocol::{Change, ChangeOutcome, ChangeResult, ContentDigest, Digest, Document};
use futures::TryStreamExt;
use serde_json::value::RawValue;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Config, IsolationLevel, NoTls, Row};

use crate::error::StorageError;
use crate::shared::{Access, SharedCursor, SharedDigest, SharedPage, SharedPushOutcome};
use crate::storage::{
    FeedPosition, PoolUse, PositionRefusal, PruneReport, PullPage, PurgeReport, PushOutcome,
    SeedReport, SeedRow, Storage, StoredDocument, check_position, new_epoch, replay_answer,
    seq_key, to_sql,
};
use crate::user::UserId;

mod shared;

/// The channel every write transaction notifies on; [`PostgresNotifier`](crate::PostgresNotifier)
/// listens to it.
pub(crate) const CHANGES_CHANNEL: &str = "fero_changes";

/// PostgreSQL refuses a `NOTIFY` payload of 8000 bytes or more (and with it the transaction);
/// a longer one is not sent, so a push never fails for the sake of a notice.
const MAX_NOTIFY_PAYLOAD: usize = 7_999;

/// Connections per process by default: enough for a few dozen concurrent requests on a small
/// machine, and ten processes still fit PostgreSQL's default `max_connections` of 100.
pub const DEFAULT_POOL_SIZE: usize = 8;

/// How long a request waits for a free pooled connection before it fails with 500, so an
/// exhausted pool answers instead of hanging every client.
const POOL_WAIT: Duration = Duration::from_secs(30);

/// How long opening one connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How often a write transaction is tried when PostgreSQL aborts it for a deadlock or a
/// serialisation failure (a purge and a push locking the same rows in opposite orders). Both
/// roll the transaction back, so a retry cannot write twice.
const WRITE_ATTEMPTS: u32 = 3;

/// Answers one prune statement deletes at most: each batch is its own short transaction, so a
/// large backlog never holds locks, or a pooled connection, for long.
const PRUNE_BATCH: i64 = 10_000;

/// Key of the advisory lock that serialises migrations: two processes starting at once would
/// otherwise race on `CREATE TABLE IF NOT EXISTS` (which is not safe concurrently).
const MIGRATION_LOCK: i64 = 0x6665_726f_5f73_6368; // "fero_sch"

/// One schema change: applied once, in order, recorded in `fero_schema_migrations`.
struct Migration {
    version: i32,
    description: &'static str,
    sql: &'static str,
}

/// The setting through which [`migrate`] hands the migration time (the storage clock's, in unix
/// milliseconds) to migration SQL, which takes no parameters (migration 2 names it literally).
const MIGRATION_TIME_SETTING: &str = "fero.migration_time";

/// The setting through which [`migrate`] hands a new random restore epoch to migration 4.
const MIGRATION_EPOCH_SETTING: &str = "fero.migration_epoch";

/// Every migration, oldest first. Never edit a released one: add the next.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "rows, mutations, per-user counters, purge horizons",
        sql: "
CREATE TABLE fero_rows (
    owner      TEXT    NOT NULL,
    collection TEXT    NOT NULL,
    id         TEXT    NOT NULL,
    version    BIGINT  NOT NULL,
    sync_id    BIGINT  NOT NULL,
    updated_at BIGINT  NOT NULL,
    deleted    BOOLEAN NOT NULL DEFAULT FALSE,
    -- JSON as text: kept as the client sent it, and JSONB would refuse \\u0000 in strings.
    data       TEXT    NOT NULL,
    PRIMARY KEY (owner, collection, id)
);
CREATE INDEX fero_rows_feed ON fero_rows (owner, collection, sync_id);
CREATE TABLE fero_mutations (
    owner  TEXT   NOT NULL,
    device TEXT   NOT NULL,
    seq    BIGINT NOT NULL,
    result TEXT   NOT NULL,
    PRIMARY KEY (owner, device, seq)
);
CREATE TABLE fero_counters (
    owner TEXT   NOT NULL PRIMARY KEY,
    value BIGINT NOT NULL
);
CREATE TABLE fero_horizons (
    owner      TEXT   NOT NULL,
    collection TEXT   NOT NULL,
    sync_id    BIGINT NOT NULL,
    PRIMARY KEY (owner, collection)
);
",
    },
    Migration {
        version: 2,
        description: "mutations.recorded_at, for pruning old push answers",
        // Answers stored before retention existed count as recorded at the migration, so they
        // are kept for a full retention period from the upgrade. That default is not volatile,
        // so PostgreSQL evaluates it once and keeps it as the value of the existing rows without
        // rewriting the table (the one that grew without bound). The default that replaces it
        // serves only processes of version 1 still running during a rolling upgrade, whose
        // inserts do not name `recorded_at`: their answers are stamped by the database's clock
        // instead of failing. This code always names it.
        sql: "
ALTER TABLE fero_mutations ADD COLUMN recorded_at BIGINT NOT NULL
    DEFAULT current_setting('fero.migration_time')::BIGINT;
ALTER TABLE fero_mutations ALTER COLUMN recorded_at
    SET DEFAULT (EXTRACT(EPOCH FROM now()) * 1000)::BIGINT;
",
        // Its index, `fero_mutations_recorded`, was built here, inside the migration
        // transaction: on a large table that held up every push (an index build blocks the
        // table's writes) for the length of the build. It is in [`CONCURRENT_INDEXES`] now.
        // Databases migrated before have it already, and keep it.
    },
    Migration {
        version: 3,
        description: "mutations.collection, to refuse a mutation id reused for another row",
        // Nullable without a default: no rewrite of the table. Answers recorded before (and by
        // version 2 processes still running during a rolling upgrade) have none; for them only
        // the item id is compared, until retention prunes them.
        sql: "
ALTER TABLE fero_mutations ADD COLUMN collection TEXT;
",
    },
    Migration {
        version: 4,
        description: "restore epoch, so that cursors issued before a restore are refused",
        // One row: the database's random restore epoch, drawn by the migrating process. Cursors
        // issued before carry none and keep being checked against the feed's length only.
        sql: "
CREATE TABLE fero_restore_epoch (
    id    INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    epoch BIGINT  NOT NULL
);
INSERT INTO fero_restore_epoch (id, epoch)
    VALUES (1, current_setting('fero.migration_epoch')::BIGINT);
",
    },
    Migration {
        version: 5,
        description: "shared collections: rows in buckets, exits, grants, readable sets",
        sql: shared::SHARED_MIGRATION,
    },
];

/// Indexes built after the migrations commit, with `CREATE INDEX CONCURRENTLY`: the build
/// reads the table without blocking writes, so a server migrating a live database keeps
/// accepting the other processes' pushes. (It cannot run inside a transaction, hence apart from
/// [`MIGRATIONS`].) Each is `(name, statement)`; the statement must say `IF NOT EXISTS`.
const CONCURRENT_INDEXES: &[(&str, &str)] = &[(
    "fero_mutations_recorded",
    "CREATE INDEX CONCURRENTLY IF NOT EXISTS fero_mutations_recorded \
     ON fero_mutations (recorded_at)",
)];

/// Key of the session advisory lock held while [`CONCURRENT_INDEXES`] are checked and built, so
/// that a second process starting at once never takes an index still being built for one a
/// failed build left invalid.
const INDEX_LOCK: i64 = 0x6665_726f_5f69_6478; // "fero_idx"

const CREATE_MIGRATIONS: &str = "CREATE TABLE IF NOT EXISTS fero_schema_migrations (
    version     INTEGER     NOT NULL PRIMARY KEY,
    description TEXT        NOT NULL,
    applied_at  TIMESTAMPTZ NOT NULL DEFAULT now()
)";
/// Only for the `naive_sequence` proof variant.
const CREATE_NAIVE_SEQUENCE: &str = "CREATE SEQUENCE IF NOT EXISTS fero_naive_sync_id";

const SELECT_PAGE: &str = "SELECT id, sync_id, version, updated_at, deleted, data FROM fero_rows
     WHERE owner = $1 AND collection = $2 AND sync_id > $3 ORDER BY sync_id LIMIT $4";
const SELECT_ROW: &str = "SELECT id, sync_id, version, updated_at, deleted, data FROM fero_rows
     WHERE owner = $1 AND collection = $2 AND id = $3";
const SELECT_HORIZON: &str =
    "SELECT sync_id FROM fero_horizons WHERE owner = $1 AND collection = $2";
/// The user's highest assigned `sync_id`, read (not locked) by a pull.
const SELECT_COUNTER: &str = "SELECT value FROM fero_counters WHERE owner = $1";
const SELECT_EPOCH: &str = "SELECT epoch FROM fero_restore_epoch WHERE id = 1";
const SET_EPOCH: &str = "INSERT INTO fero_restore_epoch (id, epoch) VALUES (1, $1)
     ON CONFLICT (id) DO UPDATE SET epoch = excluded.epoch";
const LOCK_COUNTER: &str = "SELECT value FROM fero_counters WHERE owner = $1 FOR UPDATE";
const CREATE_COUNTER: &str = "INSERT INTO fero_counters (owner, value) VALUES ($1, 0)
     ON CONFLICT (owner) DO NOTHING";
const STORE_COUNTER: &str = "UPDATE fero_counters SET value = $2 WHERE owner = $1";
const NEXT_NAIVE_SYNC_ID: &str = "SELECT nextval('fero_naive_sync_id')";
const SELECT_MUTATION: &str =
    "SELECT result, collection FROM fero_mutations WHERE owner = $1 AND device = $2 AND seq = $3";
const INSERT_MUTATION: &str =
    "INSERT INTO fero_mutations (owner, device, seq, result, recorded_at, collection)
     VALUES ($1, $2, $3, $4, $5, $6)";
/// One batch of a prune: up to `$2` answers recorded before `$1`. Rows another prune has locked
/// are skipped (it deletes them), so concurrent prunes never wait on or deadlock with each
/// other; a short batch ends the prune.
const PRUNE_MUTATIONS: &str = "DELETE FROM fero_mutations WHERE (owner, device, seq) IN (
         SELECT owner, device, seq FROM fero_mutations WHERE recorded_at < $1
         LIMIT $2 FOR UPDATE SKIP LOCKED)";
const CREATE_ROW: &str =
    "INSERT INTO fero_rows (owner, collection, id, version, sync_id, updated_at, deleted, data)
     VALUES ($1, $2, $3, 1, $4, $5, $6, $7)
     ON CONFLICT (owner, collection, id) DO NOTHING
     RETURNING version";
const UPDATE_ROW: &str = "UPDATE fero_rows SET version = version + 1, sync_id = $5,
         updated_at = $6, deleted = $7, data = CASE WHEN $7 THEN data ELSE $8 END
     WHERE owner = $1 AND collection = $2 AND id = $3 AND version = $4
     RETURNING version";
const SEED_ROWS: &str =
    "INSERT INTO fero_rows (owner, collection, id, version, sync_id, updated_at, deleted, data)
     SELECT $1, $2, seeded.id, 1, seeded.sync_id, $3, seeded.deleted, seeded.data
     FROM UNNEST($4::TEXT[], $5::BIGINT[], $6::BOOLEAN[], $7::TEXT[])
         AS seeded (id, sync_id, deleted, data)
     ON CONFLICT (owner, collection, id) DO UPDATE SET version = fero_rows.version + 1,
         sync_id = excluded.sync_id, updated_at = excluded.updated_at,
         deleted = excluded.deleted, data = excluded.data";
const SELECT_LIVE: &str =
    "SELECT id, version FROM fero_rows WHERE owner = $1 AND collection = $2 AND NOT deleted";
const SELECT_LIVE_CONTENT: &str =
    "SELECT id, version, data FROM fero_rows WHERE owner = $1 AND collection = $2 AND NOT deleted";
/// One statement, so the horizon covers exactly the tombstones deleted: two statements would
/// read two snapshots, and a tombstone committed in between could be deleted without raising
/// its horizon (`sync_id`s are per user, so a bound of one user can lie ahead of another's).
const PURGE: &str = "WITH purged AS (
         DELETE FROM fero_rows WHERE deleted AND sync_id < $1
         RETURNING owner, collection, sync_id
     ), raised AS (
         INSERT INTO fero_horizons (owner, collection, sync_id)
         SELECT owner, collection, MAX(sync_id) FROM purged GROUP BY owner, collection
         ON CONFLICT (owner, collection)
             DO UPDATE SET sync_id = GREATEST(fero_horizons.sync_id, excluded.sync_id)
         RETURNING 1
     )
     SELECT (SELECT COUNT(*) FROM purged), (SELECT COUNT(*) FROM raised)";
/// [`PURGE`] for the tombstones deleted before a time (`updated_at < $1`).
const PURGE_DELETED_BEFORE: &str = "WITH purged AS (
         DELETE FROM fero_rows WHERE deleted AND updated_at < $1
         RETURNING owner, collection, sync_id
     ), raised AS (
         INSERT INTO fero_horizons (owner, collection, sync_id)
         SELECT owner, collection, MAX(sync_id) FROM purged GROUP BY owner, collection
         ON CONFLICT (owner, collection)
             DO UPDATE SET sync_id = GREATEST(fero_horizons.sync_id, excluded.sync_id)
         RETURNING 1
     )
     SELECT (SELECT COUNT(*) FROM purged), (SELECT COUNT(*) FROM raised)";
const NOTIFY: &str = "SELECT pg_notify($1, $2)";

/// A hook run inside every write transaction that wrote rows, just before `COMMIT`.
type BeforeCommit = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// Where `sync_id`s come from.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum SyncIdSource {
    /// The per-user counter row, locked first in every write transaction: gap-free.
    Counter,
    /// `nextval` of a sequence, no lock: the naive scheme, kept to prove the test catches it.
    NaiveSequence,
}

/// The PostgreSQL storage backend: several server processes may share one database.
///
/// Cheap to clone (an `Arc` inside); all clones share one connection pool. Connections are plain
/// TCP without TLS, for a database on the loopback or a private network.
///
/// # Examples
/// ```no_run
/// use fero_server::{PostgresNotifier, PostgresStorage, Server, Tokens};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let url = "postgres://postgres@127.0.0.1:5432/fero";
/// let server = Server::builder()
///     .storage(PostgresStorage::connect(url).await?)
///     .notifier(std::sync::Arc::new(PostgresNotifier::listen(url).await?))
///     .tokens(Tokens::parse_list("alices-token=alice")?)
///     .build()?;
/// # drop(server);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PostgresStorage {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    clock: Arc<dyn Clock>,
    sync_ids: SyncIdSource,
    before_commit: Option<BeforeCommit>,
    /// `user@host:port/database`, for messages.
    target: String,
    /// Readable sets known to be stored.
    known_sets: crate::shared::KnownSets,
    /// Signs and checks shared cursors ([`shared::cursor_key`]).
    cursor_key: crate::shared::CursorKey,
}

impl fmt::Debug for PostgresStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = self.inner.pool.status();
        f.debug_struct("PostgresStorage")
            .field("target", &self.inner.target)
            .field("sync_ids", &self.inner.sync_ids)
            .field("pool_size", &status.size)
            .field("pool_max_size", &status.max_size)
            .finish_non_exhaustive()
    }
}

impl PostgresStorage {
    /// Connects to the database at `url` (`postgres://user@host:port/database`) with the
    /// default settings and brings its schema up to date.
    ///
    /// # Errors
    /// [`StorageError::BadUrl`], [`StorageError::Connect`] or [`StorageError::Schema`].
    pub async fn connect(url: &str) -> Result<Self, StorageError> {
        PostgresStorage::builder(url).connect().await
    }

    /// A builder for a storage with other settings than [`connect`](Self::connect)'s.
    pub fn builder(url: impl Into<String>) -> PostgresStorageBuilder {
        PostgresStorageBuilder {
            url: url.into(),
            pool_size: DEFAULT_POOL_SIZE,
            clock: Arc::new(SystemClock),
            sync_ids: SyncIdSource::Counter,
            before_commit: None,
        }
    }

    /// A pooled connection.
    async fn client(
        &self,
        operation: &'static str,
        collection: &str,
    ) -> Result<deadpool_postgres::Object, StorageError> {
        self.inner
            .pool
            .get()
            .await
            .map_err(|error| Failure::from(error).into_storage(operation, collection))
    }

    /// Runs one write transaction (`attempt`), again when PostgreSQL aborted it for a deadlock
    /// or a serialisation failure.
    async fn write<T, F, Fut>(
        &self,
        operation: &'static str,
        collection: &str,
        attempt: F,
    ) -> Result<T, StorageError>
    where
        F: Fn(deadpool_postgres::Object) -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let mut tries = 0;
        loop {
            tries += 1;
            let client = self.client(operation, collection).await?;
            match attempt(client).await {
                Err(failure) if failure.is_retryable() && tries < WRITE_ATTEMPTS => {
                    let error = full_message(&failure);
                    tracing::debug!(operation, collection, tries, %error, "retrying");
                }
                result => return result.map_err(|f| f.into_storage(operation, collection)),
            }
        }
    }
}

/// Builds a [`PostgresStorage`]; see [`PostgresStorage::builder`].
pub struct PostgresStorageBuilder {
    url: String,
    pool_size: usize,
    clock: Arc<dyn Clock>,
    sync_ids: SyncIdSource,
    before_commit: Option<BeforeCommit>,
}

impl fmt::Debug for PostgresStorageBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStorageBuilder")
            .field("pool_size", &self.pool_size)
            .field("sync_ids", &self.sync_ids)
            .finish_non_exhaustive()
    }
}

impl PostgresStorageBuilder {
    /// Most connections open at once (default [`DEFAULT_POOL_SIZE`]; 0 is taken as 1).
    pub fn pool_size(mut self, connections: usize) -> Self {
        self.pool_size = connections.max(1);
        self
    }

    /// The clock that stamps `updated_at` (informational only: the feed is ordered by
    /// `sync_id`, never by time) and the `recorded_at` of push answers (compared with the
    /// cut-off of [`Storage::prune_mutations`], and given to the answers a migration finds).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// **Broken on purpose, for tests only.** Takes each `sync_id` from a PostgreSQL sequence
    /// (`nextval`) without the per-user counter lock: the naive scheme whose numbers become
    /// visible out of order, so a pager can skip rows. It exists so that the concurrent-writer
    /// test can show it catches the skip. Replays racing on one mutation id may fail with a
    /// unique violation here, as the counter lock is what serialises them.
    #[doc(hidden)]
    pub fn naive_sequence(mut self) -> Self {
        self.sync_ids = SyncIdSource::NaiveSequence;
        self
    }

    /// **For tests.** Runs `hook` inside every write transaction that wrote rows, after its
    /// `sync_id`s were taken and just before `COMMIT` (a random delay there widens the window
    /// in which other transactions commit first).
    #[doc(hidden)]
    pub fn before_commit<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.before_commit = Some(Arc::new(move || Box::pin(hook())));
        self
    }

    /// Connects and brings the schema up to date (safe when several processes start at once).
    ///
    /// # Errors
    /// [`StorageError::BadUrl`] when the URL does not parse, [`StorageError::Connect`] when no
    /// connection can be opened, [`StorageError::Schema`] when the database holds a newer schema
    /// or a migration fails.
    pub async fn connect(self) -> Result<PostgresStorage, StorageError> {
        let config = parse_url(&self.url)?;
        let target = describe(&config);
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                // A statement that failed mid-transaction leaves the connection usable (the
                // transaction guard rolls back on drop); a closed one is detected and replaced.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(self.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|error| StorageError::Connect {
                target: target.clone(),
                source: full_message(&error).into(),
            })?;
        let mut client = pool.get().await.map_err(|error| StorageError::Connect {
            target: target.clone(),
            source: full_message(&error).into(),
        })?;
        migrate(&mut client, self.sync_ids, self.clock.now())
            .await
            .map_err(|message| StorageError::Schema {
                target: target.clone(),
                message,
            })?;
        build_indexes_concurrently(&client)
            .await
            .map_err(|message| StorageError::Schema {
                target: target.clone(),
                message,
            })?;
        let cursor_key =
            shared::cursor_key(&client)
                .await
                .map_err(|message| StorageError::Schema {
                    target: target.clone(),
                    message,
                })?;
        drop(client);
        Ok(PostgresStorage {
            inner: Arc::new(Inner {
                pool,
                clock: self.clock,
                sync_ids: self.sync_ids,
                before_commit: self.before_commit,
                target,
                known_sets: crate::shared::KnownSets::default(),
                cursor_key,
            }),
        })
    }
}

/// Parses a `postgres://` URL (or a `key=value` connection string) and sets the timeouts.
pub(crate) fn parse_url(url: &str) -> Result<Config, StorageError> {
    let mut config = Config::from_str(url).map_err(|error| StorageError::BadUrl {
        source: Box::new(error),
    })?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    Ok(config)
}

/// `user@host:port/database`, without the password.
pub(crate) fn describe(config: &Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        #[cfg(unix)]
        Some(tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
        None => "localhost".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config.get_user().unwrap_or("(default user)");
    let database = config.get_dbname().unwrap_or(user);
    format!("{user}@{host}:{port}/{database}")
}

/// Applies the missing migrations in one transaction under [`MIGRATION_LOCK`]; `now` is the
/// migration time some of them record.
async fn migrate(
    client: &mut deadpool_postgres::Object,
    sync_ids: SyncIdSource,
    now: Timestamp,
) -> Result<(), String> {
    let tx = client
        .transaction()
        .await
        .map_err(|e| format!("cannot begin: {}", full_message(&e)))?;
    // A transaction-level lock: released by COMMIT or ROLLBACK, never left behind on a pooled
    // connection. A second process waits here, then sees the first one's tables.
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(|e| format!("cannot take the migration lock: {}", full_message(&e)))?;
    tx.batch_execute(CREATE_MIGRATIONS)
        .await
        .map_err(|e| format!("cannot create fero_schema_migrations: {}", full_message(&e)))?;
    let found: Option<i32> = tx
        .query_one("SELECT MAX(version) FROM fero_schema_migrations", &[])
        .await
        .and_then(|row| row.try_get(0))
        .map_err(|e| format!("cannot read fero_schema_migrations: {}", full_message(&e)))?;
    let found = found.unwrap_or(0);
    let latest = MIGRATIONS.last().map_or(0, |m| m.version);
    if found > latest {
        return Err(format!(
            "it has schema version {found}, newer than this server's {latest}; run a newer \
             fero-server"
        ));
    }
    // Local to this transaction (`is_local`): nothing of it stays on the pooled connection.
    tx.execute(
        "SELECT set_config($1, $2, true)",
        &[&MIGRATION_TIME_SETTING, &to_sql(now.0).to_string()],
    )
    .await
    .map_err(|e| format!("cannot set the migration time: {}", full_message(&e)))?;
    let epoch = new_epoch(None).map_err(|e| e.to_string())?;
    tx.execute(
        "SELECT set_config($1, $2, true)",
        &[&MIGRATION_EPOCH_SETTING, &to_sql(epoch).to_string()],
    )
    .await
    .map_err(|e| format!("cannot set the migration epoch: {}", full_message(&e)))?;
    for migration in MIGRATIONS.iter().filter(|m| m.version > found) {
        tx.batch_execute(migration.sql).await.map_err(|e| {
            format!(
                "migration {} ({}) failed: {}",
                migration.version,
                migration.description,
                full_message(&e)
            )
        })?;
        tx.execute(
            "INSERT INTO fero_schema_migrations (version, description) VALUES ($1, $2)",
            &[&migration.version, &migration.description],
        )
        .await
        .map_err(|e| {
            format!(
                "cannot record migration {}: {}",
                migration.version,
                full_message(&e)
            )
        })?;
        tracing::info!(
            version = migration.version,
            description = migration.description,
            "applied schema migration"
        );
    }
    if sync_ids == SyncIdSource::NaiveSequence {
        tx.batch_execute(CREATE_NAIVE_SEQUENCE)
            .await
            .map_err(|e| format!("cannot create the naive sequence: {}", full_message(&e)))?;
    }
    tx.commit()
        .await
        .map_err(|e| format!("cannot commit the migrations: {}", full_message(&e)))
}

/// Builds each of [`CONCURRENT_INDEXES`] that is missing, and rebuilds one that an interrupted
/// build left invalid, without blocking writes, under [`INDEX_LOCK`]. When another process holds
/// the lock it is building them: this one goes on without waiting (the indexes only speed up
/// pruning), and waiting would deadlock anyway, since a concurrent build waits for every open
/// transaction, a lock wait included.
async fn build_indexes_concurrently(client: &deadpool_postgres::Object) -> Result<(), String> {
    let locked: bool = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&INDEX_LOCK])
        .await
        .and_then(|row| row.try_get(0))
        .map_err(|e| format!("cannot take the index lock: {}", full_message(&e)))?;
    if !locked {
        tracing::info!("another process is building the indexes; not waiting for it");
        return Ok(());
    }
    let result = build_missing_indexes(client).await;
    // Released on every path: the connection goes back to the pool.
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&INDEX_LOCK])
        .await
        .map_err(|e| format!("cannot release the index lock: {}", full_message(&e)));
    result.and(unlocked.map(drop))
}

async fn build_missing_indexes(client: &deadpool_postgres::Object) -> Result<(), String> {
    for (name, create) in CONCURRENT_INDEXES {
        let valid: Option<bool> = client
            .query_opt(
                "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                 WHERE c.relname = $1 AND pg_table_is_visible(c.oid)",
                &[name],
            )
            .await
            .map_err(|e| format!("cannot look up index {name}: {}", full_message(&e)))?
            .map(|row| row.get(0));
        match valid {
            Some(true) => continue,
            Some(false) => {
                tracing::warn!(
                    index = name,
                    "rebuilding an index an interrupted build left invalid"
                );
                client
                    .batch_execute(&format!("DROP INDEX CONCURRENTLY IF EXISTS {name}"))
                    .await
                    .map_err(|e| {
                        format!("cannot drop invalid index {name}: {}", full_message(&e))
                    })?;
            }
            None => {}
        }
        tracing::info!(
            index = name,
            "building index concurrently (writes continue)"
        );
        client
            .batch_execute(create)
            .await
            .map_err(|e| format!("cannot build index {name}: {}", full_message(&e)))?;
    }
    Ok(())
}

/// A failure inside one operation, before it knows its operation's name.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Failure {
    #[error(transparent)]
    Sql(#[from] tokio_postgres::Error),
    #[error(transparent)]
    Pool(#[from] PoolError),
    #[error("{message}")]
    Corrupt { id: String, message: String },
    #[error("the pull's position is refused: {0:?}")]
    Position(PositionRefusal),
    /// An error already in its final form (from the shared-collection code).
    #[error(transparent)]
    Done(StorageError),
}

impl Failure {
    /// PostgreSQL rolled the transaction back for a deadlock or a serialisation failure.
    fn is_retryable(&self) -> bool {
        match self {
            Failure::Sql(error) => matches!(
                error.code(),
                Some(&SqlState::T_R_DEADLOCK_DETECTED | &SqlState::T_R_SERIALIZATION_FAILURE)
            ),
            _ => false,
        }
    }

    fn into_storage(self, operation: &'static str, collection: &str) -> StorageError {
        let collection = collection.to_owned();
        match self {
            Failure::Sql(source) => StorageError::Database {
                operation,
                collection,
                source: full_message(&source).into(),
            },
            Failure::Pool(source) => StorageError::Database {
                operation,
                collection,
                source: full_message(&source).into(),
            },
            Failure::Corrupt { id, message } => StorageError::Corrupt {
                collection,
                id,
                message,
            },
            Failure::Position(refusal) => refusal.into_storage(&collection),
            Failure::Done(error) => error,
        }
    }
}

/// An error and its causes in one line. tokio-postgres shows only its kind ("db error"); the
/// server's message (what failed and why) is in the causes.
pub(crate) fn full_message(error: &(dyn std::error::Error + 'static)) -> String {
    let mut message = error.to_string();
    let mut cause = error.source();
    while let Some(error) = cause {
        let text = error.to_string();
        if !message.ends_with(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        cause = error.source();
    }
    message
}

fn from_sql(value: i64, id: &str, what: &str) -> Result<u64, Failure> {
    u64::try_from(value).map_err(|_| Failure::Corrupt {
        id: id.to_owned(),
        message: format!("{what} is negative ({value})"),
    })
}

/// A row of `SELECT id, sync_id, version, updated_at, deleted, data` as a document, its content
/// parsed (for a conflict answer; a pull page sends the stored text, [`stored_document`]).
fn document(row: &Row) -> Result<Document, Failure> {
    let stored = stored_document(row)?;
    stored.to_document().map_err(|error| Failure::Corrupt {
        id: stored.id.clone(),
        message: format!("data is not JSON: {error}"),
    })
}

/// A page row with its content as stored: a pull sends the text on verbatim. The text is checked
/// to be JSON (no tree is built), so a corrupt row is still refused.
fn stored_document(row: &Row) -> Result<StoredDocument, Failure> {
    let id: String = row.try_get(0)?;
    let data: String = row.try_get(5)?;
    let data = RawValue::from_string(data).map_err(|error| Failure::Corrupt {
        id: id.clone(),
        message: format!("data is not JSON: {error}"),
    })?;
    Ok(StoredDocument {
        sync_id: SyncId(from_sql(row.try_get(1)?, &id, "sync_id")?),
        version: Version(from_sql(row.try_get(2)?, &id, "version")?),
        updated_at: Timestamp(from_sql(row.try_get(3)?, &id, "updated_at")?),
        deleted: row.try_get(4)?,
        data,
        id,
    })
}

/// Hands out `sync_id`s inside one write transaction.
struct SyncIds {
    source: SyncIdSource,
    /// The counter's value when the transaction locked it.
    start: i64,
    /// The last value handed out.
    last: i64,
}

impl SyncIds {
    /// Locks `owner`'s counter row (creating it at 0 the first time). Every writer of `owner`
    /// waits here until the previous one committed: from here on, this transaction's statements
    /// see every earlier write of `owner`, and its `sync_id`s follow theirs.
    async fn lock(
        tx: &deadpool_postgres::Transaction<'_>,
        source: SyncIdSource,
        owner: &str,
    ) -> Result<SyncIds, Failure> {
        if source == SyncIdSource::NaiveSequence {
            return Ok(SyncIds {
                source,
                start: 0,
                last: 0,
            });
        }
        let lock = tx.prepare_cached(LOCK_COUNTER).await?;
        let value = match tx.query_opt(&lock, &[&owner]).await? {
            Some(row) => row.try_get(0)?,
            None => {
                let create = tx.prepare_cached(CREATE_COUNTER).await?;
                tx.execute(&create, &[&owner]).await?;
                tx.query_one(&lock, &[&owner]).await?.try_get(0)?
            }
        };
        Ok(SyncIds {
            source,
            start: value,
            last: value,
        })
    }

    /// The next `sync_id`.
    async fn take(&mut self, tx: &deadpool_postgres::Transaction<'_>) -> Result<i64, Failure> {
        match self.source {
            SyncIdSource::Counter => {
                self.last += 1;
                Ok(self.last)
            }
            SyncIdSource::NaiveSequence => {
                let next = tx.prepare_cached(NEXT_NAIVE_SYNC_ID).await?;
                self.last = tx.query_one(&next, &[]).await?.try_get(0)?;
                Ok(self.last)
            }
        }
    }

    /// Returns the value just taken, for a write that did not happen: the counter stays
    /// gap-free (a sequence's value is simply lost).
    fn give_back(&mut self) {
        if self.source == SyncIdSource::Counter {
            self.last -= 1;
        }
    }

    /// Stores the counter if values were handed out (the row lock is held until commit).
    async fn store(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        owner: &str,
    ) -> Result<(), Failure> {
        if self.source == SyncIdSource::Counter && self.last != self.start {
            let store = tx.prepare_cached(STORE_COUNTER).await?;
            tx.execute(&store, &[&owner, &self.last]).await?;
        }
        Ok(())
    }
}

/// The payload of a notice on [`CHANGES_CHANNEL`].
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct NotifyPayload {
    pub(crate) user: String,
    pub(crate) collection: String,
    pub(crate) sync_id: u64,
}

/// Announces `collection`'s new head to every listening process; delivered only if the
/// transaction commits.
async fn notify(
    tx: &deadpool_postgres::Transaction<'_>,
    owner: &str,
    collection: &str,
    sync_id: i64,
) -> Result<(), Failure> {
    let payload = NotifyPayload {
        user: owner.to_owned(),
        collection: collection.to_owned(),
        sync_id: from_sql(sync_id, collection, "sync_id")?,
    };
    let payload = serde_json::to_string(&payload).map_err(|error| Failure::Corrupt {
        id: collection.to_owned(),
        message: format!("change notice does not serialise: {error}"),
    })?;
    if payload.len() > MAX_NOTIFY_PAYLOAD {
        tracing::warn!(
            user = owner,
            collection,
            "user name too long for a PostgreSQL notice; other processes' change streams will \
             not hear of this write"
        );
        return Ok(());
    }
    let statement = tx.prepare_cached(NOTIFY).await?;
    tx.execute(&statement, &[&CHANGES_CHANNEL, &payload])
        .await?;
    Ok(())
}

/// The stored answer to `change` when its mutation id was pushed before by `owner` (a replay),
/// as [`replay_answer`] makes it; `None` for a new mutation.
async fn replay_answer_of(
    tx: &deadpool_postgres::Transaction<'_>,
    owner: &str,
    change: &Change,
    collection: &str,
    seq: i64,
) -> Result<Option<ChangeResult>, Failure> {
    let device = change.mutation_id.device.as_str();
    let select_mutation = tx.prepare_cached(SELECT_MUTATION).await?;
    let Some(row) = tx
        .query_opt(&select_mutation, &[&owner, &device, &seq])
        .await?
    else {
        return Ok(None);
    };
    let stored: &str = row.try_get(0)?;
    let recorded_collection: Option<&str> = row.try_get(1)?;
    let original: ChangeResult =
        serde_json::from_str(stored).map_err(|error| Failure::Corrupt {
            id: format!("{device}/{}", change.mutation_id.seq),
            message: format!("stored push result is not JSON: {error}"),
        })?;
    Ok(Some(replay_answer(
        change,
        collection,
        recorded_collection,
        original,
    )))
}

/// Records the answer to an accepted change under its mutation id, for replays.
async fn record_answer(
    tx: &deadpool_postgres::Transaction<'_>,
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
    let insert_mutation = tx.prepare_cached(INSERT_MUTATION).await?;
    tx.execute(
        &insert_mutation,
        &[
            &owner,
            &result.mutation_id.device.as_str(),
            &seq,
            &stored,
            &to_sql(now.0),
            &collection,
        ],
    )
    .await?;
    Ok(())
}

impl Inner {
    /// Runs the test hook, if any, before a commit.
    async fn before_commit(&self) {
        if let Some(hook) = &self.before_commit {
            hook().await;
        }
    }

    async fn push_in(
        &self,
        mut client: deadpool_postgres::Object,
        now: Timestamp,
        owner: &str,
        collection: &str,
        changes: &[Change],
    ) -> Result<PushOutcome, Failure> {
        let tx = client.transaction().await?;
        let mut sync_ids = SyncIds::lock(&tx, self.sync_ids, owner).await?;
        let mut last_written = None;
        let mut results = Vec::with_capacity(changes.len());
        for change in changes {
            let seq = seq_key(change.mutation_id.seq);
            if let Some(answer) = replay_answer_of(&tx, owner, change, collection, seq).await? {
                results.push(answer);
                continue;
            }
            let sync_id = sync_ids.take(&tx).await?;
            let data = if change.deleted && change.base_version.is_none() {
                "null".to_owned()
            } else {
                change.data.to_string()
            };
            let updated_at = to_sql(now.0);
            // The base version is checked by the statement that writes: after waiting for a
            // concurrent writer of this row, PostgreSQL re-checks it on the newest version.
            let written = match change.base_version {
                None => {
                    let create = tx.prepare_cached(CREATE_ROW).await?;
                    tx.query_opt(
                        &create,
                        &[
                            &owner,
                            &collection,
                            &change.id,
                            &sync_id,
                            &updated_at,
                            &change.deleted,
                            &data,
                        ],
                    )
                    .await?
                }
                Some(base) => {
                    let update = tx.prepare_cached(UPDATE_ROW).await?;
                    tx.query_opt(
                        &update,
                        &[
                            &owner,
                            &collection,
                            &change.id,
                            &to_sql(base.0),
                            &sync_id,
                            &updated_at,
                            &change.deleted,
                            &data,
                        ],
                    )
                    .await?
                }
            };
            let Some(written) = written else {
                // Nothing written: a conflict with the row as it is now.
                sync_ids.give_back();
                let select_row = tx.prepare_cached(SELECT_ROW).await?;
                let server = tx
                    .query_opt(&select_row, &[&owner, &collection, &change.id])
                    .await?
                    .map(|row| document(&row))
                    .transpose()?;
                results.push(ChangeResult {
                    id: change.id.clone(),
                    mutation_id: change.mutation_id.clone(),
                    outcome: ChangeOutcome::Conflict { server },
                });
                continue;
            };
            let version: i64 = written.try_get(0)?;
            let result = ChangeResult {
                id: change.id.clone(),
                mutation_id: change.mutation_id.clone(),
                outcome: ChangeOutcome::Accepted {
                    version: Version(from_sql(version, &change.id, "version")?),
                    sync_id: SyncId(from_sql(sync_id, &change.id, "sync_id")?),
                },
            };
            record_answer(&tx, now, owner, collection, seq, &result).await?;
            last_written = Some(sync_id);
            results.push(result);
        }
        let last_written = match last_written {
            Some(sync_id) => {
                sync_ids.store(&tx, owner).await?;
                notify(&tx, owner, collection, sync_id).await?;
                self.before_commit().await;
                Some(SyncId(from_sql(sync_id, collection, "sync_id")?))
            }
            None => None,
        };
        tx.commit().await?;
        Ok(PushOutcome {
            results,
            last_written,
        })
    }

    async fn seed_in(
        &self,
        mut client: deadpool_postgres::Object,
        now: Timestamp,
        owner: &str,
        collection: &str,
        rows: &[SeedRow],
    ) -> Result<SeedReport, Failure> {
        let tx = client.transaction().await?;
        let mut sync_ids = SyncIds::lock(&tx, self.sync_ids, owner).await?;
        let seed = tx.prepare_cached(SEED_ROWS).await?;
        let updated_at = to_sql(now.0);
        let mut report = SeedReport::default();
        let mut last = None;
        // One statement per run of distinct ids: `ON CONFLICT DO UPDATE` may not touch a row
        // twice in one statement, and a re-seeded id must become a new version each time.
        let mut start = 0;
        while start < rows.len() {
            let mut seen = std::collections::HashSet::new();
            let end = rows[start..]
                .iter()
                .position(|row| !seen.insert(row.id.as_str()))
                .map_or(rows.len(), |offset| start + offset);
            let run = &rows[start..end];
            let mut ids = Vec::with_capacity(run.len());
            let mut positions = Vec::with_capacity(run.len());
            let mut deleted = Vec::with_capacity(run.len());
            let mut data = Vec::with_capacity(run.len());
            for row in run {
                let sync_id = sync_ids.take(&tx).await?;
                ids.push(row.id.as_str());
                positions.push(sync_id);
                deleted.push(row.deleted);
                data.push(row.data.to_string());
                last = Some(sync_id);
            }
            tx.execute(
                &seed,
                &[
                    &owner,
                    &collection,
                    &updated_at,
                    &ids,
                    &positions,
                    &deleted,
                    &data,
                ],
            )
            .await?;
            report.written += run.len() as u64;
            start = end;
        }
        if let Some(sync_id) = last {
            sync_ids.store(&tx, owner).await?;
            notify(&tx, owner, collection, sync_id).await?;
            self.before_commit().await;
            report.last_sync_id = Some(SyncId(from_sql(sync_id, collection, "sync_id")?));
        }
        tx.commit().await?;
        Ok(report)
    }
}

async fn pull_in(
    mut client: deadpool_postgres::Object,
    sync_ids: SyncIdSource,
    owner: &str,
    collection: &str,
    from: FeedPosition,
    limit: u32,
) -> Result<PullPage, Failure> {
    // One snapshot for the position checks, the page and `has_more`.
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let select_horizon = tx.prepare_cached(SELECT_HORIZON).await?;
    let horizon = match tx
        .query_opt(&select_horizon, &[&owner, &collection])
        .await?
    {
        Some(row) => SyncId(from_sql(row.try_get(0)?, collection, "horizon")?),
        None => SyncId(0),
    };
    // The naive proof variant keeps no counter, so it cannot tell where the feed ends.
    let head = if from.after.0 > 0 && sync_ids == SyncIdSource::Counter {
        let select_counter = tx.prepare_cached(SELECT_COUNTER).await?;
        let head: i64 = match tx.query_opt(&select_counter, &[&owner]).await? {
            Some(row) => row.try_get(0)?,
            None => 0,
        };
        Some(SyncId(from_sql(head, owner, "counter")?))
    } else {
        None
    };
    let select_epoch = tx.prepare_cached(SELECT_EPOCH).await?;
    let epoch = match tx.query_opt(&select_epoch, &[]).await? {
        Some(row) => Some(from_sql(row.try_get(0)?, "restore_epoch", "epoch")?),
        None => None,
    };
    check_position(from, head, horizon, epoch).map_err(Failure::Position)?;
    let select_page = tx.prepare_cached(SELECT_PAGE).await?;
    let wanted = i64::from(limit) + 1;
    let rows = tx
        .query(
            &select_page,
            &[&owner, &collection, &to_sql(from.after.0), &wanted],
        )
        .await?;
    tx.commit().await?;
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let has_more = rows.len() > limit;
    let items = rows
        .iter()
        .take(limit)
        .map(stored_document)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(PullPage {
        items,
        has_more,
        horizon,
        epoch,
    })
}

async fn digest_in(
    client: deadpool_postgres::Object,
    owner: &str,
    collection: &str,
) -> Result<Digest, Failure> {
    // One statement is one snapshot; rows stream, so memory stays flat for any collection.
    let select_live = client.prepare_cached(SELECT_LIVE).await?;
    let rows = client.query_raw(&select_live, [owner, collection]).await?;
    futures::pin_mut!(rows);
    let mut digest = Digest::default();
    while let Some(row) = rows.try_next().await? {
        let id: &str = row.try_get(0)?;
        digest.add(id, from_sql(row.try_get(1)?, id, "version")?);
    }
    Ok(digest)
}

async fn content_digest_in(
    client: deadpool_postgres::Object,
    owner: &str,
    collection: &str,
) -> Result<ContentDigest, Failure> {
    // As `digest_in`: one statement, one snapshot, rows streamed.
    let select_live = client.prepare_cached(SELECT_LIVE_CONTENT).await?;
    let rows = client.query_raw(&select_live, [owner, collection]).await?;
    futures::pin_mut!(rows);
    let mut digest = ContentDigest::default();
    while let Some(row) = rows.try_next().await? {
        let id: &str = row.try_get(0)?;
        let version = from_sql(row.try_get(1)?, id, "version")?;
        let data: &str = row.try_get(2)?;
        digest
            .add_json(id, version, data)
            .map_err(|error| Failure::Corrupt {
                id: id.to_owned(),
                message: format!("data is not JSON: {error}"),
            })?;
    }
    Ok(digest)
}

/// Runs one of the purge statements ([`PURGE`], [`PURGE_DELETED_BEFORE`]) with its bound.
async fn purge_in(
    mut client: deadpool_postgres::Object,
    statement: &'static str,
    bound: u64,
) -> Result<PurgeReport, Failure> {
    let tx = client.transaction().await?;
    let purge = tx.prepare_cached(statement).await?;
    let row = tx.query_one(&purge, &[&to_sql(bound)]).await?;
    let purged: i64 = row.try_get(0)?;
    let collections: i64 = row.try_get(1)?;
    tx.commit().await?;
    Ok(PurgeReport {
        purged: from_sql(purged, "", "purged count")?,
        collections: from_sql(collections, "", "horizon count")?,
    })
}

/// Deletes one batch of answers recorded before `before`, in a statement of its own.
async fn prune_batch(client: deadpool_postgres::Object, before: Timestamp) -> Result<u64, Failure> {
    let prune = client.prepare_cached(PRUNE_MUTATIONS).await?;
    Ok(client
        .execute(&prune, &[&to_sql(before.0), &PRUNE_BATCH])
        .await?)
}

#[async_trait]
impl Storage for PostgresStorage {
    async fn pull_from(
        &self,
        owner: &UserId,
        collection: &str,
        from: FeedPosition,
        limit: u32,
    ) -> Result<PullPage, StorageError> {
        let client = self.client("pull", collection).await?;
        pull_in(
            client,
            self.inner.sync_ids,
            owner.as_str(),
            collection,
            from,
            limit,
        )
        .await
        .map_err(|failure| failure.into_storage("pull", collection))
    }

    async fn push(
        &self,
        owner: &UserId,
        collection: &str,
        changes: Vec<Change>,
    ) -> Result<PushOutcome, StorageError> {
        let now = self.inner.clock.now();
        let inner = &self.inner;
        let changes = &changes;
        self.write("push", collection, |client| {
            inner.push_in(client, now, owner.as_str(), collection, changes)
        })
        .await
    }

    async fn digest(&self, owner: &UserId, collection: &str) -> Result<Digest, StorageError> {
        let client = self.client("digest", collection).await?;
        digest_in(client, owner.as_str(), collection)
            .await
            .map_err(|failure| failure.into_storage("digest", collection))
    }

    async fn content_digest(
        &self,
        owner: &UserId,
        collection: &str,
    ) -> Result<ContentDigest, StorageError> {
        let client = self.client("content digest", collection).await?;
        content_digest_in(client, owner.as_str(), collection)
            .await
            .map_err(|failure| failure.into_storage("content digest", collection))
    }

    async fn purge_tombstones(&self, before: SyncId) -> Result<PurgeReport, StorageError> {
        self.write("purge tombstones", "", |client| {
            purge_in(client, PURGE, before.0)
        })
        .await
    }

    async fn purge_tombstones_deleted_before(
        &self,
        deleted_before: Timestamp,
    ) -> Result<PurgeReport, StorageError> {
        self.write("purge tombstones", "", |client| {
            purge_in(client, PURGE_DELETED_BEFORE, deleted_before.0)
        })
        .await
    }

    async fn prune_mutations(
        &self,
        recorded_before: Timestamp,
    ) -> Result<PruneReport, StorageError> {
        let mut report = PruneReport::default();
        loop {
            let deleted = self
                .write("prune mutations", "", |client| {
                    prune_batch(client, recorded_before)
                })
                .await?;
            report.pruned += deleted;
            if deleted < PRUNE_BATCH.unsigned_abs() {
                return Ok(report);
            }
        }
    }

    async fn seed(
        &self,
        owner: &UserId,
        collection: &str,
        rows: Vec<SeedRow>,
    ) -> Result<SeedReport, StorageError> {
        let now = self.inner.clock.now();
        let inner = &self.inner;
        let rows = &rows;
        self.write("seed", collection, |client| {
            inner.seed_in(client, now, owner.as_str(), collection, rows)
        })
        .await
    }

    async fn mark_restored(&self) -> Result<u64, StorageError> {
        let mut client = self.client("mark_restored", "").await?;
        let storage = |error: Failure| error.into_storage("mark_restored", "");
        let tx = client.transaction().await.map_err(|e| storage(e.into()))?;
        let old = match tx
            .query_opt(&format!("{SELECT_EPOCH} FOR UPDATE"), &[])
            .await
            .map_err(|e| storage(e.into()))?
        {
            Some(row) => Some(
                from_sql(
                    row.try_get(0).map_err(|e| storage(e.into()))?,
                    "restore_epoch",
                    "epoch",
                )
                .map_err(storage)?,
            ),
            None => None,
        };
        let epoch = new_epoch(old)?;
        tx.execute(SET_EPOCH, &[&to_sql(epoch)])
            .await
            .map_err(|e| storage(e.into()))?;
        tx.commit().await.map_err(|e| storage(e.into()))?;
        tracing::info!(epoch, "marked the database restored: a new restore epoch");
        Ok(epoch)
    }

    async fn ping(&self) -> Result<(), StorageError> {
        let client = self.client("ping", "").await?;
        client
            .simple_query("SELECT 1")
            .await
            .map_err(|error| Failure::from(error).into_storage("ping", ""))?;
        Ok(())
    }

    async fn shared_pull(
        &self,
        access: Arc<dyn Access>,
        collection: &str,
        cursor: Option<SharedCursor>,
        limit: u32,
    ) -> Result<SharedPage, StorageError> {
        let limit = usize::try_from(limit).unwrap_or(usize::MAX).max(1);
        let client = self.client("pull", collection).await?;
        shared::pull_in(
            &self.inner,
            client,
            access.as_ref(),
            collection,
            cursor,
            limit,
        )
        .await
        .map_err(|failure| failure.into_storage("pull", collection))
    }

    async fn shared_readable(
        &self,
        access: Arc<dyn Access>,
    ) -> Result<std::collections::BTreeSet<String>, StorageError> {
        let client = self.client("readable set", "").await?;
        shared::readable_in(client, access.as_ref())
            .await
            .map_err(|failure| failure.into_storage("readable set", ""))
    }

    async fn shared_push(
        &self,
        access: Arc<dyn Access>,
        collection: &str,
        changes: Vec<Change>,
    ) -> Result<SharedPushOutcome, StorageError> {
        let now = self.inner.clock.now();
        let inner = &self.inner;
        let changes = &changes;
        let access = access.as_ref();
        self.write("push", collection, |client| {
            shared::push_in(inner, client, now, access, collection, changes)
        })
        .await
    }

    async fn shared_digest(
        &self,
        access: Arc<dyn Access>,
        collection: &str,
        content: bool,
    ) -> Result<SharedDigest, StorageError> {
        let client = self.client("digest", collection).await?;
        shared::digest_in(client, access.as_ref(), collection, content)
            .await
            .map_err(|failure| failure.into_storage("digest", collection))
    }

    fn pool_use(&self) -> Option<PoolUse> {
        let status = self.inner.pool.status();
        let as_u64 = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        Some(PoolUse {
            in_use: as_u64(status.size.saturating_sub(status.available)),
            idle: as_u64(status.available),
            max: as_u64(status.max_size),
        })
    }
}
