//! `fero-server`: the reference sync server as a program.
//!
//! ```text
//! fero-server --db sync.db --listen 127.0.0.1:7700 --tokens tokens.toml
//! FERO_TOKENS="tok1=alice,tok2=bob" fero-server --db :memory:
//! fero-server --db postgres://fero@db.internal:5432/fero --tokens tokens.toml
//! fero-server --db sync.db --tokens tokens.toml --mutation-retention 90d
//! fero-server --db sync.db --tokens tokens.toml --tombstone-retention off
//! fero-server purge-tombstones --db sync.db --older-than 30d
//! fero-server --db sync.db --tokens tokens.toml --metrics-token s3cret --drain-period 10s
//! fero-server backup --db sync.db --to sync-2026-12-03.db
//! fero-server --db sync.db --tokens tokens.toml --cors-origin http://localhost:5173
//! fero-server --db sync.db --jwt-secret-file jwt.secret --jwt-audience fero
//! fero-server --db sync.db --jwks jwks.json --jwt-issuer https://id.example.com/
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use fero::{Clock, SystemClock, Timestamp};
use fero_server::{
    CorsOrigins, DEFAULT_BODY_LIMIT, DEFAULT_MUTATION_RETENTION, DEFAULT_POOL_SIZE, JwtVerifier,
    PostgresNotifier, PostgresStorage, Server, SqliteStorage, Storage, Tokens,
};

/// Reference server of fero's HTTP sync protocol (docs/protocol.md).
///
/// Serves /v1/collections/{name}/pull, /push, /digest, the /v1/changes event stream and
/// /healthz. Every /v1 request needs `Authorization: Bearer <token>`: a static token (--tokens,
/// FERO_TOKENS) or a JWT (--jwt-secret-file, --jwks) whose `sub` is the user; users never see
/// each other's rows. Stops gracefully on Ctrl-C or SIGTERM.
#[derive(Debug, Parser)]
#[command(name = "fero-server", version, about, long_about)]
struct Cli {
    /// Something other than serving; without one, the server serves.
    #[command(subcommand)]
    command: Option<Command>,

    /// Where rows live: a SQLite database file, created if missing (WAL mode); `:memory:` to
    /// keep everything in memory until the server stops; or a PostgreSQL URL
    /// (`postgres://user@host:port/database`), which several fero-server processes may share:
    /// the schema is created or migrated at start, and change streams hear of pushes handled by
    /// any of them.
    #[arg(long, value_name = "PATH|URL", default_value = "fero.db")]
    db: String,

    /// PostgreSQL connections this process opens at most (with a postgres:// --db).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_POOL_SIZE)]
    pool_size: usize,

    /// Address and port to listen on (port 0 picks a free one; the address is printed).
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:7700")]
    listen: SocketAddr,

    /// TOML token file: a `[tokens]` table of `"secret-token" = "alice"` lines.
    #[arg(long, value_name = "FILE")]
    tokens: Option<PathBuf>,

