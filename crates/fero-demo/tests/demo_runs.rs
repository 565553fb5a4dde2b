//! The built `fero-demo` binary runs the whole story end to end: a real server on a loopback
//! port, two devices with SQLite files, HTTP in between. These tests run it with small sizes and
//! check what it reports.

use std::path::Path;
use std::process::{Command, Output};

use fero_demo::edits::{EDITED_TWICE_ON_B, NEW_MESSAGES, SHARED_EDITS};
use fero_demo::sharing::CREW_TASKS;
use serde_json::Value;

fn demo(args: &[&str]) -> Output {
    println!("running fero-demo {}", args.join(" "));
    Command::new(env!("CARGO_BIN_EXE_fero-demo"))
        .args(args)
        .output()
        .expect("the fero-demo binary runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs the demo with `--json` and parses its one JSON object.
fn demo_json(args: &[&str]) -> Value {
    let output = demo(args);
    assert!(
        output.status.success(),
        "fero-demo failed ({}):\n{}",
        output.status,
        stderr(&output)
    );
    let summary: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!("stdout is one JSON object ({error}):\n{}", stdout(&output))
    });
    println!("seed {} (replay with --seed {0})", summary["seed"]);
    summary
}

#[test]
fn json_run_converges_resumes_and_reports_every_conflict_it_set_up() {
    let summary = demo_json(&["--contacts", "2000", "--messages", "5000", "--json"]);

    // Step 5: both devices match the server, collection by collection.
    assert_eq!(summary["converged"], true, "{summary:#}");
    let verify = summary["verify"].as_array().expect("verify rows");
    assert_eq!(verify.len(), 6, "two devices, three collections");
    assert!(
        verify.iter().all(|row| row["matches"] == true),
        "{verify:#?}"
    );
    // One contact deleted, each device wrote its own new messages.
    let new_messages = 5_000 + 2 * NEW_MESSAGES;
    for device in ["A", "B"] {
        let counts = &summary["devices"][device];
        assert_eq!(counts["contacts"], 1_999, "device {device}");
        assert_eq!(counts["messages"], new_messages, "device {device}");
        assert_eq!(counts, &summary["server"], "device {device}");
    }

    // Step 4: every conflict the offline edits set up, each with its outcome.
    assert_eq!(summary["conflicts_set_up"], SHARED_EDITS);
    assert_eq!(summary["conflicts"], SHARED_EDITS);
    let table = summary["conflict_table"].as_array().expect("conflict rows");
    assert_eq!(table.len(), SHARED_EDITS);
    for row in table {
        assert_eq!(row["strategy"], "highest-version-wins");
        assert!(row["server_version"].as_u64().is_some(), "{row}");
        assert_ne!(row["local_value"], row["server_value"], "{row}");
    }
    // Highest version wins: B's twice-edited copies win, the others tie and the server wins.
    assert_eq!(
        summary["conflict_outcomes"]["local_kept"],
        EDITED_TWICE_ON_B
    );
    assert_eq!(
        summary["conflict_outcomes"]["server_kept"],
        SHARED_EDITS - EDITED_TWICE_ON_B
    );

    // Step 3: cancelled at half way or later, resumed at the checkpoint saved then.
    assert_eq!(summary["resumed"], true, "{:#}", summary["resume"]);
    let resume = &summary["resume"];
    assert!(resume["cancelled_at_items"].as_u64().unwrap() >= 2_500);
    assert!(summary["resume_checkpoint"].is_object());
    assert_eq!(resume["resumed_from"], summary["resume_checkpoint"]);
    assert!(resume["pages_before"].as_u64().unwrap() > 0);
    assert!(resume["pages_after"].as_u64().unwrap() > 0);
    assert!(resume["pages_fetched_twice"].as_u64().unwrap() <= 1);

    // Step 6: bob saw every crew task while a member (the ones alice wrote before adding him,
    // and the one she wrote live), lost every crew row when removed, and nothing written after
    // the removal reached him.
    let sharing = &summary["sharing"];
    assert_eq!(sharing["passed"], true, "{sharing:#}");
    assert_eq!(sharing["team"], "crew");
    assert_eq!(sharing["bob_before_membership"], 0, "{sharing:#}");
    assert_eq!(sharing["crew_tasks_before_bob"], CREW_TASKS);
    assert_eq!(
        sharing["moved_in"],
        CREW_TASKS + 2,
        "the crew's tasks and both members moved in: {sharing:#}"
    );
    assert_eq!(sharing["shared_rows_seen_by_bob"], CREW_TASKS + 1);
    assert_eq!(sharing["bob_edit_seen_by_alice"], true);
    assert!(sharing["crew_rows_at_removal"].as_u64().unwrap() > CREW_TASKS);
    assert_eq!(
        sharing["moved_out"], sharing["crew_rows_at_removal"],
        "every crew row left bob's device: {sharing:#}"
    );
    assert_eq!(sharing["moved_out_tasks"], CREW_TASKS + 1);
    assert_eq!(sharing["left_on_bob"], 0);
    assert_eq!(sharing["written_after_removal"], 1);
    assert_eq!(sharing["leaked_after_removal"], 0, "{sharing:#}");
    assert_eq!(sharing["bob_readable_tasks_after_removal"], 0);
    assert_eq!(sharing["converged"], true);
    assert!(sharing["live_latency_ms"].as_f64().unwrap() > 0.0);
    // The private collections of steps 1-5 are untouched by the rules: ada's devices hold the
    // same counts as the server (checked above), and neither holds a shared row.
    for device in ["A", "B"] {
        let counts = summary["devices"][device].as_object().unwrap();
        assert!(!counts.contains_key("tasks"), "device {device}: {counts:?}");
    }

    // Step 7.
    assert!(summary["items_synced"].as_u64().unwrap() >= 2 * 7_008);
    assert!(summary["wire"]["bytes_received"].as_u64().unwrap() > 0);
    assert!(summary["seconds"].as_f64().unwrap() > 0.0);
    assert_eq!(summary["events_missed"], 0);
}

