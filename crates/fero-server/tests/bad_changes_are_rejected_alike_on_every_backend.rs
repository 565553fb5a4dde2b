//! U+0000 in an item id or a device id made PostgreSQL fail the whole push with 500 (SQLite
//! stored it), so one such change blocked a device's outbox for good; a change without
//! `base_version` was written as a create; a mutation id sent again for another row got that
//! row's `accepted` answer and nothing was written. Now, on both backends: U+0000 is that
//! change's `rejected` (`invalid_id`, `invalid_mutation_id`, `invalid_data`) and the page's other
//! changes are written; a missing `base_version` is 422; a reused mutation id is
//! `mutation_id_reused`.

mod support;

use axum::http::{Method, StatusCode};
use fero_protocol::ChangeOutcome;
use fero_server::storage_suite::ManualClock;
use serde_json::{Value, json};
use support::{ALICE, Backend, accepted, call, pull, server_on};

fn rejected_code(result: &Value) -> (&str, &str) {
    (
        result["status"].as_str().unwrap_or_default(),
        result["code"].as_str().unwrap_or_default(),
    )
}

async fn nul_is_rejected_per_change(backend: Backend) {
    let Some(on) = server_on(backend, &ManualClock::new()).await else {
        return;
    };
    let router = on.server.router();
    let mutation = |seq: u64| json!({ "device": "phone", "seq": seq });
    let body = json!({ "changes": [
        { "id": "ok-1", "base_version": null, "mutation_id": mutation(1), "data": { "a": 1 } },
        { "id": "bad\u{0}id", "base_version": null, "mutation_id": mutation(2), "data": 1 },
        { "id": "ok-2", "base_version": null,
          "mutation_id": { "device": "ph\u{0}one", "seq": 3 }, "data": 1 },
        { "id": "ok-3", "base_version": null, "mutation_id": mutation(4),
          "data": { "list": ["x", "nul \u{0} inside"] } },
        { "id": "ok-4", "base_version": null, "mutation_id": mutation(5),
          "data": { "k\u{0}ey": 1 } },
        { "id": "ok-5", "base_version": null, "mutation_id": mutation(6), "data": "fine" },
    ] });
    let answer = call(
        &router,
        Method::POST,
        "/v1/collections/notes/push",
        Some(ALICE),
        Some(body),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    let results = answer.body["results"].as_array().unwrap();
    let outcomes: Vec<(&str, &str)> = results.iter().map(rejected_code).collect();
    assert_eq!(
        outcomes,
        [
            ("accepted", ""),
            ("rejected", "invalid_id"),
            ("rejected", "invalid_mutation_id"),
            ("rejected", "invalid_data"),
            ("rejected", "invalid_data"),
            ("accepted", ""),
        ],
        "{results:?}"
    );
    let page = pull(&router, ALICE, "notes", None, 10).await;
    let ids: Vec<&str> = page.items.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(
        ids,
        ["ok-1", "ok-5"],
        "the good changes of the page were written"
    );
    assert_eq!(
        (page.items[0].sync_id.0, page.items[1].sync_id.0),
        (1, 2),
        "rejected changes used up no sync_id"
    );
    // A deletion's data is ignored, so U+0000 in it is no reason to refuse the deletion.
    let deletion = json!({ "changes": [{ "id": "ok-1", "base_version": 1, "deleted": true,
        "mutation_id": mutation(7), "data": "\u{0}" }] });
    let answer = call(
        &router,
        Method::POST,
        "/v1/collections/notes/push",
        Some(ALICE),
        Some(deletion),
    )
    .await;
    assert_eq!(
        answer.body["results"][0]["status"], "accepted",
        "{answer:?}"
    );
}

async fn a_missing_base_version_is_422(backend: Backend) {
    let Some(on) = server_on(backend, &ManualClock::new()).await else {
        return;
    };
    let router = on.server.router();
    let missing = json!({ "changes": [
        { "id": "n", "mutation_id": { "device": "phone", "seq": 1 }, "data": 1 } ] });
    let answer = call(
        &router,
        Method::POST,
        "/v1/collections/notes/push",
        Some(ALICE),
        Some(missing),
    )
    .await;
    assert_eq!(
        answer.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{answer:?}"
    );
    assert_eq!(answer.error_code(), "invalid_request");
    let message = answer.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("base_version"), "{message}");
    assert!(
        pull(&router, ALICE, "notes", None, 10)
            .await
            .items
            .is_empty()
    );
    // `null` creates, and the first sync_id is still 1: the refusal used none.
    let results = support::push(
        &router,
        ALICE,
        "notes",
        vec![support::change("n", None, "phone", 1, json!(1))],
    )
    .await;
    assert_eq!(accepted(&results[0]), (1, 1));
}

async fn a_reused_mutation_id_is_refused(backend: Backend) {
    let Some(on) = server_on(backend, &ManualClock::new()).await else {
        return;
    };
    let router = on.server.router();
    let first = support::push(
        &router,
        ALICE,
        "notes",
        vec![support::change("a", None, "phone", 1, json!(1))],
    )
    .await;
    accepted(&first[0]);
    for (collection, id) in [("notes", "b"), ("tasks", "a")] {
        let results = support::push(
            &router,
            ALICE,
            collection,
            vec![support::change(id, None, "phone", 1, json!(2))],
        )
        .await;
        match &results[0].outcome {
            ChangeOutcome::Rejected { code, .. } => assert_eq!(code, "mutation_id_reused"),
            other => panic!("{collection}/{id}: expected mutation_id_reused, got {other:?}"),
        }
        let page = pull(&router, ALICE, collection, None, 10).await;
        assert!(
            page.items
                .iter()
                .all(|d| d.id == "a" && collection == "notes"),
            "nothing written for {collection}/{id}: {page:?}"
        );
    }
    let replay = support::push(
        &router,
        ALICE,
        "notes",
        vec![support::change("a", None, "phone", 1, json!(1))],
    )
    .await;
    assert_eq!(replay, first, "the same row replayed keeps its answer");
}

#[tokio::test]
async fn nul_is_rejected_per_change_on_sqlite() {
    nul_is_rejected_per_change(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_is_rejected_per_change_on_postgres() {
    nul_is_rejected_per_change(Backend::Postgres).await;
}

#[tokio::test]
async fn a_missing_base_version_is_422_on_sqlite() {
    a_missing_base_version_is_422(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_base_version_is_422_on_postgres() {
    a_missing_base_version_is_422(Backend::Postgres).await;
}

#[tokio::test]
async fn a_reused_mutation_id_is_refused_on_sqlite() {
    a_reused_mutation_id_is_refused(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_mutation_id_is_refused_on_postgres() {
    a_reused_mutation_id_is_refused(Backend::Postgres).await;
}
