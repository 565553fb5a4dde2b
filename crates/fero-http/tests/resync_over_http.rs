//! Resync over HTTP against a real `fero-server` (SQLite): a device offline past the tombstone
//! purge horizon comes back and converges with nothing lost (issue 12, item 9), and devices heal
//! a server restored from an older backup (issue 15, item 3).

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use fero::{ConflictOutcome, ResyncReason, SyncEvent, SyncId};
use fero_protocol::Remote;
use fero_server::Storage;
use serde_json::{Value, json};
use support::device::{Device, DeviceConfig};
use support::server::TestServer;

const C: &str = "notes";

/// Runs one sync of `device`, failing the test on an error.
async fn sync(device: &Device) {
    tokio::time::timeout(Duration::from_secs(60), device.sync.run())
        .await
        .expect("a sync run finished within 60 s")
        .expect("the sync run completed");
}

/// Syncs every device, round after round, until no outbox holds anything and all hold the same
/// rows; at most `rounds` rounds.
async fn converge(devices: &[&Device], rounds: usize) -> BTreeMap<String, Value> {
    for _ in 0..rounds {
        for device in devices {
            sync(device).await;
        }
        let mut pending = 0;
        for device in devices {
            pending += device.store.outbox(C).await.unwrap().len();
        }
        let first = devices[0].contents(C).await;
        let mut same = true;
        for device in &devices[1..] {
            same &= device.contents(C).await == first;
        }
        if pending == 0 && same {
            for device in devices {
                device.assert_in_step_with_server(C).await;
            }
            return first;
        }
    }
    let mut report = String::new();
    for device in devices {
        let outbox = device.store.outbox(C).await.unwrap();
        let server = device.remote.digest(C).await.unwrap();
        report.push_str(&format!(
            "\n{} outbox {:?}, server count {}, rows {:?}",
            device.store.device_id(),
            outbox.iter().map(|e| e.id.clone()).collect::<Vec<_>>(),
            server.count,
            device.contents(C).await
        ));
    }
    panic!("the devices did not converge within {rounds} rounds:{report}");
}

/// The resyncs completed among `events`: (reason, removed, kept, repushed).
fn resyncs(events: &[SyncEvent]) -> Vec<(ResyncReason, u64, u64, u64)> {
    events
        .iter()
        .filter_map(|e| match e {
            SyncEvent::ResyncCompleted {
                reason,
                removed,
                kept,
                repushed,
                ..
            } => Some((*reason, *removed, *kept, *repushed)),
            _ => None,
        })
        .collect()
}

