//! [`SqliteSyncMetadataRepo`]: fero's sync metadata (checkpoints, initial-sync state, last
//! success, parked conflicts, quarantined changes) in the store's database.

use std::path::Path;
use std::sync::Arc;

use fero::{
    FeatureKey, InitialSyncState, ParkedConflict, QuarantinedChange, RepoError, SyncCheckpoint,
    SyncId, SyncMetadataRepo, Timestamp,
};
use rusqlite::{Connection, OptionalExtension, params};

use crate::db::Db;
use crate::error::{Error, Result};
use crate::store::SqliteStore;

/// The persistent [`SyncMetadataRepo`]: every value is committed before the call returns.
///
/// It shares its database (and connection) with the [`SqliteStore`] it came from, which is what
/// lets a page of documents and its checkpoint commit in one transaction.
///
/// A [`SubscriptionSync`](crate::SubscriptionSync) needs this repo: the checkpoint of a pull that
/// ends on an empty page can carry the removals that page kept from the engine, and
/// `save_checkpoint` applies them in the transaction that saves it (see [`crate::subscription`]).
///
/// # Examples
/// ```
/// use fero::{FeatureKey, SyncCheckpoint, SyncId, SyncMetadataRepo};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = fero_sqlite::SqliteStore::open_in_memory().await?;
/// let repo = store.metadata_repo();
/// let contacts = FeatureKey::new("contacts");
/// repo.save_checkpoint(&contacts, &SyncCheckpoint::at(SyncId(7))).await?;
/// assert_eq!(repo.checkpoint(&contacts).await?, Some(SyncCheckpoint::at(SyncId(7))));
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct SqliteSyncMetadataRepo {
    db: Arc<Db>,
}

impl SqliteSyncMetadataRepo {
    pub(crate) fn new(db: Arc<Db>) -> Self {
        SqliteSyncMetadataRepo { db }
    }

    /// Opens the database at `path` (creating and migrating it as [`SqliteStore::open`] does) and
    /// returns its metadata repo. Use [`SqliteStore::metadata_repo`] instead when the same file
    /// also holds the documents, so both share one connection.
    ///
    /// # Errors
    /// As [`SqliteStore::open`].
    pub async fn open(path: impl AsRef<Path>) -> Result<Self> {
        Ok(SqliteStore::open(path).await?.metadata_repo())
    }
}

fn op(what: &str, feature: &FeatureKey) -> String {
    format!("{what} of feature {feature}")
}

/// Reads `feature`'s checkpoint with the given connection (inside a caller's transaction).
pub(crate) fn read_checkpoint(
    conn: &Connection,
    feature: &FeatureKey,
) -> Result<Option<SyncCheckpoint>> {
    let row = conn
        .prepare_cached(
            "SELECT checkpoint_sync_id, checkpoint_at, checkpoint_cursor
             FROM fero_features WHERE feature = ?1",
        )
        .and_then(|mut stmt| {
            stmt.query_row([feature.as_str()], |row| {
                Ok((
                    row.get::<_, Option<u64>>(0)?,
                    row.get::<_, Option<u64>>(1)?,
                    row.get::<_, Option<String>>(2)?,
                ))
            })
            .optional()
        })
        .map_err(Error::sqlite(op("read the checkpoint", feature)))?;
    Ok(match row {
        Some((Some(last), at, cursor)) => Some(SyncCheckpoint {
            last_sync_id: SyncId(last),
            updated_at: at.map(Timestamp),
            cursor,
        }),
        _ => None,
    })
}

/// Writes `feature`'s checkpoint with the given connection (inside a caller's transaction).
pub(crate) fn write_checkpoint(
    conn: &Connection,
    feature: &FeatureKey,
    checkpoint: &SyncCheckpoint,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO fero_features (feature, checkpoint_sync_id, checkpoint_at, checkpoint_cursor)
         VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (feature) DO UPDATE SET
             checkpoint_sync_id = excluded.checkpoint_sync_id,
             checkpoint_at = excluded.checkpoint_at,
             checkpoint_cursor = excluded.checkpoint_cursor",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            feature.as_str(),
            checkpoint.last_sync_id.0,
            checkpoint.updated_at.map(|t| t.0),
            checkpoint.cursor,
        ])
    })
    .map_err(Error::sqlite(op("save the checkpoint", feature)))?;
    Ok(())
}

/// Forgets `feature`'s checkpoint and marks its initial sync pending (inside a caller's
/// transaction).
pub(crate) fn reset_feature(conn: &Connection, feature: &FeatureKey) -> Result<()> {
    conn.execute(
        "UPDATE fero_features SET checkpoint_sync_id = NULL, checkpoint_at = NULL,
             checkpoint_cursor = NULL, initial_state = 'pending'
         WHERE feature = ?1",
        [feature.as_str()],
    )
    .map_err(Error::sqlite(op("reset the sync state", feature)))?;
    Ok(())
}

