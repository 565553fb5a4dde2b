//! `GET /readyz`: 503 until the storage answers a ping and from the moment shutdown begins,
//! while `/healthz` (liveness) stays 200; `serve` keeps serving through the drain period.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use axum::http::{Method, StatusCode};
use fero::{SyncId, Timestamp};
use fero_protocol::{Change, Digest};
use fero_server::{
    FeedPosition, PruneReport, PullPage, PurgeReport, PushOutcome, SeedReport, SeedRow, Server,
    SqliteStorage, Storage, StorageError, UserId,
};
use support::{Running, call, tokens};

/// SQLite whose ping fails while `reachable` is false, as a database that is not up yet.
#[derive(Debug)]
struct Unreachable {
    inner: SqliteStorage,
    reachable: Arc<AtomicBool>,
}

#[async_trait]
impl Storage for Unreachable {
    async fn pull_from(
        &self,
        owner: &UserId,
        collection: &str,
        from: FeedPosition,
        limit: u32,
    ) -> Result<PullPage, StorageError> {
        self.inner.pull_from(owner, collection, from, limit).await
    }
    async fn push(
        &self,
        owner: &UserId,
        collection: &str,
        changes: Vec<Change>,
    ) -> Result<PushOutcome, StorageError> {
        self.inner.push(owner, collection, changes).await
    }
    async fn digest(&self, owner: &UserId, collection: &str) -> Result<Digest, StorageError> {
        self.inner.digest(owner, collection).await
    }
    async fn content_digest(
        &self,
        owner: &UserId,
        collection: &str,
    ) -> Result<fero_protocol::ContentDigest, StorageError> {
        self.inner.content_digest(owner, collection).await
    }
    async fn purge_tombstones(&self, before: SyncId) -> Result<PurgeReport, StorageError> {
        self.inner.purge_tombstones(before).await
    }
    async fn purge_tombstones_deleted_before(
        &self,
        deleted_before: Timestamp,
    ) -> Result<PurgeReport, StorageError> {
        self.inner
            .purge_tombstones_deleted_before(deleted_before)
            .await
    }
    async fn prune_mutations(&self, before: Timestamp) -> Result<PruneReport, StorageError> {
        self.inner.prune_mutations(before).await
    }
    async fn seed(
        &self,
        owner: &UserId,
        collection: &str,
        rows: Vec<SeedRow>,
    ) -> Result<SeedReport, StorageError> {
        self.inner.seed(owner, collection, rows).await
    }
    async fn mark_restored(&self) -> Result<u64, StorageError> {
        self.inner.mark_restored().await
    }
    async fn ping(&self) -> Result<(), StorageError> {
        if self.reachable.load(Ordering::SeqCst) {
            self.inner.ping().await
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
        .storage(Unreachable {
            inner: SqliteStorage::open_in_memory().unwrap(),
            reachable: Arc::clone(&reachable),
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
