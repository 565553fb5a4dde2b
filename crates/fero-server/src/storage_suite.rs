//! The storage test suite, written once for every backend.
//!
//! Each function takes a fresh, empty storage (the retention tests also take the
//! [`ManualClock`] it stamps times with), exercises one clause of the
//! [`Storage`] contract and panics (with a message naming the broken clause) when the backend
//! breaks it. [`storage_suite_tests!`](crate::storage_suite_tests) turns the whole suite into
//! `#[tokio::test]`s for a backend:
//!
//! ```no_run
//! // tests/storage_suite_sqlite.rs; tests/storage_suite_postgres.rs looks the same, with
//! // `optional` before the factory so that it skips when no PostgreSQL server is configured.
//! fero_server::storage_suite_tests!(|clock: fero_server::storage_suite::ManualClock| async move {
//!     let clock = std::sync::Arc::new(clock);
//!     let storage = fero_server::SqliteStorage::open_with_clock(":memory:", clock)?;
//!     Ok::<_, fero_server::StorageError>((storage, ()))
//! });
//! # fn main() {}
//! ```
//! The factory gets the test's [`ManualClock`], which the storage must stamp times with (the
//! retention tests move it), and returns the storage and a guard kept alive for the test (a
//! temporary directory, say).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use fero::{Clock, SyncId, Timestamp, Version};
use fero_protocol::{Change, ChangeOutcome, ChangeResult, Document, MutationId};
use serde_json::json;

use crate::error::StorageError;
use crate::storage::{FeedPosition, SeedRow, Storage, StoredDocument};
use crate::user::UserId;

/// A wall clock that moves only when told: the suite's backends stamp `updated_at` and the
/// `recorded_at` of push answers with it, so the retention tests set the time instead of
/// waiting for it.
///
/// Clones share one time.
///
/// # Examples
/// ```
/// use fero::Clock;
/// use fero_server::storage_suite::ManualClock;
///
/// let clock = ManualClock::new();
/// let start = clock.now();
/// clock.advance(std::time::Duration::from_secs(2));
/// assert_eq!(clock.now().0, start.0 + 2_000);
/// ```
#[derive(Clone, Debug)]
pub struct ManualClock {
    millis: Arc<AtomicU64>,
}

impl ManualClock {
    /// What a new clock shows: 2023-11-14 22:13:20 UTC (any fixed, plausible instant would do).
    pub const START: Timestamp = Timestamp(1_700_000_000_000);

    /// A clock showing [`START`](Self::START).
    pub fn new() -> Self {
        ManualClock {
            millis: Arc::new(AtomicU64::new(Self::START.0)),
        }
    }

    /// Sets the time (it may go backwards: it is a wall clock).
    pub fn set(&self, now: Timestamp) {
        self.millis.store(now.0, Ordering::SeqCst);
    }

    /// Moves the time forward by `by`, to the millisecond.
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        // `fetch_update` with an infallible closure never returns `Err`.
        let _ = self
            .millis
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |now| {
                Some(now.saturating_add(by))
            });
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        ManualClock::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.millis.load(Ordering::SeqCst))
    }
}

/// A change on `base` with mutation id `device/seq`.
fn change(id: &str, base: Option<u64>, device: &str, seq: u64, data: serde_json::Value) -> Change {
    Change {
        id: id.to_owned(),
        base_version: base.map(Version),
        mutation_id: MutationId::new(device, seq),
        deleted: false,
        data,
    }
}

fn deletion(id: &str, base: u64, device: &str, seq: u64) -> Change {
    Change {
        deleted: true,
        ..change(id, Some(base), device, seq, serde_json::Value::Null)
    }
}

/// The version and `sync_id` of an accepted result.
#[track_caller]
fn accepted(result: &ChangeResult) -> (Version, SyncId) {
    match &result.outcome {
        ChangeOutcome::Accepted { version, sync_id } => (*version, *sync_id),
        other => panic!(
            "change {:?} should have been accepted, got {other:?}",
            result.id
        ),
    }
}

/// The server row of a conflict result.
#[track_caller]
fn conflict(result: &ChangeResult) -> Option<&Document> {
    match &result.outcome {
        ChangeOutcome::Conflict { server } => server.as_ref(),
        other => panic!(
            "change {:?} should have conflicted, got {other:?}",
            result.id
        ),
    }
}

/// A pulled row with its content parsed; a content that does not parse breaks the contract (the
/// storage stores only JSON, and the server sends the stored text on verbatim).
fn parsed(stored: &StoredDocument) -> Document {
    stored.to_document().unwrap_or_else(|error| {
        panic!(
            "row {:?} came back with content that does not parse ({error}): {}",
            stored.id,
            stored.data.get()
        )
    })
}

/// Every row of `collection` after `after`, paging by `limit`.
async fn pull_all<S: Storage + ?Sized>(
    storage: &S,
    owner: &UserId,
    collection: &str,
    limit: u32,
) -> Result<Vec<Document>, StorageError> {
    let mut rows = Vec::new();
    let mut after = SyncId(0);
    loop {
        let page = storage.pull(owner, collection, after, limit).await?;
        if let Some(last) = page.items.last() {
            after = last.sync_id;
        }
        rows.extend(page.items.iter().map(parsed));
        if !page.has_more {
            return Ok(rows);
        }
    }
}

/// Pushed rows come back from a pull with their content, version 1, in `sync_id` order.
///
/// # Errors
/// The storage's error.
///
/// # Panics
/// When the backend breaks the contract.
pub async fn pushed_rows_are_pulled_back_in_sync_id_order<S: Storage>(
    storage: S,
) -> Result<(), StorageError> {
    let alice = UserId::new("alice");
    let changes = (0..5)
        .map(|i| change(&format!("c{i}"), None, "d1", i + 1, json!({ "n": i })))
        .collect();
    let outcome = storage.push(&alice, "contacts", changes).await?;
    assert_eq!(outcome.results.len(), 5, "one result per change");
    let written: Vec<SyncId> = outcome.results.iter().map(|r| accepted(r).1).collect();
    assert!(
        written.windows(2).all(|w| w[0] < w[1]),
        "sync_ids must increase in push order: {written:?}"
    );
    assert_eq!(outcome.last_written, written.last().copied());
    let page = storage.pull(&alice, "contacts", SyncId(0), 100).await?;
    assert!(!page.has_more);
    let ids: Vec<&str> = page.items.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["c0", "c1", "c2", "c3", "c4"]);
    for (i, document) in page.items.iter().enumerate() {
        assert_eq!(document.version, Version(1));
        assert_eq!(parsed(document).data, json!({ "n": i }));
        assert!(!document.deleted);
        assert!(document.updated_at.0 > 0, "updated_at must be stamped");
    }
    Ok(())
}

