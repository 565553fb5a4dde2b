//! The workloads of bench-spec, their default sizes, and [`run`]: one measurement of one workload.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::end_to_end;
use crate::error::BenchError;
use crate::in_process;
use crate::report::BenchLine;

/// One workload of bench-spec.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Workload {
    /// Initial sync through `FeroSync` with in-process handlers.
    W1,
    /// The same handler calls in a hand-written loop: the floor for W1.
    W1Raw,
    /// Push of M locally modified items to a sink that accepts all.
    W2,
    /// M items modified on both sides, every one resolved by the strategy.
    W3,
    /// End to end: reference server (SQLite, loopback HTTP) to a client's fresh SQLite file.
    W4,
    /// The same rows into the same SQLite schema, one prepared statement, one transaction per
    /// page, no HTTP: the floor for W4.
    W4Raw,
    /// W4 killed with SIGKILL half way and restarted; reports the items fetched twice.
    W5,
    /// One local edit, one pull + push round against a server with N items already synced.
    W6,
}

impl Workload {
    /// Every workload, in bench-spec's order.
    pub const ALL: [Workload; 8] = [
        Workload::W1,
        Workload::W1Raw,
        Workload::W2,
        Workload::W3,
        Workload::W4,
        Workload::W4Raw,
        Workload::W5,
        Workload::W6,
    ];

    /// The name printed in the JSON line (`W1`, `W1-raw`, …).
    pub fn name(self) -> &'static str {
        match self {
            Workload::W1 => "W1",
            Workload::W1Raw => "W1-raw",
            Workload::W2 => "W2",
            Workload::W3 => "W3",
            Workload::W4 => "W4",
            Workload::W4Raw => "W4-raw",
            Workload::W5 => "W5",
            Workload::W6 => "W6",
        }
    }

    /// The workload named `name`, ignoring case (`w1-raw`, `W1_raw`, `W1-RAW`).
    ///
    /// # Examples
    /// ```
    /// use fero_bench::Workload;
    /// assert_eq!(Workload::parse("w1-raw"), Some(Workload::W1Raw));
    /// assert_eq!(Workload::parse("W9"), None);
    /// ```
    pub fn parse(name: &str) -> Option<Workload> {
        let wanted = name.replace('_', "-");
        Workload::ALL
            .into_iter()
            .find(|w| w.name().eq_ignore_ascii_case(&wanted))
    }

    /// bench-spec's sizes (N or M).
    pub fn default_sizes(self) -> &'static [u64] {
        match self {
            Workload::W1 | Workload::W1Raw => &[10_000, 50_000, 200_000, 1_000_000],
            Workload::W2 => &[20_000, 200_000],
            Workload::W3 => &[10_000],
            Workload::W4 | Workload::W4Raw => &[100_000, 1_000_000],
            Workload::W5 => &[200_000],
            Workload::W6 => &[1_000_000],
        }
    }

    /// Runs per measurement when not told otherwise. The in-process workloads take well under a
    /// second and their runs differ by up to 10% on a 2-core machine (page faults of a fresh
    /// heap), which is twice the margin of the W1/W1-raw goal: the median of 5 is cheap. W4 and
    /// its floor share 2 cores with the server process, so a single run can be off by a third:
    /// the median of 5 too. W5 counts a kill, and W6 is already the median of 25 rounds.
    pub fn default_runs(self) -> u32 {
        match self {
            Workload::W1 | Workload::W1Raw | Workload::W2 | Workload::W3 => 5,
            Workload::W4 | Workload::W4Raw => 5,
            Workload::W5 | Workload::W6 => 1,
        }
    }

    /// The hand-written floor this workload is compared with (W1-raw for W1, W4-raw for W4).
    ///
    /// # Examples
    /// ```
    /// use fero_bench::Workload;
    /// assert_eq!(Workload::W4.floor(), Some(Workload::W4Raw));
    /// assert_eq!(Workload::W2.floor(), None);
    /// ```
    pub fn floor(self) -> Option<Workload> {
        match self {
            Workload::W1 => Some(Workload::W1Raw),
            Workload::W4 => Some(Workload::W4Raw),
            _ => None,
        }
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Every workload at every default size, in the order `all` runs them: a workload is followed by
/// its floor at the same size (`all` then alternates their runs, so both see the same machine
/// conditions).
pub fn default_schedule() -> Vec<(Workload, u64)> {
    let mut schedule = Vec::new();
    for (workload, floor) in [
        (Workload::W1, Workload::W1Raw),
        (Workload::W4, Workload::W4Raw),
    ] {
        for &n in workload.default_sizes() {
            schedule.push((workload, n));
            schedule.push((floor, n));
        }
        if workload == Workload::W1 {
            for other in [Workload::W2, Workload::W3] {
                schedule.extend(other.default_sizes().iter().map(|&n| (other, n)));
            }
        }
    }
    for other in [Workload::W5, Workload::W6] {
        schedule.extend(other.default_sizes().iter().map(|&n| (other, n)));
    }
    schedule
}

/// What to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunOptions {
    /// Items (N or M).
    pub n: u64,
    /// Page size.
    pub batch: usize,
    /// Runs; the median is reported.
    pub runs: u32,
    /// The bench program, started as the reference server and W5's client (default: this
    /// process's own executable).
    pub program: Option<PathBuf>,
}

impl RunOptions {
    /// `n` items in pages of [`fero::DEFAULT_BATCH_SIZE`], one run, this executable as the
    /// bench program.
    pub fn new(n: u64) -> Self {
        RunOptions {
            n,
            batch: fero::DEFAULT_BATCH_SIZE,
            runs: 1,
            program: None,
        }
    }

