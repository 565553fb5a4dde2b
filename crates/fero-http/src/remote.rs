//! [`HttpRemote`]: the [`Remote`] trait over HTTP, and its builder.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use fero::{BackoffStrategy, ExponentialBackoff, PageGate, RandomSource, SeededRandom};
use fero_protocol::{
    COLLECTION_HEADER, ContentDigestResponse, DigestResponse, ErrorBody, ErrorCode,
    PROTOCOL_HEADER, PROTOCOL_VERSION, PullRequest, PullResponse, PushRequest, PushResponse,
    Remote, RemoteError, RemoteErrorKind, Subscription, validate_collection_name,
};
use reqwest::header::{
    ACCEPT, ACCEPT_ENCODING, AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, HeaderMap, HeaderName,
    HeaderValue, RETRY_AFTER,
};
use reqwest::{Method, Response, StatusCode, Url};
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::error::{
    BuildError, Call, from_status, from_transport, parse_retry_after, protocol, timed_out,
};
use crate::stats::{Counters, TransportStats};
use crate::token::{StaticToken, TokenError, TokenProvider};
use crate::validate::{DigestAnswer, check_content_digest, check_digest, check_pull, check_push};

/// The header carrying the optional device id ([`HttpRemoteBuilder::device_id`]).
pub const DEVICE_HEADER: &str = "fero-device";

/// Default time to establish a TCP (and TLS) connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Default time for a whole pull, push or digest, body included.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Default limit of one answer's body, compressed and decoded: a few pages of
/// [`MAX_PAGE_SIZE`](fero_protocol::MAX_PAGE_SIZE) items of several kilobytes each. It bounds
/// the memory a misbehaving server can make the client allocate.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// Default time the change stream may stay silent (no notice and no keep-alive comment) before
/// the connection is taken for dead and replaced. Servers send a keep-alive every 15 s or so.
pub const DEFAULT_STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(45);

/// Error bodies are read up to this size only: the status decides, the body explains.
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;

/// The base of the default reconnect backoff of the change stream.
const RECONNECT_BASE: Duration = Duration::from_millis(250);
/// The cap of the default reconnect backoff: a device reconnects at least this often while the
/// server is down, and so sees its return within this delay.
const RECONNECT_CAP: Duration = Duration::from_secs(10);

/// What an answer's body is encoded with.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Encoding {
    Identity,
    Gzip,
    Zstd,
}

impl Encoding {
    fn of(headers: &HeaderMap) -> Result<Encoding, String> {
        let Some(value) = headers.get(CONTENT_ENCODING) else {
            return Ok(Encoding::Identity);
        };
        let text = value
            .to_str()
            .unwrap_or("(not ASCII)")
            .trim()
            .to_ascii_lowercase();
        match text.as_str() {
            "" | "identity" => Ok(Encoding::Identity),
            "gzip" | "x-gzip" => Ok(Encoding::Gzip),
            "zstd" => Ok(Encoding::Zstd),
            _ => Err(format!(
                "the answer is encoded with {value:?}, which was not asked for (the client \
                 accepts zstd and gzip): nothing of it was used; check for a proxy that \
                 re-encodes answers"
            )),
        }
    }
}

/// Configures an [`HttpRemote`]; made by [`HttpRemote::builder`].
///
/// # Examples
/// ```
/// use std::time::Duration;
/// let remote = fero_http::HttpRemote::builder("http://127.0.0.1:7700", "secret-token")
///     .connect_timeout(Duration::from_secs(3))
///     .request_timeout(Duration::from_secs(20))
///     .user_agent("notes-app/2.1")
///     .device_id("phone-7f3a")
///     .build()?;
/// assert_eq!(remote.base_url().as_str(), "http://127.0.0.1:7700/");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct HttpRemoteBuilder {
    base_url: String,
    token: TokenSource,
    connect_timeout: Duration,
    request_timeout: Duration,
    user_agent: String,
    device_id: Option<String>,
    max_response_bytes: usize,
    stream_idle_timeout: Duration,
    reconnect_backoff: Option<Arc<dyn BackoffStrategy>>,
    seed: Option<u64>,
    compression: bool,
}

/// Where the builder's bearer token comes from.
enum TokenSource {
    /// One token for the remote's life, checked by `build`.
    Static(String),
    /// A provider asked before each request.
    Provider(Arc<dyn TokenProvider>),
}