/// Every accepted write raises the version by one and takes a new, greater `sync_id`.
///
/// # Errors
/// The storage's error.
///
/// # Panics
/// When the backend breaks the contract.
pub async fn each_accepted_write_raises_the_version_by_one<S: Storage>(
    storage: S,
) -> Result<(), StorageError> {
    let alice = UserId::new("alice");
    let mut base = None;
    let mut last_sync_id = SyncId(0);
    for seq in 1..=4 {
        let outcome = storage
            .push(
                &alice,
                "notes",
                vec![change("n", base, "d1", seq, json!({ "rev": seq }))],
            )
            .await?;
        let (version, sync_id) = accepted(&outcome.results[0]);
        assert_eq!(version, Version(seq), "version after {seq} writes");
        assert!(sync_id > last_sync_id, "each write takes a greater sync_id");
        last_sync_id = sync_id;
        base = Some(version.0);
    }
    let rows = pull_all(&storage, &alice, "notes", 10).await?;
    assert_eq!(rows.len(), 1, "a row appears once, at its latest state");
    assert_eq!(
        (rows[0].version, rows[0].sync_id),
        (Version(4), last_sync_id)
    );
    assert_eq!(rows[0].data, json!({ "rev": 4 }));
    Ok(())
}

/// A change on a stale base version is not written; the answer carries the current row.
///
/// # Errors
/// The storage's error.
///
/// # Panics
/// When the backend breaks the contract.
pub async fn a_stale_base_version_is_a_conflict_carrying_the_current_row<S: Storage>(
    storage: S,
) -> Result<(), StorageError> {
    let alice = UserId::new("alice");
    storage
        .push(
            &alice,
            "notes",
            vec![change("n", None, "a", 1, json!("v1"))],
        )
        .await?;
    storage
        .push(
            &alice,
            "notes",
            vec![change("n", Some(1), "a", 2, json!("v2"))],
        )
        .await?;
    let outcome = storage
        .push(
            &alice,
            "notes",
            vec![change("n", Some(1), "b", 1, json!("from b"))],
        )
        .await?;
    let server = conflict(&outcome.results[0]).expect("the conflict carries the stored row");
    assert_eq!((server.version, &server.data), (Version(2), &json!("v2")));
    assert_eq!(outcome.last_written, None, "a conflict writes nothing");
    let rows = pull_all(&storage, &alice, "notes", 10).await?;
    assert_eq!(rows[0].data, json!("v2"), "the stored row is unchanged");
    let missing = storage
        .push(
            &alice,
            "notes",
            vec![change("ghost", Some(3), "b", 2, json!("x"))],
        )
        .await?;
    assert_eq!(
        conflict(&missing.results[0]),
        None,
        "an update of a missing row conflicts with nothing"
    );
    Ok(())
}

/// Creating (no base version) an id that exists, tombstone included, is a conflict.
///
/// # Errors
/// The storage's error.
///
/// # Panics
/// When the backend breaks the contract.
pub async fn creating_an_existing_id_is_a_conflict<S: Storage>(
    storage: S,
) -> Result<(), StorageError> {
    let alice = UserId::new("alice");
    storage
        .push(
            &alice,
            "notes",
            vec![change("n", None, "a", 1, json!("first"))],
        )
        .await?;
    let outcome = storage
        .push(
            &alice,
            "notes",
            vec![change("n", None, "b", 1, json!("second"))],
        )
        .await?;
    let server = conflict(&outcome.results[0]).expect("the conflict carries the stored row");
    assert_eq!(server.data, json!("first"));
    storage
        .push(&alice, "notes", vec![deletion("n", 1, "a", 2)])
        .await?;
    let outcome = storage
        .push(
            &alice,
            "notes",
            vec![change("n", None, "b", 2, json!("third"))],
        )
        .await?;
    let server = conflict(&outcome.results[0]).expect("a tombstone is a stored row");
    assert!(server.deleted);
    Ok(())
}

/// A replayed mutation (same device and sequence number) gets its original answer, even though
/// its base version is stale by now, and writes nothing.
///
/// # Errors
/// The storage's error.
///
/// # Panics
/// When the backend breaks the contract.
pub async fn a_replayed_mutation_gets_its_original_answer<S: Storage>(
    storage: S,
) -> Result<(), StorageError> {
    let alice = UserId::new("alice");
    let create = change("n", None, "phone", 7, json!("v1"));
    let first = storage.push(&alice, "notes", vec![create.clone()]).await?;
    let (version, sync_id) = accepted(&first.results[0]);
    // The response was lost; the phone replays the same change, whose base (None) is now stale.
    let replay = storage.push(&alice, "notes", vec![create]).await?;
    assert_eq!(
        replay.results, first.results,
        "a replay gets the original answer"
    );
    assert_eq!(replay.last_written, None, "a replay writes nothing");
    let rows = pull_all(&storage, &alice, "notes", 10).await?;
    assert_eq!((rows[0].version, rows[0].sync_id), (version, sync_id));
    // The same for an update whose base went stale through its own acceptance.
    let update = change("n", Some(1), "phone", 8, json!("v2"));
    let first = storage.push(&alice, "notes", vec![update.clone()]).await?;
    let replay = storage.push(&alice, "notes", vec![update]).await?;
    assert_eq!(replay.results, first.results);
    assert_eq!(accepted(&replay.results[0]).0, Version(2));
    Ok(())
}

