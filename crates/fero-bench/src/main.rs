//! The benchmark program: `fero-bench <workload> [--n N] [--batch B] [--runs R]`, or `all`;
//! `fero-bench W8|W9 [options]` for the scale workloads (see `fero_bench::scale`);
//! `fero-bench W7|W7-move|W7-buckets [options]` for shared collections (see `fero_bench::sharing`).
//!
//! With `--n`, the workload runs in this process (`--runs` times, median reported) and prints its
//! JSON line. Without it (and for `all`), every default size runs as `--runs` fresh child
//! processes of this binary, one run each: each line's peak RSS is that measurement's alone (the
//! highest of its runs), its time the median run's. A workload and its floor (W1 and W1-raw, W4
//! and W4-raw) alternate their runs.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Parser;
use fero_bench::end_to_end::{self, ClientOptions, ServeOptions};
use fero_bench::{BenchLine, RunOptions, Workload, scale};

#[derive(Debug, Parser)]
#[command(about = "fero's benchmark workloads (bench-spec.md); one JSON line per measurement")]
struct Cli {
    /// W1, W1-raw, W2, W3, W4, W4-raw, W5, W6, or all; W7, W7-move, W7-buckets (sharing) and W8,
    /// W9 (scale) take their own options (`fero-bench W8 --help`).
    workload: String,
    /// Items (N or M); without it, every default size runs, each in a fresh process.
    #[arg(long)]
    n: Option<u64>,
    /// Page size.
    #[arg(long, default_value_t = fero::DEFAULT_BATCH_SIZE)]
    batch: usize,
    /// Runs per measurement (the median is reported); default 3 in process, 1 end to end.
    #[arg(long)]
    runs: Option<u32>,
}

/// The reference server role, started by W4–W6 (not for direct use).
#[derive(Debug, Parser)]
struct ServeCli {
    /// The server's SQLite file.
    #[arg(long)]
    db: PathBuf,
    /// Items to seed before listening.
    #[arg(long)]
    n: u64,
}

/// W5's client role (not for direct use).
#[derive(Debug, Parser)]
struct ClientCli {
    /// The server's base URL.
    #[arg(long)]
    url: String,
    /// The client's SQLite file.
    #[arg(long)]
    db: PathBuf,
    /// Page size.
    #[arg(long)]
    batch: usize,
}

/// W8 and W9 (not part of `all`): scale figures of a real `fero-server` process.
#[derive(Debug, Parser)]
#[command(about = "W8 (change streams) or W9 (concurrent devices) against a fero-server child")]
struct ScaleCli {
    /// W8 or W9.
    workload: String,
    /// W8: change streams held open.
    #[arg(long, default_value_t = 10_000)]
    streams: usize,
    /// W8: streams of the one user pushed to.
    #[arg(long, default_value_t = 1_000)]
    listeners: usize,
    /// W8: pushes timed.
    #[arg(long, default_value_t = 20)]
    pushes: usize,
    /// W9: concurrent devices.
    #[arg(long, default_value_t = 200)]
    devices: usize,
    /// W9: users the devices are spread over.
    #[arg(long, default_value_t = 50)]
    users: usize,
    /// W9: changes per push.
    #[arg(long, default_value_t = 10)]
    batch: usize,
    /// W9: seconds every device pushes and pulls.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// W9: `sqlite`, or a PostgreSQL URL whose server gets a fresh database for the run
    /// (e.g. postgres://postgres@127.0.0.1:5432/test), dropped afterwards.
    #[arg(long, default_value = "sqlite")]
    db: String,
    /// W9 on PostgreSQL: the server's --pool-size (default: the server's own, 8).
    #[arg(long)]
    pool_size: Option<usize>,
    /// The fero-server binary (default: $FERO_SERVER_BIN, else next to this program).
    #[arg(long)]
    server_bin: Option<PathBuf>,
}

