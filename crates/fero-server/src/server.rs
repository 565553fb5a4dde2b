//! [`Server`] and its builder: the router, serving with graceful shutdown, pruning old push
//! answers while serving, and admin helpers.

use axum::serve::ListenerExt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use fero::{Clock, SyncId, SystemClock, Timestamp};
use fero_protocol::ChangeNotice;
use tokio::net::TcpListener;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::api::{self, DEFAULT_KEEP_ALIVE};
use crate::cors::CorsOrigins;
use crate::error::{BuildError, ServeError, StorageError};
use crate::notify::{ChangeHub, ChangeNotifier};
use crate::storage::{PruneReport, PurgeReport, SeedReport, SeedRow, Storage, seed_pages};
use crate::tokens::Tokens;
use crate::user::UserId;

/// The default request body limit: 4 MiB, room for a page of 1,000 changes of a few KiB each
/// while keeping one request from holding much memory.
pub const DEFAULT_BODY_LIMIT: usize = 4 * 1024 * 1024;

/// How long the answer to a pushed change is kept by default: 30 days. A client that lost an
/// answer retries when it next reaches the server; a device offline longer than this gets a
/// conflict for that change instead of the original answer (see
/// [`Storage::prune_mutations`]).
pub const DEFAULT_MUTATION_RETENTION: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// How often [`Server::serve`] prunes answers older than the mutation retention (and once when
/// it starts). Answers live at most this much longer than the retention.
pub const MUTATION_PRUNE_INTERVAL: Duration = Duration::from_secs(60 * 60);

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
    mutation_retention: Duration,
    clock: Arc<dyn Clock>,
    cors_origins: CorsOrigins,
}

impl Server {
    /// A builder; `storage` and `tokens` are required.
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }

    /// The router, for serving it yourself or for in-process tests with
    /// `tower::ServiceExt::oneshot`. Its change streams end only when their client goes, and
    /// nothing prunes old push answers; use [`serve`](Self::serve) to have both, or call
    /// [`prune_mutations_now`](Self::prune_mutations_now) on a schedule of your own.
    pub fn router(&self) -> Router {
        api::router(self.clone(), CancellationToken::new())
    }

    /// Serves on `listener` until `shutdown` completes, then stops accepting connections, ends
    /// open change streams, finishes the requests in flight and returns.
    ///
    /// While it serves, a background task prunes push answers older than the
    /// [mutation retention](ServerBuilder::mutation_retention): once at start, then every
    /// [`MUTATION_PRUNE_INTERVAL`]. A failed prune is logged and tried again at the next
    /// interval. The task stops when shutdown begins (a prune in progress finishes first), and
    /// has ended when this returns.
    ///
    /// # Errors
    /// [`ServeError::Io`] when serving fails.
    pub async fn serve<F>(self, listener: TcpListener, shutdown: F) -> Result<(), ServeError>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let pruning_stop = CancellationToken::new();
        // Dropping `serve` before it returns stops the task too.
        let _pruning_guard = pruning_stop.clone().drop_guard();
        let pruning = tokio::spawn(prune_mutations_periodically(
            self.clone(),
            pruning_stop.clone(),
        ));
        let streams_stop = CancellationToken::new();
        let router = api::router(self, streams_stop.clone());
        let signal = {
            let pruning_stop = pruning_stop.clone();
            async move {
                shutdown.await;
                tracing::info!("shutting down: finishing requests in flight");
                streams_stop.cancel();
                pruning_stop.cancel();
            }
        };
        // Small writes (a change notice, a short push answer) must leave at once: with Nagle's
        // algorithm against the client's delayed ACK, a live change took ~40 ms instead of ~3 ms.
        let listener = listener.tap_io(|tcp| {
            if let Err(error) = tcp.set_nodelay(true) {
                tracing::warn!(%error, "could not set TCP_NODELAY on an accepted connection");
            }
        });
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(signal)
            .await
            .map_err(|source| ServeError::Io { source });
        pruning_stop.cancel();
        if let Err(error) = pruning.await {
            tracing::error!(%error, "the mutation pruning task failed");
        }
        served
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

    /// How long the answer to a pushed change is kept for replays.
    pub fn mutation_retention(&self) -> Duration {
        self.inner.mutation_retention
    }

    /// The browser origins allowed to call the server (none by default).
    pub fn cors_origins(&self) -> &CorsOrigins {
        &self.inner.cors_origins
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

    /// Prunes, now, the push answers recorded more than the
    /// [mutation retention](ServerBuilder::mutation_retention) ago by the server's
    /// [clock](ServerBuilder::clock) (see [`Storage::prune_mutations`]), and logs how many went.
    /// [`serve`](Self::serve) calls it every [`MUTATION_PRUNE_INTERVAL`]; call it yourself when
    /// you serve the [`router`](Self::router) on your own.
    ///
    /// A replay of a pruned mutation is answered as a new change: a conflict carrying the
    /// server's current row, which the client's conflict strategy resolves.
    ///
    /// # Errors
    /// The storage's error; answers deleted by the batches before it stay deleted.
    ///
    /// # Examples
    /// ```
    /// use fero_server::{Server, SqliteStorage, Tokens};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = Server::builder()
    ///     .storage(SqliteStorage::open_in_memory()?)
    ///     .tokens(Tokens::parse_list("secret=alice")?)
    ///     .mutation_retention(std::time::Duration::from_secs(7 * 24 * 60 * 60))
    ///     .build()?;
    /// let report = server.prune_mutations_now().await?;
    /// assert_eq!(report.pruned, 0);
    /// # Ok(()) }
    /// ```
    pub async fn prune_mutations_now(&self) -> Result<PruneReport, StorageError> {
        let retention =
            u64::try_from(self.inner.mutation_retention.as_millis()).unwrap_or(u64::MAX);
        let recorded_before = Timestamp(self.inner.clock.now().0.saturating_sub(retention));
        let report = self.inner.storage.prune_mutations(recorded_before).await?;
        tracing::info!(
            pruned = report.pruned,
            recorded_before = recorded_before.0,
            retention_secs = self.inner.mutation_retention.as_secs(),
            "pruned push answers older than the mutation retention"
        );
        Ok(report)
    }
}