/// Which of the two keyed JSON tables.
#[derive(Copy, Clone)]
enum Kept {
    Parked,
    Quarantined,
}

impl Kept {
    fn table(self) -> &'static str {
        match self {
            Kept::Parked => "fero_parked",
            Kept::Quarantined => "fero_quarantined",
        }
    }
    fn what(self) -> &'static str {
        match self {
            Kept::Parked => "parked conflict",
            Kept::Quarantined => "quarantined change",
        }
    }
}

impl SqliteSyncMetadataRepo {
    async fn keep(&self, kept: Kept, feature: &FeatureKey, id: &str, body: String) -> Result<()> {
        let (feature, id) = (feature.clone(), id.to_owned());
        let operation = op(&format!("store a {}", kept.what()), &feature);
        self.db
            .write(&operation.clone(), move |tx| {
                // REPLACE deletes the old row and inserts a new one with a new (larger) seq, so a
                // re-parked id moves to the end of the age order, as the contract asks.
                tx.prepare_cached(&format!(
                    "INSERT OR REPLACE INTO {} (feature, id, body) VALUES (?1, ?2, ?3)",
                    kept.table()
                ))
                .and_then(|mut stmt| stmt.execute(params![feature.as_str(), id, body]))
                .map_err(Error::sqlite(operation))?;
                Ok(())
            })
            .await
    }

    async fn list<T>(&self, kept: Kept, feature: &FeatureKey) -> Result<Vec<T>>
    where
        T: serde::de::DeserializeOwned + Send + 'static,
    {
        let feature = feature.clone();
        let operation = op(&format!("read the {}s", kept.what()), &feature);
        self.db
            .read(&operation.clone(), move |tx| {
                let rows = tx
                    .prepare_cached(&format!(
                        "SELECT id, body FROM {} WHERE feature = ?1 ORDER BY seq",
                        kept.table()
                    ))
                    .and_then(|mut stmt| {
                        stmt.query_map([feature.as_str()], |row| {
                            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
                        })?
                        .collect::<rusqlite::Result<Vec<_>>>()
                    })
                    .map_err(Error::sqlite(operation))?;
                rows.into_iter()
                    .map(|(id, body)| {
                        serde_json::from_str(&body).map_err(|source| Error::CorruptJson {
                            collection: feature.to_string(),
                            id,
                            what: kept.what(),
                            source,
                        })
                    })
                    .collect()
            })
            .await
    }

    async fn remove(&self, kept: Kept, feature: &FeatureKey, id: &str) -> Result<bool> {
        let (feature, id) = (feature.clone(), id.to_owned());
        let operation = op(&format!("remove a {}", kept.what()), &feature);
        self.db
            .write(&operation.clone(), move |tx| {
                let removed = tx
                    .prepare_cached(&format!(
                        "DELETE FROM {} WHERE feature = ?1 AND id = ?2",
                        kept.table()
                    ))
                    .and_then(|mut stmt| stmt.execute(params![feature.as_str(), id]))
                    .map_err(Error::sqlite(operation))?;
                Ok(removed > 0)
            })
            .await
    }
}

fn encode<T: serde::Serialize>(value: &T, id: &str, what: &'static str) -> Result<String> {
    serde_json::to_string(value).map_err(|source| Error::Encode {
        what,
        id: id.to_owned(),
        source,
    })
}

#[fero::async_trait]
impl SyncMetadataRepo for SqliteSyncMetadataRepo {
    async fn checkpoint(
        &self,
        feature: &FeatureKey,
    ) -> std::result::Result<Option<SyncCheckpoint>, RepoError> {
        let feature = feature.clone();
        Ok(self
            .db
            .read("read a checkpoint", move |tx| read_checkpoint(tx, &feature))
            .await?)
    }

    async fn save_checkpoint(
        &self,
        feature: &FeatureKey,
        checkpoint: &SyncCheckpoint,
    ) -> std::result::Result<(), RepoError> {
        let (feature, checkpoint) = (feature.clone(), checkpoint.clone());
        let now = self.db.clock.now();
        Ok(self
            .db
            .write("save a checkpoint", move |tx| {
                // A subscription checkpoint may carry work for the rows its page withheld.
                crate::subscription::save_checkpoint(tx, &feature, &checkpoint, now)
            })
            .await?)
    }

    async fn clear_checkpoint(&self, feature: &FeatureKey) -> std::result::Result<(), RepoError> {
        let feature = feature.clone();
        let operation = op("clear the checkpoint", &feature);
        Ok(self
            .db
            .write(&operation.clone(), move |tx| {
                tx.prepare_cached(
                    "UPDATE fero_features SET checkpoint_sync_id = NULL, checkpoint_at = NULL,
                         checkpoint_cursor = NULL
                     WHERE feature = ?1",
                )
                .and_then(|mut stmt| stmt.execute([feature.as_str()]))
                .map_err(Error::sqlite(operation))?;
                Ok(())
            })
            .await?)
    }

