//! Shared collections: rows in buckets, read by every user whose readable set holds the bucket.
//!
//! A collection named in a rules file ([`Rules`](crate::rules::Rules)) is *shared*: each row
//! lives in exactly one bucket (a string such as `team:7`, computed from its data when it is
//! written), and a user reads every row of every bucket in the user's readable set `R`, which is
//! computed at each request from the token's claims and the membership rows that name the user.
//! The storage keeps, per shared collection:
//!
//! - its rows, each with its bucket, version and a `seq` from one counter per collection that is
//!   read and written inside the write transaction (so commit order is `seq` order, as for the
//!   per-user feed);
//! - an **exit** record `(bucket, id, seq)` each time a row leaves a bucket (its data moved it to
//!   another one), so a device that reads the old bucket but not the new one learns to remove it;
//! - the membership **grants** `(user, bucket)` derived from the rows of the membership
//!   collection, written in the same transaction as those rows;
//! - the readable **sets** cursors refer to, by their hash.
//!
//! # The pull
//! A cursor ([`SharedCursor`]) names a position `P` in the collection's `seq` order and the set
//! of buckets the device's copy accounts for. While `R` stays that set, a page is the rows of
//! `R`'s buckets with `seq > P` and the exits from them, in `seq` order; an exit is sent as a
//! removal (a tombstone without data) unless the row's current bucket is readable. When `R` has
//! changed since the cursor was issued, the pull first runs a **transition**:
//!
//! 1. *move-out*: every row currently in, or exited after `P` from, a bucket the device had and
//!    may no longer read is sent as a removal unless its current bucket is readable, in id order;
//! 2. *move-in*: every live row of each newly readable bucket is sent, whatever its `seq`, bucket
//!    by bucket in `seq` order;
//!
//! and then goes on from `P` over the new set (rows of a new bucket written after `P` come twice,
//! which the client's apply makes harmless). If `R` changes again during a transition, the device
//! is taken to hold only the buckets the old and the new set of that transition share, and a new
//! transition starts from there: a bucket half moved out or half moved in is moved in again from
//! the start if it is readable. No page ever carries a row whose bucket is not in `R` as computed
//! in the page's own snapshot, and removals carry neither data nor bucket.

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

use fero::{SyncId, Timestamp, Version};
use fero_protocol::{Change, ChangeOutcome, ChangeResult, Subscription};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::Sha256;

use crate::error::StorageError;
use crate::storage::{PushOutcome, StoredDocument};
use crate::user::UserId;

/// The prefix of shared-collection cursors ("bucket scheme 1").
const SCHEME: &str = "b1-";

/// The counter key of a shared collection's `seq`: U+0000 never occurs in a user id, so it cannot
/// collide with a user's counter.
pub(crate) fn counter_key(collection: &str) -> String {
    format!("\u{0}shared/{collection}")
}

/// Why a change is not written, decided by the rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The user may not read the row's bucket, or may not write the target bucket: the change's
    /// answer is `rejected` with code `forbidden`.
    Forbidden {
        /// What the user may not do (names no data and no other user's bucket content).
        message: String,
    },
    /// The rules could not place the row (an expression failed on its data): `rejected` with
    /// code `rule_failed`.
    RuleFailed {
        /// Which expression failed and why.
        message: String,
    },
}

impl Refusal {
    /// The `rejected` code of the change's answer.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Forbidden { .. } => "forbidden",
            Refusal::RuleFailed { .. } => "rule_failed",
        }
    }

    /// The human-readable reason.
    pub fn message(&self) -> &str {
        match self {
            Refusal::Forbidden { message } | Refusal::RuleFailed { message } => message,
        }
    }
}

/// The stored state of a row a change is about to overwrite, as the rules see it.
#[derive(Clone, Copy, Debug)]
pub struct CurrentRow<'a> {
    /// The row's bucket.
    pub bucket: &'a str,
    /// The row's stored data (JSON text; `null` for a tombstone that never had content).
    pub data: &'a str,
    /// The row is a tombstone.
    pub deleted: bool,
}

/// Where a change goes, decided by the rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Routed {
    /// The row's bucket after the change.
    pub bucket: String,
    /// For a row of the membership collection: the `(user, bucket)` it grants after the change
    /// (`None` for a tombstone or a row that grants nothing). Always `None` elsewhere.
    pub grant: Option<(String, String)>,
}

/// One user's view of the rules during one request: what the user may read, and where the
/// user's changes go. The server builds one per request from the rules and the caller's token;
/// the storage calls it inside its transaction, after reading the user's membership grants.
pub trait Access: Send + Sync + fmt::Debug {
    /// The user making the request.
    fn user(&self) -> &UserId;

