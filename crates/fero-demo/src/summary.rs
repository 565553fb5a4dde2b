//! [`Summary`]: what the story did, as the human summary of step 6 and as the `--json` object.

use std::collections::BTreeMap;
use std::path::PathBuf;

use fero::SyncCheckpoint;
use fero_http::TransportStats;
use serde::Serialize;

use crate::conflicts::{ConflictRow, OutcomeCounts};
use crate::edits::ExpectedOutcomes;
use crate::output::Output;

/// Everything the demo measured. Serialised as the `--json` output.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct Summary {
    /// Every collection of both devices matched the server (count and digest).
    pub converged: bool,
    /// The seed of the run.
    pub seed: u64,
    /// The conflict strategy (command-line name).
    pub strategy: String,
    /// Contacts seeded.
    pub contacts: u64,
    /// Messages seeded.
    pub messages: u64,
    /// Wall time of the whole run, seconds.
    pub seconds: f64,
    /// Wall time per step.
    pub phases: Phases,
    /// Items applied or pushed by both devices: initial-sync items, background pulls and pushes.
    pub items_synced: u64,
    /// `items_synced` per second of sync time (the steps that sync, not seeding or checks).
    pub items_per_s: f64,
    /// Both devices' HTTP traffic.
    pub wire: Wire,
    /// `Retrying` events of both devices.
    pub retries: u64,
    /// `ConflictResolved` events of both devices.
    pub conflicts: usize,
    /// Conflicts the offline edits set up.
    pub conflicts_set_up: usize,
    /// Conflicts by outcome.
    pub conflict_outcomes: OutcomeCounts,
    /// The outcomes the strategy should give for the edits.
    pub expected_outcomes: ExpectedOutcomes,
    /// Every conflict.
    pub conflict_table: Vec<ConflictRow>,
    /// Device B's cancelled initial sync resumed at its saved checkpoint, fetched no page twice
    /// beyond the one in flight, and completed.
    pub resumed: bool,
    /// The checkpoint B's messages were saved at when cancelled.
    pub resume_checkpoint: Option<SyncCheckpoint>,
    /// The details of step 3.
    pub resume: ResumeReport,
    /// Milliseconds from A starting the sync of its live edit until B had pulled it (through
    /// the change stream, no poll timer).
    pub live_latency_ms: f64,
    /// Step 6: shared data between two users of a team.
    pub sharing: SharingReport,
    /// Live rows per collection on each device at the end.
    pub devices: BTreeMap<String, BTreeMap<String, u64>>,
    /// Live rows per collection on the server at the end.
    pub server: BTreeMap<String, u64>,
    /// The convergence check, per device and collection.
    pub verify: Vec<VerifyRow>,
    /// Events the watchers missed by lagging (0 expected).
    pub events_missed: u64,
    /// The folder of the SQLite files, when kept.
    pub data_dir: Option<PathBuf>,
}

/// Wall time per step, seconds.
#[derive(Copy, Clone, Debug, Default, Serialize)]
pub struct Phases {
    /// Step 1: start and seed the server.
    pub seed_s: f64,
    /// Step 2: device A's initial sync.
    pub initial_a_s: f64,
    /// Step 3: device B's initial sync, cancelled and resumed.
    pub initial_b_s: f64,
    /// Step 4: offline edits and the three background syncs.
    pub offline_sync_s: f64,
    /// Step 4b: the live change.
    pub live_s: f64,
    /// Step 5: the convergence check.
    pub verify_s: f64,
    /// Step 6: shared data (both users' devices, their syncs and checks).
    pub sharing_s: f64,
}

impl Phases {
    /// The steps that sync devices A and B (step 6's devices are counted apart, in
    /// [`SharingReport`]).
    pub fn sync_seconds(&self) -> f64 {
        self.initial_a_s + self.initial_b_s + self.offline_sync_s + self.live_s
    }
}

/// HTTP traffic of both devices (message bodies; headers not counted).
#[derive(Copy, Clone, Debug, Default, Serialize)]
pub struct Wire {
    /// Requests made.
    pub requests: u64,
    /// Request body bytes sent.
    pub bytes_sent: u64,
    /// Answer body bytes received, compressed as sent.
    pub bytes_received: u64,
    /// Answer body bytes after decompression.
    pub bytes_decoded: u64,
    /// Requests that failed with a transient error.
    pub transient_failures: u64,
}

