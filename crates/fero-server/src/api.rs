//! The HTTP surface: routes, handlers, authentication and the layers around them.

use fero_protocol::COLLECTION_HEADER;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Query, Request, State};
use axum::http::header::{self, HeaderName};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use fero::{SyncCheckpoint, SyncId};
use fero_protocol::{
    Change, ChangeNotice, ChangeOutcome, ChangeResult, ContentDigestResponse, DigestResponse,
    DigestVersion, ErrorCode, MAX_PAGE_SIZE, PROTOCOL_HEADER, PROTOCOL_VERSION, PullRequest,
    PushResponse, Subscription, validate_collection_name,
};
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tower_http::compression::CompressionLayer;
use tower_http::trace::{DefaultMakeSpan, DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::api_error::{ApiError, JsonBody};
use crate::api_shared;
use crate::cursor;
use crate::server::Server;
use crate::shared::Subscribed;
use crate::storage::{FeedPosition, StoredDocument};
use crate::user::Principal;
use crate::validate::{PushBody, reject_reason};

/// How often an idle change stream sends a keep-alive comment by default: often enough that
/// proxies with a 30 to 60 second idle timeout keep the connection open.
pub(crate) const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(15);

#[derive(Clone, Debug)]
struct AppState {
    server: Server,
    /// Cancelled when graceful shutdown begins: open change streams end, so that shutdown only
    /// waits for real requests.
    streams_stop: CancellationToken,
}

/// The full router: `/v1` endpoints behind bearer authentication, `/healthz`, and the layers
/// (trace, compression, JSON errors and protocol header, body limit).
pub(crate) fn router(server: Server, streams_stop: CancellationToken) -> Router {
    let body_limit = server.body_limit();
    // Operations endpoints (crate::readiness, crate::metrics) take the server as their state.
    let operations = Router::new()
        .route("/readyz", get(crate::readiness::readyz))
        .route("/metrics", get(crate::metrics::metrics_endpoint))
        .with_state(server.clone());
    let recorded = server.clone();
    let cors = server.cors_origins().layer();
    let state = AppState {
        server,
        streams_stop,
    };
    let collections = Router::new()
        .route("/collections/{name}/pull", get(pull_get).post(pull_post))
        .route("/collections/{name}/push", post(push))
        .route("/collections/{name}/digest", get(digest))
        .route_layer(middleware::from_fn(name_the_collection));
    let v1 = Router::new()
        .merge(collections)
        .route("/changes", get(changes))
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    Router::new()
        .nest("/v1", v1)
        .route("/healthz", get(healthz))
        .merge(operations)
        .fallback(not_found)
        .with_state(state)
        .layer(middleware::from_fn_with_state(
            recorded,
            crate::metrics::record_request,
        ))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::map_response(finish_response))
        .layer(CompressionLayer::new())
        // Outside the routes and their authentication: a browser's preflight (no token) is
        // answered here, and every answer, errors included, carries the CORS headers.
        .layer(tower::util::option_layer(cors))
        .layer(
            // One span and one "finished processing request" line per request at INFO, so the
            // binary's default log level shows the traffic.
            TraceLayer::new_for_http()
                .make_span_with(DefaultMakeSpan::new().level(Level::INFO))
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
}

/// Checks the protocol version header (when sent) and the bearer token, and hands the handler
/// the token's user. Runs before any body is read.
async fn authenticate(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if let Some(version) = request.headers().get(PROTOCOL_HEADER) {
        let spoken = PROTOCOL_VERSION.to_string();
        if version.to_str().ok().map(str::trim) != Some(spoken.as_str()) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::UnsupportedVersion,
                format!(
                    "this server speaks protocol version {PROTOCOL_VERSION} (header \
                     `{PROTOCOL_HEADER}: {PROTOCOL_VERSION}`), the request asked for {version:?}"
                ),
            ));
        }
    }
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            let (scheme, token) = value.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .ok_or_else(|| {
            ApiError::unauthorized("send `Authorization: Bearer <token>` with a configured token")
        })?;
    let principal = identify(&state.server, token)?;
    request.extensions_mut().insert(Caller(principal));
    Ok(next.run(request).await)
}

