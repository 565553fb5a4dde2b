//! Two devices of one user sync through fault-injecting proxies (seeded: dropped requests,
//! dropped responses after the server committed, 503s, slow answers) while editing and deleting;
//! once the faults stop, both converge on every edit either made, nothing lost and nothing
//! conflicting with itself. Replay a run with `FERO_SIM_SEED=<seed>`.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use fero::{RandomSource, SeededRandom, SyncEvent};
use serde_json::{Value, json};
use support::device::{Device, DeviceConfig};
use support::proxy::{Chaos, Fault, FaultProxy};
use support::server::TestServer;

const ROUNDS: u64 = 10;
const EDITS_PER_ROUND: u64 = 4;
const IDS_PER_DEVICE: u64 = 6;

fn seed() -> u64 {
    let seed = std::env::var("FERO_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_f1a4);
    println!("FERO_SIM_SEED={seed}");
    seed
}

/// One random local edit on `device`'s own ids, applied to the store and to `model`.
async fn random_edit(
    device: &Device,
    prefix: &str,
    round: u64,
    random: &mut SeededRandom,
    model: &mut BTreeMap<String, Value>,
) {
    let id = format!("{prefix}-{}", random.next_u64() % IDS_PER_DEVICE);
    if model.contains_key(&id) && random.next_u64() % 4 == 0 {
        assert!(device.store.delete("notes", &id).await.unwrap());
        model.remove(&id);
    } else {
        let data = json!({ "round": round, "draw": random.next_u64() % 1_000 });
        device.store.put("notes", &id, data.clone()).await.unwrap();
        model.insert(id, data);
    }
}

/// Runs until a run succeeds, within a bound (used once faults are off).
async fn settle(device: &Device) {
    for _ in 0..3 {
        if device.sync.run().await.is_ok() {
            return;
        }
    }
    panic!("the device did not complete a run without faults");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_behind_flaky_proxies_converge_with_nothing_lost() {
    let seed = seed();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("server.db"));
    let chaos = Chaos {
        drop_response: 10,
        drop_request: 5,
        unavailable: 10,
        slow: 10,
        max_delay: Duration::from_millis(80),
    };
    let proxy_a = FaultProxy::start(&server.url()).await;
    let proxy_b = FaultProxy::start(&server.url()).await;
    proxy_a.chaos(Some((chaos.clone(), seed)));
    proxy_b.chaos(Some((chaos, seed.wrapping_add(1))));
    let (url_a, url_b) = (proxy_a.url(), proxy_b.url());
    let a = Device::new(DeviceConfig {
        seed,
        ..DeviceConfig::new(&url_a, "alice-phone", "phone")
    })
    .await;
    let b = Device::new(DeviceConfig {
        seed: seed.wrapping_add(1),
        ..DeviceConfig::new(&url_b, "alice-laptop", "laptop")
    })
    .await;
    let events_a = a.record_events();
    let events_b = b.record_events();

    let mut random = SeededRandom::new(seed);
    let (mut model_a, mut model_b) = (BTreeMap::new(), BTreeMap::new());
    let mut failed_runs = 0;
    for round in 0..ROUNDS {
        for _ in 0..EDITS_PER_ROUND {
            random_edit(&a, "a", round, &mut random, &mut model_a).await;
            random_edit(&b, "b", round, &mut random, &mut model_b).await;
        }
        // Failures under chaos are expected; what a failed run left behind the next one
        // resumes.
        let (ra, rb) = tokio::join!(a.sync.run(), b.sync.run());
        failed_runs += u32::from(ra.is_err()) + u32::from(rb.is_err());
    }

    proxy_a.chaos(None);
    proxy_b.chaos(None);
    settle(&a).await;
    settle(&b).await;
    settle(&a).await;

    let mut expected = model_a.clone();
    expected.extend(model_b.clone());
    assert_eq!(a.contents("notes").await, expected, "seed {seed}");
    assert_eq!(b.contents("notes").await, expected, "seed {seed}");
    a.assert_in_step_with_server("notes").await;
    b.assert_in_step_with_server("notes").await;
    assert!(a.store.outbox("notes").await.unwrap().is_empty());
    assert!(b.store.outbox("notes").await.unwrap().is_empty());

    a.sync.dispose().await;
    b.sync.dispose().await;
    for events in [events_a.await.unwrap(), events_b.await.unwrap()] {
        let conflicts: Vec<_> = events
            .iter()
            .filter(|e| matches!(e, SyncEvent::ConflictResolved(_)))
            .collect();
        assert!(
            conflicts.is_empty(),
            "seed {seed}: a device conflicted with itself: {conflicts:?}"
        );
    }

    let faults = |proxy: &FaultProxy| {
        let log = proxy.log();
        let injected = log.iter().filter(|(_, f)| *f != Fault::Pass).count();
        (log.len(), injected)
    };
    let ((requests_a, faults_a), (requests_b, faults_b)) = (faults(&proxy_a), faults(&proxy_b));
    println!(
        "seed {seed}: {} live rows; phone {requests_a} requests, {faults_a} faulted; laptop \
         {requests_b} requests, {faults_b} faulted; {failed_runs} runs failed under chaos; \
         phone transport {:?}",
        expected.len(),
        a.remote.stats()
    );
    assert!(
        faults_a > 0 && faults_b > 0,
        "seed {seed}: the proxies injected no fault"
    );
}
