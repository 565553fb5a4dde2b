//! `SqliteSyncMetadataRepo`: every method, and every value surviving a reopen of the file.

use fero::{
    ConflictPhase, FeatureKey, InitialSyncState, ParkedConflict, QuarantinedChange, SyncCheckpoint,
    SyncId, SyncMetadataRepo, Timestamp, Version,
};
use fero_sqlite::{SqliteStore, SqliteSyncMetadataRepo};
use serde_json::json;

fn parked(feature: &str, id: &str, at: u64) -> ParkedConflict {
    ParkedConflict {
        feature: FeatureKey::new(feature),
        id: id.into(),
        local: json!({ "id": id, "name": "local" }),
        server: json!({ "id": id, "name": "server" }),
        server_deleted: false,
        server_version: Some(Version(3)),
        phase: ConflictPhase::Push,
        reason: "the feature's strategy is manual".into(),
        parked_at: Timestamp(at),
    }
}

fn quarantined(feature: &str, id: &str, at: u64) -> QuarantinedChange {
    QuarantinedChange {
        feature: FeatureKey::new(feature),
        id: id.into(),
        item: json!({ "id": id }),
        reason: "invalid: name too long".into(),
        quarantined_at: Timestamp(at),
    }
}

#[tokio::test]
async fn checkpoints_survive_reopening_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.db");
    let contacts = FeatureKey::new("contacts");
    let cp = SyncCheckpoint::at(SyncId(41))
        .with_cursor("tx:9:41")
        .with_updated_at(Timestamp(1_700_000_000_123));
    {
        let repo = SqliteSyncMetadataRepo::open(&path).await.unwrap();
        repo.save_checkpoint(&contacts, &cp).await.unwrap();
    }
    let repo = SqliteSyncMetadataRepo::open(&path).await.unwrap();
    assert_eq!(repo.checkpoint(&contacts).await.unwrap(), Some(cp));
}

#[tokio::test]
async fn checkpoints_are_kept_per_feature_and_clearing_forgets_one() {
    let store = SqliteStore::open_in_memory().await.unwrap();
    let repo = store.metadata_repo();
    let (a, b) = (FeatureKey::new("a"), FeatureKey::new("b"));
    assert_eq!(repo.checkpoint(&a).await.unwrap(), None);
    repo.save_checkpoint(&a, &SyncCheckpoint::at(SyncId(3)))
        .await
        .unwrap();
    repo.save_checkpoint(&b, &SyncCheckpoint::at(SyncId(8)))
        .await
        .unwrap();
    repo.save_checkpoint(&a, &SyncCheckpoint::at(SyncId(5)))
        .await
        .unwrap();
    assert_eq!(
        repo.checkpoint(&a).await.unwrap(),
        Some(SyncCheckpoint::at(SyncId(5)))
    );
    repo.clear_checkpoint(&a).await.unwrap();
    assert_eq!(repo.checkpoint(&a).await.unwrap(), None);
    assert_eq!(
        repo.checkpoint(&b).await.unwrap(),
        Some(SyncCheckpoint::at(SyncId(8)))
    );
    // Clearing does not touch the other fields of the feature.
    repo.set_initial_sync_state(&b, InitialSyncState::Completed)
        .await
        .unwrap();
    repo.clear_checkpoint(&b).await.unwrap();
    assert_eq!(
        repo.initial_sync_state(&b).await.unwrap(),
        InitialSyncState::Completed
    );
}