/// Who a bearer token stands for. A token with the shape of a JWT is verified when the server
/// has a [`JwtVerifier`](crate::JwtVerifier); any other token, or a JWT-shaped one that is
/// listed verbatim as a static token, is looked up in the static [`Tokens`](crate::Tokens).
fn identify(server: &Server, token: &str) -> Result<Principal, ApiError> {
    let jwt = match server.jwt() {
        Some(verifier) if crate::jwt::looks_like_jwt(token) => verifier.verify(token),
        _ => {
            return server
                .tokens()
                .user_for(token)
                .map(|user| Principal::new(user.clone()))
                .ok_or_else(|| {
                    ApiError::unauthorized("the bearer token is not one this server knows")
                });
        }
    };
    // A static token that happens to have a JWT's shape keeps working beside JWTs.
    jwt.or_else(|rejection| match server.tokens().user_for(token) {
        Some(user) => Ok(Principal::new(user.clone())),
        None => Err(ApiError::from(rejection)),
    })
}

/// The authenticated caller of a request: its [`Principal`] (user and token claims). A handler
/// takes `Caller(principal): Caller` and reads `principal.user` (or `principal.claims`), or
/// passes `&principal` where a `&UserId` is expected.
#[derive(Clone, Debug)]
pub(crate) struct Caller(pub(crate) Principal);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| ApiError::unauthorized("the request was not authenticated"))
    }
}

/// A validated collection name from the path.
#[derive(Debug)]
struct Collection(String);

impl<S: Send + Sync> FromRequestParts<S> for Collection {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(name) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| ApiError::invalid_collection(rejection.body_text()))?;
        validate_collection_name(&name).map_err(ApiError::invalid_collection)?;
        Ok(Collection(name))
    }
}

/// The query of `GET /v1/collections/{name}/pull`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PullQuery {
    after: Option<u64>,
    cursor: Option<String>,
    limit: u32,
}

async fn pull_get(
    State(state): State<AppState>,
    Caller(user): Caller,
    Collection(collection): Collection,
    query: Result<Query<PullQuery>, QueryRejection>,
) -> Result<Json<PullAnswer>, ApiError> {
    let Query(query) = query.map_err(|rejection| {
        ApiError::invalid_request(format!(
            "bad pull query (expected `limit`, optional `after` and `cursor`): {}",
            rejection.body_text()
        ))
    })?;
    let checkpoint = SyncCheckpoint {
        last_sync_id: SyncId(query.after.unwrap_or(0)),
        updated_at: None,
        cursor: query.cursor,
    };
    pull(&state, &user, &collection, checkpoint, query.limit, None).await
}

async fn pull_post(
    State(state): State<AppState>,
    Caller(user): Caller,
    Collection(collection): Collection,
    JsonBody(request): JsonBody<PullRequest>,
) -> Result<Json<PullAnswer>, ApiError> {
    let checkpoint = request.checkpoint.unwrap_or_default();
    pull(
        &state,
        &user,
        &collection,
        checkpoint,
        request.limit,
        request.subscription,
    )
    .await
}

/// Names the collection of the path on the answer ([`COLLECTION_HEADER`]), so a client can refuse an
/// answer meant for another collection.
async fn name_the_collection(
    Path(params): Path<std::collections::HashMap<String, String>>,
    request: axum::extract::Request,
    next: middleware::Next,
) -> axum::response::Response {
    let mut response = next.run(request).await;
    if let Some(value) = params
        .get("name")
        .and_then(|name| axum::http::HeaderValue::from_str(name).ok())
    {
        response.headers_mut().insert(COLLECTION_HEADER, value);
    }
    response
}