    /// Tokens inline as `tok1=alice,tok2=bob`, added to those of --tokens.
    #[arg(
        long = "token-list",
        value_name = "LIST",
        env = "FERO_TOKENS",
        hide_env_values = true
    )]
    token_list: Option<String>,

    /// Accept HS256 JWTs signed with the secret in this file (at least 32 bytes; a trailing
    /// newline is ignored). The token's `sub` is the user; its `exp` is required.
    #[arg(long, value_name = "FILE")]
    jwt_secret_file: Option<PathBuf>,

    /// The HS256 secret itself, for when a file is not practical; prefer --jwt-secret-file
    /// (a command line is visible to other local users, so set FERO_JWT_SECRET instead).
    #[arg(
        long,
        value_name = "SECRET",
        env = "FERO_JWT_SECRET",
        hide_env_values = true,
        conflicts_with = "jwt_secret_file"
    )]
    jwt_secret: Option<String>,

    /// Accept RS256 and ES256 JWTs signed by the keys of this JWKS file (`{"keys": [...]}`),
    /// chosen by the token's `kid`; a token naming an unknown kid is refused.
    #[arg(long, value_name = "FILE")]
    jwks: Option<PathBuf>,

    /// Refuse JWTs whose `aud` does not name this value.
    #[arg(long, value_name = "AUDIENCE")]
    jwt_audience: Option<String>,

    /// Refuse JWTs whose `iss` is not this value.
    #[arg(long, value_name = "ISSUER")]
    jwt_issuer: Option<String>,

    /// Largest accepted request body in bytes; larger ones get 413 body_too_large.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_BODY_LIMIT)]
    body_limit: usize,

    /// How long the answer to a pushed change is kept, so that a client retrying a push whose
    /// response it lost gets the original answer; older answers are pruned every hour, and a
    /// retry after that is answered as a conflict with the server's current row. Seconds
    /// (`2592000`), or a number with a unit (`30d`, `12h`, `90m`, `1d 12h`). Default: 30 days.
    #[arg(
        long,
        value_name = "DURATION",
        value_parser = parse_retention,
        default_value = "30d"
    )]
    mutation_retention: Duration,

    /// How long a tombstone (a deleted row) is kept; older ones are purged every hour, and a
    /// device whose checkpoint is behind a purged one gets 410 resync_required and pulls the
    /// collection again. Seconds or a number with a unit (`90d`, `12h`), or `off` to keep every
    /// tombstone. Default: 90 days.
    #[arg(
        long,
        value_name = "DURATION|off",
        value_parser = parse_tombstone_retention,
        default_value = "90d"
    )]
    tombstone_retention: TombstoneRetention,

    /// A bearer token that GET /metrics requires; without it /metrics is open to anyone who
    /// reaches the port (it shows counts, never rows).
    #[arg(
        long,
        value_name = "TOKEN",
        env = "FERO_METRICS_TOKEN",
        hide_env_values = true
    )]
    metrics_token: Option<String>,

    /// After Ctrl-C or SIGTERM, keep serving this long with GET /readyz answering 503, so a load
    /// balancer takes the process out before it stops accepting connections. Seconds or a
    /// number with a unit (`10s`); default 0: stop at once.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "0")]
    drain_period: Duration,

    /// A browser origin allowed to call the server cross-origin (`http://localhost:5173`);
    /// repeat it, or list origins comma-separated in FERO_CORS_ORIGINS; `*` allows any origin.
    /// Preflights are answered before authentication. Default: none (no CORS headers).
    #[arg(
        long = "cors-origin",
        value_name = "ORIGIN",
        env = "FERO_CORS_ORIGINS",
        value_delimiter = ','
    )]
    cors_origins: Vec<String>,

    /// Sync rules (TOML of CEL expressions): the collections they name are shared by bucket
    /// (teams, projects, everyone) instead of private to each user; see docs/sharing.md. The
    /// file is checked at start, and a bad one is refused with an error naming its line.
    /// Default: none (every collection private to its user).
    #[arg(long, value_name = "FILE", env = "FERO_RULES")]
    rules: Option<PathBuf>,
}

/// `fero-server backup`.
#[derive(Debug, Args)]
struct BackupArgs {
    /// The SQLite database file the server runs with.
    #[arg(long, value_name = "PATH")]
    db: PathBuf,
    /// The new file to write; it must not exist.
    #[arg(long, value_name = "FILE")]
    to: PathBuf,
}