    /// The user's readable set `R` given the buckets the membership rows grant the user.
    ///
    /// # Errors
    /// A rule failed (the claims do not have the shape the rules expect).
    fn readable(&self, grants: &[String]) -> Result<BTreeSet<String>, Refusal>;

    /// Where `change` goes, given the user's readable set and the row's stored state. Checks that
    /// the user may read the stored row and write the old and the new bucket.
    ///
    /// # Errors
    /// [`Refusal::Forbidden`] or [`Refusal::RuleFailed`]: the change's `rejected` answer.
    fn route(
        &self,
        collection: &str,
        readable: &BTreeSet<String>,
        change: &Change,
        current: Option<CurrentRow<'_>>,
    ) -> Result<Routed, Refusal>;

    /// `collection` is the membership collection (its rows grant buckets).
    fn is_membership(&self, collection: &str) -> bool;

    /// What the pulls of this access are a part of, beyond the user and the collection: empty
    /// for the whole readable set, a subscription's key for a subscription. A cursor is signed
    /// for it, so a cursor of one subscription is refused for another.
    fn scope(&self) -> &str {
        ""
    }
}

/// An access narrowed to a subscription: the readable set is the user's, intersected with the
/// buckets the subscription selects, so a subscription never widens what a user reads. Pushes
/// are routed as the user's own.
#[derive(Debug)]
pub(crate) struct Subscribed {
    inner: Arc<dyn Access>,
    buckets: BTreeSet<String>,
    scope: String,
}

impl Subscribed {
    /// `inner` narrowed to `buckets`, for the subscription whose key is `scope`.
    pub(crate) fn new(inner: Arc<dyn Access>, buckets: BTreeSet<String>, scope: String) -> Self {
        Subscribed {
            inner,
            buckets,
            scope,
        }
    }
}

impl Access for Subscribed {
    fn user(&self) -> &UserId {
        self.inner.user()
    }

    fn readable(&self, grants: &[String]) -> Result<BTreeSet<String>, Refusal> {
        let mut readable = self.inner.readable(grants)?;
        readable.retain(|bucket| self.buckets.contains(bucket));
        Ok(readable)
    }

    fn route(
        &self,
        collection: &str,
        readable: &BTreeSet<String>,
        change: &Change,
        current: Option<CurrentRow<'_>>,
    ) -> Result<Routed, Refusal> {
        self.inner.route(collection, readable, change, current)
    }

    fn is_membership(&self, collection: &str) -> bool {
        self.inner.is_membership(collection)
    }

    fn scope(&self) -> &str {
        &self.scope
    }
}

/// The sync rules as the server sees them: which collections are shared, and each caller's
/// [`Access`]. Implemented by [`Rules`](crate::rules::Rules) (a rules file) and by test doubles.
pub trait Sharing: Send + Sync + fmt::Debug + 'static {
    /// `collection` is shared (named by the rules); other collections keep the per-user feed.
    fn is_shared(&self, collection: &str) -> bool;

    /// The shared collections, for the change notices a membership change sends.
    fn shared_collections(&self) -> Vec<String>;

    /// The access of `user` whose token carries `claims` (a JSON object; empty for a static
    /// token), for one request.
    fn access(&self, user: &UserId, claims: &serde_json::Value) -> Arc<dyn Access>;

    /// The buckets `subscription` selects in `collection` for `user` (before they are
    /// narrowed to what the user may read).
    ///
    /// # Errors
    /// The collection has no such subscription, or its rule fails on these parameters; the
    /// message names the subscription and the rule, never a value.
    fn subscription_buckets(
        &self,
        collection: &str,
        user: &UserId,
        claims: &serde_json::Value,
        subscription: &Subscription,
    ) -> Result<BTreeSet<String>, String> {
        let _ = (user, claims, subscription);
        Err(format!("collection {collection:?} has no subscriptions"))
    }
}

/// The change notifier's key for a bucket: starts with U+0001, which no user name holds, so it
/// never collides with a user's own key.
pub fn bucket_key(bucket: &str) -> UserId {
    UserId::new(format!("\u{1}bucket/{bucket}"))
}

/// The stored state of the row a pushed change is about, as a backend read it (inside the
/// push's write transaction).
#[derive(Clone, Copy, Debug)]
pub(crate) struct StoredState<'a> {
    pub(crate) bucket: &'a str,
    pub(crate) data: &'a str,
    pub(crate) deleted: bool,
    pub(crate) version: u64,
}

/// What a backend does with one change of a shared push, decided by [`decide`].
#[derive(Debug)]
pub(crate) enum Decision {
    /// Answer `rejected` without writing.
    Rejected(ChangeResult),
    /// Answer `conflict`, carrying the stored row (which the caller may read).
    Conflict,
    /// Write the row, under the next `seq`.
    Write(RowWrite),
}

