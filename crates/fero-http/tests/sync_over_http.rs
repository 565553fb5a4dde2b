//! A real `fero-server` on a loopback port and real clients (`SqliteStore` + `HttpRemote` +
//! `FeroSync`) over HTTP: initial sync, incremental sync, edits and deletions between devices,
//! a conflict the server detects and the client's strategy resolves, and isolation between
//! users' tokens.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use fero::{ConflictOutcome, ConflictPhase, SyncEvent, SyncKind};
use fero_http::HttpRemote;
use fero_protocol::{
    DigestResponse, PullRequest, PullResponse, PushRequest, PushResponse, Remote, RemoteError,
    RemoteErrorKind,
};
use serde_json::json;
use support::device::{Device, DeviceConfig};
use support::server::TestServer;

fn server() -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    (TestServer::start(&dir.path().join("server.db")), dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_sync_pulls_every_page_and_ends_in_step_with_the_server() {
    let (server, _dir) = server();
    server.seed("alice", "notes", "n", 2_500).await;
    let url = server.url();
    let device = Device::new(DeviceConfig {
        batch_size: 1_000,
        ..DeviceConfig::new(&url, "alice-phone", "phone")
    })
    .await;

    let report = device.sync.run().await.unwrap();
    let initial = report.outcome("notes", SyncKind::Initial).unwrap();
    match &initial.result {
        fero::FeatureResult::Completed(counts) => {
            assert_eq!(counts.pulled, 2_500);
            assert_eq!(counts.pages, 3);
        }
        other => panic!("initial sync did not complete: {other:?}"),
    }
    assert_eq!(device.store.count("notes").await.unwrap(), 2_500);
    device.assert_in_step_with_server("notes").await;

    let stats = device.remote.stats();
    assert!(
        stats.bytes_received * 3 < stats.bytes_decoded,
        "the server's answers should arrive compressed: {stats:?}"
    );
    assert_eq!(stats.transient_failures + stats.other_failures, 0);
    device.sync.dispose().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_sync_pulls_only_what_changed_since_the_checkpoint() {
    let (server, _dir) = server();
    server.seed("alice", "notes", "old", 300).await;
    let url = server.url();
    let device = Device::new(DeviceConfig::new(&url, "alice-phone", "phone")).await;
    device.sync.run().await.unwrap();

    server.seed("alice", "notes", "new", 10).await;
    let before = device.remote.stats();
    let report = device.sync.sync_now().await.unwrap();
    assert_eq!(report.totals().pulled, 10);
    assert_eq!(device.store.count("notes").await.unwrap(), 310);
    let after = device.remote.stats();
    assert!(
        after.bytes_decoded - before.bytes_decoded < 10_000,
        "an incremental pull of 10 rows moved {} bytes",
        after.bytes_decoded - before.bytes_decoded
    );
    device.assert_in_step_with_server("notes").await;
    device.sync.dispose().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_and_deletions_travel_between_devices_of_one_user() {
    let (server, _dir) = server();
    let url = server.url();
    let phone = Device::new(DeviceConfig::new(&url, "alice-phone", "phone")).await;
    let laptop = Device::new(DeviceConfig::new(&url, "alice-laptop", "laptop")).await;

    for i in 1..=3 {
        phone
            .store
            .put(
                "notes",
                &format!("n{i}"),
                json!({ "text": format!("note {i}") }),
            )
            .await
            .unwrap();
    }
    phone.sync.run().await.unwrap();
    laptop.sync.run().await.unwrap();
    assert_eq!(laptop.contents("notes").await.len(), 3);

    laptop.store.delete("notes", "n2").await.unwrap();
    laptop
        .store
        .put("notes", "n1", json!({ "text": "note 1, edited" }))
        .await
        .unwrap();
    laptop.sync.sync_now().await.unwrap();
    phone.sync.sync_now().await.unwrap();

    let expected = [
        ("n1".to_owned(), json!({ "text": "note 1, edited" })),
        ("n3".to_owned(), json!({ "text": "note 3" })),
    ]
    .into_iter()
    .collect();
    assert_eq!(phone.contents("notes").await, expected);
    assert_eq!(laptop.contents("notes").await, expected);
    assert!(phone.store.get("notes", "n2").await.unwrap().is_none());
    phone.assert_in_step_with_server("notes").await;
    laptop.assert_in_step_with_server("notes").await;
    phone.sync.dispose().await;
    laptop.sync.dispose().await;
}

/// A remote whose pulls can be hidden, as if another device's push committed just after this
/// device pulled: the next push then carries a stale base version and only the server can see
/// the conflict.
#[derive(Clone)]
struct LaggingRemote {
    inner: HttpRemote,
    hide_pulls: Arc<AtomicBool>,
}

#[async_trait]
impl Remote for LaggingRemote {
    async fn pull(
        &self,
        collection: &str,
        request: &PullRequest,
    ) -> Result<PullResponse, RemoteError> {
        if self.hide_pulls.load(Ordering::SeqCst) {
            return Ok(PullResponse {
                items: Vec::new(),
                checkpoint: request.checkpoint.clone().unwrap_or_default(),
                has_more: false,
            });
        }
        self.inner.pull(collection, request).await
    }

    async fn push(
        &self,
        collection: &str,
        request: &PushRequest,
    ) -> Result<PushResponse, RemoteError> {
        self.inner.push(collection, request).await
    }

    async fn digest(&self, collection: &str) -> Result<DigestResponse, RemoteError> {
        self.inner.digest(collection).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_detects_a_stale_push_and_both_devices_converge_on_the_strategys_choice() {
    let (server, _dir) = server();
    let url = server.url();
    let phone = Device::new(DeviceConfig::new(&url, "alice-phone", "phone")).await;
    let laptop_remote = HttpRemote::new(url.clone(), "alice-laptop").unwrap();
    let hide_pulls = Arc::new(AtomicBool::new(false));
    let laptop = Device::with_remote(
        DeviceConfig::new(&url, "alice-laptop", "laptop"),
        laptop_remote.clone(),
        LaggingRemote {
            inner: laptop_remote,
            hide_pulls: hide_pulls.clone(),
        },
    )
    .await;

    phone
        .store
        .put("notes", "x", json!({ "v": "original" }))
        .await
        .unwrap();
    phone.sync.run().await.unwrap();
    laptop.sync.run().await.unwrap();

    // Both edit x offline on version 1: the phone once, the laptop twice.
    phone
        .store
        .put("notes", "x", json!({ "v": "phone" }))
        .await
        .unwrap();
    laptop
        .store
        .put("notes", "x", json!({ "v": "laptop 1" }))
        .await
        .unwrap();
    laptop
        .store
        .put("notes", "x", json!({ "v": "laptop 2" }))
        .await
        .unwrap();
    phone.sync.sync_now().await.unwrap();

    hide_pulls.store(true, Ordering::SeqCst);
    let events = laptop.record_events();
    let report = laptop.sync.sync_now().await.unwrap();
    hide_pulls.store(false, Ordering::SeqCst);
    assert_eq!(report.totals().conflicts, 1);

    phone.sync.sync_now().await.unwrap();
    laptop.sync.sync_now().await.unwrap();
    laptop.sync.dispose().await;
    let conflicts: Vec<_> = events
        .await
        .unwrap()
        .into_iter()
        .filter_map(|event| match event {
            SyncEvent::ConflictResolved(conflict) => Some(conflict),
            _ => None,
        })
        .collect();
    assert_eq!(conflicts.len(), 1, "{conflicts:?}");
    // The laptop's copy (version 3) is higher than the server's (2): highest version wins.
    assert_eq!(conflicts[0].phase, ConflictPhase::Push);
    assert_eq!(conflicts[0].outcome, ConflictOutcome::LocalKept);

    let expected = [("x".to_owned(), json!({ "v": "laptop 2" }))]
        .into_iter()
        .collect();
    assert_eq!(phone.contents("notes").await, expected);
    assert_eq!(laptop.contents("notes").await, expected);
    phone.assert_in_step_with_server("notes").await;
    phone.sync.dispose().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_reaches_only_its_own_users_rows_in_both_directions() {
    let (server, _dir) = server();
    let url = server.url();
    let alice = Device::new(DeviceConfig::new(&url, "alice-phone", "alice")).await;
    let bob = Device::new(DeviceConfig::new(&url, "bob-phone", "bob")).await;

    alice
        .store
        .put("notes", "shared-id", json!({ "owner": "alice" }))
        .await
        .unwrap();
    alice
        .store
        .put("notes", "alice-only", json!({ "owner": "alice" }))
        .await
        .unwrap();
    alice.sync.run().await.unwrap();

    // Bob sees none of alice's rows, and his write to the same id is his own row, not a
    // conflict with hers.
    bob.sync.run().await.unwrap();
    assert!(bob.contents("notes").await.is_empty());
    bob.store
        .put("notes", "shared-id", json!({ "owner": "bob" }))
        .await
        .unwrap();
    let report = bob.sync.sync_now().await.unwrap();
    assert_eq!(report.totals().conflicts, 0);
    assert_eq!(report.totals().pushed, 1);

    alice.sync.sync_now().await.unwrap();
    assert_eq!(
        alice.contents("notes").await["shared-id"],
        json!({ "owner": "alice" })
    );
    assert_eq!(alice.contents("notes").await.len(), 2);
    assert_eq!(bob.contents("notes").await.len(), 1);
    assert_eq!(alice.remote.digest("notes").await.unwrap().count, 2);
    assert_eq!(bob.remote.digest("notes").await.unwrap().count, 1);
    alice.sync.dispose().await;
    bob.sync.dispose().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_token_fails_the_run_as_unauthorized_and_writes_nothing() {
    let (server, _dir) = server();
    let url = server.url();
    let intruder = Device::new(DeviceConfig::new(&url, "guessed-token", "intruder")).await;
    intruder
        .store
        .put("notes", "x", json!({ "v": 1 }))
        .await
        .unwrap();

    let error = intruder.sync.run().await.unwrap_err();
    assert!(!error.is_transient(), "{error}");
    let remote_error = intruder.remote.digest("notes").await.unwrap_err();
    assert_eq!(
        remote_error.kind,
        RemoteErrorKind::Unauthorized,
        "{remote_error}"
    );
    assert!(remote_error.message.contains("token"), "{remote_error}");

    let alice = HttpRemote::new(url.clone(), "alice-phone").unwrap();
    assert_eq!(alice.digest("notes").await.unwrap().count, 0);
    let bob = HttpRemote::new(url, "bob-phone").unwrap();
    assert_eq!(bob.digest("notes").await.unwrap().count, 0);
    intruder.sync.dispose().await;
}
