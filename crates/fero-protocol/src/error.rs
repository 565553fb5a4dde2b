//! Errors on the wire (the JSON error body) and on the client side ([`RemoteError`]).

use std::time::Duration;

use fero::HandlerError;
use serde::{Deserialize, Serialize};

/// A machine-readable error code in the JSON error body.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// The body is not valid JSON.
    MalformedJson,
    /// A required field is missing or has the wrong type.
    InvalidRequest,
    /// The collection name is invalid.
    InvalidCollection,
    /// `limit` is 0 or above [`MAX_PAGE_SIZE`](crate::MAX_PAGE_SIZE).
    PageTooLarge,
    /// The body is above the server's size limit.
    BodyTooLarge,
    /// The cursor does not parse.
    InvalidCursor,
    /// No bearer token, an unknown one, or a JWT that does not verify (bad signature, unknown
    /// key, wrong audience or issuer, malformed). The message says what failed.
    Unauthorized,
    /// The bearer JWT has expired (HTTP 401). The token was otherwise valid: the client should
    /// get a fresh token from its identity provider (refresh it) and send the request again; a
    /// refreshed token is accepted without anything else changing.
    TokenExpired,
    /// No such route.
    NotFound,
    /// The client's checkpoint is behind the tombstone purge horizon: drop the collection's
    /// local copy and checkpoint, and pull it again from the beginning.
    ResyncRequired,
    /// Too many requests; retry after the `Retry-After` delay.
    RateLimited,
    /// The server failed; retry later.
    Internal,
    /// The server is starting or stopping; retry later.
    Unavailable,
    /// The client speaks a protocol version this server does not.
    UnsupportedVersion,
    /// The sync rules do not let this user do what the request asks (a shared collection's
    /// rules could not decide what the user may read); a permanent error until the user's
    /// token or the rules change.
    Forbidden,
}

/// Why a server answered 410 `resync_required`: it decides what a client does with the rows it
/// holds that the pull from scratch does not bring back.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ResyncReason {
    /// The checkpoint is behind the collection's tombstone purge horizon: deletions may have
    /// been missed. A row the client holds (without a pending edit) that the pull from scratch
    /// does not bring back was deleted on the server; the client removes it, with an event.
    TombstonesPurged,
    /// The checkpoint is ahead of the user's feed on the server: the server lost writes it had
    /// acknowledged (its database was restored from an older backup). A row the client holds that
    /// the server lacks is kept, never silently deleted, and may be pushed back to heal the server.
    ServerBehind,
    /// A reason this client does not know (a newer server): treated like
    /// [`ServerBehind`](ResyncReason::ServerBehind), which keeps every row.
    #[serde(other)]
    Unknown,
}

impl std::fmt::Display for ResyncReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ResyncReason::TombstonesPurged => "tombstones_purged",
            ResyncReason::ServerBehind => "server_behind",
            ResyncReason::Unknown => "unknown",
        })
    }
}

/// `{"error": {"code": "…", "message": "…"}}`, the body of every 4xx and 5xx answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// The inside of an [`ErrorBody`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// What kind of error.
    pub code: ErrorCode,
    /// What went wrong, for people.
    pub message: String,
    /// With [`ErrorCode::ResyncRequired`]: why (`"reason": "tombstones_purged"` or
    /// `"server_behind"`). Absent otherwise; a client reads an absent reason on a 410 as
    /// [`ResyncReason::TombstonesPurged`], the only cause older servers had.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<ResyncReason>,
}

impl ErrorBody {
    /// An error body.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorBody {
            error: ErrorDetail {
                code,
                message: message.into(),
                reason: None,
            },
        }
    }

    /// A 410 `resync_required` body with its reason.
    pub fn resync_required(reason: ResyncReason, message: impl Into<String>) -> Self {
        let mut body = ErrorBody::new(ErrorCode::ResyncRequired, message);
        body.error.reason = Some(reason);
        body
    }
}

/// How a [`RemoteError`] affects sync.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RemoteErrorKind {
    /// Timeouts, lost connections, 429, 5xx: retried with backoff.
    Transient,
    /// A refusal retrying cannot fix (4xx).
    Permanent,
    /// The answer broke the protocol (unparsable, checkpoint backwards, wrong collection).
    Protocol,
    /// The server cannot continue from the client's checkpoint (behind the tombstone purge
    /// horizon, or ahead of a restored server's feed): pull again from scratch;
    /// [`RemoteError::resync_reason`] says why.
    ResyncRequired,
    /// The token was refused.
    Unauthorized,
    /// The remote does not offer this call (an optional [`Remote`](crate::Remote) method it does
    /// not implement, or an older server): the caller falls back to what it does offer, such as
    /// digest version 1 instead of the content digest.
    Unsupported,
}

