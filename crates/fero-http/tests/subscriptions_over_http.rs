//! Partial sync by subscription end to end: a real `fero-server` with sync rules (`TeamSharing`:
//! `tasks` live in bucket `team:<data.team>`, `members` rows grant teams; subscriptions `team`
//! and `teams` select teams) and a real client (`SqliteStore` + `HttpRemote` + `FeroSync`, one
//! `SubscriptionSync` feature). The device holds exactly what its subscriptions select and its
//! user may read; subscriptions added and dropped while the app runs change that, rows that
//! move between teams move between subscriptions, and `verify()` agrees with the server.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use fero::{FeatureSyncConfig, FeroSync};
use fero_http::HttpRemote;
use fero_protocol::{Change, ChangeOutcome, MutationId, Subscription};
use fero_server::shared_suite::TeamAccess;
use fero_sqlite::SqliteStore;
use serde_json::json;
use support::server::TestServer;

/// The admin writes rows straight into storage (it claims every team).
async fn admin_push(server: &TestServer, collection: &str, changes: Vec<Change>) {
    let admin = TeamAccess::arc("admin", &["red", "blue", "green"]);
    let pushed = server
        .server
        .storage()
        .shared_push(admin, collection, changes)
        .await
        .unwrap();
    for result in &pushed.outcome.results {
        assert!(
            matches!(result.outcome, ChangeOutcome::Accepted { .. }),
            "{result:?}"
        );
    }
}

fn task(id: &str, base: Option<u64>, seq: u64, team: &str) -> Change {
    Change {
        id: id.to_owned(),
        base_version: base.map(fero::Version),
        mutation_id: MutationId::new("admin-console", seq),
        deleted: false,
        data: json!({ "team": team, "title": id }),
    }
}

fn member(user: &str, team: &str, seq: u64) -> Change {
    Change {
        id: format!("m-{user}-{team}"),
        base_version: None,
        mutation_id: MutationId::new("admin-console", seq),
        deleted: false,
        data: json!({ "team": team, "user": user }),
    }
}

fn team(name: &str) -> Subscription {
    Subscription::new("team").param("team", name)
}

