//! `fero-server backup`: a consistent copy of a live SQLite database, through SQLite's online
//! backup API.
//!
//! The copy is one snapshot: all pages are copied in one backup step under one read transaction
//! of the source. In WAL mode (the server always opens its file in WAL mode) a reader does not
//! block writers, so the server keeps accepting pushes while the copy is made, and the copy
//! holds exactly the transactions committed before the step began: a consistent prefix of the
//! change feed, never half a push. The copy is written to a temporary file beside the
//! destination, checked with `PRAGMA integrity_check`, and only then renamed into place, so a
//! failed backup never leaves a file that looks like a good one.
//!
//! [`restore_sqlite`] (`fero-server restore`) copies a backup back over the server's database
//! through the same API, while the server is stopped; the caller then gives the database a new
//! restore epoch ([`Storage::mark_restored`](crate::Storage::mark_restored)), so that devices
//! holding cursors of the lost writes resync and push back what the backup lacks.
//!
//! PostgreSQL is backed up with its own tools (`pg_dump --format=custom`, `pg_restore`); see
//! `docs/operations.md`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

/// How often a busy backup step is tried before the backup gives up: a step is busy only while
/// another connection holds an exclusive lock (a checkpoint in `TRUNCATE` mode, a schema
/// migration), which lasts milliseconds.
const BUSY_ATTEMPTS: u32 = 200;

/// The pause between busy attempts.
const BUSY_PAUSE: Duration = Duration::from_millis(50);

/// What [`backup_sqlite`] copied.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BackupReport {
    /// The file written.
    pub to: PathBuf,
    /// Database pages copied.
    pub pages: u64,
    /// Size of the copy in bytes.
    pub bytes: u64,
}

/// Why a backup failed. Nothing is left at the destination when it does.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// `--db` is a PostgreSQL URL or `:memory:`.
    #[error(
        "cannot back up {db:?} with `fero-server backup`: it copies SQLite database files only; \
         back up PostgreSQL with `pg_dump --format=custom` (see docs/operations.md)"
    )]
    NotSqliteFile {
        /// The `--db` given.
        db: String,
    },
    /// The source file does not exist.
    #[error("the database {path} does not exist; pass the --db the server runs with")]
    SourceMissing {
        /// The path given.
        path: PathBuf,
    },
    /// The backup file to restore from does not exist.
    #[error("the backup {path} does not exist; pass the file `fero-server backup --to` wrote")]
    BackupMissing {
        /// The path given.
        path: PathBuf,
    },
    /// The destination already exists.
    #[error("{path} already exists; choose a new file name or remove it first")]
    DestinationExists {
        /// The destination.
        path: PathBuf,
    },
    /// SQLite failed to open, copy or check.
    #[error("backup of {from} to {to} failed while {step}: {source}")]
    Sqlite {
        /// The source database.
        from: PathBuf,
        /// The destination.
        to: PathBuf,
        /// What was being done.
        step: &'static str,
        /// SQLite's error.
        #[source]
        source: Box<rusqlite::Error>,
    },
    /// The source stayed locked.
    #[error(
        "backup of {from} gave up: the database stayed locked by another connection for \
         {attempts} attempts; try again"
    )]
    Busy {
        /// The source database.
        from: PathBuf,
        /// Attempts made.
        attempts: u32,
    },
    /// The copy failed its integrity check.
    #[error(
        "the copy of {from} failed SQLite's integrity check ({report}); the source may be damaged: run `PRAGMA integrity_check` on it"
    )]
    Integrity {
        /// The source database.
        from: PathBuf,
        /// The first lines of the check's report.
        report: String,
    },
    /// The finished copy could not be moved into place.
    #[error("cannot move the finished copy to {to}: {source}")]
    Io {
        /// The destination.
        to: PathBuf,
        /// The file system's error.
        #[source]
        source: std::io::Error,
    },
}

