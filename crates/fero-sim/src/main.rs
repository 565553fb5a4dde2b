//! `cargo run -p fero-sim -- --seeds 1000` runs seeds 0..1000 and prints a summary;
//! `cargo run -p fero-sim -- --seed S --verbose` replays one seed with its step trace.

use std::process::ExitCode;

use clap::Parser;
use fero::ConflictResolutionStrategy;
use fero_sim::{Broken, Sim, SimBuilder, run_seeds};

/// Deterministic simulation of fero devices and a server under faults.
#[derive(Debug, Parser)]
#[command(name = "fero-sim", version)]
struct Args {
    /// Run this many seeds, starting at --start.
    #[arg(long, default_value_t = 100, conflicts_with = "seed")]
    seeds: u64,
    /// The first seed of --seeds.
    #[arg(long, default_value_t = 0)]
    start: u64,
    /// Run one seed only.
    #[arg(long)]
    seed: Option<u64>,
    /// Print the step trace (of the single seed, or of the first failing one).
    #[arg(long)]
    verbose: bool,
    /// Simulated devices.
    #[arg(long, default_value_t = 3)]
    devices: usize,
    /// Distinct item ids.
    #[arg(long, default_value_t = 20)]
    ids: usize,
    /// Steps before quiescence.
    #[arg(long, default_value_t = 60)]
    steps: u64,
    /// Conflict strategy (default: drawn from each seed): highest-version-wins, server-wins,
    /// client-wins or manual.
    #[arg(long, value_parser = parse_strategy)]
    strategy: Option<ConflictResolutionStrategy>,
    /// Never inject faults.
    #[arg(long)]
    no_faults: bool,
    /// Lenient accounting: a conflict event covers any pending edit of its item, not only the
    /// edit whose content it carries (strict is the default).
    #[arg(long)]
    lenient_conflict_events: bool,
    /// Threads running seeds (default: available cores).
    #[arg(long)]
    threads: Option<usize>,
    /// A deliberately broken variant, to see the simulation catch it.
    #[arg(long, hide = true, value_parser = parse_broken)]
    broken: Option<Broken>,
}

fn parse_strategy(name: &str) -> Result<ConflictResolutionStrategy, String> {
    [
        ConflictResolutionStrategy::HighestVersionWins,
        ConflictResolutionStrategy::ServerWins,
        ConflictResolutionStrategy::ClientWins,
        ConflictResolutionStrategy::Manual,
    ]
    .into_iter()
    .find(|s| s.to_string() == name)
    .ok_or_else(|| {
        format!("unknown strategy {name:?}: use highest-version-wins, server-wins, client-wins or manual")
    })
}

fn parse_broken(name: &str) -> Result<Broken, String> {
    Broken::from_name(name).ok_or_else(|| {
        format!(
            "unknown variant {name:?}: use {}",
            Broken::ALL.map(Broken::name).join(", ")
        )
    })
}

impl Args {
    fn builder(&self) -> SimBuilder {
        let mut builder = Sim::builder()
            .devices(self.devices)
            .ids(self.ids)
            .steps(self.steps)
            .faults(!self.no_faults)
            .strict_conflict_events(!self.lenient_conflict_events)
            .broken(self.broken.unwrap_or_default());
        if let Some(strategy) = self.strategy {
            builder = builder.strategy(strategy);
        }
        builder
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match args.seed {
        Some(seed) => replay(&args, seed),
        None => many(&args),
    }
}

fn replay(args: &Args, seed: u64) -> ExitCode {
    let result = args.builder().seed(seed).build().and_then(Sim::run);
    match result {
        Ok(report) => {
            if args.verbose {
                for line in &report.trace {
                    println!("{line}");
                }
            }
            println!(
                "seed {seed}: passed ({} steps, strategy {}, {} edits, {} conflict events, \
                 {} crashes, {} lost responses)",
                report.steps,
                report.strategy,
                report.model.edits,
                report.model.conflict_events,
                report.crashes,
                report.faults.lost_responses
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            if let (true, Some(violation)) = (args.verbose, error.violation()) {
                for line in &violation.trace {
                    println!("{line}");
                }
            }
            eprintln!("seed {seed}: FAILED: {error}");
            ExitCode::FAILURE
        }
    }
}

fn many(args: &Args) -> ExitCode {
    let seeds = args.start..args.start.saturating_add(args.seeds);
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    println!(
        "fero-sim: seeds {}..{} ({} devices, {} ids, {} steps) on {threads} thread(s)",
        seeds.start, seeds.end, args.devices, args.ids, args.steps
    );
    let summary = run_seeds(seeds.clone(), threads, true, |_| args.builder());
    let t = summary.totals;
    println!(
        "{} passed, {} failed in {:.1?}; {} edits, {} conflict events ({} dropped a local edit), \
         {} crashes, {} cancels, {} server restarts, {} partitions, {} lost requests, \
         {} lost responses, {} duplicate deliveries",
        summary.passed,
        summary.failures.len(),
        summary.elapsed,
        t.edits,
        t.conflicts,
        t.dropped_by_conflict,
        t.crashes,
        t.cancels,
        t.server_restarts,
        t.partitions,
        t.lost_requests,
        t.lost_responses,
        t.duplicates
    );
    match summary.first_failure() {
        None => ExitCode::SUCCESS,
        Some((seed, error)) => {
            if let (true, Some(violation)) = (args.verbose, error.violation()) {
                for line in &violation.trace {
                    println!("{line}");
                }
            }
            eprintln!("seed {seed} FAILED: {error}");
            if let Some(violation) = error.violation() {
                eprintln!("replay: {}", violation.replay);
            }
            ExitCode::FAILURE
        }
    }
}
