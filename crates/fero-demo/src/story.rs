//! The story, step by step: [`run`].

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use fero::{FeatureKey, SyncEvent, SyncEventStream};
use futures::StreamExt;

use crate::conflicts::{self, ConflictRow, OutcomeCounts};
use crate::data::{self, COLLECTIONS, CONTACTS, MESSAGES};
use crate::device::{Device, DeviceConfig};
use crate::edits::{EDITED_TWICE_ON_B, EditPlan, NEW_MESSAGES, SHARED_EDITS, SOLO_EDITS};
use crate::error::DemoError;
use crate::folder::{DEVICE_A_DB, DEVICE_B_DB, DataFolder, SERVER_DB};
use crate::options::Options;
use crate::output::Output;
use crate::remote::fetched_twice;
use crate::server::{DemoServer, TOKEN_A, TOKEN_B, USER};
use crate::sharing;
use crate::summary::{Phases, ResumeReport, Summary, VerifyRow, Wire, thousands};
use crate::watcher::Tally;

/// How long the live step waits for a cycle triggered by the change stream (its connection, or
/// A's edit). Real loopback I/O, so a bounded wait: on an idle machine each takes milliseconds.
const LIVE_TIMEOUT: Duration = Duration::from_secs(15);

/// Runs the whole story (see the crate docs) and returns what it measured. The human output
/// goes to `output` as it happens; the caller prints the JSON summary.
///
/// # Errors
/// A [`DemoError`] naming the step and device that failed. A convergence mismatch or a broken
/// sharing guarantee is not an error: the summary says `converged = false` or
/// `sharing.passed = false`.
pub async fn run(options: &Options, output: &Output) -> Result<Summary, DemoError> {
    options.validate()?;
    let started = Instant::now();
    let mut phases = Phases::default();
    let folder = DataFolder::prepare(options.data_dir.as_deref())?;

    // 1. The server.
    output.step(
        "1",
        "Server: the reference server on a loopback port, seeded for one user",
    );
    let server = DemoServer::start(&folder.path().join(SERVER_DB)).await?;
    let seeded = server.seed(options.contacts, options.messages).await?;
    phases.seed_s = started.elapsed().as_secs_f64();
    output.line(&format!(
        "  listening on {} · SQLite files in {}{}",
        server.url(),
        folder.path().display(),
        if folder.is_kept() {
            ""
        } else {
            " (removed at exit)"
        }
    ));
    output.line(&format!(
        "  seeded {} rows for user {USER:?} in {:.1} s, one transaction per {} rows: \
         {} user_preferences, {} contacts, {} messages",
        thousands(seeded.rows),
        seeded.seconds,
        thousands(data::SEED_PAGE as u64),
        data::preference_rows().len(),
        thousands(options.contacts),
        thousands(options.messages),
    ));

    let config = |name, device_id, token, db: &str| {
        (
            DeviceConfig {
                name,
                device_id,
                token,
                url: server.url(),
                strategy: options.strategy,
                seed: options.seed,
                contacts: options.contacts,
                messages: options.messages,
            },
            folder.path().join(db),
        )
    };
    let (config_a, db_a) = config("A", "device-a", TOKEN_A, DEVICE_A_DB);
    let (config_b, db_b) = config("B", "device-b", TOKEN_B, DEVICE_B_DB);
    let half = options.messages / 2;
    let a = Device::open(config_a, &db_a, output, None).await?;
    let b = Device::open(config_b, &db_b, output, Some((MESSAGES, half))).await?;

    // The totals the progress bars count to come from the server's digest.
    let mut totals = BTreeMap::new();
    for collection in COLLECTIONS {
        totals.insert(collection, a.server_count(collection).await?);
    }

    // 2. Device A's initial sync.
    output.step(
        "2",
        "Initial sync: device A pulls every collection (messages after contacts)",
    );
    let step = Instant::now();
    show_progress(&a, output, &totals);
    a.sync.run().await.map_err(|source| DemoError::Sync {
        device: a.name,
        step: "the initial sync",
        source,
    })?;
    a.watcher.settle().await?;
    freeze_progress(&a, output);
    phases.initial_a_s = step.elapsed().as_secs_f64();
    output.line(&format!(
        "  device A: {} in {:.1} s",
        counts_line(&a.counts().await?),
        phases.initial_a_s
    ));

    // 3. Device B's initial sync, cancelled half way through messages, then resumed.
    output.step(
        "3",
        "Resume: device B's initial sync is cancelled half way through messages, then restarted",
    );
    let step = Instant::now();
    let resume = cancel_and_resume(&b, output, &totals, half).await?;
    phases.initial_b_s = step.elapsed().as_secs_f64();

    // 4. Offline edits and background sync.
    output.step(
        "4",
        "Offline edits, then background sync: A, then B, then A again",
    );
    let step = Instant::now();
    let plan = EditPlan::draw(options.seed, options.contacts);
    let rows = offline_round(&a, &b, &plan, options, output).await?;
    phases.offline_sync_s = step.elapsed().as_secs_f64();

    // 4b. A live change, through the change stream.
    output.step(
        "4b",
        "Live: A edits once more; B's change stream triggers its sync (no poll timer)",
    );
    let step = Instant::now();
    let live_latency = live_change(&a, &b, &plan, output).await?;
    phases.live_s = step.elapsed().as_secs_f64();
    a.watcher.show_cycles(false);
    b.watcher.show_cycles(false);

    // 5. Convergence.
    output.step(
        "5",
        "Convergence: each device's store against the server (count and digest)",
    );
    let step = Instant::now();
    let Convergence {
        verify,
        devices,
        server_counts,
    } = check_convergence(&a, &b, &server, output).await?;
    let converged = verify.iter().all(|row| row.matches);
    phases.verify_s = step.elapsed().as_secs_f64();

    // 6. Shared data.
    output.step(
        "6",
        "Shared data: the crew's tasks between two users; a member added live, then removed",
    );
    let step = Instant::now();
    let sharing = sharing::chapter(&server, folder.path(), options.seed, output).await?;
    phases.sharing_s = step.elapsed().as_secs_f64();

    // 7. The summary.
    let mut wire = Wire::default();
    wire.add(&a.remote.http().stats());
    wire.add(&b.remote.http().stats());
    let (tally_a, tally_b) = (close(a).await, close(b).await);
    server.shutdown().await?;
    let tallies = [&tally_a, &tally_b];
    let items_synced: u64 = tallies
        .iter()
        .map(|t| t.initial_items + t.pulled + t.pushed)
        .sum();
    let sync_seconds = phases.sync_seconds();
    let conflict_count = tallies.iter().map(|t| t.conflicts.len()).sum();
    let outcomes = OutcomeCounts::of(
        tallies
            .iter()
            .flat_map(|t| t.conflicts.iter().map(|event| event.outcome)),
    );
    let summary = Summary {
        converged,
        seed: options.seed,
        strategy: options.strategy.name().to_owned(),
        contacts: options.contacts,
        messages: options.messages,
        seconds: started.elapsed().as_secs_f64(),
        phases,
        items_synced,
        items_per_s: if sync_seconds > 0.0 {
            items_synced as f64 / sync_seconds
        } else {
            0.0
        },
        wire,
        retries: tallies.iter().map(|t| t.retries).sum(),
        conflicts: conflict_count,
        conflicts_set_up: plan.conflicts(),
        conflict_outcomes: outcomes,
        expected_outcomes: plan.expected_outcomes(options.strategy),
        conflict_table: rows,
        resumed: resume.resumed,
        resume_checkpoint: resume.checkpoint,
        resume: resume.report,
        live_latency_ms: live_latency.as_secs_f64() * 1_000.0,
        sharing,
        devices,
        server: server_counts,
        verify,
        events_missed: tallies.iter().map(|t| t.lagged).sum(),
        data_dir: folder.is_kept().then(|| folder.path().to_owned()),
    };
    summary.show(output);
    // The temporary folder, if any, is removed here, after every file in it was closed.
    drop(folder);
    Ok(summary)
}

