//! W7, W7-move and W7-buckets: shared collections (issue 13's "Performance" goals) against an
//! in-process reference server on SQLite with the suite's team rules
//! ([`TeamSharing`]: a row of `tasks` lives in bucket `team:<data.team>`, a row of `members`
//! `{team, user}` grants `user` that bucket), served on loopback HTTP to devices made of
//! `fero-sqlite`'s store and `fero-http`'s remote, as W4 does.
//!
//! - **W7** ([`run_w7`]): `teams` teams of `rows` rows each in `tasks`; a device whose user is a
//!   member of `device_teams` of them (each of `device_rows` rows) runs its initial sync of
//!   `tasks`, alternating with the initial sync of the same rows (same ids, same content) from a
//!   private collection (no rules, seeded with [`Storage::seed`]). Medians and their ratio.
//! - **W7-move** ([`run_w7_move`]): a device already synced (its user in one small team) is
//!   granted a team of `move_rows` rows; from the grant's push to the device holding every row.
//! - **W7-buckets** ([`run_w7_buckets`]): a user granted `buckets` teams of 2 rows (initial sync,
//!   then an incremental pull of one new row), and ([`run_w7_flat`]) the incremental pull of a
//!   user in 3 teams while the number of other teams grows.
//!
//! The server's rows are written at the storage level ([`Storage::shared_push`] by an `admin`
//! whose access claims the teams of each page, pages of at most [`PUSH_PAGE`] changes), which
//! is not measured. Every measured sync is checked: the device ends with exactly the ids it may
//! read, or no figure is reported.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fero::{FeatureSyncConfig, FeroSync, SyncId, Version};
use fero_http::HttpRemote;
use fero_protocol::{Change, MutationId};
use fero_server::shared_suite::{MEMBERS, TASKS, TeamAccess, TeamSharing};
use fero_server::{SeedRow, Server, SqliteStorage, Storage, Tokens, UserId};
use fero_sqlite::SqliteStore;
use serde::Serialize;

use crate::data::BenchItem;
use crate::error::BenchError;

/// Changes per storage-level push while seeding (one transaction each).
pub const PUSH_PAGE: usize = 5_000;
/// The private collection W7 compares with (not named by the rules: a per-user feed).
const PRIVATE: &str = "notes";
/// The device user of W7 and W7-buckets (its static token is `device-token`).
const DEVICE: &str = "device";
/// W7-move's users: one per run, each with a fresh device.
const MOVERS: usize = 64;

/// The name of team `index` among `teams`: `t0042` (at least 4 digits, more for more teams).
pub fn team_name(index: usize, teams: usize) -> String {
    let width = teams.saturating_sub(1).to_string().len().max(4);
    format!("t{index:0width$}")
}

/// The id of row `row` of team `team`.
fn task_id(team: &str, row: usize) -> String {
    format!("task-{team}-{row:06}")
}

/// The content of a row: its team and bench-spec's name, email and body of item `index`.
fn task_data(team: &str, index: u64) -> serde_json::Value {
    let item = BenchItem::generate(index, Version(1), SyncId(index));
    serde_json::json!({
        "team": team, "name": item.name(), "email": item.email(), "body": item.body()
    })
}

/// The one-minute load average (`/proc/loadavg`), recorded next to each figure: other builds
/// share the machine. `-1` when it cannot be read.
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(-1.0)
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples.get(samples.len() / 2).copied().unwrap_or_default()
}

fn ms(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1e6).round() / 1e3
}

fn rate(count: u64, elapsed: Duration) -> u64 {
    crate::workload::per_second(count, elapsed)
}

fn server_error(source: impl Into<fero_server::Error>) -> BenchError {
    BenchError::Server {
        source: source.into(),
    }
}

fn io_error(what: &str) -> impl FnOnce(std::io::Error) -> BenchError + '_ {
    move |source| BenchError::Io {
        what: what.to_owned(),
        source,
    }
}

/// The in-process reference server with the team rules, on a temporary SQLite file, listening
/// on a loopback port; the admin's storage-level writes go through `storage`.
struct SharedServer {
    storage: Arc<SqliteStorage>,
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    served: tokio::task::JoinHandle<()>,
    /// The admin's next mutation sequence number.
    next_seq: u64,
    dir: tempfile::TempDir,
}

