//! Conflict detection and resolution: one background cycle over a page of 1,000 pulled items
//! that all conflict with local edits (`ServerWins`), without and with an event subscriber, next
//! to the same page when nothing is edited locally.
//!
//! `cargo bench -p fero-bench --bench conflicts`

use std::sync::{Arc, Mutex};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use fero::{
    ConflictResolutionStrategy, FeatureSyncConfig, FeroSync, InMemorySyncMetadataRepo,
    SyncCheckpoint, SyncId, SyncMetadataRepo, Version,
};
use fero_bench::data::BenchItem;
use fero_bench::handler::StoreHandler;
use fero_bench::server::{AcceptAllSink, GeneratedFeed};
use fero_bench::store::CompactStore;

const M: u64 = 1_000;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread runtime starts")
}

/// A store with items 1..=M synced at version 1, each edited locally when `edited`; an engine
/// whose pull brings all M at version 2.
fn setup(rt: &tokio::runtime::Runtime, edited: bool) -> FeroSync {
    let mut store = CompactStore::new();
    for index in 1..=M {
        let item = BenchItem::generate(index, Version(1), SyncId(index));
        store.apply_server(&item, false);
        if edited {
            store.edit(
                item.id(),
                "Local Edit",
                "local@example.com",
                "edited",
                false,
            );
        }
    }
    let handler = StoreHandler::with_store(
        Arc::new(Mutex::new(store)),
        Arc::new(GeneratedFeed::new(M, Version(2), M)),
        Arc::new(AcceptAllSink::new(SyncId(2 * M))),
    );
    let repo = InMemorySyncMetadataRepo::new();
    rt.block_on(repo.save_checkpoint(&"items".into(), &SyncCheckpoint::at(SyncId(M))))
        .expect("the in-memory repo saves");
    FeroSync::builder()
        .metadata_repo(repo)
        .background_sync("items", handler, FeatureSyncConfig::new())
        .conflict_strategy(ConflictResolutionStrategy::ServerWins)
        .seed(1)
        .build()
        .expect("a one-feature engine builds")
}

fn conflicts(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("conflicts");
    group.throughput(Throughput::Elements(M));
    for (name, edited, subscribed) in [
        ("no_local_edits", false, false),
        ("all_conflict_server_wins", true, false),
        ("all_conflict_server_wins_subscribed", true, true),
    ] {
        group.bench_function(name, |b| {
            b.iter_batched(
                || {
                    let sync = setup(&rt, edited);
                    let events = subscribed.then(|| sync.event_stream());
                    (sync, events)
                },
                |(sync, events)| {
                    let report = rt.block_on(sync.sync_now()).expect("the cycle succeeds");
                    (report, events)
                },
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

criterion_group!(benches, conflicts);
criterion_main!(benches);