#[tokio::test]
async fn initial_sync_state_and_last_success_survive_reopening_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.db");
    let prefs = FeatureKey::new("prefs");
    let other = FeatureKey::new("other");
    {
        let repo = SqliteSyncMetadataRepo::open(&path).await.unwrap();
        assert_eq!(
            repo.initial_sync_state(&prefs).await.unwrap(),
            InitialSyncState::Pending
        );
        assert_eq!(repo.last_success(&prefs).await.unwrap(), None);
        repo.set_initial_sync_state(&prefs, InitialSyncState::Completed)
            .await
            .unwrap();
        repo.set_last_success(&prefs, Timestamp(1_700_000_000_000))
            .await
            .unwrap();
        repo.set_initial_sync_state(&other, InitialSyncState::Completed)
            .await
            .unwrap();
        repo.set_initial_sync_state(&other, InitialSyncState::Pending)
            .await
            .unwrap();
    }
    let repo = SqliteSyncMetadataRepo::open(&path).await.unwrap();
    assert_eq!(
        repo.initial_sync_state(&prefs).await.unwrap(),
        InitialSyncState::Completed
    );
    assert_eq!(
        repo.last_success(&prefs).await.unwrap(),
        Some(Timestamp(1_700_000_000_000))
    );
    assert_eq!(
        repo.initial_sync_state(&other).await.unwrap(),
        InitialSyncState::Pending
    );
    assert_eq!(repo.checkpoint(&prefs).await.unwrap(), None);
}

#[tokio::test]
async fn parked_conflicts_survive_reopening_and_a_reparked_id_moves_to_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.db");
    let contacts = FeatureKey::new("contacts");
    {
        let repo = SqliteSyncMetadataRepo::open(&path).await.unwrap();
        repo.park_conflict(&parked("contacts", "x", 1))
            .await
            .unwrap();
        repo.park_conflict(&parked("contacts", "y", 2))
            .await
            .unwrap();
        repo.park_conflict(&parked("messages", "x", 3))
            .await
            .unwrap();
        repo.park_conflict(&parked("contacts", "x", 4))
            .await
            .unwrap();
    }
    let repo = SqliteSyncMetadataRepo::open(&path).await.unwrap();
    let found = repo.parked_conflicts(&contacts).await.unwrap();
    assert_eq!(
        found,
        vec![parked("contacts", "y", 2), parked("contacts", "x", 4)]
    );
    assert!(repo.remove_parked_conflict(&contacts, "x").await.unwrap());
    assert!(!repo.remove_parked_conflict(&contacts, "x").await.unwrap());
    assert_eq!(repo.parked_conflicts(&contacts).await.unwrap().len(), 1);
    assert_eq!(
        repo.parked_conflicts(&FeatureKey::new("messages"))
            .await
            .unwrap(),
        vec![parked("messages", "x", 3)]
    );
}

#[tokio::test]
async fn quarantined_changes_survive_reopening_and_are_removed_by_id() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.db");
    let contacts = FeatureKey::new("contacts");
    {
        let repo = SqliteSyncMetadataRepo::open(&path).await.unwrap();
        repo.quarantine(&quarantined("contacts", "a", 1))
            .await
            .unwrap();
        repo.quarantine(&quarantined("contacts", "b", 2))
            .await
            .unwrap();
        repo.quarantine(&quarantined("contacts", "a", 3))
            .await
            .unwrap();
    }
    let repo = SqliteSyncMetadataRepo::open(&path).await.unwrap();
    assert_eq!(
        repo.quarantined(&contacts).await.unwrap(),
        vec![
            quarantined("contacts", "b", 2),
            quarantined("contacts", "a", 3)
        ]
    );
    assert!(repo.remove_quarantined(&contacts, "b").await.unwrap());
    assert!(!repo.remove_quarantined(&contacts, "b").await.unwrap());
    assert_eq!(
        repo.quarantined(&contacts).await.unwrap(),
        vec![quarantined("contacts", "a", 3)]
    );
}

#[tokio::test]
async fn the_repo_and_the_store_share_one_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    let store = SqliteStore::open(&path).await.unwrap();
    store
        .metadata_repo()
        .save_checkpoint(&FeatureKey::new("notes"), &SyncCheckpoint::at(SyncId(2)))
        .await
        .unwrap();
    store.put("notes", "n1", json!({"t": 1})).await.unwrap();
    drop(store);
    let reopened = SqliteSyncMetadataRepo::open(&path).await.unwrap();
    assert_eq!(
        reopened
            .checkpoint(&FeatureKey::new("notes"))
            .await
            .unwrap(),
        Some(SyncCheckpoint::at(SyncId(2)))
    );
}