impl SharedServer {
    /// Starts a server that knows `users` (user names; user `u` has token `u-token`).
    async fn start(users: &[String]) -> Result<SharedServer, BenchError> {
        let dir = tempfile::Builder::new()
            .prefix("fero-bench-w7-")
            .tempdir()
            .map_err(io_error("create a temporary directory for W7"))?;
        let storage =
            Arc::new(SqliteStorage::open(dir.path().join("server.db")).map_err(server_error)?);
        let list: Vec<String> = users.iter().map(|u| format!("{u}-token={u}")).collect();
        let tokens = Tokens::parse_list(&list.join(",")).map_err(server_error)?;
        let server = Server::builder()
            .storage_arc(storage.clone())
            .tokens(tokens)
            .sharing(Arc::new(TeamSharing))
            .build()
            .map_err(server_error)?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(io_error("bind the server to a loopback port"))?;
        let address = listener
            .local_addr()
            .map_err(io_error("read the server's address"))?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.await;
            };
            if let Err(error) = server.serve(listener, shutdown).await {
                eprintln!("the W7 server stopped: {error}");
            }
        });
        Ok(SharedServer {
            storage,
            url: format!("http://{address}"),
            stop: Some(stop),
            served,
            next_seq: 0,
            dir,
        })
    }

    /// Writes `changes` to `collection` as the admin, in pages of [`PUSH_PAGE`]; each page's
    /// access claims exactly the teams its changes name. Every change must be accepted.
    async fn admin_push(
        &mut self,
        collection: &str,
        changes: Vec<(String, serde_json::Value)>,
    ) -> Result<(), BenchError> {
        let mut changes = changes.into_iter().peekable();
        while changes.peek().is_some() {
            let page: Vec<(String, serde_json::Value)> = changes.by_ref().take(PUSH_PAGE).collect();
            let teams: BTreeSet<&str> = page
                .iter()
                .filter_map(|(_, data)| data.get("team").and_then(|t| t.as_str()))
                .collect();
            let claimed: Vec<&str> = teams.into_iter().collect();
            let access = TeamAccess::arc("admin", &claimed);
            let count = page.len() as u64;
            let page: Vec<Change> = page
                .into_iter()
                .map(|(id, data)| {
                    self.next_seq += 1;
                    Change {
                        id,
                        base_version: None,
                        mutation_id: MutationId::new("admin", self.next_seq),
                        deleted: false,
                        data,
                    }
                })
                .collect();
            let pushed = self
                .storage
                .shared_push(access, collection, page)
                .await
                .map_err(server_error)?;
            let accepted = pushed
                .outcome
                .results
                .iter()
                .filter(|r| matches!(r.outcome, fero_protocol::ChangeOutcome::Accepted { .. }))
                .count() as u64;
            BenchError::verify("W7", count, "admin changes accepted", count, accepted)?;
        }
        Ok(())
    }

    /// Grants `user` the bucket of each of `teams` (one `members` row each).
    async fn grant(&mut self, user: &str, teams: &[String]) -> Result<(), BenchError> {
        let rows = teams
            .iter()
            .map(|team| {
                (
                    format!("member-{user}-{team}"),
                    serde_json::json!({ "team": team, "user": user }),
                )
            })
            .collect();
        self.admin_push(MEMBERS, rows).await
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.served).await;
    }
}

/// The rows of `teams` (name, rows) in the order [`seed_teams`] writes them, interleaved over
/// the teams (row 0 of every team, then row 1, …): each row's team, its row number in the team
/// and its content index (from `first_index + 1`). Generated on demand, so the same rows can be
/// produced again (the private copy of W7) without keeping them.
fn team_rows(
    teams: &[(String, usize)],
    first_index: u64,
) -> impl Iterator<Item = (&str, usize, u64)> {
    let deepest = teams.iter().map(|(_, rows)| *rows).max().unwrap_or(0);
    (0..deepest)
        .flat_map(move |row| {
            teams
                .iter()
                .filter(move |(_, rows)| row < *rows)
                .map(move |(team, _)| (team.as_str(), row))
        })
        .zip(first_index + 1..)
        .map(|((team, row), index)| (team, row, index))
}

/// The ids of every row of the teams of `teams` named in `keep`, sorted.
///
/// Made after the seeding, not kept during it: holding the seeded rows (ids and content) in the
/// bench's heap while the server's pages were built and freed around them left glibc's heap
/// fragmented, and every later allocation of the process (the device's parse, apply and drop
/// of each page, the in-process server's work) paid for it: W7-move's device ran about 2.5
/// times slower than with the same rows seeded and nothing kept (see BENCHMARKS.md, W7).
fn team_ids(teams: &[(String, usize)], keep: &BTreeSet<String>) -> Vec<String> {
    let mut ids: Vec<String> = teams
        .iter()
        .filter(|(team, _)| keep.contains(team))
        .flat_map(|(team, rows)| (0..*rows).map(move |row| task_id(team, row)))
        .collect();
    ids.sort();
    ids
}

/// Adds `teams` (name, rows) to `tasks`, rows interleaved over the teams (row 0 of every team,
/// then row 1, …) so that no team's rows are contiguous in the feed. Keeps nothing of them: see
/// [`team_ids`] for the ids.
async fn seed_teams(
    server: &mut SharedServer,
    teams: &[(String, usize)],
    first_index: u64,
) -> Result<(), BenchError> {
    let mut page = Vec::with_capacity(PUSH_PAGE);
    for (team, row, index) in team_rows(teams, first_index) {
        page.push((task_id(team, row), task_data(team, index)));
        if page.len() == PUSH_PAGE {
            server.admin_push(TASKS, std::mem::take(&mut page)).await?;
        }
    }
    server.admin_push(TASKS, page).await
}

/// A device: a fresh `fero-sqlite` file and an engine syncing one collection over HTTP.
struct Device {
    store: SqliteStore,
    sync: FeroSync,
}

