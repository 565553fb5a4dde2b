//! Errors: [`BuildError`] when an [`HttpRemote`](crate::HttpRemote) is configured, and the
//! mapping of every HTTP failure onto a [`RemoteError`] kind.
//!
//! | failure | kind |
//! |---|---|
//! | timeout, connection refused or lost, 408, 429, 5xx | [`Transient`](RemoteErrorKind::Transient), with `Retry-After` (seconds) in `retry_after` |
//! | 401, 403 | [`Unauthorized`](RemoteErrorKind::Unauthorized) |
//! | 410 with code `resync_required` | [`ResyncRequired`](RemoteErrorKind::ResyncRequired), with the body's `reason` in `resync_reason` (absent: `tombstones_purged`); the engine then resyncs the collection |
//! | the content digest (`digest?version=2`): 404, 405, 422, or a 200 answer without `"version": 2` (a server older than digest version 2) | [`Unsupported`](RemoteErrorKind::Unsupported) |
//! | any other 4xx | [`Permanent`](RemoteErrorKind::Permanent), message from the JSON error body |
//! | unparsable answer, checkpoint backwards, push results not matching the changes 1:1, another protocol version | [`Protocol`](RemoteErrorKind::Protocol) |
//!
//! Every message names the collection (in [`RemoteError::collection`], shown first by its
//! `Display`) and says what to do.

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

use fero_protocol::{ErrorBody, ErrorCode, RemoteError, RemoteErrorKind, ResyncReason};
use reqwest::StatusCode;

/// An [`HttpRemote`](crate::HttpRemote) configuration was rejected by `build()`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The base URL does not parse, or is not `http`/`https`.
    #[error(
        "invalid base URL {url:?}: {reason}; use an http:// or https:// URL such as http://127.0.0.1:7700"
    )]
    InvalidBaseUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The token cannot be sent in an HTTP header.
    #[error(
        "the bearer token cannot be sent in an Authorization header (it contains control \
         characters or non-ASCII bytes): check the token file or variable it was read from"
    )]
    InvalidToken,
    /// A header value given to the builder (user agent, device id) cannot be sent.
    #[error("the {header} {value:?} cannot be sent as an HTTP header value: use printable ASCII")]
    InvalidHeader {
        /// Which setting.
        header: &'static str,
        /// The value given.
        value: String,
    },
    /// A timeout or limit of zero.
    #[error("{setting} must be above zero: a zero {setting} would fail every request")]
    ZeroSetting {
        /// Which setting.
        setting: &'static str,
    },
    /// The HTTP client could not be created (for example, TLS roots could not be loaded).
    #[error("the HTTP client could not be created: {source}")]
    Client {
        /// The client's error.
        #[source]
        source: reqwest::Error,
    },
}

/// The call a [`RemoteError`] comes from; it starts every message.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Call {
    Pull,
    Push,
    Digest,
    ContentDigest,
    ChangeStream,
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Call::Pull => "pull",
            Call::Push => "push",
            Call::Digest => "digest",
            Call::ContentDigest => "content digest",
            Call::ChangeStream => "change stream",
        })
    }
}

/// The label used as [`RemoteError::collection`] for the change stream, which serves every
/// collection of the user. It is not a valid collection name, so it cannot be mistaken for one.
pub(crate) const CHANGE_STREAM_LABEL: &str = "(change stream)";

/// The longest piece of a non-JSON error body quoted in a message.
const QUOTED_BODY_CHARS: usize = 200;

/// `error` and its sources, joined with ": ", because reqwest's own message ("error sending
/// request") hides the cause (connection refused, reset, ...) in the source chain.
fn chain(error: &dyn StdError) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// A request that took longer than its limit: transient.
pub(crate) fn timed_out(collection: &str, call: Call, timeout: Option<Duration>) -> RemoteError {
    let message = match timeout {
        Some(limit) => format!(
            "{call} timed out after {limit:?}: the server is slow or unreachable; it is \
             retried with backoff (raise the request timeout if pages are large)"
        ),
        None => {
            format!(
                "{call} timed out: the server is slow or unreachable; it is retried with backoff"
            )
        }
    };
    RemoteError::new(RemoteErrorKind::Transient, collection, message)
}

