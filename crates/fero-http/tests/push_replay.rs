//! A push whose response is lost after the server committed it: the client replays it with the
//! same mutation id and the server answers with the original result, so the device never
//! conflicts with itself and the server writes the change once.

mod support;

use fero::{SyncEvent, Version};
use fero_protocol::{Change, ChangeOutcome, MutationId, PullRequest, PushRequest, Remote};
use serde_json::json;
use support::device::{Device, DeviceConfig};
use support::proxy::{Fault, FaultProxy};
use support::server::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_replayed_after_its_response_was_dropped_is_not_a_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("server.db"));
    let proxy = FaultProxy::start(&server.url()).await;
    let proxy_url = proxy.url();
    let device = Device::new(DeviceConfig::new(&proxy_url, "alice-phone", "phone")).await;

    device
        .store
        .put("notes", "x", json!({ "text": "hello" }))
        .await
        .unwrap();
    proxy.script("/notes/push", Fault::DropResponse);
    let events = device.record_events();
    let report = device.sync.run().await.unwrap();
    device.sync.dispose().await;

    let pushes: Vec<Fault> = proxy
        .log()
        .into_iter()
        .filter(|(path, _)| path.ends_with("/push"))
        .map(|(_, fault)| fault)
        .collect();
    assert_eq!(
        pushes,
        [Fault::DropResponse, Fault::Pass],
        "the push was replayed once"
    );
    assert_eq!(report.totals().conflicts, 0);
    assert_eq!(report.totals().pushed, 1);
    let events = events.await.unwrap();
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, SyncEvent::ConflictResolved(_))),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, SyncEvent::Retrying { .. }))
    );

    let local = device.store.get("notes", "x").await.unwrap().unwrap();
    assert!(!local.locally_modified);
    assert_eq!(local.version, Version(1));
    assert!(device.store.outbox("notes").await.unwrap().is_empty());

    // The server wrote the change once: version 1, not 2.
    let direct = fero_http::HttpRemote::new(server.url(), "alice-laptop").unwrap();
    let page = direct
        .pull(
            "notes",
            &PullRequest {
                checkpoint: None,
                limit: 10,
                subscription: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].version, Version(1));
    assert_eq!(page.items[0].data, json!({ "text": "hello" }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_push_gets_the_original_answer_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("server.db"));
    let remote = fero_http::HttpRemote::new(server.url(), "alice-phone").unwrap();
    let push = PushRequest {
        changes: vec![Change {
            id: "x".into(),
            base_version: None,
            mutation_id: MutationId::new("phone", 1),
            deleted: false,
            data: json!({ "text": "hello" }),
        }],
    };
    let first = remote.push("notes", &push).await.unwrap();
    let replay = remote.push("notes", &push).await.unwrap();
    assert!(
        matches!(first.results[0].outcome, ChangeOutcome::Accepted { .. }),
        "{first:?}"
    );
    assert_eq!(replay, first);
}
