//! SQLite schema versions (`PRAGMA user_version`): a file of version 1, written before push
//! answers carried `recorded_at`, opens, migrates once and keeps its rows and answers; a file of
//! version 2, written before answers named their collection, migrates to 3 and its answers
//! still refuse a mutation id reused for another id; a file of version 3, written before restore
//! epochs, migrates to 4 with an epoch and its plain positions keep working; a newer version is
//! refused; a large backlog of old answers is pruned in several batches; a file of version 5
//! rewrites its shared rows clustered by bucket and keeps its cursors.

use std::path::Path;
use std::sync::Arc;

use fero::{Clock, SyncId, Timestamp, Version};
use fero_protocol::{Change, ChangeOutcome, ChangeResult, MutationId};
use fero_server::storage_suite::ManualClock;
use fero_server::{FeedPosition, SqliteStorage, Storage, StorageError, UserId};
use rusqlite::Connection;
use serde_json::json;

/// The schema of version 1, as released.
const VERSION_1: &str = "
CREATE TABLE rows (
    owner      TEXT    NOT NULL,
    collection TEXT    NOT NULL,
    id         TEXT    NOT NULL,
    version    INTEGER NOT NULL,
    sync_id    INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    deleted    INTEGER NOT NULL DEFAULT 0,
    data       TEXT    NOT NULL,
    UNIQUE (owner, collection, id)
);
CREATE INDEX rows_feed ON rows (owner, collection, sync_id);
CREATE TABLE mutations (
    owner  TEXT    NOT NULL,
    device TEXT    NOT NULL,
    seq    INTEGER NOT NULL,
    result TEXT    NOT NULL,
    PRIMARY KEY (owner, device, seq)
) WITHOUT ROWID;
CREATE TABLE counters (
    owner TEXT    NOT NULL PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE horizons (
    owner      TEXT    NOT NULL,
    collection TEXT    NOT NULL,
    sync_id    INTEGER NOT NULL,
    PRIMARY KEY (owner, collection)
) WITHOUT ROWID;
PRAGMA user_version = 1;
";

/// The answer a version 1 server stored for the push that created row `n`.
fn original_answer() -> ChangeResult {
    ChangeResult {
        id: "n".to_owned(),
        mutation_id: MutationId::new("phone", 1),
        outcome: ChangeOutcome::Accepted {
            version: Version(1),
            sync_id: SyncId(1),
        },
    }
}

/// A file as a version 1 server left it: row `n`, its counter, and the push answer.
fn write_version_1(path: &Path) {
    let conn = Connection::open(path).unwrap();
    conn.execute_batch(VERSION_1).unwrap();
    conn.execute(
        "INSERT INTO rows (owner, collection, id, version, sync_id, updated_at, data)
         VALUES ('alice', 'notes', 'n', 1, 1, 1000, '\"v1\"')",
        [],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO counters (owner, value) VALUES ('alice', 1)",
        [],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO mutations (owner, device, seq, result) VALUES ('alice', 'phone', 1, ?1)",
        [serde_json::to_string(&original_answer()).unwrap()],
    )
    .unwrap();
}

fn user_version(path: &Path) -> i64 {
    Connection::open(path)
        .unwrap()
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .unwrap()
}

/// The create that row `n` came from, as its device would replay it.
fn replay() -> Change {
    Change {
        id: "n".to_owned(),
        base_version: None,
        mutation_id: MutationId::new("phone", 1),
        deleted: false,
        data: json!("v1"),
    }
}

#[tokio::test]
async fn a_version_1_file_migrates_and_keeps_its_rows_and_push_answers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sync.db");
    write_version_1(&path);

    let clock = ManualClock::new();
    let migrated_at = clock.now();
    let storage = SqliteStorage::open_with_clock(&path, Arc::new(clock.clone()))
        .expect("a version 1 file opens and migrates");
    assert_eq!(user_version(&path), 6);
    let recorded_at: i64 = Connection::open(&path)
        .unwrap()
        .query_row(
            "SELECT recorded_at FROM mutations WHERE device = 'phone'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(
        recorded_at,
        i64::try_from(migrated_at.0).unwrap(),
        "an answer from before the migration counts as recorded at the migration"
    );

    let alice = UserId::new("alice");
    let outcome = storage.push(&alice, "notes", vec![replay()]).await.unwrap();
    assert_eq!(
        outcome.results,
        [original_answer()],
        "the old answer survived the migration"
    );
    let page = storage.pull(&alice, "notes", SyncId(0), 10).await.unwrap();
    assert_eq!(page.items.len(), 1, "the row survived the migration");
    assert_eq!(page.items[0].to_document().unwrap().data, json!("v1"));

    // A new push records its own time, not the migration's.
    clock.advance(std::time::Duration::from_secs(5));
    let update = Change {
        base_version: Some(Version(1)),
        mutation_id: MutationId::new("phone", 2),
        data: json!("v2"),
        ..replay()
    };
    storage.push(&alice, "notes", vec![update]).await.unwrap();

    assert_eq!(
        storage.prune_mutations(migrated_at).await.unwrap().pruned,
        0,
        "kept for a full retention period from the migration"
    );
    assert_eq!(
        storage
            .prune_mutations(Timestamp(migrated_at.0 + 1))
            .await
            .unwrap()
            .pruned,
        1,
        "only the migrated answer is older than the cut-off"
    );
    let outcome = storage.push(&alice, "notes", vec![replay()]).await.unwrap();
    match &outcome.results[0].outcome {
        ChangeOutcome::Conflict { server: Some(row) } => {
            assert_eq!((row.version, &row.data), (Version(2), &json!("v2")));
        }
        other => panic!("once pruned, the replay is a new change and conflicts: {other:?}"),
    }
    drop(storage);

    let reopened = SqliteStorage::open(&path).expect("a migrated file reopens");
    assert_eq!(user_version(&path), 6);
    assert_eq!(reopened.digest(&alice, "notes").await.unwrap().count(), 1);
}

