//! Errors: one crate [`Error`], with named fields, and the conversions the engine needs
//! ([`HandlerError`] for handler calls, [`RepoError`] for the metadata repo).

use std::path::PathBuf;

use fero::{FeatureKey, HandlerError, RepoError, ResyncReason, SyncId, Version};
use fero_protocol::RemoteError;
use rusqlite::ErrorCode;

/// What went wrong in `fero-sqlite`.
///
/// Bad input from a server ([`CheckpointBehind`](Error::CheckpointBehind),
/// [`DuplicateId`](Error::DuplicateId), [`InvalidDocument`](Error::InvalidDocument)) is refused
/// before the page's transaction commits: nothing of the page stays written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The database file could not be opened or prepared.
    #[error(
        "cannot open the sqlite database {path:?}: {source}; check the path and its permissions"
    )]
    Open {
        /// The file (`:memory:` for an in-memory database).
        path: PathBuf,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// The database was written by a newer `fero-sqlite` whose schema this one does not know.
    #[error(
        "the database {path:?} has schema version {found}, newer than the {supported} this \
         fero-sqlite knows: upgrade fero-sqlite, or open a fresh file"
    )]
    SchemaTooNew {
        /// The file.
        path: PathBuf,
        /// The schema version found (`PRAGMA user_version`).
        found: u32,
        /// The newest version this build migrates to.
        supported: u32,
    },
    /// A statement failed.
    #[error("sqlite failed to {operation}: {source}")]
    Sqlite {
        /// What the store was doing ("apply a page of contacts", "save a checkpoint", ...).
        operation: String,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// A collection name that the protocol would refuse.
    #[error("invalid collection name {collection:?}: {reason}")]
    InvalidCollection {
        /// The name given.
        collection: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A document with an empty id.
    #[error("collection {collection}: a document has an empty id; give every document an id")]
    EmptyId {
        /// The collection.
        collection: String,
    },
    /// A document whose data is not a JSON object (or, for a tombstone, not an object or null).
    #[error("collection {collection}: document {id:?} is not valid: {reason}")]
    InvalidDocument {
        /// The collection.
        collection: String,
        /// The document's id.
        id: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The same id appears twice in one page.
    #[error(
        "collection {collection}: document {id:?} appears twice in one page; the page was not \
         applied (check the server's pagination)"
    )]
    DuplicateId {
        /// The collection.
        collection: String,
        /// The repeated id.
        id: String,
    },
    /// A page's checkpoint is behind the feature's stored checkpoint.
    #[error(
        "feature {feature}: the page's checkpoint (sync_id {received}) is behind the stored one \
         (sync_id {stored}); the page was not applied. If the server was reset, call \
         SqliteStore::reset_collection or FeroSync::trigger_initial_sync"
    )]
    CheckpointBehind {
        /// The feature.
        feature: FeatureKey,
        /// The stored checkpoint.
        stored: SyncId,
        /// The page's checkpoint.
        received: SyncId,
    },
    /// A pulled row is older than the synced copy this device holds: the server lost writes it
    /// had acknowledged (restored from an older backup). The page was not applied; for the
    /// engine it is a resync request ([`fero::ResyncReason::ServerBehind`]), so the collection is
    /// pulled again from scratch and what the server lost is pushed back.
    #[error(
        "collection {collection}: the server sent {id:?} at version {server}, older than the \
         synced version {local} this device holds: the server lost acknowledged writes (a \
         restored backup); the page was not applied and the collection is resynced, pushing back \
         what the server lost"
    )]
    ServerBehind {
        /// The collection.
        collection: String,
        /// The row's id.
        id: String,
        /// The version this device holds.
        local: Version,
        /// The version the server sent.
        server: Version,
    },
    /// A stored JSON value could not be read back (the file was changed by something else).
    #[error("collection {collection}: stored {what} of {id:?} is not valid JSON: {source}")]
    CorruptJson {
        /// The collection (or feature for metadata).
        collection: String,
        /// The row's id.
        id: String,
        /// Which value ("data", "base data", "parked conflict", ...).
        what: &'static str,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// A value could not be encoded as JSON for storage.
    #[error("cannot encode {what} of {id:?} as JSON: {source}")]
    Encode {
        /// Which value.
        what: &'static str,
        /// The row's id.
        id: String,
        /// The encoder's error.
        #[source]
        source: serde_json::Error,
    },
    /// The remote failed.
    #[error("remote call for collection {collection} failed: {source}")]
    Remote {
        /// The collection.
        collection: String,
        /// The remote's error.
        #[source]
        source: RemoteError,
    },
    /// The pull of one subscription failed (see [`SubscriptionSync`](crate::SubscriptionSync)).
    #[error("pull of subscription {subscription} of collection {collection} failed: {source}")]
    SubscriptionPull {
        /// The collection.
        collection: String,
        /// The subscription's key ([`fero_protocol::Subscription::key`]).
        subscription: String,
        /// The remote's error (boxed: the error stays small).
        #[source]
        source: Box<RemoteError>,
    },
    /// A subscription the store refuses to record.
    #[error(
        "collection {collection}: subscription {subscription} is not valid: {reason}; name a \
         subscription rule of the server's sync rules"
    )]
    InvalidSubscription {
        /// The collection.
        collection: String,
        /// The subscription's key ([`fero_protocol::Subscription::key`]).
        subscription: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The remote answered a push with results that do not match the request.
    #[error(
        "collection {collection}: the remote answered a push of {sent} change(s) with a result \
         for {id:?}, which was not sent; the answer was not recorded"
    )]
    UnexpectedPushResult {
        /// The collection.
        collection: String,
        /// Changes sent.
        sent: usize,
        /// The unknown id.
        id: String,
    },
    /// The operating system's random source failed while a new database's device id was made.
    #[error(
        "cannot generate a device id for {path:?}: the operating system's random source failed: \
         {source}; retry, or pass one with StoreOptions::device_id"
    )]
    DeviceId {
        /// The database file (`:memory:` for an in-memory database).
        path: PathBuf,
        /// The random source's error.
        #[source]
        source: std::io::Error,
    },
    /// The blocking task running SQLite work was cancelled (the runtime is shutting down).
    #[error("the sqlite task to {operation} was cancelled: the tokio runtime is shutting down")]
    TaskCancelled {
        /// What the task was doing.
        operation: String,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// `true` when retrying can help: the database was busy or locked by another connection.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Sqlite { source, .. } | Error::Open { source, .. } => matches!(
                source.sqlite_error_code(),
                Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
            ),
            Error::Remote { source, .. } => source.is_transient(),
            Error::SubscriptionPull { source, .. } => source.is_transient(),
            Error::TaskCancelled { .. } => true,
            _ => false,
        }
    }

    /// `true` for bad input from a server page: a backwards checkpoint, a repeated id, an empty id
    /// or invalid data.
    pub fn is_bad_page(&self) -> bool {
        matches!(
            self,
            Error::CheckpointBehind { .. }
                | Error::DuplicateId { .. }
                | Error::EmptyId { .. }
                | Error::InvalidDocument { .. }
        )
    }

    /// The SQLite error code, when SQLite failed.
    pub fn sqlite_error_code(&self) -> Option<ErrorCode> {
        match self {
            Error::Sqlite { source, .. } | Error::Open { source, .. } => source.sqlite_error_code(),
            _ => None,
        }
    }

    pub(crate) fn sqlite(operation: impl Into<String>) -> impl FnOnce(rusqlite::Error) -> Error {
        let operation = operation.into();
        move |source| Error::Sqlite { operation, source }
    }
}

