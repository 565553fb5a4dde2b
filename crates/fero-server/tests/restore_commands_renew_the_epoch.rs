//! `fero-server restore` and `fero-server mark-restored`, run as the binary: a restore puts the
//! backup's rows back and draws a new restore epoch, so a cursor of the database before is
//! refused (410 `server_behind` over HTTP) even where it lies inside the restored feed;
//! `mark-restored` draws another one, on SQLite and on PostgreSQL; both refuse a missing file.

mod support;

use std::path::Path;
use std::process::Output;

use fero::SyncId;
use fero_server::{
    FeedPosition, PostgresStorage, SeedRow, SqliteStorage, Storage, StorageError, UserId,
};
use serde_json::json;
use support::postgres::TestDatabase;

fn fero_server(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_fero-server"))
        .args(args)
        .output()
        .expect("the fero-server binary runs")
}

fn text(output: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The epoch of `storage`, read from a page.
async fn epoch(storage: &dyn Storage) -> Option<u64> {
    storage
        .pull(&UserId::new("alice"), "notes", SyncId(0), 1)
        .await
        .unwrap()
        .epoch
}

async fn seed(storage: &dyn Storage, prefix: &str, n: usize) {
    let rows = (0..n).map(|i| SeedRow::new(format!("{prefix}-{i}"), json!(i)));
    storage
        .seed(&UserId::new("alice"), "notes", rows.collect())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_puts_the_backup_back_and_refuses_the_cursors_of_before() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("sync.db");
    let backup = dir.path().join("sync.backup.db");
    let (db_arg, backup_arg) = (db.to_str().unwrap(), backup.to_str().unwrap());
    let storage = SqliteStorage::open(&db).unwrap();
    seed(&storage, "before", 3).await; // 1..=3
    let before = epoch(&storage).await;
    assert!(before.is_some());
    drop(storage);
    let output = fero_server(&["backup", "--db", db_arg, "--to", backup_arg]);
    assert!(output.status.success(), "{}", text(&output));

    let storage = SqliteStorage::open(&db).unwrap();
    seed(&storage, "after", 4).await; // 4..=7, lost by the restore
    // A device's cursor after the backup, with the epoch of that time.
    let cursor = FeedPosition {
        after: SyncId(5),
        horizon: None,
        epoch: before,
    };
    assert!(
        storage
            .pull_from(&UserId::new("alice"), "notes", cursor, 10)
            .await
            .is_ok()
    );
    drop(storage);

    let output = fero_server(&["restore", "--from", backup_arg, "--db", db_arg]);
    assert!(output.status.success(), "{}", text(&output));
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("new restore epoch"),
        "{}",
        text(&output)
    );
    let storage = SqliteStorage::open(&db).unwrap();
    let rows = storage
        .pull(&UserId::new("alice"), "notes", SyncId(0), 100)
        .await
        .unwrap();
    let ids: Vec<&str> = rows.items.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(
        ids,
        ["before-0", "before-1", "before-2"],
        "the backup's rows"
    );
    let restored = rows.epoch;
    assert_ne!(restored, before, "the restore drew a new epoch");
    // Other devices push their rows back: the feed grows past the cursor again.
    seed(&storage, "pushed-back", 4).await; // 4..=7
    match storage
        .pull_from(&UserId::new("alice"), "notes", cursor, 10)
        .await
    {
        Err(StorageError::Restored { cursor_epoch, .. }) => assert_eq!(Some(cursor_epoch), before),
        other => panic!("a cursor from before the restore must be refused, got {other:?}"),
    }
    drop(storage);

    let output = fero_server(&["mark-restored", "--db", db_arg]);
    assert!(output.status.success(), "{}", text(&output));
    let storage = SqliteStorage::open(&db).unwrap();
    let marked = epoch(&storage).await;
    assert!(marked.is_some() && marked != restored && marked != before);
    assert_eq!(
        storage
            .digest(&UserId::new("alice"), "notes")
            .await
            .unwrap()
            .count(),
        7,
        "mark-restored touches no row"
    );
}

#[test]
fn restore_and_mark_restored_refuse_a_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.db");
    let db = dir.path().join("sync.db");
    let output = fero_server(&[
        "restore",
        "--from",
        missing.to_str().unwrap(),
        "--db",
        db.to_str().unwrap(),
    ]);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("does not exist"),
        "{}",
        text(&output)
    );
    assert!(!Path::new(&db).exists(), "nothing was created");
    let output = fero_server(&["mark-restored", "--db", missing.to_str().unwrap()]);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("no database at"),
        "{}",
        text(&output)
    );
    assert!(!missing.exists(), "nothing was created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mark_restored_draws_a_new_epoch_on_postgres() {
    // export FERO_TEST_POSTGRES=postgres://postgres@127.0.0.1:5432/test
    let Some(database) = TestDatabase::create("mark_restored").await else {
        return;
    };
    let storage = PostgresStorage::connect(&database.url).await.unwrap();
    seed(&storage, "row", 2).await;
    let before = epoch(&storage).await;
    assert!(before.is_some());
    let output = fero_server(&["mark-restored", "--db", &database.url]);
    assert!(output.status.success(), "{}", text(&output));
    let after = epoch(&storage).await;
    assert!(after.is_some() && after != before, "{before:?} → {after:?}");
    let cursor = FeedPosition {
        after: SyncId(1),
        horizon: None,
        epoch: before,
    };
    assert!(matches!(
        storage
            .pull_from(&UserId::new("alice"), "notes", cursor, 10)
            .await,
        Err(StorageError::Restored { .. })
    ));
}
