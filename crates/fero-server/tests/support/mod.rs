//! Helpers shared by the integration tests: a server on in-memory SQLite with two users, an
//! in-process caller (`router()` + `oneshot`) and a plain HTTP/1 client for loopback tests.
#![allow(dead_code, unreachable_pub)]

pub mod hooked;
pub mod postgres;

use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use fero::Version;
use fero_protocol::{Change, ChangeOutcome, ChangeResult, MutationId};
use fero_server::{ServeError, Server, SqliteStorage, Tokens};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tower::ServiceExt;

pub const ALICE: &str = "alices-token";
pub const BOB: &str = "bobs-token";

pub fn tokens() -> Tokens {
    Tokens::from_pairs([(ALICE, "alice"), (BOB, "bob")]).unwrap()
}

/// A server on a fresh in-memory database, users `alice` and `bob`.
pub fn server() -> Server {
    Server::builder()
        .storage(SqliteStorage::open_in_memory().unwrap())
        .tokens(tokens())
        .build()
        .unwrap()
}

/// A change with mutation id `device/seq`.
pub fn change(id: &str, base: Option<u64>, device: &str, seq: u64, data: Value) -> Change {
    Change {
        id: id.to_owned(),
        base_version: base.map(Version),
        mutation_id: MutationId::new(device, seq),
        deleted: false,
        data,
    }
}

/// A deletion of `id` on `base`.
pub fn deletion(id: &str, base: u64, device: &str, seq: u64) -> Change {
    Change {
        deleted: true,
        ..change(id, Some(base), device, seq, Value::Null)
    }
}

/// The answer to one in-process request.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Answer {
    /// The `error.code` of a JSON error body, checking the body's shape on the way.
    #[track_caller]
    pub fn error_code(&self) -> &str {
        let content_type = self
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok());
        assert_eq!(
            content_type,
            Some("application/json"),
            "error bodies are JSON: {self:?}"
        );
        let message = self.body["error"]["message"].as_str();
        assert!(
            message.is_some_and(|m| !m.is_empty()),
            "error body has a message: {self:?}"
        );
        self.body["error"]["code"]
            .as_str()
            .expect("error body has a code")
    }
}

/// Sends one request through the router; `body` is sent as is (it may be invalid JSON).
pub async fn call_raw(
    router: &Router,
    method: Method,
    uri: &str,
    token: Option<&str>,
    body: impl Into<Body>,
) -> Answer {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let request = request
        .header("content-type", "application/json")
        .body(body.into())
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("{status} body is not JSON ({e}): {bytes:?}"))
    };
    Answer {
        status,
        headers,
        body,
    }
}

/// `call_raw` with a JSON body.
pub async fn call(
    router: &Router,
    method: Method,
    uri: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Answer {
    let body = body.map_or_else(Body::empty, |value| Body::from(value.to_string()));
    call_raw(router, method, uri, token, body).await
}

/// Pushes `changes` to `collection` as the user of `token`; asserts 200 and returns the results.
pub async fn push(
    router: &Router,
    token: &str,
    collection: &str,
    changes: Vec<Change>,
) -> Vec<ChangeResult> {
    let body = serde_json::json!({ "changes": changes });
    let answer = call(
        router,
        Method::POST,
        &format!("/v1/collections/{collection}/push"),
        Some(token),
        Some(body),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "push failed: {answer:?}");
    serde_json::from_value::<fero_protocol::PushResponse>(answer.body)
        .unwrap()
        .results
}

/// `(version, sync_id)` of an accepted result.
#[track_caller]
pub fn accepted(result: &ChangeResult) -> (u64, u64) {
    match &result.outcome {
        ChangeOutcome::Accepted { version, sync_id } => (version.0, sync_id.0),
        other => panic!("expected accepted, got {other:?}"),
    }
}

/// Pulls one page with `POST`; asserts 200.
pub async fn pull(
    router: &Router,
    token: &str,
    collection: &str,
    checkpoint: Option<&fero::SyncCheckpoint>,
    limit: u32,
) -> fero_protocol::PullResponse {
    let body = serde_json::json!({ "checkpoint": checkpoint, "limit": limit });
    let answer = call(
        router,
        Method::POST,
        &format!("/v1/collections/{collection}/pull"),
        Some(token),
        Some(body),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "pull failed: {answer:?}");
    serde_json::from_value(answer.body).unwrap()
}

/// A server serving on 127.0.0.1, port 0.
pub struct Running {
    pub addr: SocketAddr,
    pub stop: Option<oneshot::Sender<()>>,
    pub serving: JoinHandle<Result<(), ServeError>>,
}

impl Running {
    pub async fn start(server: Server) -> Running {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = tokio::spawn(server.serve(listener, async move {
            let _ = stopped.await;
        }));
        Running {
            addr,
            stop: Some(stop),
            serving,
        }
    }

    /// Signals shutdown.
    pub fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Sends `request` over a new loopback HTTP/1 connection; the response body streams.
pub async fn send(addr: SocketAddr, request: Request<Full<Bytes>>) -> hyper::Response<Incoming> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    sender.send_request(request).await.unwrap()
}

/// A request to `addr` with a bearer token and an optional JSON body.
pub fn request(
    method: Method,
    addr: SocketAddr,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("host", addr.to_string())
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(
            body.map(|b| b.to_string()).unwrap_or_default(),
        )))
        .unwrap()
}

/// The whole body of a response.
pub async fn body_bytes(response: hyper::Response<Incoming>) -> Bytes {
    response.into_body().collect().await.unwrap().to_bytes()
}

/// One Server-Sent Event.
#[derive(Debug, PartialEq, Eq)]
pub struct SseEvent {
    pub event: String,
    pub data: String,
}