#[test]
fn a_run_without_a_terminal_prints_every_step_as_plain_lines() {
    let output = demo(&[
        "--contacts",
        "300",
        "--messages",
        "600",
        "--strategy",
        "client",
        "--seed",
        "7",
    ]);
    let text = stdout(&output);
    assert!(output.status.success(), "{text}\n{}", stderr(&output));
    for step in ["1", "2", "3", "4", "4b", "5", "6", "7"] {
        assert!(
            text.contains(&format!("── {step}. ")),
            "step {step}:\n{text}"
        );
    }
    assert!(!text.contains('\u{1b}'), "no terminal escapes:\n{text}");
    assert!(text.contains("PASS: both devices"), "{text}");
    assert!(text.contains("PASS: bob read the crew's rows"), "{text}");
    assert!(text.contains("it never reached him"), "{text}");
    // Client wins: every one of B's conflicting edits is kept.
    let kept = text
        .lines()
        .filter(|line| line.contains("client-wins") && line.ends_with("local kept"))
        .count();
    assert_eq!(kept, SHARED_EDITS, "{text}");
}

#[test]
fn a_chosen_data_dir_keeps_the_databases_and_is_never_reused() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("demo");
    let dir_arg = dir.to_str().unwrap();
    let summary = demo_json(&[
        "--contacts",
        "100",
        "--messages",
        "100",
        "--json",
        "--data-dir",
        dir_arg,
    ]);
    assert_eq!(summary["converged"], true);
    assert_eq!(summary["data_dir"], dir_arg);
    for file in fero_demo::folder::DATABASES {
        assert!(Path::new(&dir).join(file).exists(), "{file} kept");
    }

    let again = demo(&[
        "--contacts",
        "100",
        "--messages",
        "100",
        "--data-dir",
        dir_arg,
    ]);
    assert_eq!(again.status.code(), Some(2));
    assert!(stderr(&again).contains("earlier run"), "{}", stderr(&again));
}
