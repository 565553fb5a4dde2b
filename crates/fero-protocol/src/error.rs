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
    /// No or an unknown bearer token.
    Unauthorized,
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
}

impl ErrorBody {
    /// An error body.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorBody {
            error: ErrorDetail {
                code,
                message: message.into(),
            },
        }
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
    /// The client is behind the tombstone purge horizon and must pull again from scratch.
    ResyncRequired,
    /// The token was refused.
    Unauthorized,
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
        }
    }

    /// `true` when retrying can help.
    pub fn is_transient(&self) -> bool {
        self.kind == RemoteErrorKind::Transient
    }
}

impl From<RemoteError> for HandlerError {
    fn from(error: RemoteError) -> Self {
        let retry_after = error.retry_after;
        let handler = if error.is_transient() {
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
