//! Every HTTP failure maps onto the documented `RemoteError` kind, through a real loopback
//! connection to a stub server: statuses, `Retry-After`, refused connections, timeouts, and
//! answers that break the protocol.

mod support;

use std::time::Duration;

use axum::Router;
use axum::extract::Path;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use fero::{SyncCheckpoint, SyncId, Version};
use fero_protocol::{
    Change, ErrorBody, ErrorCode, MutationId, PullRequest, PushRequest, Remote, RemoteErrorKind,
};
use serde_json::json;
use support::{json, remote, serve};

fn error_body(status: u16, code: ErrorCode, message: &str) -> Response {
    json(
        status,
        serde_json::to_value(ErrorBody::new(code, message)).unwrap(),
    )
}

/// Answers a pull by the collection's name, so one server plays every case.
async fn scripted_pull(Path(name): Path<String>) -> Response {
    match name.as_str() {
        "busy" => {
            let mut response = error_body(503, ErrorCode::Unavailable, "starting up");
            response
                .headers_mut()
                .insert("retry-after", "2".parse().unwrap());
            response
        }
        "limited" => {
            let mut response = error_body(429, ErrorCode::RateLimited, "slow down");
            response
                .headers_mut()
                .insert("retry-after", "7".parse().unwrap());
            response
        }
        "broken" => error_body(500, ErrorCode::Internal, "disk full"),
        "unauthorized" => error_body(401, ErrorCode::Unauthorized, "unknown token"),
        "forbidden" => error_body(403, ErrorCode::Unauthorized, "not yours"),
        "purged" => error_body(410, ErrorCode::ResyncRequired, "behind the purge horizon"),
        "invalid" => error_body(400, ErrorCode::PageTooLarge, "limit 9000 is above 5000"),
        "missing" => (axum::http::StatusCode::NOT_FOUND, "no such thing").into_response(),
        "garbled" => json(200, json!({ "items": "not a list" })),
        "truncated" => axum::response::Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .body(axum::body::Body::from("{\"items\": ["))
            .unwrap(),
        "future" => {
            let mut response = json(
                200,
                json!({ "items": [], "checkpoint": { "last_sync_id": 5 }, "has_more": false }),
            );
            response
                .headers_mut()
                .insert("fero-protocol", "2".parse().unwrap());
            response
        }
        "misrouted" => {
            let mut response = json(
                200,
                json!({ "items": [], "checkpoint": { "last_sync_id": 10 }, "has_more": false }),
            );
            response.headers_mut().insert(
                fero_protocol::COLLECTION_HEADER,
                "messages".parse().unwrap(),
            );
            response
        }
        "backwards" => json(
            200,
            json!({ "items": [], "checkpoint": { "last_sync_id": 3 }, "has_more": false }),
        ),
        "slow" => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            json(200, json!({}))
        }
        _ => error_body(404, ErrorCode::NotFound, "unknown case"),
    }
}

async fn scripted_server() -> std::net::SocketAddr {
    let router = Router::new()
        .route("/v1/collections/{name}/pull", post(scripted_pull))
        .route(
            "/v1/collections/{name}/push",
            post(|| async {
                // One result for a two-change push, and for the wrong item.
                json(
                    200,
                    json!({ "results": [{
                        "id": "other", "mutation_id": { "device": "d", "seq": 1 },
                        "status": "accepted", "version": 1, "sync_id": 1
                    }]}),
                )
            }),
        )
        .route(
            "/v1/collections/{name}/digest",
            get(|| async { json(200, json!({ "count": 1, "digest": "not-hex" })) }),
        );
    serve(router).await
}

fn from_ten() -> PullRequest {
    PullRequest {
        checkpoint: Some(SyncCheckpoint::at(SyncId(10))),
        limit: 100,
        subscription: None,
    }
}

