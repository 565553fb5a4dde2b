//! [`TeamDevice`]: a device of step 6, one user's phone that syncs the shared collections
//! (`tasks` and `members`) over its own SQLite store and HTTP remote.

use std::path::Path;

use fero::{ExponentialBackoff, FeatureSyncConfig, FeroSync};
use fero_http::HttpRemote;
use fero_sqlite::{CollectionSync, SqliteStore, StoreOptions, VerifyReport};

use crate::error::DemoError;
use crate::sharing::{MEMBERS, TASKS};

/// How a team device is set up.
#[derive(Clone, Debug)]
pub struct TeamDeviceConfig {
    /// The user, as the story names the device ("alice", "bob").
    pub name: &'static str,
    /// The device id (in the store file and on every request).
    pub device_id: &'static str,
    /// The bearer token.
    pub token: &'static str,
    /// The server's base URL.
    pub url: String,
    /// Seeds fero's retry jitter and the change stream's reconnect jitter.
    pub seed: u64,
}

/// One user's device in step 6 (see the module docs).
#[derive(Debug)]
pub struct TeamDevice {
    /// The user ("alice", "bob").
    pub name: &'static str,
    /// The local store.
    pub store: SqliteStore,
    /// The HTTP remote (its change stream drives the live triggers).
    pub remote: HttpRemote,
    /// The engine: `tasks` and `members`, each an initial and a background feature.
    pub sync: FeroSync,
    handlers: Vec<CollectionSync<HttpRemote>>,
}

impl TeamDevice {
    /// Opens the device's store at `db` and builds its engine.
    ///
    /// # Errors
    /// [`DemoError::Store`], [`DemoError::RemoteBuild`] or [`DemoError::SyncBuild`].
    pub async fn open(config: TeamDeviceConfig, db: &Path) -> Result<TeamDevice, DemoError> {
        let name = config.name;
        let store = SqliteStore::open_with(db, StoreOptions::new().device_id(config.device_id))
            .await
            .map_err(DemoError::store(name, format!("open {}", db.display())))?;
        let remote = HttpRemote::builder(&config.url, config.token)
            .device_id(config.device_id)
            .user_agent(concat!("fero-demo/", env!("CARGO_PKG_VERSION")))
            .seed(config.seed)
            .build()
            .map_err(|source| DemoError::RemoteBuild {
                device: name,
                source,
            })?;
        let mut builder = FeroSync::builder()
            .metadata_repo(store.metadata_repo())
            .backoff(ExponentialBackoff::default())
            .seed(config.seed);
        let mut handlers = Vec::new();
        for collection in [TASKS, MEMBERS] {
            let handler =
                store
                    .sync_handler(collection, remote.clone())
                    .map_err(DemoError::store(
                        name,
                        format!("make the {collection} handler"),
                    ))?;
            builder = builder
                .initial_sync(collection, handler.clone(), FeatureSyncConfig::new())
                .background_sync(collection, handler.clone(), FeatureSyncConfig::new());
            handlers.push(handler);
        }
        let sync = builder.build().map_err(|source| DemoError::SyncBuild {
            device: name,
            source,
        })?;
        Ok(TeamDevice {
            name,
            store,
            remote,
            sync,
            handlers,
        })
    }

    /// The live rows of `collection` in the store.
    ///
    /// # Errors
    /// [`DemoError::Store`].
    pub async fn count(&self, collection: &str) -> Result<u64, DemoError> {
        self.store
            .count(collection)
            .await
            .map_err(DemoError::store(self.name, format!("count {collection}")))
    }

    /// The stored data of `id` in `collection`, if the row is live on the device.
    ///
    /// # Errors
    /// [`DemoError::Store`].
    pub async fn data(
        &self,
        collection: &str,
        id: &str,
    ) -> Result<Option<serde_json::Value>, DemoError> {
        Ok(self
            .store
            .get(collection, id)
            .await
            .map_err(DemoError::store(self.name, format!("read {id}")))?
            .map(|doc| doc.data))
    }

    /// Writes `data` as `id` of `collection` in the store (the outbox pushes it at the next
    /// sync).
    ///
    /// # Errors
    /// [`DemoError::Store`].
    pub async fn put(
        &self,
        collection: &str,
        id: &str,
        data: serde_json::Value,
    ) -> Result<(), DemoError> {
        self.store
            .put(collection, id, data)
            .await
            .map_err(DemoError::store(self.name, format!("write {id}")))?;
        Ok(())
    }

    /// Deletes `id` of `collection` in the store.
    ///
    /// # Errors
    /// [`DemoError::Store`].
    pub async fn delete(&self, collection: &str, id: &str) -> Result<(), DemoError> {
        self.store
            .delete(collection, id)
            .await
            .map_err(DemoError::store(self.name, format!("delete {id}")))?;
        Ok(())
    }

    /// Runs one background cycle of `feature` now (push, then pull).
    ///
    /// # Errors
    /// [`DemoError::Sync`] naming `step`.
    pub async fn sync_feature(&self, feature: &str, step: &'static str) -> Result<(), DemoError> {
        self.sync
            .sync_feature(feature)
            .await
            .map_err(|source| DemoError::Sync {
                device: self.name,
                step,
                source,
            })?;
        Ok(())
    }

    /// Compares each shared collection's count and digest with what the server lets this user
    /// read.
    ///
    /// # Errors
    /// [`DemoError::Store`] when a digest cannot be computed or fetched.
    pub async fn verify(&self) -> Result<Vec<VerifyReport>, DemoError> {
        let mut reports = Vec::with_capacity(self.handlers.len());
        for handler in &self.handlers {
            reports.push(handler.verify().await.map_err(DemoError::store(
                self.name,
                format!("verify {} against the server", handler.collection()),
            ))?);
        }
        Ok(reports)
    }

    /// The server's count of the rows of `collection` this user may read, asked over HTTP.
    ///
    /// # Errors
    /// [`DemoError::Remote`].
    pub async fn server_count(&self, collection: &str) -> Result<u64, DemoError> {
        use fero_protocol::Remote;
        let digest = self
            .remote
            .digest(collection)
            .await
            .map_err(|source| DemoError::Remote {
                device: self.name,
                collection: collection.to_owned(),
                source,
            })?;
        Ok(digest.count)
    }
}
