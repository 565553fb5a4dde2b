//! The shared storage suite (`fero_server::storage_suite`) against SQLite, in memory and on a
//! file in WAL mode (where reads run on their own connections).

mod in_memory {
    use fero_server::storage_suite::ManualClock;

    fero_server::storage_suite_tests!(|clock: ManualClock| async move {
        let storage =
            fero_server::SqliteStorage::open_with_clock(":memory:", std::sync::Arc::new(clock))?;
        Ok::<_, fero_server::StorageError>((storage, ()))
    });
}

mod on_a_file {
    use fero_server::storage_suite::ManualClock;

    fero_server::storage_suite_tests!(|clock: ManualClock| async move {
        let dir = tempfile::tempdir()?;
        let storage = fero_server::SqliteStorage::open_with_clock(
            dir.path().join("sync.db"),
            std::sync::Arc::new(clock),
        )?;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>((storage, dir))
    });
}

#[tokio::test]
async fn a_file_database_keeps_its_rows_across_a_reopen() -> Result<(), Box<dyn std::error::Error>>
{
    use fero::SyncId;
    use fero_server::{SeedRow, SqliteStorage, Storage, UserId};
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("sync.db");
    let alice = UserId::new("alice");
    {
        let storage = SqliteStorage::open(&path)?;
        storage
            .seed(
                &alice,
                "items",
                vec![SeedRow::new("a", serde_json::json!(1))],
            )
            .await?;
    }
    let storage = SqliteStorage::open(&path)?;
    let report = storage
        .seed(
            &alice,
            "items",
            vec![SeedRow::new("b", serde_json::json!(2))],
        )
        .await?;
    assert_eq!(
        report.last_sync_id,
        Some(SyncId(2)),
        "the counter survived the reopen"
    );
    let page = storage.pull(&alice, "items", SyncId(0), 10).await?;
    assert_eq!(page.items.len(), 2);
    Ok(())
}
