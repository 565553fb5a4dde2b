//! Event fan-out: 1,000 progress events emitted through `FeroSync` and read by 0, 1 and 4
//! subscribers (each subscriber receives its own clone of every event).
//!
//! `cargo bench -p fero-bench --bench events`

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use fero::{FeatureKey, FeroSync, SyncDirection, SyncEvent, SyncEventStream};
use futures::{FutureExt, StreamExt};

const EVENTS: u64 = 1_000;

fn drain(stream: &mut SyncEventStream) -> u64 {
    let mut received = 0;
    while let Some(Some(event)) = stream.next().now_or_never() {
        black_box(&event);
        received += 1;
    }
    received
}

fn fan_out(c: &mut Criterion) {
    let mut group = c.benchmark_group("event_fan_out");
    group.throughput(Throughput::Elements(EVENTS));
    let feature = FeatureKey::new("items");
    for subscribers in [0usize, 1, 4] {
        group.bench_function(format!("{subscribers}_subscribers"), |b| {
            b.iter_batched(
                || {
                    let sync = FeroSync::builder()
                        .event_capacity(EVENTS as usize)
                        .build()
                        .expect("an engine without features builds");
                    let streams: Vec<_> = (0..subscribers).map(|_| sync.event_stream()).collect();
                    (sync, streams)
                },
                |(sync, mut streams)| {
                    for page in 1..=EVENTS {
                        sync.emit_sync_event(SyncEvent::BackgroundSyncProgress {
                            feature: feature.clone(),
                            direction: SyncDirection::Pull,
                            pages: page,
                            items: page * 1_000,
                        });
                    }
                    streams.iter_mut().map(drain).sum::<u64>()
                },
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

criterion_group!(benches, fan_out);
criterion_main!(benches);
