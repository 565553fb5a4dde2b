//! The HTTP client transport of fero's sync protocol.
//!
//! [`HttpRemote`] speaks protocol version 1 (`crates/fero-protocol`, `docs/protocol.md`) to a
//! `fero-server` over HTTP (reqwest, rustls): it pulls pages, pushes changes and reads digests
//! as a [`fero_protocol::Remote`], so any store that syncs through a `Remote` (such as
//! `fero-sqlite`'s collections) syncs with a server by pointing at its URL. It maps every HTTP
//! failure onto a [`RemoteError`](fero_protocol::RemoteError) kind that tells fero whether to
//! retry, refuses answers that break the protocol before they are used, and follows the live
//! change stream so an edit on one device reaches the others without polling.
//!
//! # A tour
//! - [`remote`]: [`HttpRemote`] and its [`HttpRemoteBuilder`] (timeouts, user agent, device
//!   id, limits).
//! - [`error`]: [`BuildError`], and the table of HTTP failures and the error kinds they map to.
//! - [`changes`]: [`HttpRemote::changes`], the Server-Sent Events change stream as a
//!   [`ChangeStream`] of [`StreamEvent`]s that reconnects with backoff.
//! - [`live`]: [`HttpRemote::live_triggers`], which turns change notices into
//!   [`FeroSync::trigger`](fero::FeroSync::trigger) calls ([`LiveTriggers`]).
//! - [`stats`]: [`TransportStats`], requests made and bytes on the wire.
//! - [`token`]: [`TokenProvider`], where the bearer token of each request comes from, renewed
//!   when the server answers `token_expired` ([`StaticToken`] for a fixed one).
//!
//! # Example
//! A complete client: a local SQLite store (`fero-sqlite`) synced with a server, live.
//! ```no_run
//! use fero::{FeatureSyncConfig, FeroSync};
//! use fero_http::HttpRemote;
//! use fero_sqlite::SqliteStore;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = SqliteStore::open("app.db").await?;
//! let remote = HttpRemote::builder("http://127.0.0.1:7700", "alices-token")
//!     .device_id("laptop-1")
//!     .build()?;
//! let contacts = store.sync_handler("contacts", remote.clone())?;
//! let sync = FeroSync::builder()
//!     .metadata_repo(store.metadata_repo())
//!     .initial_sync("contacts", contacts.clone(), FeatureSyncConfig::new())
//!     .background_sync("contacts", contacts, FeatureSyncConfig::new())
//!     .build()?;
//!
//! // Initial sync, one pull and push cycle, then a cycle on every trigger.
//! sync.start_sync().await?;
//! // Edits pushed by other devices trigger a cycle here, with no poll timer.
//! let live = remote.live_triggers(sync.clone(), [("contacts", "contacts")]);
//!
//! store.put("contacts", "ada", serde_json::json!({ "name": "Ada" })).await?;
//! sync.trigger("contacts")?; // push it now
//!
//! let stats = remote.stats();
//! println!("{} requests, {} bytes received", stats.requests, stats.bytes_received);
//! live.stop();
//! sync.dispose().await;
//! # Ok(()) }
//! ```
//!
//! # Feature flags
//! - `metrics` (off by default): every [`TransportStats`] figure is also recorded as a counter
//!   through the `metrics` facade, into the recorder the application installs (names in
//!   [`stats::names`]), so an app that already exports Prometheus figures shows its sync
//!   traffic beside them.
//!
//! TLS is rustls; answers are accepted zstd- or gzip-compressed.
#![doc(test(attr(deny(warnings))))]

pub mod changes;
pub mod error;
pub mod live;
pub mod remote;
pub mod stats;
pub mod token;

mod sse;
mod validate;

pub use changes::{CHANGE_EVENT, ChangeStream, StreamEvent};
pub use error::BuildError;
pub use live::LiveTriggers;
pub use remote::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_RESPONSE_BYTES, DEFAULT_REQUEST_TIMEOUT,
    DEFAULT_STREAM_IDLE_TIMEOUT, DEVICE_HEADER, HttpRemote, HttpRemoteBuilder,
};
pub use stats::TransportStats;
pub use token::{StaticToken, TokenError, TokenProvider};

/// The README's quick starts, compiled (and the in-memory one run) as doc tests here, where both
/// `fero-sqlite` and `fero-http` are in reach, so the README cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