impl Device {
    /// A device of `user` on a fresh file `file` in the server's directory.
    async fn open(
        workload: &'static str,
        server: &SharedServer,
        user: &str,
        collection: &str,
        file: &str,
        batch: usize,
    ) -> Result<Device, BenchError> {
        let store = SqliteStore::open(server.dir.path().join(file))
            .await
            .map_err(BenchError::store(workload))?;
        // Loopback: compression would only cost CPU on both ends.
        let remote = HttpRemote::builder(&server.url, format!("{user}-token"))
            .compression(false)
            .build()
            .map_err(|source| BenchError::Remote { source })?;
        let handler = store
            .sync_handler(collection, remote)
            .map_err(BenchError::store(workload))?;
        let config = FeatureSyncConfig::new().batch_size(batch);
        let sync = FeroSync::builder()
            .metadata_repo(store.metadata_repo())
            .initial_sync(collection, handler.clone(), config.clone())
            .background_sync(collection, handler, config)
            .build()
            .map_err(BenchError::build(workload))?;
        Ok(Device { store, sync })
    }

    /// The ids the device holds (live rows) in `collection`, sorted.
    async fn ids(
        &self,
        workload: &'static str,
        collection: &str,
    ) -> Result<Vec<String>, BenchError> {
        let mut ids: Vec<String> = self
            .store
            .query(collection)
            .await
            .map_err(BenchError::store(workload))?
            .into_iter()
            .map(|doc| doc.id)
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Checks that the device holds exactly `expected` (sorted ids) in `collection`.
    async fn verify(
        &self,
        workload: &'static str,
        collection: &str,
        expected: &[String],
    ) -> Result<(), BenchError> {
        let held = self.ids(workload, collection).await?;
        let n = expected.len() as u64;
        BenchError::verify(workload, n, "rows on the device", n, held.len() as u64)?;
        let same = held.iter().zip(expected).filter(|(a, b)| a == b).count() as u64;
        BenchError::verify(
            workload,
            n,
            "rows on the device with an expected id",
            n,
            same,
        )
    }

    async fn dispose(self) {
        self.sync.dispose().await;
    }
}

/// W7's sizes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct W7Options {
    /// Teams in `tasks`.
    pub teams: usize,
    /// Rows of each team the device's user is not in.
    pub rows: usize,
    /// Teams the device's user is a member of (among `teams`).
    pub device_teams: usize,
    /// Rows of each of the device's teams.
    pub device_rows: usize,
    /// Initial syncs of each kind (shared, private), alternating; the medians are reported.
    pub runs: usize,
    /// The client's page size.
    pub batch: usize,
}

impl Default for W7Options {
    /// The W7: 1,000 teams of 1,000 rows, a device in 3 of them, 15 runs.
    fn default() -> Self {
        W7Options {
            teams: 1_000,
            rows: 1_000,
            device_teams: 3,
            device_rows: 1_000,
            runs: 15,
            batch: fero::DEFAULT_BATCH_SIZE,
        }
    }
}

/// W7's result, printed as one JSON line.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct W7Line {
    /// `W7`.
    pub workload: &'static str,
    /// Teams in `tasks`.
    pub teams: usize,
    /// Rows in `tasks`.
    pub server_rows: u64,
    /// Rows the device syncs (its teams' rows).
    pub device_rows: u64,
    /// Runs of each kind.
    pub runs: usize,
    /// The client's page size.
    pub batch: usize,
    /// Median initial sync of the device's rows of the shared collection, ms.
    pub shared_ms: f64,
    /// Median initial sync of the same rows from a private collection, ms.
    pub private_ms: f64,
    /// `shared_ms / private_ms` (goal: at most 1.2).
    pub ratio: f64,
    /// Rows per second of the shared median.
    pub shared_rows_per_s: u64,
    /// Rows per second of the private median.
    pub private_rows_per_s: u64,
    /// The server's part alone: median time of the storage calls that page the device's shared
    /// rows (`Storage::shared_pull`, pages of `batch`), no HTTP, no client, ms.
    pub storage_shared_ms: f64,
    /// The same for the private rows (`Storage::pull`), ms.
    pub storage_private_ms: f64,
    /// Seconds spent seeding the server (not measured).
    pub seed_s: f64,
    /// One-minute load average at the start and at the end of the measured runs.
    pub load: [f64; 2],
}

/// W7's result for one sync: its duration.
async fn initial_sync(
    server: &SharedServer,
    collection: &str,
    file: &str,
    batch: usize,
    expected: &[String],
) -> Result<Duration, BenchError> {
    const W: &str = "W7";
    let started = Instant::now();
    let device = Device::open(W, server, DEVICE, collection, file, batch).await?;
    let report = device.sync.run().await.map_err(BenchError::sync(W))?;
    let elapsed = started.elapsed();
    let n = expected.len() as u64;
    BenchError::verify(W, n, "items pulled", n, report.totals().pulled)?;
    device.verify(W, collection, expected).await?;
    device.dispose().await;
    let path = server.dir.path().join(file);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    Ok(elapsed)
}

