//! Errors: one narrow enum per operation boundary, and the crate's [`Error`].

use std::path::PathBuf;

use fero::SyncId;

/// A storage backend failed, or refused a pull.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The pull's checkpoint is behind the collection's tombstone purge horizon: rows deleted
    /// after the checkpoint may be gone, so a page from it could silently miss a deletion.
    #[error(
        "collection {collection:?}: checkpoint {checkpoint} is behind the tombstone purge horizon \
         {horizon}; drop the local copy and its checkpoint and pull again from the beginning"
    )]
    ResyncRequired {
        /// The collection.
        collection: String,
        /// The checkpoint the client sent.
        checkpoint: SyncId,
        /// The greatest `sync_id` of a purged tombstone.
        horizon: SyncId,
    },
    /// The pull's position is beyond the user's highest assigned `sync_id`: the server's
    /// database lost writes it had acknowledged (it was restored from an older backup, say).
    /// Serving it would silently skip every row written from now on up to that position.
    #[error(
        "collection {collection:?}: position {position} is ahead of this server's feed, which \
         ends at {head} (the server's database is older than the client's copy, e.g. restored \
         from a backup); pull again from the beginning, keep the rows the server lacks and push \
         them again"
    )]
    ServerBehind {
        /// The collection.
        collection: String,
        /// The position the client sent.
        position: SyncId,
        /// The user's highest assigned `sync_id` on this server.
        head: SyncId,
    },
    /// The pull's cursor was issued in another restore epoch of the database: the database was
    /// restored from a backup since ([`Storage::mark_restored`](crate::Storage::mark_restored)),
    /// so it may lack rows the client holds, however long its feed has grown again.
    #[error(
        "collection {collection:?}: the cursor at position {position} was issued before this \
         server's database was restored from a backup (epoch {cursor_epoch}, now {epoch}); pull \
         again from the beginning, keep the rows the server lacks and push them again"
    )]
    Restored {
        /// The collection.
        collection: String,
        /// The position the client sent.
        position: SyncId,
        /// The epoch the cursor names.
        cursor_epoch: u64,
        /// The database's epoch now.
        epoch: u64,
    },
    /// The operating system's random source failed while making a restore epoch.
    #[error(
        "cannot draw a random restore epoch from the operating system ({message}); check that \
         the system's random source (getrandom, /dev/urandom) is available"
    )]
    Random {
        /// The source's error.
        message: String,
    },
    /// The database could not be opened or its schema not be created.
    #[error("cannot open the database {path:?}: {source}")]
    Open {
        /// The database path (`:memory:` for an in-memory one).
        path: PathBuf,
        /// The database's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The PostgreSQL connection URL does not parse.
    #[error(
        "the PostgreSQL URL is not valid ({source}); write it as \
         postgres://user@host:port/database"
    )]
    BadUrl {
        /// The parser's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// PostgreSQL could not be reached, or refused the connection.
    #[error(
        "cannot connect to PostgreSQL at {target}: {source}; check the --db URL and that the \
         database server is running and accepts this user"
    )]
    Connect {
        /// Where the connection went: `user@host:port/database`, never the password.
        target: String,
        /// The client's or the pool's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The database's schema cannot be brought to this server's version.
    #[error("the schema of PostgreSQL database {target} cannot be used: {message}")]
    Schema {
        /// The database: `user@host:port/database`.
        target: String,
        /// What is wrong and what to do.
        message: String,
    },
    /// A statement failed.
    #[error("{operation} in collection {collection:?} failed: {source}")]
    Database {
        /// What the storage was doing ("pull", "push", "digest", "purge tombstones",
        /// "prune mutations", "seed", "ping").
        operation: &'static str,
        /// The collection (empty when the operation spans all of them).
        collection: String,
        /// The database's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A stored row or push result does not parse: the database was changed outside the server.
    #[error("collection {collection:?}, row {id:?}: stored data is damaged: {message}")]
    Corrupt {
        /// The collection.
        collection: String,
        /// The row's id (or the mutation's `device/seq`).
        id: String,
        /// What does not parse.
        message: String,
    },
    /// The rules could not compute what the caller may read (the token's claims do not have
    /// the shape the rules expect): the pull or digest is refused with 403 `forbidden`.
    #[error(
        "collection {collection:?}: the sync rules cannot decide what this user may read: \
         {message}; check the token's claims against the rules file"
    )]
    Rules {
        /// The collection.
        collection: String,
        /// Which rule failed and why (names no row data).
        message: String,
    },
    /// A shared collection's cursor names a readable set this database does not hold (it was
    /// restored from a backup taken before the cursor was issued, say).
    #[error(
        "collection {collection:?}: the cursor refers to a set of buckets this server does not \
         know; pull again from the beginning"
    )]
    UnknownReadableSet {
        /// The collection.
        collection: String,
    },
    /// A shared collection's cursor was not issued by this storage to this user for this
    /// collection (changed by the client, another user's, or signed before the database got
    /// another cursor key): the client pulls the collection again from the beginning.
    #[error(
        "collection {collection:?}: this cursor was not issued to you for this collection by this \
         server; pull again from the beginning"
    )]
    CursorRefused {
        /// The collection.
        collection: String,
    },
    /// The backend does not keep shared collections (a test double, say).
    #[error(
        "collection {collection:?} is shared by the sync rules, but this storage backend keeps \
         no shared collections; use the SQLite or PostgreSQL storage"
    )]
    SharingUnsupported {
        /// The collection.
        collection: String,
    },
    /// The blocking task that ran the statement panicked or was cancelled.
    #[error("{operation} in collection {collection:?} did not finish: {message}")]
    TaskFailed {
        /// What the storage was doing.
        operation: &'static str,
        /// The collection.
        collection: String,
        /// Why the task ended.
        message: String,
    },
}