    async fn initial_sync_state(
        &self,
        feature: &FeatureKey,
    ) -> std::result::Result<InitialSyncState, RepoError> {
        let feature = feature.clone();
        let operation = op("read the initial-sync state", &feature);
        Ok(self
            .db
            .read(&operation.clone(), move |tx| {
                let state: Option<String> = tx
                    .prepare_cached("SELECT initial_state FROM fero_features WHERE feature = ?1")
                    .and_then(|mut stmt| {
                        stmt.query_row([feature.as_str()], |row| row.get(0))
                            .optional()
                    })
                    .map_err(Error::sqlite(operation))?;
                // The column's CHECK constraint admits only these two values.
                Ok(match state.as_deref() {
                    Some("completed") => InitialSyncState::Completed,
                    _ => InitialSyncState::Pending,
                })
            })
            .await?)
    }

    async fn set_initial_sync_state(
        &self,
        feature: &FeatureKey,
        state: InitialSyncState,
    ) -> std::result::Result<(), RepoError> {
        let text = match state {
            InitialSyncState::Pending => "pending",
            InitialSyncState::Completed => "completed",
        };
        let feature = feature.clone();
        let operation = op("save the initial-sync state", &feature);
        Ok(self
            .db
            .write(&operation.clone(), move |tx| {
                tx.prepare_cached(
                    "INSERT INTO fero_features (feature, initial_state) VALUES (?1, ?2)
                     ON CONFLICT (feature) DO UPDATE SET initial_state = excluded.initial_state",
                )
                .and_then(|mut stmt| stmt.execute(params![feature.as_str(), text]))
                .map_err(Error::sqlite(operation))?;
                Ok(())
            })
            .await?)
    }

    async fn last_success(
        &self,
        feature: &FeatureKey,
    ) -> std::result::Result<Option<Timestamp>, RepoError> {
        let feature = feature.clone();
        let operation = op("read the last success", &feature);
        Ok(self
            .db
            .read(&operation.clone(), move |tx| {
                let at: Option<Option<u64>> = tx
                    .prepare_cached("SELECT last_success FROM fero_features WHERE feature = ?1")
                    .and_then(|mut stmt| {
                        stmt.query_row([feature.as_str()], |row| row.get(0))
                            .optional()
                    })
                    .map_err(Error::sqlite(operation))?;
                Ok(at.flatten().map(Timestamp))
            })
            .await?)
    }

    async fn set_last_success(
        &self,
        feature: &FeatureKey,
        at: Timestamp,
    ) -> std::result::Result<(), RepoError> {
        let feature = feature.clone();
        let operation = op("save the last success", &feature);
        Ok(self
            .db
            .write(&operation.clone(), move |tx| {
                tx.prepare_cached(
                    "INSERT INTO fero_features (feature, last_success) VALUES (?1, ?2)
                     ON CONFLICT (feature) DO UPDATE SET last_success = excluded.last_success",
                )
                .and_then(|mut stmt| stmt.execute(params![feature.as_str(), at.0]))
                .map_err(Error::sqlite(operation))?;
                Ok(())
            })
            .await?)
    }

    async fn park_conflict(&self, conflict: &ParkedConflict) -> std::result::Result<(), RepoError> {
        let body = encode(conflict, &conflict.id, "parked conflict")?;
        Ok(self
            .keep(Kept::Parked, &conflict.feature, &conflict.id, body)
            .await?)
    }

    async fn parked_conflicts(
        &self,
        feature: &FeatureKey,
    ) -> std::result::Result<Vec<ParkedConflict>, RepoError> {
        Ok(self.list(Kept::Parked, feature).await?)
    }

    async fn remove_parked_conflict(
        &self,
        feature: &FeatureKey,
        id: &str,
    ) -> std::result::Result<bool, RepoError> {
        Ok(self.remove(Kept::Parked, feature, id).await?)
    }

    async fn quarantine(&self, change: &QuarantinedChange) -> std::result::Result<(), RepoError> {
        let body = encode(change, &change.id, "quarantined change")?;
        Ok(self
            .keep(Kept::Quarantined, &change.feature, &change.id, body)
            .await?)
    }

    async fn quarantined(
        &self,
        feature: &FeatureKey,
    ) -> std::result::Result<Vec<QuarantinedChange>, RepoError> {
        Ok(self.list(Kept::Quarantined, feature).await?)
    }

    async fn remove_quarantined(
        &self,
        feature: &FeatureKey,
        id: &str,
    ) -> std::result::Result<bool, RepoError> {
        Ok(self.remove(Kept::Quarantined, feature, id).await?)
    }
}
