//! [`ServerMetrics`]: what `GET /metrics` shows, in Prometheus text format.
//!
//! Figures are recorded through the [`metrics`] facade into a Prometheus recorder that belongs to
//! one [`Server`] (never the process-wide recorder), so two servers in one process,
//! such as parallel tests, keep separate figures. The text is rendered by
//! `metrics-exporter-prometheus`.
//!
//! | metric | kind | labels | what |
//! |---|---|---|---|
//! | `fero_http_requests_total` | counter | `endpoint`, `method`, `status` | answered requests |
//! | `fero_http_request_duration_seconds` | histogram | `endpoint`, `method` | time to the response head |
//! | `fero_push_changes_total` | counter | `outcome` (`accepted`, `conflict`, `rejected`) | pushed changes by answer |
//! | `fero_pull_rows_total` | counter | | rows sent in pull pages |
//! | `fero_change_streams_open` | gauge | | open `GET /v1/changes` streams |
//! | `fero_storage_errors_total` | counter | `operation` | storage calls that failed (`ResyncRequired` excluded) |
//! | `fero_storage_pool_connections` | gauge | `state` (`in_use`, `idle`, `max`) | PostgreSQL connection pool, read at scrape time |

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics::Recorder;
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

use crate::api_error::ApiError;
use crate::error::StorageError;
use crate::server::Server;
use crate::storage::PoolUse;

/// Buckets of the request latency histogram, in seconds: 1 ms to 10 s.
const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// Requests answered, by `endpoint`, `method` and `status`.
pub const REQUESTS: &str = "fero_http_requests_total";
/// Time to the response head, by `endpoint` and `method` (a histogram, in seconds).
pub const REQUEST_DURATION: &str = "fero_http_request_duration_seconds";
/// Pushed changes, by `outcome`: `accepted`, `conflict` or `rejected`.
pub const PUSH_CHANGES: &str = "fero_push_changes_total";
/// Rows sent in pull pages.
pub const PULL_ROWS: &str = "fero_pull_rows_total";
/// Open change streams (`GET /v1/changes`).
pub const CHANGE_STREAMS_OPEN: &str = "fero_change_streams_open";
/// Storage calls that failed, by `operation` (`pull`, `push`, `digest`, `ping`).
pub const STORAGE_ERRORS: &str = "fero_storage_errors_total";
/// The storage's connection pool, by `state`: `in_use`, `idle`, `max`.
pub const POOL_CONNECTIONS: &str = "fero_storage_pool_connections";

/// One server's metrics: a Prometheus recorder of its own and its renderer.
///
/// Cheap to clone (an `Arc` inside).
///
/// # Examples
/// ```
/// use fero_server::{Server, SqliteStorage, Tokens};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let server = Server::builder()
///     .storage(SqliteStorage::open_in_memory()?)
///     .tokens(Tokens::parse_list("secret=alice")?)
///     .build()?;
/// server.metrics().record_pulled_rows(3);
/// assert!(server.metrics().render().contains("fero_pull_rows_total 3"));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ServerMetrics {
    recorder: Arc<PrometheusRecorder>,
    handle: PrometheusHandle,
}

impl std::fmt::Debug for ServerMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerMetrics").finish_non_exhaustive()
    }
}

impl Default for ServerMetrics {
    fn default() -> Self {
        ServerMetrics::new()
    }
}