/// One-shot commands.
#[derive(Debug, Subcommand)]
enum Command {
    /// Deletes the tombstones deleted more than --older-than ago, raises the purge horizons
    /// (clients behind them get 410 resync_required), prints how many went, and exits. Safe
    /// while servers run on the same database.
    PurgeTombstones {
        /// The database: a SQLite file or a postgres:// URL, as for serving.
        #[arg(long, value_name = "PATH|URL")]
        db: String,
        /// Purge tombstones deleted longer ago than this: seconds or a number with a unit
        /// (`30d`, `12h`).
        #[arg(long, value_name = "DURATION", value_parser = parse_retention)]
        older_than: Duration,
    },
    /// Copy a SQLite database consistently while the server runs (SQLite's online backup API);
    /// back up PostgreSQL with pg_dump instead (docs/operations.md).
    Backup(BackupArgs),
    /// Copy a SQLite backup over the database while the server is stopped (SQLite's backup
    /// API), then give it a new restore epoch so that devices resync and push back what the
    /// backup lacks. For PostgreSQL, pg_restore and then `mark-restored`.
    Restore {
        /// The backup file `fero-server backup --to` wrote.
        #[arg(long, value_name = "BACKUP")]
        from: PathBuf,
        /// The SQLite database file the server runs with (replaced).
        #[arg(long, value_name = "PATH")]
        db: PathBuf,
    },
    /// Give a database restored by other means (pg_restore, a file copy) a new restore epoch:
    /// every cursor issued before is answered 410 resync_required (server_behind), so devices
    /// pull again and push back the rows the database lost. Run it before serving again.
    MarkRestored {
        /// The database: a SQLite file or a postgres:// URL, as for serving.
        #[arg(long, value_name = "PATH|URL")]
        db: String,
    },
}

/// `--tombstone-retention`: a duration, or off.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
struct TombstoneRetention(Option<Duration>);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    if let Some(command) = cli.command {
        return run_command(command).await;
    }

    let mut tokens = Tokens::new();
    if let Some(path) = &cli.tokens {
        tokens.merge(Tokens::load_toml(path)?)?;
    }
    if let Some(list) = &cli.token_list {
        tokens.merge(Tokens::parse_list(list)?)?;
    }
    let jwt = jwt_verifier(&cli)?;
    if tokens.is_empty() && jwt.is_none() {
        anyhow::bail!(
            "no tokens: pass --tokens tokens.toml or set FERO_TOKENS=\"token=user,...\", and/or \
             accept JWTs with --jwt-secret-file or --jwks"
        );
    }

    let builder = Server::builder().tokens(tokens);
    let builder = match jwt {
        Some(verifier) => builder.jwt(verifier),
        None => builder,
    };
    let builder = builder
        .body_limit(cli.body_limit)
        .mutation_retention(cli.mutation_retention)
        .tombstone_retention(cli.tombstone_retention.0)
        .drain_period(cli.drain_period)
        .cors_origins(CorsOrigins::parse(&cli.cors_origins)?);
    let builder = match &cli.metrics_token {
        Some(token) => builder.metrics_token(token.clone()),
        None => builder,
    };
    let builder = match &cli.rules {
        Some(path) => {
            let rules = fero_server::Rules::load(path)?;
            tracing::info!(
                rules = %path.display(),
                shared = ?rules.collections().map(|c| c.name()).collect::<Vec<_>>(),
                "sync rules loaded"
            );
            builder.sharing(Arc::new(rules))
        }
        None => builder,
    };
    let builder = if is_postgres_url(&cli.db) {
        let storage = PostgresStorage::builder(&cli.db)
            .pool_size(cli.pool_size)
            .connect()
            .await?;
        // Connected after the storage, which created the tables its catch-up reads.
        let notifier = PostgresNotifier::listen(&cli.db).await?;
        builder.storage(storage).notifier(Arc::new(notifier))
    } else {
        builder.storage(SqliteStorage::open(PathBuf::from(&cli.db))?)
    };
    let server = builder.build()?;
    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cli.listen))?;
    let address = listener
        .local_addr()
        .context("the listener has no address")?;
    // One line on stdout, for scripts and tests that start the server on port 0.
    println!("fero-server listening on http://{address}");
    tracing::info!(
        %address,
        db = %redact(&cli.db),
        mutation_retention = %humantime::format_duration(cli.mutation_retention),
        tombstone_retention = %cli.tombstone_retention.0.map_or_else(
            || "off".to_owned(),
            |retention| humantime::format_duration(retention).to_string()
        ),
        "serving"
    );
    server.serve(listener, shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

/// The JWT verifier of `--jwt-secret-file`/`FERO_JWT_SECRET` and `--jwks`, if either is given.
fn jwt_verifier(cli: &Cli) -> anyhow::Result<Option<JwtVerifier>> {
    if cli.jwt_secret_file.is_none() && cli.jwt_secret.is_none() && cli.jwks.is_none() {
        if cli.jwt_audience.is_some() || cli.jwt_issuer.is_some() {
            anyhow::bail!(
                "--jwt-audience and --jwt-issuer need a JWT key: --jwt-secret-file or --jwks"
            );
        }
        return Ok(None);
    }
    let mut builder = JwtVerifier::builder();
    if let Some(path) = &cli.jwt_secret_file {
        builder = builder.hs256_secret_file(path)?;
    }
    if let Some(secret) = &cli.jwt_secret {
        builder = builder.hs256_secret(secret.trim_end_matches(['\n', '\r']));
    }
    if let Some(path) = &cli.jwks {
        builder = builder.jwks_file(path)?;
    }
    if let Some(audience) = &cli.jwt_audience {
        builder = builder.audience(audience.clone());
    }
    if let Some(issuer) = &cli.jwt_issuer {
        builder = builder.issuer(issuer.clone());
    }
    Ok(Some(builder.build()?))
}

/// `--mutation-retention`: whole seconds, or a duration with units (`30d`, `12h 30m`); above
/// zero.
fn parse_retention(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let retention = match text.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => humantime::parse_duration(text).map_err(|error| {
            format!("{error}; write seconds (2592000) or a number with a unit (30d, 12h, 90m)")
        })?,
    };
    if retention.is_zero() {
        return Err(format!(
            "must be above zero (the default is {})",
            humantime::format_duration(DEFAULT_MUTATION_RETENTION)
        ));
    }
    Ok(retention)
}

