//! [`BenchError`]: why a workload could not be measured.

/// A workload failed, or did not do what it measures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// The sizes make no sense.
    #[error("{workload}: n = {n} and batch = {batch} must both be at least 1")]
    InvalidSize {
        /// The workload.
        workload: &'static str,
        /// Items asked for.
        n: u64,
        /// Page size asked for.
        batch: usize,
    },
    /// The engine rejected its configuration.
    #[error("{workload}: building the sync engine failed: {source}")]
    Build {
        /// The workload.
        workload: &'static str,
        /// Why.
        #[source]
        source: fero::BuildError,
    },
    /// A sync run failed.
    #[error("{workload}: the sync run failed: {source}")]
    Sync {
        /// The workload.
        workload: &'static str,
        /// Why.
        #[source]
        source: fero::Error,
    },
    /// A handler call of a hand-written loop failed.
    #[error("{workload}: {operation} failed: {source}")]
    Handler {
        /// The workload.
        workload: &'static str,
        /// The call ("fetch", "apply").
        operation: &'static str,
        /// Why.
        #[source]
        source: fero::HandlerError,
    },
    /// The metadata repo failed.
    #[error("{workload}: the metadata repo failed: {source}")]
    Repo {
        /// The workload.
        workload: &'static str,
        /// Why.
        #[source]
        source: fero::RepoError,
    },
    /// A count after the run is not what the workload must produce: the figure would be wrong.
    #[error(
        "{workload} at n = {n}: {what} is {actual}, expected {expected}; the run did not do the \
         work it measures, so no figure is reported"
    )]
    Verify {
        /// The workload.
        workload: &'static str,
        /// Items asked for.
        n: u64,
        /// What was counted.
        what: &'static str,
        /// The count it must have.
        expected: u64,
        /// The count it has.
        actual: u64,
    },
    /// The async runtime could not start.
    #[error("{workload}: the tokio runtime could not start: {source}")]
    Runtime {
        /// The workload.
        workload: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The reference server failed to open, seed or serve.
    #[error("the reference server failed: {source}")]
    Server {
        /// Why.
        #[source]
        source: fero_server::Error,
    },
    /// The client's SQLite store failed.
    #[error("{workload}: the client's SQLite store failed: {source}")]
    Store {
        /// The workload.
        workload: &'static str,
        /// Why.
        #[source]
        source: fero_sqlite::Error,
    },
    /// The HTTP remote could not be built.
    #[error("the HTTP remote could not be built: {source}")]
    Remote {
        /// Why.
        #[source]
        source: fero_http::BuildError,
    },
    /// A statement of W4-raw failed.
    #[error("W4-raw: cannot {what}: {source}")]
    Sqlite {
        /// What it was doing.
        what: &'static str,
        /// Why.
        #[source]
        source: rusqlite::Error,
    },
    /// A file, pipe or process operation failed.
    #[error("cannot {what}: {source}")]
    Io {
        /// What it was doing.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A child process of the bench program misbehaved.
    #[error("the {what} child process failed: {reason}")]
    Child {
        /// Which child ("reference server", "W5 client").
        what: String,
        /// What went wrong.
        reason: String,
    },
    /// The peak RSS could not be read.
    #[error("cannot measure peak RSS: {reason}")]
    Rss {
        /// Why.
        reason: String,
    },
}

impl BenchError {
    /// Checks a count after a run.
    pub(crate) fn verify(
        workload: &'static str,
        n: u64,
        what: &'static str,
        expected: u64,
        actual: u64,
    ) -> Result<(), BenchError> {
        if expected == actual {
            Ok(())
        } else {
            Err(BenchError::Verify {
                workload,
                n,
                what,
                expected,
                actual,
            })
        }
    }
}

impl BenchError {
    /// Maps an engine build failure of `workload` (for `map_err`).
    pub(crate) fn build(workload: &'static str) -> impl Fn(fero::BuildError) -> BenchError {
        move |source| BenchError::Build { workload, source }
    }

    /// Maps a client store failure of `workload` (for `map_err`).
    pub(crate) fn store(workload: &'static str) -> impl Fn(fero_sqlite::Error) -> BenchError {
        move |source| BenchError::Store { workload, source }
    }

    /// Maps a sync run failure of `workload` (for `map_err`).
    pub(crate) fn sync(workload: &'static str) -> impl Fn(fero::Error) -> BenchError {
        move |source| BenchError::Sync { workload, source }
    }
}
