//! Every kind of bad input gets its 4xx status and the protocol's JSON error body
//! (`{"error": {"code", "message"}}`), and writes nothing.

mod support;

use axum::http::{Method, StatusCode};
use fero::SyncId;
use fero_server::{Server, SqliteStorage, UserId};
use serde_json::json;
use support::{ALICE, accepted, call, call_raw, change, push, server};

/// Nothing reached storage: alice's `contacts` are empty and the next accepted write takes
/// `sync_id` `next` (no counter value was used up by a refused request).
async fn assert_nothing_written_before(server: &Server, next: u64) {
    let alice = UserId::new("alice");
    let page = server
        .storage()
        .pull(&alice, "contacts", SyncId(0), 10)
        .await
        .unwrap();
    assert!(
        page.items.is_empty(),
        "a refused request wrote {:?}",
        page.items
    );
    let results = push(
        &server.router(),
        ALICE,
        "contacts",
        vec![change("probe", None, "probe", 1, json!({}))],
    )
    .await;
    assert_eq!(
        accepted(&results[0]),
        (1, next),
        "a refused request used up a sync_id"
    );
}

async fn assert_nothing_written(server: &Server) {
    assert_nothing_written_before(server, 1).await;
}

#[tokio::test]
async fn malformed_json_is_refused_with_400_malformed_json() {
    let server = server();
    let router = server.router();
    for (uri, body) in [
        ("/v1/collections/contacts/push", "{\"changes\": ["),
        ("/v1/collections/contacts/push", "not json at all"),
        ("/v1/collections/contacts/push", ""),
        ("/v1/collections/contacts/pull", "{\"limit\": 10,}"),
    ] {
        let answer = call_raw(&router, Method::POST, uri, Some(ALICE), body).await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{uri} {body:?}: {answer:?}"
        );
        assert_eq!(answer.error_code(), "malformed_json", "{uri} {body:?}");
    }
    assert_nothing_written(&server).await;
}

#[tokio::test]
async fn missing_or_mistyped_fields_are_refused_with_invalid_request() {
    let server = server();
    let router = server.router();
    let cases = [
        ("/v1/collections/contacts/push", json!({})),
        (
            "/v1/collections/contacts/push",
            json!({ "changes": [{ "id": "a", "data": {} }] }),
        ),
        (
            "/v1/collections/contacts/push",
            json!({ "changes": [
                { "id": "ok", "base_version": null, "mutation_id": { "device": "d", "seq": 1 }, "data": {} },
                { "id": "bad", "base_version": "one", "mutation_id": { "device": "d", "seq": 2 } }
            ] }),
        ),
        (
            "/v1/collections/contacts/pull",
            json!({ "checkpoint": null }),
        ),
        ("/v1/collections/contacts/pull", json!({ "limit": -1 })),
    ];
    for (uri, body) in cases {
        let answer = call(&router, Method::POST, uri, Some(ALICE), Some(body.clone())).await;
        assert_eq!(
            answer.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {answer:?}"
        );
        assert_eq!(answer.error_code(), "invalid_request", "{body}");
    }
    for query in [
        "",
        "?after=1",
        "?limit=abc",
        "?limit=10&after=-3",
        "?limit=10&colour=red",
    ] {
        let uri = format!("/v1/collections/contacts/pull{query}");
        let answer = call(&router, Method::GET, &uri, Some(ALICE), None).await;
        assert_eq!(
            answer.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{uri}: {answer:?}"
        );
        assert_eq!(answer.error_code(), "invalid_request", "{uri}");
    }
    assert_nothing_written(&server).await;
}