/// Runs a one-shot command.
async fn run_command(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Backup(args) => {
            let report = fero_server::backup::backup_sqlite(&args.db, &args.to)?;
            println!(
                "backed up {} to {} ({} pages, {} bytes, integrity ok)",
                args.db.display(),
                report.to.display(),
                report.pages,
                report.bytes
            );
            Ok(())
        }
        Command::Restore { from, db } => {
            let (source, target) = (from.clone(), db.clone());
            let report = tokio::task::spawn_blocking(move || {
                fero_server::backup::restore_sqlite(&source, &target)
            })
            .await
            .context("the restore task failed")??;
            let epoch = SqliteStorage::open(&db)?
                .mark_restored()
                .await
                .with_context(|| format!("marking {} restored", db.display()))?;
            println!(
                "restored {} from {} ({} pages, integrity ok); new restore epoch {epoch}",
                db.display(),
                from.display(),
                report.pages
            );
            Ok(())
        }
        Command::MarkRestored { db } => {
            let storage = open_existing(&db).await?;
            let epoch = storage
                .mark_restored()
                .await
                .with_context(|| format!("marking {} restored", redact(&db)))?;
            println!(
                "marked {} restored: new restore epoch {epoch}; devices resync on their next pull",
                redact(&db)
            );
            Ok(())
        }
        Command::PurgeTombstones { db, older_than } => {
            let storage = open_existing(&db).await?;
            let age = u64::try_from(older_than.as_millis()).unwrap_or(u64::MAX);
            let deleted_before = Timestamp(SystemClock.now().0.saturating_sub(age));
            let report = storage
                .purge_tombstones_deleted_before(deleted_before)
                .await
                .with_context(|| format!("purging tombstones in {}", redact(&db)))?;
            println!(
                "purged {} tombstones deleted more than {} ago, in {} collections",
                report.purged,
                humantime::format_duration(older_than),
                report.collections
            );
            Ok(())
        }
    }
}