/// A failure to send a request or to read its answer, as reqwest reports it.
pub(crate) fn from_transport(
    collection: &str,
    call: Call,
    timeout: Option<Duration>,
    error: &reqwest::Error,
) -> RemoteError {
    if error.is_builder() {
        return RemoteError::new(
            RemoteErrorKind::Permanent,
            collection,
            format!(
                "{call} request could not be built: {}; check the base URL",
                chain(error)
            ),
        );
    }
    let message = if error.is_timeout() {
        return timed_out(collection, call, timeout);
    } else if error.is_connect() {
        format!(
            "{call} could not connect: {}; check that the server is running at the base URL; it \
             is retried with backoff",
            chain(error)
        )
    } else {
        format!(
            "{call} lost its connection: {}; it is retried with backoff",
            chain(error)
        )
    };
    RemoteError::new(RemoteErrorKind::Transient, collection, message)
}

/// The delay of a `Retry-After` header, in either of its forms: delay-seconds, or an HTTP-date
/// (the time until that date by this machine's clock; a date in the past is no delay).
/// `None` for a value that is neither: the engine's backoff applies alone.
pub(crate) fn parse_retry_after(value: &str) -> Option<Duration> {
    parse_retry_after_at(value, std::time::SystemTime::now())
}

fn parse_retry_after_at(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or_default())
}

/// The code and message of a JSON error body, or a quote of whatever the body is.
fn describe_body(body: &[u8]) -> (Option<ErrorCode>, String) {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(parsed) => (Some(parsed.error.code), parsed.error.message),
        Err(_) if body.is_empty() => (None, "no error body".to_owned()),
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let quoted: String = text.chars().take(QUOTED_BODY_CHARS).collect();
            (None, format!("non-JSON error body {quoted:?}"))
        }
    }
}

fn code_text(code: Option<ErrorCode>) -> String {
    match code.and_then(|code| serde_json::to_value(code).ok()) {
        Some(serde_json::Value::String(text)) => format!(" ({text})"),
        _ => String::new(),
    }
}

