//! `GET /readyz`: 503 until the storage answers a ping and from the moment shutdown begins,
//! while `/healthz` (liveness) stays 200; `serve` keeps serving through the drain period.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::http::{Method, StatusCode};
use fero_server::{Server, SqliteStorage, StorageError};
use support::hooked::{Hooked, Hooks};
use support::{Running, call, tokens};

/// A ping that fails while `reachable` is false, as a database that is not up yet.
#[derive(Debug)]
struct Unreachable {
    reachable: Arc<AtomicBool>,
}

impl Hooks for Unreachable {
    fn before_ping(&self) -> Result<(), StorageError> {
        if self.reachable.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(StorageError::Connect {
                target: "test@127.0.0.1:1/none".into(),
                source: "connection refused".into(),
            })
        }
    }
}

#[tokio::test]
async fn readyz_is_503_until_the_storage_answers() {
    let reachable = Arc::new(AtomicBool::new(false));
    let server = Server::builder()
        .storage(Hooked {
            inner: SqliteStorage::open_in_memory().unwrap(),
            hooks: Unreachable {
                reachable: Arc::clone(&reachable),
            },
        })
        .tokens(tokens())
        .build()
        .unwrap();
    let router = server.router();
    let answer = call(&router, Method::GET, "/readyz", None, None).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.body["status"], "storage_unavailable");
    assert!(
        answer.body["error"]
            .as_str()
            .is_some_and(|e| e.contains("connection refused"))
    );
    // Liveness does not depend on the database.
    let health = call(&router, Method::GET, "/healthz", None, None).await;
    assert_eq!(health.status, StatusCode::OK);
    let metrics = server.metrics().render();
    assert!(
        metrics.contains("fero_storage_errors_total{operation=\"ping\"} 1"),
        "{metrics}"
    );

    reachable.store(true, Ordering::SeqCst);
    let answer = call(&router, Method::GET, "/readyz", None, None).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body["status"], "ready");
}

#[tokio::test]
async fn readyz_is_503_once_draining_starts() {
    let server = support::server();
    let router = server.router();
    assert_eq!(
        call(&router, Method::GET, "/readyz", None, None)
            .await
            .status,
        StatusCode::OK
    );
    server.start_draining();
    let answer = call(&router, Method::GET, "/readyz", None, None).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.body["status"], "draining");
    assert_eq!(
        call(&router, Method::GET, "/healthz", None, None)
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test(start_paused = true)]
async fn serve_keeps_serving_through_the_drain_period_with_readyz_at_503() {
    let server = Server::builder()
        .storage(SqliteStorage::open_in_memory().unwrap())
        .tokens(tokens())
        .drain_period(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut running = Running::start(server.clone()).await;
    assert!(!server.is_draining());
    running.shutdown();
    server.draining().await;
    let answer = call(&server.router(), Method::GET, "/readyz", None, None).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.body["status"], "draining");

    tokio::time::advance(Duration::from_secs(29)).await;
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(
        !running.serving.is_finished(),
        "the server stopped before its drain period ended"
    );
    tokio::time::advance(Duration::from_secs(2)).await;
    running.serving.await.unwrap().unwrap();
}
