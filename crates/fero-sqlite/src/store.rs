//! [`SqliteStore`]: named collections of JSON documents with an outbox of pending edits.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use fero::{Clock, FeatureKey, SystemClock, Version};
use fero_protocol::{ContentDigest, Digest, MutationId, Remote};
use rusqlite::{Connection, OptionalExtension, params};

use crate::conflict_log::{self, ConflictRecord};
use crate::db::Db;
use crate::document::{
    DOCUMENT_COLUMNS, LocalDocument, OutboxEntry, OutboxOp, RawDocument, check_collection,
    check_document, encode_json, parse_json,
};
use crate::error::{Error, Result};
use crate::handler::CollectionSync;
use crate::metadata::{SqliteSyncMetadataRepo, reset_feature};
use crate::schema::{self, Synchronous};

/// Settings for [`SqliteStore::open_with`].
///
/// # Examples
/// ```
/// use fero_sqlite::{StoreOptions, Synchronous};
/// let options = StoreOptions::new().synchronous(Synchronous::Full).device_id("phone-7");
/// # let _ = options;
/// ```
#[derive(Clone, Debug, Default)]
pub struct StoreOptions {
    synchronous: Synchronous,
    device_id: Option<String>,
    clock: Option<Arc<dyn Clock>>,
}

impl StoreOptions {
    /// [`Synchronous::Normal`], a random device id.
    pub fn new() -> Self {
        Self::default()
    }

    /// How durable each commit is (see [`Synchronous`]).
    pub fn synchronous(mut self, synchronous: Synchronous) -> Self {
        self.synchronous = synchronous;
        self
    }

    /// The device id to store when the database is created (a simulation wants stable ids).
    /// Ignored for a database that already has one: the stored id never changes.
    pub fn device_id(mut self, device_id: impl Into<String>) -> Self {
        self.device_id = Some(device_id.into());
        self
    }

    /// Where the store reads the time it records in the conflict log
    /// ([`ConflictRecord::recorded_at`]); the system clock by default. A simulation passes its
    /// own, so a replayed seed records the same times.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }
}

/// What [`SqliteStore::reset_collection`] did.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct ResetReport {
    /// Rows removed (synced documents and tombstones).
    pub removed: u64,
    /// Rows kept because they hold an unpushed local edit.
    pub kept_pending: u64,
}

/// A local document store in one SQLite database: collections of JSON documents keyed by id,
/// each with its server version, `sync_id`, tombstone flag and pending-edit state, plus the
/// outbox of pending mutations and fero's sync metadata.
///
/// Cheap to clone: clones share one connection. Every call runs its SQLite work on tokio's
/// blocking pool (see the crate docs), so it needs a tokio runtime.
///
/// # Local edits
/// [`put`](Self::put) and [`delete`](Self::delete) write the document and append its outbox entry
/// in one transaction. Each entry gets the next sequence number of this database's device, which
/// with the device id (generated once, stored in the file) forms the change's
/// [`MutationId`]: the same pending state is always pushed with the same id, across retries and
/// restarts.
///
/// # Examples
/// ```
/// use serde_json::json;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = fero_sqlite::SqliteStore::open_in_memory().await?;
/// store.put("contacts", "ada", json!({ "name": "Ada" })).await?;
/// let ada = store.get("contacts", "ada").await?.ok_or("ada was just written")?;
/// assert!(ada.locally_modified);
/// assert_eq!(store.outbox("contacts").await?.len(), 1);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct SqliteStore {
    db: Arc<Db>,
}

impl SqliteStore {
    /// Opens (or creates) the database file at `path` in WAL mode and migrates its schema.
    ///
    /// # Errors
    /// [`Error::Open`] when the file cannot be opened, [`Error::SchemaTooNew`] when it was written
    /// by a newer `fero-sqlite`, [`Error::Sqlite`] when a migration fails, [`Error::DeviceId`]
    /// when a new database's device id cannot be drawn from the operating system.
    pub async fn open(path: impl AsRef<Path>) -> Result<SqliteStore> {
        Self::open_with(path, StoreOptions::new()).await
    }

    /// Opens (or creates) the database file at `path` with `options`.
    ///
    /// # Errors
    /// As [`open`](Self::open).
    pub async fn open_with(path: impl AsRef<Path>, options: StoreOptions) -> Result<SqliteStore> {
        let path = path.as_ref().to_owned();
        let clock = options.clock.unwrap_or_else(|| Arc::new(SystemClock));
        Self::open_blocking("open the database", clock, move || {
            let conn = schema::open_file(&path, options.synchronous)?;
            Ok((conn, Some(path), options.device_id))
        })
        .await
    }

