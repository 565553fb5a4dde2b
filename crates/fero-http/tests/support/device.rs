//! A client device: a SQLite store in a temporary directory, an `HttpRemote`, and a `FeroSync`
//! that syncs the given collections through them.

use std::collections::BTreeMap;
use std::time::Duration;

use fero::{
    ConflictResolutionStrategy, ExponentialBackoff, FeatureSyncConfig, FeroSync, SyncEvent,
};
use fero_http::HttpRemote;
use fero_protocol::Remote;
use fero_sqlite::{SqliteStore, StoreOptions};

/// How a device is set up.
pub(crate) struct DeviceConfig<'a> {
    pub(crate) url: &'a str,
    pub(crate) token: &'a str,
    pub(crate) device_id: &'a str,
    pub(crate) collections: &'a [&'a str],
    pub(crate) batch_size: usize,
    pub(crate) strategy: ConflictResolutionStrategy,
    pub(crate) max_attempts: u32,
    pub(crate) seed: u64,
}

impl<'a> DeviceConfig<'a> {
    pub(crate) fn new(url: &'a str, token: &'a str, device_id: &'a str) -> Self {
        DeviceConfig {
            url,
            token,
            device_id,
            collections: &["notes"],
            batch_size: 1_000,
            strategy: ConflictResolutionStrategy::HighestVersionWins,
            max_attempts: 8,
            seed: 1,
        }
    }
}

pub(crate) struct Device {
    pub(crate) store: SqliteStore,
    pub(crate) remote: HttpRemote,
    pub(crate) sync: FeroSync,
    _dir: tempfile::TempDir,
}

/// A backoff fast enough for loopback tests: 10 ms doubling to 200 ms, no jitter so runs
/// replay.
pub(crate) fn fast_backoff(max_attempts: u32) -> ExponentialBackoff {
    ExponentialBackoff::new(
        Duration::from_millis(10),
        2.0,
        Duration::from_millis(200),
        max_attempts,
    )
    .unwrap()
    .with_jitter(false)
}

impl Device {
    /// A device with a remote at `config.url`.
    pub(crate) async fn new(config: DeviceConfig<'_>) -> Device {
        let remote = HttpRemote::builder(config.url, config.token)
            .device_id(config.device_id)
            .connect_timeout(Duration::from_secs(2))
            .request_timeout(Duration::from_secs(5))
            .reconnect_backoff(fast_backoff(u32::MAX))
            .seed(config.seed)
            .build()
            .unwrap();
        Self::with_remote(config, remote.clone(), remote).await
    }

    /// A device whose sync handlers use `sync_remote` (a wrapper of `remote`, or `remote`).
    pub(crate) async fn with_remote<R: Remote + Clone>(
        config: DeviceConfig<'_>,
        remote: HttpRemote,
        sync_remote: R,
    ) -> Device {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open_with(
            dir.path().join(format!("{}.db", config.device_id)),
            StoreOptions::new().device_id(config.device_id),
        )
        .await
        .unwrap();
        let mut builder = FeroSync::builder()
            .metadata_repo(store.metadata_repo())
            .conflict_strategy(config.strategy)
            .backoff(fast_backoff(config.max_attempts))
            .seed(config.seed);
        for collection in config.collections {
            let handler = store
                .sync_handler(*collection, sync_remote.clone())
                .unwrap();
            let feature = FeatureSyncConfig::new().batch_size(config.batch_size);
            builder = builder
                .initial_sync(*collection, handler.clone(), feature.clone())
                .background_sync(*collection, handler, feature);
        }
        Device {
            store,
            remote,
            sync: builder.build().unwrap(),
            _dir: dir,
        }
    }

    /// The live documents of `collection`: id → data.
    pub(crate) async fn contents(&self, collection: &str) -> BTreeMap<String, serde_json::Value> {
        self.store
            .query(collection)
            .await
            .unwrap()
            .into_iter()
            .map(|doc| (doc.id, doc.data))
            .collect()
    }

    /// Asserts the server's count and digest of `collection` equal the store's.
    pub(crate) async fn assert_in_step_with_server(&self, collection: &str) {
        let server = self.remote.digest(collection).await.unwrap();
        let local = self.store.digest(collection).await.unwrap();
        assert_eq!(
            (server.count, server.digest.as_str()),
            (local.count(), local.hex().as_str()),
            "the store and the server disagree on {collection}"
        );
    }

    /// The events of the device's sync from now on, collected by a task until `dispose`.
    pub(crate) fn record_events(&self) -> tokio::task::JoinHandle<Vec<SyncEvent>> {
        use futures::StreamExt;
        let mut events = self.sync.event_stream();
        tokio::spawn(async move {
            let mut seen = Vec::new();
            while let Some(event) = events.next().await {
                if let Ok(event) = event {
                    seen.push(event);
                }
            }
            seen
        })
    }
}