/// The storage of an existing database, for a one-shot command.
async fn open_existing(db: &str) -> anyhow::Result<Box<dyn Storage>> {
    if is_postgres_url(db) {
        return Ok(Box::new(
            PostgresStorage::builder(db).pool_size(1).connect().await?,
        ));
    }
    let path = PathBuf::from(db);
    // Opening creates a missing file; a command on a database that is not there is a typo,
    // not an empty database.
    if !path.exists() {
        anyhow::bail!("no database at {db:?}; pass the --db the server runs on");
    }
    Ok(Box::new(SqliteStorage::open(path)?))
}

/// `--tombstone-retention`: `off`, or a duration as [`parse_retention`] reads it.
fn parse_tombstone_retention(text: &str) -> Result<TombstoneRetention, String> {
    if text.trim().eq_ignore_ascii_case("off") {
        return Ok(TombstoneRetention(None));
    }
    parse_retention(text).map(|retention| TombstoneRetention(Some(retention)))
}

/// `--drain-period`: whole seconds, or a duration with units (`10s`, `1m`); zero allowed.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    match text.parse::<u64>() {
        Ok(seconds) => Ok(Duration::from_secs(seconds)),
        Err(_) => humantime::parse_duration(text)
            .map_err(|error| format!("{error}; write seconds (10) or a number with a unit (10s)")),
    }
}

/// `--db` names a PostgreSQL database rather than a SQLite file.
fn is_postgres_url(db: &str) -> bool {
    db.starts_with("postgres://") || db.starts_with("postgresql://")
}

/// `--db` for the log: a PostgreSQL URL loses its password.
fn redact(db: &str) -> String {
    let Some((scheme, rest)) = db.split_once("://") else {
        return db.to_owned();
    };
    // The last '@' ends the credentials: a password may hold one.
    match rest.rsplit_once('@') {
        Some((credentials, host)) if credentials.contains(':') => {
            let user = credentials.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{host}")
        }
        _ => db.to_owned(),
    }
}

