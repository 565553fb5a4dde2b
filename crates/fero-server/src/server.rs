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
use crate::jwt::JwtVerifier;
use crate::metrics::ServerMetrics;
use crate::notify::{ChangeHub, ChangeNotifier};
use crate::shared::Sharing;
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

/// How long a tombstone is kept by default before the scheduled purge deletes it: 90 days. A
/// device offline longer than this gets 410 `resync_required` (reason `tombstones_purged`) on
/// its next pull and pulls the collection again from scratch.
pub const DEFAULT_TOMBSTONE_RETENTION: Duration = Duration::from_secs(90 * 24 * 60 * 60);

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
    jwt: Option<JwtVerifier>,
    body_limit: usize,
    keep_alive: Duration,
    mutation_retention: Duration,
    tombstone_retention: Option<Duration>,
    clock: Arc<dyn Clock>,
    metrics: ServerMetrics,
    metrics_token: Option<String>,
    drain_period: Duration,
    /// Cancelled when shutdown begins: `/readyz` answers 503 from then on.
    draining: CancellationToken,
    cors_origins: CorsOrigins,
    sharing: Option<Arc<dyn Sharing>>,
}

impl Server {
    /// A builder; `storage` is required, and `tokens` or `jwt` (or both).
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
    /// When `shutdown` completes, `GET /readyz` answers 503 at once; the server keeps serving
    /// for the [drain period](ServerBuilder::drain_period) (default none), so that a load
    /// balancer polling `/readyz` stops sending new requests before connections are refused.
    ///
    /// While it serves, a background task prunes push answers older than the
    /// [mutation retention](ServerBuilder::mutation_retention) and purges tombstones older than
    /// the [tombstone retention](ServerBuilder::tombstone_retention) (unless it is off): once at
    /// start, then every [`MUTATION_PRUNE_INTERVAL`]. A failed prune or purge is logged and
    /// tried again at the next interval. The task stops when shutdown begins (a prune in progress finishes first), and
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
        let router = api::router(self.clone(), streams_stop.clone());
        let draining = self.inner.draining.clone();
        let drain_period = self.inner.drain_period;
        let signal = {
            let pruning_stop = pruning_stop.clone();
            async move {
                shutdown.await;
                draining.cancel();
                if !drain_period.is_zero() {
                    tracing::info!(
                        drain_period_secs = drain_period.as_secs_f64(),
                        "draining: /readyz answers 503 while requests are still served"
                    );
                    tokio::time::sleep(drain_period).await;
                }
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

    /// This server's metrics, as `GET /metrics` renders them.
    pub fn metrics(&self) -> &ServerMetrics {
        &self.inner.metrics
    }

    /// The bearer token `GET /metrics` requires, if any.
    pub(crate) fn metrics_token(&self) -> Option<&str> {
        self.inner.metrics_token.as_deref()
    }

    /// How long [`serve`](Self::serve) keeps serving, with `/readyz` at 503, after its shutdown
    /// signal.
    pub fn drain_period(&self) -> Duration {
        self.inner.drain_period
    }

    /// Shutdown has begun: `/readyz` answers 503.
    pub fn is_draining(&self) -> bool {
        self.inner.draining.is_cancelled()
    }

    /// Completes when shutdown begins (when [`serve`](Self::serve)'s signal completes, or
    /// [`start_draining`](Self::start_draining) is called).
    pub async fn draining(&self) {
        self.inner.draining.cancelled().await;
    }

    /// Marks the server as shutting down: `/readyz` answers 503 from now on, while every other
    /// endpoint keeps serving. For a server whose [`router`](Self::router) you serve yourself;
    /// [`serve`](Self::serve) calls it when its shutdown signal completes.
    pub fn start_draining(&self) {
        self.inner.draining.cancel();
    }

    /// The storage.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.inner.storage
    }

    /// The change notifier.
    pub fn notifier(&self) -> &Arc<dyn ChangeNotifier> {
        &self.inner.notifier
    }

    /// The sync rules, if any ([`ServerBuilder::sharing`]).
    pub fn sharing(&self) -> Option<&Arc<dyn Sharing>> {
        self.inner.sharing.as_ref()
    }

    /// The sync rules when they share `collection`.
    pub(crate) fn sharing_of(&self, collection: &str) -> Option<&Arc<dyn Sharing>> {
        self.sharing()
            .filter(|sharing| sharing.is_shared(collection))
    }

    /// The accepted static tokens (empty when only JWTs are accepted).
    pub fn tokens(&self) -> &Tokens {
        &self.inner.tokens
    }

    /// The verifier of bearer JWTs, when JWTs are accepted.
    pub fn jwt(&self) -> Option<&JwtVerifier> {
        self.inner.jwt.as_ref()
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

    /// How long a tombstone is kept before [`serve`](Self::serve)'s schedule purges it; `None`
    /// when the scheduled purge is off.
    pub fn tombstone_retention(&self) -> Option<Duration> {
        self.inner.tombstone_retention
    }

    /// Purges, now, the tombstones deleted more than `age` ago by the server's
    /// [clock](ServerBuilder::clock) (see [`Storage::purge_tombstones_deleted_before`]), raising
    /// the purge horizons, and logs how many went. [`serve`](Self::serve) calls it with the
    /// [tombstone retention](ServerBuilder::tombstone_retention) every
    /// [`MUTATION_PRUNE_INTERVAL`].
    ///
    /// # Errors
    /// The storage's error; then nothing was purged.
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
    /// let report = server.purge_tombstones_older_than(std::time::Duration::from_secs(3600)).await?;
    /// assert_eq!(report.purged, 0);
    /// # Ok(()) }
    /// ```
    pub async fn purge_tombstones_older_than(
        &self,
        age: Duration,
    ) -> Result<PurgeReport, StorageError> {
        let age_ms = u64::try_from(age.as_millis()).unwrap_or(u64::MAX);
        let deleted_before = Timestamp(self.inner.clock.now().0.saturating_sub(age_ms));
        let report = self
            .inner
            .storage
            .purge_tombstones_deleted_before(deleted_before)
            .await?;
        tracing::info!(
            purged = report.purged,
            collections = report.collections,
            deleted_before = deleted_before.0,
            retention_secs = age.as_secs(),
            "purged tombstones older than the tombstone retention"
        );
        Ok(report)
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

/// Prunes push answers and purges old tombstones at once, then every
/// [`MUTATION_PRUNE_INTERVAL`], until `stop` is cancelled. The stop
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
        if let Some(retention) = server.tombstone_retention() {
            if let Err(error) = server.purge_tombstones_older_than(retention).await {
                tracing::warn!(
                    %error,
                    retry_in_secs = MUTATION_PRUNE_INTERVAL.as_secs(),
                    "purging old tombstones failed; trying again at the next interval"
                );
            }
        }
    }
}

/// Builds a [`Server`]; see [`Server::builder`].
#[derive(Debug, Default)]
pub struct ServerBuilder {
    storage: Option<Arc<dyn Storage>>,
    notifier: Option<Arc<dyn ChangeNotifier>>,
    tokens: Option<Tokens>,
    jwt: Option<JwtVerifier>,
    body_limit: Option<usize>,
    keep_alive: Option<Duration>,
    mutation_retention: Option<Duration>,
    tombstone_retention: Option<Option<Duration>>,
    clock: Option<Arc<dyn Clock>>,
    metrics_token: Option<String>,
    drain_period: Option<Duration>,
    cors_origins: CorsOrigins,
    sharing: Option<Arc<dyn Sharing>>,
}

impl ServerBuilder {
    /// The sync rules: the collections they name are shared by bucket (see
    /// [`shared`](crate::shared)); without them every collection is private to each user.
    pub fn sharing(mut self, sharing: Arc<dyn Sharing>) -> Self {
        self.sharing = Some(sharing);
        self
    }

    /// The storage backend (required).
    pub fn storage(self, storage: impl Storage) -> Self {
        self.storage_arc(Arc::new(storage))
    }

    /// The storage backend, shared (required).
    pub fn storage_arc(mut self, storage: Arc<dyn Storage>) -> Self {
        self.storage = Some(storage);
        self
    }

    /// The accepted static bearer tokens. At least one token, or a [`jwt`](Self::jwt)
    /// verifier, is required.
    pub fn tokens(mut self, tokens: Tokens) -> Self {
        self.tokens = Some(tokens);
        self
    }

    /// Accepts bearer JWTs verified by `verifier` (its `sub` is the user), beside or instead of
    /// static [`tokens`](Self::tokens). A token with a JWT's shape (three base64url parts) is
    /// verified; any other token is looked up among the static tokens. An expired JWT is
    /// answered 401 `token_expired`, any other refused one 401 `unauthorized`.
    ///
    /// # Examples
    /// ```
    /// use fero_server::{JwtVerifier, Server, SqliteStorage};
    /// let server = Server::builder()
    ///     .storage(SqliteStorage::open_in_memory()?)
    ///     .jwt(JwtVerifier::builder().hs256_secret("a-secret-of-at-least-32-bytes-long!!").build()?)
    ///     .build()?;
    /// assert!(server.jwt().is_some() && server.tokens().is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn jwt(mut self, verifier: JwtVerifier) -> Self {
        self.jwt = Some(verifier);
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

    /// How long a tombstone is kept (default [`DEFAULT_TOMBSTONE_RETENTION`], 90 days);
    /// `None` turns the scheduled purge off, keeping every tombstone until
    /// [`Server::purge_tombstones`] or [`Server::purge_tombstones_older_than`] is called.
    /// Older tombstones are purged while the server [serves](Server::serve), once at start and
    /// then hourly; a device whose checkpoint is behind a purged one gets 410
    /// `resync_required` (reason `tombstones_purged`) and pulls the collection again. Choose it
    /// longer than a device may stay offline. Zero is refused by [`build`](Self::build).
    pub fn tombstone_retention(mut self, retention: Option<Duration>) -> Self {
        self.tombstone_retention = Some(retention);
        self
    }

    /// The wall clock the mutation retention's cut-off is read from (default: the system
    /// clock). Give the storage the same clock: it stamps when each answer was recorded.
    /// Intervals between prunes use tokio's clock, so tests can pause time.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// A bearer token that `GET /metrics` requires (default: none, `/metrics` is open). The
    /// metrics carry no row data, only counts, but they tell how busy the server is.
    pub fn metrics_token(mut self, token: impl Into<String>) -> Self {
        self.metrics_token = Some(token.into());
        self
    }

    /// How long [`Server::serve`] keeps serving after its shutdown signal, with `/readyz`
    /// answering 503, before it stops accepting connections (default zero: it stops at once).
    /// Set it a little longer than your load balancer's readiness poll interval.
    pub fn drain_period(mut self, period: Duration) -> Self {
        self.drain_period = Some(period);
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
        let tokens = self.tokens.unwrap_or_default();
        if tokens.is_empty() && self.jwt.is_none() {
            return Err(BuildError::NoAuthentication);
        }
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
        let tombstone_retention = self
            .tombstone_retention
            .unwrap_or(Some(DEFAULT_TOMBSTONE_RETENTION));
        if tombstone_retention.is_some_and(|retention| retention.is_zero()) {
            return Err(BuildError::ZeroTombstoneRetention);
        }
        Ok(Server {
            inner: Arc::new(Inner {
                storage,
                notifier: self.notifier.unwrap_or_else(|| Arc::new(ChangeHub::new())),
                tokens,
                jwt: self.jwt,
                body_limit,
                keep_alive,
                mutation_retention,
                tombstone_retention,
                clock: self.clock.unwrap_or_else(|| Arc::new(SystemClock)),
                metrics: ServerMetrics::new(),
                metrics_token: self.metrics_token.filter(|token| !token.is_empty()),
                drain_period: self.drain_period.unwrap_or_default(),
                draining: CancellationToken::new(),
                cors_origins: self.cors_origins,
                sharing: self.sharing,
            }),
        })
    }
}
