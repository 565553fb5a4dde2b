//! Purging tombstones used to exist only as a Rust call (`Server::purge_tombstones`), so a
//! server kept every tombstone forever. Now `serve` purges tombstones older than the tombstone
//! retention (default 90 days, `--tombstone-retention`, off with `None`) at start and every hour,
//! and `fero-server purge-tombstones --db … --older-than …` does it once and says how many went.

mod support;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use fero::{SyncId, Timestamp};
use fero_server::storage_suite::ManualClock;
use fero_server::{
    DEFAULT_TOMBSTONE_RETENTION, MUTATION_PRUNE_INTERVAL, PostgresStorage, PruneReport,
    PurgeReport, Server, SqliteStorage, Storage, StorageError, UserId,
};
use serde_json::json;
use support::hooked::{Hooked, Hooks};
use support::{Backend, Running, change, deletion, server_on};
use tokio::sync::mpsc;
use tokio::time::Instant;

const BINARY: &str = env!("CARGO_BIN_EXE_fero-server");
const DAY: Duration = Duration::from_secs(24 * 60 * 60);
const HOUR_MS: u64 = 3_600_000;

/// What the schedule asked the storage for.
#[derive(Debug, PartialEq)]
enum Call {
    Prune,
    Purge(Instant, Timestamp, u64),
}

/// Reports every prune and time-based purge on a channel.
#[derive(Debug)]
struct Observer {
    calls: mpsc::UnboundedSender<Call>,
}

impl Hooks for Observer {
    fn after_prune(&self, _started: Instant, _before: Timestamp, _report: &PruneReport) {
        let _ = self.calls.send(Call::Prune);
    }
    fn after_purge(&self, started: Instant, before: Timestamp, report: &PurgeReport) {
        let _ = self.calls.send(Call::Purge(started, before, report.purged));
    }
}

/// Creates and deletes `id` at the clock's time.
async fn delete_at(storage: &dyn Storage, clock: &ManualClock, at: Timestamp, id: &str, seq: u64) {
    clock.set(at);
    let alice = UserId::new("alice");
    storage
        .push(&alice, "notes", vec![change(id, None, "d", seq, json!(1))])
        .await
        .unwrap();
    storage
        .push(&alice, "notes", vec![deletion(id, 1, "d", seq + 1)])
        .await
        .unwrap();
}

/// A server on `storage` with `retention`, its calls reported on the returned channel.
fn observed(
    storage: SqliteStorage,
    clock: &ManualClock,
    retention: Option<Duration>,
) -> (Server, mpsc::UnboundedReceiver<Call>) {
    let (calls_tx, calls) = mpsc::unbounded_channel();
    let server = Server::builder()
        .storage(Hooked {
            inner: storage,
            hooks: Observer { calls: calls_tx },
        })
        .tokens(support::tokens())
        .clock(Arc::new(clock.clone()))
        .tombstone_retention(retention)
        .build()
        .unwrap();
    (server, calls)
}