impl Wire {
    /// Adds one remote's counters.
    pub fn add(&mut self, stats: &TransportStats) {
        self.requests += stats.requests;
        self.bytes_sent += stats.bytes_sent;
        self.bytes_received += stats.bytes_received;
        self.bytes_decoded += stats.bytes_decoded;
        self.transient_failures += stats.transient_failures;
    }
}

/// Step 3: device B's initial sync of messages, cancelled half way and run again.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ResumeReport {
    /// Messages applied when the watcher cancelled (`None`: the sync finished first).
    pub cancelled_at_items: Option<u64>,
    /// Messages applied, and covered by the saved checkpoint, when the run stopped.
    pub items_at_checkpoint: Option<u64>,
    /// Pages of messages received before the cancel (applied, and the one in flight if it
    /// arrived).
    pub pages_before: usize,
    /// Items on them.
    pub items_before: u64,
    /// The checkpoint the second run started from (its `InitialSyncStarted` event).
    pub resumed_from: Option<SyncCheckpoint>,
    /// Pages of messages with items received by the second run.
    pub pages_after: usize,
    /// Items on them.
    pub items_after: u64,
    /// Pages the second run asked for from a position the first had asked for too (at most the
    /// one in flight at the cancel).
    pub pages_fetched_twice: usize,
    /// Items on them.
    pub items_fetched_twice: u64,
}

/// Step 6: alice and bob share the crew's rows through the server's sync rules; bob is added to
/// the crew, then removed.
#[derive(Clone, Debug, Default, Serialize)]
#[non_exhaustive]
pub struct SharingReport {
    /// The team.
    pub team: String,
    /// Rows (tasks and members) on bob's device before he was added to the team (0 expected).
    pub bob_before_membership: u64,
    /// The crew's tasks when bob was added.
    pub crew_tasks_before_bob: u64,
    /// Rows (tasks and members) that moved into bob's device when he was added.
    pub moved_in: u64,
    /// Milliseconds from alice starting the sync of bob's membership until bob held the crew's
    /// rows (a cycle his change stream triggered).
    pub move_in_ms: f64,
    /// The crew's tasks on bob's device once alice's live task had reached him.
    pub shared_rows_seen_by_bob: u64,
    /// Milliseconds from alice starting the sync of a new task until bob had it (live, through
    /// his change stream).
    pub live_latency_ms: f64,
    /// An edit bob made to a shared task reached alice.
    pub bob_edit_seen_by_alice: bool,
    /// Milliseconds from bob starting the sync of his edit until alice had it (live).
    pub edit_latency_ms: f64,
    /// Rows of the crew (tasks and members) just before bob's removal, counted on alice's
    /// device (she holds the whole team).
    pub crew_rows_at_removal: u64,
    /// Rows (tasks and members) that left bob's device at his sync after the removal.
    pub moved_out: u64,
    /// The tasks among them.
    pub moved_out_tasks: u64,
    /// Crew rows still on bob's device after the removal (0 expected).
    pub left_on_bob: u64,
    /// Tasks alice wrote after the removal.
    pub written_after_removal: u64,
    /// How many of them reached bob (0 expected).
    pub leaked_after_removal: u64,
    /// The tasks the server counts in bob's digest after the removal (0 expected).
    pub bob_readable_tasks_after_removal: u64,
    /// Both devices' shared collections match what the server lets each user read.
    pub converged: bool,
    /// Every guarantee above held (see [`check`](Self::check)).
    pub passed: bool,
}

impl SharingReport {
    /// Whether the chapter's guarantees held: bob got nothing before he was a member, every
    /// crew task while a member, lost every crew row when removed, received nothing written
    /// after, and both devices match the server.
    pub fn check(&self) -> bool {
        self.bob_before_membership == 0
            && self.moved_in > self.crew_tasks_before_bob
            && self.shared_rows_seen_by_bob == self.crew_tasks_before_bob + 1
            && self.bob_edit_seen_by_alice
            && self.moved_out == self.crew_rows_at_removal
            && self.left_on_bob == 0
            && self.written_after_removal > 0
            && self.leaked_after_removal == 0
            && self.bob_readable_tasks_after_removal == 0
            && self.converged
    }
}