#[test]
fn a_file_with_a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sync.db");
    Connection::open(&path)
        .unwrap()
        .execute_batch("PRAGMA user_version = 99;")
        .unwrap();
    match SqliteStorage::open(&path) {
        Err(error @ StorageError::Open { .. }) => {
            let message = error.to_string();
            assert!(
                message.contains("99") && message.contains("newer fero-server"),
                "{message}"
            );
        }
        other => panic!("a newer schema must be refused, got {other:?}"),
    }
    assert_eq!(user_version(&path), 99, "a refused file is left as it was");
}

#[tokio::test]
async fn pruning_a_large_backlog_takes_several_batches() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sync.db");
    let storage = SqliteStorage::open(&path).unwrap();
    // More answers than one batch deletes (10,000), and one recorded at the cut-off.
    Connection::open(&path)
        .unwrap()
        .execute_batch(
            "WITH RECURSIVE n(seq) AS (SELECT 1 UNION ALL SELECT seq + 1 FROM n WHERE seq < 25003)
             INSERT INTO mutations (owner, device, seq, result, recorded_at)
                 SELECT 'alice', 'phone', seq, '{}', 1000 FROM n;
             INSERT INTO mutations (owner, device, seq, result, recorded_at)
                 VALUES ('alice', 'phone', 0, '{}', 2000);",
        )
        .unwrap();
    let report = storage.prune_mutations(Timestamp(2000)).await.unwrap();
    assert_eq!(report.pruned, 25_003);
    let left: i64 = Connection::open(&path)
        .unwrap()
        .query_row("SELECT COUNT(*) FROM mutations", [], |row| row.get(0))
        .unwrap();
    assert_eq!(left, 1, "the answer recorded at the cut-off stays");
}