/// Prunes at once, then every [`MUTATION_PRUNE_INTERVAL`], until `stop` is cancelled. The stop
/// is checked between prunes only: a prune in progress finishes (it is bounded batches of one
/// statement each), so shutdown never leaves one half-observed.
async fn prune_mutations_periodically(server: Server, stop: CancellationToken) {
    let mut ticks = tokio::time::interval(MUTATION_PRUNE_INTERVAL);
    // After a long prune, or a suspended machine, the next one is an interval later rather than
    // a burst of catch-up prunes that would find nothing.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        if let Err(error) = server.prune_mutations_now().await {
            tracing::warn!(
                %error,
                retry_in_secs = MUTATION_PRUNE_INTERVAL.as_secs(),
                "pruning old push answers failed; trying again at the next interval"
            );
        }
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
    mutation_retention: Option<Duration>,
    clock: Option<Arc<dyn Clock>>,
    cors_origins: CorsOrigins,
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

    /// How long the answer to a pushed change is kept, so that a replay of it (the client lost
    /// the response and retries) gets the original answer (default
    /// [`DEFAULT_MUTATION_RETENTION`], 30 days). Older answers are pruned while the server
    /// [serves](Server::serve); a replay after that is answered as a new change, a conflict (see
    /// [`Storage::prune_mutations`]). Choose it longer than a device may stay offline with a
    /// push whose answer it never received. Zero is refused by [`build`](Self::build).
    pub fn mutation_retention(mut self, retention: Duration) -> Self {
        self.mutation_retention = Some(retention);
        self
    }

    /// The wall clock the mutation retention's cut-off is read from (default: the system
    /// clock). Give the storage the same clock: it stamps when each answer was recorded.
    /// Intervals between prunes use tokio's clock, so tests can pause time.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// The browser origins allowed to call the server cross-origin (default: none, and no CORS
    /// headers are sent). Their preflights are answered before authentication.
    pub fn cors_origins(mut self, origins: CorsOrigins) -> Self {
        self.cors_origins = origins;
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
        let mutation_retention = self
            .mutation_retention
            .unwrap_or(DEFAULT_MUTATION_RETENTION);
        if mutation_retention.is_zero() {
            return Err(BuildError::ZeroMutationRetention);
        }
        Ok(Server {
            inner: Arc::new(Inner {
                storage,
                notifier: self.notifier.unwrap_or_else(|| Arc::new(ChangeHub::new())),
                tokens,
                body_limit,
                keep_alive,
                mutation_retention,
                clock: self.clock.unwrap_or_else(|| Arc::new(SystemClock)),
                cors_origins: self.cors_origins,
            }),
        })
    }
}
