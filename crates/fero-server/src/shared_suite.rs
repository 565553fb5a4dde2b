//! The storage suite of shared collections, written once for every backend: buckets, move-in,
//! move-out, rows moving between buckets, forbidden writes, and a seeded random model check that
//! no pull ever leaks a row and that devices end with exactly what their user may read.
//!
//! The functions take a fresh, empty storage and use [`TeamAccess`], a fixed rule set that needs
//! no rules file: a row of `tasks` lives in bucket `team:<data.team>`, a row of `members` grants
//! its `data.user` the bucket `team:<data.team>` (and lives in that bucket too), and the token
//! claims of a user list more teams. [`storage_suite_tests!`](crate::storage_suite_tests) runs
//! them with the rest of the suite.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use fero::Version;
use fero_protocol::{Change, ChangeOutcome, ChangeResult, MutationId};
use serde_json::json;

use crate::error::StorageError;
use crate::shared::{Access, CurrentRow, Refusal, Routed, SharedCursor, Subscribed};
use crate::storage::{Storage, StoredDocument};
use crate::user::UserId;

/// The shared collection of the suite.
pub const TASKS: &str = "tasks";
/// The membership collection of the suite.
pub const MEMBERS: &str = "members";

/// A fixed rule set for the suite: see the module docs. Writes go to buckets the user may read.
#[derive(Clone, Debug)]
pub struct TeamAccess {
    user: UserId,
    claimed: Vec<String>,
}

impl TeamAccess {
    /// The access of `user`, whose token claims the teams `claimed`.
    pub fn arc(user: &str, claimed: &[&str]) -> Arc<dyn Access> {
        Arc::new(TeamAccess {
            user: UserId::new(user),
            claimed: claimed.iter().map(|t| format!("team:{t}")).collect(),
        })
    }

    fn bucket(data: &serde_json::Value) -> Result<String, Refusal> {
        match data.get("team") {
            Some(serde_json::Value::String(team)) => Ok(format!("team:{team}")),
            _ => Err(Refusal::RuleFailed {
                message: "[collections.tasks].bucket: data.team is not a string".to_owned(),
            }),
        }
    }
}

impl Access for TeamAccess {
    fn user(&self) -> &UserId {
        &self.user
    }

    fn readable(&self, grants: &[String]) -> Result<BTreeSet<String>, Refusal> {
        let mut set: BTreeSet<String> = self.claimed.iter().cloned().collect();
        set.extend(grants.iter().cloned());
        set.insert(format!("user:{}", self.user));
        set.insert("global".to_owned());
        Ok(set)
    }

    fn route(
        &self,
        collection: &str,
        readable: &BTreeSet<String>,
        change: &Change,
        current: Option<CurrentRow<'_>>,
    ) -> Result<Routed, Refusal> {
        let forbidden = || Refusal::Forbidden {
            message: format!("you may not write row {:?} of {collection:?}", change.id),
        };
        if let Some(current) = &current {
            if !readable.contains(current.bucket) {
                return Err(forbidden());
            }
        }
        let bucket = match (change.deleted, &current) {
            (true, Some(current)) => current.bucket.to_owned(),
            _ => TeamAccess::bucket(&change.data)?,
        };
        if !readable.contains(&bucket) {
            return Err(forbidden());
        }
        let grant = (collection == MEMBERS && !change.deleted)
            .then(|| {
                change
                    .data
                    .get("user")
                    .and_then(|u| u.as_str())
                    .map(|user| (user.to_owned(), bucket.clone()))
            })
            .flatten();
        Ok(Routed { bucket, grant })
    }

    fn is_membership(&self, collection: &str) -> bool {
        collection == MEMBERS
    }
}

/// A device's copy of the shared collection: id to (version, team), and its cursor.
#[derive(Debug, Default, Clone)]
struct Device {
    rows: BTreeMap<String, (u64, String)>,
    cursor: Option<SharedCursor>,
}