/// A remote call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{collection}: {message}")]
pub struct RemoteError {
    /// How it affects sync.
    pub kind: RemoteErrorKind,
    /// The collection concerned.
    pub collection: String,
    /// What went wrong.
    pub message: String,
    /// The server's `Retry-After`, if any.
    pub retry_after: Option<Duration>,
    /// With [`RemoteErrorKind::ResyncRequired`]: why the server asks for it.
    pub resync_reason: Option<ResyncReason>,
}

impl RemoteError {
    /// An error of `kind`.
    pub fn new(
        kind: RemoteErrorKind,
        collection: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        RemoteError {
            kind,
            collection: collection.into(),
            message: message.into(),
            retry_after: None,
            resync_reason: None,
        }
    }

    /// A [`RemoteErrorKind::ResyncRequired`] error for `reason`.
    pub fn resync_required(
        collection: impl Into<String>,
        reason: ResyncReason,
        message: impl Into<String>,
    ) -> Self {
        let mut error = RemoteError::new(RemoteErrorKind::ResyncRequired, collection, message);
        error.resync_reason = Some(reason);
        error
    }

    /// `true` when retrying can help.
    pub fn is_transient(&self) -> bool {
        self.kind == RemoteErrorKind::Transient
    }

    /// A [`RemoteErrorKind::Unsupported`] error: the remote does not offer `call`.
    pub fn unsupported(collection: impl Into<String>, call: &str) -> Self {
        RemoteError::new(
            RemoteErrorKind::Unsupported,
            collection,
            format!("this remote does not offer {call}; use what it offers instead"),
        )
    }

    /// `true` when the remote does not offer the call ([`RemoteErrorKind::Unsupported`]).
    pub fn is_unsupported(&self) -> bool {
        self.kind == RemoteErrorKind::Unsupported
    }
}

impl From<RemoteError> for HandlerError {
    fn from(error: RemoteError) -> Self {
        let retry_after = error.retry_after;
        let handler = if error.kind == RemoteErrorKind::ResyncRequired {
            // An absent reason is the only cause older servers had (see `ErrorDetail::reason`).
            let reason = match error
                .resync_reason
                .unwrap_or(ResyncReason::TombstonesPurged)
            {
                ResyncReason::TombstonesPurged => fero::ResyncReason::TombstonesPurged,
                ResyncReason::ServerBehind => fero::ResyncReason::ServerBehind,
                ResyncReason::Unknown => fero::ResyncReason::Unknown,
            };
            HandlerError::resync_required(reason, error.to_string())
        } else if error.is_transient() {
            HandlerError::transient(error.to_string())
        } else {
            HandlerError::permanent(error.to_string())
        };
        let handler = match retry_after {
            Some(delay) => handler.with_retry_after(delay),
            None => handler,
        };
        handler.with_source(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resync_body_carries_its_reason_and_other_bodies_carry_none() {
        let body = ErrorBody::resync_required(ResyncReason::ServerBehind, "ahead");
        let text = serde_json::to_string(&body).unwrap();
        assert_eq!(
            text,
            r#"{"error":{"code":"resync_required","message":"ahead","reason":"server_behind"}}"#
        );
        let plain = serde_json::to_string(&ErrorBody::new(ErrorCode::Internal, "x")).unwrap();
        let expired = serde_json::to_string(&ErrorBody::new(ErrorCode::TokenExpired, "x")).unwrap();
        assert_eq!(
            expired,
            r#"{"error":{"code":"token_expired","message":"x"}}"#
        );
        assert_eq!(plain, r#"{"error":{"code":"internal","message":"x"}}"#);
    }

    #[test]
    fn an_unknown_or_absent_reason_still_parses() {
        let future: ErrorBody = serde_json::from_str(
            r#"{"error":{"code":"resync_required","message":"m","reason":"moved_shards"}}"#,
        )
        .unwrap();
        assert_eq!(future.error.reason, Some(ResyncReason::Unknown));
        let old: ErrorBody =
            serde_json::from_str(r#"{"error":{"code":"resync_required","message":"m"}}"#).unwrap();
        assert_eq!(old.error.reason, None);
    }

    #[test]
    fn a_resync_error_becomes_a_resync_handler_error_with_its_reason() {
        let behind = RemoteError::resync_required("notes", ResyncReason::ServerBehind, "ahead");
        let handler = HandlerError::from(behind);
        assert_eq!(
            handler.resync_reason(),
            Some(fero::ResyncReason::ServerBehind)
        );
        assert!(!handler.is_transient());
        // A 410 without a reason is the purge horizon, the only cause older servers had.
        let old = RemoteError::new(RemoteErrorKind::ResyncRequired, "notes", "behind");
        assert_eq!(
            HandlerError::from(old).resync_reason(),
            Some(fero::ResyncReason::TombstonesPurged)
        );
        let other = RemoteError::new(RemoteErrorKind::Permanent, "notes", "bad");
        assert_eq!(HandlerError::from(other).resync_reason(), None);
    }
}
