//! A pull answer copies each row's stored JSON text into the answer instead of parsing it and
//! writing it out again. These tests guard what that must not change: the answer is, byte for
//! byte, what serialising the parsed `PullResponse` gives (what the server sent when it parsed
//! every row), and a row whose stored text is not JSON still fails the pull with a typed error
//! (`StorageError::Corrupt`, a 500 JSON error on the wire) instead of a broken answer, on both
//! backends.

mod support;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use fero::SyncId;
use fero_protocol::PullResponse;
use fero_server::{PostgresStorage, SeedRow, Server, SqliteStorage, Storage, StorageError, UserId};
use serde_json::json;
use support::postgres::TestDatabase;
use support::{ALICE, call, change, deletion, push, server, tokens};
use tower::ServiceExt;

/// The body of `GET /v1/collections/{collection}/pull?limit={limit}` as sent, uncompressed.
async fn pull_bytes(router: &axum::Router, collection: &str, limit: u32) -> Vec<u8> {
    let request = Request::get(format!("/v1/collections/{collection}/pull?limit={limit}"))
        .header("authorization", format!("Bearer {ALICE}"))
        .body(Body::empty())
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response
            .headers()
            .get("fero-collection")
            .and_then(|v| v.to_str().ok()),
        Some(collection),
        "the answer names its collection"
    );
    axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap()
        .to_vec()
}

#[tokio::test]
async fn the_answer_is_byte_for_byte_the_serialised_parsed_page() {
    let server = server();
    let router = server.router();
    let contents = [
        json!({ "name": "Ada", "tags": ["a", "b"], "nested": { "z": 1, "a": [1.5, -2, null] } }),
        json!("a string with \"quotes\", \\ backslashes, \u{1} control and ünïcödé 🦀"),
        json!(18_446_744_073_709_551_615u64),
        json!(-9_223_372_036_854_775_808i64),
        json!(0.1),
        json!(true),
        json!([]),
        json!({}),
    ];
    let changes = contents
        .iter()
        .enumerate()
        .map(|(i, data)| change(&format!("row-{i}"), None, "d", i as u64 + 1, data.clone()))
        .collect();
    push(&router, ALICE, "mixed", changes).await;
    // A tombstone keeps its last content.
    push(
        &router,
        ALICE,
        "mixed",
        vec![deletion("row-0", 1, "d", 100)],
    )
    .await;
    let rows = (0..3).map(|i| SeedRow::new(format!("seeded-{i}"), json!({ "n": i })));
    server
        .seed(&UserId::new("alice"), "mixed", rows, 10)
        .await
        .unwrap();

    let bytes = pull_bytes(&router, "mixed", 100).await;
    let page: PullResponse = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(page.items.len(), contents.len() + 3);
    assert!(!page.has_more);
    let tombstone = page.items.iter().find(|d| d.id == "row-0").unwrap();
    assert!(tombstone.deleted);
    assert_eq!(
        tombstone.data, contents[0],
        "a tombstone keeps its last data"
    );
    for (i, data) in contents.iter().enumerate().skip(1) {
        let row = page.items.iter().find(|d| d.id == format!("row-{i}"));
        assert_eq!(row.map(|d| &d.data), Some(data), "row-{i}");
    }
    assert_eq!(
        String::from_utf8(serde_json::to_vec(&page).unwrap()).unwrap(),
        String::from_utf8(bytes).unwrap(),
        "the answer is what the parsed page serialises to"
    );
}

#[tokio::test]
async fn a_sqlite_row_that_is_not_json_fails_the_pull_with_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rows.db");
    let storage = SqliteStorage::open(&path).unwrap();
    let alice = UserId::new("alice");
    let rows = ["good", "broken"].map(|id| SeedRow::new(id, json!({ "id": id })));
    storage.seed(&alice, "notes", rows.to_vec()).await.unwrap();
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute(
            "UPDATE rows SET data = '{\"cut off' WHERE id = 'broken'",
            [],
        )
        .unwrap();
    assert_corrupt_row_is_refused(storage).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_row_that_is_not_json_fails_the_pull_with_a_typed_error() {
    let Some(database) = TestDatabase::create("corrupt_row").await else {
        return;
    };
    let storage = PostgresStorage::connect(&database.url).await.unwrap();
    let alice = UserId::new("alice");
    let rows = ["good", "broken"].map(|id| SeedRow::new(id, json!({ "id": id })));
    storage.seed(&alice, "notes", rows.to_vec()).await.unwrap();
    database
        .client()
        .await
        .execute(
            "UPDATE fero_rows SET data = '{\"cut off' WHERE id = 'broken'",
            &[],
        )
        .await
        .unwrap();
    assert_corrupt_row_is_refused(storage).await;
}

/// `storage` holds alice's `notes` `good` then `broken` (whose text is not JSON): a pull that
/// reaches `broken` fails as corrupt naming it, over HTTP too; one that stops before it works.
async fn assert_corrupt_row_is_refused(storage: impl Storage) {
    let alice = UserId::new("alice");
    match storage.pull(&alice, "notes", SyncId(0), 10).await {
        Err(StorageError::Corrupt { id, collection, .. }) => {
            assert_eq!((id.as_str(), collection.as_str()), ("broken", "notes"));
        }
        other => panic!("a row that is not JSON must fail the pull as corrupt, got {other:?}"),
    }
    let first = storage.pull(&alice, "notes", SyncId(0), 1).await.unwrap();
    assert_eq!(first.items.len(), 1);
    assert_eq!(first.items[0].data.get(), r#"{"id":"good"}"#);

    let server = Server::builder()
        .storage(storage)
        .tokens(tokens())
        .build()
        .unwrap();
    let answer = call(
        &server.router(),
        axum::http::Method::GET,
        "/v1/collections/notes/pull?limit=10",
        Some(ALICE),
        None,
    )
    .await;
    assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
    answer.error_code();
}
