//! Requests, responses and the items they carry.

use std::collections::BTreeMap;

use fero::{ServerItem, SyncCheckpoint, SyncId, Timestamp, Version};
use serde::{Deserialize, Serialize};

/// The protocol version this crate speaks; sent in the [`PROTOCOL_HEADER`] header and in the
/// path prefix (`/v1/`).
pub const PROTOCOL_VERSION: u32 = 1;

/// The header that carries the protocol version on requests and responses.
pub const PROTOCOL_HEADER: &str = "fero-protocol";

/// The header with which a server names the collection an answer belongs to (pull, push and
/// digest), so a client can refuse an answer meant for another collection (a misrouting proxy or
/// a server bug) before using it.
pub const COLLECTION_HEADER: &str = "fero-collection";

/// The largest page a server hands out; a larger `limit` is refused with
/// [`ErrorCode::PageTooLarge`](crate::ErrorCode::PageTooLarge) rather than silently cut, so a
/// client never mistakes a short page for the end.
pub const MAX_PAGE_SIZE: u32 = 5_000;

/// The longest collection name.
pub const MAX_COLLECTION_NAME: usize = 64;

/// Checks a collection name: 1 to 64 characters of `a-z`, `0-9`, `_` and `-`, starting with a
/// letter.
///
/// # Errors
/// A message saying what is wrong with the name.
///
/// # Examples
/// ```
/// assert!(fero_protocol::validate_collection_name("contacts").is_ok());
/// assert!(fero_protocol::validate_collection_name("../etc").is_err());
/// ```
pub fn validate_collection_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    match chars.next() {
        None => return Err("a collection name must not be empty".into()),
        Some(c) if !c.is_ascii_lowercase() => {
            return Err(format!(
                "collection name {name:?} must start with a letter a-z"
            ));
        }
        Some(_) => {}
    }
    if name.len() > MAX_COLLECTION_NAME {
        return Err(format!(
            "collection name {name:?} is longer than {MAX_COLLECTION_NAME} characters"
        ));
    }
    if let Some(bad) =
        chars.find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == '-'))
    {
        return Err(format!(
            "collection name {name:?} contains {bad:?}; use a-z, 0-9, '_' and '-'"
        ));
    }
    Ok(())
}

/// A row as the server stores and sends it. A tombstone has `deleted = true` and keeps its last
/// data (or `null`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Document {
    /// The id, unique per user and collection.
    pub id: String,
    /// Its place in the collection's change feed (server-assigned, increasing in commit order).
    pub sync_id: SyncId,
    /// Its version: 1 on insert, +1 per accepted write.
    pub version: Version,
    /// Server time of the last write, milliseconds since the Unix epoch (informational).
    #[serde(default)]
    pub updated_at: Timestamp,
    /// A tombstone.
    #[serde(default)]
    pub deleted: bool,
    /// The content.
    pub data: serde_json::Value,
}

impl ServerItem for Document {
    fn id(&self) -> &str {
        &self.id
    }
    fn sync_id(&self) -> SyncId {
        self.sync_id
    }
    fn version(&self) -> Version {
        self.version
    }
    fn updated_at(&self) -> Option<Timestamp> {
        Some(self.updated_at)
    }
}

/// Identifies one local change for exactly-once push: the device and its own sequence number,
/// increasing per device (Replicache's `lastMutationID`). A replayed change (same id) gets the
/// original answer, never a conflict with itself.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MutationId {
    /// The device's id (stable across restarts).
    pub device: String,
    /// The device's sequence number for this change.
    pub seq: u64,
}

impl MutationId {
    /// A mutation id.
    pub fn new(device: impl Into<String>, seq: u64) -> Self {
        MutationId {
            device: device.into(),
            seq,
        }
    }
}

/// One local change pushed to the server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// The item's id.
    pub id: String,
    /// The server version the change was made on; `None` creates a new item.
    pub base_version: Option<Version>,
    /// The change's identity, for idempotent replays.
    pub mutation_id: MutationId,
    /// The change deletes the item.
    #[serde(default)]
    pub deleted: bool,
    /// The new content (ignored for a deletion).
    #[serde(default)]
    pub data: serde_json::Value,
}

/// `POST /v1/collections/{name}/pull` body (the `GET` form takes the same fields as query
/// parameters: `after`, `cursor`, `limit`; a subscription only travels in the `POST` body).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullRequest {
    /// Where the client stands; `None` pulls from the beginning.
    #[serde(default)]
    pub checkpoint: Option<SyncCheckpoint>,
    /// Items wanted, at most [`MAX_PAGE_SIZE`].
    pub limit: u32,
    /// Pull only this subset of a shared collection (`None`: everything the user may read).
    /// The checkpoint must be one this subscription was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription: Option<Subscription>,
}

impl PullRequest {
    /// A pull of at most `limit` items after `checkpoint`, of everything the user may read.
    pub fn new(checkpoint: Option<SyncCheckpoint>, limit: u32) -> PullRequest {
        PullRequest {
            checkpoint,
            limit,
            subscription: None,
        }
    }
}

