//! A server that crashes in the middle of a client's initial sync and comes back on the same
//! port with the same database file: the client retries through the outage and finishes, with
//! every row applied exactly once and the store in step with the server.

mod support;

use std::time::Duration;

use fero::SyncEvent;
use futures::StreamExt;
use support::device::{Device, DeviceConfig};
use support::server::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_crash_mid_sync_is_ridden_out_and_no_page_is_applied_twice() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("server.db");
    let mut server = Some(TestServer::start(&db));
    server
        .as_ref()
        .unwrap()
        .seed("alice", "notes", "n", 5_000)
        .await;
    let url = server.as_ref().unwrap().url();
    let device = Device::new(DeviceConfig {
        batch_size: 500,
        max_attempts: 12,
        ..DeviceConfig::new(&url, "alice-phone", "phone")
    })
    .await;

    let mut events = device.sync.event_stream();
    let sync = device.sync.clone();
    let run = tokio::spawn(async move { sync.run().await });

    let mut crashed_at_page = None;
    let mut restarted = false;
    let completed_items = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(event) = events.next().await {
            match event.unwrap() {
                SyncEvent::InitialSyncProgress { pages, .. }
                    if crashed_at_page.is_none() && pages >= 3 =>
                {
                    let (db, addr) = server.take().unwrap().crash();
                    crashed_at_page = Some(pages);
                    // Restart only once the client has felt the outage.
                    let mut retrying = false;
                    while let Some(event) = events.next().await {
                        if let Ok(SyncEvent::Retrying { error, .. }) = event {
                            println!("client retries through the outage: {error}");
                            retrying = true;
                            break;
                        }
                    }
                    assert!(retrying, "the event stream ended before the client retried");
                    server = Some(TestServer::start_at(&db, addr));
                    restarted = true;
                }
                SyncEvent::InitialSyncCompleted { items, .. } => return items,
                SyncEvent::InitialSyncFailed { error, .. } => {
                    panic!("initial sync failed: {error}")
                }
                _ => {}
            }
        }
        panic!("the event stream ended before initial sync completed");
    })
    .await
    .expect("initial sync did not complete within 60 s");

    run.await.unwrap().unwrap();
    let crashed_at_page = crashed_at_page.unwrap();
    assert!(restarted);
    assert!(crashed_at_page < 10, "the crash came after the last page");
    // Items applied in this run: a page applied twice would count twice.
    assert_eq!(completed_items, 5_000);
    assert_eq!(device.store.count("notes").await.unwrap(), 5_000);
    device.assert_in_step_with_server("notes").await;
    let stats = device.remote.stats();
    println!("crashed after page {crashed_at_page}; transport: {stats:?}");
    assert!(stats.transient_failures >= 1, "{stats:?}");
    device.sync.dispose().await;
}