/// The server's part of W7 alone: the medians over `runs` of paging every row of the device
/// through the storage, shared then private (alternating).
async fn storage_pulls(
    server: &SharedServer,
    batch: usize,
    runs: usize,
    rows: u64,
) -> Result<(Duration, Duration), BenchError> {
    const W: &str = "W7";
    let limit = u32::try_from(batch).unwrap_or(u32::MAX);
    let device = UserId::new(DEVICE);
    let mut shared = Vec::with_capacity(runs);
    let mut private = Vec::with_capacity(runs);
    for _ in 0..runs {
        let access = TeamAccess::arc(DEVICE, &[]);
        let started = Instant::now();
        let (mut cursor, mut count) = (None, 0);
        loop {
            let page = server
                .storage
                .shared_pull(Arc::clone(&access), TASKS, cursor, limit)
                .await
                .map_err(server_error)?;
            count += page.items.len() as u64;
            cursor = Some(page.cursor);
            if !page.has_more {
                break;
            }
        }
        shared.push(started.elapsed());
        BenchError::verify(W, rows, "rows of the storage's shared pull", rows, count)?;
        let started = Instant::now();
        let (mut after, mut count) = (SyncId(0), 0);
        loop {
            let page = server
                .storage
                .pull(&device, PRIVATE, after, limit)
                .await
                .map_err(server_error)?;
            count += page.items.len() as u64;
            after = page.items.last().map_or(after, |item| item.sync_id);
            if !page.has_more {
                break;
            }
        }
        private.push(started.elapsed());
        BenchError::verify(W, rows, "rows of the storage's private pull", rows, count)?;
    }
    Ok((median(&mut shared), median(&mut private)))
}

/// Runs W7: seeds the server, then alternates the initial syncs of the shared and the private
/// collection (the order swapped every run).
///
/// # Errors
/// [`BenchError::InvalidSize`] for zero sizes or more device teams than teams; a server, store
/// or sync failure; [`BenchError::Verify`] when a device does not end with exactly its rows.
pub async fn run_w7(options: &W7Options) -> Result<W7Line, BenchError> {
    if options.teams == 0
        || options.device_teams == 0
        || options.device_teams > options.teams
        || options.runs == 0
        || options.batch == 0
    {
        return Err(BenchError::InvalidSize {
            workload: "W7",
            n: (options.device_teams * options.device_rows) as u64,
            batch: options.batch,
        });
    }
    let seeding = Instant::now();
    let mut server = SharedServer::start(&[DEVICE.to_owned()]).await?;
    // The device's teams are spread over the range: first, middle, last, …
    let (teams_n, mine_n) = (options.teams, options.device_teams);
    let device_team_indexes: BTreeSet<usize> = (0..mine_n)
        .map(|k| k * teams_n / mine_n + teams_n / (2 * mine_n))
        .collect();
    let teams: Vec<(String, usize)> = (0..options.teams)
        .map(|index| {
            let rows = if device_team_indexes.contains(&index) {
                options.device_rows
            } else {
                options.rows
            };
            (team_name(index, options.teams), rows)
        })
        .collect();
    let mine: BTreeSet<String> = device_team_indexes
        .iter()
        .map(|&index| team_name(index, options.teams))
        .collect();
    seed_teams(&mut server, &teams, 0).await?;
    let mine_list: Vec<String> = mine.iter().cloned().collect();
    server.grant(DEVICE, &mine_list).await?;
    // The private copy: the same rows (ids, content, feed order), generated again page by page.
    let device = UserId::new(DEVICE);
    let mut private_rows = team_rows(&teams, 0)
        .filter(|(team, _, _)| mine.contains(*team))
        .map(|(team, row, index)| SeedRow::new(task_id(team, row), task_data(team, index)))
        .peekable();
    while private_rows.peek().is_some() {
        let page: Vec<SeedRow> = private_rows.by_ref().take(PUSH_PAGE).collect();
        server
            .storage
            .seed(&device, PRIVATE, page)
            .await
            .map_err(server_error)?;
    }
    let seed_s = seeding.elapsed().as_secs_f64();
    let expected = team_ids(&teams, &mine);
    let server_rows = teams.iter().map(|(_, rows)| *rows as u64).sum();
    let load_before = load_average();
    let mut shared = Vec::with_capacity(options.runs);
    let mut private = Vec::with_capacity(options.runs);
    for run in 0..options.runs {
        let order = if run % 2 == 0 {
            [TASKS, PRIVATE]
        } else {
            [PRIVATE, TASKS]
        };
        for collection in order {
            let file = format!("client-{collection}-{run}.db");
            let took = initial_sync(&server, collection, &file, options.batch, &expected).await?;
            if collection == TASKS {
                shared.push(took);
            } else {
                private.push(took);
            }
        }
    }
    let (storage_shared, storage_private) =
        storage_pulls(&server, options.batch, options.runs, expected.len() as u64).await?;
    let load_after = load_average();
    server.stop().await;
    let device_rows = expected.len() as u64;
    let shared = median(&mut shared);
    let private = median(&mut private);
    Ok(W7Line {
        workload: "W7",
        teams: options.teams,
        server_rows,
        device_rows,
        runs: options.runs,
        batch: options.batch,
        shared_ms: ms(shared),
        private_ms: ms(private),
        ratio: (shared.as_secs_f64() / private.as_secs_f64().max(1e-9) * 1_000.0).round() / 1_000.0,
        shared_rows_per_s: rate(device_rows, shared),
        private_rows_per_s: rate(device_rows, private),
        storage_shared_ms: ms(storage_shared),
        storage_private_ms: ms(storage_private),
        seed_s: (seed_s * 10.0).round() / 10.0,
        load: [load_before, load_after],
    })
}