    /// A fresh database in memory: nothing survives the process. For tests and examples.
    ///
    /// # Errors
    /// [`Error::Open`] when SQLite cannot allocate it.
    pub async fn open_in_memory() -> Result<SqliteStore> {
        Self::open_blocking("open an in-memory database", Arc::new(SystemClock), || {
            Ok((schema::open_memory()?, None, None))
        })
        .await
    }

    async fn open_blocking<F>(
        operation: &str,
        clock: Arc<dyn Clock>,
        open: F,
    ) -> Result<SqliteStore>
    where
        F: FnOnce() -> Result<(Connection, Option<PathBuf>, Option<String>)> + Send + 'static,
    {
        let task = tokio::task::spawn_blocking(move || {
            let (mut conn, path, device_id) = open()?;
            let at = path.as_deref().unwrap_or(std::path::Path::new(":memory:"));
            let device_id = schema::device_id(&mut conn, device_id, at)?;
            Ok(Db::new(conn, device_id, path, clock))
        });
        let db = match task.await {
            Ok(result) => result?,
            Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
            Err(_) => {
                return Err(Error::TaskCancelled {
                    operation: operation.to_owned(),
                });
            }
        };
        Ok(SqliteStore { db: Arc::new(db) })
    }

    /// This database's device id: generated when the file was created, stored in it, and the
    /// `device` of every [`MutationId`] it hands out.
    pub fn device_id(&self) -> &str {
        &self.db.device_id
    }

    /// The database file (`None` in memory).
    pub fn path(&self) -> Option<&Path> {
        self.db.path.as_deref()
    }

    /// The metadata repo in this database, to give to
    /// [`FeroSyncBuilder::metadata_repo`](fero::FeroSyncBuilder::metadata_repo). Sharing the
    /// database is what lets a page and its checkpoint commit in one transaction.
    pub fn metadata_repo(&self) -> SqliteSyncMetadataRepo {
        SqliteSyncMetadataRepo::new(Arc::clone(&self.db))
    }

    /// The sync handler of `collection` against `remote`: both
    /// [`InitialSyncHandler`](fero::InitialSyncHandler) and
    /// [`BackgroundSyncHandler`](fero::BackgroundSyncHandler). Register it with FeroSync under the
    /// collection's name as feature key.
    ///
    /// # Errors
    /// [`Error::InvalidCollection`] for a name the protocol refuses.
    pub fn sync_handler<R: Remote>(
        &self,
        collection: impl Into<String>,
        remote: R,
    ) -> Result<CollectionSync<R>> {
        let collection = collection.into();
        check_collection(&collection)?;
        Ok(CollectionSync::new(self.clone(), collection, remote))
    }

    pub(crate) fn db(&self) -> &Arc<Db> {
        &self.db
    }

    /// Writes `data` as the document `id` of `collection`, as a local edit: the document is marked
    /// locally modified and an outbox entry is appended, in one transaction. Returns the stored
    /// document.
    ///
    /// # Errors
    /// [`Error::InvalidCollection`], [`Error::EmptyId`], [`Error::InvalidDocument`] (data that is
    /// not a JSON object), or [`Error::Sqlite`].
    pub async fn put(
        &self,
        collection: &str,
        id: &str,
        data: serde_json::Value,
    ) -> Result<LocalDocument> {
        check_collection(collection)?;
        check_document(collection, id, &data, false)?;
        let (collection, id) = (collection.to_owned(), id.to_owned());
        let operation = format!("put {id:?} into {collection}");
        self.db
            .write(&operation, move |tx| {
                match edit(tx, &collection, &id, Some(data))? {
                    Some(doc) => Ok(doc),
                    None => unreachable!("edit returns None only for a deletion, never a put"),
                }
            })
            .await
    }

    /// Deletes the document `id` of `collection` as a local edit: it becomes a pending tombstone
    /// and a delete entry is appended to the outbox, in one transaction. Returns `false` (and
    /// writes nothing) when there is no live document to delete.
    ///
    /// A document the server has never acknowledged is still pushed as a deletion rather than
    /// dropped locally: its creation may have reached the server with the answer lost, and only
    /// the pushed deletion keeps it from coming back in the next pull.
    ///
    /// # Errors
    /// [`Error::InvalidCollection`] or [`Error::Sqlite`].
    pub async fn delete(&self, collection: &str, id: &str) -> Result<bool> {
        check_collection(collection)?;
        let (collection, id) = (collection.to_owned(), id.to_owned());
        let operation = format!("delete {id:?} from {collection}");
        self.db
            .write(&operation, move |tx| {
                Ok(edit(tx, &collection, &id, None)?.is_some())
            })
            .await
    }

