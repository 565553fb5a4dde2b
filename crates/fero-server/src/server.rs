//! [`Server`] and its builder: the router, serving with graceful shutdown, and admin helpers.

use axum::serve::ListenerExt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use fero::SyncId;
use fero_protocol::ChangeNotice;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::{self, DEFAULT_KEEP_ALIVE};
use crate::error::{BuildError, ServeError, StorageError};
use crate::notify::{ChangeHub, ChangeNotifier};
use crate::storage::{PurgeReport, SeedReport, SeedRow, Storage, seed_pages};
use crate::tokens::Tokens;
use crate::user::UserId;

/// The default request body limit: 4 MiB, room for a page of 1,000 changes of a few KiB each
/// while keeping one request from holding much memory.
pub const DEFAULT_BODY_LIMIT: usize = 4 * 1024 * 1024;

/// The reference sync server: storage, tokens and the change notifier behind an axum router.
///
/// Cheap to clone (an `Arc` inside).
///
/// # Examples
/// ```
/// use fero_server::{Server, SqliteStorage, Tokens};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let server = Server::builder()
///     .storage(SqliteStorage::open_in_memory()?)
///     .tokens(Tokens::parse_list("secret=alice")?)
///     .build()?;
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
/// let serving = tokio::spawn(server.serve(listener, async move { let _ = stopped.await; }));
/// stop.send(()).ok();
/// serving.await??;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Server {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    storage: Arc<dyn Storage>,
    notifier: Arc<dyn ChangeNotifier>,
    tokens: Tokens,
    body_limit: usize,
    keep_alive: Duration,
}

impl Server {
    /// A builder; `storage` and `tokens` are required.
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }

    /// The router, for serving it yourself or for in-process tests with
    /// `tower::ServiceExt::oneshot`. Its change streams end only when their client goes; use
    /// [`serve`](Self::serve) to have them end at shutdown.
    pub fn router(&self) -> Router {
        api::router(self.clone(), CancellationToken::new())
    }

    /// Serves on `listener` until `shutdown` completes, then stops accepting connections, ends
    /// open change streams, finishes the requests in flight and returns.
    ///
    /// # Errors
    /// [`ServeError::Io`] when serving fails.
    pub async fn serve<F>(self, listener: TcpListener, shutdown: F) -> Result<(), ServeError>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let streams_stop = CancellationToken::new();
        let router = api::router(self, streams_stop.clone());
        let signal = async move {
            shutdown.await;
            tracing::info!("shutting down: finishing requests in flight");
            streams_stop.cancel();
        };
        // Small writes (a change notice, a short push answer) must leave at once: with Nagle's
        // algorithm against the client's delayed ACK, a live change took ~40 ms instead of ~3 ms.
        let listener = listener.tap_io(|tcp| {
            if let Err(error) = tcp.set_nodelay(true) {
                tracing::warn!(%error, "could not set TCP_NODELAY on an accepted connection");
            }
        });
        axum::serve(listener, router)
            .with_graceful_shutdown(signal)
            .await
            .map_err(|source| ServeError::Io { source })
    }

    /// The storage.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.inner.storage
    }

    /// The change notifier.
    pub fn notifier(&self) -> &Arc<dyn ChangeNotifier> {
        &self.inner.notifier
    }

    /// The accepted tokens.
    pub fn tokens(&self) -> &Tokens {
        &self.inner.tokens
    }

    /// The request body limit in bytes.
    pub fn body_limit(&self) -> usize {
        self.inner.body_limit
    }

    /// The change stream's keep-alive interval.
    pub fn keep_alive(&self) -> Duration {
        self.inner.keep_alive
    }

    /// Writes `rows` straight into storage, one transaction per `page_size` rows (see
    /// [`seed_pages`]), then announces the collection on the change stream.
    ///
    /// # Errors
    /// The storage's error; pages before the failing one stay written.
    pub async fn seed(
        &self,
        user: &UserId,
        collection: &str,
        rows: impl IntoIterator<Item = SeedRow>,
        page_size: usize,
    ) -> Result<SeedReport, StorageError> {
        let report = seed_pages(&*self.inner.storage, user, collection, rows, page_size).await?;
        if let Some(sync_id) = report.last_sync_id {
            self.inner.notifier.publish(
                user,
                ChangeNotice {
                    collection: collection.to_owned(),
                    sync_id,
                },
            );
        }
        Ok(report)
    }

    /// Deletes tombstones with `sync_id < before` and raises the purge horizons (see
    /// [`Storage::purge_tombstones`]): a client behind a horizon then gets 410
    /// `resync_required` instead of a feed with a deletion missing.
    ///
    /// # Errors
    /// The storage's error; then nothing was purged.
    pub async fn purge_tombstones(&self, before: SyncId) -> Result<PurgeReport, StorageError> {
        self.inner.storage.purge_tombstones(before).await
    }
}

/// Builds a [`Server`]; see [`Server::builder`].
#[derive(Debug, Default)]
pub struct ServerBuilder {
    storage: Option<Arc<dyn Storage>>,
    notifier: Option<Arc<dyn ChangeNotifier>>,
    tokens: Option<Tokens>,
    body_limit: Option<usize>,
    keep_alive: Option<Duration>,
}

impl ServerBuilder {
    /// The storage backend (required).
    pub fn storage(self, storage: impl Storage) -> Self {
        self.storage_arc(Arc::new(storage))
    }

    /// The storage backend, shared (required).
    pub fn storage_arc(mut self, storage: Arc<dyn Storage>) -> Self {
        self.storage = Some(storage);
        self
    }

    /// The accepted bearer tokens (required, at least one).
    pub fn tokens(mut self, tokens: Tokens) -> Self {
        self.tokens = Some(tokens);
        self
    }

    /// The request body limit in bytes (default [`DEFAULT_BODY_LIMIT`]); a larger body gets 413
    /// `body_too_large`.
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = Some(bytes);
        self
    }

    /// The change notifier (default: an in-process [`ChangeHub`]).
    pub fn notifier(mut self, notifier: Arc<dyn ChangeNotifier>) -> Self {
        self.notifier = Some(notifier);
        self
    }

    /// How often an idle change stream sends a keep-alive comment (default 15 s).
    pub fn keep_alive(mut self, interval: Duration) -> Self {
        self.keep_alive = Some(interval);
        self
    }

    /// The server.
    ///
    /// # Errors
    /// [`BuildError`] naming the missing or invalid setting.
    pub fn build(self) -> Result<Server, BuildError> {
        let storage = self.storage.ok_or(BuildError::MissingStorage)?;
        let tokens = self
            .tokens
            .filter(|tokens| !tokens.is_empty())
            .ok_or(BuildError::NoTokens)?;
        let body_limit = self.body_limit.unwrap_or(DEFAULT_BODY_LIMIT);
        if body_limit == 0 {
            return Err(BuildError::ZeroBodyLimit);
        }
        let keep_alive = self.keep_alive.unwrap_or(DEFAULT_KEEP_ALIVE);
        if keep_alive.is_zero() {
            return Err(BuildError::ZeroKeepAlive);
        }
        Ok(Server {
            inner: Arc::new(Inner {
                storage,
                notifier: self.notifier.unwrap_or_else(|| Arc::new(ChangeHub::new())),
                tokens,
                body_limit,
                keep_alive,
            }),
        })
    }
}
