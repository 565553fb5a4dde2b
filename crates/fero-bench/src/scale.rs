//! W8 and W9: scale figures of one real `fero-server` process (the release binary, started as a
//! child process so that its RSS and CPU time can be read from `/proc/<pid>`), on loopback.
//!
//! - **W8, change streams**: the server holds `streams` open `GET /v1/changes` streams (opened by
//!   one task of this program through `fero-http`'s [`HttpRemote::changes`], a `SelectAll` of
//!   them); the RSS per stream is (RSS with the streams − RSS idle) / streams. Then `listeners`
//!   of those streams belong to one user: each of `pushes` pushes (one change each, one after the
//!   other) is timed from just before the push is sent until each listener has its notice; the
//!   figures are p50/p99 over every (push, listener) delay. The other streams stay open, split
//!   over ten other users, so the server fans out among all of them.
//! - **W9, devices**: `devices` [`HttpRemote`]s, spread over `users` users, each loop for
//!   `seconds`: push `batch` new rows, then pull its user's feed from its checkpoint. Reported:
//!   changes accepted per second, push and pull latency p50/p99, and the server's CPU share from
//!   `/proc/<pid>/stat` (utime + stime over the run), beside the load generator's own.
//!
//! Both raise this process's soft `RLIMIT_NOFILE` to its hard limit before starting the server,
//! which inherits it: W8 needs about `streams` descriptors in each of the two processes, plus a
//! few dozen.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fero::SyncCheckpoint;
use fero_http::{ChangeStream, HttpRemote, StreamEvent};
use fero_protocol::{Change, ChangeOutcome, MutationId, PullRequest, PushRequest, Remote};
use futures::StreamExt;
use futures::stream::SelectAll;
use serde::Serialize;
use tokio::sync::mpsc;

/// The environment variable naming the `fero-server` binary to start (default: the
/// `fero-server` next to this program, or one directory up, as cargo lays out tests).
pub const SERVER_BIN_VAR: &str = "FERO_SERVER_BIN";

/// The collection W8 and W9 write.
const COLLECTION: &str = "items";
/// Streams added to the open set at a time, each batch connected before the next: a burst of
/// 10,000 connects at once would overflow the listen backlog and measure SYN retries.
const OPEN_BATCH: usize = 250;
/// How long W8 waits for streams to connect, or for a notice to reach every listener.
const WAIT: Duration = Duration::from_secs(60);
/// Users other than the listeners' one that hold W8's remaining streams.
const OTHER_USERS: usize = 10;

/// Why a scale workload could not be measured.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScaleError {
    /// The server binary is not where it was looked for.
    #[error(
        "{workload}: no fero-server binary at {}; build it (`cargo build --release -p \
         fero-server`) or set {SERVER_BIN_VAR} to its path", path.display()
    )]
    NoServer {
        /// The workload.
        workload: &'static str,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// Starting, reading or stopping the server process failed.
    #[error("{workload}: the fero-server process: {what}: {source}")]
    Process {
        /// The workload.
        workload: &'static str,
        /// What was being done.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A request to the server failed.
    #[error("{workload}: {what} failed: {source}")]
    Remote {
        /// The workload.
        workload: &'static str,
        /// The call.
        what: String,
        /// Why.
        #[source]
        source: fero_protocol::RemoteError,
    },
    /// The client could not be built.
    #[error("{workload}: building the HTTP client failed: {source}")]
    Build {
        /// The workload.
        workload: &'static str,
        /// Why.
        #[source]
        source: fero_http::BuildError,
    },
    /// The fresh PostgreSQL database could not be created or dropped.
    #[error("{workload}: PostgreSQL at {url}: {what}: {source}")]
    Postgres {
        /// The workload.
        workload: &'static str,
        /// The administrative URL.
        url: String,
        /// What was being done.
        what: String,
        /// Why.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The run did not do the work it measures, so no figure is reported.
    #[error("{workload}: {what}; no figure is reported")]
    Verify {
        /// The workload.
        workload: &'static str,
        /// What went wrong.
        what: String,
    },
}

/// Where the server keeps its rows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScaleDb {
    /// A fresh SQLite file in a temporary directory.
    Sqlite,
    /// A fresh database created through this administrative URL (e.g.
    /// `postgres://postgres@127.0.0.1:5432/test`) and dropped after the run.
    Postgres(String),
}

impl ScaleDb {
    /// `"sqlite"` or `"postgres"`.
    pub fn name(&self) -> &'static str {
        match self {
            ScaleDb::Sqlite => "sqlite",
            ScaleDb::Postgres(_) => "postgres",
        }
    }
}

