//! W4, W4-raw, W5 and W6: the reference server (`fero-server`, SQLite) in a child process of the
//! bench program, on loopback HTTP, and a client with `fero-sqlite`'s store syncing through
//! `fero-http`.
//!
//! The server runs in its own process so that the peak RSS a line reports is the client's alone
//! (the goal "memory flat" is about the client). It seeds its N rows page by page before it
//! starts listening (seeding is not measured), prints `listening <url>`, and stops when its
//! standard input closes, so it never outlives the bench process.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use fero::{FeatureSyncConfig, FeroSync, PageGate, SyncId, Version, async_trait};
use fero_http::HttpRemote;
use fero_protocol::{
    DigestResponse, PullRequest, PullResponse, PushRequest, PushResponse, Remote, RemoteError,
};
use fero_server::{PostgresStorage, SeedRow, Server, SqliteStorage, Storage, Tokens, UserId};
use fero_sqlite::SqliteStore;

use crate::data::{BenchItem, item_id};
use crate::error::BenchError;
use crate::workload::Sample;

/// The first argument that makes the bench program run as the reference server.
pub const SERVE_ROLE: &str = "__serve";
/// The first argument that makes the bench program run as W5's client.
pub const CLIENT_ROLE: &str = "__client";

/// The collection every end-to-end workload syncs.
const COLLECTION: &str = "items";
/// The bearer token of the one user, on loopback only.
const TOKEN: &str = "bench-token";
const USER: &str = "bench";

/// Set to a `postgres://` URL, W4-W6 run the reference server on that PostgreSQL database instead
/// of a fresh SQLite file. Each run seeds a user of its own (`bench-<pid>-<time>`), so runs never
/// see each other's rows; the rows stay in the database afterwards: use a database for benchmarks
/// only.
pub const SERVER_DB_VAR: &str = "FERO_BENCH_SERVER_DB";

/// Where the server of a run keeps its rows: the PostgreSQL URL of [`SERVER_DB_VAR`], or
/// `sqlite_file`.
fn server_db(sqlite_file: PathBuf) -> PathBuf {
    match std::env::var(SERVER_DB_VAR) {
        Ok(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            PathBuf::from(url)
        }
        _ => sqlite_file,
    }
}
/// Rows per seeding transaction on the server.
const SEED_PAGE: usize = 1_000;
/// W6's measured rounds; the median is the reported latency.
const W6_ROUNDS: usize = 25;

/// What the server child does: seed `n` items into `db`, then serve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServeOptions {
    /// The server's SQLite file (created), or a `postgres://` URL (see [`SERVER_DB_VAR`]).
    pub db: PathBuf,
    /// Items to seed.
    pub n: u64,
}

/// What W5's client child does: initial sync into `db` from the server at `url`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientOptions {
    /// The server's base URL.
    pub url: String,
    /// The client's SQLite file (resumed when it exists).
    pub db: PathBuf,
    /// Page size.
    pub batch: usize,
}

/// The bench program's contents of a seeded row: name, email and body of item `index`.
fn seed_row(index: u64) -> SeedRow {
    let item = BenchItem::generate(index, Version(1), SyncId(index));
    let data =
        serde_json::json!({ "name": item.name(), "email": item.email(), "body": item.body() });
    SeedRow::new(item.id(), data)
}

/// The runtime of W4-W6's client and of their server child: one async worker each (SQLite work
/// runs on tokio's blocking threads beside it). The two processes share the machine's 2 cores;
/// with two workers each, W4 at 1M was slower and noisier (medians of 5 alternating runs:
/// 3.25 s with two, 2.95 s with one).
fn multi_thread_runtime(workload: &'static str) -> Result<tokio::runtime::Runtime, BenchError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|source| BenchError::Runtime { workload, source })
}