/// A non-success HTTP status, with the answer's body.
pub(crate) fn from_status(
    collection: &str,
    call: Call,
    status: StatusCode,
    retry_after: Option<Duration>,
    body: &[u8],
) -> RemoteError {
    let (code, detail) = describe_body(body);
    let code_note = code_text(code);
    // A 410 body without a reason comes from a server that knew only the purge horizon.
    let resync_reason =
        (status.as_u16() == 410 && code == Some(ErrorCode::ResyncRequired)).then(|| {
            serde_json::from_slice::<ErrorBody>(body)
                .ok()
                .and_then(|parsed| parsed.error.reason)
                .unwrap_or(ResyncReason::TombstonesPurged)
        });
    let (kind, message) = match status.as_u16() {
        401 | 403 => (
            RemoteErrorKind::Unauthorized,
            format!(
                "{call} was refused with {status}{code_note}: {detail}; the bearer token is \
                 missing, unknown or not allowed: configure a valid token"
            ),
        ),
        410 if code == Some(ErrorCode::ResyncRequired) => {
            let why = match resync_reason {
                Some(ResyncReason::TombstonesPurged) => {
                    "the local checkpoint is behind the server's tombstone purge horizon"
                }
                Some(ResyncReason::ServerBehind) => {
                    "the local checkpoint is ahead of the server's feed (a server restored from \
                     an older backup)"
                }
                _ => "the server cannot continue from the local checkpoint",
            };
            (
                RemoteErrorKind::ResyncRequired,
                format!(
                    "{call} was refused with {status}{code_note} ({}): {detail}; {why}: the \
                     collection is pulled again from the beginning (fero's engine does it by \
                     itself)",
                    resync_reason.unwrap_or(ResyncReason::Unknown)
                ),
            )
        }
        404 | 405 | 422 if call == Call::ContentDigest => (
            RemoteErrorKind::Unsupported,
            format!(
                "{call} was refused with {status}{code_note}: {detail}; the server does not \
                 compute digest version 2: compare digest version 1 instead"
            ),
        ),
        408 | 429 | 500..=599 => {
            let wait = match retry_after {
                Some(delay) => format!(" after at least {delay:?} (Retry-After)"),
                None => " with backoff".to_owned(),
            };
            (
                RemoteErrorKind::Transient,
                format!("{call} failed with {status}{code_note}: {detail}; it is retried{wait}"),
            )
        }
        400..=499 => {
            let hint = if code.is_none() || code == Some(ErrorCode::NotFound) {
                "check that the base URL points at a fero server"
            } else {
                "retrying will not help: fix the request or the server's configuration"
            };
            (
                RemoteErrorKind::Permanent,
                format!("{call} was refused with {status}{code_note}: {detail}; {hint}"),
            )
        }
        _ => (
            RemoteErrorKind::Protocol,
            format!(
                "{call} got the unexpected status {status}: {detail}; check that the base URL \
                 points at a fero server (redirects are followed, other statuses are not part of \
                 the protocol)"
            ),
        ),
    };
    let mut error = RemoteError::new(kind, collection, message);
    if kind == RemoteErrorKind::Transient {
        error.retry_after = retry_after;
    }
    if kind == RemoteErrorKind::ResyncRequired {
        error.resync_reason = resync_reason;
    }
    error
}

