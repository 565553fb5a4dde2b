//! CORS: a browser page on a configured origin may call the server. Its preflight (`OPTIONS`,
//! no token) is answered before authentication; real answers, errors and the change stream
//! included, carry `Access-Control-Allow-Origin` and expose the protocol headers. Other origins,
//! and a server configured with none, get no CORS headers.

mod support;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use fero_server::{CorsOrigins, Server, SqliteStorage};
use serde_json::json;
use support::{ALICE, change, tokens};
use tower::ServiceExt;

const APP: &str = "http://localhost:5173";

fn server_for(origins: &[&str]) -> Server {
    Server::builder()
        .storage(SqliteStorage::open_in_memory().unwrap())
        .tokens(tokens())
        .cors_origins(CorsOrigins::parse(origins).unwrap())
        .build()
        .unwrap()
}

/// Sends a request with an `Origin`; returns status and headers (the body is dropped, so a
/// change stream's open body does not block).
async fn send(server: &Server, request: Request<Body>) -> (StatusCode, HeaderMap) {
    let response = server.router().oneshot(request).await.unwrap();
    (response.status(), response.headers().clone())
}

fn preflight(origin: &str, path: &str) -> Request<Body> {
    Request::builder()
        .method(Method::OPTIONS)
        .uri(path)
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type,fero-protocol",
        )
        .body(Body::empty())
        .unwrap()
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

#[tokio::test]
async fn a_preflight_from_a_configured_origin_is_answered_before_authentication() {
    let server = server_for(&[APP, "https://app.example"]);
    for path in [
        "/v1/collections/todos/push",
        "/v1/collections/todos/pull",
        "/v1/changes",
    ] {
        let (status, headers) = send(&server, preflight(APP, path)).await;
        assert!(
            status.is_success(),
            "preflight of {path} got {status}, not 401: it must not reach authentication"
        );
        assert_eq!(header(&headers, "access-control-allow-origin"), Some(APP));
        let methods = header(&headers, "access-control-allow-methods").unwrap();
        assert!(
            methods.contains("POST") && methods.contains("GET"),
            "{methods}"
        );
        let allowed = header(&headers, "access-control-allow-headers")
            .unwrap()
            .to_ascii_lowercase();
        for needed in ["authorization", "content-type", "fero-protocol"] {
            assert!(allowed.contains(needed), "{needed} missing from {allowed}");
        }
        assert_eq!(header(&headers, "access-control-max-age"), Some("3600"));
        assert_eq!(header(&headers, "access-control-allow-credentials"), None);
    }
}

#[tokio::test]
async fn answers_to_a_configured_origin_carry_cors_headers_errors_included() {
    let server = server_for(&[APP]);
    let body = json!({ "changes": [change("t1", None, "browser", 1, json!({ "title": "x" }))] });
    let push = Request::post("/v1/collections/todos/push")
        .header("origin", APP)
        .header("authorization", format!("Bearer {ALICE}"))
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let (status, headers) = send(&server, push).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(header(&headers, "access-control-allow-origin"), Some(APP));
    let exposed = header(&headers, "access-control-expose-headers")
        .unwrap()
        .to_ascii_lowercase();
    for needed in ["fero-protocol", "fero-collection", "retry-after"] {
        assert!(exposed.contains(needed), "{needed} not exposed: {exposed}");
    }

    // A 401 reaches the page too, so it can tell "bad token" from "network down".
    let unauthorized = Request::get("/v1/collections/todos/pull?limit=10")
        .header("origin", APP)
        .body(Body::empty())
        .unwrap();
    let (status, headers) = send(&server, unauthorized).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(header(&headers, "access-control-allow-origin"), Some(APP));

    // The change stream a page reads with fetch (Authorization header, no token in the URL).
    let stream = Request::get("/v1/changes")
        .header("origin", APP)
        .header("authorization", format!("Bearer {ALICE}"))
        .body(Body::empty())
        .unwrap();
    let (status, headers) = send(&server, stream).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(header(&headers, "access-control-allow-origin"), Some(APP));
    assert_eq!(header(&headers, "content-type"), Some("text/event-stream"));
}

#[tokio::test]
async fn other_origins_and_unconfigured_servers_get_no_cors_headers() {
    let server = server_for(&[APP]);
    let (_, headers) = send(&server, preflight("https://evil.example", "/v1/changes")).await;
    assert_eq!(header(&headers, "access-control-allow-origin"), None);

    let plain = server_for(&[]);
    let (status, headers) = send(&plain, preflight(APP, "/v1/changes")).await;
    assert_eq!(header(&headers, "access-control-allow-origin"), None);
    // Without CORS the preflight is an ordinary request: refused, as before.
    assert!(status.is_client_error(), "{status}");
}

#[tokio::test]
async fn any_origin_with_a_star() {
    let server = server_for(&["*"]);
    let (status, headers) = send(
        &server,
        preflight("https://anywhere.example", "/v1/changes"),
    )
    .await;
    assert!(status.is_success(), "{status}");
    assert_eq!(header(&headers, "access-control-allow-origin"), Some("*"));
}

#[test]
fn origins_that_a_browser_never_sends_are_refused() {
    for bad in [
        "localhost:5173",
        "http://localhost:5173/",
        "http://a.example/app",
        "ftp://a.example",
        "http://",
    ] {
        let error = CorsOrigins::parse([bad]).unwrap_err();
        assert!(
            error.to_string().contains("scheme://host"),
            "{bad}: {error}"
        );
    }
    let parsed = CorsOrigins::parse(["http://a.example", " ", "http://a.example"]).unwrap();
    assert_eq!(parsed.len(), 1);
}