impl fmt::Debug for HttpRemoteBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The token is a secret: never in logs.
        f.debug_struct("HttpRemoteBuilder")
            .field("base_url", &self.base_url)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("user_agent", &self.user_agent)
            .field("device_id", &self.device_id)
            .field("max_response_bytes", &self.max_response_bytes)
            .field("stream_idle_timeout", &self.stream_idle_timeout)
            .field("reconnect_backoff", &self.reconnect_backoff)
            .field("seed", &self.seed)
            .field("compression", &self.compression)
            .finish_non_exhaustive()
    }
}

impl HttpRemoteBuilder {
    /// Time to establish a connection (default [`DEFAULT_CONNECT_TIMEOUT`]).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Time for a whole pull, push or digest, reading the answer included (default
    /// [`DEFAULT_REQUEST_TIMEOUT`]). A timeout is a transient error: the engine retries it.
    /// The change stream is long-lived and uses it only to wait for the server's first answer.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// The `User-Agent` header (default `fero-http/<version>`).
    pub fn user_agent(mut self, user_agent: impl Into<String>) -> Self {
        self.user_agent = user_agent.into();
        self
    }

    /// A stable id of this device, sent in the [`DEVICE_HEADER`] header of every request so
    /// server logs can tell devices apart. Optional; pushes carry their device in each change's
    /// mutation id regardless.
    pub fn device_id(mut self, device_id: impl Into<String>) -> Self {
        self.device_id = Some(device_id.into());
        self
    }

    /// The largest answer body accepted, compressed or decoded (default
    /// [`DEFAULT_MAX_RESPONSE_BYTES`]). A larger one is a protocol error: lower the feature's
    /// batch size or raise this limit.
    pub fn max_response_bytes(mut self, bytes: usize) -> Self {
        self.max_response_bytes = bytes;
        self
    }

    /// How long the change stream may stay silent before it reconnects (default
    /// [`DEFAULT_STREAM_IDLE_TIMEOUT`]). Keep it above the server's keep-alive interval.
    pub fn stream_idle_timeout(mut self, timeout: Duration) -> Self {
        self.stream_idle_timeout = timeout;
        self
    }

    /// The delays between change stream reconnects. The default doubles from 250 ms to a cap of
    /// 10 s, with full jitter, and never gives up; a backoff that gives up (returns `None`) ends
    /// the stream with the last error.
    pub fn reconnect_backoff(mut self, backoff: impl BackoffStrategy) -> Self {
        self.reconnect_backoff = Some(Arc::new(backoff));
        self
    }

    /// Whether to ask for compressed answers (zstd or gzip; on by default). Over a slow or
    /// metered network compression saves most of the bytes; on loopback or a fast LAN it only
    /// costs CPU on both ends, so turn it off there.
    pub fn compression(mut self, on: bool) -> Self {
        self.compression = on;
        self
    }