/// An answer that breaks the protocol.
pub(crate) fn protocol(collection: &str, call: Call, message: impl fmt::Display) -> RemoteError {
    RemoteError::new(
        RemoteErrorKind::Protocol,
        collection,
        format!("{call}: {message}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(code: ErrorCode, message: &str) -> Vec<u8> {
        serde_json::to_vec(&ErrorBody::new(code, message)).unwrap()
    }

    #[test]
    fn a_410_resync_required_carries_its_reason_and_an_absent_one_is_the_purge_horizon() {
        let gone = StatusCode::from_u16(410).unwrap();
        for (reason, expected) in [
            (Some(ResyncReason::ServerBehind), ResyncReason::ServerBehind),
            (
                Some(ResyncReason::TombstonesPurged),
                ResyncReason::TombstonesPurged,
            ),
            (None, ResyncReason::TombstonesPurged),
        ] {
            let mut body = ErrorBody::new(ErrorCode::ResyncRequired, "why");
            body.error.reason = reason;
            let body = serde_json::to_vec(&body).unwrap();
            let error = from_status("notes", Call::Pull, gone, None, &body);
            assert_eq!(error.kind, RemoteErrorKind::ResyncRequired);
            assert_eq!(error.resync_reason, Some(expected), "{error}");
            assert!(error.message.contains(&expected.to_string()), "{error}");
            let handler = fero::HandlerError::from(error);
            assert!(handler.resync_reason().is_some());
        }
        let not_found = from_status(
            "notes",
            Call::Pull,
            gone,
            None,
            &body(ErrorCode::NotFound, "x"),
        );
        assert_eq!(not_found.resync_reason, None);
    }

    #[test]
    fn a_refused_content_digest_is_unsupported_and_other_calls_stay_permanent() {
        for status in [404, 405, 422] {
            let status = StatusCode::from_u16(status).unwrap();
            let why = body(ErrorCode::InvalidRequest, "unknown digest version");
            let error = from_status("contacts", Call::ContentDigest, status, None, &why);
            assert!(error.is_unsupported(), "{status}: {error}");
            assert!(error.message.contains("digest version 1"), "{error}");
            let plain = from_status("contacts", Call::Digest, status, None, &why);
            assert_eq!(plain.kind, RemoteErrorKind::Permanent, "{status}: {plain}");
        }
        let busy = from_status(
            "contacts",
            Call::ContentDigest,
            StatusCode::SERVICE_UNAVAILABLE,
            None,
            &body(ErrorCode::Unavailable, "later"),
        );
        assert!(busy.is_transient(), "{busy}");
    }

    #[test]
    fn statuses_map_onto_the_documented_kinds() {
        let cases = [
            (401, ErrorCode::Unauthorized, RemoteErrorKind::Unauthorized),
            (403, ErrorCode::Unauthorized, RemoteErrorKind::Unauthorized),
            (
                410,
                ErrorCode::ResyncRequired,
                RemoteErrorKind::ResyncRequired,
            ),
            (410, ErrorCode::NotFound, RemoteErrorKind::Permanent),
            (400, ErrorCode::InvalidRequest, RemoteErrorKind::Permanent),
            (413, ErrorCode::BodyTooLarge, RemoteErrorKind::Permanent),
            (408, ErrorCode::Unavailable, RemoteErrorKind::Transient),
            (429, ErrorCode::RateLimited, RemoteErrorKind::Transient),
            (500, ErrorCode::Internal, RemoteErrorKind::Transient),
            (503, ErrorCode::Unavailable, RemoteErrorKind::Transient),
            (304, ErrorCode::Internal, RemoteErrorKind::Protocol),
        ];
        for (status, code, kind) in cases {
            let status = StatusCode::from_u16(status).unwrap();
            let error = from_status("contacts", Call::Pull, status, None, &body(code, "why"));
            assert_eq!(error.kind, kind, "{status}: {error}");
            assert_eq!(error.collection, "contacts");
            assert!(error.message.starts_with("pull "), "{}", error.message);
        }
    }

    #[test]
    fn the_error_body_message_and_code_reach_the_message() {
        let error = from_status(
            "contacts",
            Call::Push,
            StatusCode::BAD_REQUEST,
            None,
            &body(ErrorCode::PageTooLarge, "limit 9000 is above 5000"),
        );
        assert!(
            error.message.contains("limit 9000 is above 5000"),
            "{error}"
        );
        assert!(error.message.contains("(page_too_large)"), "{error}");
        assert_eq!(error.to_string().split(':').next(), Some("contacts"));
    }

    #[test]
    fn retry_after_is_kept_only_for_transient_errors() {
        let delay = Some(Duration::from_secs(7));
        let busy = from_status(
            "contacts",
            Call::Pull,
            StatusCode::TOO_MANY_REQUESTS,
            delay,
            b"",
        );
        assert_eq!(busy.retry_after, delay);
        assert!(busy.message.contains("7s"), "{busy}");
        let refused = from_status("contacts", Call::Pull, StatusCode::BAD_REQUEST, delay, b"");
        assert_eq!(refused.retry_after, None);
    }

    #[test]
    fn retry_after_parses_seconds_and_http_dates() {
        assert_eq!(parse_retry_after(" 3 "), Some(Duration::from_secs(3)));
        let date = "Wed, 21 Oct 2015 07:28:00 GMT";
        let at = httpdate::parse_http_date(date).unwrap();
        assert_eq!(
            parse_retry_after_at(date, at - Duration::from_secs(90)),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            parse_retry_after_at(date, at + Duration::from_secs(5)),
            Some(Duration::ZERO),
            "a date in the past asks for no delay"
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("next tuesday"), None);
        assert_eq!(parse_retry_after("-1"), None);
    }

    #[test]
    fn a_non_json_error_body_is_quoted_and_cut() {
        let long = "x".repeat(1_000);
        let error = from_status(
            "contacts",
            Call::Digest,
            StatusCode::NOT_FOUND,
            None,
            long.as_bytes(),
        );
        assert!(error.message.contains("non-JSON error body"), "{error}");
        assert!(error.message.len() < 500, "{}", error.message.len());
        assert!(error.message.contains("base URL"), "{error}");
    }
}
