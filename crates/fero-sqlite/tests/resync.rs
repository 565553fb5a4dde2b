//! Resync of a collection after the server's 410 `resync_required`, against a fake server with
//! the reference semantics: behind the tombstone purge horizon (rows the server deleted are
//! removed), and ahead of a server restored from a backup (nothing is removed; what the server
//! lost is pushed back). Unpushed local edits survive both and are pushed.

mod support;

use std::collections::BTreeMap;

use fero::{ConflictResolutionStrategy, FeatureSyncConfig, FeroSync, ResyncReason, SyncEvent};
use fero_sqlite::{CollectionSync, SqliteStore};
use futures::StreamExt;
use serde_json::{Value, json};
use support::FakeRemote;

const C: &str = "notes";

/// A device: a store and a sync of `C` with both kinds of feature, small pages.
async fn device(
    remote: &FakeRemote,
    batch: usize,
) -> (SqliteStore, CollectionSync<FakeRemote>, FeroSync) {
    let store = SqliteStore::open_in_memory().await.unwrap();
    let handler = store.sync_handler(C, remote.clone()).unwrap();
    let config = FeatureSyncConfig::new().batch_size(batch);
    let sync = FeroSync::builder()
        .metadata_repo(store.metadata_repo())
        .initial_sync(C, handler.clone(), config.clone())
        .background_sync(C, handler.clone(), config)
        .conflict_strategy(ConflictResolutionStrategy::HighestVersionWins)
        .seed(3)
        .build()
        .unwrap();
    (store, handler, sync)
}

/// The store's live rows: id -> data.
async fn local(store: &SqliteStore) -> BTreeMap<String, Value> {
    store
        .query(C)
        .await
        .unwrap()
        .into_iter()
        .map(|d| (d.id, d.data))
        .collect()
}

/// The server's live rows: id -> data.
fn server(remote: &FakeRemote) -> BTreeMap<String, Value> {
    remote
        .live(C)
        .into_iter()
        .map(|(id, (_, data))| (id, data))
        .collect()
}

/// Runs one sync and returns its resync events as (reason, removed, kept, repushed) for each
/// completed resync, and the number of started ones.
async fn run_collecting(sync: &FeroSync) -> (usize, Vec<(ResyncReason, u64, u64, u64)>) {
    let mut stream = sync.event_stream();
    sync.run().await.expect("the sync run completes");
    let mut started = 0;
    let mut completed = Vec::new();
    while let Some(Some(Ok(event))) = futures::FutureExt::now_or_never(stream.next()) {
        match event {
            SyncEvent::ResyncStarted { .. } => started += 1,
            SyncEvent::ResyncCompleted {
                reason,
                removed,
                kept,
                repushed,
                ..
            } => completed.push((reason, removed, kept, repushed)),
            _ => {}
        }
    }
    (started, completed)
}

#[tokio::test]
async fn behind_the_purge_horizon_deleted_rows_go_and_unpushed_edits_survive() {
    let remote = FakeRemote::new();
    for i in 0..6 {
        remote.write(C, &format!("n{i}"), json!({ "v": i }));
    }
    let (store, handler, sync) = device(&remote, 2).await;
    sync.run().await.unwrap();
    assert_eq!(local(&store).await.len(), 6);

    // Offline: the server deletes n1 and n2, edits n3, gains n9, and purges its tombstones.
    remote.delete(C, "n1");
    remote.delete(C, "n2");
    remote.write(C, "n3", json!({ "v": "server" }));
    remote.write(C, "n9", json!({ "v": 9 }));
    assert_eq!(remote.purge_tombstones(C), 2);
    // Meanwhile the device edits n4 and creates mine, unpushed.
    store.put(C, "n4", json!({ "v": "device" })).await.unwrap();
    store.put(C, "mine", json!({ "v": "new" })).await.unwrap();

    let (started, completed) = run_collecting(&sync).await;
    assert_eq!(started, 1);
    // n1, n2 removed; mine kept (the server never saw it); nothing re-pushed as lost.
    assert_eq!(completed, vec![(ResyncReason::TombstonesPurged, 2, 1, 0)]);

    let rows = local(&store).await;
    assert!(
        !rows.contains_key("n1") && !rows.contains_key("n2"),
        "{rows:?}"
    );
    assert_eq!(rows["n3"], json!({ "v": "server" }));
    assert_eq!(rows["n4"], json!({ "v": "device" }));
    assert_eq!(rows["mine"], json!({ "v": "new" }));
    assert_eq!(rows, server(&remote), "the device and the server converge");
    assert!(
        store.outbox(C).await.unwrap().is_empty(),
        "every edit was pushed"
    );
    assert!(handler.verify().await.unwrap().is_match());

    // A later cycle is an ordinary one.
    let (started, _) = run_collecting(&sync).await;
    assert_eq!(started, 0);
    sync.dispose().await;
}

