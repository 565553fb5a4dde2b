//! SQLite persistence for fero: the embedded default for checkpoints, local documents and the
//! outbox, crash-safe.
//!
//! One database file holds fero's sync metadata ([`SqliteSyncMetadataRepo`]) and a local document
//! store ([`SqliteStore`]): named collections of JSON documents with their server versions,
//! tombstones and an outbox of pending local edits. [`CollectionSync`] joins one collection with
//! any [`fero_protocol::Remote`] as both of fero's handler traits, so an app supplies only the
//! remote side. Because the store is also the metadata repo, a page of server changes and its
//! checkpoint commit in one transaction: a crash leaves either both or neither.
//!
//! # A tour
//! - [`store`]: [`SqliteStore`], local edits (`put`, `delete`), reads, digest, reset.
//! - [`document`]: [`LocalDocument`] and the outbox's [`OutboxEntry`].
//! - [`handler`]: [`CollectionSync`], fetch, apply, push, conflict base, discard.
//! - [`subscription`]: [`SubscriptionSync`], partial sync of a shared collection by the
//!   subscriptions an app adds and drops at runtime ([`SqliteStore::subscribe`]).
//! - [`conflict_log`]: [`ConflictRecord`], the durable record of every local edit a conflict
//!   dropped or overwrote, written in the transaction that drops it.
//! - [`metadata`]: the persistent [`SqliteSyncMetadataRepo`].
//! - [`verify`]: [`VerifyReport`], comparing the store with the server.
//! - [`schema`]: tables, ordered migrations (`PRAGMA user_version`), [`Synchronous`].
//! - [`error`]: the crate's [`Error`].
//!
//! # Threads and transactions
//! The database has one connection, behind a `std::sync::Mutex`. Every call runs its SQLite work
//! with `tokio::task::spawn_blocking`, taking the lock inside the blocking task, so SQLite never
//! runs on an async worker thread and no lock is held across an `.await`. Writes use
//! `BEGIN IMMEDIATE` transactions that roll back unless committed; a page is one transaction
//! (never one per row), with cached prepared statements. The file runs in WAL mode with
//! `synchronous = NORMAL` by default (see [`Synchronous`] for why that is crash-safe, and how to
//! choose `FULL`).
//!
//! # Example
//! An app edits locally while offline; a sync pulls the server's contacts and pushes the edit.
//! The remote is any [`fero_protocol::Remote`] (`fero-http`'s `HttpRemote` in an app; here a
//! one-contact server, hidden).
//! ```
//! use fero::{FeatureSyncConfig, FeroSync};
//! use serde_json::json;
//! # use fero_protocol::*;
//! # use std::sync::{Arc, Mutex};
//! # #[derive(Clone, Default)]
//! # struct Server(Arc<Mutex<Vec<Document>>>);
//! # #[fero::async_trait]
//! # impl Remote for Server {
//! #     async fn pull(&self, _: &str, r: &PullRequest) -> Result<PullResponse, RemoteError> {
//! #         let after = r.checkpoint.as_ref().map_or(0, |c| c.last_sync_id.0);
//! #         let items: Vec<Document> = self.0.lock().unwrap().iter()
//! #             .filter(|d| d.sync_id.0 > after).cloned().collect();
//! #         let last = items.last().map_or(after, |d| d.sync_id.0);
//! #         Ok(PullResponse { items, checkpoint: fero::SyncCheckpoint::at(fero::SyncId(last)), has_more: false })
//! #     }
//! #     async fn push(&self, _: &str, r: &PushRequest) -> Result<PushResponse, RemoteError> {
//! #         let mut rows = self.0.lock().unwrap();
//! #         let results = r.changes.iter().map(|c| {
//! #             let sync_id = fero::SyncId(rows.len() as u64 + 1);
//! #             rows.push(Document { id: c.id.clone(), sync_id, version: fero::Version(1),
//! #                 updated_at: fero::Timestamp(0), deleted: c.deleted, data: c.data.clone() });
//! #             ChangeResult { id: c.id.clone(), mutation_id: c.mutation_id.clone(),
//! #                 outcome: ChangeOutcome::Accepted { version: fero::Version(1), sync_id } }
//! #         }).collect();
//! #         Ok(PushResponse { results })
//! #     }
//! #     async fn digest(&self, _: &str) -> Result<DigestResponse, RemoteError> {
//! #         let mut d = Digest::default();
//! #         for row in self.0.lock().unwrap().iter() { d.add(&row.id, row.version.0); }
//! #         Ok(DigestResponse { count: d.count(), digest: d.hex() })
//! #     }
//! # }
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let remote = Server::default();
//! # remote.push("contacts", &PushRequest { changes: vec![Change { id: "ada".into(),
//! #     base_version: None, mutation_id: MutationId::new("web", 1), deleted: false,
//! #     data: json!({ "name": "Ada" }) }] }).await?;
//! let store = fero_sqlite::SqliteStore::open_in_memory().await?; // or ::open("app.db")
//! store.put("contacts", "grace", json!({ "name": "Grace" })).await?;
//!
//! let contacts = store.sync_handler("contacts", remote)?;
//! let sync = FeroSync::builder()
//!     .metadata_repo(store.metadata_repo())
//!     .initial_sync("contacts", contacts.clone(), FeatureSyncConfig::new())
//!     .background_sync("contacts", contacts.clone(), FeatureSyncConfig::new())
//!     .build()?;
//! sync.run().await?;
//!
//! assert_eq!(store.count("contacts").await?, 2);
//! assert!(store.outbox("contacts").await?.is_empty()); // the edit was pushed
//! assert!(contacts.verify().await?.is_match());
//! sync.dispose().await;
//! # Ok(()) }
//! ```
//!
//! # Feature flags
//! None. SQLite is bundled (compiled into the crate), so no system library is needed.
#![doc(test(attr(deny(warnings))))]

pub mod conflict_log;
pub mod document;
pub mod error;
pub mod handler;
pub mod metadata;
pub mod schema;
pub mod store;
pub mod subscription;
pub mod verify;

mod apply;
mod db;
mod push;
mod resync;

pub use conflict_log::{ConflictLogOutcome, ConflictRecord};
pub use document::{LocalDocument, OutboxEntry, OutboxOp};
pub use error::{Error, Result};
pub use handler::CollectionSync;
pub use metadata::SqliteSyncMetadataRepo;
pub use schema::Synchronous;
pub use store::{ResetReport, SqliteStore, StoreOptions};
pub use subscription::{SubscriptionSync, UnsubscribeReport};
pub use verify::VerifyReport;