/// Copies the SQLite database `db` to a new file `to`, consistently, while other connections
/// (a running fero-server) keep reading and writing it; see the [module](self) docs.
///
/// Blocking: call it from a thread (or `spawn_blocking`), not from an async task.
///
/// # Errors
/// [`BackupError`] naming the step that failed; the destination is then left absent.
///
/// # Examples
/// ```
/// use fero_server::backup::backup_sqlite;
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let db = dir.path().join("sync.db");
/// drop(fero_server::SqliteStorage::open(&db)?);
/// let report = backup_sqlite(&db, &dir.path().join("sync.backup.db"))?;
/// assert!(report.pages > 0);
/// # Ok(()) }
/// ```
pub fn backup_sqlite(db: &Path, to: &Path) -> Result<BackupReport, BackupError> {
    let db_text = db.to_string_lossy();
    if db_text == ":memory:"
        || db_text.starts_with("postgres://")
        || db_text.starts_with("postgresql://")
    {
        return Err(BackupError::NotSqliteFile {
            db: db_text.into_owned(),
        });
    }
    if !db.is_file() {
        return Err(BackupError::SourceMissing {
            path: db.to_path_buf(),
        });
    }
    if to.exists() {
        return Err(BackupError::DestinationExists {
            path: to.to_path_buf(),
        });
    }
    let partial = partial_path(to);
    let result = copy_and_check(db, to, &partial);
    if result.is_err() {
        // Best effort: the partial file is ours, and may not exist.
        let _ = std::fs::remove_file(&partial);
    }
    result
}

/// Copies every page of `source` into `target` in one backup step (one read transaction of the
/// source: one snapshot), retrying [`BUSY_ATTEMPTS`] times while a lock is held; the number of
/// pages copied. `sqlite` turns a failed `step` into the caller's error; `busy` is the database
/// named by [`BackupError::Busy`].
fn copy_pages(
    source: &Connection,
    target: &mut Connection,
    starting: &'static str,
    sqlite: &dyn Fn(&'static str, rusqlite::Error) -> BackupError,
    busy: &Path,
) -> Result<u64, BackupError> {
    let backup = Backup::new(source, target).map_err(|error| sqlite(starting, error))?;
    let mut attempts = 0;
    loop {
        // -1: every page in one step.
        match backup
            .step(-1)
            .map_err(|error| sqlite("copying pages", error))?
        {
            StepResult::Done => break,
            StepResult::More => {}
            _ => {
                attempts += 1;
                if attempts >= BUSY_ATTEMPTS {
                    return Err(BackupError::Busy {
                        from: busy.to_path_buf(),
                        attempts,
                    });
                }
                std::thread::sleep(BUSY_PAUSE);
            }
        }
    }
    Ok(u64::try_from(backup.progress().pagecount).unwrap_or_default())
}

/// `to` with `.partial` appended to its file name.
fn partial_path(to: &Path) -> PathBuf {
    let mut name = to.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    to.with_file_name(name)
}

fn copy_and_check(db: &Path, to: &Path, partial: &Path) -> Result<BackupReport, BackupError> {
    let sqlite = |step: &'static str| {
        move |source: rusqlite::Error| BackupError::Sqlite {
            from: db.to_path_buf(),
            to: to.to_path_buf(),
            step,
            source: Box::new(source),
        }
    };
    // Opened read-write (a read-only connection to a WAL file cannot always create the shared
    // memory index), but it never writes: `query_only`.
    let source = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_WRITE)
        .map_err(sqlite("opening the source"))?;
    source
        .busy_timeout(Duration::from_secs(5))
        .and_then(|()| source.execute_batch("PRAGMA query_only = ON;"))
        .map_err(sqlite("opening the source"))?;
    let _ = std::fs::remove_file(partial);
    let mut copy = Connection::open(partial).map_err(sqlite("creating the copy"))?;
    let pages = copy_pages(
        &source,
        &mut copy,
        "starting the backup",
        &|step, error| sqlite(step)(error),
        db,
    )?;
    let report: String = {
        let mut statement = copy
            .prepare("PRAGMA integrity_check")
            .map_err(sqlite("checking the copy"))?;
        let lines = statement
            .query_map([], |row| row.get::<_, String>(0))
            .map_err(sqlite("checking the copy"))?
            .take(5)
            .collect::<Result<Vec<_>, _>>()
            .map_err(sqlite("checking the copy"))?;
        lines.join("; ")
    };
    if report != "ok" {
        return Err(BackupError::Integrity {
            from: db.to_path_buf(),
            report,
        });
    }
    // The copy carries the source's WAL flag; fold everything into the main file so the backup
    // is one self-contained file.
    copy.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
        .map_err(sqlite("finishing the copy"))?;
    copy.close()
        .map_err(|(_, source)| sqlite("closing the copy")(source))?;
    std::fs::rename(partial, to).map_err(|source| BackupError::Io {
        to: to.to_path_buf(),
        source,
    })?;
    let bytes = std::fs::metadata(to).map(|m| m.len()).unwrap_or_default();
    Ok(BackupReport {
        to: to.to_path_buf(),
        pages,
        bytes,
    })
}

