//! Optimistic push across processes: two server instances (each with its own connection pool,
//! as two `fero-server` processes would have) on one PostgreSQL database.
//!
//! - Two devices push on the same base version at the same moment, one through each instance:
//!   exactly one is accepted, the other gets a conflict carrying the winner's row.
//! - One device's change arrives twice at the same moment (a client retry racing its original),
//!   once through each instance: it is written once and both get the same `accepted` answer.
//!
//! Each is repeated many times, on a fresh row each round. The first also runs without the
//! per-user counter lock (the naive-sequence variant): the base-version check lives in the
//! `UPDATE … WHERE version = $base` itself, so it must hold without any other serialisation.

mod support;

use std::sync::Arc;

use axum::Router;
use fero_protocol::{ChangeOutcome, ChangeResult};
use fero_server::{PostgresStorage, Server};
use serde_json::json;
use support::postgres::TestDatabase;
use support::{ALICE, accepted, change, pull, push};
use tokio::sync::Barrier;

const ROUNDS: usize = 50;

async fn instance(database: &TestDatabase, naive: bool) -> Router {
    let mut builder = PostgresStorage::builder(&database.url).pool_size(2);
    if naive {
        builder = builder.naive_sequence();
    }
    let storage = builder.connect().await.unwrap();
    Server::builder()
        .storage(storage)
        .tokens(support::tokens())
        .build()
        .unwrap()
        .router()
}

/// Pushes `changes[i]` through `routers[i]`, both released at the same instant.
async fn push_at_once(
    routers: &[Router; 2],
    changes: [fero_protocol::Change; 2],
) -> [ChangeResult; 2] {
    let barrier = Arc::new(Barrier::new(2));
    let tasks: Vec<_> = routers
        .iter()
        .cloned()
        .zip(changes)
        .map(|(router, change)| {
            let barrier = Arc::clone(&barrier);
            tokio::spawn(async move {
                barrier.wait().await;
                let mut results = push(&router, ALICE, "notes", vec![change]).await;
                results.remove(0)
            })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }
    results.try_into().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_devices_on_one_base_through_two_instances_get_one_accept_and_one_conflict() {
    let Some(database) = TestDatabase::create("push_race").await else {
        return;
    };
    race_on_one_base(&database, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_base_version_check_alone_decides_a_race_without_the_counter_lock() {
    let Some(database) = TestDatabase::create("push_race_unlocked").await else {
        return;
    };
    race_on_one_base(&database, true).await;
}

async fn race_on_one_base(database: &TestDatabase, naive: bool) {
    let routers = [
        instance(database, naive).await,
        instance(database, naive).await,
    ];
    let mut wins = [0; 2];
    for round in 0..ROUNDS {
        let id = format!("note-{round}");
        let seq = u64::try_from(round).unwrap() + 1;
        let created = push(
            &routers[0],
            ALICE,
            "notes",
            vec![change(&id, None, "creator", seq, json!("v1"))],
        )
        .await;
        assert_eq!(accepted(&created[0]).0, 1);

        let results = push_at_once(
            &routers,
            [
                change(&id, Some(1), "phone", seq, json!("from phone")),
                change(&id, Some(1), "laptop", seq, json!("from laptop")),
            ],
        )
        .await;
        let winners: Vec<usize> = (0..2)
            .filter(|&i| matches!(results[i].outcome, ChangeOutcome::Accepted { .. }))
            .collect();
        assert_eq!(
            winners.len(),
            1,
            "round {round}: exactly one push on base 1 may win: {results:?}"
        );
        let (winner, loser) = (winners[0], 1 - winners[0]);
        wins[winner] += 1;
        assert_eq!(accepted(&results[winner]).0, 2);
        let ChangeOutcome::Conflict { server } = &results[loser].outcome else {
            panic!("round {round}: the loser must get a conflict: {results:?}");
        };
        let server = server
            .as_ref()
            .expect("the conflict carries the winner's row");
        let winner_data = if winner == 0 {
            "from phone"
        } else {
            "from laptop"
        };
        assert_eq!((server.version.0, &server.data), (2, &json!(winner_data)));
    }
    println!(
        "instance 0 won {} rounds, instance 1 won {}",
        wins[0], wins[1]
    );
    // Every round wrote the create and one update: two versions per row, nothing more.
    let page = pull(&routers[1], ALICE, "notes", None, 1_000).await;
    assert_eq!(page.items.len(), ROUNDS);
    assert!(page.items.iter().all(|d| d.version.0 == 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_change_racing_itself_through_two_instances_is_written_once() {
    let Some(database) = TestDatabase::create("replay_race").await else {
        return;
    };
    let routers = [
        instance(&database, false).await,
        instance(&database, false).await,
    ];
    for round in 0..ROUNDS {
        let id = format!("note-{round}");
        let seq = u64::try_from(round).unwrap() * 2 + 1;
        push(
            &routers[0],
            ALICE,
            "notes",
            vec![change(&id, None, "phone", seq, json!("v1"))],
        )
        .await;
        // The client's retry of seq + 1 arrives while the original is still in flight.
        let edit = change(&id, Some(1), "phone", seq + 1, json!("v2"));
        let results = push_at_once(&routers, [edit.clone(), edit]).await;
        assert_eq!(
            results[0], results[1],
            "round {round}: a change and its replay get one answer"
        );
        assert_eq!(accepted(&results[0]).0, 2, "round {round}: written once");
    }
    let page = pull(&routers[0], ALICE, "notes", None, 1_000).await;
    assert_eq!(page.items.len(), ROUNDS);
    assert!(
        page.items
            .iter()
            .all(|d| d.version.0 == 2 && d.data == json!("v2"))
    );
}
