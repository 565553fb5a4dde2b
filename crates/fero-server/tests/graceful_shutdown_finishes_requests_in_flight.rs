//! Graceful shutdown over a real loopback port: a push in flight when shutdown begins still
//! gets its full answer and its write is kept; open change streams end so shutdown does not
//! wait on them; then the port is closed.

mod support;

use std::sync::Mutex;

use async_trait::async_trait;
use axum::http::{Method, StatusCode};
use fero::SyncId;
use fero_protocol::PushResponse;
use fero_server::{Server, SqliteStorage, Storage, UserId};
use serde_json::json;
use support::hooked::{Hooked, Hooks};
use support::{
    ALICE, IO_DEADLINE, Running, SseReader, accepted, body_bytes, change, request, send,
};
use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout;

/// Pushes that wait at a gate: the test knows a request is in flight and decides when it may
/// finish.
#[derive(Debug)]
struct Gate {
    entered: mpsc::UnboundedSender<()>,
    release: Mutex<Option<oneshot::Receiver<()>>>,
}

#[async_trait]
impl Hooks for Gate {
    async fn before_push(&self) {
        let release = self.release.lock().unwrap().take();
        self.entered.send(()).unwrap();
        if let Some(release) = release {
            release.await.unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_in_flight_at_shutdown_is_answered_and_kept() {
    let sqlite = SqliteStorage::open_in_memory().unwrap();
    let (entered_tx, mut entered) = mpsc::unbounded_channel();
    let (release, release_rx) = oneshot::channel();
    let storage = Hooked {
        inner: sqlite.clone(),
        hooks: Gate {
            entered: entered_tx,
            release: Mutex::new(Some(release_rx)),
        },
    };
    let server = Server::builder()
        .storage(storage)
        .tokens(support::tokens())
        .build()
        .unwrap();
    let mut running = Running::start(server).await;
    let addr = running.addr;

    let stream = send(addr, request(Method::GET, addr, "/v1/changes", ALICE, None)).await;
    assert_eq!(stream.status(), StatusCode::OK);
    let stream = SseReader::new(stream);

    let body =
        json!({ "changes": [change("late", None, "phone", 1, json!("written during shutdown"))] });
    let in_flight = tokio::spawn(send(
        addr,
        request(
            Method::POST,
            addr,
            "/v1/collections/notes/push",
            ALICE,
            Some(body),
        ),
    ));
    timeout(IO_DEADLINE, entered.recv())
        .await
        .expect("the push never reached storage")
        .unwrap();

    running.shutdown();
    // The change stream ends when shutdown has begun; from then on only the push holds serve.
    assert!(
        timeout(IO_DEADLINE, stream.ends())
            .await
            .expect("the change stream did not end at shutdown")
    );
    assert!(
        !running.serving.is_finished(),
        "serve must wait for the push in flight"
    );
    release.send(()).unwrap();

    let response = timeout(IO_DEADLINE, in_flight)
        .await
        .expect("push answer hung")
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let answer: PushResponse = serde_json::from_slice(&body_bytes(response).await).unwrap();
    assert_eq!(accepted(&answer.results[0]), (1, 1));
    timeout(IO_DEADLINE, &mut running.serving)
        .await
        .expect("shutdown hung")
        .unwrap()
        .unwrap();

    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the port is closed after shutdown"
    );
    let page = sqlite
        .pull(&UserId::new("alice"), "notes", SyncId(0), 10)
        .await
        .unwrap();
    assert_eq!(
        page.items.len(),
        1,
        "the write of the request in flight is kept"
    );
}