/// A row to write for an accepted change.
#[derive(Debug)]
pub(crate) struct RowWrite {
    /// The row's bucket after the change.
    pub(crate) bucket: String,
    /// The row's new version.
    pub(crate) version: u64,
    /// The JSON text to store: the change's data, or for a deletion the stored data (a
    /// tombstone keeps the content it had; `null` when there was none).
    pub(crate) data: String,
    /// The bucket the row leaves (an exit is recorded), when the change moves it.
    pub(crate) moved_from: Option<String>,
    /// For a row of the membership collection: the `(user, bucket)` it grants after the change.
    pub(crate) grant: Option<(String, String)>,
}

/// The rules and the version check for one change of a shared push, the same for every
/// backend: refused changes are decided before the versions are compared, so an answer says
/// nothing of a row the caller may not read. `readable` is the pusher's readable set, or why the
/// rules could not compute it.
pub(crate) fn decide(
    access: &dyn Access,
    collection: &str,
    readable: &Result<BTreeSet<String>, Refusal>,
    change: &Change,
    stored: Option<StoredState<'_>>,
) -> Decision {
    let routed = readable
        .as_ref()
        .map_err(Clone::clone)
        .and_then(|readable| {
            access.route(
                collection,
                readable,
                change,
                stored.map(|row| CurrentRow {
                    bucket: row.bucket,
                    data: row.data,
                    deleted: row.deleted,
                }),
            )
        });
    let routed = match routed {
        Ok(routed) => routed,
        Err(refusal) => return Decision::Rejected(rejected(change, &refusal)),
    };
    let current_version = stored.map(|row| row.version);
    if current_version != change.base_version.map(|base| base.0) {
        return Decision::Conflict;
    }
    let data = match (change.deleted, stored) {
        (true, Some(row)) => row.data.to_owned(),
        (true, None) => "null".to_owned(),
        (false, _) => change.data.to_string(),
    };
    Decision::Write(RowWrite {
        moved_from: stored
            .filter(|row| row.bucket != routed.bucket)
            .map(|row| row.bucket.to_owned()),
        grant: routed.grant.filter(|_| !change.deleted),
        bucket: routed.bucket,
        version: current_version.unwrap_or(0).saturating_add(1),
        data,
    })
}

/// The `rejected` answer to `change` for `refusal`.
pub(crate) fn rejected(change: &Change, refusal: &Refusal) -> ChangeResult {
    ChangeResult {
        id: change.id.clone(),
        mutation_id: change.mutation_id.clone(),
        outcome: ChangeOutcome::Rejected {
            code: refusal.code().to_owned(),
            message: refusal.message().to_owned(),
        },
    }
}

/// The `accepted` answer to `change`.
pub(crate) fn accepted(change: &Change, version: u64, sync_id: SyncId) -> ChangeResult {
    ChangeResult {
        id: change.id.clone(),
        mutation_id: change.mutation_id.clone(),
        outcome: ChangeOutcome::Accepted {
            version: Version(version),
            sync_id,
        },
    }
}

/// A shared pull's position: opaque to clients (`b1-` and hex), see the module docs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedCursor {
    /// Position in the collection's `seq` order.
    pub p: u64,
    /// Hash of the readable set the device's copy accounts for ([`set_hash`]).
    pub set: String,
    /// A transition in progress: the set it leads to, and how far it got.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Transition>,
    /// The restore epoch of the database that issued it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e: Option<u64>,
    /// The highest `seq` of a row the device may have received, when above `p` (rows moved in
    /// are sent whatever their position); 0 otherwise. A move-out names only rows that entered
    /// their bucket at or before it: a row written later never reached the device, and is not
    /// named to it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub h: u64,
    /// The storage's signature of every other field, for the user and collection it was issued
    /// for (a `CursorKey`): a cursor changed by a client, or used by another user, is refused.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub m: String,
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

/// How far a transition between two readable sets got.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    /// Hash of the set the transition leads to.
    pub set: String,
    /// Hash of the buckets the device may hold in part (left over from a transition that was
    /// overtaken by another change of the readable set); none for a transition from a clean set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dirty: Option<String>,
    /// The phase.
    pub phase: Phase,
}

/// A transition's phase.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Removals in id order; the last id sent or skipped.
    Out(Option<String>),
    /// Move-in: the index of the bucket in the sorted list of new buckets, and the last `seq`
    /// read in it.
    In(usize, u64),
}

impl SharedCursor {
    /// The cursor text.
    pub fn encode(&self) -> String {
        format!(
            "{SCHEME}{}",
            hex(&serde_json::to_vec(self).unwrap_or_default())
        )
    }

