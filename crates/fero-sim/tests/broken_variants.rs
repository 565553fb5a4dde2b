//! Proof that the simulation finds bugs: each deliberately broken variant (a store that saves
//! the checkpoint before the page's data, a server that ignores base versions, a store that
//! drops an edit the engine did not mark as discarded) is caught within its seed budget, by the
//! invariant that guards against it, while the correct variant passes the same seeds.

use fero_sim::{Broken, Invariant, Sim, run_seeds};

/// Seeds each variant is run on; it must be caught on at least one, and is in fact caught on a
/// good share of them (asserted below, so a weakened invariant shows up as a falling rate).
const BUDGET: u64 = 200;

/// The smallest share of the budget's seeds that must catch each variant (measured: 34 % for
/// the checkpoint, 91 % for the blind overwrite, 58 % for the dropped edit, over seeds 0..200).
const MIN_CATCH_RATE_PERCENT: u64 = 10;

#[test]
fn each_broken_variant_is_caught_within_its_seed_budget_and_the_correct_one_passes() {
    for (variant, guards) in [
        (
            Broken::CheckpointBeforeData,
            &[Invariant::CheckpointPastData, Invariant::NotConverged][..],
        ),
        (
            Broken::BlindOverwrite,
            &[Invariant::AcknowledgedWriteLost][..],
        ),
        (
            Broken::DropUnseenEdit,
            &[Invariant::LocalEditLostSilently, Invariant::NotConverged][..],
        ),
    ] {
        let summary = run_seeds(0..BUDGET, 2, false, |_| Sim::builder().broken(variant));
        let Some((seed, error)) = summary.first_failure() else {
            panic!("{variant:?} passed seeds 0..{BUDGET}: the simulation did not catch it");
        };
        println!(
            "{variant:?}: caught by {} of seeds 0..{BUDGET}, first at seed {seed}: {error}",
            summary.failures.len()
        );
        for (seed, error) in &summary.failures {
            let violation = error.violation().unwrap_or_else(|| {
                panic!("{variant:?}: seed {seed} failed without a violation: {error}")
            });
            assert!(
                guards.contains(&violation.invariant),
                "{variant:?}, seed {seed}: caught by {:?}, expected one of {guards:?}",
                violation.invariant
            );
        }
        assert!(
            summary.failures.len() as u64 * 100 >= BUDGET * MIN_CATCH_RATE_PERCENT,
            "{variant:?} was caught by only {} of {BUDGET} seeds",
            summary.failures.len()
        );
    }
    let correct = run_seeds(0..BUDGET, 2, true, |_| Sim::builder());
    if let Some((seed, error)) = correct.first_failure() {
        panic!("the correct variant failed seed {seed}: {error}");
    }
    assert_eq!(correct.passed, BUDGET);
    println!("the correct variant passed seeds 0..{BUDGET}");
}