impl From<Error> for HandlerError {
    fn from(error: Error) -> Self {
        match error {
            // Keep the remote's own mapping (transient kinds, Retry-After).
            Error::Remote { source, .. } => HandlerError::from(source),
            Error::SubscriptionPull {
                subscription,
                mut source,
                ..
            } => {
                // The remote's mapping, with the subscription named in the message.
                source.message = format!("subscription {subscription}: {}", source.message);
                HandlerError::from(*source)
            }
            Error::ServerBehind { .. } => {
                HandlerError::resync_required(ResyncReason::ServerBehind, error.to_string())
                    .with_source(error)
            }
            other => {
                let handler = if other.is_transient() {
                    HandlerError::transient(other.to_string())
                } else {
                    HandlerError::permanent(other.to_string())
                };
                handler.with_source(other)
            }
        }
    }
}

impl From<Error> for RepoError {
    fn from(error: Error) -> Self {
        let transient = error.is_transient();
        match &error {
            Error::Sqlite { operation, source } => {
                RepoError::new(operation.clone(), source.to_string(), transient)
            }
            Error::TaskCancelled { operation } => {
                RepoError::new(operation.clone(), error.to_string(), transient)
            }
            Error::CorruptJson { what, .. } | Error::Encode { what, .. } => {
                RepoError::new(format!("store a {what}"), error.to_string(), transient)
            }
            _ => RepoError::new("access sync metadata", error.to_string(), transient),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_database_is_transient_for_the_engine() {
        let busy = Error::Sqlite {
            operation: "save the checkpoint of feature contacts".into(),
            source: rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                None,
            ),
        };
        assert!(busy.is_transient());
        let repo = RepoError::from(busy);
        assert!(repo.transient);
        assert_eq!(repo.operation, "save the checkpoint of feature contacts");
        let handler = HandlerError::from(Error::DuplicateId {
            collection: "contacts".into(),
            id: "a".into(),
        });
        assert!(!handler.is_transient());
        assert!(handler.message().contains("\"a\" appears twice"));
    }
}
