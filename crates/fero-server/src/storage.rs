//! The [`Storage`] trait every backend implements, and the values it trades in.
//!
//! The HTTP layer validates requests (collection name, page size, change ids and content, see
//! `validate.rs`) and hands the storage only valid work; the storage owns every guarantee about
//! rows: versions, the order of the change feed, the position checks of a pull (purge horizon,
//! the owner's head), optimistic concurrency, exactly-once push, tombstones and the purge
//! horizon.
//! [`storage_suite`](crate::storage_suite) checks them for any backend.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use fero::{SyncId, Timestamp, Version};
use fero_protocol::{Change, ChangeOutcome, ChangeResult, ContentDigest, Digest, Document};
use serde::Serialize;
use serde_json::value::RawValue;

use crate::error::StorageError;
use crate::shared::{Access, SharedCursor, SharedDigest, SharedPage, SharedPushOutcome};
use crate::user::UserId;

/// One page of a collection's change feed.
#[derive(Clone, Debug, PartialEq)]
pub struct PullPage {
    /// Rows with `sync_id` above the requested position, in `sync_id` order, at most `limit`.
    pub items: Vec<StoredDocument>,
    /// More rows follow (the backend read `limit + 1` rows and found the extra one).
    pub has_more: bool,
    /// The collection's tombstone purge horizon in the page's snapshot (`SyncId(0)`: nothing
    /// purged). The server records it in the next cursor when the position stays below it, so
    /// that the later pages of a scan that began at the origin are served (see
    /// [`FeedPosition::horizon`]).
    pub horizon: SyncId,
    /// The database's restore epoch in the page's snapshot (`None`: the backend keeps none). The
    /// server records it in the next cursor, so that a cursor issued before the database was
    /// restored from a backup ([`Storage::mark_restored`]) is refused with
    /// [`StorageError::Restored`] (410 `resync_required`, reason `server_behind`).
    pub epoch: Option<u64>,
}

/// Where a pull starts: a position in the user's feed, and what the client's copy already
/// accounts for.
///
/// # Examples
/// ```
/// use fero::SyncId;
/// use fero_server::FeedPosition;
///
/// let plain = FeedPosition::from(SyncId(7));
/// assert_eq!((plain.after, plain.horizon, plain.epoch), (SyncId(7), None, None));
/// ```
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct FeedPosition {
    /// Rows with `sync_id` above this are wanted; 0 is the origin (nothing held).
    pub after: SyncId,
    /// The purge horizon the client's copy already accounts for, from a cursor the server
    /// issued; `None` for a plain position. A scan that began at the origin saw every row that
    /// existed then, so tombstones purged up to the horizon of that moment cannot be missing
    /// from it: its later pages are served although their position is below that horizon. A
    /// purge that raises the horizon past both the position and this value during the scan
    /// may have removed a deletion the scan had not reached, and gets 410 like any position
    /// behind the horizon.
    pub horizon: Option<SyncId>,
    /// The restore epoch of the database that issued the cursor; `None` for a plain position or
    /// a cursor issued before epochs existed (then only the counter check applies). A position
    /// above 0 from another epoch than the database's current one gets
    /// [`StorageError::Restored`]: the database was restored since, so the client's copy may
    /// hold rows it lacks, whatever the feed's length says.
    pub epoch: Option<u64>,
}

impl From<SyncId> for FeedPosition {
    fn from(after: SyncId) -> Self {
        FeedPosition {
            after,
            horizon: None,
            epoch: None,
        }
    }
}

/// Why a pull cannot be served from its position; decided by [`check_position`] inside the
/// pull's read transaction.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum PositionRefusal {
    /// The position is beyond the user's highest assigned `sync_id`.
    ServerBehind { position: SyncId, head: SyncId },
    /// The cursor was issued in another restore epoch: the database was restored since.
    Restored {
        position: SyncId,
        cursor_epoch: u64,
        epoch: u64,
    },
    /// The position is below the collection's purge horizon, and the cursor does not account
    /// for it.
    BehindHorizon { checkpoint: SyncId, horizon: SyncId },
}

impl PositionRefusal {
    /// The storage error for `collection`.
    pub(crate) fn into_storage(self, collection: &str) -> StorageError {
        let collection = collection.to_owned();
        match self {
            PositionRefusal::ServerBehind { position, head } => StorageError::ServerBehind {
                collection,
                position,
                head,
            },
            PositionRefusal::Restored {
                position,
                cursor_epoch,
                epoch,
            } => StorageError::Restored {
                collection,
                position,
                cursor_epoch,
                epoch,
            },
            PositionRefusal::BehindHorizon {
                checkpoint,
                horizon,
            } => StorageError::ResyncRequired {
                collection,
                checkpoint,
                horizon,
            },
        }
    }
}