async fn ids(store: &SqliteStore) -> BTreeSet<String> {
    store
        .query("tasks")
        .await
        .unwrap()
        .into_iter()
        .map(|doc| doc.id)
        .collect()
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|id| (*id).to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_holds_exactly_what_its_subscriptions_select_and_its_user_may_read() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_shared(&dir.path().join("server.db"));
    // Alice is in red and blue, not green.
    admin_push(
        &server,
        "members",
        vec![member("alice", "red", 1), member("alice", "blue", 2)],
    )
    .await;
    admin_push(
        &server,
        "tasks",
        vec![
            task("r1", None, 3, "red"),
            task("r2", None, 4, "red"),
            task("b1", None, 5, "blue"),
            task("g1", None, 6, "green"),
        ],
    )
    .await;

    let store = SqliteStore::open(dir.path().join("alice.db"))
        .await
        .unwrap();
    let remote = HttpRemote::builder(server.url(), "alice-phone")
        .device_id("alice-phone")
        .request_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let tasks = store.subscriptions_handler("tasks", remote).unwrap();
    let sync = FeroSync::builder()
        .metadata_repo(store.metadata_repo())
        .initial_sync(
            "tasks",
            tasks.clone(),
            FeatureSyncConfig::new().batch_size(1),
        )
        .background_sync(
            "tasks",
            tasks.clone(),
            FeatureSyncConfig::new().batch_size(1),
        )
        .build()
        .unwrap();

    // Red only.
    assert!(store.subscribe("tasks", team("red")).await.unwrap());
    sync.run().await.unwrap();
    assert_eq!(ids(&store).await, set(&["r1", "r2"]));
    assert!(tasks.verify().await.unwrap().is_match());

    // Add blue and green while the app runs: blue comes, green never does (alice may not read
    // it, and a subscription does not widen access).
    store.subscribe("tasks", team("blue")).await.unwrap();
    store.subscribe("tasks", team("green")).await.unwrap();
    sync.sync_now().await.unwrap();
    assert_eq!(ids(&store).await, set(&["b1", "r1", "r2"]));
    assert!(tasks.verify().await.unwrap().is_match());

    // r2 moves to blue: it leaves the red subscription and stays, through blue.
    admin_push(&server, "tasks", vec![task("r2", Some(1), 7, "blue")]).await;
    sync.sync_now().await.unwrap();
    assert_eq!(ids(&store).await, set(&["b1", "r1", "r2"]));
    assert_eq!(
        store.get("tasks", "r2").await.unwrap().unwrap().data["team"],
        "blue"
    );

    // Dropping red removes r1 (only red covered it) and keeps r2 and b1 (blue does).
    let report = store.unsubscribe("tasks", &team("red")).await.unwrap();
    assert!(report.existed);
    assert_eq!((report.removed, report.kept_pending), (1, 0), "{report:?}");
    assert_eq!(ids(&store).await, set(&["b1", "r2"]));
    sync.sync_now().await.unwrap();
    assert_eq!(ids(&store).await, set(&["b1", "r2"]));
    assert!(tasks.verify().await.unwrap().is_match());

    // An edit on a subscribed row is pushed as usual and comes back to the subscription.
    store
        .put(
            "tasks",
            "b1",
            json!({ "team": "blue", "title": "b1, edited" }),
        )
        .await
        .unwrap();
    sync.sync_now().await.unwrap();
    assert!(store.outbox("tasks").await.unwrap().is_empty());
    assert!(tasks.verify().await.unwrap().is_match());

    // Alice leaves blue: its rows move out of the subscription, nothing is left.
    let leave = Change {
        id: "m-alice-blue".to_owned(),
        base_version: Some(fero::Version(1)),
        mutation_id: MutationId::new("admin-console", 8),
        deleted: true,
        data: serde_json::Value::Null,
    };
    admin_push(&server, "members", vec![leave]).await;
    sync.sync_now().await.unwrap();
    assert!(ids(&store).await.is_empty(), "{:?}", ids(&store).await);
    assert!(tasks.verify().await.unwrap().is_match());
    sync.dispose().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_and_their_positions_survive_a_restart_of_the_app() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_shared(&dir.path().join("server.db"));
    admin_push(&server, "members", vec![member("alice", "red", 1)]).await;
    admin_push(
        &server,
        "tasks",
        vec![task("r1", None, 2, "red"), task("r2", None, 3, "red")],
    )
    .await;
    let path = dir.path().join("alice.db");
    let open = || async {
        let store = SqliteStore::open(&path).await.unwrap();
        let remote = HttpRemote::builder(server.url(), "alice-phone")
            .device_id("alice-phone")
            .build()
            .unwrap();
        let tasks = store.subscriptions_handler("tasks", remote).unwrap();
        let sync = FeroSync::builder()
            .metadata_repo(store.metadata_repo())
            .background_sync("tasks", tasks, FeatureSyncConfig::new())
            .build()
            .unwrap();
        (store, sync)
    };
    let (store, sync) = open().await;
    store.subscribe("tasks", team("red")).await.unwrap();
    sync.sync_now().await.unwrap();
    assert_eq!(ids(&store).await, set(&["r1", "r2"]));
    sync.dispose().await;
    drop(store);

    admin_push(&server, "tasks", vec![task("r3", None, 4, "red")]).await;
    let (store, sync) = open().await;
    assert_eq!(
        store.subscriptions("tasks").await.unwrap(),
        vec![team("red")]
    );
    let report = sync.sync_now().await.unwrap();
    assert_eq!(ids(&store).await, set(&["r1", "r2", "r3"]));
    assert_eq!(
        report.totals().pulled,
        1,
        "the restarted app pulled only the new row: {report:?}"
    );
    sync.dispose().await;
}