/// W7-move's sizes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct W7MoveOptions {
    /// Rows of the team the device's user is granted.
    pub move_rows: usize,
    /// Rows of the small team the device's user is in from the start.
    pub small_rows: usize,
    /// Runs (one user and one fresh device each, the same big team); the median is reported.
    pub runs: usize,
    /// The device's position is far behind the collection's head when it is granted the team:
    /// its own team's rows come first in the feed and nothing was written to it since. When
    /// `false`, a new row of its team is written after the big team's rows and synced before
    /// the grant, so its position is the head (a device up to date with recent activity).
    pub behind: bool,
    /// The client's page size.
    pub batch: usize,
}

impl Default for W7MoveOptions {
    /// The W7-move: a team of 100,000 rows, 5 runs.
    fn default() -> Self {
        W7MoveOptions {
            move_rows: 100_000,
            small_rows: 10,
            runs: 5,
            behind: false,
            batch: fero::DEFAULT_BATCH_SIZE,
        }
    }
}

/// W7-move's result, printed as one JSON line.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct W7MoveLine {
    /// `W7-move`.
    pub workload: &'static str,
    /// Rows moved in per run.
    pub move_rows: u64,
    /// Runs.
    pub runs: usize,
    /// The client's page size.
    pub batch: usize,
    /// The device's position was behind the head (see [`W7MoveOptions::behind`]).
    pub behind: bool,
    /// Rows the device received per run (median run): above `move_rows` when rows written
    /// after the device's position came twice (move-in, then the feed from the position).
    pub rows_pulled: u64,
    /// Median time from the grant's push to the device holding every row, seconds.
    pub seconds: f64,
    /// `move_rows` over the median (goal: at least 100,000).
    pub rows_per_s: u64,
    /// Every run's time, seconds, in run order.
    pub each_s: Vec<f64>,
    /// The server's part alone: a move-in of the same team through `Storage::shared_pull` (the
    /// access's claims gain the team between two pulls), no HTTP, no client, seconds (median).
    pub storage_s: f64,
    /// One-minute load average at the start and at the end of the measured runs.
    pub load: [f64; 2],
}

/// Runs W7-move: per run, a new user in the small team syncs it, then is granted the big team;
/// the grant's push and the device's pull of every row are timed.
///
/// # Errors
/// [`BenchError::InvalidSize`] for zero sizes or more than 64 runs; a server, store or sync
/// failure; [`BenchError::Verify`] when a device does not end with exactly its rows.
pub async fn run_w7_move(options: &W7MoveOptions) -> Result<W7MoveLine, BenchError> {
    const W: &str = "W7-move";
    if options.move_rows == 0 || options.runs == 0 || options.runs > MOVERS || options.batch == 0 {
        return Err(BenchError::InvalidSize {
            workload: W,
            n: options.move_rows as u64,
            batch: options.batch,
        });
    }
    let users: Vec<String> = (0..options.runs).map(|k| format!("mover{k}")).collect();
    let mut server = SharedServer::start(&users).await?;
    let small = "small".to_owned();
    let big = "big".to_owned();
    let teams = [
        (small.clone(), options.small_rows),
        (big.clone(), options.move_rows),
    ];
    seed_teams(&mut server, &teams, 0).await?;
    let mut before = team_ids(&teams, &BTreeSet::from([small.clone()]));
    let mut after = team_ids(&teams, &BTreeSet::from([small.clone(), big.clone()]));
    let load_before = load_average();
    let mut each = Vec::with_capacity(options.runs);
    let mut pulled = Vec::with_capacity(options.runs);
    for (run, user) in users.iter().enumerate() {
        if !options.behind {
            let id = format!("fresh-{run}");
            let data = task_data(&small, 20_000_000 + run as u64);
            server.admin_push(TASKS, vec![(id.clone(), data)]).await?;
            before.push(id.clone());
            after.push(id);
        }
        before.sort();
        after.sort();
        server.grant(user, std::slice::from_ref(&small)).await?;
        let device = Device::open(
            W,
            &server,
            user,
            TASKS,
            &format!("mover-{run}.db"),
            options.batch,
        )
        .await?;
        device.sync.run().await.map_err(BenchError::sync(W))?;
        device.verify(W, TASKS, &before).await?;
        let started = Instant::now();
        server.grant(user, std::slice::from_ref(&big)).await?;
        let report = device.sync.sync_now().await.map_err(BenchError::sync(W))?;
        let elapsed = started.elapsed();
        let n = options.move_rows as u64;
        let received = report.totals().pulled;
        if received < n {
            BenchError::verify(W, n, "rows moved in", n, received)?;
        }
        device.verify(W, TASKS, &after).await?;
        device.dispose().await;
        each.push(elapsed);
        pulled.push((elapsed, received));
    }
    pulled.sort();
    let rows_pulled = pulled.get(pulled.len() / 2).map_or(0, |(_, rows)| *rows);
    let storage = storage_move_in(&server, &small, &big, options).await?;
    let load_after = load_average();
    server.stop().await;
    let each_s: Vec<f64> = each
        .iter()
        .map(|d| (d.as_secs_f64() * 1_000.0).round() / 1_000.0)
        .collect();
    let middle = median(&mut each);
    Ok(W7MoveLine {
        workload: W,
        move_rows: options.move_rows as u64,
        runs: options.runs,
        batch: options.batch,
        behind: options.behind,
        rows_pulled,
        seconds: (middle.as_secs_f64() * 1_000.0).round() / 1_000.0,
        rows_per_s: rate(options.move_rows as u64, middle),
        each_s,
        storage_s: (storage.as_secs_f64() * 1_000.0).round() / 1_000.0,
        load: [load_before, load_after],
    })
}

