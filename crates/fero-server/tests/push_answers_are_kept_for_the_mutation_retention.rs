//! The answer to every pushed change used to be kept forever, so the table of answers only grew.
//! Now the server keeps each for the mutation retention: a replay within it gets the original
//! answer, a replay after it is answered as a new change (a conflict carrying the server's row);
//! `serve` prunes once at start and every hour, and stops pruning when it stops.

mod support;

use std::sync::Arc;
use std::time::Duration;

use fero::Timestamp;
use fero_protocol::ChangeOutcome;
use fero_server::storage_suite::ManualClock;
use fero_server::{
    BuildError, DEFAULT_MUTATION_RETENTION, MUTATION_PRUNE_INTERVAL, PruneReport, Server,
    SqliteStorage, Storage, UserId,
};
use serde_json::json;
use support::hooked::{Hooked, Hooks};
use support::{ALICE, Running, accepted, change, push};
use tokio::sync::mpsc;
use tokio::time::Instant;

const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// A server whose storage and retention cut-off read `clock`.
fn server_on(clock: &ManualClock) -> Server {
    let storage = SqliteStorage::open_with_clock(":memory:", Arc::new(clock.clone())).unwrap();
    Server::builder()
        .storage(storage)
        .tokens(support::tokens())
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_replay_gets_its_original_answer_until_the_retention_has_passed() {
    let clock = ManualClock::new();
    let server = server_on(&clock);
    assert_eq!(server.mutation_retention(), DEFAULT_MUTATION_RETENTION);
    let router = server.router();
    let create = change("n", None, "phone", 1, json!("v1"));
    let original = push(&router, ALICE, "notes", vec![create.clone()]).await;
    let (version, sync_id) = accepted(&original[0]);

    clock.advance(29 * DAY);
    assert_eq!(server.prune_mutations_now().await.unwrap().pruned, 0);
    let replay = push(&router, ALICE, "notes", vec![create.clone()]).await;
    assert_eq!(
        replay, original,
        "within the retention a replay gets the original answer"
    );

    clock.advance(2 * DAY);
    assert_eq!(
        server.prune_mutations_now().await.unwrap().pruned,
        1,
        "31 days on, the answer is older than the 30-day retention"
    );
    let replay = push(&router, ALICE, "notes", vec![create]).await;
    match &replay[0].outcome {
        ChangeOutcome::Conflict { server: Some(row) } => {
            assert_eq!(
                (row.version.0, row.sync_id.0, &row.data),
                (version, sync_id, &json!("v1")),
                "the conflict shows the client its own write"
            );
        }
        other => panic!("a replay after the retention must conflict, got {other:?}"),
    }
}

#[test]
fn a_zero_mutation_retention_is_refused() {
    let built = Server::builder()
        .storage(SqliteStorage::open_in_memory().unwrap())
        .tokens(support::tokens())
        .mutation_retention(Duration::ZERO)
        .build();
    match built {
        Err(error @ BuildError::ZeroMutationRetention) => {
            assert!(error.to_string().contains("above zero"), "{error}");
        }
        other => panic!("expected ZeroMutationRetention, got {other:?}"),
    }
}

/// One prune the server asked for: when (tokio's clock), with which cut-off, and how many went.
type Prune = (Instant, Timestamp, u64);

/// Reports every prune on a channel.
#[derive(Debug)]
struct Observer {
    prunes: mpsc::UnboundedSender<Prune>,
}

impl Hooks for Observer {
    fn after_prune(&self, started: Instant, before: Timestamp, report: &PruneReport) {
        let _ = self.prunes.send((started, before, report.pruned));
    }
}

#[tokio::test(start_paused = true)]
async fn serve_prunes_at_start_and_every_hour_and_stops_with_the_server() {
    let clock = ManualClock::new();
    let sqlite = SqliteStorage::open_with_clock(":memory:", Arc::new(clock.clone())).unwrap();
    // An answer recorded two days before the server starts, and one an hour before.
    let alice = UserId::new("alice");
    clock.set(Timestamp(ManualClock::START.0 - 2 * 86_400_000));
    sqlite
        .push(
            &alice,
            "notes",
            vec![change("old", None, "phone", 1, json!(1))],
        )
        .await
        .unwrap();
    clock.set(Timestamp(ManualClock::START.0 - 3_600_000));
    sqlite
        .push(
            &alice,
            "notes",
            vec![change("new", None, "phone", 2, json!(2))],
        )
        .await
        .unwrap();
    clock.set(ManualClock::START);

    let (prunes_tx, mut prunes) = mpsc::unbounded_channel();
    let server = Server::builder()
        .storage(Hooked {
            inner: sqlite,
            hooks: Observer { prunes: prunes_tx },
        })
        .tokens(support::tokens())
        .clock(Arc::new(clock.clone()))
        .mutation_retention(DAY)
        .build()
        .unwrap();
    let started = Instant::now();
    let mut running = Running::start(server).await;

    let (at, cut_off, pruned) = prunes.recv().await.expect("a prune at start");
    assert_eq!(at, started, "the first prune runs as serving starts");
    assert_eq!(cut_off, Timestamp(ManualClock::START.0 - 86_400_000));
    assert_eq!(pruned, 1, "only the answer older than a day goes");

    clock.advance(Duration::from_secs(2 * 60 * 60));
    let (next_at, cut_off, pruned) = prunes.recv().await.expect("a prune an hour later");
    assert_eq!(next_at - at, MUTATION_PRUNE_INTERVAL);
    assert_eq!(
        cut_off,
        Timestamp(ManualClock::START.0 + 2 * 3_600_000 - 86_400_000)
    );
    assert_eq!(pruned, 0, "the newer answer is 3 hours old, within the day");

    running.shutdown();
    running.serving.await.unwrap().unwrap();
    // `serve` has returned, so its pruning task has ended and dropped the last handle on the
    // storage: the channel closes after at most the prunes that were already under way.
    let mut after_stop = 0;
    while prunes.recv().await.is_some() {
        after_stop += 1;
        assert!(after_stop < 3, "pruning went on after the server stopped");
    }
}