/// The answer to a pull as it is sent: [`PullResponse`](fero_protocol::PullResponse)'s fields in
/// its order, with the rows' content copied from storage as text (see [`StoredDocument`]) rather
/// than parsed and written out again. A client reads it as a `PullResponse`.
#[derive(Debug, Serialize)]
struct PullAnswer {
    items: Vec<StoredDocument>,
    checkpoint: SyncCheckpoint,
    has_more: bool,
}

/// One page after `from`: the cursor, when present, is the position; otherwise `last_sync_id`.
async fn pull(
    state: &AppState,
    user: &Principal,
    collection: &str,
    from: SyncCheckpoint,
    limit: u32,
    subscription: Option<Subscription>,
) -> Result<Json<PullAnswer>, ApiError> {
    if limit == 0 || limit > MAX_PAGE_SIZE {
        return Err(ApiError::page_too_large(format!(
            "limit must be between 1 and {MAX_PAGE_SIZE}, got {limit}"
        )));
    }
    let sharing = state.server.sharing_of(collection);
    if let (None, Some(subscription)) = (&sharing, &subscription) {
        return Err(ApiError::invalid_request(format!(
            "collection {collection:?} is not shared by the server's sync rules, so it has no \
             subscription {:?}; pull it without one",
            subscription.name
        )));
    }
    if let Some(sharing) = sharing {
        let mut access = sharing.access(&user.user, &user.claims);
        if let Some(subscription) = subscription {
            let buckets = sharing
                .subscription_buckets(collection, &user.user, &user.claims, &subscription)
                .map_err(ApiError::invalid_request)?;
            access = Arc::new(Subscribed::new(access, buckets, subscription.key()));
        }
        let (items, checkpoint, has_more) =
            api_shared::pull(&state.server, access, collection, &from, limit).await?;
        return Ok(Json(PullAnswer {
            items,
            checkpoint,
            has_more,
        }));
    }
    let position = match &from.cursor {
        Some(text) => cursor::decode(text).map_err(ApiError::invalid_cursor)?,
        None => FeedPosition::from(from.last_sync_id),
    };
    let after = position.after;
    let page = state
        .server
        .storage()
        .pull_from(user, collection, position, limit)
        .await
        .inspect_err(|error| state.server.metrics().storage_failed("pull", error))?;
    state
        .server
        .metrics()
        .record_pulled_rows(page.items.len() as u64);
    // The checkpoint comes from the rows of the page, which came from one read transaction.
    let checkpoint = match page.items.last() {
        Some(last) => SyncCheckpoint::at(last.sync_id).with_updated_at(last.updated_at),
        None => SyncCheckpoint {
            last_sync_id: after,
            updated_at: from.updated_at,
            cursor: None,
        },
    };
    // The horizon recorded by the request's cursor is carried on while the scan stays below it
    // (the page was served because the client accounts for it).
    let horizon = page.horizon.max(position.horizon.unwrap_or_default());
    let cursor = cursor::encode(checkpoint.last_sync_id, horizon, page.epoch);
    Ok(Json(PullAnswer {
        items: page.items,
        checkpoint: checkpoint.with_cursor(cursor),
        has_more: page.has_more,
    }))
}

