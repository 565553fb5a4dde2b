//! [`VerifyReport`]: whether the store's copy of a collection matches the server's.

use std::fmt;

/// The outcome of [`CollectionSync::verify`](crate::CollectionSync::verify): the server's and the
/// store's count and digest of the collection's live rows.
///
/// # Examples
/// ```
/// use fero_sqlite::VerifyReport;
/// let report = VerifyReport {
///     collection: "contacts".into(),
///     local_count: 2,
///     local_digest: "00000000000000aa".into(),
///     remote_count: 3,
///     remote_digest: "00000000000000bb".into(),
/// };
/// assert!(!report.is_match());
/// assert!(report.to_string().contains("drift"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    /// The collection.
    pub collection: String,
    /// Live rows the store holds as the server confirmed them.
    pub local_count: u64,
    /// Their digest (16 hex digits, see [`fero_protocol::Digest`]).
    pub local_digest: String,
    /// Live rows on the server.
    pub remote_count: u64,
    /// Their digest.
    pub remote_digest: String,
}

impl VerifyReport {
    /// `true` when count and digest agree: the store holds exactly the server's rows, at the
    /// server's versions.
    pub fn is_match(&self) -> bool {
        self.local_count == self.remote_count && self.local_digest == self.remote_digest
    }

    /// `true` when they differ; repair with `SqliteStore::reset_collection` and
    /// `FeroSync::trigger_initial_sync`.
    pub fn is_drift(&self) -> bool {
        !self.is_match()
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_match() {
            write!(
                f,
                "{}: store and server match ({} rows, digest {})",
                self.collection, self.local_count, self.local_digest
            )
        } else {
            write!(
                f,
                "{}: drift: the store has {} rows (digest {}), the server {} (digest {}); \
                 repair with SqliteStore::reset_collection and FeroSync::trigger_initial_sync",
                self.collection,
                self.local_count,
                self.local_digest,
                self.remote_count,
                self.remote_digest
            )
        }
    }
}
