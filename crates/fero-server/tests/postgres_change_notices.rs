//! Change notices through PostgreSQL `LISTEN`/`NOTIFY`: a [`PostgresNotifier`] hears of commits
//! made through any other connection pool (another process), never of a rolled-back write, and
//! survives losing its connection without losing a collection that moved meanwhile.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use fero::SyncId;
use fero_protocol::ChangeNotice;
use fero_server::{
    ChangeNotifier, ChangeSubscription, LISTENER_APPLICATION_NAME, PostgresNotifier,
    PostgresStorage, Storage, UserId,
};
use serde_json::json;
use support::postgres::TestDatabase;
use support::{IO_DEADLINE, accepted, change};
use tokio::time::timeout;

async fn next_notice(subscription: &mut ChangeSubscription) -> ChangeNotice {
    timeout(IO_DEADLINE, subscription.next())
        .await
        .expect("no change notice within the deadline")
        .expect("the notifier is gone")
}

/// Mutation sequence numbers: each create is a new mutation, never a replay of an earlier one.
static SEQ: AtomicU64 = AtomicU64::new(1);

/// Pushes one create of `id` as `owner`; the `sync_id` it got.
async fn create(storage: &PostgresStorage, owner: &UserId, collection: &str, id: &str) -> SyncId {
    let seq = SEQ.fetch_add(1, Ordering::SeqCst);
    let outcome = storage
        .push(
            owner,
            collection,
            vec![change(id, None, "device", seq, json!({ "id": id }))],
        )
        .await
        .unwrap();
    SyncId(accepted(&outcome.results[0]).1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_through_another_pool_reaches_the_listener_for_its_user_only() {
    let Some(database) = TestDatabase::create("notices").await else {
        return;
    };
    // The storage connects first: it creates the tables.
    let storage = PostgresStorage::connect(&database.url).await.unwrap();
    let notifier = PostgresNotifier::listen(&database.url).await.unwrap();
    let (alice, bob) = (UserId::new("alice"), UserId::new("bob"));
    let mut alices = notifier.subscribe(&alice);
    let mut bobs = notifier.subscribe(&bob);

    // `storage` never calls the notifier: only NOTIFY can carry these.
    let at = create(&storage, &alice, "contacts", "ada").await;
    assert_eq!(
        next_notice(&mut alices).await,
        ChangeNotice {
            collection: "contacts".into(),
            sync_id: at
        }
    );
    let seeded = storage
        .seed(
            &bob,
            "notes",
            vec![fero_server::SeedRow::new("memo", json!("hi"))],
        )
        .await
        .unwrap();
    let notice = next_notice(&mut bobs).await;
    assert_eq!(
        (notice.collection.as_str(), Some(notice.sync_id)),
        ("notes", seeded.last_sync_id),
        "bob hears of his own seed, not of alice's push"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_back_write_announces_nothing() {
    let Some(database) = TestDatabase::create("rollback").await else {
        return;
    };
    let fail_next = Arc::new(AtomicBool::new(false));
    let fail = Arc::clone(&fail_next);
    let storage = PostgresStorage::builder(&database.url)
        .before_commit(move || {
            let fail = fail.swap(false, Ordering::SeqCst);
            async move {
                assert!(!fail, "the write fails just before COMMIT");
            }
        })
        .connect()
        .await
        .unwrap();
    let notifier = PostgresNotifier::listen(&database.url).await.unwrap();
    let alice = UserId::new("alice");
    let mut alices = notifier.subscribe(&alice);

    fail_next.store(true, Ordering::SeqCst);
    let failed = {
        let (storage, alice) = (storage.clone(), alice.clone());
        tokio::spawn(async move { create(&storage, &alice, "doomed", "x").await }).await
    };
    assert!(failed.is_err(), "the push must have failed before COMMIT");
    // Notices arrive in commit order on one connection: if the rolled-back transaction had
    // announced anything, it would come before this one.
    let at = create(&storage, &alice, "contacts", "ada").await;
    assert_eq!(
        next_notice(&mut alices).await,
        ChangeNotice {
            collection: "contacts".into(),
            sync_id: at
        }
    );
    let page = storage.pull(&alice, "doomed", SyncId(0), 10).await.unwrap();
    assert!(page.items.is_empty(), "the failed push wrote nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_reconnects_and_announces_what_moved_while_it_was_gone() {
    let Some(database) = TestDatabase::create("reconnect").await else {
        return;
    };
    let storage = PostgresStorage::connect(&database.url).await.unwrap();
    let notifier = PostgresNotifier::listen(&database.url).await.unwrap();
    assert_eq!(notifier.sessions(), 1);
    let alice = UserId::new("alice");
    let mut alices = notifier.subscribe(&alice);
    let first = create(&storage, &alice, "contacts", "ada").await;
    assert_eq!(next_notice(&mut alices).await.sync_id, first);

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
    // Written while the listener is (most likely) still disconnected: its NOTIFY reaches no one,
    // so the notice must come from the catch-up read after reconnecting.
    let second = create(&storage, &alice, "contacts", "grace").await;
    let notice = next_notice(&mut alices).await;
    assert_eq!(
        notice,
        ChangeNotice {
            collection: "contacts".into(),
            sync_id: second
        }
    );

    // Either way that notice came, it took a new LISTEN session.
    assert_eq!(notifier.sessions(), 2, "the listener reconnected once");
    let third = create(&storage, &alice, "notes", "memo").await;
    assert_eq!(
        next_notice(&mut alices).await,
        ChangeNotice {
            collection: "notes".into(),
            sync_id: third
        },
        "live notices flow again on the new connection"
    );
}
