//! [`ApiError`]: every refusal as an HTTP status plus the protocol's JSON error body.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use fero_protocol::{ErrorBody, ErrorCode, ResyncReason};
use serde::de::DeserializeOwned;

use crate::error::StorageError;
use crate::jwt::JwtRejection;

/// A refused request: status, code and message of `{"error": {"code", "message"}}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) code: ErrorCode,
    pub(crate) message: String,
    /// With 410 `resync_required`: why, sent as `error.reason`.
    pub(crate) reason: Option<ResyncReason>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            reason: None,
        }
    }

    pub(crate) fn invalid_collection(message: impl Into<String>) -> Self {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidCollection,
            message,
        )
    }

    pub(crate) fn invalid_request(message: impl Into<String>) -> Self {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::InvalidRequest,
            message,
        )
    }

    pub(crate) fn page_too_large(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::PageTooLarge, message)
    }

    pub(crate) fn invalid_cursor(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidCursor, message)
    }

    pub(crate) fn unauthorized(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, message)
    }

    /// The body for an error response produced outside this crate's handlers (axum's own 404,
    /// 405, a failed extractor), chosen by its status.
    pub(crate) fn for_status(status: StatusCode) -> Self {
        let code = match status {
            StatusCode::UNAUTHORIZED => ErrorCode::Unauthorized,
            StatusCode::NOT_FOUND => ErrorCode::NotFound,
            StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::BodyTooLarge,
            StatusCode::TOO_MANY_REQUESTS => ErrorCode::RateLimited,
            StatusCode::SERVICE_UNAVAILABLE => ErrorCode::Unavailable,
            status if status.is_server_error() => ErrorCode::Internal,
            _ => ErrorCode::InvalidRequest,
        };
        let reason = status.canonical_reason().unwrap_or("refused");
        let message = match status {
            StatusCode::NOT_FOUND => {
                "no such endpoint; endpoints live under /v1 (see docs/protocol.md)".to_owned()
            }
            StatusCode::METHOD_NOT_ALLOWED => {
                "method not allowed on this endpoint; the `Allow` header lists the ones that are"
                    .to_owned()
            }
            _ => reason.to_lowercase(),
        };
        ApiError::new(status, code, message)
    }
}

impl From<StorageError> for ApiError {
    fn from(error: StorageError) -> Self {
        match error.resync_reason() {
            Some(reason) => ApiError {
                reason: Some(reason),
                ..ApiError::new(
                    StatusCode::GONE,
                    ErrorCode::ResyncRequired,
                    error.to_string(),
                )
            },
            None if matches!(error, StorageError::Rules { .. }) => ApiError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::Forbidden,
                error.to_string(),
            ),
            None => {
                let other = error;
                // The details name tables and files: they go to the log, not to the client.
                tracing::error!(error = %other, "storage failed");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    ErrorCode::Internal,
                    "the server's storage failed; nothing was written, retry later",
                )
            }
        }
    }
}

/// A refused JWT: 401 `token_expired` when only its time has passed (the client refreshes it),
/// 401 `unauthorized` with what failed otherwise. The token itself is never in the message.
impl From<JwtRejection> for ApiError {
    fn from(rejection: JwtRejection) -> Self {
        let code = if rejection.is_expired() {
            ErrorCode::TokenExpired
        } else {
            ErrorCode::Unauthorized
        };
        ApiError::new(StatusCode::UNAUTHORIZED, code, rejection.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // RFC 6750 section 3: a 401 names the scheme; an expired token is `invalid_token`.
        let challenge = match self.code {
            ErrorCode::Unauthorized => Some("Bearer realm=\"fero\""),
            ErrorCode::TokenExpired => Some(
                "Bearer realm=\"fero\", error=\"invalid_token\", \
                 error_description=\"the token expired\"",
            ),
            _ => None,
        };
        let mut body = ErrorBody::new(self.code, self.message);
        body.error.reason = self.reason;
        let mut response = (self.status, Json(body)).into_response();
        if let Some(challenge) = challenge {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        response
    }
}

/// A JSON request body whose every failure is an [`ApiError`]: 413 `body_too_large` over the
/// body limit, 400 `malformed_json` for text that is not JSON, 422 `invalid_request` for JSON of
/// the wrong shape. The `Content-Type` is not checked: the body is JSON by protocol.
#[derive(Debug)]
pub(crate) struct JsonBody<T>(pub(crate) T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(request, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    ErrorCode::BodyTooLarge,
                    "request body is larger than the server's limit; send fewer changes per push",
                )
            } else {
                ApiError::invalid_request(format!("cannot read the request body: {}", rejection.body_text()))
            }
        })?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|error| {
                use serde_json::error::Category;
                match error.classify() {
                    Category::Data => ApiError::invalid_request(format!(
                        "request body has the wrong shape: {error}"
                    )),
                    Category::Syntax | Category::Eof | Category::Io => ApiError::new(
                        StatusCode::BAD_REQUEST,
                        ErrorCode::MalformedJson,
                        format!("request body is not valid JSON: {error}"),
                    ),
                }
            })
    }
}
