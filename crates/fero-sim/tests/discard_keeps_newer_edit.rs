//! Regression for a fero bug the simulation found (seeds 3, 49, 54 and 59 of the default setup
//! with strict conflict accounting): a local edit made while a cycle is in flight was dropped by a
//! conflict decision the engine took for an older copy of the same item.
//!
//! The engine lists the modified items once per pull. `RemoteChanges::discard_local` used to
//! carry only the item's id, so a store could not tell the listed edit from a newer one made
//! after the listing, and dropped whatever was pending, with no event naming the newer edit.
//! `discard_local` now carries the local copy the decision was taken on; a store drops the edit
//! only if it is still that copy, and a newer one is pushed, meets the server's conflict check
//! and is decided on its own, with its own event.

use std::time::Duration;

use fero::ConflictResolutionStrategy;
use fero_sim::{FaultProfile, Sim};

#[test]
fn discarding_a_conflict_keeps_a_newer_local_edit() {
    let mut sim = Sim::builder()
        .devices(2)
        .faults(false)
        .strategy(ConflictResolutionStrategy::HighestVersionWins)
        .strict_conflict_events(true)
        .build()
        .unwrap();
    // Both devices hold "x" at v1.
    sim.edit(1, "x").unwrap();
    assert!(sim.sync(1).unwrap().is_ok());
    assert!(sim.sync(0).unwrap().is_ok());
    // Device 0 edits it (v2 on base 1); device 1 edits it too and pushes first (server v2).
    sim.edit(0, "x").unwrap();
    sim.edit(1, "x").unwrap();
    assert!(sim.sync(1).unwrap().is_ok());
    // Slow calls (500 ms each way), so the next edit lands while device 0's pull is in flight:
    // the engine has listed the v2 edit; the user edits again (v3).
    let mut slow = FaultProfile::none();
    slow.slow = 1.0;
    sim.set_fault_profile(slow);
    let late = sim
        .sync_while_editing(0, Duration::from_millis(100), "x")
        .unwrap();
    // The pull brings the server's v2: a tie with the listed copy (v2), so that copy loses. The
    // newer edit (v3) is kept, pushed, refused for its stale base, and wins its own conflict
    // (v3 against v2) under HighestVersionWins: it reaches the server in the same cycle.
    let doc = sim.store(0).unwrap().get("x").unwrap();
    assert_eq!(
        doc.data["tag"],
        *late.as_str(),
        "device 0's newer edit {late} was dropped: the store now holds {doc:?}"
    );
    assert!(
        !doc.modified,
        "the newer edit was acknowledged by the server: {doc:?}"
    );
    sim.set_faults(false);
    sim.quiesce().unwrap();
}