    /// Seeds the jitter of reconnect delays, so a test replays exactly. Without a seed each
    /// remote draws one from the process's entropy, so devices do not reconnect in lockstep.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Validates the configuration and creates the HTTP client.
    ///
    /// # Errors
    /// [`BuildError::InvalidBaseUrl`] for a URL that does not parse, is not `http`/`https`, or
    /// has a query or fragment; [`BuildError::InvalidToken`] and
    /// [`BuildError::InvalidHeader`] for values that cannot be sent in a header (a
    /// [`TokenProvider`]'s tokens are checked when it gives them, and one that cannot be sent
    /// fails its request as `Unauthorized`);
    /// [`BuildError::ZeroSetting`] for a zero timeout or limit; [`BuildError::Client`] when the
    /// client cannot be created.
    pub fn build(self) -> Result<HttpRemote, BuildError> {
        let base = parse_base_url(&self.base_url)?;
        for (setting, zero) in [
            ("connect timeout", self.connect_timeout.is_zero()),
            ("request timeout", self.request_timeout.is_zero()),
            ("stream idle timeout", self.stream_idle_timeout.is_zero()),
            ("max response bytes", self.max_response_bytes == 0),
        ] {
            if zero {
                return Err(BuildError::ZeroSetting { setting });
            }
        }

        let tokens: Arc<dyn TokenProvider> = match self.token {
            TokenSource::Static(token) => {
                bearer(&token).ok_or(BuildError::InvalidToken)?;
                Arc::new(StaticToken::new(token))
            }
            TokenSource::Provider(provider) => provider,
        };
        // The Authorization header is set per request, from the token provider.
        let mut headers = HeaderMap::new();
        headers.insert(
            HeaderName::from_static(PROTOCOL_HEADER),
            HeaderValue::from(PROTOCOL_VERSION),
        );
        if let Some(device) = &self.device_id {
            let value = HeaderValue::from_str(device).map_err(|_| BuildError::InvalidHeader {
                header: "device id",
                value: device.clone(),
            })?;
            headers.insert(HeaderName::from_static(DEVICE_HEADER), value);
        }
        let user_agent =
            HeaderValue::from_str(&self.user_agent).map_err(|_| BuildError::InvalidHeader {
                header: "user agent",
                value: self.user_agent.clone(),
            })?;

        // Automatic decompression is off: the remote decodes answers itself so that it can
        // count their compressed size on the wire (TransportStats) and bound both sizes.
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .user_agent(user_agent)
            .connect_timeout(self.connect_timeout)
            .no_gzip()
            .no_zstd()
            .build()
            .map_err(|source| BuildError::Client { source })?;

        let reconnect_backoff = match self.reconnect_backoff {
            Some(backoff) => backoff,
            None => Arc::new(
                ExponentialBackoff::new(RECONNECT_BASE, 2.0, RECONNECT_CAP, u32::MAX)
                    .expect("the constant reconnect backoff has a factor >= 1 and cap >= base"),
            ),
        };
        let seed = self
            .seed
            .unwrap_or_else(|| SeededRandom::from_entropy().next_u64());

        Ok(HttpRemote {
            inner: Arc::new(Inner {
                client,
                base,
                tokens,
                request_timeout: self.request_timeout,
                accept_encoding: if self.compression {
                    "zstd, gzip"
                } else {
                    "identity"
                },
                max_response_bytes: self.max_response_bytes,
                stream_idle_timeout: self.stream_idle_timeout,
                reconnect_backoff,
                seed,
                streams_opened: AtomicU64::new(0),
                counters: Counters::default(),
            }),
        })
    }
}

fn parse_base_url(text: &str) -> Result<Url, BuildError> {
    let invalid = |reason: &str| BuildError::InvalidBaseUrl {
        url: text.to_owned(),
        reason: reason.to_owned(),
    };
    let url = Url::parse(text).map_err(|error| invalid(&error.to_string()))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(invalid(&format!(
            "the scheme {:?} is not http or https",
            url.scheme()
        )));
    }
    if url.cannot_be_a_base() || url.host().is_none() {
        return Err(invalid("it has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid(
            "it has a query or fragment, which requests would drop",
        ));
    }
    Ok(url)
}

pub(crate) struct Inner {
    pub(crate) client: reqwest::Client,
    pub(crate) base: Url,
    /// Gives the bearer token of each request.
    pub(crate) tokens: Arc<dyn TokenProvider>,
    pub(crate) request_timeout: Duration,
    /// `zstd, gzip`, or `identity` with compression off.
    pub(crate) accept_encoding: &'static str,
    pub(crate) max_response_bytes: usize,
    pub(crate) stream_idle_timeout: Duration,
    pub(crate) reconnect_backoff: Arc<dyn BackoffStrategy>,
    pub(crate) seed: u64,
    /// Change streams opened so far; each one's jitter is seeded with `seed` plus this count.
    pub(crate) streams_opened: AtomicU64,
    pub(crate) counters: Counters,
}

/// A sync server over HTTP: fero's [`Remote`] speaking protocol version
/// [`PROTOCOL_VERSION`] to a `fero-server` (or any server of the protocol).
///
/// Every request carries `Authorization: Bearer <token>` and the `fero-protocol: 1` header, and
/// accepts zstd or gzip answers. The token comes from a [`TokenProvider`]: a fixed one with
/// [`new`](Self::new) and [`builder`](Self::builder), a renewable one with
/// [`builder_with_token_provider`](Self::builder_with_token_provider). On a 401
/// `token_expired` answer the remote asks the provider for a fresh token once and sends the
/// request again (see [`token`](crate::token)). Failures map onto [`RemoteError`] kinds as the
/// [`error`](crate::error) module documents, and answers that break the protocol (unparsable,
/// a checkpoint going backwards, push results not matching the changes) are refused with a
/// [`Protocol`](RemoteErrorKind::Protocol) error before anything of them is used.
///
/// Cloning is cheap and shares the connection pool and the [`stats`](HttpRemote::stats).
///
/// # Examples
/// ```no_run
/// use fero_protocol::{PullRequest, Remote};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let remote = fero_http::HttpRemote::new("http://127.0.0.1:7700", "secret-token")?;
/// let page = remote.pull("contacts", &PullRequest { checkpoint: None, limit: 500, subscription: None }).await?;
/// println!("{} items, more: {}", page.items.len(), page.has_more);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct HttpRemote {
    pub(crate) inner: Arc<Inner>,
}

