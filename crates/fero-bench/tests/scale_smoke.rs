//! W8 and W9 at tiny sizes against the real `fero-server` binary, so the scale workloads never
//! rot: every listener gets every notice, changes are accepted, and the figures are coherent.
//! No timing is asserted.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use fero_bench::scale::{self, ScaleDb, W8Options, W9Options};

/// The `fero-server` binary of this build profile, built first (cargo does not build another
/// package's binary for this package's tests); a no-op when it is up to date.
fn server_bin() -> PathBuf {
    let mut build = Command::new(env!("CARGO"));
    // The same build as .ci/run's JavaScript step (the workspace's binaries and examples, same
    // features), so neither builds what the other already built.
    build.args([
        "build",
        "--quiet",
        "--locked",
        "--workspace",
        "--bins",
        "--examples",
    ]);
    if !cfg!(debug_assertions) {
        build.arg("--release");
    }
    let status = build.status().expect("cargo runs");
    assert!(status.success(), "building fero-server failed: {status}");
    let bin = scale::server_bin();
    assert!(bin.exists(), "no fero-server at {}", bin.display());
    bin
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn w8_every_listener_gets_every_notice() {
    let options = W8Options {
        streams: 50,
        listeners: 10,
        pushes: 3,
        server_bin: server_bin(),
    };
    let line = scale::run_w8(&options).await.expect("W8 runs");
    assert_eq!(line.workload, "W8");
    assert_eq!((line.streams, line.listeners, line.pushes), (50, 10, 3));
    assert_eq!(line.notices, 30, "every listener saw every push");
    assert!(line.server_rss_idle_mb > 0.0);
    assert!(line.server_rss_streams_mb > 0.0);
    assert!(line.notice_p50_ms <= line.notice_p99_ms);
    assert!(line.notice_p99_ms <= line.notice_max_ms);
    assert!(line.nofile_limit >= 50);
    assert!(line.server_fds >= 50, "a descriptor per stream: {line:?}");
    let json: serde_json::Value = serde_json::from_str(&line.to_json()).expect("JSON");
    assert_eq!(json["notices"], 30);
}

fn assert_w9(line: &scale::W9Line, db: &str) {
    assert_eq!((line.workload, line.db), ("W9", db));
    assert!(line.pushes > 0, "{line:?}");
    assert_eq!(
        line.changes_accepted,
        line.pushes * 10,
        "every change is a create of a fresh id: all accepted"
    );
    assert!(line.changes_per_s > 0.0);
    assert!(line.pulls > 0);
    assert!(line.rows_pulled > 0, "a device pulls its own pushes back");
    assert!(line.push_p50_ms <= line.push_p99_ms);
    assert!(line.server_cpu_cores > 0.0, "the server did work: {line:?}");
    assert!(line.seconds >= 2.0);
}

fn w9_options(db: ScaleDb) -> W9Options {
    W9Options {
        devices: 5,
        users: 2,
        batch: 10,
        duration: Duration::from_secs(2),
        db,
        pool_size: None,
        server_bin: server_bin(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn w9_devices_push_and_pull_on_sqlite() {
    let line = scale::run_w9(&w9_options(ScaleDb::Sqlite))
        .await
        .expect("W9 runs on SQLite");
    assert_w9(&line, "sqlite");
}

/// Runs when `FERO_TEST_POSTGRES` names a PostgreSQL server (as the server's tests do).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn w9_devices_push_and_pull_on_postgres() {
    let Ok(url) = std::env::var("FERO_TEST_POSTGRES") else {
        eprintln!("FERO_TEST_POSTGRES is not set: the PostgreSQL run is skipped");
        return;
    };
    let line = scale::run_w9(&w9_options(ScaleDb::Postgres(url)))
        .await
        .expect("W9 runs on PostgreSQL");
    assert_w9(&line, "postgres");
}
