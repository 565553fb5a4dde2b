//! The store and its handlers driven by `fero::FeroSync` against a fake server: initial sync,
//! background pull and push, conflicts under several strategies, restarts, quarantine.

mod support;

use std::path::Path;

use fero::{
    ConflictOutcome, ConflictResolutionStrategy, FeatureKey, FeatureSyncConfig, FeroSync,
    InitialSyncState, ManualResolution, SyncEvent, SyncId, SyncMetadataRepo, Version,
};
use fero_sqlite::SqliteStore;
use futures::StreamExt;
use serde_json::json;
use support::FakeRemote;

const C: &str = "contacts";

fn seeded_server(n: usize) -> FakeRemote {
    let remote = FakeRemote::new();
    for i in 0..n {
        remote.write(
            C,
            &format!("contact-{i:05}"),
            json!({ "name": format!("Ada {i}") }),
        );
    }
    remote
}

fn engine(
    store: &SqliteStore,
    remote: &FakeRemote,
    strategy: ConflictResolutionStrategy,
) -> FeroSync {
    let handler = store.sync_handler(C, remote.clone()).unwrap();
    FeroSync::builder()
        .metadata_repo(store.metadata_repo())
        .initial_sync(
            C,
            handler.clone(),
            FeatureSyncConfig::new().batch_size(1000),
        )
        .background_sync(C, handler, FeatureSyncConfig::new().batch_size(1000))
        .conflict_strategy(strategy)
        .seed(7)
        .build()
        .unwrap()
}

async fn open(path: &Path) -> SqliteStore {
    SqliteStore::open(path).await.unwrap()
}

/// The live documents of the store as `id -> (version, data)`, comparable with the server's.
async fn snapshot(
    store: &SqliteStore,
) -> std::collections::BTreeMap<String, (Version, serde_json::Value)> {
    store
        .query(C)
        .await
        .unwrap()
        .into_iter()
        .map(|d| (d.id, (d.version, d.data)))
        .collect()
}

#[tokio::test]
async fn initial_sync_then_background_cycles_pull_and_push_through_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("e2e.db")).await;
    let remote = seeded_server(2500);
    let sync = engine(
        &store,
        &remote,
        ConflictResolutionStrategy::HighestVersionWins,
    );
    sync.run().await.unwrap();
    assert_eq!(store.count(C).await.unwrap(), 2500);
    assert_eq!(snapshot(&store).await, remote.live(C));
    let repo = store.metadata_repo();
    let key = FeatureKey::new(C);
    assert_eq!(
        repo.initial_sync_state(&key).await.unwrap(),
        InitialSyncState::Completed
    );
    assert_eq!(
        repo.checkpoint(&key).await.unwrap().unwrap().last_sync_id,
        SyncId(2500)
    );
    // Background starts where initial sync ended: nothing is pulled from the beginning again.
    let pulls = remote.pulls();
    assert_eq!(pulls.iter().filter(|p| p.is_none()).count(), 1, "{pulls:?}");

    store
        .put(C, "contact-00001", json!({"name": "Ada L."}))
        .await
        .unwrap();
    store
        .put(C, "new-contact", json!({"name": "Grace"}))
        .await
        .unwrap();
    store.delete(C, "contact-00002").await.unwrap();
    remote.write(C, "contact-00003", json!({"name": "changed elsewhere"}));
    remote.delete(C, "contact-00004");
    sync.sync_now().await.unwrap();

    assert_eq!(snapshot(&store).await, remote.live(C));
    assert_eq!(
        remote.get(C, "contact-00001").unwrap().data,
        json!({"name": "Ada L."})
    );
    assert!(remote.get(C, "contact-00002").unwrap().deleted);
    assert_eq!(store.get(C, "contact-00004").await.unwrap(), None);
    assert!(store.outbox(C).await.unwrap().is_empty());
    assert!(store.locally_modified(C).await.unwrap().is_empty());
    let handler = store.sync_handler(C, remote.clone()).unwrap();
    assert!(handler.verify().await.unwrap().is_match());
    sync.dispose().await;
}

