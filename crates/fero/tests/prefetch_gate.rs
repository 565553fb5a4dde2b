//! The page fetched ahead gets a gate that opens only when the apply before it has returned,
//! including when that apply fails: a transport that waits on it reads at most one page that a
//! crash can lose, and never deadlocks the pull.

mod support;

use std::time::Duration;

use fero::memory::{MemoryRemote, MemoryStore};
use fero::{FeatureSyncConfig, FeroSync, HandlerError};
use support::*;

fn run_ok(report: fero::Result<fero::RunReport>) {
    if let Err(error) = report {
        panic!("sync failed: {error}");
    }
}

/// An initial sync of `remote` into `store` in pages of 100, through a handler that records
/// what each prefetch's gate said.
fn initial_sync(store: &MemoryStore, remote: &MemoryRemote) -> (Hooked, FeroSync) {
    let handler = Hooked::new(store.handler(remote.clone()));
    let sync = FeroSync::builder()
        .initial_sync(
            "items",
            handler.clone(),
            FeatureSyncConfig::new().batch_size(100),
        )
        .build()
        .unwrap();
    (handler, sync)
}

#[tokio::test(start_paused = true)]
async fn initial_sync_reads_each_prefetched_page_only_after_the_page_before_it_is_applied() {
    let remote = seeded_remote(1_000);
    let store = MemoryStore::new();
    let (handler, sync) = initial_sync(&store, &remote);
    run_ok(sync.run().await);
    assert_converged(&store, &remote);

    let seen = handler.prefetches.lock().unwrap().clone();
    // Pages 2..=10 are fetched ahead; page 1 has nothing before it.
    assert_eq!(seen.len(), 9);
    for (index, (open_at_call, applied_when_read)) in seen.into_iter().enumerate() {
        let page = index as u64 + 2;
        assert!(
            !open_at_call,
            "page {page}: gate open while page {} applied",
            page - 1
        );
        assert_eq!(
            applied_when_read,
            page - 1,
            "page {page} was read before page {} had been applied",
            page - 1
        );
    }
}

#[tokio::test(start_paused = true)]
async fn background_pull_gates_its_prefetched_pages_the_same_way() {
    let remote = seeded_remote(450);
    let store = MemoryStore::new();
    let handler = Hooked::new(store.handler(remote.clone()));
    let sync = FeroSync::builder()
        .background_sync(
            "items",
            handler.clone(),
            FeatureSyncConfig::new().batch_size(100),
        )
        .build()
        .unwrap();
    run_ok(sync.sync_now().await);
    assert_converged(&store, &remote);

    let seen = handler.prefetches.lock().unwrap().clone();
    assert_eq!(seen.len(), 4, "pages 2..=5 are fetched ahead");
    for (index, (_, applied_when_read)) in seen.into_iter().enumerate() {
        assert_eq!(applied_when_read, index as u64 + 1);
    }
}

#[tokio::test(start_paused = true)]
async fn a_failed_apply_opens_the_gate_so_the_pull_ends_with_the_error() {
    let remote = seeded_remote(500);
    let store = MemoryStore::new();
    store.fail_next_apply(HandlerError::permanent("disk full"));
    let (handler, sync) = initial_sync(&store, &remote);
    // With paused time a deadlock would let the clock run to this timeout instead of hanging.
    let outcome = tokio::time::timeout(Duration::from_secs(3_600), sync.run())
        .await
        .expect("the pull must not wait forever on a gate whose apply failed");
    let error = outcome.expect_err("the failed apply fails the run");
    assert!(error.to_string().contains("disk full"), "{error}");
    let seen = handler.prefetches.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![(false, 1)],
        "page 2 was read once page 1's apply returned"
    );
    assert_eq!(store.applied_pages(), 0);
}