impl Device {
    /// Pulls until the end, paging by `limit`; panics if a row of a bucket outside `allowed` (the
    /// user's readable set when the pull ran) arrives.
    async fn sync<S: Storage + ?Sized>(
        &mut self,
        storage: &S,
        access: &Arc<dyn Access>,
        limit: u32,
        allowed: &BTreeSet<String>,
    ) -> Result<(), StorageError> {
        for _ in 0..10_000 {
            let page = storage
                .shared_pull(Arc::clone(access), TASKS, self.cursor.clone(), limit)
                .await?;
            assert_eq!(
                &page.readable, allowed,
                "the storage computed another readable set than the rules give"
            );
            assert!(page.items.len() <= limit as usize, "page above the limit");
            assert_unique_ids(&page.items);
            for item in &page.items {
                self.apply(item, access.user(), allowed);
            }
            self.cursor = Some(page.cursor);
            if !page.has_more {
                return Ok(());
            }
        }
        panic!("a pull did not end after 10,000 pages");
    }
}

/// A client refuses a page that holds an id twice (`fero`'s page validation), so a page that
/// does breaks the device's sync for good.
#[track_caller]
fn assert_unique_ids(items: &[StoredDocument]) {
    let mut seen = BTreeSet::new();
    for item in items {
        assert!(
            seen.insert(item.id.as_str()),
            "a page holds {:?} twice; a client refuses it",
            item.id
        );
    }
}

impl Device {
    /// Applies one pulled item; panics if it carries content of a bucket outside `allowed`. A
    /// removal carries no data; a deletion's tombstone keeps its last content, which must be of
    /// a readable bucket like any row's.
    fn apply(&mut self, item: &StoredDocument, user: &UserId, allowed: &BTreeSet<String>) {
        let data: serde_json::Value = serde_json::from_str(item.data.get())
            .unwrap_or_else(|e| panic!("row {:?} is not JSON: {e}", item.id));
        if !data.is_null() {
            let team = format!("team:{}", data["team"].as_str().unwrap_or_default());
            assert!(
                allowed.contains(&team),
                "LEAK: {user} received content of row {:?} of {team}, readable set {allowed:?}",
                item.id
            );
            if !item.deleted {
                self.rows.insert(item.id.clone(), (item.version.0, team));
                return;
            }
        }
        assert!(item.deleted, "a live row {:?} without content", item.id);
        self.rows.remove(&item.id);
    }
}

fn task(id: &str, base: Option<u64>, device: &str, seq: u64, team: &str) -> Change {
    Change {
        id: id.to_owned(),
        base_version: base.map(Version),
        mutation_id: MutationId::new(device, seq),
        deleted: false,
        data: json!({ "team": team, "title": format!("task {id}") }),
    }
}

fn member(id: &str, base: Option<u64>, device: &str, seq: u64, user: &str, team: &str) -> Change {
    Change {
        data: json!({ "team": team, "user": user }),
        ..task(id, base, device, seq, team)
    }
}

fn removal_of(change: Change) -> Change {
    Change {
        deleted: true,
        data: serde_json::Value::Null,
        ..change
    }
}

#[track_caller]
fn version_of(result: &ChangeResult) -> u64 {
    match &result.outcome {
        ChangeOutcome::Accepted { version, .. } => version.0,
        other => panic!("change {:?} should be accepted, got {other:?}", result.id),
    }
}

#[track_caller]
fn rejected_code(result: &ChangeResult) -> &str {
    match &result.outcome {
        ChangeOutcome::Rejected { code, .. } => code,
        other => panic!("change {:?} should be rejected, got {other:?}", result.id),
    }
}

fn set(buckets: &[&str]) -> BTreeSet<String> {
    buckets.iter().map(|b| (*b).to_owned()).collect()
}

