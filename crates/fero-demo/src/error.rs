//! [`DemoError`]: what can stop the story, step by step.

use std::path::PathBuf;
use std::time::Duration;

/// Why the demo stopped before its summary. A convergence mismatch is not an error: it is
/// reported in the [`Summary`](crate::Summary) (`converged = false`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DemoError {
    /// A size option is too small for the story.
    #[error("{option} {value} is too small: {why}; use at least {min}")]
    TooSmall {
        /// The option.
        option: &'static str,
        /// The value given.
        value: u64,
        /// The smallest accepted value.
        min: u64,
        /// Why the story needs that many.
        why: &'static str,
    },
    /// The data folder could not be created or read.
    #[error("cannot use the data folder {path:?}: {source}; check the path and its permissions")]
    DataDir {
        /// The folder.
        path: PathBuf,
        /// The file system's error.
        #[source]
        source: std::io::Error,
    },
    /// The data folder holds a database of an earlier run.
    #[error(
        "the data folder already holds {file:?} from an earlier run: remove it or pass another \
         --data-dir (the demo never overwrites files it did not create)"
    )]
    DataDirInUse {
        /// The file found.
        file: PathBuf,
    },
    /// The reference server could not be configured.
    #[error("cannot configure the reference server: {source}")]
    ServerBuild {
        /// The server's error.
        #[source]
        source: fero_server::BuildError,
    },
    /// The demo's embedded sync rules were refused (a bug of the demo: the text is a constant).
    #[error("the server refused the demo's sync rules: {source}")]
    Rules {
        /// The rules' error, naming the line.
        #[source]
        source: fero_server::RulesError,
    },
    /// The sync rules refused a row the server operator wrote straight into storage.
    #[error("the server's rules refused the operator's request to {action}: {outcome}")]
    OperatorRefused {
        /// What the operator asked for.
        action: String,
        /// The change's outcome.
        outcome: String,
    },
    /// The demo's token list was refused.
    #[error("the server refused the demo's token list: {source}")]
    Tokens {
        /// The server's error.
        #[source]
        source: fero_server::TokensError,
    },
    /// The server's storage failed while opening, seeding or counting.
    #[error("the server's storage failed to {action}: {source}")]
    ServerStorage {
        /// What the demo asked of it ("seed contacts", ...).
        action: String,
        /// The storage's error.
        #[source]
        source: fero_server::StorageError,
    },
    /// The loopback listener could not be opened.
    #[error("cannot listen on 127.0.0.1 (port 0): {source}")]
    Listen {
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
    /// The server stopped serving with an error.
    #[error("the reference server stopped with an error: {source}")]
    Serve {
        /// The server's error.
        #[source]
        source: fero_server::ServeError,
    },
    /// A device's SQLite store failed.
    #[error("device {device}: the SQLite store failed to {action}: {source}")]
    Store {
        /// The device ("A" or "B").
        device: &'static str,
        /// What the demo asked of it.
        action: String,
        /// The store's error (boxed: it is large, and errors travel in every `Result`).
        #[source]
        source: Box<fero_sqlite::Error>,
    },
    /// A device's HTTP remote could not be configured.
    #[error("device {device}: cannot configure the HTTP remote: {source}")]
    RemoteBuild {
        /// The device.
        device: &'static str,
        /// The transport's error.
        #[source]
        source: fero_http::BuildError,
    },
    /// A call to the server failed.
    #[error("device {device}: asking the server for the {collection} digest failed: {source}")]
    Remote {
        /// The device.
        device: &'static str,
        /// The collection.
        collection: String,
        /// The transport's error.
        #[source]
        source: fero_protocol::RemoteError,
    },
    /// A device's FeroSync could not be built.
    #[error("device {device}: the FeroSync configuration was refused: {source}")]
    SyncBuild {
        /// The device.
        device: &'static str,
        /// fero's error.
        #[source]
        source: fero::BuildError,
    },
    /// A sync run failed (other than the deliberate cancel of step 3).
    #[error("device {device}: {step} failed: {source}")]
    Sync {
        /// The device.
        device: &'static str,
        /// The story step.
        step: &'static str,
        /// fero's error, with its run report.
        #[source]
        source: fero::Error,
    },
    /// A device's metadata repo could not be read.
    #[error("device {device}: reading the saved checkpoint of {feature} failed: {source}")]
    Repo {
        /// The device.
        device: &'static str,
        /// The feature.
        feature: String,
        /// The repo's error.
        #[source]
        source: fero::RepoError,
    },
    /// The live step did not finish in time.
    #[error(
        "device {device}: {what} did not happen within {waited:?}; the machine may be overloaded, \
         run the demo again"
    )]
    Timeout {
        /// The device.
        device: &'static str,
        /// What was awaited.
        what: &'static str,
        /// How long the demo waited.
        waited: Duration,
    },
    /// A device's event watcher stopped before the story ended.
    #[error("device {device}: the event watcher stopped early: the sync engine was disposed")]
    WatcherStopped {
        /// The device.
        device: &'static str,
    },
}

impl DemoError {
    /// Maps a store error of `device` doing `action` (for `map_err`).
    pub(crate) fn store(
        device: &'static str,
        action: impl Into<String>,
    ) -> impl FnOnce(fero_sqlite::Error) -> DemoError {
        let action = action.into();
        move |source| DemoError::Store {
            device,
            action,
            source: Box::new(source),
        }
    }
}
