//! The CI budget: hundreds of seeded simulations of three devices under faults keep every
//! invariant. `FERO_SIM_SEED=S cargo test -p fero-sim --test seeds` replays one seed and prints
//! its trace.

use fero::ConflictResolutionStrategy;
use fero_sim::{Sim, SimBuilder, Summary, run_seeds};

/// Two threads: the CI machine has two cores.
const THREADS: usize = 2;

fn replay_from_env(builder: impl Fn() -> SimBuilder) -> bool {
    let Ok(seed) = std::env::var("FERO_SIM_SEED") else {
        return false;
    };
    let seed: u64 = seed
        .parse()
        .unwrap_or_else(|_| panic!("FERO_SIM_SEED={seed:?} is not a number"));
    println!("fero-sim: replaying seed {seed}");
    match builder().seed(seed).build().and_then(Sim::run) {
        Ok(report) => {
            for line in &report.trace {
                println!("{line}");
            }
        }
        Err(error) => {
            if let Some(violation) = error.violation() {
                for line in &violation.trace {
                    println!("{line}");
                }
            }
            panic!("seed {seed} failed: {error}");
        }
    }
    true
}

fn assert_all_passed(summary: &Summary) {
    println!(
        "fero-sim: seeds {}..{}: {} passed, {} failed in {:.1?}; {:?}",
        summary.seeds.start,
        summary.seeds.end,
        summary.passed,
        summary.failures.len(),
        summary.elapsed,
        summary.totals
    );
    if let Some((seed, error)) = summary.first_failure() {
        if let Some(violation) = error.violation() {
            let tail = violation.trace.len().saturating_sub(40);
            for line in &violation.trace[tail..] {
                println!("{line}");
            }
        }
        panic!("seed {seed} failed: {error}");
    }
    assert_eq!(summary.passed, summary.seeds.end - summary.seeds.start);
}

#[test]
fn five_hundred_seeds_of_three_devices_under_faults_keep_every_invariant() {
    if replay_from_env(Sim::builder) {
        return;
    }
    let summary = run_seeds(0..500, THREADS, false, |_| Sim::builder());
    assert_all_passed(&summary);
    // The faults really happened, and the devices really collided.
    let t = summary.totals;
    for (what, count) in [
        ("crashes", t.crashes),
        ("cancels", t.cancels),
        ("server restarts", t.server_restarts),
        ("partitions", t.partitions),
        ("lost requests", t.lost_requests),
        ("lost responses", t.lost_responses),
        ("duplicate deliveries", t.duplicates),
        ("conflict events", t.conflicts),
        ("edits dropped by a conflict", t.dropped_by_conflict),
    ] {
        assert!(count > 100, "only {count} {what} in 500 seeds");
    }
}

#[test]
fn five_devices_on_six_ids_converge_under_every_strategy() {
    for (offset, strategy) in [
        ConflictResolutionStrategy::HighestVersionWins,
        ConflictResolutionStrategy::ServerWins,
        ConflictResolutionStrategy::ClientWins,
        ConflictResolutionStrategy::Manual,
    ]
    .into_iter()
    .enumerate()
    {
        let start = 10_000 * (offset as u64 + 1);
        let summary = run_seeds(start..start + 40, THREADS, true, |_| {
            Sim::builder().devices(5).ids(6).strategy(strategy)
        });
        println!("strategy {strategy}:");
        assert_all_passed(&summary);
        assert!(summary.totals.conflicts > 0, "{strategy}: no conflict met");
    }
}
