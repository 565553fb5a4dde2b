//! Page apply: one page written into the compact store by the handler alone, and ten pages
//! through `FeroSync` next to the same ten pages in a hand-written loop (the engine's per-page
//! cost is the difference). Inputs are generated from item indices, so every run sees the same
//! data.
//!
//! `cargo bench -p fero-bench --bench page_apply`

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use fero::{
    ApplyContext, FeatureKey, FeatureSyncConfig, FeroSync, InitialSyncHandler, SyncId, SyncKind,
    SyncPayload, Version,
};
use fero_bench::data::BenchItem;
use fero_bench::handler::StoreHandler;
use fero_bench::server::{AcceptAllSink, GeneratedFeed};

const PAGE: u64 = 1_000;
const PAGES: u64 = 10;

fn handler(n: u64) -> StoreHandler {
    StoreHandler::new(
        Arc::new(GeneratedFeed::new(n, Version(1), 0)),
        Arc::new(AcceptAllSink::new(SyncId(n))),
    )
}

fn page() -> Vec<SyncPayload<BenchItem>> {
    (1..=PAGE)
        .map(|i| SyncPayload::new(BenchItem::generate(i, Version(1), SyncId(i))))
        .collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread runtime starts")
}

fn page_apply(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("page_apply");
    group.throughput(Throughput::Elements(PAGE));
    group.bench_function("generate_page_1000", |b| b.iter(|| black_box(page())));
    group.bench_function("store_page_1000", |b| {
        let context = ApplyContext::new(FeatureKey::new("items"), SyncKind::Initial, None, 1);
        b.iter_batched(
            || (handler(PAGE), page()),
            |(handler, items)| rt.block_on(handler.save_to_local(items, &context)),
            BatchSize::SmallInput,
        );
    });
    group.throughput(Throughput::Elements(PAGE * PAGES));
    group.bench_function("fero_sync_10_pages", |b| {
        b.iter_batched(
            || {
                FeroSync::builder()
                    .initial_sync("items", handler(PAGE * PAGES), FeatureSyncConfig::new())
                    .seed(1)
                    .build()
                    .expect("a one-feature engine builds")
            },
            |sync| {
                rt.block_on(sync.run())
                    .expect("the in-process sync succeeds")
            },
            BatchSize::SmallInput,
        );
    });
    group.bench_function("hand_written_loop_10_pages", |b| {
        let key = FeatureKey::new("items");
        b.iter_batched(
            || handler(PAGE * PAGES),
            |handler| {
                rt.block_on(async {
                    let mut checkpoint = None;
                    for number in 1..=PAGES {
                        let page = handler
                            .fetch_remote_data(checkpoint.as_ref(), PAGE as usize)
                            .await
                            .expect("the generated feed serves every page");
                        let next = page.checkpoint.clone();
                        let context =
                            ApplyContext::new(key.clone(), SyncKind::Initial, next.clone(), number);
                        handler
                            .save_to_local(page.items, &context)
                            .await
                            .expect("the compact store applies every page");
                        checkpoint = next;
                    }
                })
            },
            BatchSize::SmallInput,
        );
    });
    group.finish();
}

criterion_group!(benches, page_apply);
criterion_main!(benches);
