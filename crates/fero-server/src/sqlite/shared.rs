//! Shared collections on SQLite: the tables of schema version 5, the push that routes rows to
//! buckets, and the [`Snapshot`] the pull algorithm of [`crate::shared`] reads.

use std::collections::BTreeSet;

use fero::{SyncId, Timestamp};
use fero_protocol::{Change, ChangeOutcome, ChangeResult, ContentDigest, Digest};
use rusqlite::{Connection, OptionalExtension, params};

use super::{Failure, StoredRow, from_sql, read_epoch, replay_answer_of, to_sql};
use crate::error::StorageError;
use crate::shared::{
    Access, Candidate, CursorKey, Decision, FeedEntry, SharedDigest, SharedRow, Snapshot,
    StoredState, accepted, bucket_json, counter_key, decide,
};
use crate::storage::{PushOutcome, seq_key};

/// `shared_rows` (schema version 6), for [`SHARED_SCHEMA`] and [`CLUSTER_SHARED_ROWS`].
macro_rules! shared_rows_table {
    () => {
        "CREATE TABLE IF NOT EXISTS shared_rows (
    collection TEXT    NOT NULL,
    bucket     TEXT    NOT NULL,
    seq        INTEGER NOT NULL,
    id         TEXT    NOT NULL,
    version    INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    deleted    INTEGER NOT NULL DEFAULT 0,
    data       TEXT    NOT NULL,
    entered    INTEGER NOT NULL,
    PRIMARY KEY (collection, bucket, seq),
    UNIQUE (collection, id)
) WITHOUT ROWID;
"
    };
}