/// What [`restore_sqlite`] copied.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RestoreReport {
    /// The database file written.
    pub db: PathBuf,
    /// Database pages copied.
    pub pages: u64,
}

/// Copies the SQLite backup `from` over the database `db` (created when missing) through
/// SQLite's backup API, checks the result with `PRAGMA integrity_check`, and folds it into the
/// main file. The server must be stopped: a server still running on `db` would keep serving
/// from its own snapshot and caches. Give the database a new restore epoch afterwards
/// ([`Storage::mark_restored`](crate::Storage::mark_restored)); `fero-server restore` does both.
///
/// Blocking: call it from a thread (or `spawn_blocking`), not from an async task.
///
/// # Errors
/// [`BackupError`] naming the step that failed; `db` may then hold a partial copy (SQLite's
/// backup replaces the destination in one transaction, so a failure before the end leaves it
/// as it was, but an integrity failure leaves the damaged copy): restore again.
///
/// # Examples
/// ```
/// use fero_server::backup::{backup_sqlite, restore_sqlite};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let db = dir.path().join("sync.db");
/// drop(fero_server::SqliteStorage::open(&db)?);
/// backup_sqlite(&db, &dir.path().join("sync.backup.db"))?;
/// let report = restore_sqlite(&dir.path().join("sync.backup.db"), &db)?;
/// assert!(report.pages > 0);
/// # Ok(()) }
/// ```
pub fn restore_sqlite(from: &Path, db: &Path) -> Result<RestoreReport, BackupError> {
    let db_text = db.to_string_lossy();
    if db_text == ":memory:"
        || db_text.starts_with("postgres://")
        || db_text.starts_with("postgresql://")
    {
        return Err(BackupError::NotSqliteFile {
            db: db_text.into_owned(),
        });
    }
    if !from.is_file() {
        return Err(BackupError::BackupMissing {
            path: from.to_path_buf(),
        });
    }
    let sqlite = |step: &'static str| {
        move |source: rusqlite::Error| BackupError::Sqlite {
            from: from.to_path_buf(),
            to: db.to_path_buf(),
            step,
            source: Box::new(source),
        }
    };
    let source = Connection::open_with_flags(from, OpenFlags::SQLITE_OPEN_READ_WRITE)
        .map_err(sqlite("opening the backup"))?;
    source
        .busy_timeout(Duration::from_secs(5))
        .and_then(|()| source.execute_batch("PRAGMA query_only = ON;"))
        .map_err(sqlite("opening the backup"))?;
    let mut target = Connection::open(db).map_err(sqlite("opening the database"))?;
    target
        .busy_timeout(Duration::from_secs(5))
        .map_err(sqlite("opening the database"))?;
    let pages = copy_pages(
        &source,
        &mut target,
        "starting the restore",
        &|step, error| sqlite(step)(error),
        db,
    )?;
    let report: String = target
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .map_err(sqlite("checking the restored database"))?;
    if report != "ok" {
        return Err(BackupError::Integrity {
            from: from.to_path_buf(),
            report,
        });
    }
    target
        .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
        .map_err(sqlite("finishing the restore"))?;
    target
        .close()
        .map_err(|(_, source)| sqlite("closing the database")(source))?;
    Ok(RestoreReport {
        db: db.to_path_buf(),
        pages,
    })
}