    /// The cursor a text stands for; `Ok(None)` when the text is not a shared cursor at all (a
    /// plain `s1-` cursor from before the collection was shared).
    ///
    /// # Errors
    /// A message saying why a `b1-` text is damaged.
    pub fn decode(text: &str) -> Result<Option<SharedCursor>, String> {
        let Some(digits) = text.strip_prefix(SCHEME) else {
            return Ok(None);
        };
        let damaged = || {
            format!(
                "cursor {text:?} is damaged; send back the checkpoint's cursor unchanged, or \
                 pull from the beginning"
            )
        };
        if digits.len() > 16_384 {
            return Err(damaged());
        }
        let bytes = unhex(digits).ok_or_else(damaged)?;
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|_| damaged())
    }
}

/// The storage's secret for signing shared cursors (HMAC-SHA256): 32 random bytes kept in the
/// database, so every process of a deployment and a restored copy sign alike.
#[derive(Clone)]
pub(crate) struct CursorKey([u8; 32]);

impl fmt::Debug for CursorKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CursorKey(..)")
    }
}

impl CursorKey {
    /// The length of a key in bytes.
    pub(crate) const LEN: usize = 32;

    /// The bytes of a new key, from the operating system's random source.
    pub(crate) fn random() -> Result<[u8; Self::LEN], StorageError> {
        let mut bytes = [0u8; Self::LEN];
        getrandom::fill(&mut bytes).map_err(|e| StorageError::Random {
            message: e.to_string(),
        })?;
        Ok(bytes)
    }

    /// The key stored as `bytes`; `None` when they are not a key (the database was changed).
    pub(crate) fn from_bytes(bytes: &[u8]) -> Option<CursorKey> {
        <[u8; Self::LEN]>::try_from(bytes).ok().map(CursorKey)
    }

    fn mac(&self, user: &str, collection: &str, cursor: &SharedCursor) -> Hmac<Sha256> {
        // Every field but the signature; the user and collection end in U+0000, which neither
        // holds, so no two (user, collection) pairs feed the same bytes.
        let unsigned = SharedCursor {
            m: String::new(),
            ..cursor.clone()
        };
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
        mac.update(user.as_bytes());
        mac.update(&[0]);
        mac.update(collection.as_bytes());
        mac.update(&[0]);
        mac.update(&serde_json::to_vec(&unsigned).unwrap_or_default());
        mac
    }

    /// The signature of `cursor` issued to `user` for `collection`, in hex.
    pub(crate) fn sign(&self, user: &str, collection: &str, cursor: &SharedCursor) -> String {
        hex(&self.mac(user, collection, cursor).finalize().into_bytes())
    }

    /// Whether `cursor` carries this key's signature for `user` and `collection` (compared in
    /// constant time).
    pub(crate) fn verify(&self, user: &str, collection: &str, cursor: &SharedCursor) -> bool {
        let Some(signature) = unhex(&cursor.m) else {
            return false;
        };
        self.mac(user, collection, cursor)
            .verify_slice(&signature)
            .is_ok()
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push_str(&format!("{byte:02x}"));
    }
    text
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

/// The hash that names a readable set in cursors: XXH3-128 of the sorted bucket names, each
/// followed by U+0000 (which no bucket name holds).
pub fn set_hash(set: &BTreeSet<String>) -> String {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    for bucket in set {
        hasher.update(bucket.as_bytes());
        hasher.update(&[0]);
    }
    format!("{:032x}", hasher.digest128())
}

/// A readable set as it is stored: a JSON list of bucket names.
pub(crate) fn bucket_json(set: &BTreeSet<String>) -> String {
    serde_json::to_string(set).unwrap_or_else(|_| "[]".to_owned())
}

/// Hashes of the readable sets a storage knows to be stored: a cache, so that a pull whose sets
/// are stored already does not write. Sets are never deleted, so an entry never goes stale.
#[derive(Debug, Default)]
pub(crate) struct KnownSets(Mutex<HashSet<String>>);

impl KnownSets {
    /// The sets of a page not known to be stored, each once: `(hash, JSON list)`.
    pub(crate) fn unknown(&self, sets: &[(String, BTreeSet<String>)]) -> Vec<(String, String)> {
        let known = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let mut seen = HashSet::new();
        sets.iter()
            .filter(|(hash, _)| !known.contains(hash) && seen.insert(hash))
            .map(|(hash, set)| (hash.clone(), bucket_json(set)))
            .collect()
    }