/// A conflict writes nothing and is not recorded: the same mutation id may be resent on the
/// server's current version and is then accepted.
///
/// # Errors
/// The storage's error.
///
/// # Panics
/// When the backend breaks the contract.
pub async fn a_conflicted_mutation_can_be_resent_on_a_new_base<S: Storage>(
    storage: S,
) -> Result<(), StorageError> {
    let alice = UserId::new("alice");
    storage
        .push(&alice, "notes", vec![change("n", None, "a", 1, json!("a"))])
        .await?;
    let stale = storage
        .push(&alice, "notes", vec![change("n", None, "b", 1, json!("b"))])
        .await?;
    let server = conflict(&stale.results[0]).expect("conflict with the stored row");
    let rebased = storage
        .push(
            &alice,
            "notes",
            vec![change("n", Some(server.version.0), "b", 1, json!("b"))],
        )
        .await?;
    assert_eq!(accepted(&rebased.results[0]).0, Version(2));
    Ok(())
}

/// A deletion keeps the row as a tombstone with its last data, a new version and a new
/// `sync_id`, pulled like any change and left out of the digest.
///
/// # Errors
/// The storage's error.
///
/// # Panics
/// When the backend breaks the contract.
pub async fn a_deletion_is_a_tombstone_with_a_new_version_and_sync_id<S: Storage>(
    storage: S,
) -> Result<(), StorageError> {
    let alice = UserId::new("alice");
    let created = storage
        .push(
            &alice,
            "notes",
            vec![change("n", None, "a", 1, json!({ "t": "keep me" }))],
        )
        .await?;
    let (_, created_at) = accepted(&created.results[0]);
    let deleted = storage
        .push(&alice, "notes", vec![deletion("n", 1, "a", 2)])
        .await?;
    let (version, sync_id) = accepted(&deleted.results[0]);
    assert_eq!(version, Version(2));
    assert!(sync_id > created_at);
    let page = storage.pull(&alice, "notes", created_at, 10).await?;
    assert_eq!(
        page.items.len(),
        1,
        "the tombstone is in the feed after the create"
    );
    let tombstone = &page.items[0];
    assert!(tombstone.deleted);
    assert_eq!((tombstone.version, tombstone.sync_id), (version, sync_id));
    assert_eq!(
        parsed(tombstone).data,
        json!({ "t": "keep me" }),
        "a tombstone keeps its last data"
    );
    assert_eq!(storage.digest(&alice, "notes").await?.count(), 0);
    let revived = storage
        .push(
            &alice,
            "notes",
            vec![change("n", Some(2), "a", 3, json!({ "t": "back" }))],
        )
        .await?;
    assert_eq!(
        accepted(&revived.results[0]).0,
        Version(3),
        "a tombstone can be written on"
    );
    Ok(())
}

/// Two owners with the same ids never see, overwrite or conflict with each other's rows.
///
/// # Errors
/// The storage's error.
///
/// # Panics
/// When the backend breaks the contract.
pub async fn owners_never_see_or_conflict_with_each_others_rows<S: Storage>(
    storage: S,
) -> Result<(), StorageError> {
    let (alice, bob) = (UserId::new("alice"), UserId::new("bob"));
    storage
        .push(
            &alice,
            "notes",
            vec![change("same", None, "d", 1, json!("alice's"))],
        )
        .await?;
    let bobs = storage
        .push(
            &bob,
            "notes",
            vec![change("same", None, "d", 1, json!("bob's"))],
        )
        .await?;
    assert_eq!(
        accepted(&bobs.results[0]).0,
        Version(1),
        "same id and mutation id under two users"
    );
    let onto_alices = storage
        .push(
            &bob,
            "notes",
            vec![change("only-alice", Some(1), "d", 2, json!("x"))],
        )
        .await?;
    assert_eq!(
        conflict(&onto_alices.results[0]),
        None,
        "bob cannot see alice's row"
    );
    let alices = pull_all(&storage, &alice, "notes", 10).await?;
    let bobs = pull_all(&storage, &bob, "notes", 10).await?;
    assert_eq!(alices.len(), 1);
    assert_eq!(alices[0].data, json!("alice's"));
    assert_eq!(bobs.len(), 1);
    assert_eq!(bobs[0].data, json!("bob's"));
    assert_eq!(storage.digest(&alice, "notes").await?.count(), 1);
    assert_eq!(
        storage
            .digest(&UserId::new("carol"), "notes")
            .await?
            .count(),
        0
    );
    Ok(())
}

/// Collections have separate feeds and digests.
///
/// # Errors
/// The storage's error.
///
/// # Panics
/// When the backend breaks the contract.
pub async fn collections_do_not_share_rows<S: Storage>(storage: S) -> Result<(), StorageError> {
    let alice = UserId::new("alice");
    storage
        .push(
            &alice,
            "contacts",
            vec![change("x", None, "d", 1, json!(1))],
        )
        .await?;
    storage
        .push(&alice, "notes", vec![change("x", None, "d", 2, json!(2))])
        .await?;
    let contacts = pull_all(&storage, &alice, "contacts", 10).await?;
    let notes = pull_all(&storage, &alice, "notes", 10).await?;
    assert_eq!((contacts.len(), notes.len()), (1, 1));
    assert_eq!((&contacts[0].data, &notes[0].data), (&json!(1), &json!(2)));
    Ok(())
}

/// Pages follow each other without a gap or a repeat; `has_more` is true exactly when rows
/// remain (a last page of exactly `limit` rows says `false`).
///
/// # Errors
/// The storage's error.
///
/// # Panics
/// When the backend breaks the contract.
pub async fn pages_follow_each_other_without_gap_or_repeat<S: Storage>(
    storage: S,
) -> Result<(), StorageError> {
    let alice = UserId::new("alice");
    let rows = (0..30)
        .map(|i| SeedRow::new(format!("r{i:02}"), json!(i)))
        .collect();
    storage.seed(&alice, "items", rows).await?;
    let mut after = SyncId(0);
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let page = storage.pull(&alice, "items", after, 10).await?;
        pages += 1;
        assert!(page.items.len() <= 10);
        seen.extend(page.items.iter().map(|d| d.id.clone()));
        after = page.items.last().map_or(after, |d| d.sync_id);
        if !page.has_more {
            break;
        }
        assert!(pages < 10, "has_more never turned false");
    }
    assert_eq!(
        pages, 3,
        "30 rows by 10: the third page is full and has_more is false"
    );
    let expected: Vec<String> = (0..30).map(|i| format!("r{i:02}")).collect();
    assert_eq!(seen, expected);
    let empty = storage.pull(&alice, "items", after, 10).await?;
    assert!(empty.items.is_empty() && !empty.has_more);
    Ok(())
}

