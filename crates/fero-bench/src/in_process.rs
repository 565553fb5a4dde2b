//! W1, W1-raw, W2 and W3: the engine against in-process handlers, no I/O, so what is measured is
//! fero's own cost next to the handlers' (item generation and the compact store).

use std::sync::Arc;
use std::time::Instant;

use fero::{
    ApplyContext, ConflictResolutionStrategy, FeatureKey, FeatureSyncConfig, FeroSync,
    InMemorySyncMetadataRepo, InitialSyncHandler, InitialSyncState, SyncCheckpoint, SyncId,
    SyncKind, SyncMetadataRepo, Version,
};

use crate::data::BenchItem;
use crate::error::BenchError;
use crate::handler::{SharedStore, StoreHandler, lock};
use crate::server::{AcceptAllSink, GeneratedFeed};
use crate::workload::Sample;

/// The feature every in-process workload syncs.
pub(crate) const FEATURE: &str = "items";

/// The jitter seed (retries never happen with these handlers; the seed keeps runs identical).
pub(crate) const SEED: u64 = 42;

/// The "version" whose generated content a local edit writes: any value other than the server's
/// versions gives different text.
const LOCAL_EDIT_SALT: Version = Version(1_000);

/// W1: initial sync of `n` generated items through `FeroSync`, checkpoint saved every page.
pub(crate) async fn initial_sync(n: u64, batch: usize) -> Result<Sample, BenchError> {
    const W: &str = "W1";
    let handler = initial_handler(n);
    let store = handler.store();
    let started = Instant::now();
    let sync = FeroSync::builder()
        .metadata_repo(InMemorySyncMetadataRepo::new())
        .initial_sync(FEATURE, handler, FeatureSyncConfig::new().batch_size(batch))
        .seed(SEED)
        .build()
        .map_err(BenchError::build(W))?;
    let report = sync.run().await.map_err(BenchError::sync(W))?;
    let elapsed = started.elapsed();
    sync.dispose().await;
    BenchError::verify(W, n, "items pulled", n, report.totals().pulled)?;
    let stored = lock(&store).len() as u64;
    BenchError::verify(W, n, "items stored", n, stored)?;
    Ok(Sample::new(elapsed, stored))
}

/// W1-raw: the same handler calls as W1 in a hand-written loop (fetch, apply, save the
/// checkpoint, repeat), with no orchestrator: the floor for W1.
pub(crate) async fn initial_sync_raw(n: u64, batch: usize) -> Result<Sample, BenchError> {
    const W: &str = "W1-raw";
    let handler = initial_handler(n);
    let store = handler.store();
    let repo = InMemorySyncMetadataRepo::new();
    let key = FeatureKey::new(FEATURE);
    let repo_error = |source| BenchError::Repo {
        workload: W,
        source,
    };
    let started = Instant::now();
    let mut checkpoint = repo.checkpoint(&key).await.map_err(repo_error)?;
    let mut pages = 0;
    let mut pulled = 0u64;
    loop {
        let page = handler
            .fetch_remote_data(checkpoint.as_ref(), batch)
            .await
            .map_err(|source| BenchError::Handler {
                workload: W,
                operation: "fetch",
                source,
            })?;
        if page.items.is_empty() {
            break;
        }
        let more = page.has_more;
        let next = match page.checkpoint {
            Some(next) => next,
            None => SyncCheckpoint::at(
                page.items
                    .iter()
                    .map(|p| p.item.sync_id)
                    .max()
                    .unwrap_or_default(),
            ),
        };
        pages += 1;
        let context = ApplyContext::new(key.clone(), SyncKind::Initial, Some(next.clone()), pages);
        let applied = handler
            .save_to_local(page.items, &context)
            .await
            .map_err(|source| BenchError::Handler {
                workload: W,
                operation: "apply",
                source,
            })?;
        pulled += applied.applied as u64;
        repo.save_checkpoint(&key, &next)
            .await
            .map_err(repo_error)?;
        checkpoint = Some(next);
        if !more {
            break;
        }
    }
    repo.set_initial_sync_state(&key, InitialSyncState::Completed)
        .await
        .map_err(repo_error)?;
    let elapsed = started.elapsed();
    BenchError::verify(W, n, "items pulled", n, pulled)?;
    let stored = lock(&store).len() as u64;
    BenchError::verify(W, n, "items stored", n, stored)?;
    Ok(Sample::new(elapsed, stored))
}

fn initial_handler(n: u64) -> StoreHandler {
    StoreHandler::new(
        Arc::new(GeneratedFeed::new(n, Version(1), 0)),
        Arc::new(AcceptAllSink::new(SyncId(n))),
    )
}

