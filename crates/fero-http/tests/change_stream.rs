//! The change stream against a stub Server-Sent Events endpoint: notices split across chunks,
//! keep-alive comments, reconnects after a drop (with `Last-Event-ID`), the idle timeout,
//! unreadable notices, refusals that end the stream; and `LiveTriggers` turning it all into
//! trigger calls.

mod support;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use fero::{FeatureKey, FixedBackoff, SyncId};
use fero_http::{ChangeStream, HttpRemote, LiveTriggers, StreamEvent};
use fero_protocol::{ChangeNotice, RemoteErrorKind};
use futures::{Stream, StreamExt};
use support::{json, serve};

/// What one connection of the stub sends.
#[derive(Clone)]
enum Script {
    /// These chunks, then the connection closes.
    ThenClose(Vec<&'static str>),
    /// These chunks, then the connection stays open and silent.
    ThenHold(Vec<&'static str>),
    /// A non-stream answer.
    Status(u16),
    /// A JSON answer with status 200.
    NotAStream,
}

/// A stub `/v1/changes` that plays one script per connection (the last one repeats) and records
/// each connection's `Last-Event-ID`.
async fn stub(scripts: Vec<Script>) -> (std::net::SocketAddr, Arc<Mutex<Vec<Option<String>>>>) {
    let seen: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
    let log = seen.clone();
    let handler = move |headers: HeaderMap| {
        let mut log = log.lock().unwrap();
        log.push(
            headers
                .get("last-event-id")
                .map(|v| v.to_str().unwrap().to_owned()),
        );
        let script = scripts[(log.len() - 1).min(scripts.len() - 1)].clone();
        async move { respond(script) }
    };
    let addr = serve(Router::new().route("/v1/changes", get(handler))).await;
    (addr, seen)
}

fn respond(script: Script) -> Response {
    let stream_of = |chunks: Vec<&'static str>| {
        futures::stream::iter(
            chunks
                .into_iter()
                .map(|c| Ok::<_, Infallible>(Bytes::from_static(c.as_bytes()))),
        )
    };
    let body = match script {
        Script::ThenClose(chunks) => Body::from_stream(stream_of(chunks)),
        Script::ThenHold(chunks) => {
            Body::from_stream(stream_of(chunks).chain(futures::stream::pending()))
        }
        Script::Status(status) => {
            return json(
                status,
                serde_json::json!({ "error": { "code": "unauthorized", "message": "who are you" } }),
            );
        }
        Script::NotAStream => return json(200, serde_json::json!({ "hello": "world" })),
    };
    Response::builder()
        .status(200)
        .header("content-type", "text/event-stream")
        .body(body)
        .unwrap()
}

fn quick_remote(addr: std::net::SocketAddr) -> HttpRemote {
    HttpRemote::builder(format!("http://{addr}"), "token")
        .reconnect_backoff(FixedBackoff::new(Duration::from_millis(10), 3))
        .stream_idle_timeout(Duration::from_secs(10))
        .seed(5)
        .build()
        .unwrap()
}

fn notice(collection: &str, sync_id: u64) -> StreamEvent {
    StreamEvent::Change(ChangeNotice {
        collection: collection.into(),
        sync_id: SyncId(sync_id),
    })
}

/// The next item, within a bounded wait (the stub answers at once; the bound only keeps a
/// broken build from hanging).
async fn next<S: Stream + Unpin>(stream: &mut S) -> Option<S::Item> {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("the stream produced nothing within 10 s")
}

async fn expect_disconnected(stream: &mut ChangeStream, kind: RemoteErrorKind) -> String {
    match next(stream).await {
        Some(Ok(StreamEvent::Disconnected { error, .. })) => {
            assert_eq!(error.kind, kind, "{error}");
            error.message
        }
        other => panic!("expected a disconnect, got {other:?}"),
    }
}

#[tokio::test]
async fn notices_split_across_chunks_arrive_and_a_dropped_stream_reconnects_with_last_event_id() {
    let (addr, seen) = stub(vec![
        Script::ThenClose(vec![
            ": keep-alive\n\n",
            "event: change\nid: 1\ndata: {\"collection\":\"con",
            "tacts\",\"sync_id\":5}\r\n\r",
            "\nevent: change\nid: 2\ndata: {\"collection\":\"notes\",\"sync_id\":6}\n\n",
            "event: other\ndata: ignored\n\n",
        ]),
        Script::ThenHold(vec![
            "event: change\nid: 3\ndata: {\"collection\":\"contacts\",\"sync_id\":7}\n\n",
        ]),
    ])
    .await;
    let remote = quick_remote(addr);
    let mut stream = remote.changes();
    assert_eq!(
        next(&mut stream).await.unwrap().unwrap(),
        StreamEvent::Connected
    );
    assert_eq!(
        next(&mut stream).await.unwrap().unwrap(),
        notice("contacts", 5)
    );
    assert_eq!(
        next(&mut stream).await.unwrap().unwrap(),
        notice("notes", 6)
    );
    let why = expect_disconnected(&mut stream, RemoteErrorKind::Transient).await;
    assert!(why.contains("closed the connection"), "{why}");
    assert_eq!(
        next(&mut stream).await.unwrap().unwrap(),
        StreamEvent::Connected
    );
    assert_eq!(
        next(&mut stream).await.unwrap().unwrap(),
        notice("contacts", 7)
    );

    assert_eq!(*seen.lock().unwrap(), vec![None, Some("2".to_owned())]);
    let stats = remote.stats();
    assert_eq!(stats.stream_connects, 2);
    assert_eq!(stats.requests, 2);
    assert!(stats.bytes_received > 100, "{stats:?}");
}

#[tokio::test]
async fn a_silent_connection_is_replaced_after_the_idle_timeout() {
    let (addr, seen) = stub(vec![Script::ThenHold(vec![])]).await;
    let remote = HttpRemote::builder(format!("http://{addr}"), "token")
        .reconnect_backoff(FixedBackoff::new(Duration::from_millis(10), 5))
        .stream_idle_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let mut stream = remote.changes();
    assert_eq!(
        next(&mut stream).await.unwrap().unwrap(),
        StreamEvent::Connected
    );
    let why = expect_disconnected(&mut stream, RemoteErrorKind::Transient).await;
    assert!(why.contains("nothing arrived for 200ms"), "{why}");
    assert_eq!(
        next(&mut stream).await.unwrap().unwrap(),
        StreamEvent::Connected
    );
    assert_eq!(seen.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn an_unreadable_notice_drops_the_connection_so_the_reconnect_catches_up() {
    let (addr, _) = stub(vec![
        Script::ThenHold(vec!["event: change\ndata: {\"collection\":\n\n"]),
        Script::ThenHold(vec![]),
    ])
    .await;
    let mut stream = quick_remote(addr).changes();
    assert_eq!(
        next(&mut stream).await.unwrap().unwrap(),
        StreamEvent::Connected
    );
    let why = expect_disconnected(&mut stream, RemoteErrorKind::Protocol).await;
    assert!(why.contains("does not parse"), "{why}");
    assert_eq!(
        next(&mut stream).await.unwrap().unwrap(),
        StreamEvent::Connected
    );
}

#[tokio::test]
async fn a_refused_token_ends_the_stream_with_unauthorized() {
    let (addr, seen) = stub(vec![Script::Status(401)]).await;
    let mut stream = quick_remote(addr).changes();
    let error = next(&mut stream).await.unwrap().unwrap_err();
    assert_eq!(error.kind, RemoteErrorKind::Unauthorized, "{error}");
    assert!(error.message.contains("who are you"), "{error}");
    assert!(next(&mut stream).await.is_none());
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "no reconnect after a refusal"
    );
}

#[tokio::test]
async fn an_answer_that_is_not_an_event_stream_ends_the_stream() {
    let (addr, _) = stub(vec![Script::NotAStream]).await;
    let mut stream = quick_remote(addr).changes();
    let error = next(&mut stream).await.unwrap().unwrap_err();
    assert_eq!(error.kind, RemoteErrorKind::Protocol, "{error}");
    assert!(error.message.contains("text/event-stream"), "{error}");
}

#[tokio::test]
async fn an_unavailable_server_is_retried_until_the_backoff_gives_up() {
    let (addr, seen) = stub(vec![Script::Status(503)]).await;
    let mut stream = quick_remote(addr).changes();
    expect_disconnected(&mut stream, RemoteErrorKind::Transient).await;
    expect_disconnected(&mut stream, RemoteErrorKind::Transient).await;
    let error = next(&mut stream).await.unwrap().unwrap_err();
    assert!(
        error.message.contains("gave up after 3 attempt(s)"),
        "{error}"
    );
    assert!(next(&mut stream).await.is_none());
    assert_eq!(seen.lock().unwrap().len(), 3);
}

/// A trigger that records the keys it is called with.
fn recorder() -> (
    impl Fn(&FeatureKey) -> fero::Result<()> + Send + Sync + 'static,
    tokio::sync::mpsc::UnboundedReceiver<FeatureKey>,
) {
    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
    let trigger = move |key: &FeatureKey| {
        sender.send(key.clone()).ok();
        Ok(())
    };
    (trigger, receiver)
}

async fn keys(
    receiver: &mut tokio::sync::mpsc::UnboundedReceiver<FeatureKey>,
    n: usize,
) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..n {
        let key = tokio::time::timeout(Duration::from_secs(10), receiver.recv())
            .await
            .expect("no trigger within 10 s")
            .expect("the trigger was dropped");
        out.push(key.to_string());
    }
    out
}

#[tokio::test]
async fn live_triggers_sync_everything_on_connect_then_only_the_changed_collections() {
    let (addr, _) = stub(vec![Script::ThenHold(vec![
        "event: change\ndata: {\"collection\":\"contacts\",\"sync_id\":1}\n\n",
        "event: change\ndata: {\"collection\":\"unfollowed\",\"sync_id\":2}\n\n",
        "event: change\ndata: {\"collection\":\"notes\",\"sync_id\":3}\n\n",
    ])])
    .await;
    let (trigger, mut triggered) = recorder();
    let live = LiveTriggers::spawn(
        quick_remote(addr).changes(),
        [
            ("contacts", "contacts"),
            ("notes", "notes-a"),
            ("notes", "notes-b"),
        ],
        trigger,
    );
    assert_eq!(
        keys(&mut triggered, 6).await,
        [
            "contacts", "notes-a", "notes-b", "contacts", "notes-a", "notes-b"
        ]
    );
    live.stop();
    assert_eq!(live.finished().await, Ok(()));
    assert!(
        triggered.recv().await.is_none(),
        "the task dropped its trigger"
    );
}

#[tokio::test]
async fn live_triggers_stop_when_the_engine_is_disposed() {
    let (addr, _) = stub(vec![Script::ThenHold(vec![])]).await;
    let calls = Arc::new(Mutex::new(0));
    let counted = calls.clone();
    let live = LiveTriggers::spawn(
        quick_remote(addr).changes(),
        [("contacts", "contacts")],
        move |_: &FeatureKey| {
            *counted.lock().unwrap() += 1;
            Err(fero::Error::Disposed)
        },
    );
    tokio::time::timeout(Duration::from_secs(10), live.finished())
        .await
        .expect("the task did not stop")
        .unwrap();
    assert_eq!(*calls.lock().unwrap(), 1);
}

#[tokio::test]
async fn live_triggers_report_the_error_that_ended_the_stream() {
    let (addr, _) = stub(vec![Script::Status(403)]).await;
    let (trigger, _triggered) = recorder();
    let live = LiveTriggers::spawn(
        quick_remote(addr).changes(),
        [("contacts", "contacts")],
        trigger,
    );
    let error = live.finished().await.unwrap_err();
    assert_eq!(error.kind, RemoteErrorKind::Unauthorized, "{error}");
}

#[tokio::test]
async fn dropping_live_triggers_closes_the_connection() {
    let (addr, _) = stub(vec![Script::ThenHold(vec![])]).await;
    let (trigger, mut triggered) = recorder();
    let live = LiveTriggers::spawn(
        quick_remote(addr).changes(),
        [("contacts", "contacts")],
        trigger,
    );
    assert_eq!(keys(&mut triggered, 1).await, ["contacts"]);
    drop(live);
    // The task ends and drops its trigger, which closes the channel.
    let closed = tokio::time::timeout(Duration::from_secs(10), triggered.recv()).await;
    assert_eq!(closed.expect("the task kept running after the drop"), None);
}
