//! The [`Storage`] trait every backend implements, and the values it trades in.
//!
//! The HTTP layer validates requests (collection name, page size, change ids) and hands the
//! storage only valid work; the storage owns every guarantee about rows: versions, the order of
//! the change feed, optimistic concurrency, exactly-once push, tombstones and the purge horizon.
//! [`storage_suite`](crate::storage_suite) checks them for any backend.

use std::fmt;

use async_trait::async_trait;
use fero::{SyncId, Timestamp, Version};
use fero_protocol::{Change, ChangeResult, ContentDigest, Digest, Document};
use serde::Serialize;
use serde_json::value::RawValue;

use crate::error::StorageError;
use crate::user::UserId;

/// One page of a collection's change feed.
#[derive(Clone, Debug, PartialEq)]
pub struct PullPage {
    /// Rows with `sync_id` above the requested position, in `sync_id` order, at most `limit`.
    pub items: Vec<StoredDocument>,
    /// More rows follow (the backend read `limit + 1` rows and found the extra one).
    pub has_more: bool,
}

/// A row of a [`PullPage`]: a [`Document`] whose content is still the JSON text the storage
/// holds.
///
/// A pull answer copies that text verbatim instead of parsing it into a tree and writing it out
/// again: the text was checked to be JSON when it was written (push and seed store a
/// `serde_json::Value`'s text), and a backend checks it once more, without building a tree, when
/// it reads the row ([`RawValue::from_string`]), so a corrupt row is still a typed error
/// ([`StorageError::Corrupt`]) rather than a broken answer.
///
/// It serialises as the [`Document`] it stands for: the same fields in the same order, `data`
/// as the stored text. A client reads a pull answer made of these as a
/// [`PullResponse`](fero_protocol::PullResponse).
///
/// # Examples
/// ```
/// use fero::{SyncId, Timestamp, Version};
/// use fero_server::StoredDocument;
///
/// let stored = StoredDocument {
///     id: "contact-1".into(),
///     sync_id: SyncId(7),
///     version: Version(2),
///     updated_at: Timestamp(1_700_000_000_000),
///     deleted: false,
///     data: serde_json::value::RawValue::from_string(r#"{"name":"Ada"}"#.into())?,
/// };
/// let document = stored.to_document()?;
/// assert_eq!(document.data["name"], "Ada");
/// assert_eq!(serde_json::to_string(&stored)?, serde_json::to_string(&document)?);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, Serialize)]
pub struct StoredDocument {
    /// The id, unique per user and collection.
    pub id: String,
    /// Its place in the collection's change feed.
    pub sync_id: SyncId,
    /// Its version: 1 on insert, +1 per accepted write.
    pub version: Version,
    /// Server time of the last write, milliseconds since the Unix epoch.
    pub updated_at: Timestamp,
    /// A tombstone (it keeps its last data, or `null`).
    pub deleted: bool,
    /// The content, as the JSON text the storage holds.
    pub data: Box<RawValue>,
}

impl StoredDocument {
    /// The [`Document`] this row stands for, with its content parsed.
    ///
    /// # Errors
    /// The parser's error; only a content nested more deeply than `serde_json`'s recursion limit
    /// (128) can fail here, since `data` is JSON by construction.
    pub fn to_document(&self) -> Result<Document, serde_json::Error> {
        Ok(Document {
            id: self.id.clone(),
            sync_id: self.sync_id,
            version: self.version,
            updated_at: self.updated_at,
            deleted: self.deleted,
            data: serde_json::from_str(self.data.get())?,
        })
    }
}

/// Equal when every field is and the content is the same text (`{"a":1}` and `{ "a": 1 }` differ).
impl PartialEq for StoredDocument {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
            && self.sync_id == other.sync_id
            && self.version == other.version
            && self.updated_at == other.updated_at
            && self.deleted == other.deleted
            && self.data.get() == other.data.get()
    }
}

/// What a push did.
#[derive(Clone, Debug, PartialEq)]
pub struct PushOutcome {
    /// One result per change, in request order.
    pub results: Vec<ChangeResult>,
    /// The greatest `sync_id` this call wrote, `None` when it wrote nothing (only conflicts and
    /// replays). The server announces it on the change stream.
    pub last_written: Option<SyncId>,
}