/// The shared-collection tables (schema version 6); `shared_key` holds the key that signs
/// cursors ([`CursorKey`]), drawn when the database is opened first. A row lives in one bucket;
/// `seq` comes from the collection's counter (`counters`, key [`counter_key`]); an exit records
/// that a row left a bucket; grants come from the membership collection's rows; sets are the
/// readable sets cursors name by hash.
///
/// `shared_rows` is clustered by `(collection, bucket, seq)` (`WITHOUT ROWID`): a bucket's rows
/// lie together in the file, in feed order, so a pull reads a few pages per bucket however the
/// writers of other buckets interleaved with it. In a rowid table (schema version 5) each row
/// of a bucket sat on its own page among the other buckets' rows, and a device in 3 of 1,000
/// teams read about one page per row: 4x the private feed's time for the same rows.
pub(super) const SHARED_SCHEMA: &str = concat!(
    shared_rows_table!(),
    "CREATE TABLE IF NOT EXISTS shared_exits (
    collection TEXT    NOT NULL,
    bucket     TEXT    NOT NULL,
    seq        INTEGER NOT NULL,
    id         TEXT    NOT NULL,
    at         INTEGER NOT NULL,
    entered    INTEGER NOT NULL,
    PRIMARY KEY (collection, bucket, seq, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS shared_grants (
    collection TEXT NOT NULL,
    id         TEXT NOT NULL,
    member     TEXT NOT NULL,
    bucket     TEXT NOT NULL,
    PRIMARY KEY (collection, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS shared_grants_member ON shared_grants (member);
CREATE TABLE IF NOT EXISTS shared_key (
    id  INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    key BLOB    NOT NULL
);
CREATE TABLE IF NOT EXISTS shared_sets (
    hash    TEXT NOT NULL PRIMARY KEY,
    buckets TEXT NOT NULL
) WITHOUT ROWID;
"
);

/// Schema version 5 to 6: `shared_rows` rewritten clustered by bucket, in the caller's
/// transaction: the old table is renamed (its index goes with it), the clustered one created,
/// the rows copied in bucket order, the old table dropped. Nothing else changes: positions,
/// cursors and exits stay valid.
pub(super) const CLUSTER_SHARED_ROWS: &str = concat!(
    "ALTER TABLE shared_rows RENAME TO shared_rows_v5;
",
    shared_rows_table!(),
    "INSERT INTO shared_rows (collection, bucket, seq, id, version, updated_at, deleted, data, entered)
    SELECT collection, bucket, seq, id, version, updated_at, deleted, data, entered
      FROM shared_rows_v5 ORDER BY collection, bucket, seq;
DROP TABLE shared_rows_v5;
"
);

const SELECT_ROW: &str = "SELECT id, seq, version, updated_at, deleted, data, bucket
     FROM shared_rows WHERE collection = ?1 AND id = ?2";
/// `entered` is the `seq` at which the row entered its bucket: kept by a write that leaves the
/// row in its bucket, renewed by one that moves it.
const UPSERT_ROW: &str =
    "INSERT INTO shared_rows (collection, id, bucket, version, seq, updated_at, deleted, data,
         entered)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?5)
     ON CONFLICT (collection, id) DO UPDATE SET bucket = excluded.bucket,
         version = excluded.version, seq = excluded.seq, updated_at = excluded.updated_at,
         deleted = excluded.deleted, data = excluded.data,
         entered = CASE WHEN shared_rows.bucket = excluded.bucket THEN shared_rows.entered
                        ELSE excluded.entered END";
/// The exit of row `?4` from its bucket `?2` at `?3`, with the `seq` at which it had entered
/// that bucket; run before the row is overwritten.
const INSERT_EXIT: &str =
    "INSERT OR IGNORE INTO shared_exits (collection, bucket, seq, id, at, entered)
     SELECT ?1, ?2, ?3, ?4, ?5, entered FROM shared_rows WHERE collection = ?1 AND id = ?4";
const SELECT_GRANT: &str = "SELECT member FROM shared_grants WHERE collection = ?1 AND id = ?2";
const DELETE_GRANT: &str = "DELETE FROM shared_grants WHERE collection = ?1 AND id = ?2";
const INSERT_GRANT: &str =
    "INSERT INTO shared_grants (collection, id, member, bucket) VALUES (?1, ?2, ?3, ?4)";
const SELECT_GRANTS: &str = "SELECT DISTINCT bucket FROM shared_grants WHERE member = ?1";
const SELECT_COUNTER: &str = "SELECT value FROM counters WHERE owner = ?1";
const UPSERT_COUNTER: &str = "INSERT INTO counters (owner, value) VALUES (?1, ?2)
     ON CONFLICT (owner) DO UPDATE SET value = excluded.value";
const SELECT_SET: &str = "SELECT buckets FROM shared_sets WHERE hash = ?1";
const INSERT_SET: &str = "INSERT OR IGNORE INTO shared_sets (hash, buckets) VALUES (?1, ?2)";
/// One bucket's rows after `?3`, in `seq` order, read lazily (as far as a merge consumes).
const SELECT_BUCKET_FEED: &str = "SELECT id, seq, version, updated_at, deleted, data, bucket
     FROM shared_rows WHERE collection = ?1 AND bucket = ?2 AND seq > ?3 ORDER BY seq";
/// The rows of a set of buckets (`?2`, a JSON array) after `?3`, sorted, at most `?4`: for a
/// readable set too large to merge bucket by bucket.
const SELECT_SET_FEED: &str = "SELECT id, seq, version, updated_at, deleted, data, bucket
     FROM shared_rows
     WHERE collection = ?1 AND bucket IN (SELECT value FROM json_each(?2)) AND seq > ?3
     ORDER BY seq LIMIT ?4";
/// The exits from a set of buckets after `?3`, with the row's bucket now, in `seq` order.
const SELECT_EXITS: &str = "SELECT e.seq, e.id, c.bucket, c.version, e.at, c.seq
       FROM shared_exits e
       LEFT JOIN shared_rows c ON c.collection = e.collection AND c.id = e.id
      WHERE e.collection = ?1 AND e.bucket IN (SELECT value FROM json_each(?2)) AND e.seq > ?3
      ORDER BY e.seq LIMIT ?4";
/// Readable sets up to this size are read by merging one lazy, index-ordered scan per bucket
/// (a page reads `limit` rows plus one per bucket, whatever the other buckets hold); larger ones
/// by one sorted query.
const MERGED_BUCKETS: usize = 256;
const SELECT_BUCKET_ROWS: &str = "SELECT id, seq, version, updated_at, deleted, data, bucket
     FROM shared_rows WHERE collection = ?1 AND bucket = ?2 AND seq > ?3 AND deleted = 0
     ORDER BY seq LIMIT ?4";
/// Rows in the buckets `?2` now, or that left them after `?3`, that entered the bucket at or
/// before `?6` (the highest position the device may have received), with id above `?4`, in id
/// order: what the device may hold of them. A row that entered later never reached the device
/// and is not named to it.
const SELECT_CANDIDATES: &str = "WITH d(bucket) AS (SELECT value FROM json_each(?2)),
     ids(id) AS (
         SELECT id FROM shared_rows
          WHERE collection = ?1 AND bucket IN (SELECT bucket FROM d) AND entered <= ?6
            AND id > ?4
         UNION
         SELECT id FROM shared_exits
          WHERE collection = ?1 AND bucket IN (SELECT bucket FROM d) AND seq > ?3
            AND entered <= ?6 AND id > ?4)
     SELECT ids.id, r.bucket, r.version, r.seq, r.updated_at
       FROM ids LEFT JOIN shared_rows r ON r.collection = ?1 AND r.id = ids.id
      ORDER BY ids.id LIMIT ?5";
const SELECT_READABLE_LIVE: &str = "SELECT id, version, data FROM shared_rows
     WHERE collection = ?1 AND deleted = 0 AND bucket IN (SELECT value FROM json_each(?2))";

fn to_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

impl StoredRow {
    /// A shared row: the [`StoredRow`] columns, then its bucket.
    fn read_shared(row: &rusqlite::Row<'_>) -> rusqlite::Result<(StoredRow, String)> {
        Ok((StoredRow::read(row)?, row.get(6)?))
    }
}

fn shared_row((row, bucket): (StoredRow, String)) -> Result<SharedRow, Failure> {
    Ok(SharedRow {
        doc: row.into_stored()?,
        bucket,
    })
}

/// The buckets the membership rows grant `user`.
fn grants_of(conn: &Connection, user: &str) -> Result<Vec<String>, Failure> {
    let mut statement = conn.prepare_cached(SELECT_GRANTS)?;
    let grants = statement
        .query_map(params![user], |row| row.get(0))?
        .collect::<Result<Vec<String>, _>>()?;
    Ok(grants)
}

/// The pull's read transaction, as the algorithm's [`Snapshot`].
pub(super) struct SqliteSnapshot<'a> {
    pub(super) tx: &'a rusqlite::Transaction<'a>,
    pub(super) collection: &'a str,
}

