//! What the store holds: [`LocalDocument`]s and the [`OutboxEntry`]s of their pending edits.

use fero::{LocalItem, SyncId, Version};
use fero_protocol::MutationId;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A document as the local store holds it.
///
/// # Versions
/// - `version` is the local copy's version: the server's version for an unmodified copy, plus one
///   for every local edit since (a new document starts at 1).
/// - `base_version` is the server version the copy rests on: for a pending edit, the version it
///   was made on (its push carries it); `None` for a document the server has never seen.
///
/// The store also keeps, per row, a copy of the server's data at `base_version` while an edit is
/// pending (returned by the handler's `conflict_base`, for three-way merges).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LocalDocument {
    /// The id, unique within its collection.
    pub id: String,
    /// The content: a JSON object (for a tombstone, the last content known).
    pub data: serde_json::Value,
    /// The local copy's version.
    pub version: Version,
    /// The server version the copy rests on; `None` for a document never acknowledged.
    pub base_version: Option<Version>,
    /// The feed position of the server state the copy rests on.
    pub sync_id: Option<SyncId>,
    /// `true` while a local edit waits for the server's acknowledgement.
    pub locally_modified: bool,
    /// A tombstone: deleted locally (pending) or on the server.
    pub deleted: bool,
    /// The outbox sequence number of the newest pending edit this copy reflects (`None` when no
    /// edit is pending). The push carries it as the mutation id's `seq`; the store uses it to
    /// tell whether a copy the engine holds is older than the stored one.
    #[serde(default)]
    pub mutation_seq: Option<u64>,
}

impl LocalItem for LocalDocument {
    fn id(&self) -> &str {
        &self.id
    }
    fn version(&self) -> Version {
        self.version
    }
    fn locally_modified(&self) -> bool {
        self.locally_modified
    }
    fn base_version(&self) -> Option<Version> {
        self.base_version
    }
}

/// The kind of a pending mutation.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutboxOp {
    /// Creates a document the local copy did not have (or had as a tombstone).
    Insert,
    /// Changes a live document.
    Update,
    /// Deletes a document.
    Delete,
}

impl OutboxOp {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            OutboxOp::Insert => "insert",
            OutboxOp::Update => "update",
            OutboxOp::Delete => "delete",
        }
    }

    pub(crate) fn parse(text: &str) -> Option<OutboxOp> {
        match text {
            "insert" => Some(OutboxOp::Insert),
            "update" => Some(OutboxOp::Update),
            "delete" => Some(OutboxOp::Delete),
            _ => None,
        }
    }
}

/// One pending local mutation, as the outbox keeps it until the server's answer is recorded.
///
/// A document edited several times before a push has several entries; the push sends the
/// document's newest state once, with the newest entry's mutation id, and the acknowledgement
/// removes every entry up to it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutboxEntry {
    /// The mutation's identity: this database's device id and its sequence number.
    pub mutation_id: MutationId,
    /// The collection.
    pub collection: String,
    /// The document's id.
    pub id: String,
    /// Insert, update or delete.
    pub op: OutboxOp,
    /// The server version the edit was made on (`None` for a document the server never saw).
    pub base_version: Option<Version>,
    /// The document's content after the edit (`null` for a deletion).
    pub data: serde_json::Value,
}

/// The columns [`RawDocument::read`] expects, in order.
pub(crate) const DOCUMENT_COLUMNS: &str =
    "id, data, version, deleted, locally_modified, base_version, sync_id, mutation_seq";

/// A document row as read, before its JSON is parsed (parsing happens outside rusqlite's row
/// closure so a bad value becomes a typed error).
#[derive(Debug)]
pub(crate) struct RawDocument {
    id: String,
    data: String,
    version: u64,
    deleted: bool,
    locally_modified: bool,
    base_version: Option<u64>,
    sync_id: Option<u64>,
    mutation_seq: Option<u64>,
}

impl RawDocument {
    pub(crate) fn read(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawDocument> {
        Ok(RawDocument {
            id: row.get(0)?,
            data: row.get(1)?,
            version: row.get(2)?,
            deleted: row.get(3)?,
            locally_modified: row.get(4)?,
            base_version: row.get(5)?,
            sync_id: row.get(6)?,
            mutation_seq: row.get(7)?,
        })
    }

    pub(crate) fn into_document(self, collection: &str) -> Result<LocalDocument> {
        let data = parse_json(&self.data, collection, &self.id, "data")?;
        Ok(LocalDocument {
            data,
            version: Version(self.version),
            base_version: self.base_version.map(Version),
            sync_id: self.sync_id.map(SyncId),
            locally_modified: self.locally_modified,
            deleted: self.deleted,
            mutation_seq: self.mutation_seq,
            id: self.id,
        })
    }
}

pub(crate) fn parse_json(
    text: &str,
    collection: &str,
    id: &str,
    what: &'static str,
) -> Result<serde_json::Value> {
    serde_json::from_str(text).map_err(|source| Error::CorruptJson {
        collection: collection.to_owned(),
        id: id.to_owned(),
        what,
        source,
    })
}

pub(crate) fn encode_json(
    value: &serde_json::Value,
    id: &str,
    what: &'static str,
) -> Result<String> {
    serde_json::to_string(value).map_err(|source| Error::Encode {
        what,
        id: id.to_owned(),
        source,
    })
}

/// Checks a document's content: live documents hold a JSON object; a tombstone may also hold
/// `null` (the server may not keep a deleted row's content).
pub(crate) fn check_document(
    collection: &str,
    id: &str,
    data: &serde_json::Value,
    deleted: bool,
) -> Result<()> {
    if id.is_empty() {
        return Err(Error::EmptyId {
            collection: collection.to_owned(),
        });
    }
    let ok = data.is_object() || (deleted && data.is_null());
    if ok {
        return Ok(());
    }
    let kind = match data {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    };
    Err(Error::InvalidDocument {
        collection: collection.to_owned(),
        id: id.to_owned(),
        reason: format!("its data is {kind}, not a JSON object"),
    })
}

/// Checks a collection name with the protocol's rules, so every stored collection can sync.
pub(crate) fn check_collection(collection: &str) -> Result<()> {
    fero_protocol::validate_collection_name(collection).map_err(|reason| Error::InvalidCollection {
        collection: collection.to_owned(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_objects_are_documents_and_tombstones_may_be_null() {
        assert!(check_document("c", "a", &json!({"x": 1}), false).is_ok());
        assert!(check_document("c", "a", &json!(null), true).is_ok());
        let err = check_document("c", "a", &json!([1]), false).unwrap_err();
        assert!(
            err.to_string().contains("an array, not a JSON object"),
            "{err}"
        );
        assert!(matches!(
            check_document("c", "", &json!({}), false),
            Err(Error::EmptyId { .. })
        ));
    }

    #[test]
    fn outbox_ops_round_trip_through_their_text() {
        for op in [OutboxOp::Insert, OutboxOp::Update, OutboxOp::Delete] {
            assert_eq!(OutboxOp::parse(op.as_str()), Some(op));
        }
        assert_eq!(OutboxOp::parse("upsert"), None);
    }
}
