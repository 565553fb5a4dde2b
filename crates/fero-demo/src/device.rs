//! [`Device`]: one client of the story: a SQLite store file, an HTTP remote, one
//! `CollectionSync` handler per collection, and a FeroSync that runs them.

use std::path::Path;
use std::sync::Arc;

use fero::{
    ExponentialBackoff, FeatureKey, FeatureSyncConfig, FeroSync, SyncCheckpoint, SyncMetadataRepo,
};
use fero_http::HttpRemote;
use fero_sqlite::{CollectionSync, SqliteStore, StoreOptions, VerifyReport};

use crate::data::{self, CONTACTS, MESSAGES, PREFERENCES};
use crate::error::DemoError;
use crate::options::Strategy;
use crate::output::Output;
use crate::remote::{LoggedRemote, PullGate};
use crate::watcher::{CancelRule, Watcher};

/// How a device is set up.
#[derive(Clone, Debug)]
pub struct DeviceConfig {
    /// "A" or "B".
    pub name: &'static str,
    /// The device id (in the store file and on every request).
    pub device_id: &'static str,
    /// The bearer token.
    pub token: &'static str,
    /// The server's base URL.
    pub url: String,
    /// The conflict strategy.
    pub strategy: Strategy,
    /// Seeds fero's retry jitter and the change stream's reconnect jitter.
    pub seed: u64,
    /// Rows per collection on the server, for the page sizes.
    pub contacts: u64,
    /// Rows of messages on the server.
    pub messages: u64,
}

/// One client device (see the module docs).
#[derive(Debug)]
pub struct Device {
    /// "A" or "B".
    pub name: &'static str,
    /// The local store.
    pub store: SqliteStore,
    /// The remote the handlers use (with its pull log).
    pub remote: LoggedRemote,
    /// The engine.
    pub sync: FeroSync,
    /// The event watcher.
    pub watcher: Watcher,
    gate: Option<Arc<PullGate>>,
    handlers: Vec<CollectionSync<LoggedRemote>>,
}

impl Device {
    /// Opens the device's store at `db` and builds its engine: `user_preferences` as an
    /// initial-sync feature; `contacts` and `messages` registered for initial and background
    /// sync under the same key (one checkpoint: background sync starts where initial sync
    /// ended), `messages` after `contacts`. `cancel` arms the watcher's cancel of step 3 and
    /// gates the remote's pulls for it.
    ///
    /// # Errors
    /// [`DemoError::Store`], [`DemoError::RemoteBuild`] or [`DemoError::SyncBuild`].
    pub async fn open(
        config: DeviceConfig,
        db: &Path,
        output: &Output,
        cancel_at: Option<(&str, u64)>,
    ) -> Result<Device, DemoError> {
        let name = config.name;
        let store = SqliteStore::open_with(db, StoreOptions::new().device_id(config.device_id))
            .await
            .map_err(DemoError::store(name, format!("open {}", db.display())))?;
        let http = HttpRemote::builder(&config.url, config.token)
            .device_id(config.device_id)
            .user_agent(concat!("fero-demo/", env!("CARGO_PKG_VERSION")))
            .seed(config.seed)
            .build()
            .map_err(|source| DemoError::RemoteBuild {
                device: name,
                source,
            })?;
        let rule = cancel_at.map(|(feature, at_items)| CancelRule {
            feature: feature.to_owned(),
            at_items,
            gate: Arc::new(PullGate::new(feature)),
        });
        let remote = LoggedRemote::new(http, rule.as_ref().map(|rule| Arc::clone(&rule.gate)));

        let handler = |collection: &str| {
            store
                .sync_handler(collection, remote.clone())
                .map_err(DemoError::store(
                    name,
                    format!("make the {collection} handler"),
                ))
        };
        let preferences = handler(PREFERENCES)?;
        let contacts = handler(CONTACTS)?;
        let messages = handler(MESSAGES)?;
        let contacts_config = FeatureSyncConfig::new()
            .priority(1)
            .batch_size(data::page_size(config.contacts));
        let messages_config = FeatureSyncConfig::new()
            .depends_on(CONTACTS)
            .batch_size(data::page_size(config.messages));
        let sync = FeroSync::builder()
            .metadata_repo(store.metadata_repo())
            .conflict_strategy(config.strategy.to_fero())
            .backoff(ExponentialBackoff::default())
            .seed(config.seed)
            .max_concurrent(2)
            .initial_sync(PREFERENCES, preferences.clone(), FeatureSyncConfig::new())
            .initial_sync(CONTACTS, contacts.clone(), contacts_config.clone())
            .background_sync(CONTACTS, contacts.clone(), contacts_config)
            .initial_sync(MESSAGES, messages.clone(), messages_config.clone())
            .background_sync(MESSAGES, messages.clone(), messages_config)
            .build()
            .map_err(|source| DemoError::SyncBuild {
                device: name,
                source,
            })?;
        let gate = rule.as_ref().map(|rule| Arc::clone(&rule.gate));
        let watcher = Watcher::spawn(name, &sync, output, rule);
        Ok(Device {
            name,
            store,
            remote,
            sync,
            watcher,
            gate,
            handlers: vec![preferences, contacts, messages],
        })
    }

    /// Opens the pull gate of step 3 for good (the watcher opens it when it cancels; this covers
    /// a run that ended before the cancel point).
    pub fn open_gate(&self) {
        if let Some(gate) = &self.gate {
            gate.open();
        }
    }

    /// The live documents of each collection, in [`data::COLLECTIONS`] order.
    ///
    /// # Errors
    /// [`DemoError::Store`].
    pub async fn counts(&self) -> Result<Vec<(String, u64)>, DemoError> {
        let mut counts = Vec::with_capacity(data::COLLECTIONS.len());
        for collection in data::COLLECTIONS {
            let count = self
                .store
                .count(collection)
                .await
                .map_err(DemoError::store(self.name, format!("count {collection}")))?;
            counts.push((collection.to_owned(), count));
        }
        Ok(counts)
    }

    /// Compares each collection's count and digest with the server's.
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

    /// The saved checkpoint of `feature`.
    ///
    /// # Errors
    /// [`DemoError::Repo`].
    pub async fn checkpoint(&self, feature: &str) -> Result<Option<SyncCheckpoint>, DemoError> {
        self.store
            .metadata_repo()
            .checkpoint(&FeatureKey::new(feature))
            .await
            .map_err(|source| DemoError::Repo {
                device: self.name,
                feature: feature.to_owned(),
                source,
            })
    }

    /// The server's count of `collection`'s live rows, asked over HTTP.
    ///
    /// # Errors
    /// [`DemoError::Remote`].
    pub async fn server_count(&self, collection: &str) -> Result<u64, DemoError> {
        use fero_protocol::Remote;
        let digest = self
            .remote
            .http()
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