/// Step 4: both devices edit offline, then sync A, B, A; returns every conflict met.
async fn offline_round(
    a: &Device,
    b: &Device,
    plan: &EditPlan,
    options: &Options,
    output: &Output,
) -> Result<Vec<ConflictRow>, DemoError> {
    let changes_a = plan.apply_on_a(a).await?;
    let changes_b = plan.apply_on_b(b).await?;
    output.line(&format!(
        "  offline, A made {changes_a} local changes: {SHARED_EDITS} contacts B edits too, \
         {SOLO_EDITS} of its own, deleted {}, wrote {NEW_MESSAGES} messages",
        data::contact_id(plan.deleted)
    ));
    output.line(&format!(
        "  offline, B made {changes_b} local changes: the same {SHARED_EDITS} contacts \
         ({EDITED_TWICE_ON_B} of them twice), {SOLO_EDITS} of its own, wrote {NEW_MESSAGES} \
         messages"
    ));
    a.watcher.show_cycles(true);
    b.watcher.show_cycles(true);
    // A pushes first; B then meets A's edits of the shared contacts as conflicts when it pulls,
    // and pushes what it keeps; A's second cycle pulls that back.
    for device in [a, b, a] {
        device
            .sync
            .sync_now()
            .await
            .map_err(|source| DemoError::Sync {
                device: device.name,
                step: "the background sync after the offline edits",
                source,
            })?;
        device.watcher.settle().await?;
    }
    let mut rows: Vec<ConflictRow> = Vec::new();
    for device in [a, b] {
        let tally = device.watcher.tally();
        rows.extend(
            tally
                .conflicts
                .iter()
                .map(|event| ConflictRow::new(device.name, event)),
        );
    }
    output.line(&format!(
        "  {} conflict(s), strategy {}:",
        rows.len(),
        options.strategy.name()
    ));
    for line in conflicts::table(&rows) {
        output.line(&line);
    }
    Ok(rows)
}