/// Completes on Ctrl-C or, on Unix, SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C; stop the server with SIGTERM");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM; stop the server with Ctrl-C");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_postgres_url_loses_its_password_in_the_log() {
        assert_eq!(
            redact("postgres://fero:s3cr@t@db:5432/fero"),
            "postgres://fero:***@db:5432/fero"
        );
        assert_eq!(
            redact("postgres://fero@db:5432/fero"),
            "postgres://fero@db:5432/fero"
        );
        assert_eq!(redact("sync.db"), "sync.db");
    }

    #[test]
    fn mutation_retention_takes_seconds_or_units() {
        assert_eq!(parse_retention("3600"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_retention("30d"), Ok(DEFAULT_MUTATION_RETENTION));
        assert_eq!(
            parse_retention("1d 12h"),
            Ok(Duration::from_secs(36 * 3600))
        );
        assert_eq!(parse_retention("90m"), Ok(Duration::from_secs(90 * 60)));
        assert!(parse_retention("0").is_err_and(|e| e.contains("above zero")));
        assert!(parse_retention("0s").is_err());
        assert!(parse_retention("soon").is_err_and(|e| e.contains("30d")));
        let cli = Cli::try_parse_from(["fero-server"]).unwrap();
        assert_eq!(cli.mutation_retention, DEFAULT_MUTATION_RETENTION);
        let cli = Cli::try_parse_from(["fero-server", "--mutation-retention", "7d"]).unwrap();
        assert_eq!(cli.mutation_retention, Duration::from_secs(7 * 24 * 3600));
    }

    #[test]
    fn tombstone_retention_takes_a_duration_or_off() {
        let cli = Cli::try_parse_from(["fero-server"]).unwrap();
        assert_eq!(
            cli.tombstone_retention,
            TombstoneRetention(Some(fero_server::DEFAULT_TOMBSTONE_RETENTION))
        );
        let cli = Cli::try_parse_from(["fero-server", "--tombstone-retention", "off"]).unwrap();
        assert_eq!(cli.tombstone_retention, TombstoneRetention(None));
        let cli = Cli::try_parse_from(["fero-server", "--tombstone-retention", "7d"]).unwrap();
        assert_eq!(
            cli.tombstone_retention,
            TombstoneRetention(Some(Duration::from_secs(7 * 24 * 3600)))
        );
        assert!(Cli::try_parse_from(["fero-server", "--tombstone-retention", "0"]).is_err());
        let cli = Cli::try_parse_from([
            "fero-server",
            "purge-tombstones",
            "--db",
            "x.db",
            "--older-than",
            "30d",
        ])
        .unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::PurgeTombstones { ref db, older_than })
                if db == "x.db" && older_than == Duration::from_secs(30 * 24 * 3600)
        ));
    }

    #[test]
    fn backup_is_a_subcommand_and_serving_the_default() {
        let cli = Cli::try_parse_from(["fero-server", "--db", "a.db"]).unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.drain_period, Duration::ZERO);
        let cli =
            Cli::try_parse_from(["fero-server", "backup", "--db", "a.db", "--to", "b.db"]).unwrap();
        let Some(Command::Backup(args)) = cli.command else {
            panic!("expected the backup subcommand");
        };
        assert_eq!((args.db, args.to), ("a.db".into(), "b.db".into()));
        assert!(Cli::try_parse_from(["fero-server", "backup", "--db", "a.db"]).is_err());
        let cli = Cli::try_parse_from(["fero-server", "--drain-period", "10s"]).unwrap();
        assert_eq!(cli.drain_period, Duration::from_secs(10));
    }

    #[test]
    fn cors_origins_repeat_or_come_comma_separated() {
        let cli = Cli::try_parse_from([
            "fero-server",
            "--cors-origin",
            "http://localhost:5173",
            "--cors-origin",
            "https://a.example,https://b.example",
        ])
        .unwrap();
        assert_eq!(
            cli.cors_origins,
            [
                "http://localhost:5173",
                "https://a.example",
                "https://b.example"
            ]
        );
        assert_eq!(CorsOrigins::parse(&cli.cors_origins).unwrap().len(), 3);
        let cli = Cli::try_parse_from(["fero-server"]).unwrap();
        assert!(CorsOrigins::parse(&cli.cors_origins).unwrap().is_empty());
    }

    #[test]
    fn jwt_flags_build_a_verifier_and_audience_alone_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("jwt.secret");
        std::fs::write(&secret, "0123456789abcdef0123456789abcdef\n").unwrap();
        let cli = Cli::try_parse_from([
            "fero-server",
            "--jwt-secret-file",
            secret.to_str().unwrap(),
            "--jwt-audience",
            "fero",
        ])
        .unwrap();
        assert!(jwt_verifier(&cli).unwrap().is_some());
        let cli = Cli::try_parse_from(["fero-server"]).unwrap();
        assert!(jwt_verifier(&cli).unwrap().is_none());
        let cli = Cli::try_parse_from(["fero-server", "--jwt-issuer", "x"]).unwrap();
        assert!(jwt_verifier(&cli).is_err());
        std::fs::write(&secret, "short\n").unwrap();
        let cli =
            Cli::try_parse_from(["fero-server", "--jwt-secret-file", secret.to_str().unwrap()])
                .unwrap();
        let error = jwt_verifier(&cli).unwrap_err().to_string();
        assert!(error.contains("32 bytes"), "{error}");
    }

    #[test]
    fn only_postgres_urls_select_postgres() {
        assert!(is_postgres_url("postgres://u@h/d"));
        assert!(is_postgres_url("postgresql://u@h/d"));
        assert!(!is_postgres_url("postgres.db"));
        assert!(!is_postgres_url(":memory:"));
    }
}
