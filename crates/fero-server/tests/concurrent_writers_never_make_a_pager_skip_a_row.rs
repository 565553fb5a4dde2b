//! Guards the feed's central promise: while many tasks push (creates, updates, deletions,
//! conflicts) a reader pages with its checkpoint, and at the end it holds every row at its latest
//! version. A `sync_id` handed out outside the write transaction, or a page and checkpoint read
//! from two snapshots, would let a row commit behind the reader's checkpoint and be skipped.
//!
//! Random choices come from one seed, printed; rerun with `FERO_TEST_SEED=<seed>`.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use fero::{SeededRandom, SyncCheckpoint};
use fero_server::{Server, SqliteStorage};
use support::{ALICE, Writer, pull};

const WRITERS: u64 = 6;
const PUSHES_PER_WRITER: u64 = 30;
const IDS: u64 = 40;
/// Bounds the reader's loop so a broken `has_more` fails the test instead of hanging it.
const MAX_READER_PULLS: usize = 100_000;

/// What the server holds for one id: `(version, deleted)`.
type State = support::Truth;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_paging_during_concurrent_pushes_ends_with_every_latest_version() {
    let seed = std::env::var("FERO_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_u64);
    println!("FERO_TEST_SEED={seed}");
    let dir = tempfile::tempdir().unwrap();
    // A file in WAL mode: reads run on their own connections, truly beside the writer.
    let storage = SqliteStorage::open(dir.path().join("sync.db")).unwrap();
    let server = Server::builder()
        .storage(storage)
        .tokens(support::tokens())
        .build()
        .unwrap();
    let router = server.router();

    // The latest accepted state per id, from the writers' own answers.
    let truth: Arc<Mutex<State>> = Arc::default();
    let writers_done = Arc::new(AtomicBool::new(false));

    let mut writers = tokio::task::JoinSet::new();
    for writer in 0..WRITERS {
        let (router, truth) = (router.clone(), Arc::clone(&truth));
        let mut random = SeededRandom::new(seed ^ (writer + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        writers.spawn(async move {
            let mut writer = Writer::new(writer);
            for _ in 0..PUSHES_PER_WRITER {
                let changes = writer.changes(&mut random, IDS, 5);
                writer.push(&router, changes, &truth).await;
                tokio::task::yield_now().await;
            }
        });
    }

    let reader = {
        let (router, writers_done) = (router.clone(), Arc::clone(&writers_done));
        tokio::spawn(async move {
            let mut held = State::new();
            let mut checkpoint: Option<SyncCheckpoint> = None;
            let mut pulls = 0;
            loop {
                // Read the flag before the pull: if every writer had finished by then, this pull
                // sees every commit, and an end of feed means the reader is done.
                let done = writers_done.load(Ordering::SeqCst);
                let page = pull(&router, ALICE, "items", checkpoint.as_ref(), 7).await;
                pulls += 1;
                assert!(
                    pulls < MAX_READER_PULLS,
                    "the reader never reached the end of the feed"
                );
                for document in page.items {
                    let previous =
                        held.insert(document.id.clone(), (document.version.0, document.deleted));
                    if let Some((version, _)) = previous {
                        assert!(
                            document.version.0 > version,
                            "{} went back from {version} to {}",
                            document.id,
                            document.version.0
                        );
                    }
                }
                checkpoint = Some(page.checkpoint);
                if !page.has_more {
                    if done {
                        return (held, pulls);
                    }
                    tokio::task::yield_now().await;
                }
            }
        })
    };

    while let Some(joined) = writers.join_next().await {
        joined.unwrap();
    }
    writers_done.store(true, Ordering::SeqCst);
    let (held, pulls) = reader.await.unwrap();
    let truth = truth.lock().unwrap().clone();
    println!("{} ids written, reader made {pulls} pulls", truth.len());
    assert!(!truth.is_empty());
    let mut wrong: Vec<String> = truth
        .iter()
        .filter(|(id, latest)| held.get(*id) != Some(latest))
        .map(|(id, latest)| format!("{id}: latest {latest:?}, reader holds {:?}", held.get(id)))
        .collect();
    wrong.sort();
    assert!(
        wrong.is_empty(),
        "the reader skipped rows (seed {seed}):\n{}",
        wrong.join("\n")
    );
    assert_eq!(held.len(), truth.len(), "the reader holds ids nobody wrote");
}