/// Rows reach every user who may read their bucket and no one else; a write into a bucket the
/// user may not read, or over a row of such a bucket, is `rejected` `forbidden` and reveals
/// nothing of the row.
///
/// # Errors
/// The storage's error.
///
/// # Panics
/// When the backend breaks the contract.
pub async fn shared_rows_reach_exactly_the_readers_of_their_bucket<S: Storage>(
    storage: S,
) -> Result<(), StorageError> {
    let ada = TeamAccess::arc("ada", &["red"]);
    let bob = TeamAccess::arc("bob", &["red"]);
    let cy = TeamAccess::arc("cy", &["blue"]);
    let pushed = storage
        .shared_push(
            Arc::clone(&ada),
            TASKS,
            vec![task("t1", None, "ada-1", 1, "red")],
        )
        .await?;
    assert_eq!(version_of(&pushed.outcome.results[0]), 1);
    assert!(pushed.touched.contains("team:red"));
    let mut bob_device = Device::default();
    bob_device
        .sync(&storage, &bob, 2, &set(&["team:red", "user:bob", "global"]))
        .await?;
    assert_eq!(bob_device.rows.len(), 1, "bob reads red's row");
    let mut cy_device = Device::default();
    cy_device
        .sync(&storage, &cy, 2, &set(&["team:blue", "user:cy", "global"]))
        .await?;
    assert!(cy_device.rows.is_empty(), "cy must not read red's row");
    // Cy writes into red (not readable), and over red's row: both forbidden, no version leaked.
    let answers = storage
        .shared_push(
            Arc::clone(&cy),
            TASKS,
            vec![
                task("t2", None, "cy-1", 1, "red"),
                task("t1", Some(1), "cy-1", 2, "blue"),
                task("t1", Some(7), "cy-1", 3, "blue"),
            ],
        )
        .await?;
    for result in &answers.outcome.results {
        assert_eq!(rejected_code(result), "forbidden", "{result:?}");
    }
    // A row whose data the rules cannot place is `rule_failed`.
    let bad = Change {
        data: json!({ "title": "no team" }),
        ..task("t3", None, "ada-1", 2, "red")
    };
    let answers = storage
        .shared_push(Arc::clone(&ada), TASKS, vec![bad])
        .await?;
    assert_eq!(rejected_code(&answers.outcome.results[0]), "rule_failed");
    bob_device
        .sync(&storage, &bob, 2, &set(&["team:red", "user:bob", "global"]))
        .await?;
    assert_eq!(
        bob_device.rows.get("t1").map(|r| r.0),
        Some(1),
        "refused writes changed nothing"
    );
    Ok(())
}

