//! The shared storage suite (`fero_server::storage_suite`) against PostgreSQL, each test on a
//! fresh database (skipped with a printed reason when `FERO_TEST_POSTGRES` is not set).

mod support;

use fero_server::storage_suite::ManualClock;

fero_server::storage_suite_tests!(
    optional
        |clock: ManualClock| async move {
            let Some(database) = support::postgres::TestDatabase::create("suite").await else {
                return Ok(None);
            };
            let storage = fero_server::PostgresStorage::builder(&database.url)
                .pool_size(4)
                .clock(std::sync::Arc::new(clock))
                .connect()
                .await?;
            Ok::<_, fero_server::StorageError>(Some((storage, database)))
        }
);
