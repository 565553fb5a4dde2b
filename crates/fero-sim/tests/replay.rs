//! A seed decides everything: the same seed replays the same steps, faults and outcomes.

use fero_sim::Sim;

#[test]
fn the_same_seed_replays_the_same_trace() {
    for seed in [3, 41, 977] {
        println!("fero-sim: seed {seed}");
        let first = Sim::builder().seed(seed).build().unwrap().run().unwrap();
        let second = Sim::builder().seed(seed).build().unwrap().run().unwrap();
        assert_eq!(first.trace, second.trace, "seed {seed}");
        assert_eq!(first.model, second.model);
        assert_eq!(first.faults, second.faults);
        assert_eq!(first.server_writes, second.server_writes);
    }
}

#[test]
fn different_seeds_take_different_paths() {
    let a = Sim::builder().seed(1).build().unwrap().run().unwrap();
    let b = Sim::builder().seed(2).build().unwrap().run().unwrap();
    assert_ne!(a.trace, b.trace);
}
