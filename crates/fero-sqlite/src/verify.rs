//! [`VerifyReport`]: whether the store's copy of a collection matches the server's.

use std::fmt;

use fero_protocol::DigestVersion;

/// The outcome of [`CollectionSync::verify`](crate::CollectionSync::verify): the server's and the
/// store's count and digest of the collection's live rows, in the digest version both sides
/// computed.
///
/// # Examples
/// ```
/// use fero_protocol::DigestVersion;
/// use fero_sqlite::VerifyReport;
/// let report = VerifyReport {
///     collection: "contacts".into(),
///     digest_version: DigestVersion::V2,
///     local_count: 2,
///     local_digest: "000000000000000000000000000000aa".into(),
///     remote_count: 2,
///     remote_digest: "000000000000000000000000000000bb".into(),
///     content_drift: true,
/// };
/// assert!(report.is_drift());
/// assert!(report.to_string().contains("content drift"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    /// The collection.
    pub collection: String,
    /// The digest version compared: [`DigestVersion::V2`] (ids, versions and content) when the
    /// remote computes it, else [`DigestVersion::V1`] (ids and versions only, blind to content).
    pub digest_version: DigestVersion,
    /// Live rows the store holds as the server confirmed them.
    pub local_count: u64,
    /// Their digest in hex (16 digits for version 1, 32 for version 2; see
    /// [`fero_protocol::Digest`] and [`fero_protocol::ContentDigest`]).
    pub local_digest: String,
    /// Live rows on the server.
    pub remote_count: u64,
    /// Their digest.
    pub remote_digest: String,
    /// `true` when the version 2 digests differ but the version 1 digests agree: both sides hold
    /// the same ids at the same versions, and some row's content differs (a corrupt or
    /// hand-edited local copy). Always `false` for a match and for a version 1 comparison.
    pub content_drift: bool,
}

impl VerifyReport {
    /// `true` when count and digest agree: the store holds exactly the server's rows, at the
    /// server's versions (and, for [`DigestVersion::V2`], with the server's content).
    pub fn is_match(&self) -> bool {
        self.local_count == self.remote_count && self.local_digest == self.remote_digest
    }

    /// `true` when they differ; repair with `SqliteStore::reset_collection` and
    /// `FeroSync::trigger_initial_sync`.
    pub fn is_drift(&self) -> bool {
        !self.is_match()
    }

    /// `true` when only content differs (see [`content_drift`](Self::content_drift)).
    pub fn is_content_drift(&self) -> bool {
        self.is_drift() && self.content_drift
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_match() {
            return write!(
                f,
                "{}: store and server match ({} rows, digest {} {})",
                self.collection, self.local_count, self.digest_version, self.local_digest
            );
        }
        let kind = if self.is_content_drift() {
            "content drift (the same rows at the same versions, some with other content: a \
             corrupt or hand-edited local row)"
        } else {
            "drift"
        };
        write!(
            f,
            "{}: {kind}: the store has {} rows (digest {} {}), the server {} (digest {}); \
             repair with SqliteStore::reset_collection and FeroSync::trigger_initial_sync",
            self.collection,
            self.local_count,
            self.digest_version,
            self.local_digest,
            self.remote_count,
            self.remote_digest
        )
    }
}
