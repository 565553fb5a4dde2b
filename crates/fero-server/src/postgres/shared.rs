//! Shared collections on PostgreSQL: the tables of migration 5, the push that routes rows to
//! buckets, and the [`Snapshot`] the pull algorithm of [`crate::shared`] reads.
//!
//! # How it keeps the guarantees of [`crate::shared`]
//! - **`seq` order is commit order.** A shared collection's counter is a row of
//!   `fero_shared_counters` (not of `fero_counters`: the per-user table's key for it,
//!   [`counter_key`](crate::shared::counter_key), starts with U+0000, which a PostgreSQL `TEXT`
//!   cannot hold). Every push locks it first (`SELECT … FOR UPDATE`) and stores the new value
//!   before `COMMIT`, exactly like the per-user counter: the next writer of the collection reads
//!   it only after the previous one is visible, so a reader that sees `seq` s can already see
//!   every smaller `seq`, and an exit record is visible together with the row move that wrote it.
//! - **One snapshot per page.** A pull runs in a `REPEATABLE READ READ ONLY` transaction: the
//!   user's grants (hence the readable set), the head, the readable sets a cursor names and every
//!   row of the page read one snapshot.
//! - **Sets are stored before a cursor naming them is handed out**, in a statement of its own
//!   after the read transaction (a cache of hashes known to be stored skips it most of the time).
//! - **Notices.** A push that wrote rows sends, before it commits, one notice per bucket that
//!   gained or lost a row (user [`bucket_key`]) and one per user whose grants changed (the user's
//!   own key), as the in-process path does.

use std::collections::BTreeSet;

use fero::{SyncId, Timestamp};
use fero_protocol::{Change, ChangeOutcome, ChangeResult, ContentDigest, Digest};
use futures::TryStreamExt;
use tokio_postgres::IsolationLevel;
use tokio_postgres::types::ToSql;

use super::{
    Failure, Inner, SELECT_EPOCH, document, from_sql, notify, record_answer, replay_answer_of,
    stored_document,
};
use crate::error::StorageError;
use crate::shared::{
    Access, Candidate, CursorKey, Decision, FeedEntry, SharedCursor, SharedDigest, SharedPage,
    SharedPushOutcome, SharedRow, Snapshot, StoredState, accepted, bucket_key, decide, pull_page,
};
use crate::storage::{PushOutcome, seq_key, to_sql};

/// Migration 5: the shared-collection tables. Same model as SQLite's: a row lives in one
/// bucket; `seq` comes from the collection's row of `fero_shared_counters`; an exit records that
/// a row left a bucket; grants come from the membership collection's rows; sets are the readable
/// sets cursors name by hash. Ids are compared bytewise (`COLLATE "C"`), so the move-out's id
/// order never depends on the database's locale. The tables are new and empty, so their indexes
/// are built inside the migration.
pub(super) const SHARED_MIGRATION: &str = r#"
CREATE TABLE fero_shared_rows (
    collection TEXT    NOT NULL,
    id         TEXT    COLLATE "C" NOT NULL,
    bucket     TEXT    NOT NULL,
    version    BIGINT  NOT NULL,
    seq        BIGINT  NOT NULL,
    updated_at BIGINT  NOT NULL,
    deleted    BOOLEAN NOT NULL DEFAULT FALSE,
    data       TEXT    NOT NULL,
    entered    BIGINT  NOT NULL,
    PRIMARY KEY (collection, id)
);
CREATE INDEX fero_shared_rows_bucket ON fero_shared_rows (collection, bucket, seq);
CREATE INDEX fero_shared_rows_seq ON fero_shared_rows (collection, seq);
CREATE TABLE fero_shared_exits (
    collection TEXT   NOT NULL,
    bucket     TEXT   NOT NULL,
    seq        BIGINT NOT NULL,
    id         TEXT   COLLATE "C" NOT NULL,
    at         BIGINT NOT NULL,
    entered    BIGINT NOT NULL,
    PRIMARY KEY (collection, bucket, seq, id)
);
CREATE INDEX fero_shared_exits_seq ON fero_shared_exits (collection, seq);
CREATE TABLE fero_shared_grants (
    collection TEXT NOT NULL,
    id         TEXT NOT NULL,
    member     TEXT NOT NULL,
    bucket     TEXT NOT NULL,
    PRIMARY KEY (collection, id)
);
CREATE INDEX fero_shared_grants_member ON fero_shared_grants (member);
CREATE TABLE fero_shared_sets (
    hash    TEXT NOT NULL PRIMARY KEY,
    buckets TEXT NOT NULL
);
CREATE TABLE fero_shared_key (
    id  INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    key BYTEA   NOT NULL
);
CREATE TABLE fero_shared_counters (
    collection TEXT   NOT NULL PRIMARY KEY,
    value      BIGINT NOT NULL
);
"#;