/// A subscription: a subset of a shared collection, named by the server's sync rules and chosen
/// by parameters (e.g. the tasks of one project). The server turns it into buckets with the
/// rule of that name, and serves only those the user may read: a subscription narrows what a
/// user reads, it never widens it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    /// The rule's name (`[collections.<name>.subscriptions]` in the rules file).
    pub name: String,
    /// The parameters, a JSON object the rule reads as `params`.
    #[serde(default)]
    pub params: BTreeMap<String, serde_json::Value>,
}

impl Subscription {
    /// A subscription to the rule `name` with no parameters yet.
    pub fn new(name: impl Into<String>) -> Subscription {
        Subscription {
            name: name.into(),
            params: BTreeMap::new(),
        }
    }

    /// Adds the parameter `key`.
    #[must_use]
    pub fn param(mut self, key: impl Into<String>, value: impl Into<serde_json::Value>) -> Self {
        self.params.insert(key.into(), value.into());
        self
    }

    /// The subscription's stable identity: its name and its parameters as canonical JSON
    /// (keys sorted), e.g. `project{"project_id":"p1"}`. Equal subscriptions have equal keys.
    pub fn key(&self) -> String {
        let params = serde_json::Value::Object(
            self.params
                .iter()
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect(),
        );
        format!("{}{}", self.name, crate::canonical_json(&params))
    }
}

/// A page of changes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PullResponse {
    /// Changed rows after the request's checkpoint, in feed order, the latest state of each.
    pub items: Vec<Document>,
    /// The position after this page; the client stores it and sends it back unchanged.
    pub checkpoint: SyncCheckpoint,
    /// More rows exist after this page (decided by reading `limit + 1` rows).
    pub has_more: bool,
}

/// `POST /v1/collections/{name}/push` body.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PushRequest {
    /// The changes, oldest first.
    pub changes: Vec<Change>,
}

/// The answer to a push: one result per change, in request order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PushResponse {
    /// One result per change.
    pub results: Vec<ChangeResult>,
}

/// The server's answer for one change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChangeResult {
    /// The item's id.
    pub id: String,
    /// The change's mutation id.
    pub mutation_id: MutationId,
    /// What happened.
    #[serde(flatten)]
    pub outcome: ChangeOutcome,
}

/// What happened to one pushed change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ChangeOutcome {
    /// Written: the new version and feed position.
    Accepted {
        /// The new version.
        version: Version,
        /// The new feed position.
        sync_id: SyncId,
    },
    /// Not written: the server's copy is not at the change's base version (or the id exists
    /// for a create). `server` is the current state (`None` if the server has no such row).
    Conflict {
        /// The server's current state.
        server: Option<Document>,
    },
    /// Not written, and retrying will not help (validation).
    Rejected {
        /// A machine-readable reason.
        code: String,
        /// A human-readable reason.
        message: String,
    },
}

/// `GET /v1/collections/{name}/digest`: the user's live rows, counted and digested.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestResponse {
    /// Live (not deleted) rows.
    pub count: u64,
    /// The order-independent digest of `(id, version)` of those rows, as 16 hex digits; see
    /// [`Digest`](crate::Digest).
    pub digest: String,
}

/// `GET /v1/collections/{name}/digest?version=2`: the user's live rows, counted and digested
/// with their content (digest version 2, see [`ContentDigest`](crate::ContentDigest)).
///
/// A server that does not know version 2 ignores the query and answers a [`DigestResponse`],
/// which has no `version`: a client tells the two apart by this field.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContentDigestResponse {
    /// The digest version computed: 2.
    pub version: u32,
    /// Live (not deleted) rows.
    pub count: u64,
    /// The order-independent digest of `(id, version, canonical data)` of those rows, as 32 hex
    /// digits.
    pub digest: String,
}

/// One notice on the change stream (`GET /v1/changes`, Server-Sent Events, event name
/// `change`): a collection of this user has rows after `sync_id`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeNotice {
    /// The collection.
    pub collection: String,
    /// The newest feed position committed.
    pub sync_id: SyncId,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_are_tagged_by_status() {
        let r = ChangeResult {
            id: "a".into(),
            mutation_id: MutationId::new("d", 3),
            outcome: ChangeOutcome::Accepted {
                version: Version(2),
                sync_id: SyncId(9),
            },
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["status"], "accepted");
        assert_eq!(v["version"], 2);
        assert_eq!(serde_json::from_value::<ChangeResult>(v).unwrap(), r);
    }

    #[test]
    fn collection_names_are_checked() {
        for good in ["contacts", "user_preferences", "a1-b"] {
            assert!(validate_collection_name(good).is_ok(), "{good}");
        }
        for bad in ["", "Contacts", "1abc", "a/b", "a b", &"x".repeat(65)] {
            assert!(validate_collection_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_document_without_optional_fields_parses() {
        let d: Document =
            serde_json::from_str(r#"{"id":"x","sync_id":1,"version":1,"data":{}}"#).unwrap();
        assert!(!d.deleted);
        assert!(serde_json::from_str::<Document>(r#"{"id":"x","version":1,"data":{}}"#).is_err());
    }
}