/// W8's sizes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct W8Options {
    /// Change streams held open.
    pub streams: usize,
    /// Of those, the streams of the one user that is pushed to (at most `streams`).
    pub listeners: usize,
    /// Pushes timed.
    pub pushes: usize,
    /// The server binary (see [`server_bin`]).
    pub server_bin: PathBuf,
}

/// W8's figures, one JSON line.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct W8Line {
    /// `"W8"`.
    pub workload: &'static str,
    /// Streams held open.
    pub streams: usize,
    /// Listeners of the pushed user.
    pub listeners: usize,
    /// Pushes timed.
    pub pushes: usize,
    /// The server's RSS before any stream, in MiB.
    pub server_rss_idle_mb: f64,
    /// The server's RSS with every stream open, in MiB.
    pub server_rss_streams_mb: f64,
    /// (RSS with the streams − RSS idle) / streams, in KiB.
    pub rss_per_stream_kb: f64,
    /// Seconds to open every stream (in batches of 250).
    pub open_seconds: f64,
    /// Notices received by listeners, over all pushes (`listeners × pushes` when none is lost).
    pub notices: usize,
    /// Median delay from push sent to notice received, in milliseconds.
    pub notice_p50_ms: f64,
    /// 99th percentile of that delay, in milliseconds.
    pub notice_p99_ms: f64,
    /// The largest delay, in milliseconds.
    pub notice_max_ms: f64,
    /// The soft file-descriptor limit this program and the server ran with.
    pub nofile_limit: u64,
    /// Descriptors the server held with every stream open (entries of `/proc/<pid>/fd`).
    pub server_fds: usize,
}

/// W9's sizes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct W9Options {
    /// Concurrent devices.
    pub devices: usize,
    /// Users the devices are spread over (device `d` belongs to user `d % users`).
    pub users: usize,
    /// Changes per push.
    pub batch: usize,
    /// How long every device pushes and pulls.
    pub duration: Duration,
    /// Where the server keeps its rows.
    pub db: ScaleDb,
    /// The server's `--pool-size` on PostgreSQL (`None`: its default).
    pub pool_size: Option<usize>,
    /// The server binary (see [`server_bin`]).
    pub server_bin: PathBuf,
}

/// W9's figures, one JSON line.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct W9Line {
    /// `"W9"`.
    pub workload: &'static str,
    /// `"sqlite"` or `"postgres"`.
    pub db: &'static str,
    /// The server's PostgreSQL pool size when given (`None`: its default, 8).
    pub pool_size: Option<usize>,
    /// Concurrent devices.
    pub devices: usize,
    /// Users.
    pub users: usize,
    /// Changes per push.
    pub batch: usize,
    /// Measured seconds.
    pub seconds: f64,
    /// Pushes answered.
    pub pushes: u64,
    /// Changes the server accepted.
    pub changes_accepted: u64,
    /// Changes accepted per second.
    pub changes_per_s: f64,
    /// Median push latency, in milliseconds.
    pub push_p50_ms: f64,
    /// 99th percentile push latency, in milliseconds.
    pub push_p99_ms: f64,
    /// Pulls answered.
    pub pulls: u64,
    /// Rows pulled.
    pub rows_pulled: u64,
    /// Median pull latency, in milliseconds.
    pub pull_p50_ms: f64,
    /// 99th percentile pull latency, in milliseconds.
    pub pull_p99_ms: f64,
    /// The server's CPU time over the run divided by the run's wall time (1.0 = one core busy).
    pub server_cpu_cores: f64,
    /// The same for this load-generating process.
    pub loadgen_cpu_cores: f64,
    /// The server's RSS at the end, in MiB.
    pub server_rss_mb: f64,
}