/// W7-move's server part alone: per run, a user (`probe<k>`) whose claims hold `small` pulls to
/// the end, then its claims gain `big` and the pulls that move it in are timed (median).
async fn storage_move_in(
    server: &SharedServer,
    small: &str,
    big: &str,
    options: &W7MoveOptions,
) -> Result<Duration, BenchError> {
    const W: &str = "W7-move";
    let limit = u32::try_from(options.batch).unwrap_or(u32::MAX);
    let mut times = Vec::with_capacity(options.runs);
    for run in 0..options.runs {
        let user = format!("probe{run}");
        let before = TeamAccess::arc(&user, &[small]);
        let mut cursor = None;
        loop {
            let page = server
                .storage
                .shared_pull(Arc::clone(&before), TASKS, cursor, limit)
                .await
                .map_err(server_error)?;
            cursor = Some(page.cursor);
            if !page.has_more {
                break;
            }
        }
        let after = TeamAccess::arc(&user, &[small, big]);
        let started = Instant::now();
        let mut ids = BTreeSet::new();
        loop {
            let page = server
                .storage
                .shared_pull(Arc::clone(&after), TASKS, cursor, limit)
                .await
                .map_err(server_error)?;
            ids.extend(page.items.into_iter().map(|item| item.id));
            cursor = Some(page.cursor);
            if !page.has_more {
                break;
            }
        }
        times.push(started.elapsed());
        let n = options.move_rows as u64;
        let moved = ids.iter().filter(|id| id.starts_with("task-big-")).count() as u64;
        BenchError::verify(W, n, "rows of the storage's move-in", n, moved)?;
    }
    Ok(median(&mut times))
}

/// W7-buckets' sizes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct W7BucketsOptions {
    /// (a) Teams (of 2 rows each) the user is granted.
    pub buckets: usize,
    /// (b) Numbers of other teams (of 2 rows each) the flatness is measured at, ascending.
    pub others: Vec<usize>,
    /// Incremental pulls timed at each size; the median is reported.
    pub rounds: usize,
    /// The client's page size.
    pub batch: usize,
}

impl Default for W7BucketsOptions {
    /// The sizes: 10,000 buckets; 1,000, 10,000 and 100,000 other teams; 15 rounds.
    fn default() -> Self {
        W7BucketsOptions {
            buckets: 10_000,
            others: vec![1_000, 10_000, 100_000],
            rounds: 15,
            batch: fero::DEFAULT_BATCH_SIZE,
        }
    }
}

/// W7-buckets (a)'s result, printed as one JSON line.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct W7BucketsLine {
    /// `W7-buckets`.
    pub workload: &'static str,
    /// Buckets granted to the user (plus its own `user:` bucket and `global`).
    pub buckets: usize,
    /// Rows the initial sync pulled.
    pub rows: u64,
    /// Initial sync, seconds.
    pub initial_s: f64,
    /// Median incremental round (one new row in one of the buckets), ms.
    pub incremental_ms: f64,
    /// Slowest incremental round, ms.
    pub incremental_max_ms: f64,
    /// Rounds timed.
    pub rounds: usize,
    /// One-minute load average at the start and at the end of the measured part.
    pub load: [f64; 2],
}

/// W7-buckets (b)'s result at one size, printed as one JSON line.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct W7FlatLine {
    /// `W7-flat`.
    pub workload: &'static str,
    /// Teams the user is not in.
    pub other_teams: usize,
    /// Rows in `tasks`.
    pub server_rows: u64,
    /// Median incremental round (one new row in one of the user's 3 teams), ms.
    pub incremental_ms: f64,
    /// Slowest incremental round, ms.
    pub incremental_max_ms: f64,
    /// Rounds timed.
    pub rounds: usize,
    /// One-minute load average at the start and at the end of the rounds.
    pub load: [f64; 2],
}

