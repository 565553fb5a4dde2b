//! The reference server of fero's HTTP sync protocol.
//!
//! A client pulls pages of a collection's change feed after a checkpoint, pushes changes on the
//! versions they were made on, listens for change notices, and compares digests; this crate is
//! the other end: an axum router with bearer-token users, request limits that always answer with
//! the protocol's JSON error body, and every row behind a [`Storage`] trait whose contract holds
//! the hard guarantees (a pull never skips a committed row, push is optimistic and exactly-once,
//! deletions are tombstones, users never see each other's rows). The wire types come from
//! [`fero_protocol`]; the conversation is told step by step in `docs/protocol.md`.
//!
//! # A tour
//! - [`Server`] and [`ServerBuilder`]: the router, serving with graceful shutdown, seeding,
//!   purging tombstones after their retention, and pruning the answers to old pushes after
//!   theirs.
//! - [`Storage`]: the backend contract; [`SqliteStorage`] is the embedded backend (a file in WAL
//!   mode, or in memory), [`PostgresStorage`] the one for several server processes on one
//!   PostgreSQL database. [`storage_suite`] checks any backend against the contract, and
//!   [`storage_suite_tests!`] runs it as tests (on both backends).
//! - [`ChangeNotifier`] and [`ChangeHub`]: where commits are announced and `GET /v1/changes`
//!   streams listen, in process; [`PostgresNotifier`] feeds a hub from PostgreSQL's `LISTEN`, so
//!   a push handled by one process reaches the change streams of all.
//! - [`Tokens`] (static bearer tokens) and [`JwtVerifier`] (bearer JWTs: HS256, RS256, ES256
//!   from a JWKS file): who may call; [`Principal`]: the caller's [`UserId`] and token claims;
//!   [`UserId`]: who owns a row; [`CorsOrigins`]: which
//!   browser origins may call cross-origin (preflights are answered before authentication).
//! - [`Rules`] ([`rules`]): sync rules for shared data, read from a TOML file of CEL
//!   expressions: the bucket each row of a ruled collection lives in, who may write it, and
//!   the buckets a user may read.
//! - [`error`]: one error enum per boundary.
//! - [`backup`]: a consistent copy of a live SQLite database (`fero-server backup`).
//! - [`metrics`] and [`readiness`]: `GET /metrics` (Prometheus text, one recorder per
//!   [`Server`]) and `GET /readyz` (503 until the storage answers a ping, and while draining);
//!   `docs/operations.md` tells how to run, observe, back up and upgrade the server.
//!
//! The `fero-server` binary wraps all of it: `fero-server --db sync.db --listen 127.0.0.1:7700
//! --tokens tokens.toml`, or `--db postgres://user@host:5432/fero` for PostgreSQL.
//!
//! # Example
//! ```
//! use fero_server::{SeedRow, Server, SqliteStorage, Tokens, UserId};
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = Server::builder()
//!     .storage(SqliteStorage::open_in_memory()?)
//!     .tokens(Tokens::parse_list("alices-token=alice")?)
//!     .build()?;
//! let rows = (0..3).map(|i| SeedRow::new(format!("contact-{i}"), serde_json::json!({ "n": i })));
//! server.seed(&UserId::new("alice"), "contacts", rows, 1_000).await?;
//!
//! let request = axum::http::Request::get("/v1/collections/contacts/pull?limit=2")
//!     .header("authorization", "Bearer alices-token")
//!     .body(axum::body::Body::empty())?;
//! let response = server.router().oneshot(request).await?;
//! let body = axum::body::to_bytes(response.into_body(), usize::MAX).await?;
//! let page: fero_protocol::PullResponse = serde_json::from_slice(&body)?;
//! assert_eq!(page.items.len(), 2);
//! assert!(page.has_more);
//! # Ok(()) }
//! ```
//!
//! # Feature flags
//! None. SQLite is bundled (`rusqlite/bundled`); PostgreSQL is reached with `tokio-postgres`
//! over plain TCP (no TLS: a database on the loopback or a private network); responses are
//! compressed with gzip or zstd by `Accept-Encoding`.
#![doc(test(attr(deny(warnings))))]

mod api;
mod api_error;
mod api_shared;
pub mod backup;
mod cors;
mod cursor;
pub mod error;
mod jwt;
pub mod metrics;
mod notify;
mod postgres;
mod postgres_notify;
pub mod readiness;
pub mod rules;
mod rules_sharing;
mod server;
pub mod shared;
pub mod shared_suite;
mod sqlite;
mod storage;
pub mod storage_suite;
mod tokens;
mod user;
mod validate;

pub use cors::{CorsError, CorsOrigins, PREFLIGHT_MAX_AGE};
pub use error::{BuildError, Error, Result, ServeError, StorageError, TokensError};
pub use jwt::{
    DEFAULT_JWT_LEEWAY, JwtError, JwtRejection, JwtVerifier, JwtVerifierBuilder,
    MIN_HS256_SECRET_BYTES,
};
pub use metrics::ServerMetrics;
pub use notify::{ChangeHub, ChangeNotifier, ChangeSubscription};
pub use postgres::{DEFAULT_POOL_SIZE, PostgresStorage, PostgresStorageBuilder};
pub use postgres_notify::{LISTENER_APPLICATION_NAME, PostgresNotifier};
pub use rules::{
    CollectionRules, Decision, RuleError, Rules, RulesError, SubscriptionError, UserContext,
};
pub use server::{
    DEFAULT_BODY_LIMIT, DEFAULT_MUTATION_RETENTION, DEFAULT_TOMBSTONE_RETENTION,
    MUTATION_PRUNE_INTERVAL, Server, ServerBuilder,
};
pub use sqlite::SqliteStorage;
pub use storage::{
    FeedPosition, PoolUse, PruneReport, PullPage, PurgeReport, PushOutcome, SeedReport, SeedRow,
    Storage, StoredDocument, seed_pages,
};
pub use tokens::Tokens;
pub use user::{Principal, UserId};
