//! `GET /v1/collections/{name}/digest` counts and digests the user's live rows exactly as a
//! client computes it over its own copy with `fero_protocol::Digest`.

mod support;

use axum::http::{Method, StatusCode};
use fero_protocol::Digest;
use serde_json::json;
use support::{ALICE, call, change, deletion, pull, push, server};

#[tokio::test]
async fn the_digest_equals_a_digest_of_the_pulled_live_rows() {
    let server = server();
    let router = server.router();
    let empty = call(
        &router,
        Method::GET,
        "/v1/collections/notes/digest",
        Some(ALICE),
        None,
    )
    .await;
    assert_eq!(empty.status, StatusCode::OK);
    assert_eq!(
        empty.body,
        json!({ "count": 0, "digest": Digest::default().hex() })
    );

    push(
        &router,
        ALICE,
        "notes",
        (0..6u64)
            .map(|i| change(&format!("n{i}"), None, "d", i + 1, json!(i)))
            .collect(),
    )
    .await;
    push(
        &router,
        ALICE,
        "notes",
        vec![
            change("n2", Some(1), "d", 7, json!("edited")),
            deletion("n4", 1, "d", 8),
        ],
    )
    .await;

    let page = pull(&router, ALICE, "notes", None, 100).await;
    let mut local = Digest::default();
    for document in page.items.iter().filter(|d| !d.deleted) {
        local.add(&document.id, document.version.0);
    }
    let answer = call(
        &router,
        Method::GET,
        "/v1/collections/notes/digest",
        Some(ALICE),
        None,
    )
    .await;
    let remote: fero_protocol::DigestResponse = serde_json::from_value(answer.body).unwrap();
    assert_eq!(remote.count, 5, "six rows, one deleted");
    assert_eq!(remote.digest, local.hex());
}