/// A membership row grants its user a bucket at the user's next pull: every row of it moves in,
/// old as they are; deleting the membership moves them out (removals without data), and writes
/// made to the bucket afterwards never reach the removed member.
///
/// # Errors
/// The storage's error.
///
/// # Panics
/// When the backend breaks the contract.
pub async fn membership_moves_rows_in_and_out<S: Storage>(storage: S) -> Result<(), StorageError> {
    let admin = TeamAccess::arc("admin", &["red"]);
    let dan = TeamAccess::arc("dan", &["blue"]);
    let mut changes = Vec::new();
    for i in 0..25 {
        changes.push(task(&format!("r{i:02}"), None, "admin-1", i, "red"));
    }
    storage
        .shared_push(Arc::clone(&admin), TASKS, changes)
        .await?;
    storage
        .shared_push(
            Arc::clone(&dan),
            TASKS,
            vec![task("b1", None, "dan-1", 1, "blue")],
        )
        .await?;
    let mut device = Device::default();
    let blue_only = set(&["team:blue", "user:dan", "global"]);
    device.sync(&storage, &dan, 4, &blue_only).await?;
    assert_eq!(device.rows.len(), 1);
    // Dan joins red through a membership row: the 25 old rows move in, paging by 4.
    let granted = storage
        .shared_push(
            Arc::clone(&admin),
            MEMBERS,
            vec![member("m-dan", None, "admin-1", 100, "dan", "red")],
        )
        .await?;
    assert!(granted.regranted.contains("dan"));
    let both = set(&["team:blue", "team:red", "user:dan", "global"]);
    device.sync(&storage, &dan, 4, &both).await?;
    assert_eq!(device.rows.len(), 26, "every red row moved in: {device:?}");
    // A red row written while dan is a member arrives normally.
    storage
        .shared_push(
            Arc::clone(&admin),
            TASKS,
            vec![task("r99", None, "admin-1", 101, "red")],
        )
        .await?;
    device.sync(&storage, &dan, 4, &both).await?;
    assert_eq!(device.rows.len(), 27);
    // Removed: red's rows move out, blue's stay.
    storage
        .shared_push(
            Arc::clone(&admin),
            MEMBERS,
            vec![removal_of(member("m-dan", None, "admin-1", 102, "dan", "red")).with_base(1)],
        )
        .await?;
    // A red row written after the removal, before dan's device pulls: the move-out must not
    // even name it (dan never held it, and may not learn that it exists).
    storage
        .shared_push(
            Arc::clone(&admin),
            TASKS,
            vec![task("r-late", None, "admin-1", 104, "red")],
        )
        .await?;
    let held: BTreeSet<String> = device.rows.keys().cloned().collect();
    let mut cursor = device.cursor.clone();
    loop {
        let page = storage
            .shared_pull(Arc::clone(&dan), TASKS, cursor.clone(), 4)
            .await?;
        for item in &page.items {
            assert!(
                held.contains(&item.id) || item.id == "b1",
                "the move-out named {:?}, a row dan never held",
                item.id
            );
            device.apply(item, dan.user(), &blue_only);
        }
        cursor = Some(page.cursor);
        if !page.has_more {
            break;
        }
    }
    device.cursor = cursor;
    assert_eq!(
        device.rows.keys().cloned().collect::<Vec<_>>(),
        vec!["b1".to_owned()],
        "red's rows moved out"
    );
    // Later writes to red never reach dan.
    storage
        .shared_push(
            Arc::clone(&admin),
            TASKS,
            vec![task("r100", None, "admin-1", 103, "red")],
        )
        .await?;
    let page = storage
        .shared_pull(Arc::clone(&dan), TASKS, device.cursor.clone(), 100)
        .await?;
    assert!(
        page.items.is_empty(),
        "a write after the removal reached the removed member: {:?}",
        page.items
    );
    Ok(())
}

/// A row whose data moves it to another bucket leaves the devices of the old bucket (a removal)
/// and reaches those of the new one; a device reading both keeps it.
///
/// # Errors
/// The storage's error.
///
/// # Panics
/// When the backend breaks the contract.
pub async fn a_row_moving_between_buckets_moves_between_devices<S: Storage>(
    storage: S,
) -> Result<(), StorageError> {
    let both = TeamAccess::arc("eve", &["red", "blue"]);
    let red = TeamAccess::arc("rob", &["red"]);
    let blue = TeamAccess::arc("bea", &["blue"]);
    storage
        .shared_push(
            Arc::clone(&both),
            TASKS,
            vec![task("x", None, "eve-1", 1, "red")],
        )
        .await?;
    let (mut d_both, mut d_red, mut d_blue) =
        (Device::default(), Device::default(), Device::default());
    let s_both = set(&["team:blue", "team:red", "user:eve", "global"]);
    let s_red = set(&["team:red", "user:rob", "global"]);
    let s_blue = set(&["team:blue", "user:bea", "global"]);
    d_both.sync(&storage, &both, 10, &s_both).await?;
    d_red.sync(&storage, &red, 10, &s_red).await?;
    d_blue.sync(&storage, &blue, 10, &s_blue).await?;
    assert!(d_red.rows.contains_key("x") && !d_blue.rows.contains_key("x"));
    storage
        .shared_push(
            Arc::clone(&both),
            TASKS,
            vec![task("x", Some(1), "eve-1", 2, "blue")],
        )
        .await?;
    d_both.sync(&storage, &both, 10, &s_both).await?;
    d_red.sync(&storage, &red, 10, &s_red).await?;
    d_blue.sync(&storage, &blue, 10, &s_blue).await?;
    assert_eq!(d_both.rows.get("x").map(|r| r.0), Some(2));
    assert!(!d_red.rows.contains_key("x"), "x left red's device");
    assert_eq!(d_blue.rows.get("x").map(|r| r.0), Some(2), "x reached blue");
    Ok(())
}

