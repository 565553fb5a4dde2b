//! After tombstones are purged, a client whose checkpoint is behind the horizon gets HTTP 410
//! `resync_required` instead of a feed with a deletion silently missing; a fresh pull works.

mod support;

use axum::http::{Method, StatusCode};
use fero::SyncId;
use serde_json::json;
use support::{ALICE, BOB, accepted, call, change, deletion, pull, push, server};

#[tokio::test]
async fn a_checkpoint_behind_the_purge_horizon_gets_410_resync_required() {
    let server = server();
    let router = server.router();
    push(
        &router,
        ALICE,
        "notes",
        vec![
            change("a", None, "d", 1, json!(1)),
            change("b", None, "d", 2, json!(2)),
        ],
    )
    .await;
    let old = pull(&router, ALICE, "notes", None, 1).await; // checkpoint at sync_id 1
    let gone = push(&router, ALICE, "notes", vec![deletion("a", 1, "d", 3)]).await;
    let (_, tombstone_at) = accepted(&gone[0]);
    let report = server
        .purge_tombstones(SyncId(tombstone_at + 1))
        .await
        .unwrap();
    assert_eq!(report.purged, 1);

    let body = json!({ "checkpoint": old.checkpoint, "limit": 10 });
    let answer = call(
        &router,
        Method::POST,
        "/v1/collections/notes/pull",
        Some(ALICE),
        Some(body),
    )
    .await;
    assert_eq!(answer.status, StatusCode::GONE, "{answer:?}");
    assert_eq!(answer.error_code(), "resync_required");
    let by_get = call(
        &router,
        Method::GET,
        "/v1/collections/notes/pull?limit=10&after=1",
        Some(ALICE),
        None,
    )
    .await;
    assert_eq!(by_get.status, StatusCode::GONE);

    // Starting over works, and the purged row is simply absent.
    let fresh = pull(&router, ALICE, "notes", None, 10).await;
    assert_eq!(
        fresh
            .items
            .iter()
            .map(|d| d.id.as_str())
            .collect::<Vec<_>>(),
        ["b"]
    );
    // A client that had already seen the tombstone is not behind the horizon.
    let caught_up = call(
        &router,
        Method::GET,
        &format!("/v1/collections/notes/pull?limit=10&after={tombstone_at}"),
        Some(ALICE),
        None,
    )
    .await;
    assert_eq!(caught_up.status, StatusCode::OK);
    // Horizons are per user and collection (Bob's feed reaches 1 in another collection).
    push(
        &router,
        BOB,
        "tasks",
        vec![change("t", None, "b", 1, json!(1))],
    )
    .await;
    let others = call(
        &router,
        Method::GET,
        "/v1/collections/notes/pull?limit=10&after=1",
        Some(BOB),
        None,
    )
    .await;
    assert_eq!(others.status, StatusCode::OK);
    let other_collection = call(
        &router,
        Method::GET,
        "/v1/collections/contacts/pull?limit=10&after=1",
        Some(ALICE),
        None,
    )
    .await;
    assert_eq!(other_collection.status, StatusCode::OK);
}