macro_rules! json_line {
    ($t:ty) => {
        impl $t {
            /// The line as one line of JSON.
            pub fn to_json(&self) -> String {
                serde_json::to_string(self).expect("a line of numbers and names serialises")
            }
        }
    };
}
json_line!(W8Line);
json_line!(W9Line);

/// The `fero-server` binary: [`SERVER_BIN_VAR`] when set, else `fero-server` in the directory of
/// this program, else in its parent (test binaries live in `target/<profile>/deps`).
pub fn server_bin() -> PathBuf {
    if let Some(path) = std::env::var_os(SERVER_BIN_VAR) {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    let here = dir.join("fero-server");
    if here.exists() {
        return here;
    }
    dir.parent()
        .map(|up| up.join("fero-server"))
        .unwrap_or(here)
}

/// Raises this process's soft `RLIMIT_NOFILE` to its hard limit (children inherit it) and
/// returns the soft limit now in force.
pub fn raise_nofile_limit() -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let raise = match (limit.current, limit.maximum) {
        (Some(soft), Some(hard)) => (soft < hard).then_some(hard),
        _ => None,
    };
    if let Some(hard) = raise {
        let _ = setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(hard),
                maximum: Some(hard),
            },
        );
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// A running `fero-server` child; killed when dropped.
struct ServerProcess {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl ServerProcess {
    /// Starts `bin` on `db` (a SQLite path or a `postgres://` URL) with one token per user
    /// (`tok-<user>`), on a free loopback port, and waits for its "listening" line.
    fn start(
        workload: &'static str,
        bin: &Path,
        db: Option<&str>,
        pool_size: Option<usize>,
        users: &[String],
    ) -> Result<Self, ScaleError> {
        if !bin.exists() {
            return Err(ScaleError::NoServer {
                workload,
                path: bin.to_path_buf(),
            });
        }
        let process = |what: &str| {
            let what = what.to_owned();
            move |source| ScaleError::Process {
                workload,
                what,
                source,
            }
        };
        let dir = tempfile::tempdir().map_err(process("creating its temporary directory"))?;
        let mut toml = String::from("[tokens]\n");
        for user in users {
            let _ = writeln!(toml, "\"{}\" = \"{user}\"", token(user));
        }
        let tokens = dir.path().join("tokens.toml");
        std::fs::write(&tokens, toml).map_err(process("writing its token file"))?;
        let db = db.map_or_else(
            || dir.path().join("server.db").display().to_string(),
            str::to_owned,
        );
        let mut command = Command::new(bin);
        if let Some(pool_size) = pool_size {
            command.arg("--pool-size").arg(pool_size.to_string());
        }
        let mut child = command
            .arg("--db")
            .arg(&db)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--tokens")
            .arg(&tokens)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(process(&format!("starting {}", bin.display())))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut lines = BufReader::new(stdout).lines();
        let url = loop {
            let Some(line) = lines.next() else {
                let _ = child.kill();
                return Err(ScaleError::Process {
                    workload,
                    what: "waiting for its `listening on` line".into(),
                    source: std::io::Error::other("it exited before listening"),
                });
            };
            let line = line.map_err(process("reading its output"))?;
            if let Some(at) = line.find("http://") {
                break line[at..].trim().to_owned();
            }
        };
        // Keep reading (and dropping) its output so it never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Ok(Self {
            child,
            url,
            _dir: dir,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn token(user: &str) -> String {
    format!("tok-{user}")
}

/// VmRSS of `pid` in MiB.
fn rss_mb(workload: &'static str, pid: u32) -> Result<f64, ScaleError> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|source| {
        ScaleError::Process {
            workload,
            what: format!("reading /proc/{pid}/status"),
            source,
        }
    })?;
    let kb = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kb| kb.parse::<f64>().ok())
        .ok_or_else(|| ScaleError::Verify {
            workload,
            what: format!("/proc/{pid}/status has no VmRSS line (Linux only)"),
        })?;
    Ok(kb / 1024.0)
}