impl SqliteSnapshot<'_> {
    fn fail(&self, failure: impl Into<Failure>) -> StorageError {
        failure.into().into_storage("pull", self.collection)
    }
}

impl Snapshot for SqliteSnapshot<'_> {
    async fn grants(&mut self, user: &str) -> Result<Vec<String>, StorageError> {
        grants_of(self.tx, user).map_err(|f| self.fail(f))
    }

    async fn head(&mut self, collection: &str) -> Result<u64, StorageError> {
        let head: Option<i64> = self
            .tx
            .prepare_cached(SELECT_COUNTER)
            .and_then(|mut s| {
                s.query_row(params![counter_key(collection)], |row| row.get(0))
                    .optional()
            })
            .map_err(|e| self.fail(e))?;
        from_sql(head.unwrap_or(0), collection, "counter").map_err(|f| self.fail(f))
    }

    async fn epoch(&mut self) -> Result<Option<u64>, StorageError> {
        read_epoch(self.tx).map_err(|f| self.fail(f))
    }

    async fn set(&mut self, hash: &str) -> Result<Option<BTreeSet<String>>, StorageError> {
        let text: Option<String> = self
            .tx
            .prepare_cached(SELECT_SET)
            .and_then(|mut s| s.query_row(params![hash], |row| row.get(0)).optional())
            .map_err(|e| self.fail(e))?;
        text.map(|text| {
            serde_json::from_str(&text).map_err(|error| {
                self.fail(Failure::Corrupt {
                    id: format!("set {hash}"),
                    message: format!("stored readable set is not a JSON list: {error}"),
                })
            })
        })
        .transpose()
    }

    async fn feed(
        &mut self,
        collection: &str,
        buckets: &BTreeSet<String>,
        after: u64,
        limit: usize,
    ) -> Result<Vec<FeedEntry>, StorageError> {
        let read = || -> Result<Vec<FeedEntry>, Failure> {
            let rows = if buckets.len() <= MERGED_BUCKETS {
                merged_rows(self.tx, collection, buckets, after, limit)?
            } else {
                sorted_rows(self.tx, collection, buckets, after, limit)?
            };
            let exits = exits_after(self.tx, collection, buckets, after, limit)?;
            // Both lists are in `seq` order: merge them, a row before the exit of its own move.
            let mut entries = Vec::with_capacity(limit.min(rows.len() + exits.len()));
            let (mut rows, mut exits) = (rows.into_iter().peekable(), exits.into_iter().peekable());
            while entries.len() < limit {
                let take_row = match (rows.peek(), exits.peek()) {
                    (Some(row), Some(exit)) => row.doc.sync_id.0 <= exit_seq(exit),
                    (Some(_), None) => true,
                    (None, Some(_)) => false,
                    (None, None) => break,
                };
                let entry = if take_row {
                    rows.next().map(FeedEntry::Row)
                } else {
                    exits.next()
                };
                entries.extend(entry);
            }
            Ok(entries)
        };
        read().map_err(|f| self.fail(f))
    }

    async fn bucket_rows(
        &mut self,
        collection: &str,
        bucket: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<SharedRow>, StorageError> {
        let read = || -> Result<Vec<SharedRow>, Failure> {
            let mut statement = self.tx.prepare_cached(SELECT_BUCKET_ROWS)?;
            let rows = statement.query_map(
                params![collection, bucket, to_sql(after), to_limit(limit)],
                StoredRow::read_shared,
            )?;
            let mut found = Vec::new();
            for row in rows {
                found.push(shared_row(row?)?);
            }
            Ok(found)
        };
        read().map_err(|f| self.fail(f))
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
        let read = || -> Result<Vec<Candidate>, Failure> {
            let mut statement = self.tx.prepare_cached(SELECT_CANDIDATES)?;
            let mut rows = statement.query(params![
                collection,
                bucket_json(buckets),
                to_sql(since),
                after_id.unwrap_or(""),
                to_limit(limit),
                to_sql(reach)
            ])?;
            let mut found = Vec::new();
            while let Some(row) = rows.next()? {
                let id: String = row.get(0)?;
                let number = |index: usize, what: &str| -> Result<u64, Failure> {
                    let value: Option<i64> = row.get(index)?;
                    from_sql(value.unwrap_or(0), &id, what)
                };
                found.push(Candidate {
                    current: row.get(1)?,
                    version: number(2, "version")?,
                    seq: number(3, "seq")?,
                    updated_at: number(4, "updated_at")?,
                    id,
                });
            }
            Ok(found)
        };
        read().map_err(|f| self.fail(f))
    }
}

