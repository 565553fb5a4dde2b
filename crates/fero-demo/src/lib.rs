//! The whole fero sync story in one command: `cargo run --release -p fero-demo`.
//!
//! A newcomer's first command. With no setup (SQLite files in a temporary folder, the reference
//! server on a free loopback port) it starts `fero-server`, seeds it for one user, and runs two
//! devices, each a [`FeroSync`](fero::FeroSync) over a `fero-sqlite` store and a `fero-http`
//! remote, through every part of the sync story, each step on screen:
//!
//! 1. the server is seeded through its fast path: `user_preferences`, 50k `contacts`, 200k
//!    `messages` (which depend on contacts);
//! 2. device A runs its initial sync, with a progress bar per feature driven by fero's events;
//! 3. device B's initial sync is cancelled half way through `messages` from its event stream and
//!    started again: it resumes at the saved checkpoint, and the pull log shows no page fetched
//!    twice beyond the one in flight;
//! 4. both devices edit offline (the same contacts, their own, a deletion, new messages), then
//!    sync A, B, A: every conflict is listed with both versions, the strategy and the outcome;
//!    then an edit on A reaches B through B's change stream, with no poll timer;
//! 5. each device's store is checked against the server (count and digest per collection);
//! 6. shared data: the server's sync rules share `tasks` per team; alice adds bob (a second user)
//!    to her crew, the crew's tasks move into his device, a task she writes reaches him live and
//!    his edit reaches her live; she removes him, the crew's rows move out of his device at his
//!    next sync, and a task she writes afterwards never reaches him;
//! 7. a summary: items synced, time, items per second, bytes on the wire, retries, conflicts,
//!    what the sharing step counted.
//!
//! # A tour
//! - [`story`]: [`run`], the seven steps in order.
//! - [`options`]: [`Options`], the command line (`--contacts`, `--messages`, `--strategy`,
//!   `--data-dir`, `--json`, `--seed`).
//! - [`server`]: [`DemoServer`], the reference server on `127.0.0.1:0`, seeded, with sync rules.
//! - [`device`]: [`Device`], a store, a remote and an engine; [`remote`]: its pull log.
//! - [`sharing`]: step 6 and its rules ([`sharing::RULES`]); [`team`]: [`TeamDevice`], a team
//!   member's device.
//! - [`watcher`]: [`Watcher`], one task per device turning events into progress and counts.
//! - [`edits`]: the seeded offline edits; [`conflicts`]: the conflict table.
//! - [`output`]: bars on a terminal, plain lines otherwise, nothing with `--json`.
//! - [`summary`]: [`Summary`], the human summary and the JSON object.
//! - [`data`], [`folder`], [`error`]: rows, files, errors.
//!
//! # Example
//! The story with small sizes and no output, as the integration test runs it:
//! ```
//! use fero_demo::{Mode, Options, Output};
//!
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let options = Options { contacts: 200, messages: 400, ..Options::new() };
//! let summary = fero_demo::run(&options, &Output::new(Mode::Quiet)).await?;
//! assert!(summary.converged);
//! assert!(summary.resumed);
//! assert_eq!(summary.conflicts, summary.conflicts_set_up);
//! assert_eq!(summary.sharing.leaked_after_removal, 0);
//! assert!(summary.passed());
//! # Ok(()) }
//! ```
//!
//! # Feature flags
//! None.
#![doc(test(attr(deny(warnings))))]

pub mod conflicts;
pub mod data;
pub mod device;
pub mod edits;
pub mod error;
pub mod folder;
pub mod options;
pub mod output;
pub mod remote;
pub mod server;
pub mod sharing;
pub mod story;
pub mod summary;
pub mod team;
pub mod watcher;

pub use device::{Device, DeviceConfig};
pub use error::DemoError;
pub use options::{Options, Strategy};
pub use output::{Mode, Output};
pub use server::DemoServer;
pub use story::run;
pub use summary::{SharingReport, Summary};
pub use team::{TeamDevice, TeamDeviceConfig};
pub use watcher::Watcher;