/// utime + stime of `pid` (or `self`), in seconds.
fn cpu_seconds(workload: &'static str, pid: &str) -> Result<f64, ScaleError> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|source| {
        ScaleError::Process {
            workload,
            what: format!("reading /proc/{pid}/stat"),
            source,
        }
    })?;
    // The fields after the command name (which is in parentheses and may hold spaces).
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: u64 = fields
        .get(11..13)
        .map(|two| two.iter().filter_map(|f| f.parse::<u64>().ok()).sum())
        .ok_or_else(|| ScaleError::Verify {
            workload,
            what: format!("/proc/{pid}/stat has no utime/stime"),
        })?;
    let per_second = rustix::param::clock_ticks_per_second().max(1) as f64;
    Ok(ticks as f64 / per_second)
}

/// The `q` quantile (0..=1) of sorted `values`, nearest rank.
fn quantile(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1].as_secs_f64() * 1_000.0
}

fn remote(workload: &'static str, url: &str, user: &str) -> Result<HttpRemote, ScaleError> {
    HttpRemote::builder(url, token(user))
        .request_timeout(Duration::from_secs(60))
        .stream_idle_timeout(Duration::from_secs(600))
        .build()
        .map_err(|source| ScaleError::Build { workload, source })
}

/// A change creating row `id` for `device`'s `seq`-th change.
fn create(device: &str, seq: u64, id: String) -> Change {
    Change {
        id,
        base_version: None,
        mutation_id: MutationId::new(device, seq),
        deleted: false,
        data: serde_json::json!({ "name": "Scale Bench Name", "email": "scale@example.com",
            "body": format!("change {seq} of {device}") }),
    }
}

/// How many of `results` say accepted.
fn accepted(results: &[fero_protocol::ChangeResult]) -> u64 {
    results
        .iter()
        .filter(|r| matches!(r.outcome, ChangeOutcome::Accepted { .. }))
        .count() as u64
}

/// What the stream task tells W8's driver.
enum Seen {
    Connected,
    Change(usize, Instant),
    Lost(usize),
}

