//! Not a check: times digest version 1 against version 2 over 100,000 rows on each backend.
//! Run with `cargo test -p fero-server --release --test digest_timing -- --ignored --nocapture`
//! (PostgreSQL when `FERO_TEST_POSTGRES` is set).

mod support;

use std::time::Instant;

use fero_server::{SeedRow, Server, Storage, UserId};
use serde_json::json;

const ROWS: usize = 100_000;

async fn time(label: &str, storage: impl Storage) {
    let server = Server::builder()
        .storage(storage)
        .tokens(fero_server::Tokens::parse_list("t=alice").unwrap())
        .build()
        .unwrap();
    let alice = UserId::new("alice");
    let rows = (0..ROWS).map(|i| {
        SeedRow::new(
            format!("item-{i:06}"),
            json!({ "name": format!("Name {i}"), "email": "ada@example.com", "n": i }),
        )
    });
    server.seed(&alice, "items", rows, 5_000).await.unwrap();
    let storage = server.storage();
    let started = Instant::now();
    let v1 = storage.digest(&alice, "items").await.unwrap();
    let v1_time = started.elapsed();
    let started = Instant::now();
    let v2 = storage.content_digest(&alice, "items").await.unwrap();
    let v2_time = started.elapsed();
    assert_eq!((v1.count(), v2.count()), (ROWS as u64, ROWS as u64));
    println!("{label}: {ROWS} rows: digest v1 {v1_time:?}, v2 {v2_time:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a timing, run by hand"]
async fn digest_v1_against_v2_on_both_backends() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = fero_server::SqliteStorage::open(dir.path().join("t.db")).unwrap();
    time("sqlite", sqlite).await;
    if let Some(database) = support::postgres::TestDatabase::create("timing").await {
        let postgres = fero_server::PostgresStorage::connect(&database.url)
            .await
            .unwrap();
        time("postgres", postgres).await;
    }
}