impl fmt::Debug for HttpRemote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The token is a secret: never in logs.
        f.debug_struct("HttpRemote")
            .field("base_url", &self.inner.base.as_str())
            .field("request_timeout", &self.inner.request_timeout)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl HttpRemote {
    /// A remote at `base_url` (such as `http://127.0.0.1:7700`, or one with a path prefix such
    /// as `https://example.com/sync/`) with the default settings.
    ///
    /// # Errors
    /// As [`HttpRemoteBuilder::build`].
    pub fn new(base_url: impl Into<String>, token: impl Into<String>) -> Result<Self, BuildError> {
        Self::builder(base_url, token).build()
    }

    /// A builder for a remote at `base_url` authenticating with the bearer `token`, the same for
    /// the remote's life.
    pub fn builder(base_url: impl Into<String>, token: impl Into<String>) -> HttpRemoteBuilder {
        Self::builder_from(base_url.into(), TokenSource::Static(token.into()))
    }

    /// A builder for a remote at `base_url` whose bearer tokens come from `provider`, asked
    /// before every request and told to refresh when the server answers 401 `token_expired`
    /// (see [`token`](crate::token)). Use it for short-lived JWTs.
    pub fn builder_with_token_provider(
        base_url: impl Into<String>,
        provider: impl TokenProvider,
    ) -> HttpRemoteBuilder {
        Self::builder_from(base_url.into(), TokenSource::Provider(Arc::new(provider)))
    }

    fn builder_from(base_url: String, token: TokenSource) -> HttpRemoteBuilder {
        HttpRemoteBuilder {
            base_url,
            token,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            user_agent: concat!("fero-http/", env!("CARGO_PKG_VERSION")).to_owned(),
            device_id: None,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            stream_idle_timeout: DEFAULT_STREAM_IDLE_TIMEOUT,
            reconnect_backoff: None,
            seed: None,
            compression: true,
        }
    }

    /// The server's base URL.
    pub fn base_url(&self) -> &Url {
        &self.inner.base
    }

    /// What this remote and its clones have done so far.
    pub fn stats(&self) -> TransportStats {
        self.inner.counters.snapshot()
    }

    /// The base URL with `segments` appended as path segments (each one percent-encoded).
    pub(crate) fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.inner.base.clone();
        // `build` refused cannot-be-a-base URLs, the only ones without path segments.
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    fn collection_url(
        &self,
        collection: &str,
        call: Call,
        endpoint: &str,
    ) -> Result<Url, RemoteError> {
        validate_collection_name(collection).map_err(|reason| {
            RemoteError::new(
                RemoteErrorKind::Permanent,
                collection,
                format!("{call} not sent: {reason}"),
            )
        })?;
        Ok(self.url(&["v1", "collections", collection, endpoint]))
    }

    /// Sends one request and parses its JSON answer, counting it in the stats.
    async fn exchange<T: DeserializeOwned>(
        &self,
        collection: &str,
        call: Call,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
    ) -> Result<T, RemoteError> {
        self.exchange_gated(collection, call, method, url, body, None)
            .await
    }

    /// One request. With a gate, the answer's body is read only once the gate opens, and the
    /// request timeout applies to sending and to reading, not to the wait in between.
    async fn exchange_gated<T: DeserializeOwned>(
        &self,
        collection: &str,
        call: Call,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
        gate: Option<&PageGate>,
    ) -> Result<T, RemoteError> {
        let result = self
            .exchange_once(collection, call, method, url, body, gate)
            .await;
        if let Err(error) = &result {
            self.inner.counters.failure(error.is_transient());
            tracing::debug!(collection, %call, kind = ?error.kind, %error, "request failed");
        }
        result
    }

    async fn exchange_once<T: DeserializeOwned>(
        &self,
        collection: &str,
        call: Call,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
        gate: Option<&PageGate>,
    ) -> Result<T, RemoteError> {
        let timeout = self.inner.request_timeout;
        // Kept for one resend after a token refresh; cloning `Bytes` shares the buffer.
        let body = body.map(Bytes::from);
        let body_len = body.as_ref().map_or(0, Bytes::len);
        let mut token = self.authorization(collection, call).await?;
        let mut refreshed = false;
        let response = loop {
            let mut request = self
                .inner
                .client
                .request(method.clone(), url.clone())
                .header(AUTHORIZATION, token.clone())
                .header(ACCEPT, "application/json")
                .header(ACCEPT_ENCODING, self.inner.accept_encoding);
            if gate.is_none() {
                request = request.timeout(timeout);
            }
            if let Some(body) = &body {
                request = request
                    .header(CONTENT_TYPE, "application/json")
                    .body(body.clone());
            }
            self.inner.counters.request(body_len);
            let response = within(gate, timeout, request.send())
                .await
                .ok_or_else(|| timed_out(collection, call, Some(timeout)))?
                .map_err(|error| from_transport(collection, call, Some(timeout), &error))?;

            let status = response.status();
            if status.is_success() {
                break response;
            }
            let retry_after = response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|value| value.to_str().ok())
                .and_then(parse_retry_after);
            // The status decides the error; a body that cannot be read only loses the details.
            let error_body = within(
                gate,
                timeout,
                self.read_body(collection, call, response, MAX_ERROR_BODY_BYTES),
            )
            .await
            .and_then(Result::ok)
            .unwrap_or_default();
            if !refreshed && is_token_expired(status, &error_body) {
                refreshed = true;
                if let Some(fresh) = self
                    .refreshed_authorization(collection, call, &token)
                    .await?
                {
                    token = fresh;
                    continue;
                }
            }
            return Err(from_status(
                collection,
                call,
                status,
                retry_after,
                &error_body,
            ));
        };
        check_version(collection, call, response.headers())?;
        check_collection(collection, call, response.headers())?;
        if let Some(gate) = gate {
            // The server has answered; its page waits in the socket until the apply before it
            // has ended, so a crash during that apply has read nothing of this page.
            gate.ready().await;
        }
        let body = within(
            gate,
            timeout,
            self.read_body(collection, call, response, self.inner.max_response_bytes),
        )
        .await
        .ok_or_else(|| timed_out(collection, call, Some(timeout)))??;
        serde_json::from_slice(&body).map_err(|error| {
            protocol(
                collection,
                call,
                format!(
                    "the answer is not valid protocol JSON ({error}): nothing of it was used; \
                     check that the base URL points at a fero protocol {PROTOCOL_VERSION} server"
                ),
            )
        })
    }

    /// Reads an answer's body, counting its wire size, and decodes it.
    async fn read_body(
        &self,
        collection: &str,
        call: Call,
        mut response: Response,
        limit: usize,
    ) -> Result<Vec<u8>, RemoteError> {
        let encoding = Encoding::of(response.headers())
            .map_err(|message| protocol(collection, call, message))?;
        let too_large = || {
            protocol(
                collection,
                call,
                format!(
                    "the answer is larger than {limit} bytes: nothing of it was used; lower the \
                     feature's batch size or raise the remote's max_response_bytes"
                ),
            )
        };
        let expected = response.content_length().unwrap_or(0);
        let mut raw = Vec::with_capacity(usize::try_from(expected).unwrap_or(limit).min(limit));
        while let Some(chunk) = response.chunk().await.map_err(|error| {
            from_transport(collection, call, Some(self.inner.request_timeout), &error)
        })? {
            self.inner.counters.received(chunk.len());
            if raw.len() + chunk.len() > limit {
                return Err(too_large());
            }
            raw.extend_from_slice(&chunk);
        }
        let decoded = match encoding {
            Encoding::Identity => raw,
            Encoding::Gzip => {
                decode(
                    async_compression::tokio::bufread::GzipDecoder::new(&raw[..]),
                    limit,
                )
                .await
            }
            .map_err(|error| corrupt(collection, call, "gzip", &error, limit))?,
            Encoding::Zstd => {
                decode(
                    async_compression::tokio::bufread::ZstdDecoder::new(&raw[..]),
                    limit,
                )
                .await
            }
            .map_err(|error| corrupt(collection, call, "zstd", &error, limit))?,
        };
        self.inner.counters.decoded(decoded.len());
        Ok(decoded)
    }
}