#[tokio::test(start_paused = true)]
async fn serve_purges_tombstones_older_than_the_retention_at_start_and_every_hour() {
    let clock = ManualClock::new();
    let sqlite = SqliteStorage::open_with_clock(":memory:", Arc::new(clock.clone())).unwrap();
    let start = ManualClock::START.0;
    delete_at(
        &sqlite,
        &clock,
        Timestamp(start - 2 * 24 * HOUR_MS),
        "old",
        1,
    )
    .await;
    delete_at(&sqlite, &clock, Timestamp(start - HOUR_MS), "new", 3).await;
    clock.set(ManualClock::START);

    let (server, mut calls) = observed(sqlite.clone(), &clock, Some(DAY));
    let started = Instant::now();
    let mut running = Running::start(server).await;
    assert_eq!(calls.recv().await, Some(Call::Prune));
    assert_eq!(
        calls.recv().await,
        Some(Call::Purge(started, Timestamp(start - 24 * HOUR_MS), 1)),
        "at start: the tombstone deleted two days ago goes, the one of an hour ago stays"
    );
    assert!(matches!(
        sqlite
            .pull(&UserId::new("alice"), "notes", SyncId(1), 10)
            .await,
        Err(StorageError::ResyncRequired { .. })
    ));

    clock.advance(DAY);
    assert_eq!(calls.recv().await, Some(Call::Prune));
    assert_eq!(
        calls.recv().await,
        Some(Call::Purge(
            started + MUTATION_PRUNE_INTERVAL,
            Timestamp(start),
            1
        )),
        "an hour later, with the wall clock a day on, the other one goes"
    );
    running.shutdown();
    running.serving.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn with_the_retention_off_nothing_is_purged() {
    let clock = ManualClock::new();
    let sqlite = SqliteStorage::open_with_clock(":memory:", Arc::new(clock.clone())).unwrap();
    delete_at(&sqlite, &clock, Timestamp(0), "ancient", 1).await;
    clock.set(ManualClock::START);
    let (server, mut calls) = observed(sqlite.clone(), &clock, None);
    assert_eq!(server.tombstone_retention(), None);
    let mut running = Running::start(server).await;
    assert_eq!(calls.recv().await, Some(Call::Prune));
    running.shutdown();
    running.serving.await.unwrap().unwrap();
    while let Some(call) = calls.recv().await {
        assert_eq!(call, Call::Prune, "no purge with the retention off");
    }
    let page = sqlite
        .pull(&UserId::new("alice"), "notes", SyncId(0), 10)
        .await
        .unwrap();
    assert!(page.items[0].deleted, "the tombstone is kept");
}

#[test]
fn the_default_retention_is_90_days_and_zero_is_refused() {
    let server = support::server();
    assert_eq!(
        server.tombstone_retention(),
        Some(DEFAULT_TOMBSTONE_RETENTION)
    );
    assert_eq!(DEFAULT_TOMBSTONE_RETENTION, 90 * DAY);
    let zero = Server::builder()
        .storage(SqliteStorage::open_in_memory().unwrap())
        .tokens(support::tokens())
        .tombstone_retention(Some(Duration::ZERO))
        .build();
    assert!(matches!(
        zero,
        Err(fero_server::BuildError::ZeroTombstoneRetention)
    ));
}

/// The scheduled purge's own function, on PostgreSQL (and SQLite): only tombstones older than
/// the age go, and the horizon rises with them.
async fn purge_older_than_on(backend: Backend) {
    let clock = ManualClock::new();
    let Some(on) = server_on(backend, &clock).await else {
        return;
    };
    let storage = on.server.storage().clone();
    let start = ManualClock::START.0;
    delete_at(
        &*storage,
        &clock,
        Timestamp(start - 3 * 24 * HOUR_MS),
        "old",
        1,
    )
    .await;
    delete_at(&*storage, &clock, Timestamp(start - HOUR_MS), "new", 3).await;
    clock.set(ManualClock::START);
    let report = on.server.purge_tombstones_older_than(DAY).await.unwrap();
    assert_eq!((report.purged, report.collections), (1, 1));
    let alice = UserId::new("alice");
    let page = storage.pull(&alice, "notes", SyncId(0), 10).await.unwrap();
    let ids: Vec<&str> = page.items.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["new"]);
    assert_eq!(page.horizon, SyncId(2), "the old tombstone's sync_id");
}

#[tokio::test]
async fn purge_older_than_on_sqlite() {
    purge_older_than_on(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_older_than_on_postgres() {
    purge_older_than_on(Backend::Postgres).await;
}

/// Runs `fero-server purge-tombstones --db <db> --older-than 30d` and returns its stdout.
fn purge_command(db: &str) -> String {
    let output = Command::new(BINARY)
        .args(["purge-tombstones", "--db", db, "--older-than", "30d"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "purge-tombstones failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Fills `storage` with a tombstone deleted at [`ManualClock::START`] (years ago) and a live row,
/// then runs the command twice on `db`.
async fn the_command_purges_once(storage: &dyn Storage, clock: &ManualClock, db: &str) {
    delete_at(storage, clock, ManualClock::START, "gone", 1).await;
    storage
        .push(
            &UserId::new("alice"),
            "notes",
            vec![change("kept", None, "d", 9, json!(1))],
        )
        .await
        .unwrap();
    let first = tokio::task::spawn_blocking({
        let db = db.to_owned();
        move || purge_command(&db)
    })
    .await
    .unwrap();
    assert!(
        first.starts_with("purged 1 tombstones") && first.contains("in 1 collections"),
        "{first}"
    );
    let page = storage
        .pull(&UserId::new("alice"), "notes", SyncId(0), 10)
        .await
        .unwrap();
    let ids: Vec<&str> = page.items.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["kept"]);
    let db = db.to_owned();
    let second = tokio::task::spawn_blocking(move || purge_command(&db))
        .await
        .unwrap();
    assert!(second.starts_with("purged 0 tombstones"), "{second}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_purge_tombstones_command_on_a_sqlite_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sync.db");
    let clock = ManualClock::new();
    let storage = SqliteStorage::open_with_clock(&path, Arc::new(clock.clone())).unwrap();
    the_command_purges_once(&storage, &clock, path.to_str().unwrap()).await;

    let missing = dir.path().join("typo.db");
    let output = Command::new(BINARY)
        .args(["purge-tombstones", "--db"])
        .arg(&missing)
        .args(["--older-than", "30d"])
        .output()
        .unwrap();
    assert!(!output.status.success(), "a missing database is an error");
    assert!(!missing.exists(), "and is not created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_purge_tombstones_command_on_postgres() {
    let Some(database) = support::postgres::TestDatabase::create("purge_cmd").await else {
        return;
    };
    let clock = ManualClock::new();
    let storage = PostgresStorage::builder(&database.url)
        .pool_size(2)
        .clock(Arc::new(clock.clone()))
        .connect()
        .await
        .unwrap();
    the_command_purges_once(&storage, &clock, &database.url).await;
}
