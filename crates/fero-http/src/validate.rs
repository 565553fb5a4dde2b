//! Checks of parsed answers against the request they answer: what the protocol guarantees and a
//! broken or misrouted server could violate. A failed check is a
//! [`Protocol`](fero_protocol::RemoteErrorKind::Protocol) error and nothing of the answer is
//! used, so a bad page is never applied and a bad push answer never marks a change as pushed.

use fero_protocol::{
    ContentDigestResponse, DigestResponse, DigestVersion, PullRequest, PullResponse, PushRequest,
    PushResponse, RemoteError,
};

use crate::error::{Call, protocol};

/// The hex digits of a [`DigestResponse::digest`].
const DIGEST_HEX_DIGITS: usize = 16;

/// A page may not hold more items than asked for, nor move the checkpoint backwards.
pub(crate) fn check_pull(
    collection: &str,
    request: &PullRequest,
    response: &PullResponse,
) -> Result<(), RemoteError> {
    let limit = usize::try_from(request.limit).unwrap_or(usize::MAX);
    if response.items.len() > limit {
        return Err(protocol(
            collection,
            Call::Pull,
            format!(
                "the server sent {} items for a limit of {}: the page was not applied; the \
                 server does not honour the page size, check its version",
                response.items.len(),
                request.limit
            ),
        ));
    }
    let previous = request.checkpoint.as_ref();
    if let Some(previous) = previous.filter(|p| response.checkpoint.last_sync_id < p.last_sync_id) {
        return Err(protocol(
            collection,
            Call::Pull,
            format!(
                "the server's checkpoint went backwards from sync_id {} to {}: the page was \
                 not applied; the server's pagination is broken or the base URL points at \
                 another server than the one this store synced with",
                previous.last_sync_id, response.checkpoint.last_sync_id
            ),
        ));
    }
    Ok(())
}

/// A push answer carries exactly one result per change, in request order, for the same item
/// and mutation id: anything else could mark the wrong change as accepted.
pub(crate) fn check_push(
    collection: &str,
    request: &PushRequest,
    response: &PushResponse,
) -> Result<(), RemoteError> {
    if response.results.len() != request.changes.len() {
        return Err(protocol(
            collection,
            Call::Push,
            format!(
                "{} change(s) were sent and the server answered {} result(s): nothing was \
                 recorded as pushed and the changes are pushed again (safe by mutation id); if it \
                 repeats, the server is not a fero protocol 1 server",
                request.changes.len(),
                response.results.len()
            ),
        ));
    }
    for (index, (change, result)) in request.changes.iter().zip(&response.results).enumerate() {
        if change.id != result.id || change.mutation_id != result.mutation_id {
            return Err(protocol(
                collection,
                Call::Push,
                format!(
                    "result {index} is for item {:?} (mutation {}/{}) but change {index} was \
                     item {:?} (mutation {}/{}): nothing was recorded as pushed and the changes \
                     are pushed again (safe by mutation id)",
                    result.id,
                    result.mutation_id.device,
                    result.mutation_id.seq,
                    change.id,
                    change.mutation_id.device,
                    change.mutation_id.seq
                ),
            ));
        }
    }
    Ok(())
}

/// A digest is 16 hex digits (see [`fero_protocol::Digest::hex`]).
pub(crate) fn check_digest(collection: &str, response: &DigestResponse) -> Result<(), RemoteError> {
    let digits = &response.digest;
    if digits.len() != DIGEST_HEX_DIGITS || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(protocol(
            collection,
            Call::Digest,
            format!(
                "the digest {digits:?} is not {DIGEST_HEX_DIGITS} hex digits: it cannot be \
                 compared with the local store; check that the server speaks fero protocol 1"
            ),
        ));
    }
    Ok(())
}

/// The body of a `digest?version=2` answer, before it is known to be version 2: a server older
/// than digest version 2 ignores the query and answers version 1, without `version`.
#[derive(serde::Deserialize)]
pub(crate) struct DigestAnswer {
    #[serde(default)]
    version: Option<u32>,
    count: u64,
    digest: String,
}