#[tokio::test]
async fn server_wins_drops_the_local_edit_of_a_conflict() {
    let store = SqliteStore::open_in_memory().await.unwrap();
    let remote = seeded_server(10);
    let sync = engine(&store, &remote, ConflictResolutionStrategy::ServerWins);
    sync.run().await.unwrap();
    let mut events = sync.event_stream();

    store
        .put(C, "contact-00005", json!({"name": "mine"}))
        .await
        .unwrap();
    let theirs = remote.write(C, "contact-00005", json!({"name": "theirs"}));
    sync.sync_now().await.unwrap();

    let doc = store.get(C, "contact-00005").await.unwrap().unwrap();
    assert_eq!(doc.data, json!({"name": "theirs"}));
    assert_eq!(doc.version, theirs.version);
    assert!(!doc.locally_modified);
    assert!(store.outbox(C).await.unwrap().is_empty());
    // The local edit was never pushed.
    assert!(remote.pushes().is_empty());
    assert_eq!(snapshot(&store).await, remote.live(C));
    sync.dispose().await;
    let mut outcomes = Vec::new();
    while let Some(event) = events.next().await {
        if let Ok(SyncEvent::ConflictResolved(c)) = event {
            outcomes.push((c.id, c.outcome));
        }
    }
    assert_eq!(
        outcomes,
        [("contact-00005".to_owned(), ConflictOutcome::ServerKept)]
    );
}

#[tokio::test]
async fn client_wins_pushes_the_local_edit_on_the_server_version() {
    let store = SqliteStore::open_in_memory().await.unwrap();
    let remote = seeded_server(10);
    let sync = engine(&store, &remote, ConflictResolutionStrategy::ClientWins);
    sync.run().await.unwrap();

    store
        .put(C, "contact-00005", json!({"name": "mine"}))
        .await
        .unwrap();
    let theirs = remote.write(C, "contact-00005", json!({"name": "theirs"}));
    sync.sync_now().await.unwrap();

    let server = remote.get(C, "contact-00005").unwrap();
    assert_eq!(server.data, json!({"name": "mine"}));
    assert_eq!(server.version, theirs.version.next());
    let doc = store.get(C, "contact-00005").await.unwrap().unwrap();
    assert_eq!(doc.data, json!({"name": "mine"}));
    assert_eq!(doc.version, server.version);
    assert!(!doc.locally_modified);
    assert!(store.outbox(C).await.unwrap().is_empty());
    assert_eq!(snapshot(&store).await, remote.live(C));
    sync.dispose().await;
}

#[tokio::test]
async fn a_conflict_met_during_the_push_is_rebased_and_pushed_with_a_new_mutation_id() {
    /// A server where another client writes the document just before this push arrives.
    #[derive(Clone)]
    struct RacingRemote {
        inner: FakeRemote,
        raced: std::sync::Arc<std::sync::atomic::AtomicBool>,
    }
    #[fero::async_trait]
    impl fero_protocol::Remote for RacingRemote {
        async fn pull(
            &self,
            collection: &str,
            request: &fero_protocol::PullRequest,
        ) -> Result<fero_protocol::PullResponse, fero_protocol::RemoteError> {
            self.inner.pull(collection, request).await
        }
        async fn push(
            &self,
            collection: &str,
            request: &fero_protocol::PushRequest,
        ) -> Result<fero_protocol::PushResponse, fero_protocol::RemoteError> {
            if !self.raced.swap(true, std::sync::atomic::Ordering::SeqCst) {
                self.inner
                    .write(collection, "contact-00001", json!({"name": "racer"}));
            }
            self.inner.push(collection, request).await
        }
        async fn digest(
            &self,
            collection: &str,
        ) -> Result<fero_protocol::DigestResponse, fero_protocol::RemoteError> {
            self.inner.digest(collection).await
        }
    }
    let store = SqliteStore::open_in_memory().await.unwrap();
    let remote = seeded_server(3);
    let racing = RacingRemote {
        inner: remote.clone(),
        raced: Default::default(),
    };
    let handler = store.sync_handler(C, racing).unwrap();
    let sync = FeroSync::builder()
        .metadata_repo(store.metadata_repo())
        .background_sync(C, handler, FeatureSyncConfig::new())
        .conflict_strategy(ConflictResolutionStrategy::ClientWins)
        .build()
        .unwrap();
    sync.run().await.unwrap();
    store
        .put(C, "contact-00001", json!({"name": "mine"}))
        .await
        .unwrap();
    sync.sync_now().await.unwrap();

    let pushes = remote.pushes();
    assert_eq!(pushes.len(), 2, "{pushes:?}");
    let (first, second) = (&pushes[0].changes[0], &pushes[1].changes[0]);
    assert_ne!(first.mutation_id, second.mutation_id);
    assert_eq!(first.base_version, Some(Version(1)));
    assert_eq!(second.base_version, Some(Version(2)));
    let server = remote.get(C, "contact-00001").unwrap();
    assert_eq!(
        (server.version, &server.data),
        (Version(3), &json!({"name": "mine"}))
    );
    let doc = store.get(C, "contact-00001").await.unwrap().unwrap();
    assert_eq!((doc.version, doc.locally_modified), (Version(3), false));
    assert!(store.outbox(C).await.unwrap().is_empty());
    sync.dispose().await;
}

