//! Deterministic simulation testing for fero: many devices, one server, faults everywhere, and
//! one seed that decides all of it.
//!
//! Sync bugs live in interleavings: a device that goes offline mid-push, a response lost after
//! the server committed, two devices racing on one item, a crash between apply and checkpoint.
//! A [`Sim`] runs N real [`fero::FeroSync`] devices against an in-process [`SimServer`] through
//! a fault layer, interleaves edits, syncs, cancels, crashes, partitions and server restarts
//! from a seed on tokio's paused clock, and checks invariants after every step and at
//! quiescence. A failing seed replays exactly: `cargo run -p fero-sim -- --seed S --verbose`.
//!
//! # A tour
//! - [`sim`]: [`Sim`] and its [`SimBuilder`]: the scheduler, scripted steps in turmoil's words
//!   (`step`, `run`, `crash`, `bounce`, `partition`, `repair`), the [`SimReport`].
//! - [`server`]: [`SimServer`], the reference server's semantics in process.
//! - [`network`]: [`SimRemote`], the fault layer in front of it, and [`FaultProfile`].
//! - [`store`]: [`SimStore`] and [`SimDoc`], a device's store split into durable and volatile
//!   state; [`SimMetadataRepo`].
//! - [`handler`]: [`SimHandler`], the device handler, and the [`DeviceContext`] a user's handler
//!   factory receives.
//! - [`model`]: the reference model and the invariants; [`error`]: [`SimError`], [`Violation`].
//! - [`runner`]: [`run_seeds`], many seeds on several threads.
//!
//! # The invariants
//! After every step: a checkpoint never goes backwards and never covers data the durable store
//! lacks; every acknowledged write is on the server or overwritten by a writer that had seen it;
//! a change delivered twice gets the same answer; every started sync reports its end. At
//! quiescence (faults off, every device synced until a round changes nothing): every device
//! equals the server (ids, versions, data, tombstones), and every local edit reached the server
//! or was dropped with a `ConflictResolved` event.
//!
//! # Example: your handler under the simulation
//! ```
//! use fero::{ApplyContext, ApplyResult, BackgroundSyncHandler, HandlerResult, PushResult};
//! use fero::{RemoteChanges, SyncBatchResult, SyncCheckpoint};
//! use fero_protocol::{Document, PullRequest, PushRequest, Remote};
//! use fero_sim::{DeviceContext, Sim, SimDoc, SimRemote, SimStore, batch_from};
//!
//! /// An app's handler: its own requests over the `Remote` trait, its data in the sim's store.
//! struct MyHandler {
//!     store: SimStore,
//!     remote: SimRemote,
//! }
//!
//! #[fero::async_trait]
//! impl BackgroundSyncHandler for MyHandler {
//!     type Local = SimDoc;
//!     type Server = Document;
//!
//!     async fn get_locally_modified(&self) -> HandlerResult<Vec<SimDoc>> {
//!         Ok(self.store.modified()?)
//!     }
//!     async fn fetch_remote_changes(
//!         &self,
//!         checkpoint: Option<&SyncCheckpoint>,
//!         batch_size: usize,
//!     ) -> HandlerResult<SyncBatchResult<Document>> {
//!         let request = PullRequest { checkpoint: checkpoint.cloned(), limit: batch_size as u32, subscription: None };
//!         Ok(batch_from(self.remote.pull("docs", &request).await?))
//!     }
//!     async fn apply_remote_changes(
//!         &self,
//!         changes: RemoteChanges<SimDoc, Document>,
//!         context: &ApplyContext,
//!     ) -> HandlerResult<ApplyResult> {
//!         Ok(self.store.apply(changes, context).await?)
//!     }
//!     async fn push_local_changes(&self, items: &[SimDoc]) -> HandlerResult<PushResult<Document>> {
//!         let changes = items.iter().map(|doc| doc.to_change(self.store.device())).collect();
//!         let response = self.remote.push("docs", &PushRequest { changes }).await?;
//!         Ok(self.store.record_push(items, &response)?)
//!     }
//! }
//!
//! let report = Sim::builder()
//!     .seed(7)
//!     .devices(2)
//!     .steps(20)
//!     .handler(|device: DeviceContext| MyHandler { store: device.store, remote: device.remote })
//!     .build()?
//!     .run()?;
//! assert_eq!(report.seed, 7);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Feature flags
//! None. The crate needs tokio's `test-util` feature for paused time.
#![doc(test(attr(deny(warnings))))]

pub mod error;
pub mod handler;
pub mod model;
pub mod network;
pub mod runner;
pub mod server;
pub mod sim;
pub mod store;

mod broken;
mod clock;

#[doc(hidden)]
pub use broken::Broken;
pub use clock::SimClock;
pub use error::{Invariant, SimError, StoreError, Violation};
pub use handler::{COLLECTION, DeviceContext, SimHandler, batch_from};
pub use model::ModelCounts;
pub use network::{FaultCounts, FaultProfile, SimRemote};
pub use runner::{Summary, Totals, run_seeds};
pub use server::{SimServer, Write};
pub use sim::{Sim, SimBuilder, SimReport};
pub use store::{SimDoc, SimMetadataRepo, SimStore};