/// Seeded rows take consecutive `sync_id`s after earlier writes, version 1 when new.
///
/// # Errors
/// The storage's error.
///
/// # Panics
/// When the backend breaks the contract.
pub async fn seeded_rows_take_consecutive_sync_ids<S: Storage>(
    storage: S,
) -> Result<(), StorageError> {
    let alice = UserId::new("alice");
    let first = storage
        .seed(&alice, "items", vec![SeedRow::new("a", json!(1))])
        .await?;
    let second = storage
        .seed(
            &alice,
            "items",
            vec![SeedRow::new("b", json!(2)), SeedRow::new("a", json!(3))],
        )
        .await?;
    assert_eq!(second.written, 2);
    let first_id = first.last_sync_id.expect("a row was written").0;
    assert_eq!(second.last_sync_id, Some(SyncId(first_id + 2)));
    let rows = pull_all(&storage, &alice, "items", 10).await?;
    let shape: Vec<(&str, u64)> = rows.iter().map(|d| (d.id.as_str(), d.version.0)).collect();
    assert_eq!(
        shape,
        [("b", 1), ("a", 2)],
        "a re-seeded row is a new version at the end"
    );
    Ok(())
}

/// The digest counts live rows by `(id, version)`, tombstones excluded.
///
/// # Errors
/// The storage's error.
///
/// # Panics
/// When the backend breaks the contract.
pub async fn the_digest_covers_live_rows_only<S: Storage>(storage: S) -> Result<(), StorageError> {
    let alice = UserId::new("alice");
    let changes = vec![
        change("a", None, "d", 1, json!(1)),
        change("b", None, "d", 2, json!(2)),
        change("c", None, "d", 3, json!(3)),
    ];
    storage.push(&alice, "items", changes).await?;
    storage
        .push(
            &alice,
            "items",
            vec![change("b", Some(1), "d", 4, json!(22))],
        )
        .await?;
    storage
        .push(&alice, "items", vec![deletion("c", 1, "d", 5)])
        .await?;
    let mut expected = fero_protocol::Digest::default();
    expected.add("a", 1);
    expected.add("b", 2);
    assert_eq!(storage.digest(&alice, "items").await?, expected);
    Ok(())
}

/// The content digest (version 2) covers live rows with their content, tombstones excluded,
/// and equals a client's [`ContentDigest`](fero_protocol::ContentDigest) of the same rows,
/// whatever the key order of the JSON the client holds: nested data, unicode and escapes
/// included.
///
/// # Errors
/// The storage's error.
///
/// # Panics
/// When the backend breaks the contract.
pub async fn the_content_digest_covers_live_rows_and_their_content<S: Storage>(
    storage: S,
) -> Result<(), StorageError> {
    let alice = UserId::new("alice");
    let nested = json!({
        "name": "Zoë — 東京 \u{1F600}",
        "quote": "a \"b\"\n\t\\ c",
        "list": [1, -2, 2.5, 1e100, null, true, { "z": [], "a": {} }],
        "deep": { "y": { "x": { "w": "v" } }, "b": false },
    });
    let changes = vec![
        change("a", None, "d", 1, nested.clone()),
        change("b", None, "d", 2, json!({ "n": 2 })),
        change("c", None, "d", 3, json!({ "n": 3 })),
    ];
    storage.push(&alice, "items", changes).await?;
    storage
        .push(
            &alice,
            "items",
            vec![change("b", Some(1), "d", 4, json!({ "n": 22 }))],
        )
        .await?;
    storage
        .push(&alice, "items", vec![deletion("c", 1, "d", 5)])
        .await?;
    storage
        .push(
            &UserId::new("bob"),
            "items",
            vec![change("a", None, "e", 1, json!(0))],
        )
        .await?;

    // A client holds the same rows as text with its keys in another order.
    let reordered = r#"{"deep":{"b":false,"y":{"x":{"w":"v"}}},
        "list":[1,-2,2.5,1e100,null,true,{"a":{},"z":[]}],
        "quote":"a \"b\"\n\t\\ c", "name":"Zo\u00eb \u2014 \u6771\u4eac \ud83d\ude00"}"#;
    let mut expected = fero_protocol::ContentDigest::default();
    expected
        .add_json("a", 1, reordered)
        .unwrap_or_else(|error| panic!("the test's JSON parses: {error}"));
    expected.add("b", 2, &json!({ "n": 22 }));
    let digest = storage.content_digest(&alice, "items").await?;
    assert_eq!(
        digest, expected,
        "the content digest must cover live rows (id, version, canonical data) only"
    );

    let mut stale = fero_protocol::ContentDigest::default();
    stale.add("a", 1, &nested);
    stale.add("b", 2, &json!({ "n": 2 }));
    assert_ne!(
        digest, stale,
        "content at the same version must change the digest"
    );
    assert_eq!(
        storage.content_digest(&alice, "other").await?,
        fero_protocol::ContentDigest::default()
    );
    Ok(())
}