/// `rounds` incremental rounds of `device`: each pushes one new row to a team of `teams` (not
/// timed), then times the device's background round, which must pull exactly that row.
async fn incremental_rounds(
    workload: &'static str,
    server: &mut SharedServer,
    device: &Device,
    teams: &[String],
    rounds: usize,
    expected: &mut Vec<String>,
) -> Result<Vec<Duration>, BenchError> {
    let mut times = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let team = &teams[round % teams.len()];
        let id = format!("new-{team}-{}", server.next_seq);
        let data = task_data(team, 10_000_000 + server.next_seq);
        server.admin_push(TASKS, vec![(id.clone(), data)]).await?;
        expected.push(id);
        let started = Instant::now();
        let report = device
            .sync
            .sync_now()
            .await
            .map_err(BenchError::sync(workload))?;
        times.push(started.elapsed());
        BenchError::verify(
            workload,
            1,
            "rows pulled in a round",
            1,
            report.totals().pulled,
        )?;
    }
    expected.sort();
    device.verify(workload, TASKS, expected).await?;
    Ok(times)
}

/// Runs W7-buckets (a): a user granted `buckets` teams of 2 rows syncs them all, then times
/// incremental rounds.
///
/// # Errors
/// [`BenchError::InvalidSize`] for zero sizes; a server, store or sync failure;
/// [`BenchError::Verify`] when the device does not end with exactly its rows.
pub async fn run_w7_buckets(options: &W7BucketsOptions) -> Result<W7BucketsLine, BenchError> {
    const W: &str = "W7-buckets";
    if options.buckets == 0 || options.rounds == 0 || options.batch == 0 {
        return Err(BenchError::InvalidSize {
            workload: W,
            n: options.buckets as u64,
            batch: options.batch,
        });
    }
    let mut server = SharedServer::start(&[DEVICE.to_owned()]).await?;
    let teams: Vec<(String, usize)> = (0..options.buckets)
        .map(|index| (team_name(index, options.buckets), 2))
        .collect();
    let names: Vec<String> = teams.iter().map(|(team, _)| team.clone()).collect();
    let keep: BTreeSet<String> = names.iter().cloned().collect();
    seed_teams(&mut server, &teams, 0).await?;
    server.grant(DEVICE, &names).await?;
    let mut expected = team_ids(&teams, &keep);
    let load_before = load_average();
    let started = Instant::now();
    let device = Device::open(W, &server, DEVICE, TASKS, "buckets.db", options.batch).await?;
    let report = device.sync.run().await.map_err(BenchError::sync(W))?;
    let initial = started.elapsed();
    let rows = expected.len() as u64;
    BenchError::verify(W, rows, "items pulled", rows, report.totals().pulled)?;
    device.verify(W, TASKS, &expected).await?;
    // The rounds write to teams spread over the range.
    let step = (options.buckets / options.rounds).max(1);
    let targets: Vec<String> = (0..options.rounds)
        .map(|k| names[(k * step) % names.len()].clone())
        .collect();
    let mut times = incremental_rounds(
        W,
        &mut server,
        &device,
        &targets,
        options.rounds,
        &mut expected,
    )
    .await?;
    let load_after = load_average();
    device.dispose().await;
    server.stop().await;
    let max = times.iter().max().copied().unwrap_or_default();
    Ok(W7BucketsLine {
        workload: W,
        buckets: options.buckets,
        rows,
        initial_s: (initial.as_secs_f64() * 1_000.0).round() / 1_000.0,
        incremental_ms: ms(median(&mut times)),
        incremental_max_ms: ms(max),
        rounds: options.rounds,
        load: [load_before, load_after],
    })
}

/// Runs W7-buckets (b): a user in 3 teams (of 2 rows) on one server whose other teams grow to
/// each size of `others` in turn; at each size, times incremental rounds.
///
/// # Errors
/// [`BenchError::InvalidSize`] for zero rounds or sizes not ascending; a server, store or sync
/// failure; [`BenchError::Verify`] when the device does not end with exactly its rows.
pub async fn run_w7_flat(options: &W7BucketsOptions) -> Result<Vec<W7FlatLine>, BenchError> {
    const W: &str = "W7-flat";
    if options.rounds == 0 || options.batch == 0 || !options.others.is_sorted() {
        return Err(BenchError::InvalidSize {
            workload: W,
            n: options.others.last().copied().unwrap_or(0) as u64,
            batch: options.batch,
        });
    }
    let mut server = SharedServer::start(&[DEVICE.to_owned()]).await?;
    let mine: Vec<String> = (0..3).map(|k| format!("mine{k}")).collect();
    let keep: BTreeSet<String> = mine.iter().cloned().collect();
    let my_teams: Vec<(String, usize)> = mine.iter().map(|t| (t.clone(), 2)).collect();
    seed_teams(&mut server, &my_teams, 0).await?;
    server.grant(DEVICE, &mine).await?;
    let mut expected = team_ids(&my_teams, &keep);
    let device = Device::open(W, &server, DEVICE, TASKS, "flat.db", options.batch).await?;
    device.sync.run().await.map_err(BenchError::sync(W))?;
    device.verify(W, TASKS, &expected).await?;
    let largest = options.others.last().copied().unwrap_or(0);
    let mut lines = Vec::with_capacity(options.others.len());
    let mut seeded = 0;
    for &others in &options.others {
        let teams: Vec<(String, usize)> = (seeded..others)
            .map(|index| (team_name(index, largest), 2))
            .collect();
        seed_teams(&mut server, &teams, 2 * seeded as u64 + 6).await?;
        seeded = others;
        // Not timed: the round that catches up after the seeding (nothing of the user's).
        device.sync.sync_now().await.map_err(BenchError::sync(W))?;
        let load_before = load_average();
        let mut times = incremental_rounds(
            W,
            &mut server,
            &device,
            &mine,
            options.rounds,
            &mut expected,
        )
        .await?;
        let max = times.iter().max().copied().unwrap_or_default();
        lines.push(W7FlatLine {
            workload: W,
            other_teams: others,
            server_rows: 2 * others as u64 + expected.len() as u64,
            incremental_ms: ms(median(&mut times)),
            incremental_max_ms: ms(max),
            rounds: options.rounds,
            load: [load_before, load_average()],
        });
    }
    device.dispose().await;
    server.stop().await;
    Ok(lines)
}