/// What step 5 found.
struct Convergence {
    verify: Vec<VerifyRow>,
    devices: BTreeMap<String, BTreeMap<String, u64>>,
    server_counts: BTreeMap<String, u64>,
}

/// Step 5: each device's count and digest of each collection against the server's.
async fn check_convergence(
    a: &Device,
    b: &Device,
    server: &DemoServer,
    output: &Output,
) -> Result<Convergence, DemoError> {
    let mut verify = Vec::new();
    for device in [a, b] {
        for report in device.verify().await? {
            let matches = report.is_match();
            output.line(&format!(
                "  {} {:<17} {} store {:>9} rows {}  server {:>9} rows {}",
                device.name,
                report.collection,
                if matches { "✔" } else { "✘" },
                thousands(report.local_count),
                report.local_digest,
                thousands(report.remote_count),
                report.remote_digest,
            ));
            verify.push(VerifyRow {
                device: device.name.to_owned(),
                collection: report.collection.clone(),
                local_count: report.local_count,
                local_digest: report.local_digest.clone(),
                remote_count: report.remote_count,
                remote_digest: report.remote_digest.clone(),
                matches,
            });
        }
    }
    output.line(if verify.iter().all(|row| row.matches) {
        "  PASS: both devices hold exactly the server's rows, at the server's versions"
    } else {
        "  FAIL: a device and the server disagree (see ✘ above)"
    });
    let mut devices = BTreeMap::new();
    for device in [a, b] {
        devices.insert(
            device.name.to_owned(),
            device.counts().await?.into_iter().collect(),
        );
    }
    let mut server_counts = BTreeMap::new();
    for collection in COLLECTIONS {
        server_counts.insert(
            collection.to_owned(),
            server.digest(collection).await?.count(),
        );
    }
    Ok(Convergence {
        verify,
        devices,
        server_counts,
    })
}

/// Installs a progress display per collection on `device`, counting to the server's totals.
fn show_progress(device: &Device, output: &Output, totals: &BTreeMap<&str, u64>) {
    for collection in COLLECTIONS {
        let total = totals.get(collection).copied().unwrap_or(0);
        let progress = output.progress(&format!("{} {collection}", device.name), total);
        device.watcher.show_progress(collection, progress);
    }
}

/// Ends `device`'s progress displays, printing their final state in collection order.
fn freeze_progress(device: &Device, output: &Output) {
    let mut displays = device.watcher.take_progress();
    let ordered: Vec<_> = COLLECTIONS
        .iter()
        .filter_map(|collection| displays.remove(*collection))
        .collect();
    output.freeze(&ordered);
}