/// Purging removes tombstones below the bound, and a pull from a position above 0 and below the
/// horizon fails with `ResyncRequired`; from 0 or at the horizon it succeeds.
///
/// # Errors
/// The storage's error.
///
/// # Panics
/// When the backend breaks the contract.
pub async fn purging_tombstones_sets_a_horizon<S: Storage>(storage: S) -> Result<(), StorageError> {
    let alice = UserId::new("alice");
    let rows = (0..4)
        .map(|i| SeedRow::new(format!("r{i}"), json!(i)))
        .collect();
    storage.seed(&alice, "items", rows).await?; // sync_ids 1..=4
    let gone = storage
        .push(&alice, "items", vec![deletion("r1", 1, "d", 1)])
        .await?;
    let (_, tombstone_at) = accepted(&gone.results[0]);
    let after = storage
        .push(&alice, "items", vec![change("r5", None, "d", 2, json!(5))])
        .await?;
    let (_, last) = accepted(&after.results[0]);
    let report = storage.purge_tombstones(SyncId(tombstone_at.0 + 1)).await?;
    assert_eq!((report.purged, report.collections), (1, 1));
    let behind = storage.pull(&alice, "items", SyncId(2), 10).await;
    match behind {
        Err(StorageError::ResyncRequired {
            horizon,
            checkpoint,
            ..
        }) => {
            assert_eq!((horizon, checkpoint), (tombstone_at, SyncId(2)));
        }
        other => panic!("a checkpoint behind the horizon must get ResyncRequired, got {other:?}"),
    }
    let fresh = pull_all(&storage, &alice, "items", 10).await?;
    assert_eq!(
        fresh.len(),
        4,
        "from scratch: the live rows, tombstone gone"
    );
    assert!(fresh.iter().all(|d| !d.deleted));
    let at_horizon = storage.pull(&alice, "items", tombstone_at, 10).await?;
    assert_eq!(
        at_horizon
            .items
            .iter()
            .map(|d| d.sync_id)
            .collect::<Vec<_>>(),
        [last]
    );
    // Bob's feed reaches 3 elsewhere, so position 2 is within it.
    let bob = UserId::new("bob");
    let rows = (0..3).map(|i| SeedRow::new(format!("b{i}"), json!(i)));
    storage.seed(&bob, "notes", rows.collect()).await?;
    let other_owner = storage.pull(&bob, "items", SyncId(2), 10).await?;
    assert!(
        other_owner.items.is_empty(),
        "horizons are per user and collection"
    );
    Ok(())
}

/// A replay is answered from its stored answer until [`Storage::prune_mutations`] removes it;
/// after that it is a new change whose stale base version makes it a conflict carrying the
/// server's current row, and it writes nothing. Answers recorded at or after the cut-off stay.
///
/// # Errors
/// The storage's error.
///
/// # Panics
/// When the backend breaks the contract.
pub async fn a_replay_after_its_answer_was_pruned_is_a_conflict<S: Storage>(
    storage: S,
    clock: ManualClock,
) -> Result<(), StorageError> {
    let alice = UserId::new("alice");
    let create = change("n", None, "phone", 1, json!("v1"));
    let created = storage.push(&alice, "notes", vec![create.clone()]).await?;
    let created_at = clock.now();
    clock.advance(Duration::from_secs(60));
    let update = change("n", Some(1), "phone", 2, json!("v2"));
    let updated = storage.push(&alice, "notes", vec![update.clone()]).await?;
    let (version, sync_id) = accepted(&updated.results[0]);

    let replay = storage.push(&alice, "notes", vec![create.clone()]).await?;
    assert_eq!(
        replay.results, created.results,
        "before pruning, a replay gets the original answer"
    );

    let report = storage.prune_mutations(Timestamp(created_at.0 + 1)).await?;
    assert_eq!(
        report.pruned, 1,
        "the cut-off lies between the two answers: only the create's goes"
    );
    let replay = storage.push(&alice, "notes", vec![create]).await?;
    let server = conflict(&replay.results[0])
        .expect("a pruned create of an id that exists conflicts with the row");
    assert_eq!(
        (server.version, server.sync_id, &server.data),
        (version, sync_id, &json!("v2")),
        "the conflict carries the server's current row"
    );
    assert_eq!(replay.last_written, None, "a pruned replay writes nothing");
    let replay = storage.push(&alice, "notes", vec![update.clone()]).await?;
    assert_eq!(
        replay.results, updated.results,
        "an answer recorded after the cut-off is kept"
    );

    clock.advance(Duration::from_secs(60));
    let report = storage.prune_mutations(clock.now()).await?;
    assert_eq!(report.pruned, 1, "now the update's answer goes too");
    let replay = storage.push(&alice, "notes", vec![update]).await?;
    let server = conflict(&replay.results[0]).expect("base 1 is stale: a conflict");
    assert_eq!(
        (server.version, &server.data),
        (version, &json!("v2")),
        "the client is shown its own write as the server's state"
    );
    let rows = pull_all(&storage, &alice, "notes", 10).await?;
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].version, rows[0].sync_id),
        (version, sync_id),
        "replays of pruned mutations wrote nothing"
    );
    Ok(())
}

/// [`Storage::prune_mutations`] deletes the answers recorded before the cut-off, of every
/// owner, and reports how many; an answer recorded exactly at the cut-off or later stays,
/// conflicts were never recorded, and pruning again finds nothing.
///
/// # Errors
/// The storage's error.
///
/// # Panics
/// When the backend breaks the contract.
pub async fn pruning_removes_only_answers_recorded_before_the_cut_off<S: Storage>(
    storage: S,
    clock: ManualClock,
) -> Result<(), StorageError> {
    let (alice, bob) = (UserId::new("alice"), UserId::new("bob"));
    let old = clock.now();
    storage
        .push(
            &alice,
            "notes",
            vec![
                change("a", None, "d", 1, json!(1)),
                change("b", None, "d", 2, json!(2)),
            ],
        )
        .await?;
    storage
        .push(&bob, "notes", vec![change("a", None, "d", 1, json!(1))])
        .await?;
    let refused = storage
        .push(&alice, "notes", vec![change("a", None, "e", 1, json!(9))])
        .await?;
    conflict(&refused.results[0]);
    clock.advance(Duration::from_millis(1));
    let recent = clock.now();
    let kept = change("c", None, "d", 3, json!(3));
    let kept_answer = storage.push(&alice, "notes", vec![kept.clone()]).await?;

    assert_eq!(
        storage.prune_mutations(old).await?.pruned,
        0,
        "an answer recorded exactly at the cut-off stays"
    );
    assert_eq!(
        storage.prune_mutations(recent).await?.pruned,
        3,
        "alice's two answers and bob's one; the conflict was never recorded"
    );
    assert_eq!(
        storage.prune_mutations(recent).await?.pruned,
        0,
        "nothing left before the cut-off"
    );
    let replay = storage.push(&alice, "notes", vec![kept]).await?;
    assert_eq!(
        replay.results, kept_answer.results,
        "the recent answer stays"
    );
    let bobs_replay = storage
        .push(&bob, "notes", vec![change("a", None, "d", 1, json!(1))])
        .await?;
    let server = conflict(&bobs_replay.results[0]).expect("bob's answer was pruned too");
    assert_eq!(server.version, Version(1));
    assert_eq!(
        storage.prune_mutations(Timestamp(u64::MAX)).await?.pruned,
        1,
        "a cut-off beyond every time removes the rest"
    );
    Ok(())
}