    /// The live document `id` (`None` when absent or deleted).
    ///
    /// # Errors
    /// [`Error::InvalidCollection`], [`Error::Sqlite`] or [`Error::CorruptJson`].
    pub async fn get(&self, collection: &str, id: &str) -> Result<Option<LocalDocument>> {
        Ok(self
            .get_including_deleted(collection, id)
            .await?
            .filter(|doc| !doc.deleted))
    }

    /// The document `id`, tombstones included (`deleted = true`).
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub async fn get_including_deleted(
        &self,
        collection: &str,
        id: &str,
    ) -> Result<Option<LocalDocument>> {
        check_collection(collection)?;
        let (collection, id) = (collection.to_owned(), id.to_owned());
        self.db
            .read("read a document", move |tx| {
                read_document(tx, &collection, &id)
            })
            .await
    }

    /// Every live document of `collection`, by id. For large collections page with
    /// [`query_after`](Self::query_after).
    ///
    /// # Errors
    /// [`Error::InvalidCollection`], [`Error::Sqlite`] or [`Error::CorruptJson`].
    pub async fn query(&self, collection: &str) -> Result<Vec<LocalDocument>> {
        self.query_after(collection, None, usize::MAX).await
    }

    /// At most `limit` live documents of `collection` with ids after `after` (from the first when
    /// `None`), by id. Pass the last id of a page to get the next: each page costs the same,
    /// however deep.
    ///
    /// # Errors
    /// As [`query`](Self::query).
    pub async fn query_after(
        &self,
        collection: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<LocalDocument>> {
        check_collection(collection)?;
        let (collection, after) = (collection.to_owned(), after.map(str::to_owned));
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let operation = format!("query {collection}");
        self.db
            .read(&operation.clone(), move |tx| {
                let raw = tx
                    .prepare_cached(&format!(
                        "SELECT {DOCUMENT_COLUMNS} FROM fero_documents
                         WHERE collection = ?1 AND deleted = 0 AND (?2 IS NULL OR id > ?2)
                         ORDER BY id LIMIT ?3"
                    ))
                    .and_then(|mut stmt| {
                        stmt.query_map(params![collection, after, limit], RawDocument::read)?
                            .collect::<rusqlite::Result<Vec<_>>>()
                    })
                    .map_err(Error::sqlite(operation))?;
                raw.into_iter()
                    .map(|r| r.into_document(&collection))
                    .collect()
            })
            .await
    }

    /// The number of live documents of `collection` (pending local deletions excluded).
    ///
    /// # Errors
    /// [`Error::InvalidCollection`] or [`Error::Sqlite`].
    pub async fn count(&self, collection: &str) -> Result<u64> {
        check_collection(collection)?;
        let collection = collection.to_owned();
        self.db
            .read("count documents", move |tx| {
                tx.prepare_cached(
                    "SELECT count(*) FROM fero_documents WHERE collection = ?1 AND deleted = 0",
                )
                .and_then(|mut stmt| stmt.query_row([&collection], |row| row.get(0)))
                .map_err(Error::sqlite(format!(
                    "count the documents of {collection}"
                )))
            })
            .await
    }

    /// The count and digest of `collection` as the server last confirmed it: every row the server
    /// acknowledged and that is live there, with its server version. Pending local edits do not
    /// count until the server accepts them, so the digest equals the server's
    /// ([`Remote::digest`]) whenever no server change is still unpulled.
    ///
    /// # Errors
    /// [`Error::InvalidCollection`] or [`Error::Sqlite`].
    pub async fn digest(&self, collection: &str) -> Result<Digest> {
        check_collection(collection)?;
        let collection = collection.to_owned();
        let operation = format!("digest {collection}");
        self.db
            .read(&operation.clone(), move |tx| {
                let mut digest = Digest::default();
                tx.prepare_cached(
                    "SELECT id, base_version FROM fero_documents
                     WHERE collection = ?1 AND base_version IS NOT NULL AND base_deleted = 0",
                )
                .and_then(|mut stmt| {
                    let mut rows = stmt.query([&collection])?;
                    while let Some(row) = rows.next()? {
                        digest.add(row.get_ref(0)?.as_str()?, row.get(1)?);
                    }
                    Ok(())
                })
                .map_err(Error::sqlite(operation))?;
                Ok(digest)
            })
            .await
    }

    /// The count and content digest (digest version 2, [`ContentDigest`]) of `collection` as the
    /// server last confirmed it: the rows [`digest`](Self::digest) covers, each with the server's
    /// content, which for a row with a pending edit is the base copy the edit rests on. Equals
    /// the server's ([`Remote::content_digest`]) whenever no server change is still unpulled and
    /// no stored row was changed behind the store's back.
    ///
    /// A stored text that is not JSON at all (a corrupt row) is digested as it is, so it can
    /// match no server row: it shows as drift instead of failing the digest.
    ///
    /// # Errors
    /// [`Error::InvalidCollection`] or [`Error::Sqlite`].
    pub async fn content_digest(&self, collection: &str) -> Result<ContentDigest> {
        check_collection(collection)?;
        let collection = collection.to_owned();
        let operation = format!("content digest {collection}");
        self.db
            .read(&operation.clone(), move |tx| {
                let mut digest = ContentDigest::default();
                // `coalesce` as in `restore_base`: a pending row's server content is its base copy.
                tx.prepare_cached(
                    "SELECT id, base_version,
                         CASE WHEN locally_modified = 1 THEN coalesce(base_data, data)
                              ELSE data END
                     FROM fero_documents
                     WHERE collection = ?1 AND base_version IS NOT NULL AND base_deleted = 0",
                )
                .and_then(|mut stmt| {
                    let mut rows = stmt.query([&collection])?;
                    while let Some(row) = rows.next()? {
                        let id = row.get_ref(0)?.as_str()?;
                        let version = row.get(1)?;
                        let text = row.get_ref(2)?.as_str()?;
                        if let Err(error) = digest.add_json(id, version, text) {
                            tracing::warn!(
                                %collection,
                                id,
                                %error,
                                "a stored document is not JSON; verify reports it as drift"
                            );
                            digest.add_canonical(id, version, text.as_bytes());
                        }
                    }
                    Ok(())
                })
                .map_err(Error::sqlite(operation))?;
                Ok(digest)
            })
            .await
    }

    /// The documents of `collection` with a pending local edit, oldest edit first (the order
    /// they are pushed in). Reads only those rows, through an index.
    ///
    /// # Errors
    /// [`Error::InvalidCollection`], [`Error::Sqlite`] or [`Error::CorruptJson`].
    pub async fn locally_modified(&self, collection: &str) -> Result<Vec<LocalDocument>> {
        check_collection(collection)?;
        let collection = collection.to_owned();
        self.db
            .read("list locally modified documents", move |tx| {
                list_modified(tx, &collection)
            })
            .await
    }

    /// The pending mutations of `collection`, in the order they were made.
    ///
    /// # Errors
    /// [`Error::InvalidCollection`], [`Error::Sqlite`] or [`Error::CorruptJson`].
    pub async fn outbox(&self, collection: &str) -> Result<Vec<OutboxEntry>> {
        check_collection(collection)?;
        let collection = collection.to_owned();
        let device = self.db.device_id.clone();
        let operation = format!("read the outbox of {collection}");
        self.db
            .read(&operation.clone(), move |tx| {
                let rows = tx
                    .prepare_cached(
                        "SELECT seq, id, op, base_version, data FROM fero_outbox
                         WHERE collection = ?1 ORDER BY seq",
                    )
                    .and_then(|mut stmt| {
                        stmt.query_map([&collection], |row| {
                            Ok((
                                row.get::<_, u64>(0)?,
                                row.get::<_, String>(1)?,
                                row.get::<_, String>(2)?,
                                row.get::<_, Option<u64>>(3)?,
                                row.get::<_, String>(4)?,
                            ))
                        })?
                        .collect::<rusqlite::Result<Vec<_>>>()
                    })
                    .map_err(Error::sqlite(operation))?;
                rows.into_iter()
                    .map(|(seq, id, op, base, data)| {
                        // The column's CHECK constraint admits only the three known values.
                        let op = OutboxOp::parse(&op).unwrap_or(OutboxOp::Update);
                        Ok(OutboxEntry {
                            mutation_id: MutationId::new(device.clone(), seq),
                            data: parse_json(&data, &collection, &id, "outbox data")?,
                            collection: collection.clone(),
                            op,
                            base_version: base.map(Version),
                            id,
                        })
                    })
                    .collect()
            })
            .await
    }

    /// The conflict log: every local edit a conflict dropped or overwrote that the app has not
    /// acknowledged yet, oldest first, across all collections.
    ///
    /// A record is written in the same transaction that drops or overwrites the edit, so it
    /// survives any crash that the drop survives, even one before the engine could send its
    /// [`ConflictResolved`](fero::SyncEvent::ConflictResolved) event. Read it at start-up (and
    /// whenever that event arrives), show or re-apply the edits, then
    /// [`acknowledge_conflicts`](Self::acknowledge_conflicts). An edit the app itself discards
    /// (`FeroSync::discard_quarantined`) is not recorded; an edit kept on top of the server's
    /// state (`ClientWins`, or the local side winning) is not lost and is not recorded either.
    ///
    /// # Errors
    /// [`Error::Sqlite`] or [`Error::CorruptJson`].
    pub async fn conflict_log(&self) -> Result<Vec<ConflictRecord>> {
        self.db
            .read("read the conflict log", |tx| conflict_log::read_all(tx))
            .await
    }

    /// Removes the conflict log records `log_ids` (their [`ConflictRecord::log_id`]), in one
    /// transaction; returns how many existed. Unknown or already acknowledged numbers are
    /// ignored, so acknowledging twice is harmless.
    ///
    /// # Errors
    /// [`Error::Sqlite`].
    pub async fn acknowledge_conflicts(&self, log_ids: &[u64]) -> Result<u64> {
        let log_ids = log_ids.to_vec();
        self.db
            .write("acknowledge conflict log records", move |tx| {
                conflict_log::acknowledge(tx, &log_ids)
            })
            .await
    }

    /// Forgets what the store knows of the server's `collection`, so that the next pull fetches
    /// it all again and heals any drift [`CollectionSync::verify`] found: removes every row
    /// without a pending local edit, clears the checkpoint of the feature named after the
    /// collection and marks its initial sync pending, in one transaction.
    ///
    /// Rows with a pending local edit stay, with their outbox entries: an unpushed edit is the
    /// user's work and a repair must not drop it. They keep the base version they were made on,
    /// so their push still meets the server's conflict check.
    ///
    /// For a collection synced by subscriptions ([`SubscriptionSync`](crate::SubscriptionSync)),
    /// the subscriptions stay and the record of which rows they delivered is cleared: the pull
    /// from scratch records it again.
    ///
    /// With a running [`FeroSync`](fero::FeroSync), call
    /// [`trigger_initial_sync`](fero::FeroSync::trigger_initial_sync) for the collection after
    /// this (or instead of it, to re-pull without removing rows first).
    ///
    /// # Errors
    /// [`Error::InvalidCollection`] or [`Error::Sqlite`].
    pub async fn reset_collection(&self, collection: &str) -> Result<ResetReport> {
        check_collection(collection)?;
        let collection = collection.to_owned();
        let operation = format!("reset {collection}");
        self.db
            .write(&operation.clone(), move |tx| {
                let removed = tx
                    .execute(
                        "DELETE FROM fero_documents WHERE collection = ?1 AND locally_modified = 0",
                        [&collection],
                    )
                    .map_err(Error::sqlite(operation.clone()))?;
                let kept: u64 = tx
                    .query_row(
                        "SELECT count(*) FROM fero_documents WHERE collection = ?1",
                        [&collection],
                        |row| row.get(0),
                    )
                    .map_err(Error::sqlite(operation.clone()))?;
                // The rows are pulled again from scratch, and tagged again by the subscriptions
                // that deliver them (see `crate::subscription`); the subscriptions stay.
                tx.execute(
                    "DELETE FROM fero_subscription_rows WHERE collection = ?1",
                    [&collection],
                )
                .map_err(Error::sqlite(format!("{operation}: clear the row tags")))?;
                reset_feature(tx, &FeatureKey::new(&collection))?;
                Ok(ResetReport {
                    removed: removed as u64,
                    kept_pending: kept,
                })
            })
            .await
    }
}

/// Reads one row, tombstones included.
pub(crate) fn read_document(
    conn: &Connection,
    collection: &str,
    id: &str,
) -> Result<Option<LocalDocument>> {
    conn.prepare_cached(&format!(
        "SELECT {DOCUMENT_COLUMNS} FROM fero_documents WHERE collection = ?1 AND id = ?2"
    ))
    .and_then(|mut stmt| {
        stmt.query_row([collection, id], RawDocument::read)
            .optional()
    })
    .map_err(Error::sqlite(format!("read {id:?} of {collection}")))?
    .map(|raw| raw.into_document(collection))
    .transpose()
}

/// The query behind [`list_modified`].
pub(crate) fn list_modified_sql() -> String {
    format!(
        "SELECT {DOCUMENT_COLUMNS} FROM fero_documents
         WHERE collection = ?1 AND locally_modified = 1 ORDER BY pending_seq"
    )
}

/// The documents with a pending edit, oldest edit first. The partial index
/// `fero_documents_pending` holds exactly these rows, so this reads nothing else.
pub(crate) fn list_modified(conn: &Connection, collection: &str) -> Result<Vec<LocalDocument>> {
    let raw = conn
        .prepare_cached(&list_modified_sql())
        .and_then(|mut stmt| {
            stmt.query_map([collection], RawDocument::read)?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(Error::sqlite(format!(
            "list the locally modified documents of {collection}"
        )))?;
    raw.into_iter()
        .map(|r| r.into_document(collection))
        .collect()
}

/// Appends an outbox entry and returns its sequence number.
pub(crate) fn append_outbox(
    conn: &Connection,
    collection: &str,
    id: &str,
    op: OutboxOp,
    base_version: Option<Version>,
    data: &str,
) -> Result<u64> {
    conn.prepare_cached(
        "INSERT INTO fero_outbox (collection, id, op, base_version, data)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            collection,
            id,
            op.as_str(),
            base_version.map(|v| v.0),
            data
        ])
    })
    .map_err(Error::sqlite(format!(
        "append the outbox entry of {id:?} in {collection}"
    )))?;
    // AUTOINCREMENT makes the rowid the never-reused mutation sequence number.
    Ok(conn.last_insert_rowid() as u64)
}