/// Reads a streaming `text/event-stream` body event by event (comments are skipped).
pub struct SseReader {
    body: Incoming,
    buffer: String,
}

impl SseReader {
    pub fn new(response: hyper::Response<Incoming>) -> SseReader {
        SseReader {
            body: response.into_body(),
            buffer: String::new(),
        }
    }

    /// The next event, or `None` when the stream ended.
    pub async fn next_event(&mut self) -> Option<SseEvent> {
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = SseEvent {
                    event: String::new(),
                    data: String::new(),
                };
                for line in block.lines() {
                    if let Some(name) = line.strip_prefix("event:") {
                        event.event = name.trim().to_owned();
                    } else if let Some(data) = line.strip_prefix("data:") {
                        event.data.push_str(data.trim());
                    }
                }
                if !event.event.is_empty() || !event.data.is_empty() {
                    return Some(event);
                }
            }
            let frame = self.body.frame().await?.ok()?;
            if let Ok(data) = frame.into_data() {
                self.buffer.push_str(&String::from_utf8_lossy(&data));
            }
        }
    }

    /// Drains the stream to its end; `true` when it ended cleanly.
    pub async fn ends(mut self) -> bool {
        loop {
            match self.body.frame().await {
                None => return true,
                Some(Ok(_)) => {}
                Some(Err(_)) => return false,
            }
        }
    }
}

/// The deadline for real loopback I/O in tests: far above any honest wait, so only a hang trips
/// it.
pub const IO_DEADLINE: std::time::Duration = std::time::Duration::from_secs(20);

/// The latest state the server accepted per id, from the writers' own answers:
/// `(version, deleted)`. Shared by the concurrent-writer tests of both backends.
pub type Truth = std::collections::HashMap<String, (u64, bool)>;

/// One writer of the concurrent-writer tests: pushes random batches and keeps what it believes
/// the server holds (corrected by conflicts).
pub struct Writer {
    writer: u64,
    device: String,
    seq: u64,
    known: std::collections::HashMap<String, Option<u64>>,
}

impl Writer {
    pub fn new(writer: u64) -> Self {
        Writer {
            writer,
            device: format!("writer-{writer}"),
            seq: 0,
            known: std::collections::HashMap::new(),
        }
    }

    /// One to three changes on random ids among `ids`; a row this writer knows is deleted one
    /// time in `delete_one_in`.
    pub fn changes(
        &mut self,
        random: &mut fero::SeededRandom,
        ids: u64,
        delete_one_in: u64,
    ) -> Vec<Change> {
        use fero::RandomSource;
        let mut changes: Vec<Change> = Vec::new();
        for _ in 0..=(random.next_u64() % 3) {
            let id = format!("item-{:02}", random.next_u64() % ids);
            if changes.iter().any(|c| c.id == id) {
                continue;
            }
            self.seq += 1;
            let seq = self.seq;
            let base = self.known.get(&id).copied().flatten();
            let delete = base.is_some() && random.next_u64() % delete_one_in == 0;
            changes.push(match base {
                Some(version) if delete => deletion(&id, version, &self.device, seq),
                base => change(
                    &id,
                    base,
                    &self.device,
                    seq,
                    serde_json::json!({ "by": self.writer, "seq": seq }),
                ),
            });
        }
        changes
    }

    /// Pushes `changes` through `router` and records the answers: accepted versions into
    /// `truth` (the highest wins), conflicts into what this writer knows.
    pub async fn push(
        &mut self,
        router: &Router,
        changes: Vec<Change>,
        truth: &std::sync::Mutex<Truth>,
    ) {
        let deletions: Vec<bool> = changes.iter().map(|c| c.deleted).collect();
        let results = push(router, ALICE, "items", changes).await;
        assert_eq!(results.len(), deletions.len(), "one result per change");
        for (result, deleted) in results.into_iter().zip(deletions) {
            match result.outcome {
                ChangeOutcome::Accepted { version, .. } => {
                    self.known.insert(result.id.clone(), Some(version.0));
                    let mut truth = truth.lock().unwrap();
                    let entry = truth.entry(result.id).or_insert((0, false));
                    if version.0 > entry.0 {
                        *entry = (version.0, deleted);
                    }
                }
                ChangeOutcome::Conflict { server } => {
                    self.known.insert(result.id, server.map(|d| d.version.0));
                }
                other => panic!("unexpected outcome {other:?}"),
            }
        }
    }
}

/// A storage backend an HTTP test runs on.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    /// In-memory SQLite.
    Sqlite,
    /// A fresh PostgreSQL database (`FERO_TEST_POSTGRES`).
    Postgres,
}

/// A server on one backend, users `alice` and `bob`, its storage and retention cut-offs on
/// `clock`; the database lives as long as this.
pub struct OnBackend {
    pub server: Server,
    pub database: Option<postgres::TestDatabase>,
}

/// A server on `backend`; `None` when PostgreSQL tests skip.
pub async fn server_on(
    backend: Backend,
    clock: &fero_server::storage_suite::ManualClock,
) -> Option<OnBackend> {
    let clock = std::sync::Arc::new(clock.clone());
    let builder = Server::builder().tokens(tokens()).clock(clock.clone());
    match backend {
        Backend::Sqlite => Some(OnBackend {
            server: builder
                .storage(SqliteStorage::open_with_clock(":memory:", clock).unwrap())
                .build()
                .unwrap(),
            database: None,
        }),
        Backend::Postgres => {
            let database = postgres::TestDatabase::create("http").await?;
            let storage = fero_server::PostgresStorage::builder(&database.url)
                .pool_size(2)
                .clock(clock)
                .connect()
                .await
                .unwrap();
            Some(OnBackend {
                server: builder.storage(storage).build().unwrap(),
                database: Some(database),
            })
        }
    }
}