fn io_error(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BenchError {
    let what = what.into();
    move |source| BenchError::Io { what, source }
}

/// Runs the reference server (the bench program's `__serve` role): seeds, prints
/// `listening <url>` on stdout, and serves until stdin closes.
///
/// # Errors
/// [`BenchError::Server`] when the storage cannot be opened or seeded, [`BenchError::Io`] when it
/// cannot listen or write its address.
pub fn serve(options: &ServeOptions) -> Result<(), BenchError> {
    const W: &str = "server";
    let runtime = multi_thread_runtime(W)?;
    runtime.block_on(async {
        let db = options.db.to_string_lossy().into_owned();
        let postgres = db.starts_with("postgres://") || db.starts_with("postgresql://");
        let storage: std::sync::Arc<dyn Storage> = if postgres {
            std::sync::Arc::new(PostgresStorage::connect(&db).await.map_err(|source| {
                BenchError::Server {
                    source: source.into(),
                }
            })?)
        } else {
            std::sync::Arc::new(SqliteStorage::open(&options.db).map_err(|source| {
                BenchError::Server {
                    source: source.into(),
                }
            })?)
        };
        // On a shared PostgreSQL database each run is a user of its own: a fresh collection.
        let user = if postgres {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            format!("{USER}-{}-{nanos}", std::process::id())
        } else {
            USER.to_owned()
        };
        let tokens = Tokens::parse_list(&format!("{TOKEN}={user}")).map_err(|source| {
            BenchError::Server {
                source: source.into(),
            }
        })?;
        let server = Server::builder()
            .storage_arc(storage)
            .tokens(tokens)
            .build()
            .map_err(|source| BenchError::Server {
                source: source.into(),
            })?;
        server
            .seed(
                &UserId::new(user.as_str()),
                COLLECTION,
                (1..=options.n).map(seed_row),
                SEED_PAGE,
            )
            .await
            .map_err(|source| BenchError::Server {
                source: source.into(),
            })?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(io_error("bind the server to a loopback port"))?;
        let address = listener
            .local_addr()
            .map_err(io_error("read the server's address"))?;
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "listening http://{address}")
                .and_then(|()| out.flush())
                .map_err(io_error("print the server's address"))?;
        }
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            // EOF on stdin: the bench process closed the pipe or died.
            let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
            let _ = stop.send(());
        });
        server
            .serve(listener, async move {
                let _ = stopped.await;
            })
            .await
            .map_err(|source| BenchError::Server {
                source: source.into(),
            })
    })
}

/// The reference server in a child process; stopped (stdin closed, then killed) on drop.
struct ServerProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    url: String,
}

