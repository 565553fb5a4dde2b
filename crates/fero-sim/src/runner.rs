//! Many seeds at once: [`run_seeds`] spreads a seed range over threads (each seed on its own
//! single-threaded runtime, so each stays deterministic) and stops at the first failure.

use std::ops::Range;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::error::SimError;
use crate::server::lock;
use crate::sim::{SimBuilder, SimReport};

/// What a batch of seeds did.
#[derive(Debug)]
#[non_exhaustive]
pub struct Summary {
    /// The seeds asked for.
    pub seeds: Range<u64>,
    /// Seeds that ran to the end without a violation.
    pub passed: u64,
    /// The failing seeds found, lowest first. With `stop_at_first_failure` every seed below the
    /// lowest failing one ran and passed.
    pub failures: Vec<(u64, SimError)>,
    /// Wall-clock time taken.
    pub elapsed: Duration,
    /// Conflict events, crashes and lost responses across the passing seeds: evidence that
    /// the faults actually happened.
    pub totals: Totals,
}

/// Sums over passing seeds.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Totals {
    /// Local edits.
    pub edits: u64,
    /// Conflict events.
    pub conflicts: u64,
    /// Edits dropped by a conflict (with an event).
    pub dropped_by_conflict: u64,
    /// Device crashes.
    pub crashes: u64,
    /// Cancels.
    pub cancels: u64,
    /// Server restarts.
    pub server_restarts: u64,
    /// Partitions.
    pub partitions: u64,
    /// Responses lost after the server applied the call.
    pub lost_responses: u64,
    /// Requests lost.
    pub lost_requests: u64,
    /// Duplicate deliveries.
    pub duplicates: u64,
}

impl Totals {
    fn add(&mut self, report: &SimReport) {
        self.edits += report.model.edits;
        self.conflicts += report.model.conflict_events;
        self.dropped_by_conflict += report.model.dropped_by_conflict;
        self.crashes += report.crashes;
        self.cancels += report.cancels;
        self.server_restarts += report.server_restarts;
        self.partitions += report.partitions;
        self.lost_responses += report.faults.lost_responses;
        self.lost_requests += report.faults.lost_requests;
        self.duplicates += report.faults.duplicates;
    }
}

impl Summary {
    /// The lowest failing seed and its error.
    pub fn first_failure(&self) -> Option<&(u64, SimError)> {
        self.failures.first()
    }
}

/// Runs `configure(seed).build()?.run()` for every seed of `seeds` on `threads` threads.
///
/// With `stop_at_first_failure`, seeds are claimed in order and no new seed starts after a
/// failure, so the lowest failing seed is always found.
pub fn run_seeds(
    seeds: Range<u64>,
    threads: usize,
    stop_at_first_failure: bool,
    configure: impl Fn(u64) -> SimBuilder + Sync,
) -> Summary {
    let started = Instant::now();
    let next = AtomicU64::new(seeds.start);
    let stop = AtomicBool::new(false);
    let passed = AtomicU64::new(0);
    let failures = Mutex::new(Vec::new());
    let totals = Mutex::new(Totals::default());
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| {
                while !stop.load(Ordering::Acquire) {
                    let seed = next.fetch_add(1, Ordering::AcqRel);
                    if seed >= seeds.end {
                        break;
                    }
                    match configure(seed).seed(seed).build().and_then(|sim| sim.run()) {
                        Ok(report) => {
                            passed.fetch_add(1, Ordering::AcqRel);
                            lock(&totals).add(&report);
                        }
                        Err(error) => {
                            lock(&failures).push((seed, error));
                            if stop_at_first_failure {
                                stop.store(true, Ordering::Release);
                            }
                        }
                    }
                }
            });
        }
    });
    let mut failures = failures
        .into_inner()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    failures.sort_by_key(|(seed, _)| *seed);
    Summary {
        seeds,
        passed: passed.into_inner(),
        failures,
        elapsed: started.elapsed(),
        totals: totals
            .into_inner()
            .unwrap_or_else(|poisoned| poisoned.into_inner()),
    }
}
