//! `HttpRemote::pull_ahead` sends its request at once and reads the answer only when the engine's
//! gate opens (the apply of the page before it has ended), over a real loopback connection.

mod support;

use std::time::Duration;

use axum::Router;
use axum::routing::post;
use fero::{PageGate, SyncCheckpoint, SyncId};
use fero_protocol::{PullRequest, Remote};
use serde_json::json;
use support::{json, remote, serve};
use tokio::sync::mpsc;

#[tokio::test]
async fn pull_ahead_is_answered_at_once_but_read_only_when_the_gate_opens() {
    let (served_tx, mut served) = mpsc::unbounded_channel();
    let router = Router::new().route(
        "/v1/collections/{name}/pull",
        post(move || {
            let served_tx = served_tx.clone();
            async move {
                served_tx.send(()).unwrap();
                json(
                    200,
                    json!({
                        "items": [{ "id": "a", "sync_id": 11, "version": 1, "data": { "n": 1 } }],
                        "checkpoint": { "last_sync_id": 11 },
                        "has_more": false
                    }),
                )
            }
        }),
    );
    let addr = serve(router).await;
    let remote = remote(addr, "token");
    let request = PullRequest {
        checkpoint: Some(SyncCheckpoint::at(SyncId(10))),
        limit: 100,
        subscription: None,
    };

    let (opener, gate) = PageGate::closed();
    let mut pull = Box::pin(remote.pull_ahead("contacts", &request, &gate));
    // The request goes out while the gate is closed: the server answers it.
    tokio::select! {
        _ = &mut pull => panic!("the answer was read before the gate opened"),
        served = served.recv() => served.unwrap(),
    }
    // ...but nothing of the answer is read while the gate stays closed.
    let waited = tokio::time::timeout(Duration::from_millis(300), &mut pull).await;
    assert!(
        waited.is_err(),
        "the answer was read before the gate opened"
    );
    assert_eq!(remote.stats().bytes_received, 0);

    opener.open();
    let page = pull.await.unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.checkpoint.last_sync_id, SyncId(11));
    assert!(remote.stats().bytes_received > 0);
    assert_eq!(remote.stats().requests, 1);
}

#[tokio::test]
async fn pull_ahead_with_an_open_gate_is_a_plain_pull() {
    let router = Router::new().route(
        "/v1/collections/{name}/pull",
        post(|| async {
            json(
                200,
                json!({ "items": [], "checkpoint": { "last_sync_id": 10 }, "has_more": false }),
            )
        }),
    );
    let addr = serve(router).await;
    let remote = remote(addr, "token");
    let request = PullRequest {
        checkpoint: Some(SyncCheckpoint::at(SyncId(10))),
        limit: 100,
        subscription: None,
    };
    let page = remote
        .pull_ahead("contacts", &request, &PageGate::open())
        .await
        .unwrap();
    assert!(page.items.is_empty());
}
