//! Auth isolation in both directions: a user's token neither reads nor writes another user's
//! rows, and the same id under two users is two rows, never a conflict.

mod support;

use axum::http::{Method, StatusCode};
use fero_protocol::ChangeOutcome;
use serde_json::json;
use support::{ALICE, BOB, accepted, call, change, pull, push, server};

#[tokio::test]
async fn bob_cannot_read_alices_rows_by_pull_or_digest() {
    let server = server();
    let router = server.router();
    push(
        &router,
        ALICE,
        "contacts",
        vec![change(
            "ada",
            None,
            "alice-phone",
            1,
            json!({ "name": "Ada" }),
        )],
    )
    .await;
    let bobs = pull(&router, BOB, "contacts", None, 100).await;
    assert!(
        bobs.items.is_empty(),
        "bob pulled alice's rows: {:?}",
        bobs.items
    );
    let get = call(
        &router,
        Method::GET,
        "/v1/collections/contacts/pull?limit=100&after=0",
        Some(BOB),
        None,
    )
    .await;
    assert_eq!(get.body["items"], json!([]));
    let digest = call(
        &router,
        Method::GET,
        "/v1/collections/contacts/digest",
        Some(BOB),
        None,
    )
    .await;
    assert_eq!(digest.body["count"], 0);
    let alices = pull(&router, ALICE, "contacts", None, 100).await;
    assert_eq!(alices.items.len(), 1);
}

#[tokio::test]
async fn bob_cannot_overwrite_or_delete_alices_rows() {
    let server = server();
    let router = server.router();
    push(
        &router,
        ALICE,
        "contacts",
        vec![change(
            "ada",
            None,
            "alice-phone",
            1,
            json!({ "name": "Ada" }),
        )],
    )
    .await;
    // Bob knows the id and the version; his update finds no row of his own.
    let results = push(
        &router,
        BOB,
        "contacts",
        vec![
            change("ada", Some(1), "bob-phone", 1, json!({ "name": "Mallory" })),
            support::deletion("ada", 1, "bob-phone", 2),
        ],
    )
    .await;
    for result in &results {
        match &result.outcome {
            ChangeOutcome::Conflict { server } => {
                assert_eq!(server, &None, "bob must not see alice's row")
            }
            other => panic!("bob's write on alice's id must conflict with nothing, got {other:?}"),
        }
    }
    let alices = pull(&router, ALICE, "contacts", None, 100).await;
    assert_eq!(alices.items.len(), 1);
    assert_eq!(alices.items[0].data, json!({ "name": "Ada" }));
    assert_eq!(alices.items[0].version.0, 1);
    assert!(!alices.items[0].deleted);
}

#[tokio::test]
async fn the_same_id_under_two_users_is_two_rows_not_a_conflict() {
    let server = server();
    let router = server.router();
    // Same id, same device name, same sequence number: still two users' own mutations.
    let a = push(
        &router,
        ALICE,
        "notes",
        vec![change("todo", None, "phone", 1, json!("alice's"))],
    )
    .await;
    let b = push(
        &router,
        BOB,
        "notes",
        vec![change("todo", None, "phone", 1, json!("bob's"))],
    )
    .await;
    assert_eq!(accepted(&a[0]).0, 1);
    assert_eq!(
        accepted(&b[0]).0,
        1,
        "bob's create is not a replay of alice's mutation nor a conflict"
    );
    let alices = pull(&router, ALICE, "notes", None, 10).await;
    let bobs = pull(&router, BOB, "notes", None, 10).await;
    assert_eq!(alices.items[0].data, json!("alice's"));
    assert_eq!(bobs.items[0].data, json!("bob's"));
}

#[tokio::test]
async fn a_change_stream_is_refused_without_a_valid_token() {
    let server = server();
    let answer = call(
        &server.router(),
        Method::GET,
        "/v1/changes",
        Some("stolen?"),
        None,
    )
    .await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
}