    /// The bench program to start as server and client (a test passes
    /// `env!("CARGO_BIN_EXE_fero-bench")`).
    pub fn program(mut self, program: impl Into<PathBuf>) -> Self {
        self.program = Some(program.into());
        self
    }

    /// Another page size.
    pub fn batch(mut self, batch: usize) -> Self {
        self.batch = batch;
        self
    }

    /// Another number of runs (at least 1).
    pub fn runs(mut self, runs: u32) -> Self {
        self.runs = runs.max(1);
        self
    }
}

/// One measured run.
#[derive(Clone, Debug)]
pub(crate) struct Sample {
    pub(crate) elapsed: Duration,
    /// Items the run verifiably synced.
    pub(crate) items: u64,
    /// What `items_per_s` counts: the items, except for W6 (rounds, one edit each).
    pub(crate) rate_items: u64,
    pub(crate) fetched_twice: Option<u64>,
    pub(crate) latency: Option<Duration>,
}

impl Sample {
    pub(crate) fn new(elapsed: Duration, items: u64) -> Self {
        Sample {
            elapsed,
            items,
            rate_items: items,
            fetched_twice: None,
            latency: None,
        }
    }
}

/// A workload's result: the printed line and the item count it verified.
#[derive(Clone, Debug)]
pub struct Measurement {
    /// The JSON line.
    pub line: BenchLine,
    /// Items the (median) run synced, checked against the store and the engine's report.
    pub items: u64,
}

/// Runs `workload` `options.runs` times in this process and reports the median run, with this
/// process's peak RSS. An in-process workload (W1, W1-raw, W2, W3) runs once more first, untimed,
/// as a warm-up.
///
/// # Errors
/// [`BenchError::InvalidSize`], or the workload's failure (a failed sync, or a count after the
/// run that is not what the workload must produce).
pub fn run(workload: Workload, options: RunOptions) -> Result<Measurement, BenchError> {
    let name = workload.name();
    if options.n == 0 || options.batch == 0 {
        return Err(BenchError::InvalidSize {
            workload: name,
            n: options.n,
            batch: options.batch,
        });
    }
    let program = match &options.program {
        Some(program) => program.clone(),
        None => std::env::current_exe().map_err(|source| BenchError::Io {
            what: "find the bench program's own path (to start the server and client)".into(),
            source,
        })?,
    };
    let (n, batch) = (options.n, options.batch);
    let mut samples = Vec::new();
    // The in-process workloads take milliseconds, so a cold process (lazy symbol binding, the
    // allocator's first heap growth, first-touch page faults) weighs on them far more than on
    // the engine's steady state; they get one untimed warm-up run at the same size first, as
    // criterion warms up and as the peer's in-process figures are medians of repeated runs.
    // The end-to-end workloads run for seconds (W5 is a kill) and are measured cold.
    let warmup = u32::from(matches!(
        workload,
        Workload::W1 | Workload::W1Raw | Workload::W2 | Workload::W3
    ));
    for run in 0..options.runs.max(1) + warmup {
        let sample = match workload {
            Workload::W1 => {
                on_current_thread(name, |rt| rt.block_on(in_process::initial_sync(n, batch)))
            }
            Workload::W1Raw => on_current_thread(name, |rt| {
                rt.block_on(in_process::initial_sync_raw(n, batch))
            }),
            Workload::W2 => on_current_thread(name, |rt| rt.block_on(in_process::push(n, batch))),
            Workload::W3 => {
                on_current_thread(name, |rt| rt.block_on(in_process::conflicts(n, batch)))
            }
            Workload::W4 => end_to_end::end_to_end(&program, n, batch),
            Workload::W4Raw => end_to_end::raw_inserts(n, batch),
            Workload::W5 => end_to_end::resume(&program, n, batch),
            Workload::W6 => end_to_end::round_latency(&program, n, batch),
        }?;
        if run >= warmup {
            samples.push(sample);
        }
    }
    samples.sort_by_key(|s| s.elapsed);
    let median = samples.swap_remove(samples.len() / 2);
    let mut line = BenchLine::new(name, n, batch, median.elapsed)?;
    line.items_per_s = per_second(median.rate_items, median.elapsed);
    line.fetched_twice = median.fetched_twice;
    line.latency_ms = median
        .latency
        .map(|l| (l.as_secs_f64() * 1e6).round() / 1e3);
    Ok(Measurement {
        line,
        items: median.items,
    })
}

/// Runs an in-process workload on a current-thread runtime: the handlers do no I/O, so one
/// thread is what a hand-written loop would use too.
fn on_current_thread(
    workload: &'static str,
    run: impl FnOnce(&tokio::runtime::Runtime) -> Result<Sample, BenchError>,
) -> Result<Sample, BenchError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|source| BenchError::Runtime { workload, source })?;
    run(&runtime)
}

/// `count / elapsed`, rounded; 0 for a zero duration.
pub(crate) fn per_second(count: u64, elapsed: Duration) -> u64 {
    let seconds = elapsed.as_secs_f64();
    if seconds > 0.0 {
        (count as f64 / seconds).round() as u64
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_covers_every_workload_at_every_default_size_once() {
        let schedule = default_schedule();
        let expected: usize = Workload::ALL.iter().map(|w| w.default_sizes().len()).sum();
        assert_eq!(schedule.len(), expected);
        for workload in Workload::ALL {
            for &n in workload.default_sizes() {
                assert!(schedule.contains(&(workload, n)), "{workload} {n}");
            }
        }
        assert_eq!(schedule[0], (Workload::W1, 10_000));
        assert_eq!(schedule[1], (Workload::W1Raw, 10_000));
    }

    #[test]
    fn names_round_trip() {
        for workload in Workload::ALL {
            assert_eq!(Workload::parse(workload.name()), Some(workload));
        }
    }
}