impl ServerMetrics {
    /// A recorder with nothing recorded yet, every metric described.
    pub fn new() -> Self {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(REQUEST_DURATION.to_owned()), &LATENCY_BUCKETS)
            // The buckets are a constant, non-empty list: this cannot fail; fall back to the
            // builder's summaries if it ever did.
            .unwrap_or_else(|_| PrometheusBuilder::new())
            .build_recorder();
        let handle = recorder.handle();
        let metrics = ServerMetrics {
            recorder: Arc::new(recorder),
            handle,
        };
        metrics.with(|| {
            metrics::describe_counter!(REQUESTS, "HTTP requests answered");
            metrics::describe_histogram!(
                REQUEST_DURATION,
                metrics::Unit::Seconds,
                "Time from a request's arrival to its response head"
            );
            metrics::describe_counter!(PUSH_CHANGES, "Pushed changes by outcome");
            metrics::describe_counter!(PULL_ROWS, "Rows sent in pull pages");
            metrics::describe_gauge!(CHANGE_STREAMS_OPEN, "Open GET /v1/changes streams");
            metrics::describe_counter!(STORAGE_ERRORS, "Storage calls that failed");
            metrics::describe_gauge!(POOL_CONNECTIONS, "Storage connection pool use");
            // Present from the start, so a dashboard shows 0 rather than no data.
            metrics::gauge!(CHANGE_STREAMS_OPEN).set(0.0);
            metrics::counter!(PULL_ROWS).absolute(0);
            for outcome in ["accepted", "conflict", "rejected"] {
                metrics::counter!(PUSH_CHANGES, "outcome" => outcome).absolute(0);
            }
        });
        metrics
    }

    /// Runs `record` with this server's recorder as the current one (on this thread only).
    fn with<T>(&self, record: impl FnOnce() -> T) -> T {
        let recorder: &dyn Recorder = &*self.recorder;
        metrics::with_local_recorder(recorder, record)
    }

    /// Counts an answered request and its latency.
    pub fn record_request(&self, endpoint: &str, method: &str, status: u16, seconds: f64) {
        let (endpoint, method) = (endpoint.to_owned(), method.to_owned());
        self.with(|| {
            metrics::counter!(REQUESTS, "endpoint" => endpoint.clone(), "method" => method.clone(),
                "status" => status.to_string())
            .increment(1);
            metrics::histogram!(REQUEST_DURATION, "endpoint" => endpoint, "method" => method)
                .record(seconds);
        });
    }

    /// Counts pushed changes by outcome.
    pub fn record_push(&self, accepted: u64, conflict: u64, rejected: u64) {
        self.with(|| {
            metrics::counter!(PUSH_CHANGES, "outcome" => "accepted").increment(accepted);
            metrics::counter!(PUSH_CHANGES, "outcome" => "conflict").increment(conflict);
            metrics::counter!(PUSH_CHANGES, "outcome" => "rejected").increment(rejected);
        });
    }

    /// Counts rows sent in a pull page.
    pub fn record_pulled_rows(&self, rows: u64) {
        self.with(|| metrics::counter!(PULL_ROWS).increment(rows));
    }

    /// Counts a failed storage call.
    pub fn record_storage_error(&self, operation: &'static str) {
        self.with(|| metrics::counter!(STORAGE_ERRORS, "operation" => operation).increment(1));
    }

    /// A change stream opened; the guard counts it closed when dropped.
    pub fn change_stream_opened(&self) -> ChangeStreamGuard {
        self.with(|| metrics::gauge!(CHANGE_STREAMS_OPEN).increment(1.0));
        ChangeStreamGuard {
            metrics: self.clone(),
        }
    }

    /// Sets the connection pool gauges.
    pub fn record_pool(&self, pool: PoolUse) {
        self.with(|| {
            metrics::gauge!(POOL_CONNECTIONS, "state" => "in_use").set(pool.in_use as f64);
            metrics::gauge!(POOL_CONNECTIONS, "state" => "idle").set(pool.idle as f64);
            metrics::gauge!(POOL_CONNECTIONS, "state" => "max").set(pool.max as f64);
        });
    }

    /// Everything recorded so far, in Prometheus text format (version 0.0.4).
    pub fn render(&self) -> String {
        self.handle.render()
    }
}

/// Counts one change stream as open until dropped; see [`ServerMetrics::change_stream_opened`].
#[derive(Debug)]
pub struct ChangeStreamGuard {
    metrics: ServerMetrics,
}

impl Drop for ChangeStreamGuard {
    fn drop(&mut self) {
        self.metrics
            .with(|| metrics::gauge!(CHANGE_STREAMS_OPEN).decrement(1.0));
    }
}

impl ServerMetrics {
    /// Counts a failed storage call, unless the failure is a client's position behind the purge
    /// horizon (an answer, not a fault).
    pub(crate) fn storage_failed(&self, operation: &'static str, error: &StorageError) {
        if !matches!(error, StorageError::ResyncRequired { .. }) {
            self.record_storage_error(operation);
        }
    }
}

/// Middleware: counts every request by its route (`endpoint`, the route's pattern such as
/// `/v1/collections/{name}/pull`, or `unmatched`: never the raw path, so the label stays
/// bounded), method and status, and records its latency.
pub(crate) async fn record_request(
    State(server): State<Server>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let endpoint = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let method = request.method().clone();
    let response = next.run(request).await;
    server.metrics().record_request(
        &endpoint,
        method.as_str(),
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// `GET /metrics`: the server's figures in Prometheus text format, behind the metrics token
/// when one is set.
pub(crate) async fn metrics_endpoint(State(server): State<Server>, headers: HeaderMap) -> Response {
    if let Some(expected) = server.metrics_token() {
        let sent = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        if sent != Some(expected) {
            return ApiError::unauthorized(
                "GET /metrics needs `Authorization: Bearer <metrics token>` (--metrics-token)",
            )
            .into_response();
        }
    }
    if let Some(pool) = server.storage().pool_use() {
        server.metrics().record_pool(pool);
    }
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        server.metrics().render(),
    )
        .into_response()
}