/// A device offline past the horizon: its checkpoint is behind the purged tombstones; it comes
/// back, resyncs, and converges; its unpushed edit and its new row reach the server.
async fn offline_past_the_horizon(batch_size: usize) {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("server.db"));
    server.seed("alice", C, "n", 20).await;
    let url = server.url();
    let phone = Device::new(DeviceConfig {
        batch_size,
        ..DeviceConfig::new(&url, "alice-phone", "phone")
    })
    .await;
    let laptop = Device::new(DeviceConfig::new(&url, "alice-laptop", "laptop")).await;
    sync(&phone).await;
    sync(&laptop).await;
    assert_eq!(phone.store.count(C).await.unwrap(), 20);

    // The phone goes offline. The laptop deletes three rows, edits two, adds one.
    for id in ["n-00001", "n-00002", "n-00003"] {
        laptop.store.delete(C, id).await.unwrap();
    }
    laptop
        .store
        .put(C, "n-00004", json!({ "name": "laptop edit" }))
        .await
        .unwrap();
    laptop
        .store
        .put(C, "n-00015", json!({ "name": "laptop edit" }))
        .await
        .unwrap();
    laptop
        .store
        .put(C, "laptop-new", json!({ "name": "new" }))
        .await
        .unwrap();
    sync(&laptop).await;
    // The phone edits offline, unpushed.
    phone
        .store
        .put(C, "n-00010", json!({ "name": "phone edit" }))
        .await
        .unwrap();
    phone
        .store
        .put(C, "phone-new", json!({ "name": "new" }))
        .await
        .unwrap();
    // The server purges every tombstone: the phone's checkpoint is now behind the horizon.
    let report = server
        .server
        .purge_tombstones(SyncId(u64::MAX))
        .await
        .unwrap();
    assert_eq!(report.purged, 3);

    let events = phone.record_events();
    sync(&phone).await;
    let merged = converge(&[&phone, &laptop], 4).await;
    phone.sync.dispose().await;
    let events = events.await.unwrap();
    let done = resyncs(&events);
    assert_eq!(done.len(), 1, "one resync: {done:?}");
    let (reason, removed, kept, _) = done[0];
    assert_eq!(reason, ResyncReason::TombstonesPurged);
    assert_eq!(removed, 3, "the three rows the laptop deleted");
    assert_eq!(kept, 1, "phone-new, which the server had never seen");

    for id in ["n-00001", "n-00002", "n-00003"] {
        assert!(!merged.contains_key(id), "{id} was deleted on the server");
    }
    assert_eq!(merged["n-00004"], json!({ "name": "laptop edit" }));
    assert_eq!(merged["n-00010"], json!({ "name": "phone edit" }));
    assert_eq!(merged["phone-new"], json!({ "name": "new" }));
    assert_eq!(merged["laptop-new"], json!({ "name": "new" }));
    assert_eq!(merged.len(), 20 - 3 + 2);
    laptop.sync.dispose().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_offline_past_the_tombstone_horizon_converges_with_nothing_lost() {
    // One page holds the whole collection: the pull from scratch is a single request.
    offline_past_the_horizon(1_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_offline_past_the_tombstone_horizon_converges_with_small_pages() {
    // Pages of 4: the pull from scratch's second page starts below the horizon, which the server
    // must serve for a pull that began from scratch.
    offline_past_the_horizon(4).await;
}

/// Copies the SQLite database (and its WAL files, if any) of a stopped server.
fn copy_database(from: &Path, to: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let source = Path::new(&format!("{}{suffix}", from.display())).to_owned();
        let target = Path::new(&format!("{}{suffix}", to.display())).to_owned();
        if source.exists() {
            std::fs::copy(&source, &target).unwrap();
        } else if target.exists() {
            std::fs::remove_file(&target).unwrap();
        }
    }
}

/// Where the server keeps its data, and how it is backed up and restored while stopped.
enum Backend {
    Sqlite {
        dir: tempfile::TempDir,
    },
    Postgres {
        /// The URL of a database to run `CREATE DATABASE` from.
        admin: String,
        /// The server's database.
        name: String,
    },
}

impl Backend {
    fn sqlite() -> Backend {
        Backend::Sqlite {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// `None` (with a printed reason) when `FERO_TEST_POSTGRES` is not set.
    fn postgres(name: &str) -> Option<Backend> {
        let Ok(admin) = std::env::var("FERO_TEST_POSTGRES") else {
            println!("skipped: FERO_TEST_POSTGRES is not set");
            return None;
        };
        let backend = Backend::Postgres {
            admin,
            name: format!("{name}_{}", std::process::id()),
        };
        backend.psql(&[
            format!("DROP DATABASE IF EXISTS {}", backend.pg_name()),
            format!("CREATE DATABASE {}", backend.pg_name()),
        ]);
        Some(backend)
    }

    fn pg_name(&self) -> &str {
        match self {
            Backend::Postgres { name, .. } => name,
            Backend::Sqlite { .. } => unreachable!("not a PostgreSQL backend"),
        }
    }

    /// Runs each statement on its own (CREATE DATABASE cannot run in a transaction).
    fn psql(&self, statements: &[String]) {
        let Backend::Postgres { admin, .. } = self else {
            unreachable!("not a PostgreSQL backend")
        };
        let mut command = std::process::Command::new("psql");
        command
            .arg(admin)
            .arg("-v")
            .arg("ON_ERROR_STOP=1")
            .arg("-q");
        for statement in statements {
            command.arg("-c").arg(statement);
        }
        let status = command.status().expect("psql runs");
        assert!(status.success(), "psql failed: {statements:?}");
    }

    fn start(&self, addr: std::net::SocketAddr) -> TestServer {
        match self {
            Backend::Sqlite { dir } => TestServer::start_at(&dir.path().join("server.db"), addr),
            Backend::Postgres { admin, name } => {
                let (base, _) = admin.rsplit_once('/').expect("a URL with a database");
                TestServer::start_postgres_at(&format!("{base}/{name}"), addr)
            }
        }
    }

    /// Backs up the stopped server's data.
    fn backup(&self) {
        match self {
            Backend::Sqlite { dir } => {
                copy_database(&dir.path().join("server.db"), &dir.path().join("backup.db"))
            }
            Backend::Postgres { .. } => self.psql(&[
                format!("DROP DATABASE IF EXISTS {}_backup", self.pg_name()),
                format!("CREATE DATABASE {0}_backup TEMPLATE {0}", self.pg_name()),
            ]),
        }
    }

    /// Replaces the stopped server's data with the backup, and marks the database restored
    /// (a new restore epoch, what `fero-server mark-restored` does), as docs/operations.md
    /// says to.
    async fn restore(&self) {
        match self {
            Backend::Sqlite { dir } => {
                let db = dir.path().join("server.db");
                copy_database(&dir.path().join("backup.db"), &db);
                let storage = fero_server::SqliteStorage::open(&db).unwrap();
                storage.mark_restored().await.unwrap();
            }
            Backend::Postgres { admin, name } => {
                self.psql(&[
                    format!("DROP DATABASE {} WITH (FORCE)", self.pg_name()),
                    format!("CREATE DATABASE {0} TEMPLATE {0}_backup", self.pg_name()),
                ]);
                let (base, _) = admin.rsplit_once('/').expect("a URL with a database");
                let storage = fero_server::PostgresStorage::connect(&format!("{base}/{name}"))
                    .await
                    .unwrap();
                storage.mark_restored().await.unwrap();
            }
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Backend::Postgres { .. } = self {
            self.psql(&[
                format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.pg_name()),
                format!(
                    "DROP DATABASE IF EXISTS {}_backup WITH (FORCE)",
                    self.pg_name()
                ),
            ]);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_devices_heal_a_server_restored_from_an_older_backup() {
    heal_a_restored_server(Backend::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_devices_heal_a_server_restored_from_an_older_backup_on_postgres() {
    // export FERO_TEST_POSTGRES=postgres://postgres@127.0.0.1:5432/test
    if let Some(backend) = Backend::postgres("fero_resync_heal") {
        heal_a_restored_server(backend).await;
    }
}

/// Issue 15, item 3: three devices sync; the server is stopped and backed up; several rounds of
/// synced edits and deletes; the server is stopped, restored and restarted; the devices
/// reconnect. At quiescence every row any device held at its latest version is on the server,
/// every device converges, and no local edit was dropped without a conflict record.
async fn heal_a_restored_server(backend: Backend) {
    let server = backend.start("127.0.0.1:0".parse().unwrap());
    server.seed("alice", C, "n", 12).await;
    let url = server.url();
    let devices = [
        Device::new(DeviceConfig {
            batch_size: 5,
            ..DeviceConfig::new(&url, "alice-phone", "phone")
        })
        .await,
        Device::new(DeviceConfig {
            batch_size: 5,
            ..DeviceConfig::new(&url, "alice-laptop", "laptop")
        })
        .await,
        Device::new(DeviceConfig {
            batch_size: 5,
            ..DeviceConfig::new(&url, "alice-tablet", "tablet")
        })
        .await,
    ];
    let all: Vec<&Device> = devices.iter().collect();
    converge(&all, 3).await;

    // The backup: the server stopped, its data copied.
    let (_, addr) = server.crash();
    backend.backup();
    let server = backend.start(addr);

    // Several rounds of synced edits and deletes after the backup.
    for round in 0..3 {
        for (d, device) in devices.iter().enumerate() {
            let edited = format!("n-{:05}", (round * 3 + d) % 12);
            device
                .store
                .put(
                    C,
                    &edited,
                    json!({ "name": format!("round {round} by {d}") }),
                )
                .await
                .unwrap();
            device
                .store
                .put(C, &format!("new-{round}-{d}"), json!({ "round": round }))
                .await
                .unwrap();
            if round == 1 {
                device
                    .store
                    .delete(C, &format!("n-{:05}", 9 + d))
                    .await
                    .unwrap();
            }
        }
        converge(&all, 4).await;
    }
    let mut expected = converge(&all, 4).await;
    // The phone's last edits reach the server, but no other device pulls them before the
    // restore: only the phone holds them.
    devices[0]
        .store
        .put(
            C,
            "n-00001",
            json!({ "name": "phone, last before the restore" }),
        )
        .await
        .unwrap();
    devices[0]
        .store
        .put(C, "phone-only", json!({ "name": "phone only" }))
        .await
        .unwrap();
    sync(&devices[0]).await;
    assert!(devices[0].store.outbox(C).await.unwrap().is_empty());
    expected.insert(
        "n-00001".into(),
        json!({ "name": "phone, last before the restore" }),
    );
    expected.insert("phone-only".into(), json!({ "name": "phone only" }));
    let mut events: Vec<_> = devices.iter().map(Device::record_events).collect();

    // The restore: the server stopped, the backup copied over its data, restarted.
    let (_, addr) = server.crash();
    backend.restore().await;
    // One device edits while the server is down: an unpushed edit across the restore.
    devices[2]
        .store
        .put(
            C,
            "n-00000",
            json!({ "name": "tablet, while the server was down" }),
        )
        .await
        .unwrap();
    let server = backend.start(addr);

    // The devices come back in reverse order: the phone, which alone holds its last edits, last.
    let reverse: Vec<&Device> = devices.iter().rev().collect();
    let healed = converge(&reverse, 6).await;
    for device in &devices {
        device.sync.dispose().await;
    }
    let mut dropped = 0;
    let mut resynced = 0;
    for task in events.drain(..) {
        let seen = task.await.unwrap();
        resynced += resyncs(&seen)
            .iter()
            .filter(|(reason, ..)| *reason == ResyncReason::ServerBehind)
            .count();
        dropped += seen
            .iter()
            .filter(|e| {
                matches!(e, SyncEvent::ConflictResolved(c) if c.outcome == ConflictOutcome::ServerKept)
            })
            .count();
    }
    // Every device resyncs: its cursor names the epoch before the restore, however long the
    // feed has grown again by the time it reconnects (the phone comes back last, after the
    // others pushed their rows back).
    assert!(
        resynced >= devices.len(),
        "every device must resync after the restore, {resynced} did"
    );
    println!("devices that resynced: {resynced}; conflicts kept the server's copy: {dropped}");
    // Every local edit the server's copy won over is in its device's conflict log.
    let mut logged = 0;
    for device in &devices {
        logged += device
            .store
            .conflict_log()
            .await
            .unwrap()
            .iter()
            .filter(|record| record.collection == C)
            .count();
    }
    assert!(
        logged >= dropped,
        "{dropped} edits lost to the server's copy, only {logged} conflict log records"
    );

    // Every row any device held at its latest version is on the server, and the tablet's edit
    // made while the server was down too (the only row that may differ from `expected`).
    let mut want = expected.clone();
    want.insert(
        "n-00000".into(),
        json!({ "name": "tablet, while the server was down" }),
    );
    if healed != want {
        // Only a conflict record may explain a difference.
        assert!(
            dropped > 0,
            "rows differ without a conflict record: expected {want:?}, healed {healed:?}"
        );
    }
    assert_eq!(
        healed, want,
        "the restored server lost rows the devices held (conflicts recorded: {dropped})"
    );
    drop(server);
}
