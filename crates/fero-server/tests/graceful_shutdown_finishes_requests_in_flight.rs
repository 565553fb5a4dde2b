//! Graceful shutdown over a real loopback port: a push in flight when shutdown begins still
//! gets its full answer and its write is kept; open change streams end so shutdown does not
//! wait on them; then the port is closed.

mod support;

use std::sync::Mutex;

use async_trait::async_trait;
use axum::http::{Method, StatusCode};
use fero::SyncId;
use fero_protocol::{Change, Digest, PushResponse};
use fero_server::{
    FeedPosition, PruneReport, PullPage, PurgeReport, PushOutcome, SeedReport, SeedRow, Server,
    SqliteStorage, Storage, StorageError, UserId,
};
use serde_json::json;
use support::{
    ALICE, IO_DEADLINE, Running, SseReader, accepted, body_bytes, change, request, send,
};
use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout;

/// SQLite storage whose pushes wait at a gate: the test knows a request is in flight and
/// decides when it may finish.
#[derive(Debug)]
struct GatedStorage {
    inner: SqliteStorage,
    entered: mpsc::UnboundedSender<()>,
    release: Mutex<Option<oneshot::Receiver<()>>>,
}

#[async_trait]
impl Storage for GatedStorage {
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
        let release = self.release.lock().unwrap().take();
        self.entered.send(()).unwrap();
        if let Some(release) = release {
            release.await.unwrap();
        }
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
        deleted_before: fero::Timestamp,
    ) -> Result<PurgeReport, StorageError> {
        self.inner
            .purge_tombstones_deleted_before(deleted_before)
            .await
    }
    async fn prune_mutations(
        &self,
        recorded_before: fero::Timestamp,
    ) -> Result<PruneReport, StorageError> {
        self.inner.prune_mutations(recorded_before).await
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
        self.inner.ping().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_in_flight_at_shutdown_is_answered_and_kept() {
    let sqlite = SqliteStorage::open_in_memory().unwrap();
    let (entered_tx, mut entered) = mpsc::unbounded_channel();
    let (release, release_rx) = oneshot::channel();
    let storage = GatedStorage {
        inner: sqlite.clone(),
        entered: entered_tx,
        release: Mutex::new(Some(release_rx)),
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