#[tokio::test]
async fn invalid_collection_names_are_refused_on_every_endpoint() {
    let server = server();
    let router = server.router();
    let long = "c".repeat(65);
    for name in [
        "Contacts",
        "1st",
        "a%20b",
        "caf%C3%A9",
        "a.b",
        "_x",
        long.as_str(),
    ] {
        let push_body = json!({ "changes": [{ "id": "a", "base_version": null,
            "mutation_id": { "device": "d", "seq": 1 }, "data": {} }] });
        for (method, uri, body) in [
            (
                Method::POST,
                format!("/v1/collections/{name}/push"),
                Some(push_body),
            ),
            (
                Method::POST,
                format!("/v1/collections/{name}/pull"),
                Some(json!({ "limit": 10 })),
            ),
            (
                Method::GET,
                format!("/v1/collections/{name}/pull?limit=10"),
                None,
            ),
            (Method::GET, format!("/v1/collections/{name}/digest"), None),
        ] {
            let answer = call(&router, method, &uri, Some(ALICE), body).await;
            assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{uri}: {answer:?}");
            assert_eq!(answer.error_code(), "invalid_collection", "{uri}");
        }
    }
    assert_nothing_written(&server).await;
}

#[tokio::test]
async fn page_sizes_of_zero_or_above_the_cap_are_refused() {
    let server = server();
    let router = server.router();
    let cap = fero_protocol::MAX_PAGE_SIZE;
    for limit in [0, cap + 1, u32::MAX] {
        let post = call(
            &router,
            Method::POST,
            "/v1/collections/contacts/pull",
            Some(ALICE),
            Some(json!({ "limit": limit })),
        )
        .await;
        let get = call(
            &router,
            Method::GET,
            &format!("/v1/collections/contacts/pull?limit={limit}"),
            Some(ALICE),
            None,
        )
        .await;
        for answer in [post, get] {
            assert_eq!(
                answer.status,
                StatusCode::BAD_REQUEST,
                "limit {limit}: {answer:?}"
            );
            assert_eq!(answer.error_code(), "page_too_large");
        }
    }
    let at_cap = call(
        &router,
        Method::GET,
        &format!("/v1/collections/contacts/pull?limit={cap}"),
        Some(ALICE),
        None,
    )
    .await;
    assert_eq!(at_cap.status, StatusCode::OK, "the cap itself is allowed");
    let too_many: Vec<_> = (0..=u64::from(cap))
        .map(|i| change(&format!("c{i}"), None, "d", i + 1, json!(null)))
        .collect();
    let answer = call(
        &router,
        Method::POST,
        "/v1/collections/contacts/push",
        Some(ALICE),
        Some(json!({ "changes": too_many })),
    )
    .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{answer:?}");
    assert_eq!(answer.error_code(), "page_too_large");
    assert_nothing_written(&server).await;
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_with_413_body_too_large() {
    let server = Server::builder()
        .storage(SqliteStorage::open_in_memory().unwrap())
        .tokens(support::tokens())
        .body_limit(1024)
        .build()
        .unwrap();
    let router = server.router();
    let big =
        json!({ "changes": [change("a", None, "d", 1, json!({ "text": "x".repeat(2000) }))] });
    let answer = call(
        &router,
        Method::POST,
        "/v1/collections/contacts/push",
        Some(ALICE),
        Some(big),
    )
    .await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE, "{answer:?}");
    assert_eq!(answer.error_code(), "body_too_large");
    let small = json!({ "changes": [change("a", None, "d", 1, json!({ "text": "fits" }))] });
    let answer = call(
        &router,
        Method::POST,
        "/v1/collections/other/push",
        Some(ALICE),
        Some(small),
    )
    .await;
    assert_eq!(
        answer.status,
        StatusCode::OK,
        "a body under the limit passes: {answer:?}"
    );
    assert_nothing_written_before(&server, 2).await;
}

#[tokio::test]
async fn an_unparsable_cursor_is_refused_with_invalid_cursor() {
    let server = server();
    let router = server.router();
    for cursor in ["garbage", "s1-", "s1-12x", "s9-4"] {
        let body = json!({ "checkpoint": { "last_sync_id": 0, "cursor": cursor }, "limit": 10 });
        let post = call(
            &router,
            Method::POST,
            "/v1/collections/contacts/pull",
            Some(ALICE),
            Some(body),
        )
        .await;
        let get = call(
            &router,
            Method::GET,
            &format!("/v1/collections/contacts/pull?limit=10&cursor={cursor}"),
            Some(ALICE),
            None,
        )
        .await;
        for answer in [post, get] {
            assert_eq!(
                answer.status,
                StatusCode::BAD_REQUEST,
                "{cursor}: {answer:?}"
            );
            assert_eq!(answer.error_code(), "invalid_cursor");
        }
    }
    assert_nothing_written(&server).await;
}