/// A row written by [`Storage::seed`]: no base version, no mutation id.
#[derive(Clone, Debug, PartialEq)]
pub struct SeedRow {
    /// The row's id.
    pub id: String,
    /// Its content.
    pub data: serde_json::Value,
    /// Write it as a tombstone.
    pub deleted: bool,
}

impl SeedRow {
    /// A live row.
    pub fn new(id: impl Into<String>, data: serde_json::Value) -> Self {
        SeedRow {
            id: id.into(),
            data,
            deleted: false,
        }
    }
}

/// What [`Storage::seed`] wrote.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct SeedReport {
    /// Rows written.
    pub written: u64,
    /// The `sync_id` of the last row written (unchanged position when nothing was written).
    pub last_sync_id: Option<SyncId>,
}

/// What [`Storage::purge_tombstones`] removed.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct PurgeReport {
    /// Tombstones deleted.
    pub purged: u64,
    /// `(user, collection)` pairs whose horizon moved.
    pub collections: u64,
}

/// What [`Storage::prune_mutations`] removed.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Recorded answers (mutation ids) deleted.
    pub pruned: u64,
}

/// Where rows live: the server's only state.
///
/// # Contract
/// Every implementation guarantees, and [`storage_suite`](crate::storage_suite) checks:
/// - **Ownership.** Every read and write is scoped by `owner`; rows of two owners never meet,
///   even with equal ids.
/// - **Versions.** A row's version is 1 when created and +1 for each accepted write.
/// - **Feed order never skips.** Each written row gets a new `sync_id`, greater than every
///   `sync_id` of `owner` committed before, and a pull that returns rows up to `sync_id` s has
///   already seen every row of that owner and collection that will ever carry a `sync_id` ≤ s.
///   (SQLite: one writer at a time and the counter is updated inside the write transaction.
///   PostgreSQL: a per-user counter row locked first in the write transaction and held to
///   commit, so commit order equals `sync_id` order per user.)
/// - **One snapshot per page.** A page and `has_more` come from one read transaction; `has_more`
///   comes from reading `limit + 1` rows.
/// - **Optimistic push.** A change is written only if the stored version equals its
///   `base_version` (`None`: only if the id is absent, tombstones included); otherwise the answer
///   is a conflict carrying the current row. All changes of one call commit in one transaction.
/// - **Exactly once.** A written change's `(owner, device, seq)` is stored with its result in the
///   same transaction; a later change with that mutation id gets the stored result and writes
///   nothing. Conflicts write nothing and are not recorded, so a client may resend a conflicted
///   change with the same mutation id on a new base. Each stored answer carries the time it was
///   recorded (the backend's clock, unix milliseconds) and is kept until
///   [`prune_mutations`](Storage::prune_mutations) removes it; from then on that mutation id is
///   new to the storage again.
/// - **Tombstones.** A deletion keeps the row with `deleted = true`, its last data, a new version
///   and a new `sync_id`. [`purge_tombstones`](Storage::purge_tombstones) records a horizon; a
///   pull from a position above 0 and below it fails with [`StorageError::ResyncRequired`].
///
/// Errors other than `ResyncRequired` mean the operation wrote nothing; the server answers 500.
#[async_trait]
pub trait Storage: Send + Sync + fmt::Debug + 'static {
    /// Up to `limit` rows of `owner`'s `collection` with `sync_id > after`, in `sync_id` order.
    ///
    /// # Errors
    /// [`StorageError::ResyncRequired`] when `after` is above 0 and below the collection's purge
    /// horizon; a backend error otherwise.
    async fn pull(
        &self,
        owner: &UserId,
        collection: &str,
        after: SyncId,
        limit: u32,
    ) -> Result<PullPage, StorageError>;

    /// Applies `changes` in order, in one transaction.
    ///
    /// # Errors
    /// A backend error; then nothing of the call was written.
    async fn push(
        &self,
        owner: &UserId,
        collection: &str,
        changes: Vec<Change>,
    ) -> Result<PushOutcome, StorageError>;

    /// Count and digest of `owner`'s live (not deleted) rows in `collection`.
    ///
    /// # Errors
    /// A backend error.
    async fn digest(&self, owner: &UserId, collection: &str) -> Result<Digest, StorageError>;

    /// Count and content digest (digest version 2: id, version and the canonical JSON of the
    /// data) of `owner`'s live rows in `collection`, read in one snapshot.
    ///
    /// A wrapper storage forwards it to the storage it wraps, like every other method.
    ///
    /// # Errors
    /// A backend error; [`StorageError`] of kind corrupt when a stored row's data is not JSON.
    async fn content_digest(
        &self,
        owner: &UserId,
        collection: &str,
    ) -> Result<ContentDigest, StorageError>;

    /// Deletes every tombstone with `sync_id < before`, of every owner and collection, and
    /// raises each affected collection's horizon to the greatest `sync_id` it purged.
    ///
    /// # Errors
    /// A backend error; then nothing was purged.
    async fn purge_tombstones(&self, before: SyncId) -> Result<PurgeReport, StorageError>;

    /// Deletes every stored push answer (mutation id and result) recorded before
    /// `recorded_before` (unix milliseconds; an answer recorded exactly then stays), of every
    /// owner. Rows are not touched: only the memory of which changes were already applied.
    ///
    /// # What a client experiences
    /// A replay of a pruned mutation is treated as a new change. Its `base_version` is the one it
    /// was made on, which its own acceptance made stale, so it is answered as a conflict carrying
    /// the server's current row (a create of an id that now exists conflicts the same way), and
    /// nothing is written. The client's conflict strategy then resolves it like any conflict:
    /// the server's row is the client's own write (or a later one), so nothing is lost silently
    /// and nothing is applied twice (versions only grow, so the stored version can never again
    /// equal a base the change was accepted on). The one exception is a create (no base version)
    /// whose row was since deleted and its tombstone purged: it finds no row and is written
    /// again, as a new row.
    ///
    /// Backends may delete in several bounded transactions, so that pushes are not held up by
    /// one long delete; the answers deleted before a failure stay deleted.
    ///
    /// # Errors
    /// A backend error; the count of the batches that completed is lost with it.
    async fn prune_mutations(
        &self,
        recorded_before: Timestamp,
    ) -> Result<PruneReport, StorageError>;

    /// Writes `rows` in one transaction, each as a new version with a new `sync_id`, bypassing
    /// base versions and mutation ids: for demos and benchmarks that need many rows fast.
    ///
    /// # Errors
    /// A backend error; then nothing of the call was written.
    async fn seed(
        &self,
        owner: &UserId,
        collection: &str,
        rows: Vec<SeedRow>,
    ) -> Result<SeedReport, StorageError>;
}

