//! A pull from a position the server's feed never reached used to be answered 200 with the
//! position echoed: on a fresh (or restored-from-backup) server, `pull?cursor=s1-100` returned
//! nothing and kept the client at 100, so the rows written afterwards with `sync_id` 1..100
//! never reached it. Now it is 410 `resync_required` with reason `server_behind`; the purge
//! horizon's 410 says `tombstones_purged`. And a pull from scratch after a purge used to get 410
//! on its second page (its position lay below the horizon); its cursors now record the horizon
//! the scan started under, so it pages through. Both backends.

mod support;

use axum::http::{Method, StatusCode};
use fero::SyncId;
use fero_server::storage_suite::ManualClock;
use serde_json::json;
use support::{ALICE, Backend, accepted, call, change, deletion, pull, push, server_on};

async fn an_ahead_position_is_410_server_behind(backend: Backend) {
    let Some(on) = server_on(backend, &ManualClock::new()).await else {
        return;
    };
    let router = on.server.router();
    for (method, uri, body) in [
        (
            Method::GET,
            "/v1/collections/notes/pull?limit=10&cursor=s1-100",
            None,
        ),
        (
            Method::GET,
            "/v1/collections/notes/pull?limit=10&after=100",
            None,
        ),
        (
            Method::POST,
            "/v1/collections/notes/pull",
            Some(json!({ "checkpoint": { "last_sync_id": 100 }, "limit": 10 })),
        ),
    ] {
        let answer = call(&router, method, uri, Some(ALICE), body).await;
        assert_eq!(answer.status, StatusCode::GONE, "{uri}: {answer:?}");
        assert_eq!(answer.error_code(), "resync_required");
        assert_eq!(
            answer.body["error"]["reason"], "server_behind",
            "{answer:?}"
        );
    }
    // Rows written afterwards reach a client that starts over.
    let written = push(
        &router,
        ALICE,
        "notes",
        (1..=5)
            .map(|i| change(&format!("n{i}"), None, "d", i, json!(i)))
            .collect(),
    )
    .await;
    assert_eq!(accepted(&written[4]).1, 5);
    let fresh = pull(&router, ALICE, "notes", None, 10).await;
    assert_eq!(fresh.items.len(), 5);
    // Still ahead of a feed that now ends at 5; at 5 it is served.
    let ahead = call(
        &router,
        Method::GET,
        "/v1/collections/notes/pull?limit=10&cursor=s1-6",
        Some(ALICE),
        None,
    )
    .await;
    assert_eq!(ahead.status, StatusCode::GONE);
    let at_head = call(
        &router,
        Method::GET,
        "/v1/collections/notes/pull?limit=10&cursor=s1-5",
        Some(ALICE),
        None,
    )
    .await;
    assert_eq!(at_head.status, StatusCode::OK, "{at_head:?}");
}

async fn after_a_purge_a_scan_from_scratch_pages_through(backend: Backend) {
    let Some(on) = server_on(backend, &ManualClock::new()).await else {
        return;
    };
    let router = on.server.router();
    let created = push(
        &router,
        ALICE,
        "notes",
        (0..6)
            .map(|i| change(&format!("n{i}"), None, "d", i, json!(i)))
            .collect(),
    )
    .await;
    assert_eq!(created.len(), 6);
    let old = pull(&router, ALICE, "notes", None, 1).await; // at sync_id 1
    let gone = push(
        &router,
        ALICE,
        "notes",
        vec![deletion("n1", 1, "d", 10), deletion("n4", 1, "d", 11)],
    )
    .await;
    let (_, last_tombstone) = accepted(&gone[1]);
    let report = on
        .server
        .purge_tombstones(SyncId(last_tombstone + 1))
        .await
        .unwrap();
    assert_eq!(report.purged, 2);

    let behind = call(
        &router,
        Method::POST,
        "/v1/collections/notes/pull",
        Some(ALICE),
        Some(json!({ "checkpoint": old.checkpoint, "limit": 10 })),
    )
    .await;
    assert_eq!(behind.status, StatusCode::GONE, "{behind:?}");
    assert_eq!(behind.body["error"]["reason"], "tombstones_purged");

    // From scratch, one row a page: every page is served, each live row comes once.
    let mut checkpoint = None;
    let mut ids = Vec::new();
    loop {
        let page = pull(&router, ALICE, "notes", checkpoint.as_ref(), 1).await;
        ids.extend(page.items.iter().map(|d| d.id.clone()));
        checkpoint = Some(page.checkpoint);
        if !page.has_more {
            break;
        }
    }
    assert_eq!(ids, ["n0", "n2", "n3", "n5"]);
    // The scan ended below the horizon (the last rows were the purged tombstones); its cursor
    // keeps serving, and once it passes the horizon it is a plain one again.
    push(
        &router,
        ALICE,
        "notes",
        vec![change("n6", None, "d", 12, json!(6))],
    )
    .await;
    let next = pull(&router, ALICE, "notes", checkpoint.as_ref(), 10).await;
    assert_eq!(
        next.items.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
        ["n6"]
    );
    let cursor = next.checkpoint.cursor.unwrap();
    assert!(
        cursor.starts_with("s1-") && !cursor.contains("-h"),
        "{cursor}"
    );
}

#[tokio::test]
async fn an_ahead_position_is_410_server_behind_on_sqlite() {
    an_ahead_position_is_410_server_behind(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ahead_position_is_410_server_behind_on_postgres() {
    an_ahead_position_is_410_server_behind(Backend::Postgres).await;
}

#[tokio::test]
async fn after_a_purge_a_scan_from_scratch_pages_through_on_sqlite() {
    after_a_purge_a_scan_from_scratch_pages_through(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_purge_a_scan_from_scratch_pages_through_on_postgres() {
    after_a_purge_a_scan_from_scratch_pages_through(Backend::Postgres).await;
}