#[tokio::test]
async fn unknown_or_missing_tokens_get_401_before_the_body_is_read() {
    let server = server();
    let router = server.router();
    let body = json!({ "changes": [change("a", None, "d", 1, json!({}))] });
    for token in [None, Some("not-a-token"), Some("")] {
        let answer = call(
            &router,
            Method::POST,
            "/v1/collections/contacts/push",
            token,
            Some(body.clone()),
        )
        .await;
        assert_eq!(
            answer.status,
            StatusCode::UNAUTHORIZED,
            "{token:?}: {answer:?}"
        );
        assert_eq!(answer.error_code(), "unauthorized");
        assert!(answer.headers.contains_key("www-authenticate"));
    }
    let garbage = call_raw(
        &router,
        Method::POST,
        "/v1/collections/contacts/push",
        Some("nope"),
        "{{{",
    )
    .await;
    assert_eq!(
        garbage.status,
        StatusCode::UNAUTHORIZED,
        "auth comes before parsing"
    );
    for uri in [
        "/v1/collections/contacts/pull?limit=5",
        "/v1/collections/contacts/digest",
        "/v1/changes",
    ] {
        let answer = call(&router, Method::GET, uri, Some("not-a-token"), None).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{uri}");
        assert_eq!(answer.error_code(), "unauthorized");
    }
    assert_nothing_written(&server).await;
}

#[tokio::test]
async fn unknown_routes_and_methods_get_json_errors() {
    let server = server();
    let router = server.router();
    let missing = call(
        &router,
        Method::GET,
        "/v2/collections/contacts/pull",
        Some(ALICE),
        None,
    )
    .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.error_code(), "not_found");
    let wrong_method = call(
        &router,
        Method::GET,
        "/v1/collections/contacts/push",
        Some(ALICE),
        None,
    )
    .await;
    assert_eq!(wrong_method.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(wrong_method.error_code(), "invalid_request");
    assert!(
        wrong_method.headers.contains_key("allow"),
        "the Allow header survives: {wrong_method:?}"
    );
    assert_nothing_written(&server).await;
}

#[tokio::test]
async fn an_unsupported_protocol_version_is_refused_and_responses_carry_the_version() {
    let server = server();
    let router = server.router();
    let request = axum::http::Request::get("/v1/collections/contacts/digest")
        .header("authorization", format!("Bearer {ALICE}"))
        .header("fero-protocol", "2")
        .body(axum::body::Body::empty())
        .unwrap();
    let response = tower::ServiceExt::oneshot(router.clone(), request)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"]["code"], "unsupported_version");
    let ok = call(
        &router,
        Method::GET,
        "/v1/collections/contacts/digest",
        Some(ALICE),
        None,
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(
        ok.headers.get("fero-protocol").map(|v| v.as_bytes()),
        Some(&b"1"[..])
    );
    assert_nothing_written(&server).await;
}

#[tokio::test]
async fn malformed_changes_are_rejected_one_by_one_while_the_rest_is_written() {
    let server = server();
    let router = server.router();
    let results = push(
        &router,
        ALICE,
        "notes",
        vec![
            change("", None, "d", 1, json!({})),
            change("good", None, "d", 2, json!({})),
            change("other", None, "", 3, json!({})),
            change(&"x".repeat(513), None, "d", 4, json!({})),
        ],
    )
    .await;
    let codes: Vec<String> = results
        .iter()
        .map(|r| match &r.outcome {
            fero_protocol::ChangeOutcome::Rejected { code, .. } => code.clone(),
            fero_protocol::ChangeOutcome::Accepted { .. } => "accepted".into(),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        codes,
        [
            "invalid_id",
            "accepted",
            "invalid_mutation_id",
            "invalid_id"
        ]
    );
    assert_eq!(results[1].id, "good", "results keep request order");
    let rows = support::pull(&router, ALICE, "notes", None, 10).await.items;
    assert_eq!(rows.len(), 1, "only the well-formed change is written");
    assert_nothing_written_before(&server, 2).await;
}