/// A cursor is honoured only as issued, for the user it was issued to: another user's cursor
/// (it names that user's readable set) and a cursor whose fields were changed (a higher
/// delivered position, another set) are refused with a resync, and no page names a row of a
/// bucket the caller may not read.
///
/// # Errors
/// The storage's error.
///
/// # Panics
/// When the backend breaks the contract.
pub async fn a_cursor_is_honoured_only_as_issued_and_for_its_user<S: Storage>(
    storage: S,
) -> Result<(), StorageError> {
    let red = TeamAccess::arc("rue", &["red"]);
    let blue = TeamAccess::arc("bly", &["blue"]);
    storage
        .shared_push(
            Arc::clone(&red),
            TASKS,
            vec![task("secret", None, "rue-1", 1, "red")],
        )
        .await?;
    let reds = storage
        .shared_pull(Arc::clone(&red), TASKS, None, 10)
        .await?;
    assert_eq!(reds.items.len(), 1);
    // Blue replays red's cursor: it would read as "your copy holds red; move it out".
    let replayed = storage
        .shared_pull(Arc::clone(&blue), TASKS, Some(reds.cursor.clone()), 10)
        .await;
    match replayed {
        Err(error) => assert!(error.is_resync_required(), "{error}"),
        Ok(page) => panic!(
            "another user's cursor was served: {:?}",
            page.items.iter().map(|d| &d.id).collect::<Vec<_>>()
        ),
    }
    // Red forges its own cursor: a higher delivered position, or another position.
    for forged in [
        SharedCursor {
            h: 1_000,
            ..reds.cursor.clone()
        },
        SharedCursor {
            p: 0,
            ..reds.cursor.clone()
        },
    ] {
        let answer = storage
            .shared_pull(Arc::clone(&red), TASKS, Some(forged), 10)
            .await;
        assert!(
            answer.as_ref().is_err_and(StorageError::is_resync_required),
            "a changed cursor was served: {answer:?}"
        );
    }
    // The cursor as issued still works.
    let again = storage
        .shared_pull(Arc::clone(&red), TASKS, Some(reds.cursor), 10)
        .await?;
    assert!(again.items.is_empty());
    Ok(())
}

/// A subscription narrows a user's readable set to the buckets it selects: its device gets the
/// rows of those buckets alone (a selected bucket the user may not read stays out), a row that
/// moves out of them arrives as a removal, and its cursor is refused for another subscription
/// or for the whole set.
///
/// # Errors
/// The storage's error.
///
/// # Panics
/// When the backend breaks the contract.
pub async fn a_subscription_reads_its_buckets_alone<S: Storage>(
    storage: S,
) -> Result<(), StorageError> {
    let eve = TeamAccess::arc("sue", &["red", "blue"]);
    let only = |buckets: &[&str], key: &str| -> Arc<dyn Access> {
        Arc::new(Subscribed::new(
            Arc::clone(&eve),
            set(buckets),
            key.to_owned(),
        ))
    };
    let red = only(&["team:red", "team:green"], "red");
    let blue = only(&["team:blue"], "blue");
    storage
        .shared_push(
            Arc::clone(&eve),
            TASKS,
            vec![
                task("r1", None, "sue-1", 1, "red"),
                task("b1", None, "sue-1", 2, "blue"),
                task("r2", None, "sue-1", 3, "red"),
            ],
        )
        .await?;
    let mut on_red = Device::default();
    on_red.sync(&storage, &red, 1, &set(&["team:red"])).await?;
    assert_eq!(on_red.rows.keys().collect::<Vec<_>>(), ["r1", "r2"]);
    let mut on_blue = Device::default();
    on_blue
        .sync(&storage, &blue, 1, &set(&["team:blue"]))
        .await?;
    assert_eq!(on_blue.rows.keys().collect::<Vec<_>>(), ["b1"]);

    // r1 moves to blue: it leaves the red subscription and enters the blue one.
    storage
        .shared_push(
            Arc::clone(&eve),
            TASKS,
            vec![task("r1", Some(1), "sue-1", 4, "blue")],
        )
        .await?;
    on_red.sync(&storage, &red, 1, &set(&["team:red"])).await?;
    on_blue
        .sync(&storage, &blue, 1, &set(&["team:blue"]))
        .await?;
    assert_eq!(on_red.rows.keys().collect::<Vec<_>>(), ["r2"]);
    assert_eq!(on_blue.rows.keys().collect::<Vec<_>>(), ["b1", "r1"]);

    // One subscription's cursor is not another's, nor the whole set's.
    for other in [Arc::clone(&blue), Arc::clone(&eve)] {
        let answer = storage
            .shared_pull(other, TASKS, on_red.cursor.clone(), 10)
            .await;
        assert!(
            answer.as_ref().is_err_and(StorageError::is_resync_required),
            "a cursor was served to another subscription: {answer:?}"
        );
    }
    Ok(())
}