impl ServerProcess {
    fn start(program: &Path, db: &Path, n: u64) -> Result<ServerProcess, BenchError> {
        let mut child = Command::new(program)
            .arg(SERVE_ROLE)
            .arg("--db")
            .arg(db)
            .args(["--n", &n.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(io_error(format!(
                "start the reference server ({} {SERVE_ROLE})",
                program.display()
            )))?;
        let stdin = child.stdin.take();
        let Some(stdout) = child.stdout.take() else {
            let _ = child.kill();
            return Err(BenchError::Child {
                what: "reference server".into(),
                reason: "its stdout was not captured".into(),
            });
        };
        // The server prints its URL once seeded (seconds for a million rows); a server that
        // fails closes stdout, which ends this loop.
        let mut url = None;
        for line in BufReader::new(stdout).lines() {
            let line = line.map_err(io_error("read the reference server's output"))?;
            if let Some(found) = line.strip_prefix("listening ") {
                url = Some(found.to_owned());
                break;
            }
        }
        let Some(url) = url else {
            let status = child
                .wait()
                .map_err(io_error("wait for the reference server"))?;
            return Err(BenchError::Child {
                what: "reference server".into(),
                reason: format!("it exited ({status}) before listening; see its stderr above"),
            });
        };
        Ok(ServerProcess { child, stdin, url })
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // Closing stdin asks for a graceful stop; the kill makes sure, and wait reaps it.
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn temp_dir(workload: &'static str) -> Result<tempfile::TempDir, BenchError> {
    tempfile::Builder::new()
        .prefix("fero-bench-")
        .tempdir()
        .map_err(|source| BenchError::Io {
            what: format!("create a temporary directory for {workload}"),
            source,
        })
}

fn remote(url: &str) -> Result<HttpRemote, BenchError> {
    // Loopback: compression would only cost CPU on both ends (the client asks for identity).
    HttpRemote::builder(url, TOKEN)
        .compression(false)
        .build()
        .map_err(|source| BenchError::Remote { source })
}

/// W4: initial sync of `n` items from the reference server into a fresh SQLite file.
pub(crate) fn end_to_end(program: &Path, n: u64, batch: usize) -> Result<Sample, BenchError> {
    const W: &str = "W4";
    let dir = temp_dir(W)?;
    let server = ServerProcess::start(program, &server_db(dir.path().join("server.db")), n)?;
    let runtime = multi_thread_runtime(W)?;
    runtime.block_on(async {
        let store = SqliteStore::open(dir.path().join("client.db"))
            .await
            .map_err(BenchError::store(W))?;
        let handler = store
            .sync_handler(COLLECTION, remote(&server.url)?)
            .map_err(BenchError::store(W))?;
        let started = Instant::now();
        let sync = FeroSync::builder()
            .metadata_repo(store.metadata_repo())
            .initial_sync(
                COLLECTION,
                handler,
                FeatureSyncConfig::new().batch_size(batch),
            )
            .build()
            .map_err(BenchError::build(W))?;
        let report = sync.run().await.map_err(BenchError::sync(W))?;
        let elapsed = started.elapsed();
        sync.dispose().await;
        BenchError::verify(W, n, "items pulled", n, report.totals().pulled)?;
        let stored = store
            .count(COLLECTION)
            .await
            .map_err(BenchError::store(W))?;
        BenchError::verify(W, n, "rows in the client database", n, stored)?;
        Ok(Sample::new(elapsed, stored))
    })
}

/// The statement W4-raw inserts with: the columns `fero-sqlite`'s page upsert writes, as a plain
/// insert (the floor has no conflicts to handle).
const RAW_INSERT: &str = "INSERT INTO fero_documents (collection, id, data, version, deleted,
        locally_modified, base_version, base_deleted, sync_id, updated_at)
    VALUES (?1, ?2, ?3, ?4, 0, 0, ?4, 0, ?5, ?6)";

/// W4-raw: the same rows into the same schema (a database `fero-sqlite` created), one prepared
/// statement, one transaction per page, no HTTP, no JSON parsing.
pub(crate) fn raw_inserts(n: u64, batch: usize) -> Result<Sample, BenchError> {
    const W: &str = "W4-raw";
    let dir = temp_dir(W)?;
    let path = dir.path().join("raw.db");
    let runtime = multi_thread_runtime(W)?;
    // fero-sqlite creates the file, its WAL mode and its schema; then it is closed.
    runtime.block_on(async {
        SqliteStore::open(&path)
            .await
            .map(drop)
            .map_err(BenchError::store(W))
    })?;
    let sqlite = |what: &'static str| move |source| BenchError::Sqlite { what, source };
    let mut conn = rusqlite::Connection::open(&path).map_err(sqlite("open the database"))?;
    // The connection settings fero-sqlite uses (WAL is a property of the file already).
    conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA temp_store = MEMORY;")
        .map_err(sqlite("configure the connection"))?;
    let started = Instant::now();
    let mut first = 1;
    while first <= n {
        let last = (first + batch as u64 - 1).min(n);
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(sqlite("begin a page transaction"))?;
        {
            let mut insert = tx
                .prepare_cached(RAW_INSERT)
                .map_err(sqlite("prepare the insert"))?;
            for index in first..=last {
                let item = BenchItem::generate(index, Version(1), SyncId(index));
                let data = serde_json::json!({
                    "name": item.name(), "email": item.email(), "body": item.body()
                })
                .to_string();
                insert
                    .execute(rusqlite::params![
                        COLLECTION,
                        item.id(),
                        data,
                        item.version.0,
                        item.sync_id.0,
                        item.updated_at.as_millis(),
                    ])
                    .map_err(sqlite("insert a row"))?;
            }
        }
        tx.commit().map_err(sqlite("commit a page"))?;
        first = last + 1;
    }
    let elapsed = started.elapsed();
    let stored: u64 = conn
        .query_row(
            "SELECT count(*) FROM fero_documents WHERE collection = ?1",
            [COLLECTION],
            |row| row.get(0),
        )
        .map_err(sqlite("count the rows"))?;
    BenchError::verify(W, n, "rows in the database", n, stored)?;
    Ok(Sample::new(elapsed, stored))
}

/// A [`Remote`] that reports every page it receives on stdout (`fetched <items> <sync_id>`)
/// before handing it to the engine: what W5's parent counts, including pages received but not
/// yet applied when the process is killed.
struct ReportingRemote(HttpRemote);

#[async_trait]
impl Remote for ReportingRemote {
    async fn pull(
        &self,
        collection: &str,
        request: &PullRequest,
    ) -> Result<PullResponse, RemoteError> {
        report(self.0.pull(collection, request).await?)
    }

    async fn pull_ahead(
        &self,
        collection: &str,
        request: &PullRequest,
        gate: &PageGate,
    ) -> Result<PullResponse, RemoteError> {
        // HttpRemote reads this page only once the apply before it has ended.
        report(self.0.pull_ahead(collection, request, gate).await?)
    }

    async fn push(
        &self,
        collection: &str,
        request: &PushRequest,
    ) -> Result<PushResponse, RemoteError> {
        self.0.push(collection, request).await
    }

    async fn digest(&self, collection: &str) -> Result<DigestResponse, RemoteError> {
        self.0.digest(collection).await
    }
}

/// Prints `fetched <items> <sync_id>` for a received page.
fn report(page: PullResponse) -> Result<PullResponse, RemoteError> {
    {
        let mut out = std::io::stdout().lock();
        // A lost line would only undercount; the parent checks the final row count anyway.
        let _ = writeln!(
            out,
            "fetched {} {}",
            page.items.len(),
            page.checkpoint.last_sync_id
        )
        .and_then(|()| out.flush());
    }
    Ok(page)
}

/// Runs W5's client (the bench program's `__client` role): initial sync into `db`, resuming
/// from its checkpoint when the file exists; prints `fetched …` per page and `done <pulled>`.
///
/// # Errors
/// A store, remote or sync failure.
pub fn client(options: &ClientOptions) -> Result<(), BenchError> {
    const W: &str = "W5 client";
    let runtime = multi_thread_runtime(W)?;
    runtime.block_on(async {
        let store = SqliteStore::open(&options.db)
            .await
            .map_err(BenchError::store(W))?;
        let handler = store
            .sync_handler(COLLECTION, ReportingRemote(remote(&options.url)?))
            .map_err(BenchError::store(W))?;
        let sync = FeroSync::builder()
            .metadata_repo(store.metadata_repo())
            .initial_sync(
                COLLECTION,
                handler,
                FeatureSyncConfig::new().batch_size(options.batch),
            )
            .build()
            .map_err(BenchError::build(W))?;
        let report = sync.run().await.map_err(BenchError::sync(W))?;
        sync.dispose().await;
        println!("done {}", report.totals().pulled);
        Ok(())
    })
}

/// W5's client in a child process, and the items it reported fetching.
struct ClientRun {
    child: Child,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
    fetched: u64,
    done: bool,
}

impl ClientRun {
    fn start(program: &Path, url: &str, db: &Path, batch: usize) -> Result<ClientRun, BenchError> {
        let mut child = Command::new(program)
            .arg(CLIENT_ROLE)
            .args(["--url", url])
            .arg("--db")
            .arg(db)
            .args(["--batch", &batch.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(io_error("start the W5 client"))?;
        let Some(stdout) = child.stdout.take() else {
            let _ = child.kill();
            return Err(BenchError::Child {
                what: "W5 client".into(),
                reason: "its stdout was not captured".into(),
            });
        };
        Ok(ClientRun {
            child,
            lines: BufReader::new(stdout).lines(),
            fetched: 0,
            done: false,
        })
    }

    /// Reads the client's output until it has reported `until` fetched items (or ends).
    fn read_until(&mut self, until: u64) -> Result<(), BenchError> {
        while self.fetched < until {
            let Some(line) = self.lines.next() else {
                return Ok(());
            };
            let line = line.map_err(io_error("read the W5 client's output"))?;
            if let Some(rest) = line.strip_prefix("fetched ") {
                let items = rest
                    .split_whitespace()
                    .next()
                    .and_then(|count| count.parse::<u64>().ok())
                    .ok_or_else(|| BenchError::Child {
                        what: "W5 client".into(),
                        reason: format!("unreadable progress line {line:?}"),
                    })?;
                self.fetched += items;
            } else if line.starts_with("done ") {
                self.done = true;
            }
        }
        Ok(())
    }

    /// SIGKILLs the client, then reads what it printed before it died.
    fn kill(mut self) -> Result<u64, BenchError> {
        self.child
            .kill()
            .map_err(io_error("SIGKILL the W5 client"))?;
        self.read_until(u64::MAX)?;
        let _ = self.child.wait();
        Ok(self.fetched)
    }

    /// Waits for the client to finish on its own; it must succeed.
    fn finish(mut self) -> Result<u64, BenchError> {
        self.read_until(u64::MAX)?;
        let status = self
            .child
            .wait()
            .map_err(io_error("wait for the W5 client"))?;
        if !status.success() || !self.done {
            return Err(BenchError::Child {
                what: "W5 client".into(),
                reason: format!(
                    "the restarted client did not finish its sync ({status}); see its stderr above"
                ),
            });
        }
        Ok(self.fetched)
    }
}

/// W5: W4's client in a child process, SIGKILLed once it has received half the items, then
/// restarted on the same database; reports the items received twice.
pub(crate) fn resume(program: &Path, n: u64, batch: usize) -> Result<Sample, BenchError> {
    const W: &str = "W5";
    let dir = temp_dir(W)?;
    let server = ServerProcess::start(program, &server_db(dir.path().join("server.db")), n)?;
    let db = dir.path().join("client.db");
    let started = Instant::now();
    let mut first = ClientRun::start(program, &server.url, &db, batch)?;
    first.read_until(n / 2)?;
    if first.done {
        return Err(BenchError::Child {
            what: "W5 client".into(),
            reason: format!(
                "it finished all {n} items before it could be killed half way; use a larger n"
            ),
        });
    }
    let fetched_first = first.kill()?;
    let fetched_second = ClientRun::start(program, &server.url, &db, batch)?.finish()?;
    let elapsed = started.elapsed();
    let runtime = multi_thread_runtime(W)?;
    let stored = runtime.block_on(async {
        let store = SqliteStore::open(&db).await.map_err(BenchError::store(W))?;
        store.count(COLLECTION).await.map_err(BenchError::store(W))
    })?;
    BenchError::verify(W, n, "rows in the client database", n, stored)?;
    let mut sample = Sample::new(elapsed, stored);
    // Every item was fetched at least once, so what goes beyond n was fetched twice.
    sample.fetched_twice = Some((fetched_first + fetched_second).saturating_sub(n));
    Ok(sample)
}

/// W6: a client with `n` items synced makes one local edit, then runs one background round
/// (pull, then push); the median of [`W6_ROUNDS`] rounds is the latency.
pub(crate) fn round_latency(program: &Path, n: u64, batch: usize) -> Result<Sample, BenchError> {
    const W: &str = "W6";
    let dir = temp_dir(W)?;
    let server = ServerProcess::start(program, &server_db(dir.path().join("server.db")), n)?;
    let runtime = multi_thread_runtime(W)?;
    runtime.block_on(async {
        let store = SqliteStore::open(dir.path().join("client.db"))
            .await
            .map_err(BenchError::store(W))?;
        let handler = store
            .sync_handler(COLLECTION, remote(&server.url)?)
            .map_err(BenchError::store(W))?;
        let config = FeatureSyncConfig::new().batch_size(batch);
        let sync = FeroSync::builder()
            .metadata_repo(store.metadata_repo())
            .initial_sync(COLLECTION, handler.clone(), config.clone())
            .background_sync(COLLECTION, handler, config)
            .build()
            .map_err(BenchError::build(W))?;
        // Not measured: the initial sync that leaves n items synced.
        sync.run().await.map_err(BenchError::sync(W))?;
        let synced = store
            .count(COLLECTION)
            .await
            .map_err(BenchError::store(W))?;
        BenchError::verify(W, n, "rows synced before the rounds", n, synced)?;
        let mut rounds = Vec::with_capacity(W6_ROUNDS);
        for round in 0..W6_ROUNDS as u64 {
            // Spread the edits over the data set, so no round finds its row in a hot cache.
            let index = 1 + (round * 7_919) % n;
            store
                .put(
                    COLLECTION,
                    &item_id(index),
                    serde_json::json!({ "name": "Edited Name", "email": "edited@example.com",
                        "body": format!("edit {round}") }),
                )
                .await
                .map_err(BenchError::store(W))?;
            let started = Instant::now();
            let report = sync.sync_now().await.map_err(BenchError::sync(W))?;
            rounds.push(started.elapsed());
            BenchError::verify(W, n, "edits pushed in a round", 1, report.totals().pushed)?;
        }
        sync.dispose().await;
        let pending = store
            .locally_modified(COLLECTION)
            .await
            .map_err(BenchError::store(W))?
            .len() as u64;
        BenchError::verify(W, n, "edits still pending", 0, pending)?;
        let total: Duration = rounds.iter().sum();
        rounds.sort();
        let mut sample = Sample::new(total, synced);
        sample.rate_items = W6_ROUNDS as u64;
        sample.latency = Some(rounds[rounds.len() / 2]);
        Ok(sample)
    })
}
