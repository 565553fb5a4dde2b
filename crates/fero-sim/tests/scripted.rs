//! Scripted scenarios in turmoil's style: one fault at a chosen moment, then the invariants
//! (checked after every call) and quiescence (every device equals the server, no edit lost).

use std::time::Duration;

use fero::ConflictResolutionStrategy;
use fero_protocol::{PullRequest, Remote};
use fero_sim::{COLLECTION, FaultProfile, Sim, SimBuilder};

fn quiet(devices: usize) -> SimBuilder {
    Sim::builder()
        .seed(5)
        .devices(devices)
        .faults(false)
        .strategy(ConflictResolutionStrategy::HighestVersionWins)
}

#[test]
fn a_device_offline_for_days_catches_up_after_repair() {
    let mut sim = quiet(2).build().unwrap();
    sim.partition(0).unwrap();
    let mut written = Vec::new();
    for i in 0..5 {
        written.push(sim.edit(1, &format!("item-{i}")).unwrap());
    }
    assert!(sim.sync(1).unwrap().is_ok());
    sim.elapse(Duration::from_secs(3 * 24 * 3_600));
    sim.edit(0, "item-9").unwrap();
    assert!(
        sim.sync(0).unwrap().is_err(),
        "a partitioned device cannot sync"
    );
    sim.repair(0).unwrap();
    assert!(sim.sync(0).unwrap().is_ok());
    let docs = sim.store(0).unwrap().docs();
    for (i, tag) in written.iter().enumerate() {
        assert_eq!(docs[&format!("item-{i}")].data["tag"], *tag.as_str());
    }
    sim.quiesce().unwrap();
}

#[test]
fn a_push_whose_response_is_lost_is_replayed_not_written_twice() {
    let mut sim = quiet(1).build().unwrap();
    let tag = sim.edit(0, "item-1").unwrap();
    let mut profile = FaultProfile::none();
    profile.lost_response = 1.0;
    profile.pushes_only = true;
    sim.set_fault_profile(profile);
    // Every attempt reaches the server and loses its answer: the run fails, the server wrote once.
    assert!(sim.sync(0).unwrap().is_err());
    let (_, _, replays) = sim.server().call_counts();
    assert!(replays > 0, "retries must be answered as replays");
    assert_eq!(sim.server().history().len(), 1);
    assert!(sim.store(0).unwrap().get("item-1").unwrap().modified);
    sim.set_faults(false);
    assert!(sim.sync(0).unwrap().is_ok());
    assert_eq!(sim.server().history().len(), 1);
    let doc = sim.store(0).unwrap().get("item-1").unwrap();
    assert!(!doc.modified);
    assert_eq!(doc.data["tag"], *tag.as_str());
    sim.quiesce().unwrap();
}

#[test]
fn crashes_at_any_moment_of_a_sync_leave_a_consistent_device() {
    let mut sim = quiet(2).build().unwrap();
    for i in 0..12 {
        sim.edit(1, &format!("item-{i}")).unwrap();
    }
    assert!(sim.sync(1).unwrap().is_ok());
    // Device 0 pulls 12 rows in pages of a few; crash it at every few milliseconds of the pull,
    // with an edit of its own pending. Each call checks the checkpoint against the durable data.
    sim.edit(0, "item-3").unwrap();
    for after in (0..120).step_by(7) {
        sim.crash_during_sync(0, Duration::from_millis(after))
            .unwrap();
    }
    let dropped = sim
        .trace()
        .iter()
        .filter(|line| line.contains("dropped in flight"))
        .count();
    assert!(dropped > 3, "only {dropped} crash(es) hit a sync in flight");
    sim.quiesce().unwrap();
}

#[test]
fn a_cancelled_cycle_ends_with_an_event_and_the_next_run_resumes() {
    let mut sim = quiet(2).build().unwrap();
    for i in 0..10 {
        sim.edit(1, &format!("item-{i}")).unwrap();
    }
    assert!(sim.sync(1).unwrap().is_ok());
    sim.cancel_during_sync(0, Duration::from_millis(15))
        .unwrap();
    let position = |sim: &Sim| {
        sim.store(0)
            .unwrap()
            .checkpoint(COLLECTION)
            .map(|c| c.last_sync_id)
    };
    let before = position(&sim);
    let report = sim.sync(0).unwrap().unwrap();
    assert!(report.totals().pulled > 0);
    assert!(position(&sim) > before);
    sim.quiesce().unwrap();
}

#[test]
fn a_server_restart_fails_calls_in_flight_and_sync_recovers() {
    let mut sim = quiet(2).build().unwrap();
    for i in 0..6 {
        sim.edit(0, &format!("item-{i}")).unwrap();
    }
    sim.restart_server_during_sync(0, Duration::from_millis(3), Duration::from_millis(800))
        .unwrap();
    assert!(sim.report().faults.cut_by_restart + sim.report().faults.unavailable > 0);
    sim.quiesce().unwrap();
    assert_eq!(sim.server().rows(COLLECTION).len(), 6);
}

#[test]
fn a_bounced_device_keeps_its_pending_edits() {
    let mut sim = quiet(2).build().unwrap();
    let tag = sim.edit(0, "item-1").unwrap();
    sim.bounce(0).unwrap();
    assert!(sim.store(0).unwrap().get("item-1").unwrap().modified);
    sim.quiesce().unwrap();
    assert_eq!(
        sim.server().row(COLLECTION, "item-1").unwrap().data["tag"],
        *tag.as_str()
    );
}

#[test]
fn a_remote_for_a_device_sees_what_another_device_pushed() {
    let mut sim = quiet(2).build().unwrap();
    let tag = sim.edit(1, "item-1").unwrap();
    assert!(sim.sync(1).unwrap().is_ok());
    let remote = sim.remote_for(0).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let page = runtime
        .block_on(remote.pull(
            COLLECTION,
            &PullRequest {
                checkpoint: None,
                limit: 10,
                subscription: None,
            },
        ))
        .unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].data["tag"], *tag.as_str());
}
