//! Guards the shared pull's promise on PostgreSQL, where writers really run at once: never a
//! skip, never a leak. Writer tasks create rows in team buckets, move them between buckets,
//! update and delete them, and a membership writer grants and revokes the readers' teams, all
//! through two storages (two connection pools, as two processes would have), each write
//! transaction pausing a random few milliseconds after taking its `seq`s and before `COMMIT`.
//! Meanwhile readers page through the shared collection with small pages. No page may carry
//! content of a bucket outside the readable set the page was served for, that set must be one
//! the reader's rules could give, and at the end each reader holds exactly the live rows of the
//! buckets its user may read then, at their latest versions.
//!
//! Random choices come from one seed, printed; rerun with `FERO_TEST_SEED=<seed>`.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fero::{RandomSource, SeededRandom, Version};
use fero_protocol::{Change, ChangeOutcome, MutationId};
use fero_server::shared::{Access, SharedCursor};
use fero_server::shared_suite::{MEMBERS, TASKS, TeamAccess};
use fero_server::{PostgresStorage, Storage};
use serde_json::json;
use support::postgres::TestDatabase;

const TEAMS: [&str; 4] = ["a", "b", "c", "d"];
/// Each reader's user and the teams its token claims (the membership writer grants more).
const READERS: [(&str, &[&str]); 4] = [
    ("r0", &["a"]),
    ("r1", &["b", "c"]),
    ("r2", &[]),
    ("r3", &["d"]),
];
const WRITERS: u64 = 6;
const PUSHES_PER_WRITER: u64 = 30;
/// Ids per writer: each writer writes only its own, so its base versions are always right.
const IDS_PER_WRITER: u64 = 12;
/// Grant or revoke steps of the membership writer.
const MEMBERSHIP_STEPS: u64 = 40;
/// The longest pause inside a write transaction, in milliseconds.
const MAX_PAUSE_MS: u64 = 6;
/// Rows per pull: small, so cursors move (and transitions stop half way) while writers commit.
const PAGE: u32 = 3;
/// Bounds the readers' loops so a broken `has_more` fails the test instead of hanging it.
const MAX_READER_PULLS: usize = 200_000;

