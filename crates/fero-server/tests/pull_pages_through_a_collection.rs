//! Pull pages through a collection: `has_more` until the last page, checkpoints that carry an
//! opaque cursor, and the GET and POST forms agreeing.

mod support;

use axum::http::Method;
use fero::{SyncCheckpoint, SyncId};
use fero_server::{SeedRow, UserId};
use serde_json::json;
use support::{ALICE, call, change, pull, push, server};

#[tokio::test]
async fn many_pages_bring_every_row_once_in_feed_order() {
    let server = server();
    let router = server.router();
    let rows = (0..1_003).map(|i| SeedRow::new(format!("item-{i:05}"), json!({ "n": i })));
    server
        .seed(&UserId::new("alice"), "items", rows, 250)
        .await
        .unwrap();
    let mut checkpoint: Option<SyncCheckpoint> = None;
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let page = pull(&router, ALICE, "items", checkpoint.as_ref(), 100).await;
        pages += 1;
        assert!(page.items.len() <= 100);
        if let Some(last) = page.items.last() {
            assert_eq!(
                page.checkpoint.last_sync_id, last.sync_id,
                "the checkpoint is the last row's"
            );
        }
        assert!(
            page.checkpoint.cursor.is_some(),
            "every checkpoint carries a cursor"
        );
        seen.extend(page.items.iter().map(|d| d.id.clone()));
        checkpoint = Some(page.checkpoint);
        if !page.has_more {
            break;
        }
    }
    assert_eq!(pages, 11, "1003 rows by 100: ten full pages, then 3 rows");
    let expected: Vec<String> = (0..1_003).map(|i| format!("item-{i:05}")).collect();
    assert_eq!(seen, expected);
    let after_end = pull(&router, ALICE, "items", checkpoint.as_ref(), 100).await;
    assert!(after_end.items.is_empty() && !after_end.has_more);
    assert_eq!(
        Some(&after_end.checkpoint.last_sync_id),
        checkpoint.as_ref().map(|c| &c.last_sync_id),
        "an empty page keeps the position"
    );
}

#[tokio::test]
async fn get_and_post_pulls_return_the_same_page() {
    let server = server();
    let router = server.router();
    for i in 0..5u64 {
        push(
            &router,
            ALICE,
            "notes",
            vec![change(&format!("n{i}"), None, "d", i + 1, json!(i))],
        )
        .await;
    }
    let first = pull(&router, ALICE, "notes", None, 2).await;
    let cursor = first.checkpoint.cursor.clone().unwrap();
    let by_post = pull(&router, ALICE, "notes", Some(&first.checkpoint), 2).await;
    let by_cursor = call(
        &router,
        Method::GET,
        &format!("/v1/collections/notes/pull?limit=2&cursor={cursor}"),
        Some(ALICE),
        None,
    )
    .await;
    let by_after = call(
        &router,
        Method::GET,
        "/v1/collections/notes/pull?limit=2&after=2",
        Some(ALICE),
        None,
    )
    .await;
    let by_post = serde_json::to_value(&by_post).unwrap();
    assert_eq!(by_cursor.body, by_post);
    assert_eq!(by_after.body, by_post);
    assert_eq!(by_post["has_more"], true);
    assert_eq!(by_post["items"][0]["id"], "n2");
}

#[tokio::test]
async fn the_cursor_wins_over_last_sync_id_and_a_plain_number_works_without_one() {
    let server = server();
    let router = server.router();
    for i in 0..4u64 {
        push(
            &router,
            ALICE,
            "notes",
            vec![change(&format!("n{i}"), None, "d", i + 1, json!(i))],
        )
        .await;
    }
    let at_three = pull(
        &router,
        ALICE,
        "notes",
        Some(&SyncCheckpoint::at(SyncId(3))),
        10,
    )
    .await;
    assert_eq!(
        at_three
            .items
            .iter()
            .map(|d| d.sync_id.0)
            .collect::<Vec<_>>(),
        [4]
    );
    let mixed =
        SyncCheckpoint::at(SyncId(0)).with_cursor(at_three.checkpoint.cursor.clone().unwrap());
    let page = pull(&router, ALICE, "notes", Some(&mixed), 10).await;
    assert!(
        page.items.is_empty(),
        "the server's cursor is the position, not last_sync_id"
    );
}

#[tokio::test]
async fn an_update_moves_a_row_behind_the_checkpoint_into_the_next_page() {
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
    let first = pull(&router, ALICE, "notes", None, 10).await;
    push(
        &router,
        ALICE,
        "notes",
        vec![change("a", Some(1), "d", 3, json!(11))],
    )
    .await;
    let next = pull(&router, ALICE, "notes", Some(&first.checkpoint), 10).await;
    assert_eq!(next.items.len(), 1);
    assert_eq!(
        (next.items[0].id.as_str(), next.items[0].version.0),
        ("a", 2)
    );
}

#[tokio::test]
async fn every_collection_answer_names_its_collection() {
    let router = server().router();
    let cases = [
        (
            Method::POST,
            "/v1/collections/items/pull",
            Some(json!({ "limit": 10 })),
        ),
        (Method::GET, "/v1/collections/items/pull?limit=10", None),
        (
            Method::POST,
            "/v1/collections/items/push",
            Some(json!({ "changes": [] })),
        ),
        (Method::GET, "/v1/collections/items/digest", None),
    ];
    for (method, uri, body) in cases {
        let answer = call(&router, method.clone(), uri, Some(ALICE), body).await;
        assert_eq!(answer.status, 200, "{method} {uri}: {answer:?}");
        assert_eq!(
            answer
                .headers
                .get(fero_protocol::COLLECTION_HEADER)
                .and_then(|v| v.to_str().ok()),
            Some("items"),
            "{method} {uri}"
        );
    }
}