/// Whether a page may be served from `from`, given the user's highest assigned `sync_id`
/// (`head`; `None` when the backend does not know it), the collection's purge `horizon`
/// (`SyncId(0)`: none) and the database's restore `epoch` (`None`: unknown), all read in the
/// pull's own snapshot.
///
/// The origin is always served. A cursor of another restore epoch was issued before the
/// database was restored from a backup: the client may hold rows the database lost, even when
/// the feed has since grown past its position again (other devices pushed theirs back), so it
/// must resync. A position beyond `head` was handed out by a server whose
/// feed went further than this one's: this database lost acknowledged writes (restored from an
/// older backup); serving it would echo the position and silently skip every row written from
/// now on up to it. A position below the horizon may have missed a purged deletion, unless the
/// cursor accounts for that horizon ([`FeedPosition::horizon`]).
pub(crate) fn check_position(
    from: FeedPosition,
    head: Option<SyncId>,
    horizon: SyncId,
    epoch: Option<u64>,
) -> Result<(), PositionRefusal> {
    if from.after.0 == 0 {
        return Ok(());
    }
    if let (Some(cursor_epoch), Some(epoch)) = (from.epoch, epoch) {
        if cursor_epoch != epoch {
            return Err(PositionRefusal::Restored {
                position: from.after,
                cursor_epoch,
                epoch,
            });
        }
    }
    if let Some(head) = head {
        if from.after > head {
            return Err(PositionRefusal::ServerBehind {
                position: from.after,
                head,
            });
        }
    }
    let accounted = from.horizon.is_some_and(|seen| horizon <= seen);
    if from.after < horizon && !accounted {
        return Err(PositionRefusal::BehindHorizon {
            checkpoint: from.after,
            horizon,
        });
    }
    Ok(())
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

/// How many connections a storage's pool holds, for the `fero_storage_pool_connections` metric.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolUse {
    /// Connections lent out to a request right now.
    pub in_use: u64,
    /// Connections open and waiting in the pool.
    pub idle: u64,
    /// The most connections the pool opens.
    pub max: u64,
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
///   pull from a position above 0 and below it fails with [`StorageError::ResyncRequired`],
///   unless the position's cursor accounts for that horizon ([`FeedPosition::horizon`]).
/// - **No silent skip ahead.** A pull from a position beyond the owner's highest assigned
///   `sync_id` fails with [`StorageError::ServerBehind`], checked in the pull's snapshot.
/// - **Restore epoch.** The database holds a random restore epoch, created with it and replaced
///   by [`mark_restored`](Storage::mark_restored); every [`PullPage`] carries the one of its
///   snapshot, and a pull from a position above 0 whose cursor names another epoch fails with
///   [`StorageError::Restored`].
///
/// Errors other than `ResyncRequired`, `ServerBehind` and `Restored` mean the operation wrote nothing; the
/// server answers 500.
#[async_trait]
pub trait Storage: Send + Sync + fmt::Debug + 'static {
    /// Up to `limit` rows of `owner`'s `collection` with `sync_id > from.after`, in `sync_id`
    /// order, with the position checked in the same read transaction.
    ///
    /// # Errors
    /// [`StorageError::ServerBehind`] when `from.after` is beyond the owner's highest assigned
    /// `sync_id`; [`StorageError::ResyncRequired`] when it is above 0 and below the
    /// collection's purge horizon and `from.horizon` does not account for that horizon; a
    /// backend error otherwise.
    async fn pull_from(
        &self,
        owner: &UserId,
        collection: &str,
        from: FeedPosition,
        limit: u32,
    ) -> Result<PullPage, StorageError>;

    /// [`pull_from`](Storage::pull_from) a plain position (no cursor).
    ///
    /// # Errors
    /// As [`pull_from`](Storage::pull_from).
    async fn pull(
        &self,
        owner: &UserId,
        collection: &str,
        after: SyncId,
        limit: u32,
    ) -> Result<PullPage, StorageError> {
        self.pull_from(owner, collection, FeedPosition::from(after), limit)
            .await
    }

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

    /// Deletes every tombstone deleted before `deleted_before` (its `updated_at`, unix
    /// milliseconds by the backend's clock; one deleted exactly then stays), of every owner and
    /// collection, and raises each affected collection's horizon to the greatest `sync_id` it
    /// purged, in one transaction: the tombstone retention.
    ///
    /// # Errors
    /// A backend error; then nothing was purged.
    async fn purge_tombstones_deleted_before(
        &self,
        deleted_before: Timestamp,
    ) -> Result<PurgeReport, StorageError>;

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

    /// Gives the database a new random restore epoch, after it was restored from a backup (or
    /// copied back by hand): every cursor issued before is refused from then on with
    /// [`StorageError::Restored`], so every device pulls again from scratch and pushes back the
    /// rows the database lost. Returns the new epoch, which differs from the old one.
    ///
    /// # Errors
    /// A backend error (then the epoch is unchanged), or [`StorageError::Random`] when the
    /// operating system's random source fails.
    async fn mark_restored(&self) -> Result<u64, StorageError>;

    /// Checks that the backend answers, as cheaply as it can (a `SELECT 1` on a pooled
    /// connection): `GET /readyz` answers 503 until it succeeds.
    ///
    /// # Errors
    /// A backend error: the database cannot be reached or does not answer.
    async fn ping(&self) -> Result<(), StorageError>;

    /// One page of a shared collection (one named by the sync rules) for `access`'s user after
    /// `cursor` (`None`: from the origin): see [`shared`](crate::shared) for the guarantees.
    ///
    /// # Errors
    /// [`StorageError::SharingUnsupported`] from a backend without shared collections (the
    /// default); [`StorageError::Rules`] when the rules cannot compute the user's readable set;
    /// the resync errors of a cursor from another epoch or ahead of the collection.
    async fn shared_pull(
        &self,
        access: Arc<dyn Access>,
        collection: &str,
        cursor: Option<SharedCursor>,
        limit: u32,
    ) -> Result<SharedPage, StorageError> {
        let _ = (access, cursor, limit);
        Err(StorageError::SharingUnsupported {
            collection: collection.to_owned(),
        })
    }

    /// The readable set of `access`'s user now (its membership grants read in one snapshot).
    ///
    /// # Errors
    /// [`StorageError::SharingUnsupported`] from a backend without shared collections;
    /// [`StorageError::Rules`] when the rules cannot compute it.
    async fn shared_readable(
        &self,
        access: Arc<dyn Access>,
    ) -> Result<std::collections::BTreeSet<String>, StorageError> {
        let _ = access;
        Err(StorageError::SharingUnsupported {
            collection: String::new(),
        })
    }

    /// Writes `changes` to a shared collection in one transaction, each routed to its bucket by
    /// `access` (a refused change is answered `rejected` with its [`Refusal`](crate::shared::Refusal)'s code).
    ///
    /// # Errors
    /// [`StorageError::SharingUnsupported`] from a backend without shared collections.
    async fn shared_push(
        &self,
        access: Arc<dyn Access>,
        collection: &str,
        changes: Vec<Change>,
    ) -> Result<SharedPushOutcome, StorageError> {
        let _ = (access, changes);
        Err(StorageError::SharingUnsupported {
            collection: collection.to_owned(),
        })
    }

    /// Count and digest of the live rows of a shared collection `access`'s user may read, in one
    /// snapshot: version 1 ([`Digest`]) when `content` is `false`, else version 2.
    ///
    /// # Errors
    /// [`StorageError::SharingUnsupported`] from a backend without shared collections.
    async fn shared_digest(
        &self,
        access: Arc<dyn Access>,
        collection: &str,
        content: bool,
    ) -> Result<SharedDigest, StorageError> {
        let _ = (access, content);
        Err(StorageError::SharingUnsupported {
            collection: collection.to_owned(),
        })
    }

    /// The connection pool's use right now, for `/metrics`; `None` (the default) for a backend
    /// without a pool of its own.
    fn pool_use(&self) -> Option<PoolUse> {
        None
    }
}