/// Several pushes on one base at the same moment: exactly one is accepted, the others
/// conflict with it.
///
/// # Errors
/// The storage's error.
///
/// # Panics
/// When the backend breaks the contract.
pub async fn concurrent_pushes_on_one_base_accept_exactly_one<S: Storage>(
    storage: S,
) -> Result<(), StorageError> {
    let storage = Arc::new(storage);
    let alice = UserId::new("alice");
    storage
        .push(
            &alice,
            "notes",
            vec![change("n", None, "seed", 1, json!(0))],
        )
        .await?;
    let mut tasks = tokio::task::JoinSet::new();
    for device in 0..8u64 {
        let (storage, alice) = (Arc::clone(&storage), alice.clone());
        tasks.spawn(async move {
            let name = format!("device-{device}");
            storage
                .push(
                    &alice,
                    "notes",
                    vec![change("n", Some(1), &name, 1, json!(device))],
                )
                .await
        });
    }
    let mut accepted_count = 0;
    while let Some(joined) = tasks.join_next().await {
        let outcome = joined.map_err(|error| StorageError::TaskFailed {
            operation: "push",
            collection: "notes".into(),
            message: error.to_string(),
        })??;
        match &outcome.results[0].outcome {
            ChangeOutcome::Accepted { version, .. } => {
                assert_eq!(*version, Version(2));
                accepted_count += 1;
            }
            ChangeOutcome::Conflict { server } => {
                let server = server.as_ref().expect("the winner's row");
                assert_eq!(server.version, Version(2));
            }
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    assert_eq!(accepted_count, 1, "exactly one push on base 1 may win");
    Ok(())
}

/// A position beyond the owner's highest assigned `sync_id` is refused with
/// [`StorageError::ServerBehind`] (the server lost writes, a restored backup), never answered
/// with an empty page that echoes it: rows written afterwards up to that position would never
/// reach the client. The origin is always served, and the head is the owner's, over all its
/// collections.
///
/// # Errors
/// The storage's error.
///
/// # Panics
/// When the backend breaks the contract.
pub async fn a_position_beyond_the_feed_is_refused_as_server_behind<S: Storage>(
    storage: S,
) -> Result<(), StorageError> {
    let alice = UserId::new("alice");
    match storage.pull(&alice, "items", SyncId(100), 10).await {
        Err(StorageError::ServerBehind { position, head, .. }) => {
            assert_eq!((position, head), (SyncId(100), SyncId(0)));
        }
        other => panic!("a position on an empty feed must be ServerBehind, got {other:?}"),
    }
    assert!(
        storage
            .pull(&alice, "items", SyncId(0), 10)
            .await?
            .items
            .is_empty()
    );
    let rows = (0..3).map(|i| SeedRow::new(format!("r{i}"), json!(i)));
    storage.seed(&alice, "items", rows.collect()).await?; // 1..=3
    storage
        .push(&alice, "notes", vec![change("n", None, "d", 1, json!(0))])
        .await?; // 4
    let at_head = storage.pull(&alice, "items", SyncId(4), 10).await?;
    assert!(
        at_head.items.is_empty(),
        "the head itself is a valid position"
    );
    let cursor_like = FeedPosition {
        after: SyncId(5),
        horizon: Some(SyncId(9)),
        epoch: None,
    };
    match storage.pull_from(&alice, "items", cursor_like, 10).await {
        Err(error @ StorageError::ServerBehind { .. }) => {
            assert_eq!(
                error.resync_reason(),
                Some(fero_protocol::ResyncReason::ServerBehind)
            );
        }
        other => panic!("position 5 is beyond head 4: ServerBehind, got {other:?}"),
    }
    match storage
        .pull(&UserId::new("bob"), "items", SyncId(1), 10)
        .await
    {
        Err(StorageError::ServerBehind { head, .. }) => assert_eq!(head, SyncId(0)),
        other => panic!("heads are per owner: bob has none, got {other:?}"),
    }
    Ok(())
}

/// Every page carries the database's restore epoch; [`Storage::mark_restored`] replaces it
/// with another, after which a position above 0 of the old epoch is refused with
/// [`StorageError::Restored`] (reason `server_behind`) even when it lies inside the feed, as it
/// does once other devices pushed their rows back. A position of the new epoch, a position
/// without one (a cursor issued before epochs, a plain `last_sync_id`) inside the feed, and the
/// origin with any epoch are served.
///
/// # Errors
/// The storage's error.
///
/// # Panics
/// When the backend breaks the contract.
pub async fn a_cursor_from_before_a_restore_is_refused_as_server_behind<S: Storage>(
    storage: S,
) -> Result<(), StorageError> {
    let alice = UserId::new("alice");
    let rows = (0..4).map(|i| SeedRow::new(format!("r{i}"), json!(i)));
    storage.seed(&alice, "items", rows.collect()).await?; // 1..=4
    let first = storage.pull(&alice, "items", SyncId(0), 2).await?;
    let old = first.epoch.expect("the page carries the restore epoch");
    let again = storage.pull(&alice, "items", SyncId(2), 2).await?;
    assert_eq!(again.epoch, Some(old), "the epoch stays until a restore");
    let at = |after: u64, epoch: Option<u64>| FeedPosition {
        after: SyncId(after),
        horizon: None,
        epoch,
    };
    assert_eq!(
        storage
            .pull_from(&alice, "items", at(2, Some(old)), 10)
            .await?
            .items
            .len(),
        2
    );
    let new = storage.mark_restored().await?;
    assert_ne!(new, old, "a restore draws another epoch");
    match storage
        .pull_from(&alice, "items", at(2, Some(old)), 10)
        .await
    {
        Err(
            error @ StorageError::Restored {
                position,
                cursor_epoch,
                epoch,
                ..
            },
        ) => {
            assert_eq!((position, cursor_epoch, epoch), (SyncId(2), old, new));
            assert_eq!(
                error.resync_reason(),
                Some(fero_protocol::ResyncReason::ServerBehind)
            );
        }
        other => panic!("a cursor of the old epoch inside the feed must be refused, got {other:?}"),
    }
    let page = storage
        .pull_from(&alice, "items", at(2, Some(new)), 10)
        .await?;
    assert_eq!((page.items.len(), page.epoch), (2, Some(new)));
    assert_eq!(
        storage
            .pull_from(&alice, "items", at(2, None), 10)
            .await?
            .items
            .len(),
        2,
        "a position without an epoch falls back to the feed's length"
    );
    let scratch = storage
        .pull_from(&alice, "items", at(0, Some(old)), 10)
        .await?;
    assert_eq!(
        (scratch.items.len(), scratch.epoch),
        (4, Some(new)),
        "a pull from scratch is always served"
    );
    Ok(())
}

/// A position below the purge horizon is served when it carries that horizon
/// ([`FeedPosition::horizon`], what a cursor of a scan from the origin records), so such a scan
/// pages on in small pages and gets every live row once; once a later purge raises the horizon
/// past both, it gets [`StorageError::ResyncRequired`] like a plain position. Every page reports
/// the horizon of its snapshot.
///
/// # Errors
/// The storage's error.
///
/// # Panics
/// When the backend breaks the contract.
pub async fn a_scan_from_the_origin_is_served_below_the_horizon_it_started_under<S: Storage>(
    storage: S,
) -> Result<(), StorageError> {
    let alice = UserId::new("alice");
    let rows = (0..6).map(|i| SeedRow::new(format!("r{i}"), json!(i)));
    storage.seed(&alice, "items", rows.collect()).await?; // 1..=6
    let mut seq = 0;
    for (id, base) in [("r1", 1), ("r3", 1), ("r5", 1)] {
        seq += 1;
        storage
            .push(&alice, "items", vec![deletion(id, base, "d", seq)])
            .await?; // tombstones at 7, 8, 9
    }
    storage
        .push(
            &alice,
            "items",
            vec![change("late", None, "d", 9, json!(9))],
        )
        .await?; // 10
    storage.purge_tombstones(SyncId(9)).await?; // purges 7 and 8: horizon 8
    let mut from = FeedPosition::default();
    let mut seen = Vec::new();
    loop {
        let page = storage.pull_from(&alice, "items", from, 1).await?;
        assert_eq!(page.horizon, SyncId(8), "the page reports its horizon");
        seen.extend(page.items.iter().map(|d| (d.id.clone(), d.deleted)));
        let Some(last) = page.items.last() else { break };
        from = FeedPosition {
            after: last.sync_id,
            horizon: Some(page.horizon),
            epoch: page.epoch,
        };
        if !page.has_more {
            break;
        }
    }
    let ids: Vec<&str> = seen.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(
        ids,
        ["r0", "r2", "r4", "r5", "late"],
        "each row once, the purged tombstones gone, the unpurged one (r5) kept"
    );
    assert!(matches!(
        storage.pull(&alice, "items", SyncId(2), 1).await,
        Err(StorageError::ResyncRequired { .. })
    ));
    // A purge during a scan raises the horizon past what its cursor carries: refused.
    let during = FeedPosition {
        after: SyncId(2),
        horizon: Some(SyncId(8)),
        epoch: None,
    };
    assert!(storage.pull_from(&alice, "items", during, 1).await.is_ok());
    storage.purge_tombstones(SyncId(10)).await?; // purges 9: horizon 9
    match storage.pull_from(&alice, "items", during, 1).await {
        Err(StorageError::ResyncRequired { horizon, .. }) => assert_eq!(horizon, SyncId(9)),
        other => panic!("a purge past the scan's horizon must refuse it, got {other:?}"),
    }
    Ok(())
}

/// A mutation id already recorded for one row, sent again for another id or another
/// collection, is refused for that change (`mutation_id_reused`) and writes nothing; the other
/// changes of the push go on, and the same row replayed still gets its original answer.
///
/// # Errors
/// The storage's error.
///
/// # Panics
/// When the backend breaks the contract.
pub async fn a_mutation_id_reused_for_another_row_is_refused<S: Storage>(
    storage: S,
) -> Result<(), StorageError> {
    let alice = UserId::new("alice");
    let original = storage
        .push(
            &alice,
            "notes",
            vec![change("a", None, "phone", 1, json!(1))],
        )
        .await?;
    let reuses = vec![
        change("b", None, "phone", 1, json!(2)),
        change("c", None, "phone", 2, json!(3)),
    ];
    let outcome = storage.push(&alice, "notes", reuses).await?;
    match &outcome.results[0].outcome {
        ChangeOutcome::Rejected { code, message } => {
            assert_eq!(code, "mutation_id_reused");
            assert!(
                message.contains("\"a\""),
                "names the earlier row: {message}"
            );
        }
        other => panic!("reuse for another id must be rejected, got {other:?}"),
    }
    assert_eq!(outcome.results[0].id, "b");
    accepted(&outcome.results[1]);
    let other_collection = storage
        .push(
            &alice,
            "tasks",
            vec![change("a", None, "phone", 1, json!(4))],
        )
        .await?;
    assert!(
        matches!(&other_collection.results[0].outcome,
            ChangeOutcome::Rejected { code, .. } if code == "mutation_id_reused"),
        "reuse for another collection must be rejected, got {other_collection:?}"
    );
    assert_eq!(other_collection.last_written, None);
    assert!(pull_all(&storage, &alice, "tasks", 10).await?.is_empty());
    let ids: Vec<String> = pull_all(&storage, &alice, "notes", 10)
        .await?
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(ids, ["a", "c"], "the refused change wrote nothing");
    let replay = storage
        .push(
            &alice,
            "notes",
            vec![change("a", None, "phone", 1, json!(1))],
        )
        .await?;
    assert_eq!(
        replay.results, original.results,
        "same row: original answer"
    );
    Ok(())
}

/// [`Storage::purge_tombstones_deleted_before`] deletes the tombstones deleted before the
/// cut-off (one deleted exactly then stays), of every owner, raises their collections'
/// horizons, and leaves live rows alone.
///
/// # Errors
/// The storage's error.
///
/// # Panics
/// When the backend breaks the contract.
pub async fn tombstones_deleted_before_a_time_are_purged<S: Storage>(
    storage: S,
    clock: ManualClock,
) -> Result<(), StorageError> {
    let (alice, bob) = (UserId::new("alice"), UserId::new("bob"));
    let rows = || {
        (0..3)
            .map(|i| SeedRow::new(format!("r{i}"), json!(i)))
            .collect()
    };
    storage.seed(&alice, "items", rows()).await?; // 1..=3
    storage.seed(&bob, "items", rows()).await?;
    let old = storage
        .push(&alice, "items", vec![deletion("r0", 1, "d", 1)])
        .await?;
    let (_, old_at) = accepted(&old.results[0]);
    storage
        .push(&bob, "items", vec![deletion("r0", 1, "d", 1)])
        .await?;
    clock.advance(Duration::from_secs(60));
    let cut_off = clock.now();
    storage
        .push(&alice, "items", vec![deletion("r1", 1, "d", 2)])
        .await?; // deleted exactly at the cut-off: stays
    let report = storage.purge_tombstones_deleted_before(cut_off).await?;
    assert_eq!((report.purged, report.collections), (2, 2));
    match storage.pull(&alice, "items", SyncId(1), 10).await {
        Err(StorageError::ResyncRequired { horizon, .. }) => assert_eq!(horizon, old_at),
        other => panic!("the horizon rose to the purged tombstone, got {other:?}"),
    }
    let left: Vec<(String, bool)> = pull_all(&storage, &alice, "items", 10)
        .await?
        .into_iter()
        .map(|d| (d.id, d.deleted))
        .collect();
    assert_eq!(left, [("r2".to_owned(), false), ("r1".to_owned(), true)]);
    let again = storage.purge_tombstones_deleted_before(cut_off).await?;
    assert_eq!(again.purged, 0);
    Ok(())
}

/// Generates one `#[tokio::test]` per function of [`storage_suite`](crate::storage_suite).
///
/// The argument is a factory: `|clock: ManualClock| async move { Ok((storage, guard)) }` with an
/// error type that converts into `Box<dyn Error + Send + Sync>`. The storage must stamp its
/// times with `clock` (a [`ManualClock`](crate::storage_suite::ManualClock), given as `Arc::new(clock)` to `open_with_clock` or a
/// builder's `clock`); `guard` is kept alive until the test ends.
///
/// For a backend that needs a service which may be missing (a PostgreSQL server), write
/// `storage_suite_tests!(optional |clock: ManualClock| async move { Ok(Some((storage, guard))) })`:
/// a factory that answers `Ok(None)` makes each test return early (the factory prints why).
#[macro_export]
macro_rules! storage_suite_tests {
    (@names $mode:ident $make:expr) => {
        $crate::storage_suite_tests!(@clocked $mode $make;
            a_replay_after_its_answer_was_pruned_is_a_conflict,
            pruning_removes_only_answers_recorded_before_the_cut_off,
            tombstones_deleted_before_a_time_are_purged,
        );
        $crate::storage_suite_tests!(@tests $mode $make;
            pushed_rows_are_pulled_back_in_sync_id_order,
            each_accepted_write_raises_the_version_by_one,
            a_stale_base_version_is_a_conflict_carrying_the_current_row,
            creating_an_existing_id_is_a_conflict,
            a_replayed_mutation_gets_its_original_answer,
            a_conflicted_mutation_can_be_resent_on_a_new_base,
            a_deletion_is_a_tombstone_with_a_new_version_and_sync_id,
            owners_never_see_or_conflict_with_each_others_rows,
            collections_do_not_share_rows,
            pages_follow_each_other_without_gap_or_repeat,
            seeded_rows_take_consecutive_sync_ids,
            the_digest_covers_live_rows_only,
            the_content_digest_covers_live_rows_and_their_content,
            purging_tombstones_sets_a_horizon,
            concurrent_pushes_on_one_base_accept_exactly_one,
            a_position_beyond_the_feed_is_refused_as_server_behind,
            a_cursor_from_before_a_restore_is_refused_as_server_behind,
            a_scan_from_the_origin_is_served_below_the_horizon_it_started_under,
            a_mutation_id_reused_for_another_row_is_refused,
        );
        $crate::storage_suite_tests!(@shared $mode $make;
            shared_rows_reach_exactly_the_readers_of_their_bucket,
            membership_moves_rows_in_and_out,
            a_row_moving_between_buckets_moves_between_devices,
            random_interleavings_never_leak_or_skip,
            a_cursor_is_honoured_only_as_issued_and_for_its_user,
            a_subscription_reads_its_buckets_alone,
        );
    };
    (@make required $make:expr, $clock:expr) => {
        ::std::option::Option::Some(($make)($clock).await?)
    };
    (@make optional $make:expr, $clock:expr) => {
        ($make)($clock).await?
    };
    (@tests $mode:ident $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() -> ::std::result::Result<(), ::std::boxed::Box<dyn ::std::error::Error + Send + Sync>> {
                let clock = $crate::storage_suite::ManualClock::new();
                let ::std::option::Option::Some((storage, _guard)) =
                    $crate::storage_suite_tests!(@make $mode $make, clock)
                else {
                    return Ok(());
                };
                $crate::storage_suite::$name(storage).await?;
                Ok(())
            }
        )*
    };
    (@shared $mode:ident $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() -> ::std::result::Result<(), ::std::boxed::Box<dyn ::std::error::Error + Send + Sync>> {
                let clock = $crate::storage_suite::ManualClock::new();
                let ::std::option::Option::Some((storage, _guard)) =
                    $crate::storage_suite_tests!(@make $mode $make, clock)
                else {
                    return Ok(());
                };
                $crate::shared_suite::$name(storage).await?;
                Ok(())
            }
        )*
    };
    (@clocked $mode:ident $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() -> ::std::result::Result<(), ::std::boxed::Box<dyn ::std::error::Error + Send + Sync>> {
                let clock = $crate::storage_suite::ManualClock::new();
                let ::std::option::Option::Some((storage, _guard)) =
                    $crate::storage_suite_tests!(@make $mode $make, clock.clone())
                else {
                    return Ok(());
                };
                $crate::storage_suite::$name(storage, clock).await?;
                Ok(())
            }
        )*
    };
    (optional $make:expr) => {
        $crate::storage_suite_tests!(@names optional $make);
    };
    ($make:expr) => {
        $crate::storage_suite_tests!(@names required $make);
    };
}