const LOCK_COUNTER: &str =
    "SELECT value FROM fero_shared_counters WHERE collection = $1 FOR UPDATE";
const CREATE_COUNTER: &str = "INSERT INTO fero_shared_counters (collection, value) VALUES ($1, 0)
     ON CONFLICT (collection) DO NOTHING";
const STORE_COUNTER: &str = "UPDATE fero_shared_counters SET value = $2 WHERE collection = $1";
const SELECT_COUNTER: &str = "SELECT value FROM fero_shared_counters WHERE collection = $1";
/// The stored row a change overwrites, locked (the counter lock already serialises the
/// collection's writers; the row lock keeps that true should a writer ever skip the counter).
const SELECT_ROW_FOR_UPDATE: &str =
    "SELECT id, seq, version, updated_at, deleted, data, bucket FROM fero_shared_rows
     WHERE collection = $1 AND id = $2 FOR UPDATE";
/// `entered` is the `seq` at which the row entered its bucket: kept by a write that leaves the
/// row in its bucket, renewed by one that moves it.
const UPSERT_ROW: &str = "INSERT INTO fero_shared_rows
         (collection, id, bucket, version, seq, updated_at, deleted, data, entered)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $5)
     ON CONFLICT (collection, id) DO UPDATE SET bucket = excluded.bucket,
         version = excluded.version, seq = excluded.seq, updated_at = excluded.updated_at,
         deleted = excluded.deleted, data = excluded.data,
         entered = CASE WHEN fero_shared_rows.bucket = excluded.bucket
                        THEN fero_shared_rows.entered ELSE excluded.entered END";
/// The exit of row `$4` from its bucket `$2` at `$3`, with the `seq` at which it had entered
/// that bucket; run before the row is overwritten.
const INSERT_EXIT: &str = "INSERT INTO fero_shared_exits (collection, bucket, seq, id, at, entered)
     SELECT $1, $2, $3, $4, $5, entered FROM fero_shared_rows WHERE collection = $1 AND id = $4
     ON CONFLICT DO NOTHING";
const SELECT_GRANT: &str =
    "SELECT member FROM fero_shared_grants WHERE collection = $1 AND id = $2";
const DELETE_GRANT: &str = "DELETE FROM fero_shared_grants WHERE collection = $1 AND id = $2";
const INSERT_GRANT: &str =
    "INSERT INTO fero_shared_grants (collection, id, member, bucket) VALUES ($1, $2, $3, $4)";
const SELECT_GRANTS: &str = "SELECT DISTINCT bucket FROM fero_shared_grants WHERE member = $1";
const SELECT_SET: &str = "SELECT buckets FROM fero_shared_sets WHERE hash = $1";
/// Stores readable sets (hashes `$1`, JSON lists `$2`) in one statement; a set stored already is
/// left alone (its hash names the same buckets).
const INSERT_SETS: &str = "INSERT INTO fero_shared_sets (hash, buckets)
     SELECT * FROM UNNEST($1::TEXT[], $2::TEXT[]) ON CONFLICT (hash) DO NOTHING";
