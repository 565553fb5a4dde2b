//! What the server accepts in a push, checked in one place before storage is touched.
//!
//! Two layers:
//! - [`PushBody`] is the request's shape as the server reads it. It differs from the shared
//!   [`PushRequest`](fero_protocol::PushRequest) in one way: `base_version` is required (`null`
//!   creates). The shared type reads a missing `base_version` as `None`, which would write a
//!   change made on an existing row as a create; here a missing field is 422 like any other.
//! - [`reject_reason`] refuses one change that no stored state could make valid. The refusal is
//!   that change's `rejected` result and the page's other changes go on, so a bad change never
//!   costs the whole push (a 500 for the page would be retried forever and block the device's
//!   outbox). Every backend gets the same verdict: U+0000 is refused here because PostgreSQL's
//!   `TEXT` and `JSONB` cannot hold it, although SQLite could.

use fero::Version;
use fero_protocol::{Change, MutationId};
use serde::{Deserialize, Deserializer};

/// The longest item id accepted in a push, in bytes; longer ids are rejected per change.
pub(crate) const MAX_ID_BYTES: usize = 512;

/// The longest device id of a mutation id, in bytes.
pub(crate) const MAX_DEVICE_BYTES: usize = 256;

/// `POST /v1/collections/{name}/push` as the server reads it.
#[derive(Debug, Deserialize)]
pub(crate) struct PushBody {
    pub(crate) changes: Vec<PushedChange>,
}

/// One change of a [`PushBody`]: a [`Change`] whose `base_version` must be present.
#[derive(Debug, Deserialize)]
pub(crate) struct PushedChange {
    id: String,
    /// `deserialize_with` makes serde report a missing field instead of defaulting it to `None`.
    #[serde(deserialize_with = "present")]
    base_version: Option<Version>,
    mutation_id: MutationId,
    #[serde(default)]
    deleted: bool,
    #[serde(default)]
    data: serde_json::Value,
}

fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Version>, D::Error> {
    Option::deserialize(deserializer)
}

impl From<PushedChange> for Change {
    fn from(change: PushedChange) -> Change {
        Change {
            id: change.id,
            base_version: change.base_version,
            mutation_id: change.mutation_id,
            deleted: change.deleted,
            data: change.data,
        }
    }
}

/// Why a change cannot be written whatever the stored state: `(code, message)` of its
/// `rejected` result, or `None` when it is well formed.
///
/// - `invalid_id`: the item id is not 1 to [`MAX_ID_BYTES`] bytes, or holds U+0000;
/// - `invalid_mutation_id`: the device id is not 1 to [`MAX_DEVICE_BYTES`] bytes, or holds
///   U+0000;
/// - `invalid_data`: a string or an object key inside `data` holds U+0000 (not checked for a
///   deletion, whose `data` is ignored).
pub(crate) fn reject_reason(change: &Change) -> Option<(&'static str, String)> {
    if change.id.is_empty() || change.id.len() > MAX_ID_BYTES {
        return Some((
            "invalid_id",
            format!(
                "an item id must be 1 to {MAX_ID_BYTES} bytes long, got {}",
                change.id.len()
            ),
        ));
    }
    if let Some(at) = change.id.find('\0') {
        return Some((
            "invalid_id",
            format!("an item id must not contain U+0000 (found at byte {at})"),
        ));
    }
    let device = &change.mutation_id.device;
    if device.is_empty() || device.len() > MAX_DEVICE_BYTES {
        return Some((
            "invalid_mutation_id",
            format!(
                "a mutation id's device must be 1 to {MAX_DEVICE_BYTES} bytes long, got {}",
                device.len()
            ),
        ));
    }
    if let Some(at) = device.find('\0') {
        return Some((
            "invalid_mutation_id",
            format!("a mutation id's device must not contain U+0000 (found at byte {at})"),
        ));
    }
    if !change.deleted {
        if let Some(path) = nul_inside(&change.data, "data") {
            return Some((
                "invalid_data",
                format!(
                    "{path} contains U+0000, which the server cannot store; remove or replace it"
                ),
            ));
        }
    }
    None
}

/// The JSON path (`data.a[2]`) of the first string or key holding U+0000, if any. Iterative, so
/// any nesting depth the parser allowed is walked without recursion.
fn nul_inside(value: &serde_json::Value, root: &str) -> Option<String> {
    use serde_json::Value;
    let mut pending: Vec<(&Value, String)> = vec![(value, root.to_owned())];
    while let Some((value, path)) = pending.pop() {
        match value {
            Value::String(text) if text.contains('\0') => return Some(path),
            Value::Array(items) => {
                pending.extend(
                    items
                        .iter()
                        .enumerate()
                        .rev()
                        .map(|(i, item)| (item, format!("{path}[{i}]"))),
                );
            }
            Value::Object(fields) => {
                for (key, field) in fields {
                    if key.contains('\0') {
                        return Some(format!("a key of {path}"));
                    }
                    pending.push((field, format!("{path}.{key}")));
                }
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn change(id: &str, device: &str, data: serde_json::Value) -> Change {
        Change {
            id: id.to_owned(),
            base_version: None,
            mutation_id: MutationId::new(device, 1),
            deleted: false,
            data,
        }
    }

    fn code(change: &Change) -> Option<&'static str> {
        reject_reason(change).map(|(code, _)| code)
    }

    #[test]
    fn nul_anywhere_is_rejected_with_the_field_it_is_in() {
        assert_eq!(code(&change("a\0b", "d", json!(1))), Some("invalid_id"));
        assert_eq!(
            code(&change("a", "d\0", json!(1))),
            Some("invalid_mutation_id")
        );
        for data in [
            json!("x\u{0}"),
            json!({ "k": ["ok", { "deep": "a\u{0}" }] }),
            json!({ "k\u{0}": 1 }),
        ] {
            assert_eq!(
                code(&change("a", "d", data.clone())),
                Some("invalid_data"),
                "{data}"
            );
        }
        let (_, message) = reject_reason(&change("a", "d", json!({"k": [0, "\u{0}"]}))).unwrap();
        assert!(message.contains("data.k[1]"), "{message}");
    }

    #[test]
    fn well_formed_changes_and_ignored_deletion_data_pass() {
        assert_eq!(code(&change("a", "d", json!({ "k": ["\u{1}", 2] }))), None);
        let deletion = Change {
            deleted: true,
            ..change("a", "d", json!("\u{0}"))
        };
        assert_eq!(code(&deletion), None, "a deletion's data is never stored");
    }

    #[test]
    fn base_version_must_be_present_and_null_creates() {
        let missing = r#"{"changes":[{"id":"a","mutation_id":{"device":"d","seq":1}}]}"#;
        let error = serde_json::from_str::<PushBody>(missing).unwrap_err();
        assert!(error.to_string().contains("base_version"), "{error}");
        let null =
            r#"{"changes":[{"id":"a","base_version":null,"mutation_id":{"device":"d","seq":1}}]}"#;
        let body: PushBody = serde_json::from_str(null).unwrap();
        let change = Change::from(body.changes.into_iter().next().unwrap());
        assert_eq!(change.base_version, None);
        let on_two =
            r#"{"changes":[{"id":"a","base_version":2,"mutation_id":{"device":"d","seq":1}}]}"#;
        let body: PushBody = serde_json::from_str(on_two).unwrap();
        assert_eq!(
            Change::from(body.changes.into_iter().next().unwrap()).base_version,
            Some(Version(2))
        );
    }
}