impl StorageError {
    /// `true` for [`StorageError::ResyncRequired`], [`StorageError::ServerBehind`] and
    /// [`StorageError::Restored`]: the
    /// client must pull from scratch.
    pub fn is_resync_required(&self) -> bool {
        self.resync_reason().is_some()
    }

    /// Why the client must pull from scratch, for the 410 answer's `reason`; `None` for every
    /// other error.
    pub fn resync_reason(&self) -> Option<fero_protocol::ResyncReason> {
        match self {
            StorageError::ResyncRequired { .. } => {
                Some(fero_protocol::ResyncReason::TombstonesPurged)
            }
            StorageError::ServerBehind { .. }
            | StorageError::Restored { .. }
            | StorageError::UnknownReadableSet { .. }
            | StorageError::CursorRefused { .. } => Some(fero_protocol::ResyncReason::ServerBehind),
            _ => None,
        }
    }
}

/// A token list could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokensError {
    /// The token file could not be read.
    #[error("cannot read the token file {path:?}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The token file is not TOML of the form `[tokens] "secret" = "user"`.
    #[error(
        "token file {origin}: {message}; expected `[tokens]` then lines `\"secret-token\" = \"alice\"`"
    )]
    Toml {
        /// The file (or "inline" for a string).
        origin: String,
        /// The parser's message.
        message: String,
    },
    /// An entry of `FERO_TOKENS` is not `token=user`.
    #[error(
        "FERO_TOKENS entry {position} ({entry:?}) is not `token=user`; write `tok1=alice,tok2=bob`"
    )]
    BadEntry {
        /// The entry, 1-based.
        position: usize,
        /// The entry as written (with the token part hidden).
        entry: String,
    },
    /// A token is empty or holds whitespace or control characters.
    #[error("the token of user {user:?} is empty or holds whitespace or control characters")]
    BadToken {
        /// The user the token is for.
        user: String,
    },
    /// A user name is empty.
    #[error("a token maps to an empty user name")]
    EmptyUser,
    /// A user name holds a control character.
    #[error("the user name {user:?} holds a control character; user names are printable text")]
    BadUser {
        /// The name as written.
        user: String,
    },
    /// One token is given to two different users.
    #[error("one token is given to both {first:?} and {second:?}; every token must name one user")]
    Duplicate {
        /// The user named first.
        first: String,
        /// The user named second.
        second: String,
    },
}

/// [`ServerBuilder::build`](crate::ServerBuilder::build) refused its settings.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// No storage was given.
    #[error("no storage: call `.storage(SqliteStorage::open(..)?)` on the builder")]
    MissingStorage,
    /// Neither a static token nor a JWT verifier was given, so every request would be refused.
    #[error(
        "no way to authenticate: call `.tokens(..)` with at least one token and/or \
         `.jwt(JwtVerifier::builder()..build()?)`, or every request gets 401"
    )]
    NoAuthentication,
    /// The body limit is zero.
    #[error("body limit must be at least 1 byte, got 0")]
    ZeroBodyLimit,
    /// The keep-alive interval of the change stream is zero.
    #[error("change stream keep-alive interval must be above zero")]
    ZeroKeepAlive,
    /// The mutation retention is zero: a replay of a push whose answer was lost would find its
    /// answer already pruned.
    #[error(
        "mutation retention must be above zero; keep push answers at least as long as a client \
         may retry a push (default 30 days)"
    )]
    ZeroMutationRetention,
    /// The tombstone retention is zero: every deletion would be purged at the next schedule,
    /// and every device that had not pulled it yet would have to pull from scratch.
    #[error(
        "tombstone retention must be above zero; keep tombstones at least as long as a device \
         may stay offline (default 90 days), or turn the scheduled purge off with `None`"
    )]
    ZeroTombstoneRetention,
}

/// [`Server::serve`](crate::Server::serve) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// Accepting or serving connections failed.
    #[error("serving HTTP failed: {source}")]
    Io {
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Every error of this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Tokens could not be read.
    #[error(transparent)]
    Tokens(#[from] TokensError),
    /// The server's settings were refused.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// Serving failed.
    #[error(transparent)]
    Serve(#[from] ServeError),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