macro_rules! json_line {
    ($($line:ty),*) => {$(
        impl $line {
            /// The line as printed: compact JSON, no trailing newline.
            pub fn to_json(&self) -> String {
                // Numbers and strings only: always serialises.
                serde_json::to_string(self).expect("a line of numbers and strings serialises")
            }
        }
    )*};
}
json_line!(W7Line, W7MoveLine, W7BucketsLine, W7FlatLine);

impl W7Line {
    /// The line as a table row for people (stderr).
    pub fn table(&self) -> String {
        format!(
            "W7       teams {:>6}  server rows {:>9}  device rows {:>7}  shared {:>9.1} ms  \
             private {:>9.1} ms  ratio {:.3}  (goal <= 1.2)  storage alone: shared {:.1} ms, private \
             {:.1} ms  load {:.1}/{:.1}",
            self.teams,
            self.server_rows,
            self.device_rows,
            self.shared_ms,
            self.private_ms,
            self.ratio,
            self.storage_shared_ms,
            self.storage_private_ms,
            self.load[0],
            self.load[1]
        )
    }
}

impl W7MoveLine {
    /// The line as a table row for people (stderr).
    pub fn table(&self) -> String {
        format!(
            "W7-move  rows {:>8} (received {}, behind {})  median {:>7.3} s  {:>9} rows/s \
             (goal >= 100000)  runs {:?}  storage alone {:.3} s  load {:.1}/{:.1}",
            self.move_rows,
            self.rows_pulled,
            self.behind,
            self.seconds,
            self.rows_per_s,
            self.each_s,
            self.storage_s,
            self.load[0],
            self.load[1]
        )
    }
}

impl W7BucketsLine {
    /// The line as a table row for people (stderr).
    pub fn table(&self) -> String {
        format!(
            "W7-buckets  buckets {:>6}  rows {:>7}  initial {:>7.3} s  incremental median \
             {:>8.2} ms  max {:>8.2} ms  load {:.1}/{:.1}",
            self.buckets,
            self.rows,
            self.initial_s,
            self.incremental_ms,
            self.incremental_max_ms,
            self.load[0],
            self.load[1]
        )
    }
}

impl W7FlatLine {
    /// The line as a table row for people (stderr).
    pub fn table(&self) -> String {
        format!(
            "W7-flat  other teams {:>7}  server rows {:>7}  incremental median {:>8.2} ms  \
             max {:>8.2} ms  load {:.1}/{:.1}",
            self.other_teams,
            self.server_rows,
            self.incremental_ms,
            self.incremental_max_ms,
            self.load[0],
            self.load[1]
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn team_names_are_zero_padded_to_the_largest() {
        assert_eq!(team_name(42, 1_000), "t0042");
        assert_eq!(team_name(42, 100_000), "t00042");
        assert_eq!(team_name(3, 10), "t0003");
    }

    #[test]
    fn team_rows_interleave_the_teams_and_number_the_content_from_the_first_index() {
        let teams = [("a".to_owned(), 2), ("b".to_owned(), 3)];
        let rows: Vec<(&str, usize, u64)> = team_rows(&teams, 10).collect();
        assert_eq!(
            rows,
            [
                ("a", 0, 11),
                ("b", 0, 12),
                ("a", 1, 13),
                ("b", 1, 14),
                ("b", 2, 15)
            ]
        );
        let keep = BTreeSet::from(["b".to_owned()]);
        assert_eq!(
            team_ids(&teams, &keep),
            ["task-b-000000", "task-b-000001", "task-b-000002"]
        );
    }

    #[test]
    fn the_median_is_the_middle_sample() {
        let mut samples = [3, 1, 2].map(Duration::from_millis);
        assert_eq!(median(&mut samples), Duration::from_millis(2));
    }
}