/// `user_preferences 8 · contacts 50,000 · messages 200,000`.
fn counts_line(counts: &[(String, u64)]) -> String {
    counts
        .iter()
        .map(|(collection, count)| format!("{collection} {}", thousands(*count)))
        .collect::<Vec<_>>()
        .join(" · ")
}

/// What step 3 established.
struct Resume {
    resumed: bool,
    checkpoint: Option<fero::SyncCheckpoint>,
    report: ResumeReport,
}

/// Step 3: B's first run is cancelled by its watcher once half the messages are applied; the
/// second run must start from the checkpoint saved at the cancel, and fetch no page the first
/// run had (beyond the one in flight at the cancel).
async fn cancel_and_resume(
    b: &Device,
    output: &Output,
    totals: &BTreeMap<&str, u64>,
    half: u64,
) -> Result<Resume, DemoError> {
    show_progress(b, output, totals);
    let mark = b.remote.log().len();
    let first = b.sync.run().await;
    // Whatever happened, later pulls of messages must not wait for a watcher that no longer
    // cancels anything.
    b.open_gate();
    match first {
        Ok(_) => {}
        Err(error) if error.is_cancelled() => {}
        Err(source) => {
            return Err(DemoError::Sync {
                device: b.name,
                step: "the first initial sync",
                source,
            });
        }
    }
    b.watcher.settle().await?;
    let tally = b.watcher.tally();
    let cancelled_at = tally.cancelled_at;
    let items_at_checkpoint = tally.cancelled.get(MESSAGES).copied();
    let saved = b.checkpoint(MESSAGES).await?;
    let before = b.remote.log().since(mark, MESSAGES);
    let items_before: u64 = before.iter().map(|page| page.items as u64).sum();
    match (cancelled_at, &saved) {
        (Some(at), Some(checkpoint)) => {
            output.line(&format!(
                "  cancelled from the event stream at {} of {} messages applied (half is {})",
                thousands(at),
                thousands(totals.get(MESSAGES).copied().unwrap_or(0)),
                thousands(half),
            ));
            output.line(&format!(
                "  stopped at a safe point: checkpoint saved at sync_id {} after {} messages; \
                 {} pages ({} items) had been received",
                checkpoint.last_sync_id,
                thousands(items_at_checkpoint.unwrap_or(at)),
                before.len(),
                thousands(items_before),
            ));
        }
        _ => output.line(
            "  the initial sync of messages finished before the cancel point: nothing to resume",
        ),
    }

    output.line("  restarting device B's sync…");
    let mark = b.remote.log().len();
    b.sync.run().await.map_err(|source| DemoError::Sync {
        device: b.name,
        step: "the resumed initial sync",
        source,
    })?;
    b.watcher.settle().await?;
    freeze_progress(b, output);
    let tally: Tally = b.watcher.tally();
    let resumed_from = tally.started_from.get(MESSAGES).cloned().flatten();
    let after_all = b.remote.log().since(mark, MESSAGES);
    let twice = fetched_twice(&before, &after_all);
    // The run ends with a background cycle whose pull of messages finds nothing: only pages
    // with items are the resumed initial sync's.
    let after: Vec<_> = after_all
        .into_iter()
        .filter(|page| page.items > 0)
        .collect();
    let report = ResumeReport {
        cancelled_at_items: cancelled_at,
        items_at_checkpoint,
        pages_before: before.len(),
        items_before,
        resumed_from: resumed_from.clone(),
        pages_after: after.len(),
        items_after: after.iter().map(|page| page.items as u64).sum(),
        pages_fetched_twice: twice.len(),
        items_fetched_twice: twice.iter().map(|page| page.items as u64).sum(),
    };
    let messages_now = b
        .counts()
        .await?
        .into_iter()
        .find(|(collection, _)| collection == MESSAGES)
        .map_or(0, |(_, count)| count);
    let complete = messages_now == totals.get(MESSAGES).copied().unwrap_or(0);
    let resumed = cancelled_at.is_some()
        && saved.is_some()
        && resumed_from == saved
        && report.pages_fetched_twice <= 1
        && complete;
    if let Some(checkpoint) = &resumed_from {
        output.line(&format!(
            "  resumed at the saved checkpoint (sync_id {}): {} more pages, {} items",
            checkpoint.last_sync_id,
            report.pages_after,
            thousands(report.items_after)
        ));
    }
    output.line(&format!(
        "  pages fetched twice: {}{}",
        report.pages_fetched_twice,
        match report.pages_fetched_twice {
            0 => " (the page in flight at the cancel was dropped before it arrived)",
            1 => " (the page that was in flight at the cancel)",
            _ => " — more than the page in flight: the resume repeated work",
        }
    ));
    output.line(&format!(
        "  device B: {} · resumed: {}",
        counts_line(&b.counts().await?),
        if resumed { "yes" } else { "NO" }
    ));
    Ok(Resume {
        resumed,
        checkpoint: saved,
        report,
    })
}