#[tokio::test]
async fn an_interrupted_initial_sync_resumes_from_the_stored_checkpoint_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("resume.db");
    let remote = seeded_server(3500);
    remote.fail_pulls_from(Some(SyncId(2000)));
    {
        let store = open(&path).await;
        let sync = engine(&store, &remote, ConflictResolutionStrategy::ServerWins);
        assert!(sync.run().await.is_err());
        sync.dispose().await;
        assert_eq!(store.count(C).await.unwrap(), 2000);
    }
    remote.fail_pulls_from(None);
    let before = remote.pulls().len();
    let store = open(&path).await;
    let repo = store.metadata_repo();
    assert_eq!(
        repo.initial_sync_state(&FeatureKey::new(C)).await.unwrap(),
        InitialSyncState::Pending
    );
    let sync = engine(&store, &remote, ConflictResolutionStrategy::ServerWins);
    sync.run().await.unwrap();
    let resumed = remote.pulls()[before..].to_vec();
    assert_eq!(resumed.first(), Some(&Some(SyncId(2000))), "{resumed:?}");
    assert!(resumed.iter().all(|p| p.is_some()), "{resumed:?}");
    assert_eq!(snapshot(&store).await, remote.live(C));
    sync.dispose().await;

    // Another restart: initial sync is not repeated, background continues at the end.
    drop(sync);
    let store = open(&path).await;
    let before = remote.pulls().len();
    let sync = engine(&store, &remote, ConflictResolutionStrategy::ServerWins);
    sync.run().await.unwrap();
    assert_eq!(remote.pulls()[before..], [Some(SyncId(3500))]);
    sync.dispose().await;
}

#[tokio::test]
async fn a_manual_conflict_is_parked_in_the_database_and_resolved_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("manual.db");
    let remote = seeded_server(5);
    {
        let store = open(&path).await;
        let sync = engine(&store, &remote, ConflictResolutionStrategy::Manual);
        sync.run().await.unwrap();
        store
            .put(C, "contact-00002", json!({"name": "mine"}))
            .await
            .unwrap();
        remote.write(C, "contact-00002", json!({"name": "theirs"}));
        sync.sync_now().await.unwrap();
        assert_eq!(sync.parked_conflicts(C).await.unwrap().len(), 1);
        sync.dispose().await;
    }
    let store = open(&path).await;
    let sync = engine(&store, &remote, ConflictResolutionStrategy::Manual);
    let parked = sync.parked_conflicts(C).await.unwrap();
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].id, "contact-00002");
    assert_eq!(parked[0].server_version, Some(Version(2)));
    let outcome = sync
        .resolve_conflict(C, "contact-00002", ManualResolution::KeepLocal)
        .await
        .unwrap();
    assert_eq!(outcome, ConflictOutcome::LocalKept);
    sync.sync_now().await.unwrap();
    let server = remote.get(C, "contact-00002").unwrap();
    assert_eq!(
        (server.version, server.data),
        (Version(3), json!({"name": "mine"}))
    );
    assert!(sync.parked_conflicts(C).await.unwrap().is_empty());
    assert!(store.outbox(C).await.unwrap().is_empty());
    sync.dispose().await;
}

#[tokio::test]
async fn a_rejected_change_is_quarantined_and_discarding_it_restores_the_server_state() {
    let store = SqliteStore::open_in_memory().await.unwrap();
    let remote = seeded_server(3);
    let sync = engine(
        &store,
        &remote,
        ConflictResolutionStrategy::HighestVersionWins,
    );
    sync.run().await.unwrap();
    remote.reject("contact-00000");
    store
        .put(C, "contact-00000", json!({"name": ""}))
        .await
        .unwrap();
    store
        .put(C, "contact-00001", json!({"name": "fine"}))
        .await
        .unwrap();
    sync.sync_now().await.unwrap();
    let quarantined = sync.quarantined_changes(C).await.unwrap();
    assert_eq!(quarantined.len(), 1);
    assert_eq!(quarantined[0].reason, "invalid: rejected by validation");
    assert_eq!(
        remote.get(C, "contact-00001").unwrap().data,
        json!({"name": "fine"})
    );
    sync.discard_quarantined(C, "contact-00000").await.unwrap();
    let restored = store.get(C, "contact-00000").await.unwrap().unwrap();
    assert_eq!(restored.data, json!({"name": "Ada 0"}));
    assert!(!restored.locally_modified);
    assert!(store.outbox(C).await.unwrap().is_empty());
    sync.dispose().await;
}