/// Runs W8 (see the [module docs](self)).
///
/// # Errors
/// [`ScaleError`]: the server did not start, a stream did not connect in a minute, a notice did
/// not reach every listener in a minute, or a push failed.
pub async fn run_w8(options: &W8Options) -> Result<W8Line, ScaleError> {
    const W: &str = "W8";
    let listeners = options.listeners.min(options.streams);
    if listeners == 0 || options.pushes == 0 {
        return Err(ScaleError::Verify {
            workload: W,
            what: "listeners and pushes must be at least 1".into(),
        });
    }
    let nofile = raise_nofile_limit();
    let hot = "hot".to_owned();
    let mut users = vec![hot.clone()];
    users.extend((0..OTHER_USERS).map(|u| format!("other-{u}")));
    let server = ServerProcess::start(W, &options.server_bin, None, None, &users)?;
    let pusher = remote(W, &server.url, &hot)?;
    // Warm up: one push and one pull, so the idle figure includes what any serving server holds.
    let push = |seq: u64| {
        let pusher = pusher.clone();
        async move {
            let request = PushRequest {
                changes: vec![create("w8-pusher", seq, format!("w8-{seq:07}"))],
            };
            pusher
                .push(COLLECTION, &request)
                .await
                .map_err(|source| ScaleError::Remote {
                    workload: W,
                    what: format!("push {seq}"),
                    source,
                })
        }
    };
    push(0).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let server_rss_idle_mb = rss_mb(W, server.pid())?;

    let remotes: Vec<HttpRemote> = users
        .iter()
        .map(|user| remote(W, &server.url, user))
        .collect::<Result<_, _>>()?;
    let (add_tx, mut add_rx) = mpsc::unbounded_channel::<(usize, ChangeStream)>();
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel::<Seen>();
    // One task polls every stream.
    let driver = tokio::spawn(async move {
        let mut all = SelectAll::new();
        loop {
            tokio::select! {
                added = add_rx.recv() => match added {
                    Some((index, stream)) => all.push(stream.map(move |event| (index, event))),
                    None => return,
                },
                Some((index, event)) = all.next(), if !all.is_empty() => {
                    let seen = match event {
                        Ok(StreamEvent::Connected) => Seen::Connected,
                        Ok(StreamEvent::Change(_)) => Seen::Change(index, Instant::now()),
                        Ok(_) | Err(_) => Seen::Lost(index),
                    };
                    if seen_tx.send(seen).is_err() {
                        return;
                    }
                }
            }
        }
    });
    let opening = Instant::now();
    let mut connected = 0;
    while connected < options.streams {
        let end = (connected + OPEN_BATCH).min(options.streams);
        for index in connected..end {
            // Streams 0..listeners are the pushed user's; the rest are spread over the others.
            let owner = if index < listeners {
                0
            } else {
                1 + index % OTHER_USERS
            };
            let _ = add_tx.send((index, remotes[owner].changes()));
        }
        while connected < end {
            match tokio::time::timeout(WAIT, seen_rx.recv()).await {
                Ok(Some(Seen::Connected)) => connected += 1,
                Ok(Some(Seen::Lost(index))) => {
                    return Err(ScaleError::Verify {
                        workload: W,
                        what: format!(
                            "stream {index} failed while opening {} streams ({connected} \
                             connected); is the file-descriptor limit ({nofile}) high enough?",
                            options.streams
                        ),
                    });
                }
                Ok(Some(Seen::Change(..))) => {}
                Ok(None) | Err(_) => {
                    return Err(ScaleError::Verify {
                        workload: W,
                        what: format!(
                            "only {connected} of {} streams connected within {WAIT:?}",
                            options.streams
                        ),
                    });
                }
            }
        }
    }
    let open_seconds = opening.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let server_rss_streams_mb = rss_mb(W, server.pid())?;
    let server_fds = std::fs::read_dir(format!("/proc/{}/fd", server.pid()))
        .map_err(|source| ScaleError::Process {
            workload: W,
            what: "listing /proc/<pid>/fd".into(),
            source,
        })?
        .count();

    let mut delays = Vec::with_capacity(listeners * options.pushes);
    for seq in 1..=options.pushes as u64 {
        let mut got = vec![false; listeners];
        let mut count = 0;
        let sent = Instant::now();
        let response = push(seq).await?;
        if accepted(&response.results) != 1 {
            return Err(ScaleError::Verify {
                workload: W,
                what: format!("push {seq} was not accepted: {:?}", response.results),
            });
        }
        while count < listeners {
            match tokio::time::timeout(WAIT, seen_rx.recv()).await {
                Ok(Some(Seen::Change(index, at))) if index < listeners && !got[index] => {
                    got[index] = true;
                    count += 1;
                    delays.push(at.saturating_duration_since(sent));
                }
                Ok(Some(Seen::Lost(index))) => {
                    return Err(ScaleError::Verify {
                        workload: W,
                        what: format!("stream {index} dropped during push {seq}"),
                    });
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => {
                    return Err(ScaleError::Verify {
                        workload: W,
                        what: format!(
                            "push {seq} reached {count} of {listeners} listeners within {WAIT:?}"
                        ),
                    });
                }
            }
        }
        // Let coalesced stragglers of this push drain before the next one is timed.
        tokio::time::sleep(Duration::from_millis(200)).await;
        while seen_rx.try_recv().is_ok() {}
    }
    drop(add_tx);
    driver.abort();
    let notices = delays.len();
    delays.sort();
    let streams = options.streams;
    Ok(W8Line {
        workload: W,
        streams,
        listeners,
        pushes: options.pushes,
        server_rss_idle_mb,
        server_rss_streams_mb,
        rss_per_stream_kb: (server_rss_streams_mb - server_rss_idle_mb) * 1024.0 / streams as f64,
        open_seconds,
        notices,
        notice_p50_ms: quantile(&delays, 0.50),
        notice_p99_ms: quantile(&delays, 0.99),
        notice_max_ms: quantile(&delays, 1.0),
        nofile_limit: nofile,
        server_fds,
    })
}

/// A fresh PostgreSQL database for one run, dropped by [`FreshDatabase::drop_now`].
struct FreshDatabase {
    admin: String,
    name: String,
    url: String,
}

impl FreshDatabase {
    async fn create(workload: &'static str, admin: &str) -> Result<Self, ScaleError> {
        let name = format!(
            "fero_scale_{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis())
        );
        Self::execute(workload, admin, &format!("CREATE DATABASE {name}")).await?;
        let base = admin.rsplit_once('/').map_or(admin, |(base, _)| base);
        Ok(Self {
            admin: admin.to_owned(),
            url: format!("{base}/{name}"),
            name,
        })
    }

    async fn execute(workload: &'static str, admin: &str, sql: &str) -> Result<(), ScaleError> {
        let postgres = |what: &str| {
            let what = what.to_owned();
            let url = admin.to_owned();
            move |source| ScaleError::Postgres {
                workload,
                url,
                what,
                source,
            }
        };
        let (client, connection) = tokio_postgres::connect(admin, tokio_postgres::NoTls)
            .await
            .map_err(postgres("connecting"))?;
        let connection = tokio::spawn(connection);
        client.batch_execute(sql).await.map_err(postgres(sql))?;
        drop(client);
        let _ = connection.await;
        Ok(())
    }

    async fn drop_now(self, workload: &'static str) -> Result<(), ScaleError> {
        Self::execute(
            workload,
            &self.admin,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        )
        .await
    }
}

/// Runs W9 (see the [module docs](self)); on PostgreSQL, in a fresh database dropped afterwards.
///
/// # Errors
/// [`ScaleError`]: the server or the database did not start, or no change was accepted.
pub async fn run_w9(options: &W9Options) -> Result<W9Line, ScaleError> {
    const W: &str = "W9";
    let fresh = match &options.db {
        ScaleDb::Sqlite => None,
        ScaleDb::Postgres(admin) => Some(FreshDatabase::create(W, admin).await?),
    };
    let result = w9_on(options, fresh.as_ref().map(|f| f.url.as_str())).await;
    if let Some(fresh) = fresh {
        // Stop the server first (it is dropped inside w9_on), then drop the database.
        fresh.drop_now(W).await?;
    }
    result
}

/// One device's tally.
#[derive(Default)]
struct Tally {
    pushes: u64,
    accepted: u64,
    push_latency: Vec<Duration>,
    pulls: u64,
    rows: u64,
    pull_latency: Vec<Duration>,
}

async fn w9_on(options: &W9Options, postgres: Option<&str>) -> Result<W9Line, ScaleError> {
    const W: &str = "W9";
    if options.devices == 0 || options.users == 0 || options.batch == 0 {
        return Err(ScaleError::Verify {
            workload: W,
            what: "devices, users and batch must be at least 1".into(),
        });
    }
    raise_nofile_limit();
    let users: Vec<String> = (0..options.users).map(|u| format!("user-{u}")).collect();
    let server = ServerProcess::start(W, &options.server_bin, postgres, options.pool_size, &users)?;
    let pid = server.pid().to_string();
    let deadline_after = options.duration;
    let batch = options.batch;
    let mut tasks = Vec::with_capacity(options.devices);
    let server_cpu_before = cpu_seconds(W, &pid)?;
    let own_cpu_before = cpu_seconds(W, "self")?;
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + deadline_after;
    for device in 0..options.devices {
        let remote = remote(W, &server.url, &users[device % options.users])?;
        tasks.push(tokio::spawn(async move {
            let name = format!("device-{device}");
            let mut tally = Tally::default();
            let mut checkpoint: Option<SyncCheckpoint> = None;
            let mut seq = 0u64;
            while tokio::time::Instant::now() < deadline {
                let changes = (0..batch)
                    .map(|_| {
                        seq += 1;
                        create(&name, seq, format!("{name}-{seq:08}"))
                    })
                    .collect();
                let at = Instant::now();
                let response = remote
                    .push(COLLECTION, &PushRequest { changes })
                    .await
                    .map_err(|source| ScaleError::Remote {
                        workload: W,
                        what: format!("{name}'s push"),
                        source,
                    })?;
                tally.push_latency.push(at.elapsed());
                tally.pushes += 1;
                tally.accepted += accepted(&response.results);
                let at = Instant::now();
                let page = remote
                    .pull(
                        COLLECTION,
                        &PullRequest {
                            checkpoint: checkpoint.clone(),
                            limit: 1_000,
                            subscription: None,
                        },
                    )
                    .await
                    .map_err(|source| ScaleError::Remote {
                        workload: W,
                        what: format!("{name}'s pull"),
                        source,
                    })?;
                tally.pull_latency.push(at.elapsed());
                tally.pulls += 1;
                tally.rows += page.items.len() as u64;
                checkpoint = Some(page.checkpoint);
            }
            Ok::<Tally, ScaleError>(tally)
        }));
    }
    let mut total = Tally::default();
    for task in tasks {
        let tally = task.await.map_err(|join| ScaleError::Verify {
            workload: W,
            what: format!("a device task failed: {join}"),
        })??;
        total.pushes += tally.pushes;
        total.accepted += tally.accepted;
        total.push_latency.extend(tally.push_latency);
        total.pulls += tally.pulls;
        total.rows += tally.rows;
        total.pull_latency.extend(tally.pull_latency);
    }
    let seconds = started.elapsed().as_secs_f64();
    let server_cpu = cpu_seconds(W, &pid)? - server_cpu_before;
    let own_cpu = cpu_seconds(W, "self")? - own_cpu_before;
    let server_rss_mb = rss_mb(W, server.pid())?;
    drop(server);
    if total.accepted == 0 {
        return Err(ScaleError::Verify {
            workload: W,
            what: format!("no change was accepted in {} pushes", total.pushes),
        });
    }
    total.push_latency.sort();
    total.pull_latency.sort();
    Ok(W9Line {
        workload: W,
        db: options.db.name(),
        pool_size: options.pool_size,
        devices: options.devices,
        users: options.users,
        batch,
        seconds,
        pushes: total.pushes,
        changes_accepted: total.accepted,
        changes_per_s: total.accepted as f64 / seconds,
        push_p50_ms: quantile(&total.push_latency, 0.50),
        push_p99_ms: quantile(&total.push_latency, 0.99),
        pulls: total.pulls,
        rows_pulled: total.rows,
        pull_p50_ms: quantile(&total.pull_latency, 0.50),
        pull_p99_ms: quantile(&total.pull_latency, 0.99),
        server_cpu_cores: server_cpu / seconds,
        loadgen_cpu_cores: own_cpu / seconds,
        server_rss_mb,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_takes_the_nearest_rank() {
        let values: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(quantile(&values, 0.5), 50.0);
        assert_eq!(quantile(&values, 0.99), 99.0);
        assert_eq!(quantile(&values, 1.0), 100.0);
        assert_eq!(quantile(&[], 0.5), 0.0);
    }
}