/// W7, W7-move and W7-buckets (not part of `all`): shared collections, in this process.
#[derive(Debug, Parser)]
#[command(
    about = "W7 (shared versus private initial sync), W7-move (rows/s of a grant), \
                   W7-buckets (10,000 buckets; pull latency flat in other teams)"
)]
struct SharingCli {
    /// W7, W7-move or W7-buckets.
    workload: String,
    /// W7: teams in `tasks`.
    #[arg(long, default_value_t = 1_000)]
    teams: usize,
    /// W7: rows of each team the device is not in.
    #[arg(long, default_value_t = 1_000)]
    rows: usize,
    /// W7: teams the device's user is in.
    #[arg(long, default_value_t = 3)]
    device_teams: usize,
    /// W7: rows of each of the device's teams (default: --rows).
    #[arg(long)]
    device_rows: Option<usize>,
    /// W7-move: rows of the team granted.
    #[arg(long, default_value_t = 100_000)]
    move_rows: usize,
    /// W7-move: the device's position is far behind the head when granted (see
    /// `W7MoveOptions::behind`).
    #[arg(long)]
    behind: bool,
    /// W7-buckets (a): teams of 2 rows granted to the user (0: skip).
    #[arg(long, default_value_t = 10_000)]
    buckets: usize,
    /// W7-buckets (b): numbers of other teams, ascending, comma-separated (empty: skip).
    #[arg(long, default_value = "1000,10000,100000", value_delimiter = ',')]
    others: Vec<usize>,
    /// Runs (W7: of each kind, alternating; W7-move: grants) or rounds (W7-buckets); the
    /// median is reported. Default 15, W7-move 5.
    #[arg(long)]
    runs: Option<usize>,
    /// The client's page size.
    #[arg(long, default_value_t = fero::DEFAULT_BATCH_SIZE)]
    batch: usize,
}

fn run_sharing() -> anyhow::Result<()> {
    use fero_bench::sharing;
    let cli = SharingCli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let workload = cli.workload.to_ascii_uppercase();
    runtime.block_on(async {
        match workload.as_str() {
            "W7" => {
                let options = sharing::W7Options {
                    teams: cli.teams,
                    rows: cli.rows,
                    device_teams: cli.device_teams,
                    device_rows: cli.device_rows.unwrap_or(cli.rows),
                    runs: cli.runs.unwrap_or(15),
                    batch: cli.batch,
                };
                let line = sharing::run_w7(&options).await?;
                eprintln!("{}", line.table());
                println!("{}", line.to_json());
            }
            "W7-MOVE" => {
                let options = sharing::W7MoveOptions {
                    move_rows: cli.move_rows,
                    runs: cli.runs.unwrap_or(5),
                    batch: cli.batch,
                    behind: cli.behind,
                    ..sharing::W7MoveOptions::default()
                };
                let line = sharing::run_w7_move(&options).await?;
                eprintln!("{}", line.table());
                println!("{}", line.to_json());
            }
            _ => {
                let options = sharing::W7BucketsOptions {
                    buckets: cli.buckets,
                    others: cli.others.clone(),
                    rounds: cli.runs.unwrap_or(15),
                    batch: cli.batch,
                };
                if cli.buckets > 0 {
                    let line = sharing::run_w7_buckets(&options).await?;
                    eprintln!("{}", line.table());
                    println!("{}", line.to_json());
                }
                if !cli.others.is_empty() {
                    for line in sharing::run_w7_flat(&options).await? {
                        eprintln!("{}", line.table());
                        println!("{}", line.to_json());
                    }
                }
            }
        }
        Ok::<(), anyhow::Error>(())
    })
}