/// One collection of one device against the server.
#[derive(Clone, Debug, Serialize)]
pub struct VerifyRow {
    /// The device.
    pub device: String,
    /// The collection.
    pub collection: String,
    /// Live rows in the store, as the server confirmed them.
    pub local_count: u64,
    /// Their digest.
    pub local_digest: String,
    /// Live rows on the server.
    pub remote_count: u64,
    /// Their digest.
    pub remote_digest: String,
    /// Count and digest agree.
    pub matches: bool,
}

/// `1234567` as `1,234,567`.
pub fn thousands(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (n, digit) in digits.chars().enumerate() {
        if n > 0 && (digits.len() - n) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// A byte count in KB or MB.
pub fn bytes(value: u64) -> String {
    let value = value as f64;
    if value >= 1_000_000.0 {
        format!("{:.1} MB", value / 1_000_000.0)
    } else {
        format!("{:.1} KB", value / 1_000.0)
    }
}

impl Summary {
    /// Every check of the story passed: the devices converged and the sharing guarantees held.
    pub fn passed(&self) -> bool {
        self.converged && self.sharing.passed
    }

    /// Prints step 7: the human summary.
    pub fn show(&self, output: &Output) {
        output.step("7", "Summary");
        let lines = [
            format!(
                "  items synced     {} (initial syncs, background pulls and pushes, both devices)",
                thousands(self.items_synced)
            ),
            format!(
                "  time             {:.1} s in all; {:.1} s syncing → {} items/s",
                self.seconds,
                self.phases.sync_seconds(),
                thousands(self.items_per_s as u64)
            ),
            format!(
                "                   seed {:.1} s · A initial {:.1} s · B initial {:.1} s · offline \
                 round {:.1} s · live {:.1} s · verify {:.1} s · sharing {:.1} s",
                self.phases.seed_s,
                self.phases.initial_a_s,
                self.phases.initial_b_s,
                self.phases.offline_sync_s,
                self.phases.live_s,
                self.phases.verify_s,
                self.phases.sharing_s
            ),
            format!(
                "  on the wire      {} requests · sent {} · received {} ({} decoded)",
                thousands(self.wire.requests),
                bytes(self.wire.bytes_sent),
                bytes(self.wire.bytes_received),
                bytes(self.wire.bytes_decoded)
            ),
            format!("  retries          {}", self.retries),
            format!(
                "  conflicts        {} of {} set up ({} local kept, {} server kept; strategy {})",
                self.conflicts,
                self.conflicts_set_up,
                self.conflict_outcomes.local_kept,
                self.conflict_outcomes.server_kept,
                self.strategy,
            ),
            format!(
                "  resume           {}",
                if self.resumed {
                    "B resumed at its saved checkpoint"
                } else {
                    "B did not resume (see step 3)"
                }
            ),
            format!(
                "  live change      {:.0} ms from A's sync to B",
                self.live_latency_ms
            ),
            format!(
                "  shared data      bob saw {} crew tasks (live in {:.0} ms); {} rows moved out at \
                 his removal; {} leaked after: {}",
                self.sharing.shared_rows_seen_by_bob,
                self.sharing.live_latency_ms,
                self.sharing.moved_out,
                self.sharing.leaked_after_removal,
                if self.sharing.passed { "PASS" } else { "FAIL" }
            ),
            format!(
                "  converged        {}",
                if self.converged { "yes" } else { "NO" }
            ),
        ];
        for line in lines {
            output.line(&line);
        }
        if let Some(dir) = &self.data_dir {
            output.line(&format!("  files kept in    {}", dir.display()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_separated_by_commas() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(250_016), "250,016");
        assert_eq!(thousands(12_345_678), "12,345,678");
    }

    #[test]
    fn byte_counts_read_in_kilobytes_or_megabytes() {
        assert_eq!(bytes(1_500), "1.5 KB");
        assert_eq!(bytes(45_300_000), "45.3 MB");
    }

    #[test]
    fn sync_seconds_leave_out_seeding_and_the_check() {
        let phases = Phases {
            seed_s: 10.0,
            initial_a_s: 1.0,
            initial_b_s: 2.0,
            offline_sync_s: 0.5,
            live_s: 0.25,
            verify_s: 3.0,
            sharing_s: 0.5,
        };
        assert_eq!(phases.sync_seconds(), 3.75);
    }
}