impl HttpRemote {
    /// The `Authorization` value of the next request, from the token provider.
    pub(crate) async fn authorization(
        &self,
        collection: &str,
        call: Call,
    ) -> Result<HeaderValue, RemoteError> {
        let token = self
            .inner
            .tokens
            .token()
            .await
            .map_err(|error| token_failed(collection, call, &error))?;
        bearer(&token).ok_or_else(|| unsendable(collection, call))
    }

    /// After a 401 `token_expired` to `refused`: the provider's fresh token, or `None` when it
    /// gave the refused token again (resending it would only be refused again).
    pub(crate) async fn refreshed_authorization(
        &self,
        collection: &str,
        call: Call,
        refused: &HeaderValue,
    ) -> Result<Option<HeaderValue>, RemoteError> {
        let refused_token = refused
            .to_str()
            .ok()
            .and_then(|value| value.strip_prefix("Bearer "))
            .unwrap_or_default();
        let token = self
            .inner
            .tokens
            .refresh(refused_token)
            .await
            .map_err(|error| token_failed(collection, call, &error))?;
        if token == refused_token {
            return Ok(None);
        }
        tracing::debug!(collection, %call, "the token expired; resending with a refreshed one");
        bearer(&token)
            .map(Some)
            .ok_or_else(|| unsendable(collection, call))
    }
}

