//! Where a feature's pull stands: [`SyncCheckpoint`].

use serde::{Deserialize, Serialize};

use crate::item::{SyncId, Timestamp};

/// The position after the last page a feature applied.
///
/// Saved after every applied page (never before), so an interrupted sync resumes at the next
/// page. `last_sync_id` serves handlers that page by a plain number; `cursor` carries an opaque
/// server token beside it (fero_sync 0.4.9's opaque cursor): a client stores it and sends it back
/// unchanged, so a server can change its pagination technique without breaking clients.
///
/// # Examples
/// ```
/// use fero::{SyncCheckpoint, SyncId};
/// let cp = SyncCheckpoint::at(SyncId(42)).with_cursor("tx:981:42");
/// assert_eq!(cp.last_sync_id, SyncId(42));
/// assert_eq!(cp.cursor.as_deref(), Some("tx:981:42"));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncCheckpoint {
    /// The largest `sync_id` applied so far.
    pub last_sync_id: SyncId,
    /// The server's time of that change (informational only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<Timestamp>,
    /// An opaque server cursor; sent back as is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

impl SyncCheckpoint {
    /// A checkpoint at `last_sync_id`, without time or cursor.
    pub fn at(last_sync_id: SyncId) -> Self {
        SyncCheckpoint {
            last_sync_id,
            updated_at: None,
            cursor: None,
        }
    }

    /// The same checkpoint with an opaque server cursor.
    pub fn with_cursor(mut self, cursor: impl Into<String>) -> Self {
        self.cursor = Some(cursor.into());
        self
    }

    /// The same checkpoint with the server time of its last change.
    pub fn with_updated_at(mut self, updated_at: Timestamp) -> Self {
        self.updated_at = Some(updated_at);
        self
    }
}