fn seed() -> u64 {
    let seed = std::env::var("FERO_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x005e_a2ed);
    println!("FERO_TEST_SEED={seed}");
    seed
}

/// Row id to `(version, team bucket, live)`, as the writers' answers tell.
type Rows = BTreeMap<String, (u64, String, bool)>;

fn task(id: &str, base: Option<u64>, device: &str, seq: u64, team: &str) -> Change {
    Change {
        id: id.to_owned(),
        base_version: base.map(Version),
        mutation_id: MutationId::new(device, seq),
        deleted: false,
        data: json!({ "team": team, "title": format!("{id} in {team}") }),
    }
}

fn accepted_version(answer: &fero_protocol::ChangeResult) -> u64 {
    match &answer.outcome {
        ChangeOutcome::Accepted { version, .. } => version.0,
        other => panic!("change {:?} should be accepted, got {other:?}", answer.id),
    }
}

async fn storage(database: &TestDatabase, pauses: Arc<Mutex<SeededRandom>>) -> PostgresStorage {
    PostgresStorage::builder(&database.url)
        .pool_size(4)
        .before_commit(move || {
            let pause = pauses.lock().unwrap().next_u64() % (MAX_PAUSE_MS + 1);
            tokio::time::sleep(Duration::from_millis(pause))
        })
        .connect()
        .await
        .unwrap()
}

/// One writer: creates, updates (moving a row to a random team half the time) and deletes its
/// own rows, a few changes per push.
async fn write_rows(storage: PostgresStorage, writer: u64, seed: u64, truth: Arc<Mutex<Rows>>) {
    let mut random = SeededRandom::new(seed ^ (writer + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let admin = TeamAccess::arc("admin", &TEAMS);
    let device = format!("writer-{writer}");
    let mut mine: Rows = BTreeMap::new();
    let mut mutation = 0;
    for _ in 0..PUSHES_PER_WRITER {
        let mut changes = Vec::new();
        let mut ids = BTreeSet::new();
        for _ in 0..1 + random.next_u64() % 4 {
            let id = format!("w{writer}-{}", random.next_u64() % IDS_PER_WRITER);
            if !ids.insert(id.clone()) {
                continue;
            }
            mutation += 1;
            let team = TEAMS[(random.next_u64() % TEAMS.len() as u64) as usize];
            let change = match mine.get(&id) {
                Some((version, current, true)) if random.next_u64() % 5 == 0 => Change {
                    deleted: true,
                    data: serde_json::Value::Null,
                    ..task(&id, Some(*version), &device, mutation, current)
                },
                Some((version, current, true)) if random.next_u64() % 2 == 0 => {
                    // An edit that keeps the row in its bucket.
                    let team = current.trim_start_matches("team:").to_owned();
                    task(&id, Some(*version), &device, mutation, &team)
                }
                Some((version, _, _)) => task(&id, Some(*version), &device, mutation, team),
                None => task(&id, None, &device, mutation, team),
            };
            changes.push(change);
        }
        let sent = changes.clone();
        let pushed = storage
            .shared_push(Arc::clone(&admin), TASKS, changes)
            .await
            .unwrap();
        for (change, answer) in sent.iter().zip(&pushed.outcome.results) {
            let version = accepted_version(answer);
            let bucket = match (change.deleted, mine.get(&change.id)) {
                (true, Some((_, bucket, _))) => bucket.clone(),
                _ => format!("team:{}", change.data["team"].as_str().unwrap()),
            };
            mine.insert(change.id.clone(), (version, bucket, !change.deleted));
        }
    }
    truth.lock().unwrap().extend(mine);
}

/// The membership writer: grants and revokes teams to the readers' users at random. Returns,
/// per user, every team ever granted and the teams granted at the end.
async fn write_memberships(
    storage: PostgresStorage,
    seed: u64,
) -> BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)> {
    let mut random = SeededRandom::new(seed ^ 0x6d65_6d62_6572);
    let admin = TeamAccess::arc("admin", &TEAMS);
    // Membership id to (version, live).
    let mut rows: BTreeMap<String, (u64, bool)> = BTreeMap::new();
    let mut granted: BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)> = READERS
        .iter()
        .map(|(user, _)| ((*user).to_owned(), Default::default()))
        .collect();
    for mutation in 1..=MEMBERSHIP_STEPS {
        let (user, _) = READERS[(random.next_u64() % READERS.len() as u64) as usize];
        let team = TEAMS[(random.next_u64() % TEAMS.len() as u64) as usize];
        let id = format!("m-{user}-{team}");
        let current = rows.get(&id).copied();
        let change = Change {
            id: id.clone(),
            base_version: current.map(|(version, _)| Version(version)),
            mutation_id: MutationId::new("membership", mutation),
            deleted: matches!(current, Some((_, true))),
            data: json!({ "team": team, "user": user }),
        };
        let live = !change.deleted;
        let pushed = storage
            .shared_push(Arc::clone(&admin), MEMBERS, vec![change])
            .await
            .unwrap();
        assert!(pushed.regranted.contains(user), "{pushed:?}");
        rows.insert(id, (accepted_version(&pushed.outcome.results[0]), live));
        let (ever, now) = granted.get_mut(user).unwrap();
        let bucket = format!("team:{team}");
        ever.insert(bucket.clone());
        if live {
            now.insert(bucket);
        } else {
            now.remove(&bucket);
        }
    }
    granted
}

/// What one reader saw.
#[derive(Debug, Default)]
struct Reader {
    /// Id to `(version, bucket)` of the rows the reader holds.
    held: BTreeMap<String, (u64, String)>,
    cursor: Option<SharedCursor>,
    pulls: usize,
    removals: usize,
    readable: BTreeSet<String>,
}

impl Reader {
    /// Applies a page; panics on a leak: content of a bucket outside the page's readable set.
    fn apply(&mut self, user: &str, page: fero_server::shared::SharedPage) {
        for item in &page.items {
            let data: serde_json::Value = serde_json::from_str(item.data.get()).unwrap();
            if data.is_null() {
                assert!(
                    item.deleted,
                    "{user}: a live row {:?} without content",
                    item.id
                );
                self.removals += 1;
                self.held.remove(&item.id);
                continue;
            }
            let bucket = format!("team:{}", data["team"].as_str().unwrap());
            assert!(
                page.readable.contains(&bucket),
                "LEAK: {user} received row {:?} of {bucket}, readable {:?}",
                item.id,
                page.readable
            );
            if item.deleted {
                self.held.remove(&item.id);
            } else {
                self.held.insert(item.id.clone(), (item.version.0, bucket));
            }
        }
        self.readable = page.readable;
        self.cursor = Some(page.cursor);
    }
}

async fn read(
    storage: PostgresStorage,
    access: Arc<dyn Access>,
    possible: BTreeSet<String>,
    writers_done: Arc<AtomicBool>,
) -> Reader {
    let user = access.user().to_string();
    let mut reader = Reader::default();
    loop {
        // Read the flag before the pull: if every writer had finished by then, this pull sees
        // every commit, and an end of the feed means the reader is done.
        let done = writers_done.load(Ordering::SeqCst);
        let page = storage
            .shared_pull(Arc::clone(&access), TASKS, reader.cursor.clone(), PAGE)
            .await
            .unwrap();
        reader.pulls += 1;
        assert!(
            reader.pulls < MAX_READER_PULLS,
            "{user} never reached the end of the feed"
        );
        assert!(page.items.len() <= PAGE as usize);
        assert!(
            page.readable.is_subset(&possible),
            "{user}'s readable set {:?} holds a bucket the rules never gave it (possible: \
             {possible:?})",
            page.readable
        );
        let has_more = page.has_more;
        reader.apply(&user, page);
        if !has_more {
            if done {
                return reader;
            }
            tokio::task::yield_now().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_paging_while_rows_move_and_memberships_change_never_skip_or_leak() {
    let Some(database) = TestDatabase::create("shared_writers").await else {
        return;
    };
    let seed = seed();
    let pauses = Arc::new(Mutex::new(SeededRandom::new(seed ^ 0x0070_6175_7365)));
    let storages = [
        storage(&database, Arc::clone(&pauses)).await,
        storage(&database, Arc::clone(&pauses)).await,
    ];
    let truth: Arc<Mutex<Rows>> = Arc::default();
    let writers_done = Arc::new(AtomicBool::new(false));

    let mut writers = tokio::task::JoinSet::new();
    for writer in 0..WRITERS {
        let storage = storages[usize::try_from(writer).unwrap() % 2].clone();
        writers.spawn(write_rows(storage, writer, seed, Arc::clone(&truth)));
    }
    let memberships = tokio::spawn(write_memberships(storages[1].clone(), seed));

    let mut readers = tokio::task::JoinSet::new();
    let every_team: BTreeSet<String> = TEAMS.iter().map(|t| format!("team:{t}")).collect();
    for (index, (user, claimed)) in READERS.iter().enumerate() {
        let access = TeamAccess::arc(user, claimed);
        // At most: every team (the membership writer may grant any), the user's own bucket and
        // `global`; the claimed teams are always in.
        let mut possible = every_team.clone();
        possible.insert(format!("user:{user}"));
        possible.insert("global".to_owned());
        let storage = storages[index % 2].clone();
        let done = Arc::clone(&writers_done);
        readers.spawn(async move { (index, read(storage, access, possible, done).await) });
    }

    while let Some(joined) = writers.join_next().await {
        joined.unwrap();
    }
    let granted = memberships.await.unwrap();
    writers_done.store(true, Ordering::SeqCst);
    let truth = truth.lock().unwrap().clone();
    assert!(
        truth.values().any(|(_, _, live)| *live),
        "the writers left no live row"
    );
    let mut total_removals = 0;
    while let Some(joined) = readers.join_next().await {
        let (index, reader) = joined.unwrap();
        let (user, claimed) = READERS[index];
        let (ever, now) = &granted[user];
        let mut readable: BTreeSet<String> = claimed.iter().map(|t| format!("team:{t}")).collect();
        readable.extend(now.iter().cloned());
        readable.insert(format!("user:{user}"));
        readable.insert("global".to_owned());
        assert_eq!(
            reader.readable, readable,
            "{user}'s last page was served for another readable set (seed {seed})"
        );
        let expected: BTreeMap<String, (u64, String)> = truth
            .iter()
            .filter(|(_, (_, bucket, live))| *live && readable.contains(bucket))
            .map(|(id, (version, bucket, _))| (id.clone(), (*version, bucket.clone())))
            .collect();
        let missing: Vec<_> = expected
            .iter()
            .filter(|(id, row)| reader.held.get(*id) != Some(*row))
            .map(|(id, row)| format!("{id}: latest {row:?}, holds {:?}", reader.held.get(id)))
            .collect();
        let extra: Vec<_> = reader
            .held
            .iter()
            .filter(|(id, _)| !expected.contains_key(*id))
            .map(|(id, row)| format!("{id}: holds {row:?}, truth {:?}", truth.get(id)))
            .collect();
        println!(
            "{user}: {} pulls, {} removals, holds {} rows of {readable:?} (ever granted \
             {ever:?})",
            reader.pulls,
            reader.removals,
            reader.held.len()
        );
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{user} (seed {seed}) skipped rows:\n{}\nor holds rows it may not:\n{}",
            missing.join("\n"),
            extra.join("\n")
        );
        total_removals += reader.removals;
    }
    assert!(
        total_removals > 0,
        "no reader saw a row move out: the test no longer exercises moves (seed {seed})"
    );
}