/// `Bearer <token>` as a header value marked sensitive (kept out of logs); `None` when the
/// token cannot be sent in a header.
fn bearer(token: &str) -> Option<HeaderValue> {
    let mut value = HeaderValue::from_str(&format!("Bearer {token}")).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// `true` for a 401 whose JSON error body has the code `token_expired`.
pub(crate) fn is_token_expired(status: StatusCode, body: &[u8]) -> bool {
    status == StatusCode::UNAUTHORIZED
        && serde_json::from_slice::<ErrorBody>(body)
            .is_ok_and(|parsed| parsed.error.code == ErrorCode::TokenExpired)
}

fn token_failed(collection: &str, call: Call, error: &TokenError) -> RemoteError {
    let kind = if error.is_transient() {
        RemoteErrorKind::Transient
    } else {
        RemoteErrorKind::Unauthorized
    };
    RemoteError::new(kind, collection, format!("{call} not sent: {error}"))
}

fn unsendable(collection: &str, call: Call) -> RemoteError {
    RemoteError::new(
        RemoteErrorKind::Unauthorized,
        collection,
        format!(
            "{call} not sent: the token provider gave a token that cannot be sent in an \
             Authorization header (control characters or non-ASCII bytes)"
        ),
    )
}

/// Why decoding a compressed body failed.
#[derive(Debug)]
enum DecodeError {
    Io(std::io::Error),
    TooLarge,
}

async fn decode<R: AsyncRead + Unpin>(decoder: R, limit: usize) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::new();
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    decoder
        .take(cap)
        .read_to_end(&mut out)
        .await
        .map_err(DecodeError::Io)?;
    if out.len() > limit {
        return Err(DecodeError::TooLarge);
    }
    Ok(out)
}

fn corrupt(
    collection: &str,
    call: Call,
    encoding: &str,
    error: &DecodeError,
    limit: usize,
) -> RemoteError {
    let message = match error {
        DecodeError::Io(error) => format!(
            "the {encoding} answer does not decode ({error}): nothing of it was used; check for a \
             proxy that corrupts answers"
        ),
        DecodeError::TooLarge => format!(
            "the {encoding} answer decodes to more than {limit} bytes: nothing of it was used; \
             lower the feature's batch size or raise the remote's max_response_bytes"
        ),
    };
    protocol(collection, call, message)
}

/// A server that announces another protocol version is refused (an absent header is accepted:
/// proxies may drop it, and the body is still checked).
pub(crate) fn check_version(
    collection: &str,
    call: Call,
    headers: &HeaderMap,
) -> Result<(), RemoteError> {
    let Some(value) = headers.get(PROTOCOL_HEADER) else {
        return Ok(());
    };
    let version = value.to_str().unwrap_or("").trim();
    if version == PROTOCOL_VERSION.to_string() {
        return Ok(());
    }
    Err(protocol(
        collection,
        call,
        format!(
            "the server speaks fero protocol {version:?} and this client speaks \
             {PROTOCOL_VERSION}: upgrade the client or point it at a matching server"
        ),
    ))
}