/// The schema of version 2 (before `mutations.collection`), as released.
const VERSION_2: &str = "
CREATE TABLE rows (
    owner      TEXT    NOT NULL,
    collection TEXT    NOT NULL,
    id         TEXT    NOT NULL,
    version    INTEGER NOT NULL,
    sync_id    INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    deleted    INTEGER NOT NULL DEFAULT 0,
    data       TEXT    NOT NULL,
    UNIQUE (owner, collection, id)
);
CREATE INDEX rows_feed ON rows (owner, collection, sync_id);
CREATE TABLE mutations (
    owner       TEXT    NOT NULL,
    device      TEXT    NOT NULL,
    seq         INTEGER NOT NULL,
    result      TEXT    NOT NULL,
    recorded_at INTEGER NOT NULL,
    PRIMARY KEY (owner, device, seq)
) WITHOUT ROWID;
CREATE INDEX mutations_recorded ON mutations (recorded_at);
CREATE TABLE counters (
    owner TEXT    NOT NULL PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE horizons (
    owner      TEXT    NOT NULL,
    collection TEXT    NOT NULL,
    sync_id    INTEGER NOT NULL,
    PRIMARY KEY (owner, collection)
) WITHOUT ROWID;
PRAGMA user_version = 2;
";

fn rejected_code(result: &ChangeResult) -> Option<&str> {
    match &result.outcome {
        ChangeOutcome::Rejected { code, .. } => Some(code),
        _ => None,
    }
}

#[tokio::test]
async fn a_version_2_file_migrates_and_its_answers_refuse_a_reused_mutation_id() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sync.db");
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(VERSION_2).unwrap();
        conn.execute(
            "INSERT INTO rows (owner, collection, id, version, sync_id, updated_at, data)
             VALUES ('alice', 'notes', 'n', 1, 1, 1000, '\"v1\"')",
            [],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO counters (owner, value) VALUES ('alice', 1)",
            [],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO mutations (owner, device, seq, result, recorded_at)
             VALUES ('alice', 'phone', 1, ?1, 1000)",
            [serde_json::to_string(&original_answer()).unwrap()],
        )
        .unwrap();
    }
    let storage = SqliteStorage::open(&path).expect("a version 2 file opens and migrates");
    assert_eq!(user_version(&path), 6);
    let alice = UserId::new("alice");

    // The same row replayed: the original answer, as before.
    let outcome = storage.push(&alice, "notes", vec![replay()]).await.unwrap();
    assert_eq!(outcome.results, [original_answer()]);
    // The old answer names no collection, but its id still tells a reuse apart.
    let reused = Change {
        id: "other".to_owned(),
        ..replay()
    };
    let outcome = storage.push(&alice, "notes", vec![reused]).await.unwrap();
    assert_eq!(
        rejected_code(&outcome.results[0]),
        Some("mutation_id_reused")
    );
    assert_eq!(outcome.last_written, None, "nothing written");

    // A new answer records its collection: the same id in another collection is a reuse too.
    let create = Change {
        id: "m".to_owned(),
        mutation_id: MutationId::new("phone", 2),
        ..replay()
    };
    storage
        .push(&alice, "notes", vec![create.clone()])
        .await
        .unwrap();
    let collection: Option<String> = Connection::open(&path)
        .unwrap()
        .query_row(
            "SELECT collection FROM mutations WHERE device = 'phone' AND seq = 2",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(collection.as_deref(), Some("notes"));
    let outcome = storage.push(&alice, "tasks", vec![create]).await.unwrap();
    assert_eq!(
        rejected_code(&outcome.results[0]),
        Some("mutation_id_reused")
    );
    assert_eq!(
        storage.digest(&alice, "tasks").await.unwrap().count(),
        0,
        "nothing was written to the other collection"
    );
}