/// Stores readable sets a page's cursor names, in the caller's write transaction.
pub(super) fn store_sets(
    tx: &rusqlite::Transaction<'_>,
    sets: &[(String, String)],
) -> Result<(), Failure> {
    for (hash, list) in sets {
        tx.prepare_cached(INSERT_SET)?
            .execute(params![hash, list])?;
    }
    Ok(())
}

/// Writes `changes` to the shared `collection`, routed by `access`, in the caller's write
/// transaction; see [`Storage::shared_push`](crate::Storage::shared_push).
pub(super) fn push_in(
    tx: &rusqlite::Transaction<'_>,
    now: Timestamp,
    access: &dyn Access,
    collection: &str,
    changes: Vec<Change>,
    touched: &mut BTreeSet<String>,
    regranted: &mut BTreeSet<String>,
) -> Result<PushOutcome, Failure> {
    let user = access.user().as_str();
    let readable = access.readable(&grants_of(tx, user)?);
    let key = counter_key(collection);
    let mut next: i64 = tx
        .prepare_cached(SELECT_COUNTER)?
        .query_row(params![key], |row| row.get(0))
        .optional()?
        .unwrap_or(0);
    let start = next;
    let membership = access.is_membership(collection);
    let mut last_written = None;
    let mut results = Vec::with_capacity(changes.len());
    for change in changes {
        let seq_key_ = seq_key(change.mutation_id.seq);
        if let Some(answer) = replay_answer_of(tx, user, &change, collection, seq_key_)? {
            results.push(answer);
            continue;
        }
        let current = tx
            .prepare_cached(SELECT_ROW)?
            .query_row(params![collection, change.id], StoredRow::read_shared)
            .optional()?;
        let stored = current
            .as_ref()
            .map(|(row, bucket)| -> Result<_, Failure> {
                Ok(StoredState {
                    bucket,
                    data: &row.data,
                    deleted: row.deleted,
                    version: from_sql(row.version, &row.id, "version")?,
                })
            })
            .transpose()?;
        let write = match decide(access, collection, &readable, &change, stored) {
            Decision::Rejected(answer) => {
                results.push(answer);
                continue;
            }
            Decision::Conflict => {
                let server = current.map(|(row, _)| row.into_document()).transpose()?;
                results.push(ChangeResult {
                    id: change.id,
                    mutation_id: change.mutation_id,
                    outcome: ChangeOutcome::Conflict { server },
                });
                continue;
            }
            Decision::Write(write) => write,
        };
        next += 1;
        if let Some(old) = write.moved_from {
            tx.prepare_cached(INSERT_EXIT)?.execute(params![
                collection,
                old,
                next,
                change.id,
                to_sql(now.0)
            ])?;
            touched.insert(old);
        }
        tx.prepare_cached(UPSERT_ROW)?.execute(params![
            collection,
            change.id,
            write.bucket,
            to_sql(write.version),
            next,
            to_sql(now.0),
            change.deleted,
            write.data
        ])?;
        touched.insert(write.bucket);
        if membership {
            let before: Option<String> = tx
                .prepare_cached(SELECT_GRANT)?
                .query_row(params![collection, change.id], |row| row.get(0))
                .optional()?;
            regranted.extend(before);
            tx.prepare_cached(DELETE_GRANT)?
                .execute(params![collection, change.id])?;
            if let Some((member, bucket)) = write.grant {
                tx.prepare_cached(INSERT_GRANT)?
                    .execute(params![collection, change.id, member, bucket])?;
                regranted.insert(member);
            }
        }
        let sync_id = SyncId(from_sql(next, &change.id, "seq")?);
        let result = accepted(&change, write.version, sync_id);
        super::record_answer(tx, now, user, collection, seq_key_, &result)?;
        last_written = Some(sync_id);
        results.push(result);
    }
    if next != start {
        tx.prepare_cached(UPSERT_COUNTER)?
            .execute(params![key, next])?;
    }
    Ok(PushOutcome {
        results,
        last_written,
    })
}