/// An answer that names another collection than the one asked for is refused before it is used
/// (an absent header is accepted: other servers need not send it).
pub(crate) fn check_collection(
    collection: &str,
    call: Call,
    headers: &HeaderMap,
) -> Result<(), RemoteError> {
    let Some(value) = headers.get(COLLECTION_HEADER) else {
        return Ok(());
    };
    let named = value.to_str().unwrap_or("");
    if named == collection {
        return Ok(());
    }
    Err(protocol(
        collection,
        call,
        format!(
            "the server answered for collection {named:?}: a proxy or the server routed the \
             request wrong; nothing of the answer was used"
        ),
    ))
}

fn encode<T: serde::Serialize>(
    collection: &str,
    call: Call,
    body: &T,
) -> Result<Vec<u8>, RemoteError> {
    serde_json::to_vec(body).map_err(|error| {
        RemoteError::new(
            RemoteErrorKind::Permanent,
            collection,
            format!("{call} not sent: the request does not serialise to JSON ({error})"),
        )
    })
}

impl HttpRemote {
    async fn pull_with(
        &self,
        collection: &str,
        request: &PullRequest,
        gate: Option<&PageGate>,
    ) -> Result<PullResponse, RemoteError> {
        let url = self.collection_url(collection, Call::Pull, "pull")?;
        let body = encode(collection, Call::Pull, request)?;
        let response: PullResponse = self
            .exchange_gated(collection, Call::Pull, Method::POST, url, Some(body), gate)
            .await?;
        check_pull(collection, request, &response).inspect_err(|_| {
            self.inner.counters.failure(false);
        })?;
        Ok(response)
    }
}

/// Runs `work` under `timeout` when there is a gate (reqwest's own request timeout is off then,
/// since it would also count the wait for the gate); `None` when it timed out.
async fn within<T>(
    gate: Option<&PageGate>,
    timeout: Duration,
    work: impl std::future::Future<Output = T>,
) -> Option<T> {
    if gate.is_some() {
        tokio::time::timeout(timeout, work).await.ok()
    } else {
        Some(work.await)
    }
}

#[async_trait]
impl Remote for HttpRemote {
    /// `POST /v1/collections/{collection}/pull`.
    async fn pull(
        &self,
        collection: &str,
        request: &PullRequest,
    ) -> Result<PullResponse, RemoteError> {
        self.pull_with(collection, request, None).await
    }

    /// `POST /v1/collections/{collection}/pull`, sent at once; the answer is read once `gate`
    /// opens (see [`Remote::pull_ahead`]). The request timeout covers sending and reading, not
    /// the wait for the gate.
    async fn pull_ahead(
        &self,
        collection: &str,
        request: &PullRequest,
        gate: &PageGate,
    ) -> Result<PullResponse, RemoteError> {
        self.pull_with(collection, request, Some(gate)).await
    }

    /// `POST /v1/collections/{collection}/push`. An empty request is answered locally, without
    /// a round trip.
    async fn push(
        &self,
        collection: &str,
        request: &PushRequest,
    ) -> Result<PushResponse, RemoteError> {
        let url = self.collection_url(collection, Call::Push, "push")?;
        if request.changes.is_empty() {
            return Ok(PushResponse {
                results: Vec::new(),
            });
        }
        let body = encode(collection, Call::Push, request)?;
        let response: PushResponse = self
            .exchange(collection, Call::Push, Method::POST, url, Some(body))
            .await?;
        check_push(collection, request, &response).inspect_err(|_| {
            self.inner.counters.failure(false);
        })?;
        Ok(response)
    }

    /// `GET /v1/collections/{collection}/digest`.
    async fn digest(&self, collection: &str) -> Result<DigestResponse, RemoteError> {
        let url = self.collection_url(collection, Call::Digest, "digest")?;
        let response: DigestResponse = self
            .exchange(collection, Call::Digest, Method::GET, url, None)
            .await?;
        check_digest(collection, &response).inspect_err(|_| {
            self.inner.counters.failure(false);
        })?;
        Ok(response)
    }

    /// `GET /v1/collections/{collection}/digest?version=2`. A server older than digest version 2
    /// answers version 1 (it ignores the query) or refuses the query (404, 405, 422): both are
    /// [`Unsupported`](RemoteErrorKind::Unsupported), so a caller falls back to
    /// [`digest`](Remote::digest).
    async fn content_digest(&self, collection: &str) -> Result<ContentDigestResponse, RemoteError> {
        let mut url = self.collection_url(collection, Call::ContentDigest, "digest")?;
        url.query_pairs_mut().append_pair("version", "2");
        let answer: DigestAnswer = self
            .exchange(collection, Call::ContentDigest, Method::GET, url, None)
            .await?;
        check_content_digest(collection, answer).inspect_err(|error| {
            if !error.is_unsupported() {
                self.inner.counters.failure(false);
            }
        })
    }