/// The rows of the buckets `$2` with `seq` above `$3`, in `seq` order. The feed reads rows and
/// exits apart and merges them (a row before the exit of its own move, which has its `seq`):
/// each query alone can walk an index in `seq` order and stop after `$4` matches, where one
/// `UNION ALL … ORDER BY seq, kind` made PostgreSQL read and sort every row after `$3` for each
/// page (a pull of a large readable set took time quadratic in its rows).
const SELECT_FEED_ROWS: &str =
    "SELECT id, seq, version, updated_at, deleted, data, bucket FROM fero_shared_rows
     WHERE collection = $1 AND bucket = ANY($2::TEXT[]) AND seq > $3
     ORDER BY seq LIMIT $4";
/// The exits from the buckets `$2` after `$3`, in `seq` order, with the row's bucket, version
/// and `seq` now.
const SELECT_FEED_EXITS: &str = "SELECT e.id, e.seq, e.at, c.bucket, c.version, c.seq
       FROM fero_shared_exits e
       LEFT JOIN fero_shared_rows c ON c.collection = e.collection AND c.id = e.id
      WHERE e.collection = $1 AND e.bucket = ANY($2::TEXT[]) AND e.seq > $3
      ORDER BY e.seq LIMIT $4";
const SELECT_BUCKET_ROWS: &str =
    "SELECT id, seq, version, updated_at, deleted, data, bucket FROM fero_shared_rows
     WHERE collection = $1 AND bucket = $2 AND seq > $3 AND NOT deleted
     ORDER BY seq LIMIT $4";
/// Rows in the buckets `$2` now, or that left them after `$3`, that entered the bucket at or
/// before `$6` (the highest position the device may have received), with id above `$4`, in id
/// order: what the device may hold of them. A row that entered later never reached the device
/// and is not named to it.
const SELECT_CANDIDATES: &str = "WITH ids(id) AS (
         SELECT id FROM fero_shared_rows
          WHERE collection = $1 AND bucket = ANY($2::TEXT[]) AND entered <= $6 AND id > $4
         UNION
         SELECT id FROM fero_shared_exits
          WHERE collection = $1 AND bucket = ANY($2::TEXT[]) AND seq > $3 AND entered <= $6
            AND id > $4)
     SELECT ids.id, r.bucket, r.version, r.seq, r.updated_at
       FROM ids LEFT JOIN fero_shared_rows r ON r.collection = $1 AND r.id = ids.id
      ORDER BY ids.id LIMIT $5";
const SELECT_READABLE_LIVE: &str = "SELECT id, version, data FROM fero_shared_rows
     WHERE collection = $1 AND NOT deleted AND bucket = ANY($2::TEXT[])";

fn to_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

fn bucket_list(set: &BTreeSet<String>) -> Vec<&str> {
    set.iter().map(String::as_str).collect()
}

/// The refusal of the rules as the storage error of a pull or digest.
fn rules_error(collection: &str, refusal: &crate::shared::Refusal) -> Failure {
    Failure::Done(StorageError::Rules {
        collection: collection.to_owned(),
        message: refusal.message().to_owned(),
    })
}

/// A row of `SELECT id, seq, version, updated_at, deleted, data, bucket`.
fn shared_row(row: &tokio_postgres::Row) -> Result<SharedRow, Failure> {
    Ok(SharedRow {
        doc: stored_document(row)?,
        bucket: row.try_get(6)?,
    })
}

/// The buckets the membership rows grant `user`.
async fn grants_of(
    client: &impl deadpool_postgres::GenericClient,
    user: &str,
) -> Result<Vec<String>, Failure> {
    let statement = client.prepare_cached(SELECT_GRANTS).await?;
    let rows = client.query(&statement, &[&user]).await?;
    rows.iter()
        .map(|row| row.try_get(0).map_err(Failure::from))
        .collect()
}

/// The pull's read transaction, as the algorithm's [`Snapshot`].
struct PgSnapshot<'a> {
    tx: &'a deadpool_postgres::Transaction<'a>,
    collection: &'a str,
}