#[tokio::test]
async fn a_server_restored_from_a_backup_is_healed_and_nothing_is_removed() {
    let remote = FakeRemote::new();
    remote.write(C, "a", json!({ "v": 1 }));
    remote.write(C, "gone-later", json!({ "v": 1 }));
    let (store, handler, sync) = device(&remote, 2).await;
    sync.run().await.unwrap();
    let backup = remote.backup();

    // After the backup: the device edits a and creates b (pushed), another device creates g,
    // and deletes gone-later: all acknowledged by the server, then lost in the restore.
    store.put(C, "a", json!({ "v": 2 })).await.unwrap();
    store.put(C, "b", json!({ "v": 1 })).await.unwrap();
    remote.write(C, "g", json!({ "from": "other" }));
    remote.delete(C, "gone-later");
    sync.run().await.unwrap();
    assert!(store.outbox(C).await.unwrap().is_empty());
    let before_restore = local(&store).await;
    assert_eq!(before_restore.len(), 3, "{before_restore:?}");

    remote.restore(&backup);
    // The device edits offline while the server is behind.
    store.put(C, "h", json!({ "v": "unpushed" })).await.unwrap();

    let (started, completed) = run_collecting(&sync).await;
    assert_eq!(started, 1);
    // b and g are kept and re-pushed (the server lacks them); a and gone-later are re-pushed
    // (the server holds older versions); h (a pending edit the server never saw) is kept.
    assert_eq!(completed, vec![(ResyncReason::ServerBehind, 0, 3, 4)]);

    let rows = local(&store).await;
    assert_eq!(rows["a"], json!({ "v": 2 }));
    assert_eq!(rows["b"], json!({ "v": 1 }));
    assert_eq!(rows["g"], json!({ "from": "other" }));
    assert_eq!(rows["h"], json!({ "v": "unpushed" }));
    // gone-later was deleted after the backup; the restored server has it again, live. The
    // device knew it as a tombstone at a newer version: the deletion is pushed back too.
    assert!(!rows.contains_key("gone-later"), "{rows:?}");
    assert_eq!(
        rows,
        server(&remote),
        "the server is healed from the device"
    );
    assert!(store.outbox(C).await.unwrap().is_empty());
    assert!(handler.verify().await.unwrap().is_match());
    sync.dispose().await;
}

#[tokio::test]
async fn a_resync_cut_short_by_a_failed_page_is_continued_by_the_next_run() {
    let remote = FakeRemote::new();
    for i in 0..6 {
        remote.write(C, &format!("n{i}"), json!({ "v": i }));
    }
    let (store, _handler, sync) = device(&remote, 2).await;
    sync.run().await.unwrap();
    remote.delete(C, "n0");
    remote.delete(C, "n5");
    remote.purge_tombstones(C);
    // The resync's second page (after n2, sync_id 3) fails for good.
    remote.fail_pulls_from(Some(fero::SyncId(3)));
    sync.run()
        .await
        .expect_err("the resync fails at its second page");
    // Nothing was settled yet: the deleted rows are still here.
    assert!(local(&store).await.contains_key("n0"));

    remote.fail_pulls_from(None);
    let (started, completed) = run_collecting(&sync).await;
    assert_eq!(started, 1, "the interrupted resync is continued");
    assert_eq!(completed, vec![(ResyncReason::TombstonesPurged, 2, 0, 0)]);
    assert_eq!(local(&store).await, server(&remote));
    sync.dispose().await;
}

#[tokio::test]
async fn a_pulled_row_older_than_the_synced_copy_starts_a_resync_though_the_server_never_noticed() {
    let remote = FakeRemote::new();
    remote.write(C, "a", json!({ "v": 1 }));
    let (store, handler, sync) = device(&remote, 10).await;
    sync.run().await.unwrap();
    let backup = remote.backup();
    // Two acknowledged edits of a after the backup: the device holds a at version 3.
    store.put(C, "a", json!({ "v": 2 })).await.unwrap();
    sync.run().await.unwrap();
    store.put(C, "a", json!({ "v": 3 })).await.unwrap();
    sync.run().await.unwrap();
    assert_eq!(store.get(C, "a").await.unwrap().unwrap().version.0, 3);

    // The server is restored without noticing, and other clients write again, past the
    // device's checkpoint: the device's next pull brings a at version 2, older than its copy.
    remote.restore_unnoticed(&backup);
    remote.write(C, "x", json!({ "v": "x" }));
    remote.write(C, "y", json!({ "v": "y" }));
    remote.write(C, "a", json!({ "v": "other, on the restored copy" }));

    let (started, completed) = run_collecting(&sync).await;
    assert_eq!(
        started, 1,
        "the older row is a resync request, not a silent skip"
    );
    assert_eq!(completed, vec![(ResyncReason::ServerBehind, 0, 0, 1)]);
    let rows = local(&store).await;
    assert_eq!(
        rows["a"],
        json!({ "v": 3 }),
        "the newest acknowledged write is kept"
    );
    assert_eq!(rows["x"], json!({ "v": "x" }));
    assert_eq!(rows, server(&remote), "and pushed back to the server");
    assert!(handler.verify().await.unwrap().is_match());
    sync.dispose().await;
}
