//! Schema migrations at connect time: idempotent, safe when several server processes start at
//! once on an empty database, refusing a newer schema; and connection errors that say what to
//! fix.

mod support;

use fero::SyncId;
use fero_server::{PostgresStorage, SeedRow, Storage, StorageError, UserId};
use serde_json::json;
use support::postgres::TestDatabase;

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
    assert_eq!(applied, [(1, 1)], "each migration recorded exactly once");
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