impl PgSnapshot<'_> {
    fn fail(&self, failure: impl Into<Failure>) -> StorageError {
        failure.into().into_storage("pull", self.collection)
    }

    async fn read_feed(
        &self,
        collection: &str,
        buckets: &BTreeSet<String>,
        after: u64,
        limit: usize,
    ) -> Result<Vec<FeedEntry>, Failure> {
        let buckets = bucket_list(buckets);
        let params: [&(dyn ToSql + Sync); 4] =
            [&collection, &buckets, &to_sql(after), &to_limit(limit)];
        let select_rows = self.tx.prepare_cached(SELECT_FEED_ROWS).await?;
        let rows = self.tx.query(&select_rows, &params).await?;
        let select_exits = self.tx.prepare_cached(SELECT_FEED_EXITS).await?;
        let exits = self.tx.query(&select_exits, &params).await?;
        // The first `limit` entries of the merge lie within the first `limit` of each list.
        let mut entries = Vec::with_capacity(limit.min(rows.len() + exits.len()));
        let mut rows = rows.iter().peekable();
        let mut exits = exits.iter().peekable();
        while entries.len() < limit {
            let take_row = match (rows.peek(), exits.peek()) {
                (None, None) => break,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                // At one `seq` the row comes first: it is the write that made the exit.
                (Some(row), Some(exit)) => {
                    row.try_get::<_, i64>(1)? <= exit.try_get::<_, i64>(1)?
                }
            };
            if take_row {
                if let Some(row) = rows.next() {
                    entries.push(FeedEntry::Row(shared_row(row)?));
                }
            } else if let Some(exit) = exits.next() {
                let id: String = exit.try_get(0)?;
                let version: Option<i64> = exit.try_get(4)?;
                let current_seq: Option<i64> = exit.try_get(5)?;
                entries.push(FeedEntry::Exit {
                    seq: from_sql(exit.try_get(1)?, &id, "seq")?,
                    at: from_sql(exit.try_get(2)?, &id, "at")?,
                    version: from_sql(version.unwrap_or(0), &id, "version")?,
                    current: exit.try_get(3)?,
                    current_seq: from_sql(current_seq.unwrap_or(0), &id, "seq")?,
                    id,
                });
            }
        }
        Ok(entries)
    }

    async fn read_candidates(
        &self,
        collection: &str,
        buckets: &BTreeSet<String>,
        since: u64,
        reach: u64,
        after_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Candidate>, Failure> {
        let statement = self.tx.prepare_cached(SELECT_CANDIDATES).await?;
        let rows = self
            .tx
            .query(
                &statement,
                &[
                    &collection,
                    &bucket_list(buckets),
                    &to_sql(since),
                    &after_id.unwrap_or(""),
                    &to_limit(limit),
                    &to_sql(reach),
                ],
            )
            .await?;
        let mut found = Vec::with_capacity(rows.len());
        for row in rows {
            let id: String = row.try_get(0)?;
            let number = |index: usize, what: &str| -> Result<u64, Failure> {
                let value: Option<i64> = row.try_get(index)?;
                from_sql(value.unwrap_or(0), &id, what)
            };
            found.push(Candidate {
                current: row.try_get(1)?,
                version: number(2, "version")?,
                seq: number(3, "seq")?,
                updated_at: number(4, "updated_at")?,
                id,
            });
        }
        Ok(found)
    }
}