    /// `GET /v1/collections/{collection}/digest?version=2&subscriptions=[...]` (the
    /// subscriptions as a JSON array): the content digest of the rows the subscriptions select
    /// together. A server without subscriptions refuses the query: [`Unsupported`](RemoteErrorKind::Unsupported).
    async fn subscriptions_digest(
        &self,
        collection: &str,
        subscriptions: &[Subscription],
    ) -> Result<ContentDigestResponse, RemoteError> {
        let mut url = self.collection_url(collection, Call::ContentDigest, "digest")?;
        // Names and JSON values only: writing them cannot fail.
        let list = serde_json::to_string(subscriptions).unwrap_or_else(|_| "[]".to_owned());
        url.query_pairs_mut()
            .append_pair("version", "2")
            .append_pair("subscriptions", &list);
        let answer: DigestAnswer = self
            .exchange(collection, Call::ContentDigest, Method::GET, url, None)
            .await?;
        check_content_digest(collection, answer).inspect_err(|error| {
            if !error.is_unsupported() {
                self.inner.counters.failure(false);
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_keep_a_path_prefix_and_encode_segments() {
        let remote = HttpRemote::new("http://127.0.0.1:9/sync/", "t").unwrap();
        assert_eq!(
            remote
                .url(&["v1", "collections", "contacts", "pull"])
                .as_str(),
            "http://127.0.0.1:9/sync/v1/collections/contacts/pull"
        );
        let bare = HttpRemote::new("http://127.0.0.1:9", "t").unwrap();
        assert_eq!(
            bare.url(&["v1", "changes"]).as_str(),
            "http://127.0.0.1:9/v1/changes"
        );
    }

    #[test]
    fn bad_configurations_are_refused_with_a_reason() {
        for url in [
            "not a url",
            "ftp://example.com",
            "http://h/?a=1",
            "mailto:a@b",
        ] {
            assert!(
                matches!(
                    HttpRemote::new(url, "t"),
                    Err(BuildError::InvalidBaseUrl { .. })
                ),
                "{url}"
            );
        }
        assert!(matches!(
            HttpRemote::new("http://h", "bad\ntoken"),
            Err(BuildError::InvalidToken)
        ));
        assert!(matches!(
            HttpRemote::builder("http://h", "t")
                .request_timeout(Duration::ZERO)
                .build(),
            Err(BuildError::ZeroSetting { .. })
        ));
        assert!(matches!(
            HttpRemote::builder("http://h", "t")
                .device_id("a\u{7f}b")
                .build(),
            Err(BuildError::InvalidHeader { .. })
        ));
    }

    #[test]
    fn the_token_never_appears_in_debug_output() {
        let builder = HttpRemote::builder("http://h", "very-secret");
        assert!(!format!("{builder:?}").contains("very-secret"));
        let remote = builder.build().unwrap();
        assert!(!format!("{remote:?}").contains("very-secret"));
    }

    #[tokio::test]
    async fn an_invalid_collection_name_is_refused_before_any_request() {
        let remote = HttpRemote::new("http://127.0.0.1:9", "t").unwrap();
        let error = remote
            .pull(
                "../admin",
                &PullRequest {
                    checkpoint: None,
                    limit: 1,
                    subscription: None,
                },
            )
            .await
            .unwrap_err();
        assert_eq!(error.kind, RemoteErrorKind::Permanent);
        assert_eq!(remote.stats().requests, 0);
    }

    #[test]
    fn content_encodings_are_recognised() {
        let mut headers = HeaderMap::new();
        assert_eq!(Encoding::of(&headers), Ok(Encoding::Identity));
        headers.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        assert_eq!(Encoding::of(&headers), Ok(Encoding::Gzip));
        headers.insert(CONTENT_ENCODING, HeaderValue::from_static("zstd"));
        assert_eq!(Encoding::of(&headers), Ok(Encoding::Zstd));
        headers.insert(CONTENT_ENCODING, HeaderValue::from_static("br"));
        assert!(Encoding::of(&headers).is_err());
    }
}