#[tokio::test]
async fn a_version_3_file_migrates_to_a_restore_epoch_and_keeps_its_positions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sync.db");
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(VERSION_2).unwrap();
        conn.execute_batch(
            "ALTER TABLE mutations ADD COLUMN collection TEXT; PRAGMA user_version = 3;",
        )
        .unwrap();
        for (id, sync_id) in [("a", 1), ("b", 2)] {
            conn.execute(
                "INSERT INTO rows (owner, collection, id, version, sync_id, updated_at, data)
                 VALUES ('alice', 'notes', ?1, 1, ?2, 1000, '\"v1\"')",
                rusqlite::params![id, sync_id],
            )
            .unwrap();
        }
        conn.execute(
            "INSERT INTO counters (owner, value) VALUES ('alice', 2)",
            [],
        )
        .unwrap();
    }
    let storage = SqliteStorage::open(&path).expect("a version 3 file opens and migrates");
    assert_eq!(user_version(&path), 6);
    let stored: i64 = Connection::open(&path)
        .unwrap()
        .query_row("SELECT epoch FROM restore_epoch", [], |row| row.get(0))
        .unwrap();
    assert!(stored > 0, "the migration drew a positive epoch");
    let alice = UserId::new("alice");
    // A position handed out before the migration (a cursor without an epoch): still served.
    let page = storage.pull(&alice, "notes", SyncId(1), 10).await.unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.epoch, Some(u64::try_from(stored).unwrap()));
    drop(storage);

    // Reopening keeps the epoch; marking the file restored replaces it.
    let reopened = SqliteStorage::open(&path).expect("a migrated file reopens");
    let epoch = reopened
        .pull(&alice, "notes", SyncId(0), 10)
        .await
        .unwrap()
        .epoch;
    assert_eq!(epoch, page.epoch, "the epoch stays across restarts");
    let new = reopened.mark_restored().await.unwrap();
    assert_ne!(Some(new), epoch);
    let old_cursor = FeedPosition {
        after: SyncId(1),
        horizon: None,
        epoch,
    };
    assert!(matches!(
        reopened.pull_from(&alice, "notes", old_cursor, 10).await,
        Err(StorageError::Restored { .. })
    ));
}

#[tokio::test]
async fn a_version_4_file_gains_the_shared_tables_and_keeps_its_private_rows() {
    use fero_server::shared_suite::TeamAccess;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sync.db");
    {
        // A version 4 file: today's schema without the shared tables.
        let storage = SqliteStorage::open(&path).unwrap();
        storage
            .seed(
                &UserId::new("alice"),
                "notes",
                vec![fero_server::SeedRow::new("a", json!("v1"))],
            )
            .await
            .unwrap();
        drop(storage);
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "DROP TABLE shared_rows; DROP TABLE shared_exits; DROP TABLE shared_grants;
             DROP TABLE shared_sets; DROP TABLE shared_key; PRAGMA user_version = 4;",
        )
        .unwrap();
    }
    let storage = SqliteStorage::open(&path).expect("a version 4 file opens and migrates");
    assert_eq!(user_version(&path), 6);
    let page = storage
        .pull(&UserId::new("alice"), "notes", SyncId(0), 10)
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1, "private rows are kept");
    let access = TeamAccess::arc("alice", &["red"]);
    let pushed = storage
        .shared_push(
            Arc::clone(&access),
            "tasks",
            vec![Change {
                id: "t1".into(),
                base_version: None,
                mutation_id: MutationId::new("phone", 9),
                deleted: false,
                data: json!({ "team": "red" }),
            }],
        )
        .await
        .unwrap();
    assert_eq!(pushed.outcome.results.len(), 1);
    let shared = storage
        .shared_pull(access, "tasks", None, 10)
        .await
        .unwrap();
    assert_eq!(
        shared.items.len(),
        1,
        "the shared tables work after the migration"
    );
}

/// `shared_rows` as schema version 5 released it: a rowid table with a bucket index.
const SHARED_ROWS_VERSION_5: &str = "
CREATE TABLE shared_rows (
    collection TEXT    NOT NULL,
    id         TEXT    NOT NULL,
    bucket     TEXT    NOT NULL,
    version    INTEGER NOT NULL,
    seq        INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    deleted    INTEGER NOT NULL DEFAULT 0,
    data       TEXT    NOT NULL,
    entered    INTEGER NOT NULL,
    UNIQUE (collection, id)
);
CREATE INDEX shared_rows_bucket ON shared_rows (collection, bucket, seq);
";

