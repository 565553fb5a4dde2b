//! `fero-server backup`: a copy made while writers push opens, passes SQLite's integrity check,
//! and holds a consistent prefix of what was committed (every push whole or absent, the feed
//! counter agreeing with the rows), which a server can serve.

mod support;

use std::path::Path;

use fero_server::backup::{BackupError, backup_sqlite};
use fero_server::{SqliteStorage, Storage, UserId};
use rusqlite::Connection;
use serde_json::json;
use support::change;
use tokio::sync::mpsc;

/// Each push writes two rows, `p{n}-a` and `p{n}-b`, in one transaction.
const PAIR: usize = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_writers_push_is_a_consistent_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("live.db");
    let storage = SqliteStorage::open(&db).unwrap();
    let (progress, mut pushed) = mpsc::unbounded_channel::<u64>();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut writers = Vec::new();
    for writer in 0..2u64 {
        let storage = storage.clone();
        let progress = progress.clone();
        let stopped = stopped.clone();
        writers.push(tokio::spawn(async move {
            let user = UserId::new(format!("user-{writer}"));
            let mut n = 0u64;
            while !*stopped.borrow() {
                let changes = vec![
                    change(&format!("p{n}-a"), None, "dev", 2 * n, json!({ "n": n })),
                    change(
                        &format!("p{n}-b"),
                        None,
                        "dev",
                        2 * n + 1,
                        json!({ "n": n }),
                    ),
                ];
                storage.push(&user, "items", changes).await.unwrap();
                n += 1;
                let _ = progress.send(n);
            }
            n
        }));
    }
    drop(progress);
    // The backup starts once the writers have committed some pushes, and they go on meanwhile.
    let mut seen = 0;
    while seen < 40 {
        pushed.recv().await.unwrap();
        seen += 1;
    }
    let copy = dir.path().join("copy.db");
    let (from, to) = (db.clone(), copy.clone());
    let report = tokio::task::spawn_blocking(move || backup_sqlite(&from, &to))
        .await
        .unwrap()
        .unwrap();
    stop.send(true).unwrap();
    let mut totals = Vec::new();
    for writer in writers {
        totals.push(writer.await.unwrap());
    }
    assert!(report.pages > 0 && report.bytes > 0);
    assert!(!dir.path().join("copy.db.partial").exists());

    let conn = Connection::open(&copy).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let mut in_copy = 0;
    for (writer, total) in totals.iter().enumerate() {
        let owner = format!("user-{writer}");
        let ids: Vec<String> = conn
            .prepare("SELECT id FROM rows WHERE owner = ?1 ORDER BY sync_id")
            .unwrap()
            .query_map([&owner], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        // Whole pushes only, in commit order, with no gap: a prefix of the writer's pushes.
        assert_eq!(ids.len() % PAIR, 0, "half a push in the copy: {ids:?}");
        let pushes = ids.len() / PAIR;
        let expected: Vec<String> = (0..pushes)
            .flat_map(|n| [format!("p{n}-a"), format!("p{n}-b")])
            .collect();
        assert_eq!(ids, expected);
        assert!(pushes as u64 <= *total);
        // The feed counter and the answers recorded agree with the rows.
        let (counter, mutations): (i64, i64) = conn
            .query_row(
                "SELECT (SELECT value FROM counters WHERE owner = ?1),
                        (SELECT COUNT(*) FROM mutations WHERE owner = ?1)",
                [&owner],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .unwrap();
        assert_eq!(counter, ids.len() as i64);
        assert_eq!(mutations, ids.len() as i64);
        in_copy += pushes;
    }
    assert!(
        in_copy >= 40,
        "the copy misses pushes committed before it began"
    );
    drop(conn);

    // A server opens the copy and serves it.
    let restored = SqliteStorage::open(&copy).unwrap();
    restored.ping().await.unwrap();
    let page = restored
        .pull(&UserId::new("user-0"), "items", fero::SyncId(0), 1000)
        .await
        .unwrap();
    assert!(!page.items.is_empty());
}

#[test]
fn backup_refuses_an_existing_destination_and_a_missing_source() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("a.db");
    drop(SqliteStorage::open(&db).unwrap());
    let taken = dir.path().join("taken.db");
    std::fs::write(&taken, b"keep me").unwrap();
    assert!(matches!(
        backup_sqlite(&db, &taken),
        Err(BackupError::DestinationExists { .. })
    ));
    assert_eq!(std::fs::read(&taken).unwrap(), b"keep me");
    assert!(matches!(
        backup_sqlite(&dir.path().join("missing.db"), &dir.path().join("b.db")),
        Err(BackupError::SourceMissing { .. })
    ));
    let error = backup_sqlite(Path::new("postgres://u@h/d"), &dir.path().join("c.db")).unwrap_err();
    assert!(error.to_string().contains("pg_dump"), "{error}");
}
