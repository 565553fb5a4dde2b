//! An edit pushed by one device reaches another through the change stream, with no poll timer
//! running: the notice triggers the other device's background cycle. After a server restart the
//! stream reconnects by itself and catches up.

mod support;

use std::time::{Duration, Instant};

use fero::{FeroSync, SyncEvent, SyncEventStream};
use futures::StreamExt;
use serde_json::json;
use support::device::{Device, DeviceConfig};
use support::server::TestServer;

/// Waits for the next background cycle of `sync` that pulled at least `min_pulled` changes.
async fn next_cycle_pulling(events: &mut SyncEventStream, min_pulled: u64) -> u64 {
    while let Some(event) = events.next().await {
        match event {
            Ok(SyncEvent::BackgroundSyncCompleted { pulled, .. }) if pulled >= min_pulled => {
                return pulled;
            }
            _ => {}
        }
    }
    panic!("the event stream ended");
}

/// Waits, with a bound, until the device's change stream has connected `n` times.
async fn stream_connected(device: &Device, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while device.remote.stats().stream_connects < n {
        assert!(
            Instant::now() < deadline,
            "the change stream did not connect within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn push_note(device: &Device, id: &str, text: &str) {
    device
        .store
        .put("notes", id, json!({ "text": text }))
        .await
        .unwrap();
    let report = device.sync.sync_now().await.unwrap();
    assert_eq!(report.totals().pushed, 1);
}

fn listen(device: &Device) -> (fero_http::LiveTriggers, SyncEventStream) {
    let events = device.sync.event_stream();
    let live = device
        .remote
        .live_triggers(device.sync.clone(), [("notes", "notes")]);
    (live, events)
}

async fn start(device: &Device) -> &FeroSync {
    device.sync.start_sync().await.unwrap();
    &device.sync
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_on_one_device_reaches_another_through_the_change_stream_without_polling() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("server.db"));
    let url = server.url();
    let phone = Device::new(DeviceConfig::new(&url, "alice-phone", "phone")).await;
    let laptop = Device::new(DeviceConfig::new(&url, "alice-laptop", "laptop")).await;
    phone.sync.run().await.unwrap();
    // The laptop's engine loops on triggers only: no background_interval is configured.
    start(&laptop).await;
    let (live, mut events) = listen(&laptop);
    stream_connected(&laptop, 1).await;
    // The connection itself triggers one catch-up cycle; let it finish first.
    next_cycle_pulling(&mut events, 0).await;

    push_note(&phone, "hello", "from the phone").await;
    let pushed_at = Instant::now();
    let pulled = tokio::time::timeout(Duration::from_secs(5), next_cycle_pulling(&mut events, 1))
        .await
        .expect("the laptop did not pull the phone's edit within 5 s");
    let latency = pushed_at.elapsed();
    println!("the phone's edit reached the laptop {latency:?} after its push was accepted");
    assert_eq!(pulled, 1);
    assert_eq!(
        laptop
            .store
            .get("notes", "hello")
            .await
            .unwrap()
            .unwrap()
            .data,
        json!({ "text": "from the phone" })
    );

    live.stop();
    live.finished().await.unwrap();
    laptop.sync.dispose().await;
    phone.sync.dispose().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_server_restart_the_stream_reconnects_and_edits_flow_again() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("server.db");
    let server = TestServer::start(&db);
    let url = server.url();
    let phone = Device::new(DeviceConfig::new(&url, "alice-phone", "phone")).await;
    let laptop = Device::new(DeviceConfig::new(&url, "alice-laptop", "laptop")).await;
    phone.sync.run().await.unwrap();
    start(&laptop).await;
    let (live, mut events) = listen(&laptop);
    stream_connected(&laptop, 1).await;
    next_cycle_pulling(&mut events, 0).await;

    let (db, addr) = server.crash();
    let _server = TestServer::start_at(&db, addr);
    stream_connected(&laptop, 2).await;
    next_cycle_pulling(&mut events, 0).await;

    push_note(&phone, "after", "the restart").await;
    tokio::time::timeout(Duration::from_secs(5), next_cycle_pulling(&mut events, 1))
        .await
        .expect("the laptop did not pull the phone's edit within 5 s of the restart");
    assert!(laptop.store.get("notes", "after").await.unwrap().is_some());

    drop(live);
    laptop.sync.dispose().await;
    phone.sync.dispose().await;
}