async fn push(
    State(state): State<AppState>,
    Caller(user): Caller,
    Collection(collection): Collection,
    JsonBody(request): JsonBody<PushBody>,
) -> Result<Json<PushResponse>, ApiError> {
    let max = usize::try_from(MAX_PAGE_SIZE).unwrap_or(usize::MAX);
    if request.changes.len() > max {
        return Err(ApiError::page_too_large(format!(
            "a push carries at most {MAX_PAGE_SIZE} changes, got {}; push in pages",
            request.changes.len()
        )));
    }
    // Rejected changes are answered here; the rest go to storage in one transaction, and the
    // answers are put back in request order.
    let mut answers: Vec<Option<ChangeResult>> = Vec::with_capacity(request.changes.len());
    let mut valid = Vec::with_capacity(request.changes.len());
    for change in request.changes.into_iter().map(Change::from) {
        match reject_reason(&change) {
            Some((code, message)) => answers.push(Some(ChangeResult {
                id: change.id,
                mutation_id: change.mutation_id,
                outcome: ChangeOutcome::Rejected {
                    code: code.to_owned(),
                    message,
                },
            })),
            None => {
                answers.push(None);
                valid.push(change);
            }
        }
    }
    let expected = valid.len();
    let mut stored = Vec::new();
    if expected > 0 {
        let outcome = match state.server.sharing_of(&collection) {
            Some(sharing) => {
                let access = sharing.access(&user.user, &user.claims);
                api_shared::push(&state.server, access, &collection, valid).await?
            }
            None => state
                .server
                .storage()
                .push(&user, &collection, valid)
                .await
                .inspect_err(|error| state.server.metrics().storage_failed("push", error))?,
        };
        if outcome.results.len() != expected {
            tracing::error!(
                collection,
                expected,
                got = outcome.results.len(),
                "storage answered a push with the wrong number of results"
            );
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::Internal,
                "the server's storage answered the push incompletely; retry the push",
            ));
        }
        let private = state.server.sharing_of(&collection).is_none();
        if let Some(sync_id) = outcome.last_written.filter(|_| private) {
            state.server.notifier().publish(
                &user,
                ChangeNotice {
                    collection: collection.clone(),
                    sync_id,
                },
            );
        }
        stored = outcome.results;
    }
    let mut stored = stored.into_iter();
    let results: Vec<ChangeResult> = answers
        .into_iter()
        .filter_map(|answer| answer.or_else(|| stored.next()))
        .collect();
    record_push_outcomes(&state.server, &results);
    Ok(Json(PushResponse { results }))
}

#[derive(Deserialize)]
struct DigestQuery {
    /// Kept as text so that any unknown or malformed value gets the same 422 and message.
    version: Option<String>,
    /// A JSON array of subscriptions: the digest of the rows they select together.
    subscriptions: Option<String>,
}

/// `GET …/digest[?version=N]`: version 1 (ids and versions) without `version`, so that clients
/// older than version 2 keep their answer; version 2 (content) when asked for.
async fn digest(
    State(state): State<AppState>,
    Caller(user): Caller,
    Collection(collection): Collection,
    query: Result<Query<DigestQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|rejection| {
        ApiError::invalid_request(format!(
            "bad digest query (expected an optional `version` and `subscriptions`): {}",
            rejection.body_text()
        ))
    })?;
    let version = match query.version.as_deref() {
        None => DigestVersion::V1,
        Some(text) => text
            .trim()
            .parse::<u32>()
            .ok()
            .and_then(DigestVersion::from_number)
            .ok_or_else(|| {
                ApiError::invalid_request(format!(
                    "unknown digest version {text:?}: this server computes versions 1 (ids and \
                     versions, the default) and 2 (ids, versions and content)"
                ))
            })?,
    };
    let sharing = state.server.sharing_of(&collection);
    if let (None, Some(_)) = (&sharing, &query.subscriptions) {
        return Err(ApiError::invalid_request(format!(
            "collection {collection:?} is not shared by the server's sync rules, so it has no \
             subscriptions; ask for its digest without `subscriptions`"
        )));
    }
    if let Some(sharing) = sharing {
        let mut access = sharing.access(&user.user, &user.claims);
        if let Some(text) = &query.subscriptions {
            let subscriptions: Vec<Subscription> = serde_json::from_str(text).map_err(|error| {
                ApiError::invalid_request(format!(
                    "`subscriptions` must be a JSON array of {{\"name\", \"params\"}} \
                         objects: {error}"
                ))
            })?;
            let mut buckets = std::collections::BTreeSet::new();
            for subscription in &subscriptions {
                buckets.extend(
                    sharing
                        .subscription_buckets(&collection, &user.user, &user.claims, subscription)
                        .map_err(ApiError::invalid_request)?,
                );
            }
            access = Arc::new(Subscribed::new(access, buckets, String::new()));
        }
        return api_shared::digest(&state.server, access, &collection, version).await;
    }
    let storage = state.server.storage();
    Ok(match version {
        DigestVersion::V2 => {
            let digest = storage
                .content_digest(&user, &collection)
                .await
                .inspect_err(|error| state.server.metrics().storage_failed("digest", error))?;
            Json(ContentDigestResponse {
                version: DigestVersion::V2.number(),
                count: digest.count(),
                digest: digest.hex(),
            })
            .into_response()
        }
        _ => {
            let digest = storage
                .digest(&user, &collection)
                .await
                .inspect_err(|error| state.server.metrics().storage_failed("digest", error))?;
            Json(DigestResponse {
                count: digest.count(),
                digest: digest.hex(),
            })
            .into_response()
        }
    })
}