#[allow(dead_code)]
fn _object_safe(_: &dyn Storage) {}

/// A `u64` feed position or version as an SQL integer (`INTEGER`, `BIGINT`). Values above
/// `i64::MAX` never come out of a counter; a client's position that large simply lies beyond
/// every row.
pub(crate) fn to_sql(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A mutation's sequence number as a key column: the bit-for-bit reinterpretation is one-to-one,
/// so every `u64` keeps its own key.
pub(crate) fn seq_key(seq: u64) -> i64 {
    i64::from_ne_bytes(seq.to_ne_bytes())
}

/// Seeds `rows` into `storage` one transaction per `page_size` rows, so memory stays flat for any
/// number of rows.
///
/// # Errors
/// The first failing page's error; the pages before it stay written.
///
/// # Examples
/// ```
/// use fero_server::{SeedRow, SqliteStorage, UserId, seed_pages};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let storage = SqliteStorage::open_in_memory()?;
/// let rows = (0..2_500).map(|i| SeedRow::new(format!("item-{i:07}"), serde_json::json!({ "n": i })));
/// let report = seed_pages(&storage, &UserId::new("alice"), "items", rows, 1_000).await?;
/// assert_eq!(report.written, 2_500);
/// # Ok(()) }
/// ```
pub async fn seed_pages<S, I>(
    storage: &S,
    owner: &UserId,
    collection: &str,
    rows: I,
    page_size: usize,
) -> Result<SeedReport, StorageError>
where
    S: Storage + ?Sized,
    I: IntoIterator<Item = SeedRow>,
{
    let page_size = page_size.max(1);
    let mut total = SeedReport::default();
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let page: Vec<SeedRow> = rows.by_ref().take(page_size).collect();
        let report = storage.seed(owner, collection, page).await?;
        total.written += report.written;
        total.last_sync_id = report.last_sync_id.or(total.last_sync_id);
    }
    Ok(total)
}