#[allow(dead_code)]
fn _object_safe(_: &dyn Storage) {}

/// The answer to a change whose mutation id is already stored with `original`, recorded for
/// `recorded_collection` (`None`: recorded before answers named their collection, schema
/// version 2 and older).
///
/// A replay of the same row (same collection, same id) gets the original answer, whatever its
/// base version says now. A change that reuses the mutation id for another collection or
/// another id is refused with `mutation_id_reused` and writes nothing: answering it with the
/// earlier row's `accepted` would tell the client a write happened that never did.
pub(crate) fn replay_answer(
    change: &Change,
    collection: &str,
    recorded_collection: Option<&str>,
    original: ChangeResult,
) -> ChangeResult {
    let other_collection = recorded_collection.filter(|recorded| *recorded != collection);
    if original.id == change.id && other_collection.is_none() {
        return original;
    }
    let earlier = match other_collection {
        Some(recorded) => format!("row {:?} of collection {recorded:?}", original.id),
        None => format!("row {:?}", original.id),
    };
    ChangeResult {
        id: change.id.clone(),
        mutation_id: change.mutation_id.clone(),
        outcome: ChangeOutcome::Rejected {
            code: "mutation_id_reused".to_owned(),
            message: format!(
                "mutation id {}/{} was already used for {earlier}; give every change a new \
                 sequence number",
                change.mutation_id.device, change.mutation_id.seq
            ),
        },
    }
}

/// A new random restore epoch (63 bits, above 0, so that it is a positive SQL integer),
/// different from `old`.
///
/// # Errors
/// [`StorageError::Random`] when the operating system's random source fails.
pub(crate) fn new_epoch(old: Option<u64>) -> Result<u64, StorageError> {
    loop {
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).map_err(|e| StorageError::Random {
            message: e.to_string(),
        })?;
        let epoch = u64::from_ne_bytes(bytes) >> 1;
        if epoch != 0 && Some(epoch) != old {
            return Ok(epoch);
        }
    }
}

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