/// A shared change of `id` into `team`, the `seq`-th of device `phone`.
fn team_change(id: &str, team: &str, seq: u64) -> Change {
    Change {
        id: id.into(),
        base_version: None,
        mutation_id: MutationId::new("phone", seq),
        deleted: false,
        data: json!({ "team": team, "n": seq }),
    }
}

#[tokio::test]
async fn a_version_5_file_clusters_its_shared_rows_and_keeps_its_cursors() {
    use fero_server::shared_suite::TeamAccess;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sync.db");
    let access = TeamAccess::arc("alice", &["red", "blue"]);
    let (first, everything) = {
        let storage = SqliteStorage::open(&path).unwrap();
        // Interleaved teams, a move (an exit from red) and a deletion.
        let mut changes: Vec<Change> = (1..=6)
            .map(|n| team_change(&format!("t{n}"), ["red", "blue"][n as usize % 2], n))
            .collect();
        changes.push(team_change("t1", "blue", 7));
        let mut gone = team_change("t2", "red", 8);
        gone.deleted = true;
        changes.push(gone);
        let pushed = storage
            .shared_push(Arc::clone(&access), "tasks", changes)
            .await
            .unwrap();
        assert_eq!(pushed.outcome.results.len(), 8);
        let first = storage
            .shared_pull(Arc::clone(&access), "tasks", None, 2)
            .await
            .unwrap();
        let everything = storage
            .shared_pull(Arc::clone(&access), "tasks", None, 100)
            .await
            .unwrap();
        drop(storage);
        // Back to version 5: the same rows in the rowid table.
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(&format!(
            "ALTER TABLE shared_rows RENAME TO shared_rows_v6;
             {SHARED_ROWS_VERSION_5}
             INSERT INTO shared_rows (collection, id, bucket, version, seq, updated_at, deleted,
                                      data, entered)
                 SELECT collection, id, bucket, version, seq, updated_at, deleted, data, entered
                   FROM shared_rows_v6;
             DROP TABLE shared_rows_v6;
             PRAGMA user_version = 5;"
        ))
        .unwrap();
        (first, everything)
    };
    let storage = SqliteStorage::open(&path).expect("a version 5 file opens and migrates");
    assert_eq!(user_version(&path), 6);
    let conn = Connection::open(&path).unwrap();
    let (rowid_tables, old_index): (i64, i64) = conn
        .query_row(
            "SELECT
                 (SELECT COUNT(*) FROM sqlite_master
                   WHERE name LIKE 'shared_rows%' AND type = 'table'
                     AND sql NOT LIKE '%WITHOUT ROWID%'),
                 (SELECT COUNT(*) FROM sqlite_master WHERE name = 'shared_rows_bucket')",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .unwrap();
    assert_eq!(
        (rowid_tables, old_index),
        (0, 0),
        "only the clustered table is left"
    );
    // The same feed from the origin, and a cursor handed out before goes on where it was.
    let again = storage
        .shared_pull(Arc::clone(&access), "tasks", None, 100)
        .await
        .unwrap();
    assert_eq!(json!(again.items), json!(everything.items));
    let rest = storage
        .shared_pull(
            Arc::clone(&access),
            "tasks",
            Some(first.cursor.clone()),
            100,
        )
        .await
        .expect("a cursor of version 5 stays valid");
    let mut resumed = first.items.clone();
    resumed.extend(rest.items);
    assert_eq!(json!(resumed), json!(everything.items));
    assert_eq!(everything.items.len(), 6, "5 live rows and t2's removal");
    // Writes after the migration land in the clustered table and reach the feed.
    storage
        .shared_push(
            Arc::clone(&access),
            "tasks",
            vec![team_change("t9", "red", 9)],
        )
        .await
        .unwrap();
    let after = storage
        .shared_pull(access, "tasks", Some(again.cursor), 100)
        .await
        .unwrap();
    let ids: Vec<&str> = after.items.iter().map(|item| item.id.as_str()).collect();
    assert_eq!(ids, ["t9"]);
}
