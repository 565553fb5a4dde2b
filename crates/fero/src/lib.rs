//! Fero: an offline-first sync orchestrator.
//!
//! Apps that work offline keep a local copy of server data and edit it without a network. Fero
//! runs the two-way sync between that local store and a server, feature by feature ("contacts",
//! "messages"): initial sync page by page, background pull and push cycles, checkpoints saved
//! after every applied page, version-based conflict resolution, retries with backoff,
//! dependencies and priorities between features, typed events and a status per feature.
//!
//! Fero never touches the app's data: it calls handlers the app writes (or takes ready ones from
//! `fero-sqlite` and `fero-http`).
//!
//! # A tour
//! - [`item`]: [`LocalItem`], [`ServerItem`], [`SyncPayload`] and the id types.
//! - [`checkpoint`]: [`SyncCheckpoint`], where a pull stands.
//! - [`page`]: what a page carries: [`SyncBatchResult`], [`ApplyContext`], [`ApplyResult`],
//!   [`RemoteChanges`], [`PushResult`].
//! - [`handler`]: the traits to implement: [`InitialSyncHandler`], [`BackgroundSyncHandler`].
//! - [`conflict`]: [`ConflictResolutionStrategy`] and how conflicts are decided.
//! - [`retry`]: [`FixedBackoff`], [`ExponentialBackoff`], the retry policy.
//! - [`metadata`]: [`SyncMetadataRepo`] and [`InMemorySyncMetadataRepo`].
//! - [`events`] and [`status`]: what a UI observes.
//! - [`sync`]: [`FeroSync`], the orchestrator, and its builder.
//!
//! # Example
//! ```
//! use fero::{FeroSync, FeatureSyncConfig, InMemorySyncMetadataRepo};
//! use fero::memory::{MemoryRemote, MemoryStore};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A server with three contacts, and an empty local store.
//! let remote = MemoryRemote::new();
//! for i in 0..3 {
//!     remote.insert(format!("contact-{i}"), serde_json::json!({ "name": format!("Ada {i}") }));
//! }
//! let store = MemoryStore::new();
//!
//! let sync = FeroSync::builder()
//!     .metadata_repo(InMemorySyncMetadataRepo::new())
//!     .background_sync("contacts", store.handler(remote.clone()), FeatureSyncConfig::new())
//!     .build()?;
//! sync.start_sync().await?;
//! assert_eq!(store.len(), 3);
//! sync.dispose().await;
//! # Ok(()) }
//! ```
//!
//! # Feature flags
//! None: the crate depends on tokio, futures, serde and tracing only, no I/O.
#![doc(test(attr(deny(warnings))))]

pub mod checkpoint;
pub mod config;
pub mod conflict;
pub mod error;
pub mod events;
pub mod handler;
pub mod item;
pub mod memory;
pub mod metadata;
pub mod page;
pub mod report;
pub mod resync;
pub mod retry;
pub mod status;
pub mod sync;

mod background;
mod clock;
mod gate;
mod graph;
mod pull;

pub use async_trait::async_trait;
pub use checkpoint::SyncCheckpoint;
pub use clock::{Clock, SystemClock};
pub use config::{DEFAULT_BATCH_SIZE, FeatureSyncConfig};
pub use conflict::{
    Conflict, ConflictOutcome, ConflictPhase, ConflictResolutionStrategy, ManualResolution,
};
pub use error::{BuildError, Error, Operation, ProtocolError, Result};
pub use events::{ConflictEvent, Lagged, SyncDirection, SyncEvent, SyncEventStream};
pub use gate::{GateOpener, PageGate};
pub use handler::{
    BackgroundSyncHandler, ErrorKind, HandlerError, HandlerResult, InitialSyncHandler,
};
pub use item::{FeatureKey, Item, LocalItem, ServerItem, SyncId, SyncPayload, Timestamp, Version};
pub use metadata::{
    InMemorySyncMetadataRepo, InitialSyncState, ParkedConflict, QuarantinedChange, RepoError,
    SyncMetadataRepo,
};
pub use page::{
    ApplyContext, ApplyError, ApplyResult, PushAccepted, PushConflict, PushRejected, PushResult,
    Rebase, RemoteChanges, SyncBatchResult, SyncKind,
};
pub use report::{FeatureCounts, FeatureOutcome, FeatureResult, RunReport};
pub use resync::{ResyncOutcome, ResyncReason};
pub use retry::{
    BackoffError, BackoffStrategy, ExponentialBackoff, FixedBackoff, RandomSource, RetryDecision,
    SeededRandom,
};
pub use status::{FeatureStatus, StatusMap, SyncPhase};
pub use sync::{FeroSync, FeroSyncBuilder};
