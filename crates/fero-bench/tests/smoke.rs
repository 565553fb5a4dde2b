//! Every workload at tiny sizes, through the library (and the program's own command line), so
//! the benchmark never rots: the JSON line has bench-spec's fields and the item counts are right.
//! No timing is asserted.

use fero_bench::{BenchLine, Measurement, RunOptions, Workload};

/// The bench program, started by the end-to-end workloads as server and client.
const PROGRAM: &str = env!("CARGO_BIN_EXE_fero-bench");

fn run(workload: Workload, n: u64, batch: usize) -> Measurement {
    let options = RunOptions::new(n).batch(batch).program(PROGRAM);
    fero_bench::run(workload, options)
        .unwrap_or_else(|e| panic!("{workload} at n = {n} failed: {e}"))
}

/// The line parses back from its JSON with exactly the spec's fields (plus the workload's own).
fn assert_spec_line(line: &BenchLine, workload: Workload, n: u64, batch: usize, extra: &[&str]) {
    let json: serde_json::Value = serde_json::from_str(&line.to_json()).expect("the line is JSON");
    let object = json.as_object().expect("the line is a JSON object");
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    let mut expected = vec![
        "batch",
        "items_per_s",
        "n",
        "peak_rss_mb",
        "seconds",
        "workload",
    ];
    expected.extend_from_slice(extra);
    expected.sort_unstable();
    assert_eq!(keys, expected, "{}", line.to_json());
    assert_eq!(json["workload"], workload.name());
    assert_eq!(json["n"], n);
    assert_eq!(json["batch"], batch);
    assert!(json["seconds"].as_f64().is_some_and(|s| s >= 0.0));
    assert!(json["items_per_s"].is_u64());
    assert!(json["peak_rss_mb"].as_f64().is_some_and(|mb| mb > 0.0));
}

#[test]
fn in_process_workloads_sync_every_item_and_print_the_spec_line() {
    for workload in [Workload::W1, Workload::W1Raw, Workload::W2, Workload::W3] {
        // 2,500 in pages of 1,000: two full pages and a short last one.
        let measured = run(workload, 2_500, 1_000);
        assert_eq!(measured.items, 2_500, "{workload}");
        assert_spec_line(&measured.line, workload, 2_500, 1_000, &[]);
    }
}

#[test]
fn end_to_end_initial_sync_and_its_floor_write_every_row() {
    for workload in [Workload::W4, Workload::W4Raw] {
        let measured = run(workload, 1_500, 500);
        assert_eq!(measured.items, 1_500, "{workload}");
        assert_spec_line(&measured.line, workload, 1_500, 500, &[]);
    }
}

#[test]
fn a_client_killed_half_way_resumes_and_refetches_at_most_one_page() {
    let measured = run(Workload::W5, 4_000, 200);
    assert_eq!(measured.items, 4_000);
    assert_spec_line(&measured.line, Workload::W5, 4_000, 200, &["fetched_twice"]);
    let twice = measured
        .line
        .fetched_twice
        .expect("W5 reports items fetched twice");
    assert!(
        twice <= 200,
        "fetched twice: {twice}, more than one page of 200"
    );
}

#[test]
fn a_background_round_pushes_its_one_edit_and_reports_a_latency() {
    let measured = run(Workload::W6, 1_000, 250);
    assert_eq!(measured.items, 1_000);
    assert_spec_line(&measured.line, Workload::W6, 1_000, 250, &["latency_ms"]);
    assert!(measured.line.latency_ms.is_some_and(|ms| ms >= 0.0));
}

#[test]
fn the_program_prints_one_json_line_for_a_workload_run_in_a_child_process() {
    // Without --n the program runs each default size in a child of itself; W3's is 10,000.
    let output = std::process::Command::new(PROGRAM)
        .args(["w3", "--runs", "1"])
        .output()
        .expect("the bench program starts");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).expect("the output is UTF-8");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    let line: BenchLine = serde_json::from_str(lines[0]).expect("the line is a BenchLine");
    assert_spec_line(&line, Workload::W3, 10_000, 1_000, &[]);
}

#[test]
fn an_unknown_workload_is_refused_with_the_list_of_known_ones() {
    let output = std::process::Command::new(PROGRAM)
        .arg("W99")
        .output()
        .expect("the bench program starts");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("W1, W1-raw"), "{stderr}");
}