#[tokio::test]
async fn statuses_map_onto_error_kinds_with_the_servers_message() {
    let addr = scripted_server().await;
    let remote = remote(addr, "token");
    let cases = [
        ("busy", RemoteErrorKind::Transient, "starting up"),
        ("limited", RemoteErrorKind::Transient, "slow down"),
        ("broken", RemoteErrorKind::Transient, "disk full"),
        (
            "unauthorized",
            RemoteErrorKind::Unauthorized,
            "unknown token",
        ),
        ("forbidden", RemoteErrorKind::Unauthorized, "not yours"),
        ("purged", RemoteErrorKind::ResyncRequired, "purge horizon"),
        (
            "invalid",
            RemoteErrorKind::Permanent,
            "limit 9000 is above 5000",
        ),
        ("missing", RemoteErrorKind::Permanent, "no such thing"),
        (
            "garbled",
            RemoteErrorKind::Protocol,
            "not valid protocol JSON",
        ),
        (
            "truncated",
            RemoteErrorKind::Protocol,
            "not valid protocol JSON",
        ),
        ("future", RemoteErrorKind::Protocol, "fero protocol \"2\""),
        (
            "backwards",
            RemoteErrorKind::Protocol,
            "from sync_id 10 to 3",
        ),
    ];
    for (collection, kind, needle) in cases {
        let error = remote.pull(collection, &from_ten()).await.unwrap_err();
        assert_eq!(error.kind, kind, "{collection}: {error}");
        assert_eq!(error.collection, collection);
        assert!(
            error.message.contains(needle),
            "{collection}: {needle:?} not in {error}"
        );
    }
    let stats = remote.stats();
    assert_eq!(stats.requests, cases.len() as u64);
    assert_eq!(stats.transient_failures, 3);
    assert_eq!(stats.other_failures, cases.len() as u64 - 3);
}

#[tokio::test]
async fn retry_after_seconds_reach_the_error_and_the_engine() {
    let addr = scripted_server().await;
    let remote = remote(addr, "token");
    let busy = remote.pull("busy", &from_ten()).await.unwrap_err();
    assert_eq!(busy.retry_after, Some(Duration::from_secs(2)));
    let limited = remote.pull("limited", &from_ten()).await.unwrap_err();
    assert_eq!(limited.retry_after, Some(Duration::from_secs(7)));

    let handler_error = fero::HandlerError::from(limited);
    assert!(handler_error.is_transient());
    assert_eq!(handler_error.retry_after(), Some(Duration::from_secs(7)));
}

#[tokio::test]
async fn a_refused_connection_is_transient_and_says_what_to_check() {
    // Bind and drop a listener: nothing listens on that port afterwards.
    let addr = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    let remote = remote(addr, "token");
    let error = remote.pull("contacts", &from_ten()).await.unwrap_err();
    assert_eq!(error.kind, RemoteErrorKind::Transient, "{error}");
    assert!(error.message.contains("could not connect"), "{error}");
    assert!(error.message.contains("running"), "{error}");
    assert_eq!(remote.stats().transient_failures, 1);
}

#[tokio::test]
async fn a_server_slower_than_the_request_timeout_is_a_transient_timeout() {
    let addr = scripted_server().await;
    let remote = fero_http::HttpRemote::builder(format!("http://{addr}"), "token")
        .request_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let error = remote.pull("slow", &from_ten()).await.unwrap_err();
    assert_eq!(error.kind, RemoteErrorKind::Transient, "{error}");
    assert!(error.message.contains("timed out after 300ms"), "{error}");
}

#[tokio::test]
async fn push_results_that_do_not_match_the_changes_are_refused() {
    let addr = scripted_server().await;
    let remote = remote(addr, "token");
    let change = |id: &str, seq| Change {
        id: id.into(),
        base_version: Some(Version(1)),
        mutation_id: MutationId::new("d", seq),
        deleted: false,
        data: json!({ "n": seq }),
    };
    let two = PushRequest {
        changes: vec![change("a", 1), change("b", 2)],
    };
    let error = remote.push("contacts", &two).await.unwrap_err();
    assert_eq!(error.kind, RemoteErrorKind::Protocol, "{error}");
    assert!(error.message.contains("2 change(s) were sent"), "{error}");

    let wrong_item = PushRequest {
        changes: vec![change("a", 1)],
    };
    let error = remote.push("contacts", &wrong_item).await.unwrap_err();
    assert_eq!(error.kind, RemoteErrorKind::Protocol, "{error}");
    assert!(error.message.contains("\"other\""), "{error}");
}

#[tokio::test]
async fn a_malformed_digest_is_refused() {
    let addr = scripted_server().await;
    let error = remote(addr, "token").digest("contacts").await.unwrap_err();
    assert_eq!(error.kind, RemoteErrorKind::Protocol, "{error}");
}

#[tokio::test]
async fn an_empty_push_needs_no_round_trip() {
    let addr = scripted_server().await;
    let remote = remote(addr, "token");
    let response = remote
        .push("contacts", &PushRequest { changes: vec![] })
        .await
        .unwrap();
    assert!(response.results.is_empty());
    assert_eq!(remote.stats().requests, 0);
}

#[tokio::test]
async fn an_answer_for_another_collection_is_refused_before_it_is_used() {
    let addr = scripted_server().await;
    let error = remote(addr, "token")
        .pull("misrouted", &from_ten())
        .await
        .unwrap_err();
    assert_eq!(error.kind, RemoteErrorKind::Protocol, "{error}");
    assert!(error.message.contains("\"messages\""), "{error}");
}