async fn changes(
    State(state): State<AppState>,
    Caller(user): Caller,
) -> Sse<impl Stream<Item = Result<Event, axum::Error>>> {
    // Counted open until the stream is dropped (client gone or shutdown).
    let open = state.server.metrics().change_stream_opened();
    // Subscribed before the response head is sent: a client that has the head will get a notice
    // for every later commit.
    let notices: futures::stream::BoxStream<'static, ChangeNotice> = match state.server.sharing() {
        Some(sharing) => api_shared::notices(
            state.server.clone(),
            std::sync::Arc::clone(sharing),
            user.user.clone(),
            (*user.claims).clone(),
        )
        .await
        .boxed(),
        None => futures::stream::unfold(
            state.server.notifier().subscribe(&user),
            |mut subscription| async move {
                let notice = subscription.next().await?;
                Some((notice, subscription))
            },
        )
        .boxed(),
    };
    // The closure owns the gauge's guard, so the stream is counted open exactly as long as it
    // lives.
    let notices = notices.map(move |notice| {
        let _counted = &open;
        notice
    });
    let events = notices
        .map(|notice| Event::default().event("change").json_data(notice))
        .take_until(state.streams_stop.clone().cancelled_owned());
    Sse::new(events).keep_alive(
        KeepAlive::new()
            .interval(state.server.keep_alive())
            .text("keep-alive"),
    )
}

/// Counts a push's answers by outcome for `/metrics`.
fn record_push_outcomes(server: &Server, results: &[ChangeResult]) {
    let (mut accepted, mut conflict, mut rejected) = (0, 0, 0);
    for result in results {
        match result.outcome {
            ChangeOutcome::Accepted { .. } => accepted += 1,
            ChangeOutcome::Conflict { .. } => conflict += 1,
            ChangeOutcome::Rejected { .. } => rejected += 1,
        }
    }
    server.metrics().record_push(accepted, conflict, rejected);
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn not_found() -> ApiError {
    ApiError::for_status(StatusCode::NOT_FOUND)
}

/// Adds the protocol header to every response and turns any error response that is not already
/// the protocol's JSON error body (axum's 404, 405, a failed extractor) into one.
async fn finish_response(response: Response) -> Response {
    let (mut parts, body) = response.into_parts();
    parts.headers.insert(
        HeaderName::from_static(PROTOCOL_HEADER),
        HeaderValue::from(PROTOCOL_VERSION),
    );
    let failed = parts.status.is_client_error() || parts.status.is_server_error();
    let is_json = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    if !failed || is_json {
        return Response::from_parts(parts, body);
    }
    let mut fixed = ApiError::for_status(parts.status).into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            fixed.headers_mut().insert(name.clone(), value.clone());
        }
    }
    fixed
}