/// A small deterministic generator (xorshift64*), so that a failing seed replays exactly.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}

/// Seeded random interleavings of writes, moves between buckets, deletions, membership grants
/// and removals, and partial pulls by several devices with small pages (two of them syncing a
/// subscription, a subset of their user's buckets), under faults (answers
/// lost on the way, devices falling back to an older copy of themselves with its old cursor). After every page no
/// device holds a row its user could not read when the page was served (checked in
/// the device's apply against the model's readable set), and after a final pull every device holds
/// exactly the live rows of its user's readable buckets, at their latest versions.
///
/// # Errors
/// The storage's error.
///
/// # Panics
/// When the backend breaks the contract; the message names the seed.
pub async fn random_interleavings_never_leak_or_skip<S: Storage>(
    storage: S,
) -> Result<(), StorageError> {
    let seeds: u64 = std::env::var("FERO_SHARED_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6);
    let first: u64 = std::env::var("FERO_SHARED_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    for seed in first..first + seeds {
        interleaving(&storage, seed).await?;
    }
    Ok(())
}

async fn interleaving<S: Storage>(storage: &S, seed: u64) -> Result<(), StorageError> {
    const USERS: [&str; 3] = ["u1", "u2", "u3"];
    // Teams, users and ids are the seed's own, so seeds may share one storage.
    let team_names: Vec<String> = ["a", "b", "c", "d"]
        .iter()
        .map(|t| format!("s{seed}{t}"))
        .collect();
    let teams: Vec<&str> = team_names.iter().map(String::as_str).collect();
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    // The admin may write everywhere (claims every team) and writes every row.
    let admin = TeamAccess::arc(&format!("admin{seed}"), &teams);
    // Model: row id -> (version, team, live); member id -> (version, user, team, live).
    let mut rows: BTreeMap<String, (u64, String, bool)> = BTreeMap::new();
    let mut grants: BTreeMap<String, (u64, String, String, bool)> = BTreeMap::new();
    // Devices 0 to 3 sync everything their user may read; device 4 (of u2) syncs a
    // subscription to teams a and b only, and device 5 (of u3) one to team c.
    let subscriptions: [Option<BTreeSet<String>>; 6] = [
        None,
        None,
        None,
        None,
        Some(set(&[
            &format!("team:{}", teams[0]),
            &format!("team:{}", teams[1]),
        ])),
        Some(set(&[&format!("team:{}", teams[2])])),
    ];
    let mut devices: Vec<(usize, Option<BTreeSet<String>>, Device)> = subscriptions
        .into_iter()
        .enumerate()
        .map(|(i, subscription)| (i % USERS.len(), subscription, Device::default()))
        .collect();
    let user_name = |u: usize| format!("s{seed}{}", USERS[u]);
    let access_of = |u: usize, subscription: &Option<BTreeSet<String>>| -> Arc<dyn Access> {
        let access = TeamAccess::arc(&user_name(u), &[]);
        match subscription {
            None => access,
            Some(buckets) => Arc::new(Subscribed::new(access, buckets.clone(), "sub".to_owned())),
        }
    };
    let readable_of = |grants: &BTreeMap<String, (u64, String, String, bool)>,
                       u: usize,
                       subscription: &Option<BTreeSet<String>>| {
        let mut set: BTreeSet<String> = grants
            .values()
            .filter(|(_, user, _, live)| *live && *user == user_name(u))
            .map(|(_, _, team, _)| format!("team:{team}"))
            .collect();
        set.insert(format!("user:{}", user_name(u)));
        set.insert("global".to_owned());
        if let Some(buckets) = subscription {
            set.retain(|bucket| buckets.contains(bucket));
        }
        set
    };
    let mut saved: Vec<Option<Device>> = vec![None; devices.len()];
    let mut mutation = 0u64;
    let device = format!("admin{seed}-dev");
    for _step in 0..120 {
        mutation += 1;
        match rng.below(10) {
            0..=3 => {
                // Create or update (possibly moving) a row.
                let id = format!("s{seed}-t{}", rng.below(30));
                let team = teams[rng.below(teams.len() as u64) as usize];
                let base = rows.get(&id).map(|(v, _, _)| *v);
                let answer = storage
                    .shared_push(
                        Arc::clone(&admin),
                        TASKS,
                        vec![task(&id, base, &device, mutation, team)],
                    )
                    .await?;
                let version = version_of(&answer.outcome.results[0]);
                rows.insert(id, (version, format!("team:{team}"), true));
            }
            4 => {
                // Delete a live row.
                let live: Vec<String> = rows
                    .iter()
                    .filter(|(_, (_, _, live))| *live)
                    .map(|(id, _)| id.clone())
                    .collect();
                if live.is_empty() {
                    continue;
                }
                let id = live[rng.below(live.len() as u64) as usize].clone();
                let (base, team, _) = rows[&id].clone();
                let answer = storage
                    .shared_push(
                        Arc::clone(&admin),
                        TASKS,
                        vec![removal_of(task(&id, Some(base), &device, mutation, "x"))],
                    )
                    .await?;
                rows.insert(id, (version_of(&answer.outcome.results[0]), team, false));
            }
            5 | 6 => {
                // Grant or revoke a membership.
                let user = rng.below(USERS.len() as u64) as usize;
                let team = teams[rng.below(teams.len() as u64) as usize];
                let id = format!("s{seed}-m-{user}-{team}");
                let current = grants.get(&id).cloned();
                let change = match &current {
                    Some((v, _, _, true)) => removal_of(member(
                        &id,
                        Some(*v),
                        &device,
                        mutation,
                        &user_name(user),
                        team,
                    )),
                    Some((v, _, _, false)) => {
                        member(&id, Some(*v), &device, mutation, &user_name(user), team)
                    }
                    None => member(&id, None, &device, mutation, &user_name(user), team),
                };
                let live = !change.deleted;
                let answer = storage
                    .shared_push(Arc::clone(&admin), MEMBERS, vec![change])
                    .await?;
                let version = version_of(&answer.outcome.results[0]);
                grants.insert(id, (version, user_name(user), team.to_owned(), live));
            }
            _ => {
                // A device pulls a little (one to three pages of 1 to 4 rows), leaving a
                // transition half done at times.
                // Faults: a page's answer may be lost (served, never applied: the device asks
                // again from the same cursor), and a device may fall back to a copy of itself
                // saved earlier (its file restored from a backup), whose old cursor the server
                // must still serve correctly.
                let pick = rng.below(devices.len() as u64) as usize;
                let limit = 1 + rng.below(4) as u32;
                let pages = 1 + rng.below(3);
                let (user, subscription, device) = &mut devices[pick];
                let allowed = readable_of(&grants, *user, subscription);
                let access = access_of(*user, subscription);
                if rng.below(10) == 0 {
                    saved[pick] = Some(device.clone());
                }
                if rng.below(15) == 0 {
                    if let Some(old) = saved[pick].clone() {
                        *device = old;
                    }
                }
                for _ in 0..pages {
                    let page = storage
                        .shared_pull(Arc::clone(&access), TASKS, device.cursor.clone(), limit)
                        .await?;
                    assert_eq!(page.readable, allowed, "seed {seed}: readable set");
                    assert_unique_ids(&page.items);
                    let mut one = device.clone();
                    for item in &page.items {
                        one.apply(item, access.user(), &allowed);
                    }
                    if rng.below(8) == 0 {
                        // The answer was lost on the way: nothing applied.
                        continue;
                    }
                    one.cursor = Some(page.cursor);
                    *device = one;
                    if !page.has_more {
                        break;
                    }
                }
            }
        }
    }
    // Quiescence: every device pulls to the end and holds exactly what its user may read.
    for (user, subscription, device) in &mut devices {
        let allowed = readable_of(&grants, *user, subscription);
        let access = access_of(*user, subscription);
        device.sync(storage, &access, 3, &allowed).await?;
        let expected: BTreeMap<String, (u64, String)> = rows
            .iter()
            .filter(|(_, (_, team, live))| *live && allowed.contains(team))
            .map(|(id, (v, team, _))| (id.clone(), (*v, team.clone())))
            .collect();
        assert_eq!(
            device.rows,
            expected,
            "seed {seed}: {}'s device does not hold exactly its readable rows (replay with \
             FERO_SHARED_SEED={seed} FERO_SHARED_SEEDS=1)",
            access.user()
        );
    }
    Ok(())
}

trait WithBase {
    fn with_base(self, base: u64) -> Self;
}

impl WithBase for Change {
    fn with_base(mut self, base: u64) -> Self {
        self.base_version = Some(Version(base));
        self
    }
}

/// [`TeamAccess`] as a server's [`Sharing`](crate::shared::Sharing), for HTTP tests without a
/// rules file: `tasks` and `members` are shared, and a user's claimed teams come from the
/// token's `teams` claim (a list of strings; none without it).
#[derive(Clone, Debug, Default)]
pub struct TeamSharing;

impl crate::shared::Sharing for TeamSharing {
    fn is_shared(&self, collection: &str) -> bool {
        collection == TASKS || collection == MEMBERS
    }

    fn shared_collections(&self) -> Vec<String> {
        vec![MEMBERS.to_owned(), TASKS.to_owned()]
    }

    fn access(&self, user: &UserId, claims: &serde_json::Value) -> Arc<dyn Access> {
        let teams: Vec<&str> = claims
            .get("teams")
            .and_then(|t| t.as_array())
            .map(|teams| teams.iter().filter_map(|t| t.as_str()).collect())
            .unwrap_or_default();
        TeamAccess::arc(user.as_str(), &teams)
    }

    /// `team` (`params.team`: one team) and `teams` (`params.teams`: a list) for `tasks`.
    fn subscription_buckets(
        &self,
        collection: &str,
        _user: &UserId,
        _claims: &serde_json::Value,
        subscription: &fero_protocol::Subscription,
    ) -> Result<BTreeSet<String>, String> {
        let params = &subscription.params;
        let teams: Option<Vec<&str>> = match (collection, subscription.name.as_str()) {
            (TASKS, "team") => params.get("team").and_then(|t| t.as_str()).map(|t| vec![t]),
            (TASKS, "teams") => params
                .get("teams")
                .and_then(|t| t.as_array())
                .map(|teams| teams.iter().filter_map(|t| t.as_str()).collect()),
            _ => {
                return Err(format!(
                    "collection {collection:?} has no subscription {:?}",
                    subscription.name
                ));
            }
        };
        let teams = teams.ok_or_else(|| {
            format!(
                "subscription {:?}: a parameter is missing or not a string",
                subscription.name
            )
        })?;
        Ok(teams
            .into_iter()
            .map(|team| format!("team:{team}"))
            .collect())
    }
}
