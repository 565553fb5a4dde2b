//! Shared collections on the change stream, over a real loopback connection: a listener hears
//! of commits to the buckets it may read and of nothing else (not even that a foreign bucket
//! changed), and a membership change reaches the granted user's stream at once, after which the
//! new bucket's commits are announced too.

mod support;

use std::sync::Arc;

use axum::http::{Method, StatusCode};
use fero_protocol::{Change, ChangeNotice};
use fero_server::shared_suite::{TeamAccess, TeamSharing};
use fero_server::{Server, SqliteStorage, Storage};
use serde_json::json;
use support::{IO_DEADLINE, Running, SseReader, body_bytes, change, request, send, tokens};
use tokio::time::timeout;

const CAROL: &str = "carols-token";

async fn push(addr: std::net::SocketAddr, token: &str, collection: &str, change: Change) {
    let body = json!({ "changes": [change] });
    let path = format!("/v1/collections/{collection}/push");
    let answer = send(addr, request(Method::POST, addr, &path, token, Some(body))).await;
    assert_eq!(answer.status(), StatusCode::OK);
    let body = body_bytes(answer).await;
    assert!(
        String::from_utf8_lossy(&body).contains("accepted"),
        "{}",
        String::from_utf8_lossy(&body)
    );
}

async fn next_notice(reader: &mut SseReader) -> ChangeNotice {
    let event = timeout(IO_DEADLINE, reader.next_event())
        .await
        .expect("no change event in time")
        .expect("stream ended");
    assert_eq!(event.event, "change");
    serde_json::from_str(&event.data).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_hear_of_their_buckets_only_and_of_a_new_membership_at_once() {
    let storage = SqliteStorage::open_in_memory().unwrap();
    // alice and bob are in red, carol in blue (membership rows written by an admin).
    let admin = TeamAccess::arc("admin", &["red", "blue"]);
    let mut grants = Vec::new();
    for (i, (user, team)) in [("alice", "red"), ("bob", "red"), ("carol", "blue")]
        .into_iter()
        .enumerate()
    {
        grants.push(change(
            &format!("m-{user}"),
            None,
            "admin",
            i as u64 + 1,
            json!({ "team": team, "user": user }),
        ));
    }
    storage
        .shared_push(Arc::clone(&admin), "members", grants)
        .await
        .unwrap();
    let mut all_tokens = tokens();
    all_tokens.insert(CAROL, "carol").unwrap();
    let server = Server::builder()
        .storage(storage)
        .tokens(all_tokens)
        .sharing(Arc::new(TeamSharing))
        .build()
        .unwrap();
    let mut running = Running::start(server).await;
    let addr = running.addr;
    let bobs = send(
        addr,
        request(Method::GET, addr, "/v1/changes", support::BOB, None),
    )
    .await;
    let carols = send(addr, request(Method::GET, addr, "/v1/changes", CAROL, None)).await;
    let (mut bobs, mut carols) = (SseReader::new(bobs), SseReader::new(carols));

    // Alice writes red: bob hears of it; carol does not (her first notice is blue's, below).
    push(
        addr,
        support::ALICE,
        "tasks",
        change("t1", None, "alice-1", 1, json!({ "team": "red" })),
    )
    .await;
    let heard = next_notice(&mut bobs).await;
    assert_eq!(heard.collection, "tasks");
    push(
        addr,
        CAROL,
        "tasks",
        change("b1", None, "carol-1", 1, json!({ "team": "blue" })),
    )
    .await;
    let first = next_notice(&mut carols).await;
    let carols_row = first.sync_id;
    assert_eq!(first.collection, "tasks");
    assert!(
        carols_row.0 > heard.sync_id.0,
        "carol's first notice must be her own blue write, not red's: {first:?}"
    );

    // Alice adds carol to red: carol's stream is told at once (every shared collection), and
    // red's later commits reach her.
    push(
        addr,
        support::ALICE,
        "members",
        change(
            "m-carol-red",
            None,
            "alice-1",
            2,
            json!({ "team": "red", "user": "carol" }),
        ),
    )
    .await;
    let mut told: Vec<String> = Vec::new();
    for _ in 0..2 {
        told.push(next_notice(&mut carols).await.collection);
    }
    told.sort();
    assert_eq!(told, vec!["members".to_owned(), "tasks".to_owned()]);
    push(
        addr,
        support::ALICE,
        "tasks",
        change("t2", None, "alice-1", 3, json!({ "team": "red" })),
    )
    .await;
    let later = next_notice(&mut carols).await;
    assert_eq!(later.collection, "tasks");
    assert!(later.sync_id.0 > carols_row.0);
    running.shutdown();
}