/// A store holding items `1..=m` synced at version 1 (sync_id = index) and each edited locally
/// once since (version 2 on base 1, in the outbox in index order).
fn edited_store(m: u64) -> SharedStore {
    let store = SharedStore::default();
    {
        let mut store = lock(&store);
        for index in 1..=m {
            let item = BenchItem::generate(index, Version(1), SyncId(index));
            store.apply_server(&item, false);
            let edit = BenchItem::generate(index, LOCAL_EDIT_SALT, SyncId(index));
            store.edit(item.id(), edit.name(), edit.email(), edit.body(), false);
        }
    }
    store
}

/// A metadata repo where the feature's pull already stands at `SyncId(m)`.
async fn repo_at(workload: &'static str, m: u64) -> Result<InMemorySyncMetadataRepo, BenchError> {
    let repo = InMemorySyncMetadataRepo::new();
    repo.save_checkpoint(&FeatureKey::new(FEATURE), &SyncCheckpoint::at(SyncId(m)))
        .await
        .map_err(|source| BenchError::Repo { workload, source })?;
    Ok(repo)
}

/// W2: one background cycle pushing `m` locally modified items in pages to a sink that accepts
/// all (the pull half finds nothing new).
pub(crate) async fn push(m: u64, batch: usize) -> Result<Sample, BenchError> {
    const W: &str = "W2";
    let store = edited_store(m);
    let sink = Arc::new(AcceptAllSink::new(SyncId(m)));
    let handler = StoreHandler::with_store(
        store.clone(),
        Arc::new(GeneratedFeed::new(0, Version(1), m)),
        sink.clone(),
    );
    let repo = repo_at(W, m).await?;
    let started = Instant::now();
    let sync = FeroSync::builder()
        .metadata_repo(repo)
        .background_sync(FEATURE, handler, FeatureSyncConfig::new().batch_size(batch))
        .seed(SEED)
        .build()
        .map_err(BenchError::build(W))?;
    let report = sync.sync_now().await.map_err(BenchError::sync(W))?;
    let elapsed = started.elapsed();
    sync.dispose().await;
    BenchError::verify(W, m, "changes pushed", m, report.totals().pushed)?;
    BenchError::verify(W, m, "changes the sink accepted", m, sink.accepted())?;
    let store = lock(&store);
    BenchError::verify(
        W,
        m,
        "edits still pending",
        0,
        store.modified_count() as u64,
    )?;
    BenchError::verify(W, m, "items stored", m, store.len() as u64)?;
    Ok(Sample::new(elapsed, m))
}

/// W3: one background cycle in which all `m` items were edited both locally and on the server;
/// every one is a conflict resolved by `ServerWins` (with its event), as in the peer's run.
pub(crate) async fn conflicts(m: u64, batch: usize) -> Result<Sample, BenchError> {
    const W: &str = "W3";
    let store = edited_store(m);
    let sink = Arc::new(AcceptAllSink::new(SyncId(2 * m)));
    let handler = StoreHandler::with_store(
        store.clone(),
        Arc::new(GeneratedFeed::new(m, Version(2), m)),
        sink.clone(),
    );
    let repo = repo_at(W, m).await?;
    let started = Instant::now();
    let sync = FeroSync::builder()
        .metadata_repo(repo)
        .background_sync(FEATURE, handler, FeatureSyncConfig::new().batch_size(batch))
        .conflict_strategy(ConflictResolutionStrategy::ServerWins)
        .seed(SEED)
        .build()
        .map_err(BenchError::build(W))?;
    let report = sync.sync_now().await.map_err(BenchError::sync(W))?;
    let elapsed = started.elapsed();
    sync.dispose().await;
    let totals = report.totals();
    BenchError::verify(W, m, "conflicts resolved", m, totals.conflicts)?;
    BenchError::verify(W, m, "server items pulled", m, totals.pulled)?;
    BenchError::verify(W, m, "changes pushed", 0, sink.accepted())?;
    let store = lock(&store);
    BenchError::verify(
        W,
        m,
        "edits still pending",
        0,
        store.modified_count() as u64,
    )?;
    let server_versions = (1..=m)
        .filter(|&index| {
            store
                .get(&crate::data::item_id(index))
                .is_some_and(|doc| doc.version == Version(2))
        })
        .count() as u64;
    BenchError::verify(W, m, "items at the server's version", m, server_versions)?;
    Ok(Sample::new(elapsed, m))
}