impl Snapshot for PgSnapshot<'_> {
    async fn grants(&mut self, user: &str) -> Result<Vec<String>, StorageError> {
        grants_of(self.tx, user).await.map_err(|f| self.fail(f))
    }

    async fn head(&mut self, collection: &str) -> Result<u64, StorageError> {
        let read = async {
            let statement = self.tx.prepare_cached(SELECT_COUNTER).await?;
            let head: i64 = match self.tx.query_opt(&statement, &[&collection]).await? {
                Some(row) => row.try_get(0)?,
                None => 0,
            };
            from_sql(head, collection, "counter")
        };
        read.await.map_err(|f| self.fail(f))
    }

    async fn epoch(&mut self) -> Result<Option<u64>, StorageError> {
        let read = async {
            let statement = self.tx.prepare_cached(SELECT_EPOCH).await?;
            match self.tx.query_opt(&statement, &[]).await? {
                Some(row) => Ok(Some(from_sql(row.try_get(0)?, "restore_epoch", "epoch")?)),
                None => Ok(None),
            }
        };
        read.await.map_err(|f: Failure| self.fail(f))
    }

    async fn set(&mut self, hash: &str) -> Result<Option<BTreeSet<String>>, StorageError> {
        let read = async {
            let statement = self.tx.prepare_cached(SELECT_SET).await?;
            let Some(row) = self.tx.query_opt(&statement, &[&hash]).await? else {
                return Ok(None);
            };
            let text: &str = row.try_get(0)?;
            serde_json::from_str(text)
                .map(Some)
                .map_err(|error| Failure::Corrupt {
                    id: format!("set {hash}"),
                    message: format!("stored readable set is not a JSON list: {error}"),
                })
        };
        read.await.map_err(|f: Failure| self.fail(f))
    }

    async fn feed(
        &mut self,
        collection: &str,
        buckets: &BTreeSet<String>,
        after: u64,
        limit: usize,
    ) -> Result<Vec<FeedEntry>, StorageError> {
        self.read_feed(collection, buckets, after, limit)
            .await
            .map_err(|f| self.fail(f))
    }

    async fn bucket_rows(
        &mut self,
        collection: &str,
        bucket: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<SharedRow>, StorageError> {
        let read = async {
            let statement = self.tx.prepare_cached(SELECT_BUCKET_ROWS).await?;
            let rows = self
                .tx
                .query(
                    &statement,
                    &[&collection, &bucket, &to_sql(after), &to_limit(limit)],
                )
                .await?;
            rows.iter().map(shared_row).collect::<Result<Vec<_>, _>>()
        };
        read.await.map_err(|f| self.fail(f))
    }

    async fn candidates(
        &mut self,
        collection: &str,
        buckets: &BTreeSet<String>,
        since: u64,
        reach: u64,
        after_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Candidate>, StorageError> {
        self.read_candidates(collection, buckets, since, reach, after_id, limit)
            .await
            .map_err(|f| self.fail(f))
    }
}

/// One page of the shared `collection` for `access`'s user; see
/// [`Storage::shared_pull`](crate::Storage::shared_pull).
pub(super) async fn pull_in(
    inner: &Inner,
    mut client: deadpool_postgres::Object,
    access: &dyn Access,
    collection: &str,
    cursor: Option<SharedCursor>,
    limit: usize,
) -> Result<SharedPage, Failure> {
    let page = {
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        let mut snapshot = PgSnapshot {
            tx: &tx,
            collection,
        };
        let page = pull_page(
            &mut snapshot,
            &inner.cursor_key,
            access,
            collection,
            cursor,
            limit,
        )
        .await
        .map_err(Failure::Done)?;
        tx.commit().await?;
        page
    };
    // The sets the cursor names are stored before the cursor is handed out.
    let unknown = inner.known_sets.unknown(&page.new_sets);
    if !unknown.is_empty() {
        let hashes: Vec<&str> = unknown.iter().map(|(hash, _)| hash.as_str()).collect();
        let lists: Vec<&str> = unknown.iter().map(|(_, list)| list.as_str()).collect();
        let statement = client.prepare_cached(INSERT_SETS).await?;
        client.execute(&statement, &[&hashes, &lists]).await?;
        inner.known_sets.record(&unknown);
    }
    Ok(page)
}

/// Hands out the `seq`s of one shared collection inside one write transaction: its counter row,
/// locked until commit.
struct SeqCounter {
    start: i64,
    last: i64,
}

impl SeqCounter {
    /// Locks `collection`'s counter row (creating it at 0 the first time). Every writer of the
    /// collection waits here until the previous one committed.
    async fn lock(
        tx: &deadpool_postgres::Transaction<'_>,
        collection: &str,
    ) -> Result<SeqCounter, Failure> {
        let lock = tx.prepare_cached(LOCK_COUNTER).await?;
        let value: i64 = match tx.query_opt(&lock, &[&collection]).await? {
            Some(row) => row.try_get(0)?,
            None => {
                let create = tx.prepare_cached(CREATE_COUNTER).await?;
                tx.execute(&create, &[&collection]).await?;
                tx.query_one(&lock, &[&collection]).await?.try_get(0)?
            }
        };
        Ok(SeqCounter {
            start: value,
            last: value,
        })
    }

    async fn store(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        collection: &str,
    ) -> Result<(), Failure> {
        if self.last != self.start {
            let store = tx.prepare_cached(STORE_COUNTER).await?;
            tx.execute(&store, &[&collection, &self.last]).await?;
        }
        Ok(())
    }
}

/// Writes `changes` to the shared `collection`, routed by `access`, in one transaction; see
/// [`Storage::shared_push`](crate::Storage::shared_push).
pub(super) async fn push_in(
    inner: &Inner,
    mut client: deadpool_postgres::Object,
    now: Timestamp,
    access: &dyn Access,
    collection: &str,
    changes: &[Change],
) -> Result<SharedPushOutcome, Failure> {
    let tx = client.transaction().await?;
    // First the lock: from here on this transaction sees every earlier write of the collection
    // (its rows, and its replays' answers), and its `seq`s follow theirs.
    let mut counter = SeqCounter::lock(&tx, collection).await?;
    let user = access.user().as_str();
    let readable = access.readable(&grants_of(&tx, user).await?);
    let membership = access.is_membership(collection);
    let updated_at = to_sql(now.0);
    let mut touched = BTreeSet::new();
    let mut regranted = BTreeSet::new();
    let mut last_written = None;
    let mut results = Vec::with_capacity(changes.len());
    for change in changes {
        let seq = seq_key(change.mutation_id.seq);
        if let Some(answer) = replay_answer_of(&tx, user, change, collection, seq).await? {
            results.push(answer);
            continue;
        }
        let select_row = tx.prepare_cached(SELECT_ROW_FOR_UPDATE).await?;
        let current = tx
            .query_opt(&select_row, &[&collection, &change.id])
            .await?;
        let current_state = current
            .as_ref()
            .map(|row| -> Result<_, Failure> {
                let bucket: String = row.try_get(6)?;
                let data: String = row.try_get(5)?;
                let deleted: bool = row.try_get(4)?;
                let version = from_sql(row.try_get(2)?, &change.id, "version")?;
                Ok((bucket, data, deleted, version))
            })
            .transpose()?;
        let stored = current_state
            .as_ref()
            .map(|(bucket, data, deleted, version)| StoredState {
                bucket,
                data,
                deleted: *deleted,
                version: *version,
            });
        let write = match decide(access, collection, &readable, change, stored) {
            Decision::Rejected(answer) => {
                results.push(answer);
                continue;
            }
            Decision::Conflict => {
                let server = current.as_ref().map(document).transpose()?;
                results.push(ChangeResult {
                    id: change.id.clone(),
                    mutation_id: change.mutation_id.clone(),
                    outcome: ChangeOutcome::Conflict { server },
                });
                continue;
            }
            Decision::Write(write) => write,
        };
        counter.last += 1;
        let next = counter.last;
        if let Some(old) = write.moved_from {
            let insert_exit = tx.prepare_cached(INSERT_EXIT).await?;
            tx.execute(
                &insert_exit,
                &[&collection, &old, &next, &change.id, &updated_at],
            )
            .await?;
            touched.insert(old);
        }
        let upsert = tx.prepare_cached(UPSERT_ROW).await?;
        tx.execute(
            &upsert,
            &[
                &collection,
                &change.id,
                &write.bucket,
                &to_sql(write.version),
                &next,
                &updated_at,
                &change.deleted,
                &write.data,
            ],
        )
        .await?;
        touched.insert(write.bucket);
        if membership {
            let select_grant = tx.prepare_cached(SELECT_GRANT).await?;
            if let Some(row) = tx
                .query_opt(&select_grant, &[&collection, &change.id])
                .await?
            {
                regranted.insert(row.try_get::<_, String>(0)?);
            }
            let delete_grant = tx.prepare_cached(DELETE_GRANT).await?;
            tx.execute(&delete_grant, &[&collection, &change.id])
                .await?;
            if let Some((member, bucket)) = write.grant {
                let insert_grant = tx.prepare_cached(INSERT_GRANT).await?;
                tx.execute(&insert_grant, &[&collection, &change.id, &member, &bucket])
                    .await?;
                regranted.insert(member);
            }
        }
        let sync_id = SyncId(from_sql(next, &change.id, "seq")?);
        let result = accepted(change, write.version, sync_id);
        record_answer(&tx, now, user, collection, seq, &result).await?;
        last_written = Some(sync_id);
        results.push(result);
    }
    if let Some(sync_id) = last_written {
        counter.store(&tx, collection).await?;
        let sync_id = to_sql(sync_id.0);
        for bucket in &touched {
            notify(&tx, bucket_key(bucket).as_str(), collection, sync_id).await?;
        }
        for member in &regranted {
            notify(&tx, member, collection, sync_id).await?;
        }
        inner.before_commit().await;
    }
    tx.commit().await?;
    Ok(SharedPushOutcome {
        outcome: PushOutcome {
            results,
            last_written,
        },
        touched,
        regranted,
    })
}

/// The digest of the live rows of `collection` whose bucket `access`'s user may read: the
/// grants and the rows read in one snapshot, the rows streamed.
pub(super) async fn digest_in(
    mut client: deadpool_postgres::Object,
    access: &dyn Access,
    collection: &str,
    content: bool,
) -> Result<SharedDigest, Failure> {
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let readable = access
        .readable(&grants_of(&tx, access.user().as_str()).await?)
        .map_err(|refusal| rules_error(collection, &refusal))?;
    let buckets = bucket_list(&readable);
    let statement = tx.prepare_cached(SELECT_READABLE_LIVE).await?;
    let params: [&(dyn ToSql + Sync); 2] = [&collection, &buckets];
    let mut v1 = Digest::default();
    let mut v2 = ContentDigest::default();
    {
        let rows = tx.query_raw(&statement, params).await?;
        futures::pin_mut!(rows);
        while let Some(row) = rows.try_next().await? {
            let id: &str = row.try_get(0)?;
            let version = from_sql(row.try_get(1)?, id, "version")?;
            if content {
                let data: &str = row.try_get(2)?;
                v2.add_json(id, version, data)
                    .map_err(|error| Failure::Corrupt {
                        id: id.to_owned(),
                        message: format!("data is not JSON: {error}"),
                    })?;
            } else {
                v1.add(id, version);
            }
        }
    }
    tx.commit().await?;
    Ok(if content {
        SharedDigest::V2(v2)
    } else {
        SharedDigest::V1(v1)
    })
}

/// The readable set of `access`'s user, from the grants in one statement.
pub(super) async fn readable_in(
    client: deadpool_postgres::Object,
    access: &dyn Access,
) -> Result<BTreeSet<String>, Failure> {
    let grants = grants_of(&client, access.user().as_str()).await?;
    access
        .readable(&grants)
        .map_err(|refusal| rules_error("", &refusal))
}

/// The database's cursor key ([`CursorKey`]), drawn from the operating system's random source by
/// the first process that connects; a process that connects at the same time reads the winner's.
pub(super) async fn cursor_key(
    client: &impl deadpool_postgres::GenericClient,
) -> Result<CursorKey, String> {
    let fresh = CursorKey::random().map_err(|e| e.to_string())?;
    client
        .execute(
            "INSERT INTO fero_shared_key (id, key) VALUES (1, $1) ON CONFLICT (id) DO NOTHING",
            &[&fresh.as_slice()],
        )
        .await
        .map_err(|e| format!("cannot store the cursor key: {e}"))?;
    let row = client
        .query_one("SELECT key FROM fero_shared_key WHERE id = 1", &[])
        .await
        .map_err(|e| format!("cannot read the cursor key: {e}"))?;
    let stored: Vec<u8> = row
        .try_get(0)
        .map_err(|e| format!("cannot read the cursor key: {e}"))?;
    CursorKey::from_bytes(&stored).ok_or_else(|| {
        format!(
            "the stored cursor key is {} bytes, not {}; the database was changed outside the \
             server",
            stored.len(),
            CursorKey::LEN
        )
    })
}