/// A local edit: `Some(data)` writes, `None` deletes. Writes the row and its outbox entry (the
/// caller's transaction makes them one commit). Returns the stored document, or `None` when a
/// deletion found nothing live to delete.
fn edit(
    conn: &Connection,
    collection: &str,
    id: &str,
    data: Option<serde_json::Value>,
) -> Result<Option<LocalDocument>> {
    let current = read_document(conn, collection, id)?;
    let deleting = data.is_none();
    let op = match (&current, deleting) {
        (None, true) => return Ok(None),
        (Some(doc), true) if doc.deleted => return Ok(None),
        (_, true) => OutboxOp::Delete,
        (Some(doc), false) if !doc.deleted => OutboxOp::Update,
        (_, false) => OutboxOp::Insert,
    };
    let text = match &data {
        Some(value) => encode_json(value, id, "data")?,
        None => "null".to_owned(),
    };
    let base = current.as_ref().and_then(|doc| doc.base_version);
    let seq = append_outbox(conn, collection, id, op, base, &text)?;
    let operation = || format!("write the local edit of {id:?} in {collection}");
    match current {
        None => {
            conn.prepare_cached(
                "INSERT INTO fero_documents (collection, id, data, version, deleted,
                     locally_modified, pending_seq, mutation_seq)
                 VALUES (?1, ?2, ?3, 1, 0, 1, ?4, ?4)",
            )
            .and_then(|mut stmt| stmt.execute(params![collection, id, text, seq]))
            .map_err(Error::sqlite(operation()))?;
        }
        Some(doc) if doc.locally_modified => {
            // A deletion keeps the last content, so a discarded deletion can be shown.
            conn.prepare_cached(
                "UPDATE fero_documents SET data = coalesce(?3, data), deleted = ?4,
                     version = version + 1, mutation_seq = ?5
                 WHERE collection = ?1 AND id = ?2",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![
                    collection,
                    id,
                    data.as_ref().map(|_| &text),
                    deleting,
                    seq
                ])
            })
            .map_err(Error::sqlite(operation()))?;
        }
        Some(_) => {
            // The first edit of a synced row: the server's data becomes the base copy (SQLite
            // evaluates every right-hand side on the old row).
            conn.prepare_cached(
                "UPDATE fero_documents SET base_data = data, base_deleted = deleted,
                     data = coalesce(?3, data), deleted = ?4, version = version + 1,
                     locally_modified = 1, pending_seq = ?5, mutation_seq = ?5
                 WHERE collection = ?1 AND id = ?2",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![
                    collection,
                    id,
                    data.as_ref().map(|_| &text),
                    deleting,
                    seq
                ])
            })
            .map_err(Error::sqlite(operation()))?;
        }
    }
    read_document(conn, collection, id)
}
