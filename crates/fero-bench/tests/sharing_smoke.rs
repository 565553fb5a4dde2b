//! W7, W7-move and W7-buckets at tiny sizes, so the shared-collection workloads never rot: every
//! run checks inside that the device ends with exactly the rows its user may read (or fails),
//! and here the figures are checked to be computed and coherent. No timing is asserted.

use fero_bench::sharing::{self, W7BucketsOptions, W7MoveOptions, W7Options};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn w7_device_syncs_exactly_its_teams_rows_and_the_ratio_is_computed() {
    let options = W7Options {
        teams: 20,
        rows: 10,
        device_teams: 3,
        device_rows: 15,
        runs: 3,
        batch: 20,
    };
    let line = sharing::run_w7(&options).await.expect("W7 runs");
    assert_eq!(line.workload, "W7");
    assert_eq!(line.device_rows, 45, "3 teams of 15 rows: {line:?}");
    assert_eq!(line.server_rows, 17 * 10 + 45);
    assert!(line.shared_ms > 0.0 && line.private_ms > 0.0, "{line:?}");
    let ratio = line.shared_ms / line.private_ms;
    assert!((line.ratio - ratio).abs() < 0.01, "{line:?}");
    assert!(line.shared_rows_per_s > 0 && line.private_rows_per_s > 0);
    assert!(line.storage_shared_ms > 0.0 && line.storage_private_ms > 0.0);
    let json: serde_json::Value = serde_json::from_str(&line.to_json()).expect("JSON");
    assert_eq!(json["device_rows"], 45);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn w7_move_moves_every_row_of_the_granted_team_in() {
    let options = W7MoveOptions {
        move_rows: 250,
        small_rows: 5,
        runs: 2,
        batch: 100,
        behind: false,
    };
    let line = sharing::run_w7_move(&options).await.expect("W7-move runs");
    assert_eq!(
        (line.workload, line.move_rows, line.runs),
        ("W7-move", 250, 2)
    );
    assert_eq!(line.each_s.len(), 2);
    assert!(line.seconds > 0.0 && line.rows_per_s > 0, "{line:?}");
    assert_eq!(
        line.rows_pulled, 250,
        "a device at the head gets each row once"
    );
    assert!(line.storage_s > 0.0, "{line:?}");
    // Behind the head, the rows still all arrive (some twice: see W7MoveOptions::behind).
    let behind = W7MoveOptions {
        behind: true,
        ..options
    };
    let line = sharing::run_w7_move(&behind).await.expect("W7-move runs");
    assert!(line.rows_pulled >= 250, "{line:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn w7_buckets_syncs_many_buckets_and_pulls_one_new_row_per_round() {
    let options = W7BucketsOptions {
        buckets: 120,
        others: vec![10, 50],
        rounds: 3,
        batch: 100,
    };
    let line = sharing::run_w7_buckets(&options)
        .await
        .expect("W7-buckets runs");
    assert_eq!((line.buckets, line.rows, line.rounds), (120, 240, 3));
    assert!(
        line.initial_s > 0.0 && line.incremental_ms > 0.0,
        "{line:?}"
    );
    assert!(line.incremental_ms <= line.incremental_max_ms);
    let flat = sharing::run_w7_flat(&options).await.expect("W7-flat runs");
    let sizes: Vec<usize> = flat.iter().map(|l| l.other_teams).collect();
    assert_eq!(sizes, [10, 50]);
    // 3 teams of 2 rows, 3 new rows per size.
    assert_eq!(flat[1].server_rows, 100 + 6 + 6);
    assert!(flat.iter().all(|l| l.incremental_ms > 0.0));
}

#[test]
fn the_sharing_workloads_refuse_impossible_sizes() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let options = W7Options {
        device_teams: 5,
        teams: 4,
        ..W7Options::default()
    };
    assert!(runtime.block_on(sharing::run_w7(&options)).is_err());
    let options = W7BucketsOptions {
        others: vec![10, 5],
        ..W7BucketsOptions::default()
    };
    assert!(runtime.block_on(sharing::run_w7_flat(&options)).is_err());
}
