//! Change notices of shared collections through PostgreSQL `LISTEN`/`NOTIFY`: a shared push
//! announces every bucket it wrote into or moved a row out of (on the bucket's key) and every
//! member whose grants it changed (on the member's own key), and a listener that lost its
//! connection catches up on both.

mod support;

use std::sync::Arc;

use fero::{SyncId, Version};
use fero_protocol::{Change, ChangeNotice, ChangeOutcome, MutationId};
use fero_server::shared::bucket_key;
use fero_server::shared_suite::{MEMBERS, TASKS, TeamAccess};
use fero_server::{
    ChangeNotifier, ChangeSubscription, LISTENER_APPLICATION_NAME, PostgresNotifier,
    PostgresStorage, Storage, UserId,
};
use serde_json::json;
use support::IO_DEADLINE;
use support::postgres::TestDatabase;
use tokio::time::timeout;

async fn next_notice(subscription: &mut ChangeSubscription) -> ChangeNotice {
    timeout(IO_DEADLINE, subscription.next())
        .await
        .expect("no change notice within the deadline")
        .expect("the notifier is gone")
}

/// Waits for a notice of `collection` at `sync_id` or later (notices of other collections and
/// earlier positions may come first: a catch-up announces every collection).
async fn notice_of(subscription: &mut ChangeSubscription, collection: &str, sync_id: SyncId) {
    loop {
        let notice = next_notice(subscription).await;
        if notice.collection == collection && notice.sync_id >= sync_id {
            return;
        }
    }
}

fn row(id: &str, base: Option<u64>, seq: u64, data: serde_json::Value) -> Change {
    Change {
        id: id.to_owned(),
        base_version: base.map(Version),
        mutation_id: MutationId::new("admin-device", seq),
        deleted: false,
        data,
    }
}

/// Pushes one change to `collection` as an admin of every team; its `seq`.
async fn push(storage: &PostgresStorage, collection: &str, change: Change) -> SyncId {
    let admin = TeamAccess::arc("admin", &["red", "blue"]);
    let pushed = storage
        .shared_push(Arc::clone(&admin), collection, vec![change])
        .await
        .unwrap();
    match &pushed.outcome.results[0].outcome {
        ChangeOutcome::Accepted { sync_id, .. } => *sync_id,
        other => panic!("not accepted: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_push_announces_its_buckets_and_its_regranted_members() {
    let Some(database) = TestDatabase::create("shared_notices").await else {
        return;
    };
    let storage = PostgresStorage::connect(&database.url).await.unwrap();
    let notifier = PostgresNotifier::listen(&database.url).await.unwrap();
    let mut red = notifier.subscribe(&bucket_key("team:red"));
    let mut blue = notifier.subscribe(&bucket_key("team:blue"));
    let mut dan = notifier.subscribe(&UserId::new("dan"));

    // `storage` never calls the notifier: only NOTIFY can carry these.
    let created = push(&storage, TASKS, row("x", None, 1, json!({ "team": "red" }))).await;
    assert_eq!(
        next_notice(&mut red).await,
        ChangeNotice {
            collection: TASKS.into(),
            sync_id: created
        }
    );
    // A move announces both the bucket it left and the one it entered.
    let moved = push(
        &storage,
        TASKS,
        row("x", Some(1), 2, json!({ "team": "blue" })),
    )
    .await;
    assert_eq!(next_notice(&mut red).await.sync_id, moved);
    assert_eq!(next_notice(&mut blue).await.sync_id, moved);
    // A write into blue only: red hears nothing of it, so red's next notice is the later one.
    let blue_only = push(
        &storage,
        TASKS,
        row("y", None, 3, json!({ "team": "blue" })),
    )
    .await;
    let red_again = push(&storage, TASKS, row("z", None, 4, json!({ "team": "red" }))).await;
    assert!(blue_only < red_again);
    assert_eq!(next_notice(&mut red).await.sync_id, red_again);
    assert_eq!(next_notice(&mut blue).await.sync_id, blue_only);
    // A membership row grants dan red: dan's own key hears of it.
    let granted = push(
        &storage,
        MEMBERS,
        row("m-dan", None, 5, json!({ "team": "red", "user": "dan" })),
    )
    .await;
    assert_eq!(
        next_notice(&mut dan).await,
        ChangeNotice {
            collection: MEMBERS.into(),
            sync_id: granted
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_catches_up_on_buckets_and_members_after_a_reconnect() {
    let Some(database) = TestDatabase::create("shared_reconnect").await else {
        return;
    };
    let storage = PostgresStorage::connect(&database.url).await.unwrap();
    let notifier = PostgresNotifier::listen(&database.url).await.unwrap();
    let mut red = notifier.subscribe(&bucket_key("team:red"));
    let mut dan = notifier.subscribe(&UserId::new("dan"));
    let first = push(&storage, TASKS, row("x", None, 1, json!({ "team": "red" }))).await;
    assert_eq!(next_notice(&mut red).await.sync_id, first);

    let admin = database.client().await;
    let terminated = admin
        .query_one(
            "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE datname = $1 AND application_name = $2",
            &[&database.name, &LISTENER_APPLICATION_NAME],
        )
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(terminated, 1, "one listening connection per notifier");
    // Written while the listener is (most likely) still disconnected: their NOTIFYs reach no
    // one, so the notices must come from the catch-up read after reconnecting. A move out of
    // red counts for red too.
    let moved = push(
        &storage,
        TASKS,
        row("x", Some(1), 2, json!({ "team": "blue" })),
    )
    .await;
    let granted = push(
        &storage,
        MEMBERS,
        row("m-dan", None, 3, json!({ "team": "blue", "user": "dan" })),
    )
    .await;
    notice_of(&mut red, TASKS, moved).await;
    notice_of(&mut dan, MEMBERS, granted).await;
    assert_eq!(notifier.sessions(), 2, "the listener reconnected once");
}
