//! Two real `fero-server` processes on one PostgreSQL database, spoken to over loopback HTTP:
//! a change pushed through one process reaches a change stream held on the other, and clients
//! spread over both (pushing, conflicting, pulling) converge on the same rows, which both
//! processes' digests confirm.
//!
//! Random choices come from one seed, printed; rerun with `FERO_TEST_SEED=<seed>`.

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use fero::{RandomSource, SeededRandom, SyncCheckpoint};
use fero_protocol::{
    ChangeNotice, ChangeOutcome, Digest, DigestResponse, PullResponse, PushResponse,
};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use support::postgres::TestDatabase;
use support::{ALICE, BOB, IO_DEADLINE, SseReader, body_bytes, change, deletion, request, send};
use tokio::time::timeout;

const BINARY: &str = env!("CARGO_BIN_EXE_fero-server");

/// A `fero-server` child process; killed if the test ends without stopping it.
struct Process {
    child: Child,
    addr: SocketAddr,
}

impl Process {
    async fn start(url: &str) -> Process {
        let mut child = Command::new(BINARY)
            .args(["--db", url, "--listen", "127.0.0.1:0", "--pool-size", "4"])
            .env("FERO_TOKENS", format!("{ALICE}=alice,{BOB}=bob"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let line = timeout(
            IO_DEADLINE,
            tokio::task::spawn_blocking(move || {
                let mut line = String::new();
                BufReader::new(stdout).read_line(&mut line).map(|_| line)
            }),
        )
        .await
        .expect("the server did not start in time")
        .unwrap()
        .unwrap();
        let addr = line
            .trim()
            .strip_prefix("fero-server listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .parse()
            .unwrap();
        Process { child, addr }
    }

    /// Sends SIGTERM and waits for a clean exit.
    async fn stop(mut self) {
        let killed = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let started = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                started.elapsed() < IO_DEADLINE,
                "the server did not stop on SIGTERM"
            );
            // Polling another process's exit: real cross-process I/O, bounded by the deadline.
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(status.success(), "the server exited with {status}");
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One JSON request to a process; asserts 200 and parses the answer.
async fn call<T: DeserializeOwned>(
    addr: SocketAddr,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> T {
    let response = send(addr, request(method, addr, path, token, body)).await;
    let status = response.status();
    let bytes = body_bytes(response).await;
    assert_eq!(status, StatusCode::OK, "{path}: {bytes:?}");
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_through_one_process_reaches_a_change_stream_on_the_other() {
    let Some(database) = TestDatabase::create("live").await else {
        return;
    };
    let first = Process::start(&database.url).await;
    let second = Process::start(&database.url).await;

    let stream = |token| {
        send(
            second.addr,
            request(Method::GET, second.addr, "/v1/changes", token, None),
        )
    };
    let alices = stream(ALICE).await;
    let bobs = stream(BOB).await;
    assert_eq!(alices.status(), StatusCode::OK);
    // Both streams are subscribed once their response heads arrived: the pushes come later.
    let (mut alices, mut bobs) = (SseReader::new(alices), SseReader::new(bobs));

    let pushed: PushResponse = call(
        first.addr,
        Method::POST,
        "/v1/collections/contacts/push",
        ALICE,
        Some(json!({ "changes": [change("ada", None, "laptop", 1, json!({ "name": "Ada" }))] })),
    )
    .await;
    let ChangeOutcome::Accepted { sync_id, .. } = pushed.results[0].outcome else {
        panic!("the push was not accepted: {pushed:?}");
    };
    let event = timeout(IO_DEADLINE, alices.next_event())
        .await
        .expect("no change event on the other process in time")
        .expect("the stream ended");
    assert_eq!(event.event, "change");
    let notice: ChangeNotice = serde_json::from_str(&event.data).unwrap();
    assert_eq!(
        notice,
        ChangeNotice {
            collection: "contacts".into(),
            sync_id
        }
    );

    // Bob's stream on the second process heard nothing of alice's push: its first event is
    // his own later push through the first process.
    let _: PushResponse = call(
        first.addr,
        Method::POST,
        "/v1/collections/notes/push",
        BOB,
        Some(json!({ "changes": [change("memo", None, "phone", 1, json!("hi"))] })),
    )
    .await;
    let event = timeout(IO_DEADLINE, bobs.next_event())
        .await
        .expect("no change event in time")
        .expect("the stream ended");
    let notice: ChangeNotice = serde_json::from_str(&event.data).unwrap();
    assert_eq!(
        notice.collection, "notes",
        "bob never hears of alice's rows"
    );

    // Shutdown ends the open streams and exits cleanly.
    first.stop().await;
    second.stop().await;
    assert!(timeout(IO_DEADLINE, alices.ends()).await.is_ok());
}

const CLIENTS: u64 = 4;
const EDITS_PER_CLIENT: u64 = 25;
const IDS: u64 = 12;

/// What a client holds per id: `(version, deleted, data)`.
type Held = HashMap<String, (u64, bool, Value)>;

/// A device talking to one process: it edits, pushes at once, takes the server's row on a
/// conflict, and pulls from its checkpoint.
struct Device {
    addr: SocketAddr,
    name: String,
    seq: u64,
    held: Held,
    checkpoint: Option<SyncCheckpoint>,
}

impl Device {
    async fn pull_to_end(&mut self) {
        loop {
            let page: PullResponse = call(
                self.addr,
                Method::POST,
                "/v1/collections/notes/pull",
                ALICE,
                Some(json!({ "checkpoint": self.checkpoint, "limit": 4 })),
            )
            .await;
            for document in page.items {
                let newer = self
                    .held
                    .get(&document.id)
                    .is_none_or(|(version, ..)| document.version.0 > *version);
                if newer {
                    self.held.insert(
                        document.id,
                        (document.version.0, document.deleted, document.data),
                    );
                }
            }
            self.checkpoint = Some(page.checkpoint);
            if !page.has_more {
                return;
            }
        }
    }

    async fn edit(&mut self, random: &mut SeededRandom) {
        let id = format!("note-{}", random.next_u64() % IDS);
        self.seq += 1;
        let current = self.held.get(&id).cloned();
        let delete = matches!(current, Some((_, false, _))) && random.next_u64() % 6 == 0;
        let data = json!({ "by": self.name, "seq": self.seq });
        let pushed = match &current {
            Some((version, ..)) if delete => deletion(&id, *version, &self.name, self.seq),
            current => change(
                &id,
                current.as_ref().map(|c| c.0),
                &self.name,
                self.seq,
                data.clone(),
            ),
        };
        let response: PushResponse = call(
            self.addr,
            Method::POST,
            "/v1/collections/notes/push",
            ALICE,
            Some(json!({ "changes": [pushed] })),
        )
        .await;
        match &response.results[0].outcome {
            ChangeOutcome::Accepted { version, .. } => {
                let data = if delete {
                    current.map_or(Value::Null, |c| c.2)
                } else {
                    data
                };
                self.held.insert(id, (version.0, delete, data));
            }
            ChangeOutcome::Conflict { server: Some(row) } => {
                self.held
                    .insert(id, (row.version.0, row.deleted, row.data.clone()));
            }
            ChangeOutcome::Conflict { server: None } => {
                self.held.remove(&id);
            }
            other => panic!("unexpected outcome {other:?}"),
        }
    }
}

fn digest_of(held: &Held) -> Digest {
    let mut digest = Digest::default();
    for (id, (version, deleted, _)) in held {
        if !deleted {
            digest.add(id, *version);
        }
    }
    digest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_spread_over_two_processes_converge() {
    let Some(database) = TestDatabase::create("converge").await else {
        return;
    };
    let seed = std::env::var("FERO_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x2_9e0c_e55e_u64);
    println!("FERO_TEST_SEED={seed}");
    let processes = [
        Process::start(&database.url).await,
        Process::start(&database.url).await,
    ];

    let mut devices = tokio::task::JoinSet::new();
    for client in 0..CLIENTS {
        let addr = processes[usize::try_from(client % 2).unwrap()].addr;
        let mut random = SeededRandom::new(seed ^ (client + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        devices.spawn(async move {
            let mut device = Device {
                addr,
                name: format!("device-{client}"),
                seq: 0,
                held: Held::new(),
                checkpoint: None,
            };
            for _ in 0..EDITS_PER_CLIENT {
                device.edit(&mut random).await;
                if random.next_u64() % 3 == 0 {
                    device.pull_to_end().await;
                }
            }
            device
        });
    }
    let mut finished = Vec::new();
    while let Some(device) = devices.join_next().await {
        finished.push(device.unwrap());
    }
    // Every edit is committed: a last pull brings each device up to date.
    for device in &mut finished {
        device.pull_to_end().await;
    }

    let mut everything = Device {
        addr: processes[1].addr,
        name: "auditor".into(),
        seq: 0,
        held: Held::new(),
        checkpoint: None,
    };
    everything.pull_to_end().await;
    assert!(!everything.held.is_empty());
    for device in &finished {
        assert_eq!(
            device.held, everything.held,
            "{} (on {}) did not converge (seed {seed})",
            device.name, device.addr
        );
    }
    let expected = digest_of(&everything.held);
    for process in &processes {
        let digest: DigestResponse = call(
            process.addr,
            Method::GET,
            "/v1/collections/notes/digest",
            ALICE,
            None,
        )
        .await;
        assert_eq!(
            (digest.count, digest.digest.as_str()),
            (expected.count(), expected.hex().as_str()),
            "the digest of the process on {} disagrees",
            process.addr
        );
    }
    let [first, second] = processes;
    first.stop().await;
    second.stop().await;
}