/// Step 4b: B follows its change stream; A edits a contact and syncs; the notice triggers B's
/// cycle. Returns the time from A's sync starting until B's cycle that pulled the edit ended.
async fn live_change(
    a: &Device,
    b: &Device,
    plan: &EditPlan,
    output: &Output,
) -> Result<Duration, DemoError> {
    // Subscribed before the stream starts, so no cycle it triggers can be missed.
    let mut events = b.sync.event_stream();
    let live = b
        .remote
        .http()
        .live_triggers(b.sync.clone(), [(CONTACTS, CONTACTS), (MESSAGES, MESSAGES)]);
    // The stream's first connection triggers one catch-up cycle of each followed feature (the
    // notices sent before it are lost): when both ended, B is connected and caught up.
    let connecting = Instant::now();
    for feature in [CONTACTS, MESSAGES] {
        next_cycle(&mut events, b.name, feature, 0).await?;
    }
    b.watcher.settle().await?;
    output.line(&format!(
        "  B follows its change stream: connected and caught up in {:.0} ms",
        connecting.elapsed().as_secs_f64() * 1_000.0
    ));

    let name = plan.apply_live_edit(a).await?;
    let id = data::contact_id(plan.live);
    let sent = Instant::now();
    a.sync
        .sync_feature(CONTACTS)
        .await
        .map_err(|source| DemoError::Sync {
            device: a.name,
            step: "pushing the live edit",
            source,
        })?;
    let pushed = sent.elapsed();
    next_cycle(&mut events, b.name, CONTACTS, 1).await?;
    let latency = sent.elapsed();
    let arrived = b
        .store
        .get(CONTACTS, &id)
        .await
        .map_err(DemoError::store(b.name, format!("read {id}")))?
        .is_some_and(|doc| doc.data.get("name").and_then(|value| value.as_str()) == Some(&name));
    live.stop();
    a.watcher.settle().await?;
    b.watcher.settle().await?;
    output.line(&format!(
        "  A renamed {id} to {name:?} and pushed it in {:.0} ms; B had it {:.0} ms after A's \
         sync began{}",
        pushed.as_secs_f64() * 1_000.0,
        latency.as_secs_f64() * 1_000.0,
        if arrived {
            ""
        } else {
            " — but B's copy differs"
        }
    ));
    Ok(latency)
}

/// Waits for `device`'s next completed background cycle of `feature` that pulled at least
/// `min_pulled` changes.
async fn next_cycle(
    events: &mut SyncEventStream,
    device: &'static str,
    feature: &str,
    min_pulled: u64,
) -> Result<(), DemoError> {
    let key = FeatureKey::new(feature);
    let wait = async {
        while let Some(event) = events.next().await {
            if let Ok(SyncEvent::BackgroundSyncCompleted {
                feature, pulled, ..
            }) = event
            {
                if feature == key && pulled >= min_pulled {
                    return Ok(());
                }
            }
        }
        Err(DemoError::WatcherStopped { device })
    };
    tokio::time::timeout(LIVE_TIMEOUT, wait)
        .await
        .unwrap_or(Err(DemoError::Timeout {
            device,
            what: "a background cycle triggered by the change stream",
            waited: LIVE_TIMEOUT,
        }))
}

/// Disposes the device's engine and returns its watcher's final counts.
async fn close(device: Device) -> Tally {
    device.sync.dispose().await;
    device.watcher.finish().await
}
