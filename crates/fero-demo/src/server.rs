//! Step 1: the reference server on a loopback port, with SQLite storage, seeded for one user.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use fero_server::{SeedRow, Server, SqliteStorage, Tokens, UserId};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::data::{self, SEED_PAGE};
use crate::error::DemoError;

/// The one user both devices sign in as.
pub const USER: &str = "ada";

/// Device A's bearer token (the server maps it to [`USER`]).
pub const TOKEN_A: &str = "demo-token-device-a";
/// Device B's bearer token (the server maps it to [`USER`]).
pub const TOKEN_B: &str = "demo-token-device-b";

/// How often an idle change stream gets a keep-alive comment. Short, so a dead connection is
/// noticed quickly during the demo's live step.
const KEEP_ALIVE: Duration = Duration::from_secs(5);

/// What seeding wrote.
#[derive(Copy, Clone, Debug, Default, PartialEq)]
pub struct SeedTotals {
    /// Rows written, every collection.
    pub rows: u64,
    /// Time taken.
    pub seconds: f64,
}

/// The running reference server.
#[derive(Debug)]
pub struct DemoServer {
    server: Server,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    serving: JoinHandle<Result<(), fero_server::ServeError>>,
}

impl DemoServer {
    /// Opens (creates) the SQLite database at `db` and serves it on `127.0.0.1`, port 0.
    ///
    /// # Errors
    /// [`DemoError::ServerStorage`], [`DemoError::Tokens`], [`DemoError::ServerBuild`] or
    /// [`DemoError::Listen`].
    pub async fn start(db: &Path) -> Result<DemoServer, DemoError> {
        let storage = SqliteStorage::open(db).map_err(|source| DemoError::ServerStorage {
            action: format!("open {}", db.display()),
            source,
        })?;
        let tokens = Tokens::from_pairs([(TOKEN_A, USER), (TOKEN_B, USER)])
            .map_err(|source| DemoError::Tokens { source })?;
        let server = Server::builder()
            .storage(storage)
            .tokens(tokens)
            .keep_alive(KEEP_ALIVE)
            .build()
            .map_err(|source| DemoError::ServerBuild { source })?;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(|source| DemoError::Listen { source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| DemoError::Listen { source })?;
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = tokio::spawn(server.clone().serve(listener, async move {
            // A dropped sender stops the server as well.
            let _ = stopped.await;
        }));
        Ok(DemoServer {
            server,
            addr,
            stop: Some(stop),
            serving,
        })
    }

    /// The base URL (`http://127.0.0.1:<port>`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Seeds the three collections through the server's fast path (one transaction per
    /// [`SEED_PAGE`] rows, no HTTP) and announces them on the change stream.
    ///
    /// # Errors
    /// [`DemoError::ServerStorage`] naming the collection.
    pub async fn seed(&self, contacts: u64, messages: u64) -> Result<SeedTotals, DemoError> {
        let started = Instant::now();
        let mut rows = 0;
        rows += self
            .seed_collection(data::PREFERENCES, data::preference_rows())
            .await?;
        rows += self
            .seed_collection(data::CONTACTS, data::contact_rows(contacts))
            .await?;
        rows += self
            .seed_collection(data::MESSAGES, data::message_rows(messages, contacts))
            .await?;
        Ok(SeedTotals {
            rows,
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    async fn seed_collection(
        &self,
        collection: &str,
        rows: impl IntoIterator<Item = SeedRow>,
    ) -> Result<u64, DemoError> {
        let report = self
            .server
            .seed(&UserId::new(USER), collection, rows, SEED_PAGE)
            .await
            .map_err(|source| DemoError::ServerStorage {
                action: format!("seed {collection}"),
                source,
            })?;
        Ok(report.written)
    }

    /// The count and digest of the user's live rows in `collection`, read from storage.
    ///
    /// # Errors
    /// [`DemoError::ServerStorage`].
    pub async fn digest(&self, collection: &str) -> Result<fero_protocol::Digest, DemoError> {
        self.server
            .storage()
            .digest(&UserId::new(USER), collection)
            .await
            .map_err(|source| DemoError::ServerStorage {
                action: format!("digest {collection}"),
                source,
            })
    }

    /// Stops accepting connections, ends open change streams, finishes requests in flight.
    ///
    /// # Errors
    /// [`DemoError::Serve`] when serving had failed.
    pub async fn shutdown(mut self) -> Result<(), DemoError> {
        if let Some(stop) = self.stop.take() {
            // The receiver is gone only when the server already stopped.
            let _ = stop.send(());
        }
        match (&mut self.serving).await {
            Ok(result) => result.map_err(|source| DemoError::Serve { source }),
            Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
            // Aborted only when the runtime shuts down: nothing is left to stop.
            Err(_) => Ok(()),
        }
    }
}
