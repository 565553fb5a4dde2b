//! The fero_sync README example (`examples/fero_sync_readme.rs`) was only compiled: it could stop
//! syncing what it claims and no test would notice. This runs the very same code and checks what
//! it ends with: every item synced, the stores equal to the servers, each checkpoint where the
//! server's feed ends.

#[allow(dead_code, unreachable_pub)]
#[path = "../examples/fero_sync_readme.rs"]
mod example;

use fero::{SyncCheckpoint, SyncId};

#[tokio::test(flavor = "current_thread")]
async fn the_fero_sync_readme_example_syncs_everything_it_claims() {
    let outcome = example::run()
        .await
        .expect("the example runs without error");

    // Initial sync: the three preferences, paged two at a time, saved locally.
    assert_eq!(outcome.preferences.len(), 3);
    assert_eq!(outcome.preferences["theme"], "dark");
    assert_eq!(outcome.preferences["language"], "en");
    assert_eq!(outcome.preferences["notifications"], "on");
    // Its last page has no checkpoint: the engine derives it from the largest sync_id.
    assert_eq!(
        outcome.checkpoints["user_preferences"],
        Some(SyncCheckpoint::at(SyncId(3)))
    );

    // Background sync: 250 contacts and 250 messages pulled, the offline message pushed, the
    // contact edited on both sides settled for the server (a version tie), both sides equal.
    assert!(outcome.converged, "local stores equal the servers");
    assert_eq!(outcome.contacts, 250);
    assert_eq!(outcome.messages, 251);
    // contacts: 250 inserts and the server-side edit of contact-1, all pulled.
    let contacts = outcome.checkpoints["contacts"].as_ref().expect("saved");
    assert_eq!(contacts.last_sync_id, SyncId(251));
    // messages: the second cycle pulled nothing new before pushing message-new, so the pull
    // stands at the 250 seeded rows (the push's own row comes back in the next cycle).
    let messages = outcome.checkpoints["messages"].as_ref().expect("saved");
    assert_eq!(messages.last_sync_id, SyncId(250));

    assert_eq!(
        outcome.log,
        [
            "user_preferences: initial sync done, 3 items",
            "contacts: background sync done, 250 pulled, 0 pushed, 0 conflicts",
            "messages: background sync done, 250 pulled, 0 pushed, 0 conflicts",
            "contacts: conflict on contact-1 -> server kept",
            "contacts: background sync done, 1 pulled, 0 pushed, 1 conflicts",
            "messages: background sync done, 0 pulled, 1 pushed, 0 conflicts",
        ]
    );
}
