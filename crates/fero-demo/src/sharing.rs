//! Step 6: shared data. The server's sync rules ([`RULES`]) share `tasks` and `members` per
//! team; two users, alice and bob, each with a [`TeamDevice`], show a member added live, rows
//! flowing both ways through the change stream, and a removed member losing the team's rows and
//! never receiving a later write.
//!
//! The chapter, in order:
//! 1. the server operator writes the first membership (alice in `crew`) straight into storage:
//!    only members may write a team's `members` rows, and static tokens carry no claims;
//! 2. alice syncs and writes the crew's tasks; bob, in no team, syncs and receives nothing;
//! 3. both follow their change streams; alice adds bob to the crew (a `members` row) and bob's
//!    stream triggers the sync that moves the crew's rows in;
//! 4. a task alice writes reaches bob live, and an edit bob makes reaches alice live;
//! 5. alice removes bob (deletes his `members` row): his stream triggers the sync that moves
//!    every row of the crew out of his device;
//! 6. a task alice writes after the removal never reaches bob, not even at an explicit sync;
//! 7. both devices are checked against what the server lets each read (count and digest).

use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use fero::{FeatureKey, SyncEvent, SyncEventStream};
use fero_server::Rules;
use futures::StreamExt;
use serde_json::{Value, json};

use crate::error::DemoError;
use crate::folder::{ALICE_DB, BOB_DB};
use crate::output::Output;
use crate::server::{DemoServer, TOKEN_ALICE, TOKEN_BOB};
use crate::summary::{SharingReport, thousands};
use crate::team::{TeamDevice, TeamDeviceConfig};

/// The shared collection of tasks: one bucket per team.
pub const TASKS: &str = "tasks";
/// The membership collection: a row `{team, user}` grants its user the team's bucket.
pub const MEMBERS: &str = "members";
/// The team of the story.
pub const TEAM: &str = "crew";
/// The crew's first member.
pub const ALICE: &str = "alice";
/// The user alice adds to the crew, then removes.
pub const BOB: &str = "bob";
/// Tasks alice writes before she adds bob: what moves into bob's device when he joins.
pub const CREW_TASKS: u64 = 24;

/// The demo server's sync rules. Collections it does not name (`user_preferences`,
/// `contacts`, `messages`) stay private to their user, exactly as without rules.
pub const RULES: &str = r#"
# A team's tasks and memberships live in the team's bucket, "team:<name>".

# A token's `teams` claim grants those teams. The devices' static tokens carry no claims; the
# server operator's console claims the team it bootstraps.
[access]
read = 'has(user.claims.teams) ? user.claims.teams.map(t, "team:" + string(t)) : []'

# A members row {team, user} grants its user the team's bucket.
[membership]
collection = "members"
user = 'data.user'
bucket = '"team:" + data.team'

# Any member of a team may write its tasks (the default `write = 'bucket in user.buckets'`).
[collections.tasks]
bucket = '"team:" + data.team'

# Any member of a team may add and remove its members (the same default).
[collections.members]
bucket = '"team:" + data.team'
"#;

/// How long a step waits for a cycle triggered by a change stream to bring what it waits for.
/// Real loopback I/O, so a bounded wait: on an idle machine each takes milliseconds.
const LIVE_TIMEOUT: Duration = Duration::from_secs(15);

/// The demo's rules, parsed.
///
/// # Errors
/// [`DemoError::Rules`] (the text is a constant: a test guards it).
pub fn rules() -> Result<Rules, DemoError> {
    Rules::parse(RULES, "demo rules").map_err(|source| DemoError::Rules { source })
}

/// The id of the `members` row of `user` in `team`.
pub fn member_id(team: &str, user: &str) -> String {
    format!("member-{team}-{user}")
}

/// The `members` row of `user` in `team`.
pub fn member_data(team: &str, user: &str) -> Value {
    json!({ "team": team, "user": user })
}

