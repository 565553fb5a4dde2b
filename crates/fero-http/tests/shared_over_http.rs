//! Shared collections end to end: a real `fero-server` with sync rules (`TeamSharing`: `tasks`
//! live in bucket `team:<data.team>`, a `members` row grants its user a team) and real clients
//! (`SqliteStore` + `HttpRemote` + `FeroSync`). Two users of one team see each other's rows; a
//! member removed from the team loses the team's rows at the next sync and never receives a
//! later write; an edit the removed member made offline is refused `forbidden` and quarantined,
//! not lost; a write into a team the user is not in is refused the same way; nothing of a
//! foreign team reaches the digest.

mod support;

use std::sync::Arc;

use fero::Version;
use fero_protocol::{Change, ChangeOutcome, MutationId, Remote};
use fero_server::shared_suite::TeamAccess;
use serde_json::json;
use support::device::{Device, DeviceConfig};
use support::server::TestServer;

/// The admin writes membership rows straight into storage (it claims every team).
async fn set_member(server: &TestServer, user: &str, team: &str, base: Option<u64>, seq: u64) {
    let admin = TeamAccess::arc("admin", &["red", "blue"]);
    let change = Change {
        id: format!("m-{user}-{team}"),
        base_version: base.map(Version),
        mutation_id: MutationId::new("admin-console", seq),
        deleted: base.is_some(),
        data: if base.is_some() {
            serde_json::Value::Null
        } else {
            json!({ "team": team, "user": user })
        },
    };
    let pushed = server
        .server
        .storage()
        .shared_push(admin, "members", vec![change])
        .await
        .unwrap();
    assert!(
        matches!(
            pushed.outcome.results[0].outcome,
            ChangeOutcome::Accepted { .. }
        ),
        "{:?}",
        pushed.outcome.results
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn team_members_share_rows_and_a_removed_member_loses_them() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_shared(&dir.path().join("server.db"));
    let url = server.url();
    set_member(&server, "alice", "red", None, 1).await;
    set_member(&server, "bob", "red", None, 2).await;
    let config = |token, device| DeviceConfig {
        collections: &["tasks"],
        ..DeviceConfig::new(&url, token, device)
    };
    let alice = Device::new(config("alice-phone", "alice-phone")).await;
    let bob = Device::new(config("bob-phone", "bob-phone")).await;
    alice.sync.run().await.unwrap();
    bob.sync.run().await.unwrap();

    // Alice writes a red task; bob gets it.
    alice
        .store
        .put("tasks", "t1", json!({ "team": "red", "title": "plan" }))
        .await
        .unwrap();
    alice.sync.sync_now().await.unwrap();
    bob.sync.sync_now().await.unwrap();
    assert_eq!(
        bob.contents("tasks").await.get("t1"),
        Some(&json!({ "team": "red", "title": "plan" })),
        "bob reads the red task alice wrote"
    );
    bob.assert_in_step_with_server("tasks").await;

    // Bob writes into blue, a team he is not in: refused `forbidden`, quarantined, not lost.
    bob.store
        .put("tasks", "b1", json!({ "team": "blue", "title": "sneak" }))
        .await
        .unwrap();
    bob.sync.sync_now().await.unwrap();
    let quarantined = bob.sync.quarantined_changes("tasks").await.unwrap();
    assert_eq!(quarantined.len(), 1, "{quarantined:?}");
    assert!(
        format!("{:?}", quarantined[0]).contains("forbidden"),
        "{quarantined:?}"
    );

    // Bob edits t1 offline; meanwhile he is removed from red.
    bob.store
        .put(
            "tasks",
            "t1",
            json!({ "team": "red", "title": "bob's plan" }),
        )
        .await
        .unwrap();
    set_member(&server, "bob", "red", Some(1), 3).await;
    // Alice writes another red task after the removal.
    alice
        .store
        .put("tasks", "t2", json!({ "team": "red", "title": "secret" }))
        .await
        .unwrap();
    alice.sync.sync_now().await.unwrap();
    bob.sync.sync_now().await.unwrap();
    bob.sync.sync_now().await.unwrap();
    let bobs = bob.contents("tasks").await;
    assert!(
        !bobs.contains_key("t2"),
        "a write after the removal reached the removed member: {bobs:?}"
    );
    // His offline edit of t1 was refused and is kept in quarantine, never silently dropped.
    let quarantined = bob.sync.quarantined_changes("tasks").await.unwrap();
    assert!(
        quarantined
            .iter()
            .any(|q| format!("{q:?}").contains("t1") && format!("{q:?}").contains("forbidden")),
        "bob's edit of t1 should be quarantined as forbidden: {quarantined:?}"
    );
    // The server still holds alice's version: bob's edit never landed.
    alice.sync.sync_now().await.unwrap();
    assert_eq!(
        alice.contents("tasks").await.get("t1"),
        Some(&json!({ "team": "red", "title": "plan" }))
    );
    // Nothing of red counts in bob's digest any more.
    let digest = bob.remote.digest("tasks").await.unwrap();
    assert_eq!(
        digest.count, 0,
        "bob's digest covers rows of red: {digest:?}"
    );
    alice.assert_in_step_with_server("tasks").await;
    alice.sync.dispose().await;
    bob.sync.dispose().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_granted_team_moves_in_at_the_next_sync() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_shared(&dir.path().join("server.db"));
    let url = server.url();
    // 2,500 old red rows, written before bob joins.
    let admin = TeamAccess::arc("admin", &["red"]);
    let changes: Vec<Change> = (0..2_500)
        .map(|i| Change {
            id: format!("r{i:05}"),
            base_version: None,
            mutation_id: MutationId::new("admin-console", 100 + i),
            deleted: false,
            data: json!({ "team": "red", "n": i }),
        })
        .collect();
    server
        .server
        .storage()
        .shared_push(Arc::clone(&admin), "tasks", changes)
        .await
        .unwrap();
    let bob = Device::new(DeviceConfig {
        collections: &["tasks"],
        batch_size: 700,
        ..DeviceConfig::new(&url, "bob-phone", "bob-phone")
    })
    .await;
    bob.sync.run().await.unwrap();
    assert_eq!(bob.store.count("tasks").await.unwrap(), 0);
    set_member(&server, "bob", "red", None, 1).await;
    bob.sync.sync_now().await.unwrap();
    assert_eq!(
        bob.store.count("tasks").await.unwrap(),
        2_500,
        "every old red row moved in"
    );
    bob.assert_in_step_with_server("tasks").await;
    bob.sync.dispose().await;
}
