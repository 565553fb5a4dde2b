//! `GET /readyz`: whether this process should be sent requests.
//!
//! `/healthz` is liveness: the process runs and answers HTTP (restart it if not). `/readyz` is
//! readiness: it answers 200 only when the storage answers a cheap ping ([`Storage::ping`]) and
//! shutdown has not begun, and 503 otherwise, so a load balancer sends traffic elsewhere while
//! the database is unreachable or while the process drains before it stops.
//!
//! [`Storage::ping`]: crate::Storage::ping

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::server::Server;

/// How long `/readyz` waits for the storage's ping before answering 503.
pub const READINESS_TIMEOUT: Duration = Duration::from_secs(2);

/// `GET /readyz`: 200 `{"status":"ready"}`; 503 `{"status":"draining"}` once shutdown has begun;
/// 503 `{"status":"storage_unavailable","error":...}` when the storage does not answer within
/// [`READINESS_TIMEOUT`].
pub(crate) async fn readyz(State(server): State<Server>) -> Response {
    if server.is_draining() {
        return unavailable(serde_json::json!({ "status": "draining" }));
    }
    let error = match tokio::time::timeout(READINESS_TIMEOUT, server.storage().ping()).await {
        Ok(Ok(())) => {
            return (
                StatusCode::OK,
                Json(serde_json::json!({ "status": "ready" })),
            )
                .into_response();
        }
        Ok(Err(error)) => {
            server.metrics().storage_failed("ping", &error);
            error.to_string()
        }
        Err(_) => {
            server.metrics().record_storage_error("ping");
            format!(
                "the storage did not answer a ping within {} ms",
                READINESS_TIMEOUT.as_millis()
            )
        }
    };
    tracing::warn!(%error, "not ready: the storage does not answer");
    unavailable(serde_json::json!({ "status": "storage_unavailable", "error": error }))
}

fn unavailable(body: serde_json::Value) -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}