/// The id of crew task `index`.
pub fn task_id(index: u64) -> String {
    format!("task-{index:03}")
}

/// Crew task `index` as alice first writes it.
pub fn task_data(index: u64) -> Value {
    const CHORES: [&str; 8] = [
        "Check the generator",
        "Restock the water",
        "Service the winch",
        "Log the weather",
        "Test the radio",
        "Coil the ropes",
        "Patch the tarp",
        "Count the flares",
    ];
    json!({
        "team": TEAM,
        "title": format!("{} (#{index})", CHORES[(index % 8) as usize]),
        "done": false,
    })
}

/// The short title of a task row, for the story's lines.
fn title(data: &Value) -> String {
    data.get("title")
        .and_then(Value::as_str)
        .unwrap_or("?")
        .to_owned()
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1_000.0
}

/// Runs step 6 against `server`, with the devices' files in `folder`.
///
/// # Errors
/// A [`DemoError`] naming the device and step that failed, or a [`DemoError::Timeout`] when a
/// change did not arrive through a change stream in time. A broken guarantee is not an error:
/// the report says `passed = false`.
pub(crate) async fn chapter(
    server: &DemoServer,
    folder: &Path,
    seed: u64,
    output: &Output,
) -> Result<SharingReport, DemoError> {
    let mut report = SharingReport {
        team: TEAM.to_owned(),
        ..SharingReport::default()
    };
    output.line(&format!(
        "  sync rules: {TASKS} and {MEMBERS} live in their team's bucket (\"team:\" + data.team); \
         a {MEMBERS} row grants its user the team; every other collection stays private"
    ));

    // 1. The first member.
    server.add_member(TEAM, ALICE).await?;
    output.line(&format!(
        "  the server operator writes the first membership straight into storage: {ALICE} in \
         {TEAM:?} (only members may add members, and static tokens carry no claims)"
    ));

    // 2. Alice's and bob's devices, before bob is a member.
    let config = |name, device_id, token| TeamDeviceConfig {
        name,
        device_id,
        token,
        url: server.url(),
        seed,
    };
    let alice = TeamDevice::open(
        config(ALICE, "alice-phone", TOKEN_ALICE),
        &folder.join(ALICE_DB),
    )
    .await?;
    let bob = TeamDevice::open(config(BOB, "bob-phone", TOKEN_BOB), &folder.join(BOB_DB)).await?;
    initial_sync(&alice).await?;
    for index in 0..CREW_TASKS {
        alice.put(TASKS, &task_id(index), task_data(index)).await?;
    }
    let pushing = Instant::now();
    alice
        .sync_feature(TASKS, "pushing the crew's tasks")
        .await?;
    output.line(&format!(
        "  {ALICE}: initial sync → {} member(s) (herself); she writes {CREW_TASKS} crew tasks \
         and pushes them in {:.0} ms",
        alice.count(MEMBERS).await?,
        ms(pushing.elapsed())
    ));
    initial_sync(&bob).await?;
    report.bob_before_membership = bob.count(TASKS).await? + bob.count(MEMBERS).await?;
    output.line(&format!(
        "  {BOB} (a second user, his own token): initial sync → {} tasks, {} members: he is in \
         no team yet",
        bob.count(TASKS).await?,
        bob.count(MEMBERS).await?,
    ));

    // 3. Both follow their change streams; alice adds bob.
    let mut alice_events = alice.sync.event_stream();
    let mut bob_events = bob.sync.event_stream();
    let followed = [(TASKS, TASKS), (MEMBERS, MEMBERS)];
    let connecting = Instant::now();
    let alice_live = alice.remote.live_triggers(alice.sync.clone(), followed);
    let bob_live = bob.remote.live_triggers(bob.sync.clone(), followed);
    // The streams' first connections trigger one catch-up cycle of each followed feature: when
    // they ended, both devices are subscribed to the buckets they may read.
    caught_up(&mut alice_events, alice.name).await?;
    caught_up(&mut bob_events, bob.name).await?;
    output.line(&format!(
        "  {ALICE} and {BOB} follow their change streams (no poll timer): connected and caught \
         up in {:.0} ms",
        ms(connecting.elapsed())
    ));

    alice
        .put(MEMBERS, &member_id(TEAM, BOB), member_data(TEAM, BOB))
        .await?;
    let adding = Instant::now();
    alice
        .sync_feature(MEMBERS, "pushing bob's membership")
        .await?;
    let expected_members = 2;
    until(
        &mut bob_events,
        bob.name,
        "the crew's rows moving in",
        || async {
            Ok(bob.count(TASKS).await? == CREW_TASKS
                && bob.count(MEMBERS).await? == expected_members)
        },
    )
    .await?;
    report.move_in_ms = ms(adding.elapsed());
    let (bob_tasks, bob_members) = (bob.count(TASKS).await?, bob.count(MEMBERS).await?);
    report.crew_tasks_before_bob = CREW_TASKS;
    report.moved_in = bob_tasks + bob_members;
    output.line(&format!(
        "  {ALICE} adds {BOB} to the crew (a {MEMBERS} row); his change stream triggers the sync \
         that moves in {bob_tasks} tasks and {bob_members} members, {:.0} ms after her sync began",
        report.move_in_ms
    ));

    // 4. Live, both ways.
    let live_id = "task-live";
    let live_task =
        json!({ "team": TEAM, "title": "Fix the hatch before the storm", "done": false });
    alice.put(TASKS, live_id, live_task.clone()).await?;
    let sent = Instant::now();
    alice.sync_feature(TASKS, "pushing a live task").await?;
    until(
        &mut bob_events,
        bob.name,
        "alice's task reaching bob",
        || async { Ok(bob.data(TASKS, live_id).await?.as_ref() == Some(&live_task)) },
    )
    .await?;
    report.live_latency_ms = ms(sent.elapsed());
    report.shared_rows_seen_by_bob = bob.count(TASKS).await?;
    output.line(&format!(
        "  {ALICE} writes {:?}; {BOB} had it live {:.0} ms after her sync began ({} crew tasks \
         on his device)",
        title(&live_task),
        report.live_latency_ms,
        report.shared_rows_seen_by_bob
    ));

    let edited_id = task_id(1);
    let mut edited = bob
        .data(TASKS, &edited_id)
        .await?
        .unwrap_or_else(|| task_data(1));
    edited["done"] = json!(true);
    edited["title"] = json!(format!("{} — done by bob", title(&edited)));
    bob.put(TASKS, &edited_id, edited.clone()).await?;
    let sent = Instant::now();
    bob.sync_feature(TASKS, "pushing his edit").await?;
    until(
        &mut alice_events,
        alice.name,
        "bob's edit reaching alice",
        || async { Ok(alice.data(TASKS, &edited_id).await?.as_ref() == Some(&edited)) },
    )
    .await?;
    report.edit_latency_ms = ms(sent.elapsed());
    report.bob_edit_seen_by_alice = true;
    output.line(&format!(
        "  {BOB} edits a shared task ({:?}); {ALICE} had it live {:.0} ms after his sync began",
        title(&edited),
        report.edit_latency_ms
    ));

    // 5. Alice removes bob.
    report.crew_rows_at_removal = alice.count(TASKS).await? + alice.count(MEMBERS).await?;
    let (tasks_before, members_before) = (bob.count(TASKS).await?, bob.count(MEMBERS).await?);
    alice.delete(MEMBERS, &member_id(TEAM, BOB)).await?;
    let removing = Instant::now();
    alice.sync_feature(MEMBERS, "pushing bob's removal").await?;
    until(
        &mut bob_events,
        bob.name,
        "the crew's rows moving out",
        || async { Ok(bob.count(TASKS).await? == 0 && bob.count(MEMBERS).await? == 0) },
    )
    .await?;
    let move_out_ms = ms(removing.elapsed());
    let (tasks_after, members_after) = (bob.count(TASKS).await?, bob.count(MEMBERS).await?);
    report.moved_out_tasks = tasks_before.saturating_sub(tasks_after);
    let moved_out_members = members_before.saturating_sub(members_after);
    report.moved_out = report.moved_out_tasks + moved_out_members;
    output.line(&format!(
        "  {ALICE} removes {BOB} from the crew (deletes his {MEMBERS} row); at his next sync, \
         triggered by his change stream {move_out_ms:.0} ms later, {} rows moved out of his \
         device: {} tasks, {} members (the crew held {} rows)",
        report.moved_out, report.moved_out_tasks, moved_out_members, report.crew_rows_at_removal
    ));

    // 6. A write after the removal never reaches bob.
    let after_id = "task-after-removal";
    let after_task = json!({ "team": TEAM, "title": "Plan next week's rota", "done": false });
    alice.put(TASKS, after_id, after_task.clone()).await?;
    alice
        .sync_feature(TASKS, "pushing a task after the removal")
        .await?;
    report.written_after_removal = 1;
    // An explicit sync on top of anything his stream triggers: every chance to leak.
    bob.sync
        .sync_now()
        .await
        .map_err(|source| DemoError::Sync {
            device: bob.name,
            step: "the sync after the removal",
            source,
        })?;
    report.leaked_after_removal = u64::from(bob.data(TASKS, after_id).await?.is_some());
    report.left_on_bob = bob.count(TASKS).await? + bob.count(MEMBERS).await?;
    report.bob_readable_tasks_after_removal = bob.server_count(TASKS).await?;
    output.line(&format!(
        "  {ALICE} writes {:?} after the removal; {BOB} syncs: it {} ({} leaked; {} crew rows \
         left on his device; the server lets him read {} tasks)",
        title(&after_task),
        if report.leaked_after_removal == 0 {
            "never reached him"
        } else {
            "REACHED HIM"
        },
        report.leaked_after_removal,
        report.left_on_bob,
        report.bob_readable_tasks_after_removal
    ));

    alice_live.stop();
    bob_live.stop();

    // 7. Both devices against what the server lets each read.
    let mut converged = true;
    for device in [&alice, &bob] {
        for check in device.verify().await? {
            let matches = check.is_match();
            converged &= matches;
            output.line(&format!(
                "  {:<5} {:<17} {} store {:>9} rows {}  server {:>9} rows {}",
                device.name,
                check.collection,
                if matches { "✔" } else { "✘" },
                thousands(check.local_count),
                check.local_digest,
                thousands(check.remote_count),
                check.remote_digest,
            ));
        }
    }
    report.converged = converged;
    report.passed = report.check();
    output.line(if report.passed {
        "  PASS: bob read the crew's rows while a member, lost every one of them when removed, \
         and received nothing written after"
    } else {
        "  FAIL: a sharing guarantee did not hold (see above)"
    });

    alice.sync.dispose().await;
    bob.sync.dispose().await;
    Ok(report)
}

