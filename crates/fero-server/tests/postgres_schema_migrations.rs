//! Schema migrations at connect time: idempotent, safe when several server processes start at
//! once on an empty database, upgrading a database of an older version with its rows, refusing
//! a newer schema (a version 3 database gains a restore epoch, its plain positions still
//! served); and connection errors that say what to fix.

mod support;

use std::sync::Arc;

use fero::{Clock, SyncId, Timestamp, Version};
use fero_protocol::{ChangeOutcome, ChangeResult, MutationId};
use fero_server::storage_suite::ManualClock;
use fero_server::{FeedPosition, PostgresStorage, SeedRow, Storage, StorageError, UserId};
use serde_json::json;
use support::postgres::TestDatabase;

/// The schema of version 1 (before `fero_mutations.recorded_at`), as released.
const VERSION_1: &str = "
CREATE TABLE fero_schema_migrations (
    version     INTEGER     NOT NULL PRIMARY KEY,
    description TEXT        NOT NULL,
    applied_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE fero_rows (
    owner      TEXT    NOT NULL,
    collection TEXT    NOT NULL,
    id         TEXT    NOT NULL,
    version    BIGINT  NOT NULL,
    sync_id    BIGINT  NOT NULL,
    updated_at BIGINT  NOT NULL,
    deleted    BOOLEAN NOT NULL DEFAULT FALSE,
    data       TEXT    NOT NULL,
    PRIMARY KEY (owner, collection, id)
);
CREATE INDEX fero_rows_feed ON fero_rows (owner, collection, sync_id);
CREATE TABLE fero_mutations (
    owner  TEXT   NOT NULL,
    device TEXT   NOT NULL,
    seq    BIGINT NOT NULL,
    result TEXT   NOT NULL,
    PRIMARY KEY (owner, device, seq)
);
CREATE TABLE fero_counters (
    owner TEXT   NOT NULL PRIMARY KEY,
    value BIGINT NOT NULL
);
CREATE TABLE fero_horizons (
    owner      TEXT   NOT NULL,
    collection TEXT   NOT NULL,
    sync_id    BIGINT NOT NULL,
    PRIMARY KEY (owner, collection)
);
INSERT INTO fero_schema_migrations (version, description)
    VALUES (1, 'rows, mutations, per-user counters, purge horizons');
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_starting_at_once_apply_each_migration_once() {
    let Some(database) = TestDatabase::create("migrate").await else {
        return;
    };
    let mut starts = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let url = database.url.clone();
        starts.spawn(async move { PostgresStorage::builder(url).pool_size(1).connect().await });
    }
    while let Some(started) = starts.join_next().await {
        started.unwrap().expect("every process starts");
    }
    let client = database.client().await;
    let applied: Vec<(i32, i64)> = client
        .query(
            "SELECT version, COUNT(*) FROM fero_schema_migrations GROUP BY version ORDER BY version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    assert_eq!(
        applied,
        [(1, 1), (2, 1), (3, 1), (4, 1), (5, 1)],
        "each migration recorded exactly once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_and_the_counter_survive_a_restart() {
    let Some(database) = TestDatabase::create("restart").await else {
        return;
    };
    let alice = UserId::new("alice");
    {
        let storage = PostgresStorage::connect(&database.url).await.unwrap();
        storage
            .seed(&alice, "items", vec![SeedRow::new("a", json!(1))])
            .await
            .unwrap();
    }
    let storage = PostgresStorage::connect(&database.url).await.unwrap();
    let report = storage
        .seed(&alice, "items", vec![SeedRow::new("b", json!(2))])
        .await
        .unwrap();
    assert_eq!(
        report.last_sync_id,
        Some(SyncId(2)),
        "the counter went on where it was"
    );
    let page = storage.pull(&alice, "items", SyncId(0), 10).await.unwrap();
    assert_eq!(page.items.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_database_migrates_and_keeps_its_push_answers() {
    let Some(database) = TestDatabase::create("from_v1").await else {
        return;
    };
    // What a version 1 server left: one row, its counter, and the answer to the push that
    // wrote it.
    let answer = ChangeResult {
        id: "n".to_owned(),
        mutation_id: MutationId::new("phone", 1),
        outcome: ChangeOutcome::Accepted {
            version: Version(1),
            sync_id: SyncId(1),
        },
    };
    let client = database.client().await;
    client.batch_execute(VERSION_1).await.unwrap();
    client
        .execute(
            "INSERT INTO fero_rows (owner, collection, id, version, sync_id, updated_at, data)
             VALUES ('alice', 'notes', 'n', 1, 1, 1000, '\"v1\"')",
            &[],
        )
        .await
        .unwrap();
    client
        .execute(
            "INSERT INTO fero_counters (owner, value) VALUES ('alice', 1)",
            &[],
        )
        .await
        .unwrap();
    client
        .execute(
            "INSERT INTO fero_mutations (owner, device, seq, result) VALUES ('alice', 'phone', 1, $1)",
            &[&serde_json::to_string(&answer).unwrap()],
        )
        .await
        .unwrap();

    let clock = ManualClock::new();
    let migrated_at = clock.now();
    let storage = PostgresStorage::builder(&database.url)
        .clock(Arc::new(clock.clone()))
        .connect()
        .await
        .expect("a version 1 database opens and migrates");
    let versions: Vec<i32> = client
        .query(
            "SELECT version FROM fero_schema_migrations ORDER BY version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(versions, [1, 2, 3, 4, 5]);
    let recorded_at: i64 = client
        .query_one(
            "SELECT recorded_at FROM fero_mutations WHERE device = 'phone'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        recorded_at,
        i64::try_from(migrated_at.0).unwrap(),
        "an answer from before the migration counts as recorded at the migration"
    );
    // A version 1 process still running during a rolling upgrade inserts answers without
    // `recorded_at`: they are stamped by the database's clock, not refused.
    client
        .execute(
            "INSERT INTO fero_mutations (owner, device, seq, result) VALUES ('alice', 'old', 1, '{}')",
            &[],
        )
        .await
        .expect("a version 1 insert still works");
    let stamped: i64 = client
        .query_one(
            "SELECT recorded_at FROM fero_mutations WHERE device = 'old'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let system_now = fero::SystemClock.now().0;
    assert!(
        stamped.unsigned_abs().abs_diff(system_now) < 3_600_000,
        "stamped with the database's time ({stamped}), not the migration's"
    );
    client
        .execute("DELETE FROM fero_mutations WHERE device = 'old'", &[])
        .await
        .unwrap();

    let alice = UserId::new("alice");
    let replay = fero_protocol::Change {
        id: "n".to_owned(),
        base_version: None,
        mutation_id: MutationId::new("phone", 1),
        deleted: false,
        data: json!("v1"),
    };
    let outcome = storage
        .push(&alice, "notes", vec![replay.clone()])
        .await
        .unwrap();
    assert_eq!(
        outcome.results,
        [answer],
        "the old answer survived the migration"
    );
    let page = storage.pull(&alice, "notes", SyncId(0), 10).await.unwrap();
    assert_eq!(page.items.len(), 1, "the row survived the migration");
    assert_eq!(page.items[0].to_document().unwrap().data, json!("v1"));

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
        1
    );
    let outcome = storage.push(&alice, "notes", vec![replay]).await.unwrap();
    assert!(
        matches!(outcome.results[0].outcome, ChangeOutcome::Conflict { .. }),
        "once pruned, the replay is a new change: {outcome:?}"
    );

    // Connecting again finds nothing to migrate.
    PostgresStorage::connect(&database.url).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_a_large_backlog_takes_several_batches() {
    let Some(database) = TestDatabase::create("prune_backlog").await else {
        return;
    };
    let storage = PostgresStorage::connect(&database.url).await.unwrap();
    // More answers than one batch deletes (10,000), and one recorded after the cut-off.
    database
        .client()
        .await
        .batch_execute(
            "INSERT INTO fero_mutations (owner, device, seq, result, recorded_at)
             SELECT 'alice', 'phone', n, '{}', 1000 FROM generate_series(1, 25003) AS n;
             INSERT INTO fero_mutations (owner, device, seq, result, recorded_at)
             VALUES ('alice', 'phone', 0, '{}', 2000);",
        )
        .await
        .unwrap();
    let report = storage.prune_mutations(Timestamp(2000)).await.unwrap();
    assert_eq!(report.pruned, 25_003);
    let left: i64 = database
        .client()
        .await
        .query_one("SELECT COUNT(*) FROM fero_mutations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 1, "the answer recorded at the cut-off stays");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_with_a_newer_schema_is_refused() {
    let Some(database) = TestDatabase::create("newer").await else {
        return;
    };
    PostgresStorage::connect(&database.url).await.unwrap();
    database
        .client()
        .await
        .execute(
            "INSERT INTO fero_schema_migrations (version, description) VALUES (99, 'future')",
            &[],
        )
        .await
        .unwrap();
    match PostgresStorage::connect(&database.url).await {
        Err(error @ StorageError::Schema { .. }) => {
            let message = error.to_string();
            assert!(
                message.contains("99") && message.contains("newer fero-server"),
                "{message}"
            );
        }
        other => panic!("a newer schema must be refused, got {other:?}"),
    }
}

#[tokio::test]
async fn a_bad_url_or_an_unreachable_server_is_a_clear_error() {
    match PostgresStorage::connect("postgres://x@127.0.0.1:notaport/db").await {
        Err(error @ StorageError::BadUrl { .. }) => {
            assert!(error.to_string().contains("postgres://"), "{error}");
        }
        other => panic!("expected BadUrl, got {other:?}"),
    }
    // Port 1 on the loopback: nothing listens there, the connection is refused at once.
    match PostgresStorage::connect("postgres://fero:secret@127.0.0.1:1/fero").await {
        Err(error @ StorageError::Connect { .. }) => {
            let message = error.to_string();
            assert!(message.contains("fero@127.0.0.1:1/fero"), "{message}");
            assert!(
                !message.contains("secret"),
                "the password is never shown: {message}"
            );
        }
        other => panic!("expected Connect, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_2_database_migrates_and_its_answers_refuse_a_reused_mutation_id() {
    let Some(database) = TestDatabase::create("from_v2").await else {
        return;
    };
    let answer = ChangeResult {
        id: "n".to_owned(),
        mutation_id: MutationId::new("phone", 1),
        outcome: ChangeOutcome::Accepted {
            version: Version(1),
            sync_id: SyncId(1),
        },
    };
    let client = database.client().await;
    // Version 2 as released: version 1's tables plus `recorded_at`.
    client.batch_execute(VERSION_1).await.unwrap();
    client
        .batch_execute(
            "ALTER TABLE fero_mutations ADD COLUMN recorded_at BIGINT NOT NULL DEFAULT 0;
             CREATE INDEX fero_mutations_recorded ON fero_mutations (recorded_at);
             INSERT INTO fero_schema_migrations (version, description)
                 VALUES (2, 'mutations.recorded_at, for pruning old push answers');
             INSERT INTO fero_rows (owner, collection, id, version, sync_id, updated_at, data)
                 VALUES ('alice', 'notes', 'n', 1, 1, 1000, '\"v1\"');
             INSERT INTO fero_counters (owner, value) VALUES ('alice', 1);",
        )
        .await
        .unwrap();
    client
        .execute(
            "INSERT INTO fero_mutations (owner, device, seq, result, recorded_at)
             VALUES ('alice', 'phone', 1, $1, 1000)",
            &[&serde_json::to_string(&answer).unwrap()],
        )
        .await
        .unwrap();

    let storage = PostgresStorage::connect(&database.url)
        .await
        .expect("a version 2 database opens and migrates");
    let versions: Vec<i32> = client
        .query(
            "SELECT version FROM fero_schema_migrations ORDER BY version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(versions, [1, 2, 3, 4, 5]);

    let alice = UserId::new("alice");
    let replay = fero_protocol::Change {
        id: "n".to_owned(),
        base_version: None,
        mutation_id: MutationId::new("phone", 1),
        deleted: false,
        data: json!("v1"),
    };
    let outcome = storage
        .push(&alice, "notes", vec![replay.clone()])
        .await
        .unwrap();
    assert_eq!(
        outcome.results,
        [answer],
        "the same row replayed: as before"
    );
    let reused = fero_protocol::Change {
        id: "other".to_owned(),
        ..replay.clone()
    };
    let outcome = storage.push(&alice, "notes", vec![reused]).await.unwrap();
    assert!(
        matches!(&outcome.results[0].outcome, ChangeOutcome::Rejected { code, .. } if code == "mutation_id_reused"),
        "{outcome:?}"
    );
    assert_eq!(outcome.last_written, None);

    let create = fero_protocol::Change {
        id: "m".to_owned(),
        mutation_id: MutationId::new("phone", 2),
        ..replay
    };
    storage
        .push(&alice, "notes", vec![create.clone()])
        .await
        .unwrap();
    let collection: Option<String> = client
        .query_one(
            "SELECT collection FROM fero_mutations WHERE device = 'phone' AND seq = 2",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(collection.as_deref(), Some("notes"));
    let outcome = storage.push(&alice, "tasks", vec![create]).await.unwrap();
    assert!(
        matches!(&outcome.results[0].outcome, ChangeOutcome::Rejected { code, .. } if code == "mutation_id_reused"),
        "{outcome:?}"
    );
    assert_eq!(storage.digest(&alice, "tasks").await.unwrap().count(), 0);
}

/// `fero_mutations_recorded`'s validity, `None` when it does not exist.
async fn recorded_index_valid(database: &TestDatabase) -> Option<bool> {
    database
        .client()
        .await
        .query_opt(
            "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
             WHERE c.relname = 'fero_mutations_recorded'",
            &[],
        )
        .await
        .unwrap()
        .map(|row| row.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recorded_at_index_is_built_concurrently_and_an_invalid_one_rebuilt() {
    let Some(database) = TestDatabase::create("concurrent_index").await else {
        return;
    };
    drop(PostgresStorage::connect(&database.url).await.unwrap());
    assert_eq!(recorded_index_valid(&database).await, Some(true));
    // What an interrupted CREATE INDEX CONCURRENTLY leaves behind: an index marked invalid,
    // which `IF NOT EXISTS` alone would keep for ever.
    database
        .client()
        .await
        .batch_execute(
            "UPDATE pg_index SET indisvalid = false WHERE indexrelid =
                 'fero_mutations_recorded'::regclass",
        )
        .await
        .unwrap();
    assert_eq!(recorded_index_valid(&database).await, Some(false));
    drop(PostgresStorage::connect(&database.url).await.unwrap());
    assert_eq!(recorded_index_valid(&database).await, Some(true));
    // A dropped index is built again; the migrations themselves are not run twice.
    database
        .client()
        .await
        .batch_execute("DROP INDEX fero_mutations_recorded")
        .await
        .unwrap();
    drop(PostgresStorage::connect(&database.url).await.unwrap());
    assert_eq!(recorded_index_valid(&database).await, Some(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_3_database_migrates_to_a_restore_epoch_and_keeps_its_positions() {
    let Some(database) = TestDatabase::create("from_v3").await else {
        return;
    };
    let client = database.client().await;
    // Version 3 as released: version 1's tables plus `recorded_at` and `collection`.
    client.batch_execute(VERSION_1).await.unwrap();
    client
        .batch_execute(
            "ALTER TABLE fero_mutations ADD COLUMN recorded_at BIGINT NOT NULL DEFAULT 0;
             CREATE INDEX fero_mutations_recorded ON fero_mutations (recorded_at);
             ALTER TABLE fero_mutations ADD COLUMN collection TEXT;
             INSERT INTO fero_schema_migrations (version, description)
                 VALUES (2, 'mutations.recorded_at, for pruning old push answers'),
                        (3, 'mutations.collection, to refuse a mutation id reused for another row');
             INSERT INTO fero_rows (owner, collection, id, version, sync_id, updated_at, data)
                 VALUES ('alice', 'notes', 'a', 1, 1, 1000, '\"v1\"'),
                        ('alice', 'notes', 'b', 1, 2, 1000, '\"v1\"');
             INSERT INTO fero_counters (owner, value) VALUES ('alice', 2);",
        )
        .await
        .unwrap();
    let storage = PostgresStorage::connect(&database.url)
        .await
        .expect("a version 3 database opens and migrates");
    let stored: i64 = client
        .query_one("SELECT epoch FROM fero_restore_epoch", &[])
        .await
        .unwrap()
        .get(0);
    assert!(stored > 0, "the migration drew a positive epoch");
    let alice = UserId::new("alice");
    // A position handed out before the migration (a cursor without an epoch): still served.
    let page = storage.pull(&alice, "notes", SyncId(1), 10).await.unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.epoch, Some(u64::try_from(stored).unwrap()));
    drop(storage);

    let reopened = PostgresStorage::connect(&database.url).await.unwrap();
    let again = reopened.pull(&alice, "notes", SyncId(0), 10).await.unwrap();
    assert_eq!(again.epoch, page.epoch, "the epoch stays across restarts");
    let new = reopened.mark_restored().await.unwrap();
    assert_ne!(Some(new), page.epoch);
    let old_cursor = FeedPosition {
        after: SyncId(1),
        horizon: None,
        epoch: page.epoch,
    };
    assert!(matches!(
        reopened.pull_from(&alice, "notes", old_cursor, 10).await,
        Err(StorageError::Restored { .. })
    ));
}
