//! fero-bench: the benchmark program of `bench-spec.md`, as a library so that a smoke test can run
//! every workload at tiny sizes.
//!
//! `cargo run --release -p fero-bench -- <workload> [--n N] [--batch B] [--runs R]` prints one
//! JSON line per measurement; `-- all` runs every workload at its default sizes, each in a fresh
//! child process so that the peak RSS it reports is that workload's own. BENCHMARKS.md at the
//! repo root records the figures.
//!
//! # A tour
//! - [`data`]: bench-spec's item, generated deterministically from its index.
//! - [`store`]: [`CompactStore`](store::CompactStore), an arena-backed local store with an
//!   outbox, compact enough for 1M items in about 200 MB.
//! - [`server`]: the in-process "servers": a feed that builds each page when fetched, and a sink
//!   that accepts every push.
//! - [`handler`]: the handlers W1–W3 register with `FeroSync`.
//! - [`end_to_end`]: W4–W6 against the reference server (`fero-server`, SQLite) in a child
//!   process, over loopback HTTP (`fero-http`), into `fero-sqlite`'s store; the server and W5's
//!   client roles of the program.
//! - [`scale`]: W8 (10,000 change streams held by one real `fero-server` process, a push fanned
//!   out to 1,000 listeners) and W9 (200 concurrent devices pushing and pulling), with the
//!   server's RSS and CPU read from `/proc`.
//! - [`sharing`]: W7, W7-move and W7-buckets: shared collections (team rules, buckets) on an
//!   in-process reference server, synced over loopback HTTP into `fero-sqlite`'s store.
//! - [`workload`]: the workloads, their default sizes, and [`run`].
//! - [`report`]: the JSON line and the peak RSS.
//!
//! # Example
//! ```
//! use fero_bench::{RunOptions, Workload};
//!
//! let measured = fero_bench::run(Workload::W1, RunOptions::new(2_000).batch(500))?;
//! assert_eq!(measured.items, 2_000);
//! assert_eq!(measured.line.workload, "W1");
//! println!("{}", measured.line.to_json());
//! # Ok::<(), fero_bench::BenchError>(())
//! ```
//!
//! # Feature flags
//! None.
#![doc(test(attr(deny(warnings))))]

pub mod data;
pub mod end_to_end;
pub mod error;
pub mod handler;
pub mod report;
pub mod scale;
pub mod server;
pub mod sharing;
pub mod store;
pub mod workload;

mod in_process;

pub use error::BenchError;
pub use report::{BenchLine, peak_rss_mb};
pub use workload::{Measurement, RunOptions, Workload, default_schedule, run};