/// The digest of the live rows of `collection` whose bucket `access`'s user may read.
pub(super) fn digest_in(
    conn: &mut Connection,
    access: &dyn Access,
    collection: &str,
    content: bool,
) -> Result<SharedDigest, Failure> {
    let tx = conn.transaction()?;
    let readable = access
        .readable(&grants_of(&tx, access.user().as_str())?)
        .map_err(|refusal| {
            Failure::Done(StorageError::Rules {
                collection: collection.to_owned(),
                message: refusal.message().to_owned(),
            })
        })?;
    let mut v1 = Digest::default();
    let mut v2 = ContentDigest::default();
    {
        let mut statement = tx.prepare_cached(SELECT_READABLE_LIVE)?;
        let mut rows = statement.query(params![collection, bucket_json(&readable)])?;
        while let Some(row) = rows.next()? {
            let id = row.get_ref(0)?.as_str().map_err(rusqlite::Error::from)?;
            let version = from_sql(row.get(1)?, id, "version")?;
            if content {
                let data = row.get_ref(2)?.as_str().map_err(rusqlite::Error::from)?;
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
    tx.commit()?;
    Ok(if content {
        SharedDigest::V2(v2)
    } else {
        SharedDigest::V1(v1)
    })
}

/// The readable set of `access`'s user, from the grants in one read.
pub(super) fn readable_in(
    conn: &mut Connection,
    access: &dyn Access,
) -> Result<BTreeSet<String>, Failure> {
    let grants = grants_of(conn, access.user().as_str())?;
    access.readable(&grants).map_err(|refusal| {
        Failure::Done(StorageError::Rules {
            collection: String::new(),
            message: refusal.message().to_owned(),
        })
    })
}

fn exit_seq(entry: &FeedEntry) -> u64 {
    match entry {
        FeedEntry::Exit { seq, .. } => *seq,
        FeedEntry::Row(row) => row.doc.sync_id.0,
    }
}

/// The rows of `buckets` after `after`, at most `limit`, by a k-way merge of one index-ordered
/// scan per bucket: each scan is stepped only as far as the merge takes rows from it.
fn merged_rows(
    tx: &rusqlite::Transaction<'_>,
    collection: &str,
    buckets: &BTreeSet<String>,
    after: u64,
    limit: usize,
) -> Result<Vec<SharedRow>, Failure> {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    let mut statements = Vec::with_capacity(buckets.len());
    for _ in buckets {
        statements.push(tx.prepare_cached(SELECT_BUCKET_FEED)?);
    }
    let mut scans = Vec::with_capacity(buckets.len());
    for (statement, bucket) in statements.iter_mut().zip(buckets) {
        scans.push(statement.query(params![collection, bucket, to_sql(after)])?);
    }
    let mut heads: Vec<Option<SharedRow>> = Vec::with_capacity(scans.len());
    let mut heap = BinaryHeap::new();
    for (index, scan) in scans.iter_mut().enumerate() {
        let head = next_row(scan)?;
        if let Some(row) = &head {
            heap.push(Reverse((row.doc.sync_id.0, index)));
        }
        heads.push(head);
    }
    let mut found = Vec::with_capacity(limit.min(1_024));
    while found.len() < limit {
        let Some(Reverse((_, index))) = heap.pop() else {
            break;
        };
        if let Some(row) = heads[index].take() {
            found.push(row);
        }
        let head = next_row(&mut scans[index])?;
        if let Some(row) = &head {
            heap.push(Reverse((row.doc.sync_id.0, index)));
        }
        heads[index] = head;
    }
    Ok(found)
}

fn next_row(scan: &mut rusqlite::Rows<'_>) -> Result<Option<SharedRow>, Failure> {
    match scan.next()? {
        Some(row) => Ok(Some(shared_row(StoredRow::read_shared(row)?)?)),
        None => Ok(None),
    }
}

/// The rows of `buckets` after `after`, at most `limit`, by one sorted query.
fn sorted_rows(
    tx: &rusqlite::Transaction<'_>,
    collection: &str,
    buckets: &BTreeSet<String>,
    after: u64,
    limit: usize,
) -> Result<Vec<SharedRow>, Failure> {
    let mut statement = tx.prepare_cached(SELECT_SET_FEED)?;
    let rows = statement.query_map(
        params![
            collection,
            bucket_json(buckets),
            to_sql(after),
            to_limit(limit)
        ],
        StoredRow::read_shared,
    )?;
    let mut found = Vec::new();
    for row in rows {
        found.push(shared_row(row?)?);
    }
    Ok(found)
}

/// The exits from `buckets` after `after`, at most `limit`, in `seq` order.
fn exits_after(
    tx: &rusqlite::Transaction<'_>,
    collection: &str,
    buckets: &BTreeSet<String>,
    after: u64,
    limit: usize,
) -> Result<Vec<FeedEntry>, Failure> {
    let mut statement = tx.prepare_cached(SELECT_EXITS)?;
    let mut rows = statement.query(params![
        collection,
        bucket_json(buckets),
        to_sql(after),
        to_limit(limit)
    ])?;
    let mut exits = Vec::new();
    while let Some(row) = rows.next()? {
        let id: String = row.get(1)?;
        let version: Option<i64> = row.get(3)?;
        let current_seq: Option<i64> = row.get(5)?;
        exits.push(FeedEntry::Exit {
            seq: from_sql(row.get(0)?, &id, "seq")?,
            at: from_sql(row.get(4)?, &id, "at")?,
            version: from_sql(version.unwrap_or(0), &id, "version")?,
            current: row.get(2)?,
            current_seq: from_sql(current_seq.unwrap_or(0), &id, "seq")?,
            id,
        });
    }
    Ok(exits)
}

/// The database's cursor key, drawn from the operating system's random source the first time
/// (inside the caller's write transaction, so two processes opening a new file agree on one).
pub(super) fn cursor_key(tx: &rusqlite::Transaction<'_>) -> Result<CursorKey, Failure> {
    let fresh = CursorKey::random().map_err(|e| Failure::Setup(e.to_string()))?;
    tx.execute(
        "INSERT OR IGNORE INTO shared_key (id, key) VALUES (1, ?1)",
        params![fresh.as_slice()],
    )?;
    let stored: Vec<u8> = tx.query_row("SELECT key FROM shared_key WHERE id = 1", [], |row| {
        row.get(0)
    })?;
    CursorKey::from_bytes(&stored).ok_or_else(|| {
        Failure::Setup(format!(
            "the stored cursor key is {} bytes, not {}; the database was changed outside the \
             server",
            stored.len(),
            CursorKey::LEN
        ))
    })
}
