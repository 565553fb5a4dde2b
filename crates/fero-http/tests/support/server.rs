//! A real `fero-server` on a loopback port, on a runtime of its own so that a test can crash it
//! (every task and socket dropped at once) and start it again on the same database file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::sync::Arc;

use fero_server::{PostgresStorage, SeedRow, Server, SqliteStorage, Storage, Tokens, UserId};

/// `token=user` pairs every test server accepts: three devices of alice, one of bob.
pub(crate) const TOKENS: &str =
    "alice-phone=alice,alice-laptop=alice,alice-tablet=alice,bob-phone=bob";

/// A running server. Dropping it crashes it.
pub(crate) struct TestServer {
    pub(crate) addr: SocketAddr,
    pub(crate) server: Server,
    db: PathBuf,
    runtime: Option<tokio::runtime::Runtime>,
}

impl TestServer {
    /// Starts a server on a new port with the database file `db`.
    pub(crate) fn start(db: &Path) -> TestServer {
        Self::start_at(db, "127.0.0.1:0".parse().unwrap())
    }

    /// Starts a server at `addr` (port 0 for a new port) with the database file `db`.
    pub(crate) fn start_at(db: &Path, addr: SocketAddr) -> TestServer {
        let storage = SqliteStorage::open(db).unwrap();
        Self::serve_at(Arc::new(storage), db, addr, new_runtime())
    }

    /// Starts a server on a new port with the database file `db` and the sync rules of the
    /// storage suite (`TeamSharing`: `tasks` and `members` are shared by team).
    #[allow(dead_code)]
    pub(crate) fn start_shared(db: &Path) -> TestServer {
        let storage = SqliteStorage::open(db).unwrap();
        Self::serve_with(
            Arc::new(storage),
            db,
            "127.0.0.1:0".parse().unwrap(),
            new_runtime(),
            Some(Arc::new(fero_server::shared_suite::TeamSharing)),
        )
    }

    /// Starts a server at `addr` on the PostgreSQL database at `url` (its storage connects on the
    /// server's own runtime, so crashing the server drops every connection).
    pub(crate) fn start_postgres_at(url: &str, addr: SocketAddr) -> TestServer {
        let runtime = new_runtime();
        // block_on cannot run inside the test's runtime: connect from a thread of its own.
        let storage = std::thread::scope(|scope| {
            scope
                .spawn(|| runtime.block_on(PostgresStorage::connect(url)))
                .join()
                .expect("the connecting thread ran")
        })
        .unwrap();
        Self::serve_at(Arc::new(storage), Path::new(url), addr, runtime)
    }

    fn serve_at(
        storage: Arc<dyn Storage>,
        db: &Path,
        addr: SocketAddr,
        runtime: tokio::runtime::Runtime,
    ) -> TestServer {
        Self::serve_with(storage, db, addr, runtime, None)
    }

    fn serve_with(
        storage: Arc<dyn Storage>,
        db: &Path,
        addr: SocketAddr,
        runtime: tokio::runtime::Runtime,
        sharing: Option<Arc<dyn fero_server::shared::Sharing>>,
    ) -> TestServer {
        let mut builder = Server::builder()
            .storage_arc(storage)
            .tokens(Tokens::parse_list(TOKENS).unwrap())
            .keep_alive(Duration::from_secs(1));
        if let Some(sharing) = sharing {
            builder = builder.sharing(sharing);
        }
        let server = builder.build().unwrap();
        // std's bind sets SO_REUSEADDR on Unix, so a restarted server gets its old port back.
        let listener = std::net::TcpListener::bind(addr).unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let serving = server.clone();
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            serving
                .serve(listener, std::future::pending())
                .await
                .unwrap();
        });
        TestServer {
            addr,
            server,
            db: db.to_owned(),
            runtime: Some(runtime),
        }
    }

    /// The base URL.
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Crashes the server: its tasks and sockets are dropped without finishing anything.
    pub(crate) fn crash(mut self) -> (PathBuf, SocketAddr) {
        self.stop();
        (self.db.clone(), self.addr)
    }

    /// Drops the runtime and waits until its tasks (and so the listening socket) are gone:
    /// `shutdown_background` alone returned before the listener was closed, and a restart on the
    /// same port then failed now and then with `AddrInUse`. It runs on a thread of its own
    /// because a runtime cannot be shut down with a wait from inside another one.
    fn stop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            std::thread::spawn(move || runtime.shutdown_timeout(Duration::from_secs(10)))
                .join()
                .expect("the server's runtime shut down");
        }
    }

    /// Writes `n` rows `{prefix}-{i}` for `user` straight into storage.
    pub(crate) async fn seed(&self, user: &str, collection: &str, prefix: &str, n: usize) {
        let rows = (0..n).map(|i| {
            SeedRow::new(
                format!("{prefix}-{i:05}"),
                serde_json::json!({ "name": format!("{prefix} {i}"), "email": "ada@example.com" }),
            )
        });
        self.server
            .seed(&UserId::new(user), collection, rows, 1_000)
            .await
            .unwrap();
    }
}

/// The one-worker runtime a test server runs on.
fn new_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop();
    }
}