/// The device's first sync of `tasks` and `members`.
async fn initial_sync(device: &TeamDevice) -> Result<(), DemoError> {
    device.sync.run().await.map_err(|source| DemoError::Sync {
        device: device.name,
        step: "the initial sync of the shared collections",
        source,
    })?;
    Ok(())
}

/// Waits for the catch-up cycle of `tasks` and of `members` that a change stream's first
/// connection triggers.
async fn caught_up(events: &mut SyncEventStream, device: &'static str) -> Result<(), DemoError> {
    let mut waiting = vec![FeatureKey::new(TASKS), FeatureKey::new(MEMBERS)];
    let wait = async {
        while !waiting.is_empty() {
            match events.next().await {
                Some(Ok(SyncEvent::BackgroundSyncCompleted { feature, .. })) => {
                    waiting.retain(|key| key != &feature);
                }
                Some(_) => {}
                None => return Err(DemoError::WatcherStopped { device }),
            }
        }
        Ok(())
    };
    tokio::time::timeout(LIVE_TIMEOUT, wait)
        .await
        .unwrap_or(Err(DemoError::Timeout {
            device,
            what: "the catch-up cycles of a new change stream",
            waited: LIVE_TIMEOUT,
        }))
}

/// Waits until `done` holds, checking it now and after each background cycle `device`'s
/// engine completes (the cycles its change stream triggers). `events` must have been subscribed
/// before the change being waited for was pushed, so no cycle is missed.
async fn until<F, Fut>(
    events: &mut SyncEventStream,
    device: &'static str,
    what: &'static str,
    mut done: F,
) -> Result<(), DemoError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool, DemoError>>,
{
    let wait = async {
        loop {
            if done().await? {
                return Ok(());
            }
            loop {
                match events.next().await {
                    // A lagged stream may have dropped the completion: check again.
                    Some(Ok(SyncEvent::BackgroundSyncCompleted { .. }) | Err(_)) => break,
                    Some(Ok(_)) => {}
                    None => return Err(DemoError::WatcherStopped { device }),
                }
            }
        }
    };
    tokio::time::timeout(LIVE_TIMEOUT, wait)
        .await
        .unwrap_or(Err(DemoError::Timeout {
            device,
            what,
            waited: LIVE_TIMEOUT,
        }))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use fero_server::rules::Principal;

    use super::*;

    fn no_claims() -> Value {
        json!({})
    }

    #[test]
    fn the_embedded_rules_share_tasks_and_members_and_nothing_else() {
        let rules = rules().unwrap();
        assert!(rules.is_ruled(TASKS));
        assert!(rules.is_ruled(MEMBERS));
        assert_eq!(rules.membership_collection(), Some(MEMBERS));
        for private in crate::data::COLLECTIONS {
            assert!(!rules.is_ruled(private), "{private} stays private");
        }
    }

    #[test]
    fn a_member_row_grants_its_user_the_team_bucket() {
        let rules = rules().unwrap();
        let grant = rules
            .grant_of(MEMBERS, &member_data(TEAM, BOB))
            .unwrap()
            .unwrap();
        assert_eq!(grant, (BOB.to_owned(), "team:crew".to_owned()));
    }

    #[test]
    fn only_a_member_may_write_the_team_tasks() {
        let rules = rules().unwrap();
        let claims = no_claims();
        let tasks = rules.collection(TASKS).unwrap();
        let row = task_data(0);

        let alice = Principal {
            id: ALICE,
            claims: &claims,
        };
        let readable = rules
            .readable_buckets(&alice, &["team:crew".to_owned()])
            .unwrap();
        let user = rules.user_context(&alice, &readable);
        let bucket = tasks.bucket_of(&row, &user, "task-000", false).unwrap();
        assert_eq!(bucket, "team:crew");
        assert!(
            tasks
                .may_write(&bucket, &row, &user, "task-000", false)
                .unwrap()
        );

        let bob = Principal {
            id: BOB,
            claims: &claims,
        };
        let readable: BTreeSet<String> = rules.readable_buckets(&bob, &[]).unwrap();
        assert!(!readable.contains("team:crew"), "{readable:?}");
        let user = rules.user_context(&bob, &readable);
        assert!(
            !tasks
                .may_write(&bucket, &row, &user, "task-000", false)
                .unwrap()
        );
    }

    #[test]
    fn the_operator_console_claims_the_team_it_bootstraps() {
        let rules = rules().unwrap();
        let claims = json!({ "teams": [TEAM] });
        let operator = Principal {
            id: "operator",
            claims: &claims,
        };
        let readable = rules.readable_buckets(&operator, &[]).unwrap();
        assert!(readable.contains("team:crew"), "{readable:?}");
    }
}