fn run_scale() -> anyhow::Result<()> {
    let cli = ScaleCli::parse();
    let server_bin = cli.server_bin.unwrap_or_else(scale::server_bin);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let line = if cli.workload.eq_ignore_ascii_case("W8") {
        let options = scale::W8Options {
            streams: cli.streams,
            listeners: cli.listeners,
            pushes: cli.pushes,
            server_bin,
        };
        runtime.block_on(scale::run_w8(&options))?.to_json()
    } else {
        let db = if cli.db.eq_ignore_ascii_case("sqlite") {
            scale::ScaleDb::Sqlite
        } else {
            scale::ScaleDb::Postgres(cli.db)
        };
        let options = scale::W9Options {
            devices: cli.devices,
            users: cli.users,
            batch: cli.batch,
            duration: std::time::Duration::from_secs(cli.seconds),
            db,
            pool_size: cli.pool_size,
            server_bin,
        };
        runtime.block_on(scale::run_w9(&options))?.to_json()
    };
    println!("{line}");
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let first = std::env::args().nth(1).unwrap_or_default();
    if first.eq_ignore_ascii_case("W8") || first.eq_ignore_ascii_case("W9") {
        return run_scale();
    }
    if ["W7", "W7-move", "W7-buckets"]
        .iter()
        .any(|name| first.eq_ignore_ascii_case(name))
    {
        return run_sharing();
    }
    match std::env::args().nth(1).as_deref() {
        Some(end_to_end::SERVE_ROLE) => {
            let cli = ServeCli::parse_from(std::env::args().skip(1));
            return Ok(end_to_end::serve(&ServeOptions {
                db: cli.db,
                n: cli.n,
            })?);
        }
        Some(end_to_end::CLIENT_ROLE) => {
            let cli = ClientCli::parse_from(std::env::args().skip(1));
            return Ok(end_to_end::client(&ClientOptions {
                url: cli.url,
                db: cli.db,
                batch: cli.batch,
            })?);
        }
        _ => {}
    }
    let cli = Cli::parse();
    let schedule: Vec<(Workload, u64)> = if cli.workload.eq_ignore_ascii_case("all") {
        if cli.n.is_some() {
            bail!("`all` runs the default sizes; give --n with one workload instead");
        }
        fero_bench::default_schedule()
    } else {
        let workload = Workload::parse(&cli.workload).with_context(|| {
            format!(
                "unknown workload {:?}: use one of W1, W1-raw, W2, W3, W4, W4-raw, W5, W6, all (and W7, W7-move, W7-buckets, W8, W9)",
                cli.workload
            )
        })?;
        if let Some(n) = cli.n {
            let options = RunOptions::new(n)
                .batch(cli.batch)
                .runs(cli.runs.unwrap_or(workload.default_runs()));
            let measured = fero_bench::run(workload, options)?;
            println!("{}", measured.line.to_json());
            return Ok(());
        }
        workload
            .default_sizes()
            .iter()
            .map(|&n| (workload, n))
            .collect()
    };
    run_children(&schedule, cli.batch, cli.runs)
}

/// Runs each measurement as `runs` child processes of this binary (one run each, so every run
/// starts from a fresh heap), and prints the median run's line with the highest peak RSS of them.
/// A workload followed by its floor at the same size alternates runs with it (W1, W1-raw, W1,
/// …), so a slow spell of the machine hits both.
fn run_children(
    schedule: &[(Workload, u64)],
    batch: usize,
    runs: Option<u32>,
) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find this program's path to re-run it")?;
    let started = Instant::now();
    let mut failed = Vec::new();
    let mut at = 0;
    while at < schedule.len() {
        let (workload, n) = schedule[at];
        let group: Vec<Workload> = match schedule.get(at + 1) {
            Some(&(next, next_n)) if next_n == n && workload.floor() == Some(next) => {
                vec![workload, next]
            }
            _ => vec![workload],
        };
        at += group.len();
        let runs = runs.unwrap_or(workload.default_runs()).max(1);
        let mut lines: Vec<Vec<BenchLine>> = vec![Vec::new(); group.len()];
        'runs: for _ in 0..runs {
            for (member, &one) in group.iter().enumerate() {
                match run_child(&exe, one, n, batch) {
                    Ok(line) => lines[member].push(line),
                    Err(error) => {
                        eprintln!("{one} at n = {n} failed: {error:#}");
                        failed.push(format!("{one} n={n}"));
                        break 'runs;
                    }
                }
            }
        }
        for mut measured in lines {
            if measured.len() < runs as usize {
                continue;
            }
            let peak_rss_mb = measured.iter().map(|l| l.peak_rss_mb).fold(0.0, f64::max);
            measured.sort_by(|a, b| a.seconds.total_cmp(&b.seconds));
            let mut median = measured.swap_remove(measured.len() / 2);
            median.peak_rss_mb = peak_rss_mb;
            let mut out = std::io::stdout().lock();
            writeln!(out, "{}", median.to_json())?;
            out.flush()?;
        }
    }
    eprintln!(
        "{} measurement(s) in {:.1} s",
        schedule.len(),
        started.elapsed().as_secs_f64()
    );
    if !failed.is_empty() {
        bail!("failed: {}", failed.join(", "));
    }
    Ok(())
}

/// One run of `workload` at `n` in a child process; its JSON line.
fn run_child(exe: &Path, workload: Workload, n: u64, batch: usize) -> anyhow::Result<BenchLine> {
    let output = Command::new(exe)
        .args([workload.name(), "--n", &n.to_string()])
        .args(["--batch", &batch.to_string(), "--runs", "1"])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot start {}", exe.display()))?;
    if !output.status.success() {
        bail!("the child exited with {}", output.status);
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .last()
        .context("the child printed no JSON line")?;
    serde_json::from_str(line).with_context(|| format!("unreadable JSON line {line:?}"))
}
