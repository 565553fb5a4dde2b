//! `GET /metrics`: Prometheus text whose counters move with pushes and pulls, a latency
//! histogram per endpoint, the open change streams, and figures that belong to one server.

mod support;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use fero_server::{Server, SqliteStorage};
use serde_json::json;
use support::{ALICE, call, change, pull, push, server, tokens};
use tower::ServiceExt;

/// The text of `GET /metrics`.
async fn scrape(server: &Server, token: Option<&str>) -> (StatusCode, String) {
    let mut request = Request::get("/metrics");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = server
        .router()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

/// The value of the sample `name{labels}` (labels in any order), if the text has it.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, series_labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            if series_name != name {
                return None;
            }
            let mut found: Vec<(String, String)> = series_labels
                .split(',')
                .filter(|pair| !pair.is_empty())
                .filter_map(|pair| {
                    let (k, v) = pair.split_once('=')?;
                    Some((k.to_owned(), v.trim_matches('"').to_owned()))
                })
                .collect();
            let mut wanted: Vec<(String, String)> = labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            found.sort();
            wanted.sort();
            (found == wanted).then(|| value.parse().ok())?
        })
}

const PUSH: &str = "/v1/collections/{name}/push";
const PULL: &str = "/v1/collections/{name}/pull";

#[tokio::test]
async fn counters_move_with_pushes_and_pulls() {
    let server = server();
    let router = server.router();
    let (status, before) = scrape(&server, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        sample(
            &before,
            "fero_push_changes_total",
            &[("outcome", "accepted")]
        ),
        Some(0.0)
    );
    assert_eq!(sample(&before, "fero_pull_rows_total", &[]), Some(0.0));

    push(
        &router,
        ALICE,
        "notes",
        vec![
            change("a", None, "phone", 1, json!(1)),
            change("b", None, "phone", 2, json!(2)),
        ],
    )
    .await;
    // A create of an existing id conflicts; an empty id is rejected.
    push(
        &router,
        ALICE,
        "notes",
        vec![
            change("a", None, "laptop", 1, json!("again")),
            change("", None, "laptop", 2, json!("no id")),
        ],
    )
    .await;
    let page = pull(&router, ALICE, "notes", None, 10).await;
    assert_eq!(page.items.len(), 2);
    let missing = call(&router, Method::GET, "/no/such/path", None, None).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);

    let (_, text) = scrape(&server, None).await;
    let outcome = |o| sample(&text, "fero_push_changes_total", &[("outcome", o)]);
    assert_eq!(outcome("accepted"), Some(2.0), "{text}");
    assert_eq!(outcome("conflict"), Some(1.0));
    assert_eq!(outcome("rejected"), Some(1.0));
    assert_eq!(sample(&text, "fero_pull_rows_total", &[]), Some(2.0));
    let requests = |endpoint, method, status| {
        sample(
            &text,
            "fero_http_requests_total",
            &[
                ("endpoint", endpoint),
                ("method", method),
                ("status", status),
            ],
        )
    };
    assert_eq!(requests(PUSH, "POST", "200"), Some(2.0), "{text}");
    assert_eq!(requests(PULL, "POST", "200"), Some(1.0));
    // Unrouted paths share one label value: the raw path never becomes a label.
    assert_eq!(requests("unmatched", "GET", "404"), Some(1.0));
    assert!(!text.contains("/no/such/path"));
    // The earlier scrape counts as a request to /metrics.
    assert_eq!(requests("/metrics", "GET", "200"), Some(1.0));
}

#[tokio::test]
async fn latency_is_a_histogram_per_endpoint() {
    let server = server();
    let router = server.router();
    pull(&router, ALICE, "notes", None, 10).await;
    pull(&router, ALICE, "notes", None, 10).await;
    let (_, text) = scrape(&server, None).await;
    assert!(
        text.contains("# TYPE fero_http_request_duration_seconds histogram"),
        "{text}"
    );
    let labels = [("endpoint", PULL), ("method", "POST")];
    assert_eq!(
        sample(&text, "fero_http_request_duration_seconds_count", &labels),
        Some(2.0)
    );
    let inf = [("endpoint", PULL), ("method", "POST"), ("le", "+Inf")];
    assert_eq!(
        sample(&text, "fero_http_request_duration_seconds_bucket", &inf),
        Some(2.0)
    );
    let ten_seconds = [("endpoint", PULL), ("method", "POST"), ("le", "10")];
    assert!(
        sample(
            &text,
            "fero_http_request_duration_seconds_bucket",
            &ten_seconds
        )
        .is_some()
    );
    assert!(sample(&text, "fero_http_request_duration_seconds_sum", &labels).is_some());
}

#[tokio::test]
async fn open_change_streams_are_counted_until_they_close() {
    let server = server();
    let open = |text: &str| sample(text, "fero_change_streams_open", &[]);
    assert_eq!(open(&scrape(&server, None).await.1), Some(0.0));
    let stream = |_: ()| {
        Request::get("/v1/changes")
            .header("authorization", format!("Bearer {ALICE}"))
            .body(Body::empty())
            .unwrap()
    };
    let first = server.router().oneshot(stream(())).await.unwrap();
    let second = server.router().oneshot(stream(())).await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(open(&scrape(&server, None).await.1), Some(2.0));
    drop(first);
    assert_eq!(open(&scrape(&server, None).await.1), Some(1.0));
    drop(second);
    assert_eq!(open(&scrape(&server, None).await.1), Some(0.0));
}

#[tokio::test]
async fn each_server_keeps_its_own_figures() {
    let busy = server();
    let idle = server();
    push(
        &busy.router(),
        ALICE,
        "notes",
        vec![change("a", None, "phone", 1, json!(1))],
    )
    .await;
    let accepted = |text: &str| sample(text, "fero_push_changes_total", &[("outcome", "accepted")]);
    assert_eq!(accepted(&scrape(&busy, None).await.1), Some(1.0));
    assert_eq!(accepted(&scrape(&idle, None).await.1), Some(0.0));
}

#[tokio::test]
async fn a_metrics_token_guards_the_endpoint() {
    let server = Server::builder()
        .storage(SqliteStorage::open_in_memory().unwrap())
        .tokens(tokens())
        .metrics_token("scraper-secret")
        .build()
        .unwrap();
    let (status, body) = scrape(&server, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body.contains("metrics token"), "{body}");
    // A user's token is not the metrics token.
    assert_eq!(
        scrape(&server, Some(ALICE)).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (status, text) = scrape(&server, Some("scraper-secret")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(text.contains("fero_push_changes_total"));
}