    /// Records sets the storage has just stored.
    pub(crate) fn record(&self, stored: &[(String, String)]) {
        let mut known = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        known.extend(stored.iter().map(|(hash, _)| hash.clone()));
    }
}

/// One page of a shared pull.
#[derive(Clone, Debug, PartialEq)]
pub struct SharedPage {
    /// Rows and removals (tombstones without data), at most the limit.
    pub items: Vec<StoredDocument>,
    /// More follow.
    pub has_more: bool,
    /// The position after this page.
    pub cursor: SharedCursor,
    /// Readable sets the cursor refers to that the storage must keep (the backend stores them
    /// before it answers).
    pub(crate) new_sets: Vec<(String, BTreeSet<String>)>,
    /// The user's readable set in the page's snapshot.
    pub readable: BTreeSet<String>,
}

/// A push to a shared collection: the answers, and the buckets it wrote (for change notices).
#[derive(Clone, Debug, PartialEq)]
pub struct SharedPushOutcome {
    /// The answers and the last `seq` written.
    pub outcome: PushOutcome,
    /// Buckets that gained or lost a row, and users whose grants changed.
    pub touched: BTreeSet<String>,
    /// Users whose membership grants changed.
    pub regranted: BTreeSet<String>,
}

/// The digest of the rows of a shared collection a user may read.
#[derive(Clone, Debug, PartialEq)]
pub enum SharedDigest {
    /// Digest version 1: ids and versions.
    V1(fero_protocol::Digest),
    /// Digest version 2: ids, versions and content.
    V2(fero_protocol::ContentDigest),
}

/// A row read from a shared collection.
#[derive(Clone, Debug)]
pub(crate) struct SharedRow {
    pub(crate) doc: StoredDocument,
    pub(crate) bucket: String,
}

/// An entry of the feed of a set of buckets, in `seq` order.
#[derive(Clone, Debug)]
pub(crate) enum FeedEntry {
    /// A row whose bucket is in the set.
    Row(SharedRow),
    /// A row left a bucket of the set at `seq`; `current` is its bucket now (`None`: no row),
    /// `version` and `current_seq` its version and `seq` now (0 without a row).
    Exit {
        id: String,
        seq: u64,
        at: u64,
        version: u64,
        current: Option<String>,
        current_seq: u64,
    },
}

impl FeedEntry {
    fn seq(&self) -> u64 {
        match self {
            FeedEntry::Row(row) => row.doc.sync_id.0,
            FeedEntry::Exit { seq, .. } => *seq,
        }
    }
}

/// A move-out candidate: a row that is or was in a bucket being dropped, with its state now.
#[derive(Clone, Debug)]
pub(crate) struct Candidate {
    pub(crate) id: String,
    pub(crate) current: Option<String>,
    pub(crate) version: u64,
    pub(crate) seq: u64,
    pub(crate) updated_at: u64,
}

/// What the pull algorithm reads, all in one snapshot of the database.
pub(crate) trait Snapshot {
    /// The buckets the membership rows grant `user`.
    fn grants(&mut self, user: &str) -> impl Future<Output = Result<Vec<String>, StorageError>>;
    /// The collection's highest assigned `seq`.
    fn head(&mut self, collection: &str) -> impl Future<Output = Result<u64, StorageError>>;
    /// The database's restore epoch.
    fn epoch(&mut self) -> impl Future<Output = Result<Option<u64>, StorageError>>;
    /// A stored readable set.
    fn set(
        &mut self,
        hash: &str,
    ) -> impl Future<Output = Result<Option<BTreeSet<String>>, StorageError>>;
    /// Rows of `buckets` with `seq > after` and exits from them after `after`, in `seq` order,
    /// at most `limit`.
    fn feed(
        &mut self,
        collection: &str,
        buckets: &BTreeSet<String>,
        after: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<FeedEntry>, StorageError>>;
    /// Live rows of `bucket` with `seq > after`, in `seq` order, at most `limit`.
    fn bucket_rows(
        &mut self,
        collection: &str,
        bucket: &str,
        after: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<SharedRow>, StorageError>>;
    /// Rows currently in `buckets`, and rows that exited them after `since`, that had entered
    /// the bucket at or before `reach` (the highest `seq` the device may have received), with id
    /// above `after_id`, in id order, each once, at most `limit`.
    #[allow(clippy::too_many_arguments)]
    fn candidates(
        &mut self,
        collection: &str,
        buckets: &BTreeSet<String>,
        since: u64,
        reach: u64,
        after_id: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Candidate>, StorageError>>;
}

/// Runs a future that never waits (a [`Snapshot`] over a synchronous connection) to its end.
pub(crate) fn run_ready<T>(future: impl Future<Output = T>) -> T {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(value) => value,
        Poll::Pending => unreachable!("a synchronous snapshot never waits"),
    }
}

/// A removal: the tombstone a device gets for a row it may no longer read. No data, no bucket.
fn removal(id: String, version: u64, seq: u64, at: u64) -> StoredDocument {
    StoredDocument {
        id,
        sync_id: SyncId(seq),
        version: Version(version),
        updated_at: Timestamp(at),
        deleted: true,
        data: RawValue::NULL.to_owned(),
    }
}

/// The refusal of a pull whose rules failed, as a storage error.
fn rule_error(collection: &str, refusal: Refusal) -> StorageError {
    StorageError::Rules {
        collection: collection.to_owned(),
        message: refusal.message().to_owned(),
    }
}

/// One page of `collection` for `access`'s user after `cursor` (`None`: the origin): the cursor
/// is checked against its signature first, and the next one is signed.
///
/// # Errors
/// [`StorageError::CursorRefused`] for a cursor this storage did not issue to this user for
/// this collection (changed, forged, another user's, or signed with another key); the errors of
/// the page itself.
pub(crate) async fn pull_page<S: Snapshot>(
    snap: &mut S,
    key: &CursorKey,
    access: &dyn Access,
    collection: &str,
    cursor: Option<SharedCursor>,
    limit: usize,
) -> Result<SharedPage, StorageError> {
    let user = access.user().as_str();
    // A subscription's cursors are signed for it: one subscription's cursor is refused for
    // another (its readable set would be read as the other's).
    let scoped;
    let signed_for = if access.scope().is_empty() {
        collection
    } else {
        scoped = format!("{collection}\u{0}{}", access.scope());
        &scoped
    };
    if let Some(cursor) = &cursor {
        if !key.verify(user, signed_for, cursor) {
            return Err(StorageError::CursorRefused {
                collection: collection.to_owned(),
            });
        }
    }
    let mut page = page_after(snap, access, collection, cursor, limit).await?;
    page.cursor.m = key.sign(user, signed_for, &page.cursor);
    Ok(page)
}

/// The algorithm of [`pull_page`], on a cursor known to be genuine.
async fn page_after<S: Snapshot>(
    snap: &mut S,
    access: &dyn Access,
    collection: &str,
    cursor: Option<SharedCursor>,
    limit: usize,
) -> Result<SharedPage, StorageError> {
    let grants = snap.grants(access.user().as_str()).await?;
    let readable = access
        .readable(&grants)
        .map_err(|refusal| rule_error(collection, refusal))?;
    let now_hash = set_hash(&readable);
    let epoch = snap.epoch().await?;
    let mut new_sets = vec![(now_hash.clone(), readable.clone())];
    let mut cursor = match cursor {
        None => SharedCursor {
            p: 0,
            set: now_hash.clone(),
            to: None,
            e: epoch,
            h: 0,
            m: String::new(),
        },
        Some(cursor) => {
            check(snap, collection, &cursor, epoch).await?;
            cursor
        }
    };
    cursor.e = epoch;
    let mut items: Vec<StoredDocument> = Vec::new();
    let mut sent: HashSet<String> = HashSet::new();
    loop {
        // A transition overtaken by another change of the readable set restarts. Of the buckets
        // it touched, only those both sets hold are intact; every other one may be held in part
        // (half moved out, or half moved in) and is "dirty": moved out if it is not readable
        // now, moved in again from the start if it is.
        if let Some(overtaken) = cursor.to.take_if(|t| t.set != now_hash) {
            let clean = load(snap, collection, &cursor.set, &new_sets).await?;
            let target = load(snap, collection, &overtaken.set, &new_sets).await?;
            let mut dirty = match &overtaken.dirty {
                Some(hash) => load(snap, collection, hash, &new_sets).await?,
                None => BTreeSet::new(),
            };
            let kept: BTreeSet<String> = clean.intersection(&target).cloned().collect();
            dirty.extend(clean.symmetric_difference(&target).cloned());
            dirty.retain(|bucket| !kept.contains(bucket));
            let (kept_hash, dirty_hash) = (set_hash(&kept), set_hash(&dirty));
            cursor.set = kept_hash.clone();
            cursor.to = Some(Transition {
                set: now_hash.clone(),
                dirty: Some(dirty_hash.clone()),
                phase: Phase::Out(None),
            });
            new_sets.push((kept_hash, kept));
            new_sets.push((dirty_hash, dirty));
        }
        if cursor.to.is_none() && cursor.set != now_hash {
            if cursor.p == 0 {
                // Nothing held yet: the plain feed from the origin is the whole set.
                cursor.set = now_hash.clone();
            } else {
                cursor.to = Some(Transition {
                    set: now_hash.clone(),
                    dirty: None,
                    phase: Phase::Out(None),
                });
            }
        }
        let room = limit - items.len();
        if room == 0 {
            return Ok(finish(items, true, cursor, new_sets, readable));
        }
        let Some(transition) = cursor.to.clone() else {
            // The plain feed of the readable set after P.
            let entries = snap.feed(collection, &readable, cursor.p, room + 1).await?;
            let has_more = entries.len() > room;
            for entry in entries.into_iter().take(room) {
                cursor.p = entry.seq();
                match entry {
                    FeedEntry::Row(row) => {
                        guard(collection, &readable, &row)?;
                        // A row of a bucket moved in by this very page comes again here when it
                        // was written after P: the same snapshot, the same version, sent once
                        // (a client refuses a page that holds an id twice).
                        if sent.insert(row.doc.id.clone()) {
                            items.push(row.doc);
                        }
                    }
                    FeedEntry::Exit {
                        id,
                        seq,
                        at,
                        version,
                        current,
                        current_seq,
                    } => {
                        let readable_now = current.as_ref().is_some_and(|b| readable.contains(b));
                        if readable_now {
                            // The device keeps its copy: the current version comes later in
                            // the feed, and until then the device holds the row through its
                            // current bucket; the reach covers it, so a move-out of that
                            // bucket before the feed gets there names it.
                            cursor.h = cursor.h.max(current_seq);
                        } else if sent.insert(id.clone()) {
                            items.push(removal(id, version, seq, at));
                        }
                    }
                }
            }
            if !has_more {
                // Every row and exit of the readable set up to the collection's head is in this
                // snapshot and was read: the position moves to the head, past the other
                // buckets' writes, so rows moved in later are not sent again from an old P.
                cursor.p = cursor.p.max(snap.head(collection).await?);
            }
            return Ok(finish(items, has_more, cursor, new_sets, readable));
        };
        let from = load(snap, collection, &cursor.set, &new_sets).await?;
        match transition.phase {
            Phase::Out(after_id) => {
                let mut dropped: BTreeSet<String> = from.difference(&readable).cloned().collect();
                if let Some(hash) = &transition.dirty {
                    let dirty = load(snap, collection, hash, &new_sets).await?;
                    dropped.extend(dirty.difference(&readable).cloned());
                }
                let found = if dropped.is_empty() {
                    Vec::new()
                } else {
                    snap.candidates(
                        collection,
                        &dropped,
                        cursor.p,
                        cursor.h.max(cursor.p),
                        after_id.as_deref(),
                        room + 1,
                    )
                    .await?
                };
                let more = found.len() > room;
                let mut last = after_id;
                for candidate in found.into_iter().take(room) {
                    last = Some(candidate.id.clone());
                    let readable_now = candidate
                        .current
                        .as_ref()
                        .is_some_and(|b| readable.contains(b));
                    if readable_now {
                        // The device keeps it: its current version (after P, in a readable
                        // bucket) comes with the feed. Until then the device holds it through
                        // that bucket, so the highest position delivered now covers it: if the
                        // bucket is dropped before the feed gets there, the move-out names it.
                        cursor.h = cursor.h.max(candidate.seq);
                    } else if sent.insert(candidate.id.clone()) {
                        items.push(removal(
                            candidate.id,
                            candidate.version,
                            candidate.seq,
                            candidate.updated_at,
                        ));
                    }
                }
                cursor.to = Some(Transition {
                    set: transition.set,
                    dirty: transition.dirty,
                    phase: if more {
                        Phase::Out(last)
                    } else {
                        Phase::In(0, 0)
                    },
                });
            }
            Phase::In(index, after) => {
                let added: Vec<&String> = readable.difference(&from).collect();
                let Some(bucket) = added.get(index) else {
                    // Every new bucket is in: the device now holds the new set up to P.
                    cursor.set = transition.set;
                    cursor.to = None;
                    continue;
                };
                let rows = snap
                    .bucket_rows(collection, bucket, after, room + 1)
                    .await?;
                let more = rows.len() > room;
                let mut last = after;
                for row in rows.into_iter().take(room) {
                    guard(collection, &readable, &row)?;
                    last = row.doc.sync_id.0;
                    cursor.h = cursor.h.max(last);
                    if sent.insert(row.doc.id.clone()) {
                        items.push(row.doc);
                    }
                }
                cursor.to = Some(Transition {
                    set: transition.set,
                    dirty: transition.dirty,
                    phase: if more {
                        Phase::In(index, last)
                    } else {
                        Phase::In(index + 1, 0)
                    },
                });
            }
        }
    }
}

/// The last line against a leak: a row a backend read for a page must be of a readable bucket;
/// one that is not is a backend bug, and the page is refused rather than sent.
fn guard(
    collection: &str,
    readable: &BTreeSet<String>,
    row: &SharedRow,
) -> Result<(), StorageError> {
    if readable.contains(&row.bucket) {
        return Ok(());
    }
    Err(StorageError::Corrupt {
        collection: collection.to_owned(),
        id: row.doc.id.clone(),
        message: "the storage read a row of a bucket the caller may not read for a page; \
                  the page was refused"
            .to_owned(),
    })
}

fn finish(
    items: Vec<StoredDocument>,
    has_more: bool,
    mut cursor: SharedCursor,
    new_sets: Vec<(String, BTreeSet<String>)>,
    readable: BTreeSet<String>,
) -> SharedPage {
    if cursor.h <= cursor.p {
        cursor.h = 0;
    }
    SharedPage {
        items,
        has_more,
        cursor,
        new_sets,
        readable,
    }
}

/// The stored set `hash` names; a cursor naming an unknown set cannot be served.
async fn load<S: Snapshot>(
    snap: &mut S,
    collection: &str,
    hash: &str,
    known: &[(String, BTreeSet<String>)],
) -> Result<BTreeSet<String>, StorageError> {
    if hash == set_hash(&BTreeSet::new()) {
        return Ok(BTreeSet::new());
    }
    if let Some((_, set)) = known.iter().find(|(known, _)| known == hash) {
        return Ok(set.clone());
    }
    snap.set(hash)
        .await?
        .ok_or_else(|| StorageError::UnknownReadableSet {
            collection: collection.to_owned(),
        })
}

/// The epoch and head checks of a cursor, as for the per-user feed.
async fn check<S: Snapshot>(
    snap: &mut S,
    collection: &str,
    cursor: &SharedCursor,
    epoch: Option<u64>,
) -> Result<(), StorageError> {
    if cursor.p == 0 {
        return Ok(());
    }
    if let (Some(cursor_epoch), Some(epoch)) = (cursor.e, epoch) {
        if cursor_epoch != epoch {
            return Err(StorageError::Restored {
                collection: collection.to_owned(),
                position: SyncId(cursor.p),
                cursor_epoch,
                epoch,
            });
        }
    }
    let head = snap.head(collection).await?;
    if cursor.p > head {
        return Err(StorageError::ServerBehind {
            collection: collection.to_owned(),
            position: SyncId(cursor.p),
            head: SyncId(head),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_damage_is_refused() {
        let cursor = SharedCursor {
            p: 42,
            set: set_hash(&BTreeSet::from(["team:1".to_owned()])),
            to: Some(Transition {
                set: "ab".into(),
                dirty: None,
                phase: Phase::Out(Some("id-9".into())),
            }),
            e: Some(7),
            h: 50,
            m: "ab12".into(),
        };
        let text = cursor.encode();
        assert!(text.starts_with("b1-"));
        assert_eq!(SharedCursor::decode(&text), Ok(Some(cursor)));
        assert_eq!(SharedCursor::decode("s1-5"), Ok(None));
        assert!(SharedCursor::decode("b1-zz").is_err());
        assert!(SharedCursor::decode("b1-7b7d").is_err());
    }

    #[test]
    fn a_signature_holds_for_its_user_collection_and_fields_only() {
        let key = CursorKey([7; CursorKey::LEN]);
        let mut cursor = SharedCursor {
            p: 3,
            set: "abc".into(),
            to: None,
            e: None,
            h: 0,
            m: String::new(),
        };
        cursor.m = key.sign("ada", "tasks", &cursor);
        assert!(key.verify("ada", "tasks", &cursor));
        assert!(!key.verify("bob", "tasks", &cursor), "another user");
        assert!(!key.verify("ada", "notes", &cursor), "another collection");
        assert!(
            !key.verify("ad", "atasks", &cursor),
            "the same bytes split elsewhere"
        );
        assert!(!CursorKey([8; CursorKey::LEN]).verify("ada", "tasks", &cursor));
        let changed = SharedCursor {
            h: 9,
            ..cursor.clone()
        };
        assert!(!key.verify("ada", "tasks", &changed), "a changed field");
        let unsigned = SharedCursor {
            m: String::new(),
            ..cursor
        };
        assert!(!key.verify("ada", "tasks", &unsigned), "no signature");
    }

    #[test]
    fn set_hashes_tell_sets_apart() {
        let a = BTreeSet::from(["ab".to_owned(), "c".to_owned()]);
        let b = BTreeSet::from(["a".to_owned(), "bc".to_owned()]);
        assert_ne!(set_hash(&a), set_hash(&b));
        assert_eq!(set_hash(&a), set_hash(&a.clone()));
    }
}