/// A content digest answer is version 2 with 32 hex digits. A version 1 answer means the server
/// does not compute version 2: [`Unsupported`](fero_protocol::RemoteErrorKind::Unsupported).
pub(crate) fn check_content_digest(
    collection: &str,
    answer: DigestAnswer,
) -> Result<ContentDigestResponse, RemoteError> {
    let expected = DigestVersion::V2;
    match answer.version {
        Some(version) if version == expected.number() => {}
        None | Some(1) => {
            return Err(RemoteError::new(
                fero_protocol::RemoteErrorKind::Unsupported,
                collection,
                format!(
                    "{}: the server answered digest version 1: it does not compute digest \
                     version 2; compare digest version 1 instead",
                    Call::ContentDigest
                ),
            ));
        }
        Some(other) => {
            return Err(protocol(
                collection,
                Call::ContentDigest,
                format!(
                    "the server answered digest version {other} to a request for version 2: it \
                     cannot be compared with the local store"
                ),
            ));
        }
    }
    let digits = &answer.digest;
    if digits.len() != expected.hex_digits() || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(protocol(
            collection,
            Call::ContentDigest,
            format!(
                "the digest {digits:?} is not {} hex digits: it cannot be compared with the \
                 local store",
                expected.hex_digits()
            ),
        ));
    }
    Ok(ContentDigestResponse {
        version: expected.number(),
        count: answer.count,
        digest: answer.digest.to_ascii_lowercase(),
    })
}

#[cfg(test)]
mod tests {
    use fero::{SyncCheckpoint, SyncId, Timestamp, Version};
    use fero_protocol::{
        Change, ChangeOutcome, ChangeResult, Document, MutationId, RemoteErrorKind,
    };

    use super::*;

    fn document(id: &str, sync_id: u64) -> Document {
        Document {
            id: id.into(),
            sync_id: SyncId(sync_id),
            version: Version(1),
            updated_at: Timestamp(0),
            deleted: false,
            data: serde_json::json!({}),
        }
    }

    fn change(id: &str, seq: u64) -> Change {
        Change {
            id: id.into(),
            base_version: None,
            mutation_id: MutationId::new("device-a", seq),
            deleted: false,
            data: serde_json::json!({}),
        }
    }

    fn accepted(id: &str, seq: u64) -> ChangeResult {
        ChangeResult {
            id: id.into(),
            mutation_id: MutationId::new("device-a", seq),
            outcome: ChangeOutcome::Accepted {
                version: Version(1),
                sync_id: SyncId(1),
            },
        }
    }

    #[test]
    fn a_checkpoint_going_backwards_is_a_protocol_error() {
        let request = PullRequest {
            checkpoint: Some(SyncCheckpoint::at(SyncId(10))),
            limit: 5,
            subscription: None,
        };
        let backwards = PullResponse {
            items: vec![document("a", 4)],
            checkpoint: SyncCheckpoint::at(SyncId(4)),
            has_more: false,
        };
        let error = check_pull("contacts", &request, &backwards).unwrap_err();
        assert_eq!(error.kind, RemoteErrorKind::Protocol);
        assert!(error.message.contains("from sync_id 10 to 4"), "{error}");

        let same = PullResponse {
            items: Vec::new(),
            checkpoint: SyncCheckpoint::at(SyncId(10)),
            has_more: false,
        };
        assert!(check_pull("contacts", &request, &same).is_ok());
    }

    #[test]
    fn a_page_over_the_limit_is_a_protocol_error() {
        let request = PullRequest {
            checkpoint: None,
            limit: 1,
            subscription: None,
        };
        let response = PullResponse {
            items: vec![document("a", 1), document("b", 2)],
            checkpoint: SyncCheckpoint::at(SyncId(2)),
            has_more: true,
        };
        let error = check_pull("contacts", &request, &response).unwrap_err();
        assert_eq!(error.kind, RemoteErrorKind::Protocol);
    }

    #[test]
    fn push_results_must_match_the_changes_one_to_one_in_order() {
        let request = PushRequest {
            changes: vec![change("a", 1), change("b", 2)],
        };
        let good = PushResponse {
            results: vec![accepted("a", 1), accepted("b", 2)],
        };
        assert!(check_push("contacts", &request, &good).is_ok());

        let missing = PushResponse {
            results: vec![accepted("a", 1)],
        };
        let swapped = PushResponse {
            results: vec![accepted("b", 2), accepted("a", 1)],
        };
        let wrong_mutation = PushResponse {
            results: vec![accepted("a", 1), accepted("b", 3)],
        };
        for bad in [missing, swapped, wrong_mutation] {
            let error = check_push("contacts", &request, &bad).unwrap_err();
            assert_eq!(error.kind, RemoteErrorKind::Protocol, "{bad:?}");
        }
    }

    #[test]
    fn a_digest_must_be_sixteen_hex_digits() {
        let good = DigestResponse {
            count: 1,
            digest: "00ff00ff00ff00ff".into(),
        };
        assert!(check_digest("contacts", &good).is_ok());
        for bad in ["", "xyz", "00ff00ff00ff00ff0"] {
            let response = DigestResponse {
                count: 1,
                digest: bad.into(),
            };
            assert!(check_digest("contacts", &response).is_err(), "{bad}");
        }
    }
}
