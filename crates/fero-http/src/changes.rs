//! The live change stream: `GET /v1/changes` as Server-Sent Events, turned into a [`Stream`] of
//! [`StreamEvent`]s that reconnects by itself.
//!
//! # What the stream yields
//! - `Ok(`[`StreamEvent::Connected`]`)` when a connection is established, the first and every
//!   later one. Notices the server sent while no connection was open are lost, so a client
//!   should sync every collection it follows once on each `Connected`.
//! - `Ok(`[`StreamEvent::Change`]`)` for each `change` event: a collection has rows after
//!   `sync_id`.
//! - `Ok(`[`StreamEvent::Disconnected`]`)` when a connection fails or drops (including a
//!   silent connection past the idle timeout, or an unreadable notice); the stream waits
//!   `retry_in` (the reconnect backoff, or the server's `retry:` hint if longer) and connects
//!   again.
//! - `Err(`[`RemoteError`]`)` when a connection is refused in a way retrying cannot fix (401,
//!   403, another 4xx, an answer that is not an event stream), or the reconnect backoff gave up.
//!   The stream ends after it.
//!
//! # A slow consumer
//! The stream reads from the connection only when polled: a consumer that does not poll holds
//! the server's events in the connection's buffers (TCP backpressure) and loses nothing, unless
//! it stays away longer than the idle timeout, after which the stream reconnects (and yields
//! `Disconnected` and `Connected`, which tell the consumer to catch up).

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use fero::SeededRandom;
use fero_protocol::{ChangeNotice, RemoteError, RemoteErrorKind};
use futures::Stream;
use futures::stream::BoxStream;
use reqwest::Response;
use reqwest::header::{
    ACCEPT, ACCEPT_ENCODING, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, HeaderValue,
};

use crate::error::{CHANGE_STREAM_LABEL, Call, from_status, from_transport, protocol};
use crate::remote::{HttpRemote, check_version, is_token_expired};
use crate::sse::{SseEvent, SseParser};

/// The SSE event name of a change notice.
pub const CHANGE_EVENT: &str = "change";

/// The largest single event accepted on the stream. A notice is well under 200 bytes; the
/// limit bounds the memory a misbehaving server can make the client hold.
const MAX_EVENT_BYTES: usize = 64 * 1024;

/// Error bodies of a refused stream connection are read up to this size.
const MAX_ERROR_BODY_BYTES: usize = 16 * 1024;

/// One item of a [`ChangeStream`] (see the [module docs](self)).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum StreamEvent {
    /// A connection was established. Notices sent before it may have been missed: sync every
    /// followed collection once.
    Connected,
    /// A collection of this user has new rows.
    Change(ChangeNotice),
    /// The connection failed or dropped; the stream connects again after `retry_in`.
    Disconnected {
        /// Why.
        error: RemoteError,
        /// The wait before the next attempt.
        retry_in: Duration,
    },
}

/// The change stream of an [`HttpRemote`]: a [`Stream`] of
/// `Result<`[`StreamEvent`]`, `[`RemoteError`]`>` that reconnects with backoff (see the
/// [module docs](self) for what it yields and when it ends).
///
/// It does nothing until polled; dropping it closes the connection.
pub struct ChangeStream {
    inner: BoxStream<'static, Result<StreamEvent, RemoteError>>,
}

impl fmt::Debug for ChangeStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChangeStream").finish_non_exhaustive()
    }
}

impl Stream for ChangeStream {
    type Item = Result<StreamEvent, RemoteError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

impl HttpRemote {
    /// Opens the change stream (`GET /v1/changes`) of this remote's user.
    ///
    /// # Examples
    /// ```no_run
    /// use futures::StreamExt;
    /// use fero_http::StreamEvent;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let remote = fero_http::HttpRemote::new("http://127.0.0.1:7700", "secret-token")?;
    /// let mut changes = remote.changes();
    /// while let Some(event) = changes.next().await {
    ///     match event? {
    ///         StreamEvent::Connected => println!("connected: sync everything once"),
    ///         StreamEvent::Change(notice) => println!("{} changed", notice.collection),
    ///         other => println!("{other:?}"),
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub fn changes(&self) -> ChangeStream {
        let opened = self.inner.streams_opened.fetch_add(1, Ordering::Relaxed);
        let state = StreamState {
            remote: self.clone(),
            random: SeededRandom::new(self.inner.seed.wrapping_add(opened)),
            parser: SseParser::new(MAX_EVENT_BYTES),
            response: None,
            queue: VecDeque::new(),
            failures: 0,
            reconnect_after: None,
            finished: false,
        };
        ChangeStream {
            inner: Box::pin(futures::stream::unfold(state, StreamState::next)),
        }
    }

    /// Connects the stream once: the answer's headers are checked, the body is left to read.
    async fn connect_stream(&self, last_event_id: Option<&str>) -> Result<Response, RemoteError> {
        let label = CHANGE_STREAM_LABEL;
        let call = Call::ChangeStream;
        let timeout = self.inner.request_timeout;
        let mut token = self.authorization(label, call).await?;
        let mut refreshed = false;
        let response = loop {
            let mut request = self
                .inner
                .client
                .get(self.url(&["v1", "changes"]))
                .header(AUTHORIZATION, token.clone())
                .header(ACCEPT, "text/event-stream")
                .header(CACHE_CONTROL, "no-cache")
                // Compression would hold events back in the encoder's buffer.
                .header(ACCEPT_ENCODING, "identity");
            if let Some(id) = last_event_id.and_then(|id| HeaderValue::from_str(id).ok()) {
                request = request.header("last-event-id", id);
            }
            self.inner.counters.request(0);
            // Only the wait for the answer's headers is bounded: the body is endless by design.
            let response = match tokio::time::timeout(timeout, request.send()).await {
                Ok(Ok(response)) => response,
                Ok(Err(error)) => return Err(from_transport(label, call, Some(timeout), &error)),
                Err(_) => {
                    return Err(RemoteError::new(
                        RemoteErrorKind::Transient,
                        label,
                        format!(
                            "{call}: the server did not answer within {timeout:?}; it is \
                             retried with backoff"
                        ),
                    ));
                }
            };
            let status = response.status();
            if status.is_success() {
                break response;
            }
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|value| value.to_str().ok())
                .and_then(crate::error::parse_retry_after);
            let body = tokio::time::timeout(timeout, read_error_body(response))
                .await
                .unwrap_or_default();
            // An expired token is refreshed once, as for every other request.
            if !refreshed && is_token_expired(status, &body) {
                refreshed = true;
                if let Some(fresh) = self.refreshed_authorization(label, call, &token).await? {
                    token = fresh;
                    continue;
                }
            }
            return Err(from_status(label, call, status, retry_after, &body));
        };
        check_version(label, call, response.headers())?;
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("");
        if !content_type.starts_with("text/event-stream") {
            return Err(protocol(
                label,
                call,
                format!(
                    "the answer's content type is {content_type:?}, not text/event-stream: check \
                     that the base URL points at a fero server"
                ),
            ));
        }
        let encoding = response
            .headers()
            .get(reqwest::header::CONTENT_ENCODING)
            .map(|value| value.to_str().unwrap_or("(not ASCII)"))
            .unwrap_or("identity");
        if !encoding.eq_ignore_ascii_case("identity") {
            return Err(protocol(
                label,
                call,
                format!(
                    "the event stream is encoded with {encoding:?} although identity was asked \
                     for: check for a proxy that compresses event streams"
                ),
            ));
        }
        self.inner.counters.stream_connected();
        Ok(response)
    }
}

async fn read_error_body(mut response: Response) -> Vec<u8> {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_ERROR_BODY_BYTES {
            body.truncate(MAX_ERROR_BODY_BYTES);
            break;
        }
    }
    body
}

/// What the stream carries between polls.
struct StreamState {
    remote: HttpRemote,
    random: SeededRandom,
    parser: SseParser,
    /// The open connection, if any.
    response: Option<Response>,
    /// Items decoded and not yet yielded.
    queue: VecDeque<Result<StreamEvent, RemoteError>>,
    /// Failures since data last arrived: the backoff's attempt number.
    failures: u32,
    /// Wait this long before the next connection attempt.
    reconnect_after: Option<Duration>,
    /// A terminal error was queued: end after the queue drains.
    finished: bool,
}

impl StreamState {
    async fn next(mut self) -> Option<(Result<StreamEvent, RemoteError>, StreamState)> {
        loop {
            if let Some(item) = self.queue.pop_front() {
                return Some((item, self));
            }
            if self.finished {
                return None;
            }
            match self.response.as_mut() {
                None => self.connect().await,
                Some(response) => {
                    let idle = self.remote.inner.stream_idle_timeout;
                    match tokio::time::timeout(idle, response.chunk()).await {
                        Ok(Ok(Some(bytes))) => self.received(&bytes),
                        Ok(Ok(None)) => self.disconnected(RemoteError::new(
                            RemoteErrorKind::Transient,
                            CHANGE_STREAM_LABEL,
                            "change stream: the server closed the connection; reconnecting",
                        )),
                        Ok(Err(error)) => self.disconnected(from_transport(
                            CHANGE_STREAM_LABEL,
                            Call::ChangeStream,
                            None,
                            &error,
                        )),
                        Err(_) => self.disconnected(RemoteError::new(
                            RemoteErrorKind::Transient,
                            CHANGE_STREAM_LABEL,
                            format!(
                                "change stream: nothing arrived for {idle:?}, not even a \
                                 keep-alive; reconnecting (raise the stream idle timeout if the \
                                 server's keep-alive interval is longer)"
                            ),
                        )),
                    }
                }
            }
        }
    }

    async fn connect(&mut self) {
        if let Some(delay) = self.reconnect_after.take() {
            tokio::time::sleep(delay).await;
        }
        let last_event_id = self.parser.last_event_id().map(str::to_owned);
        match self.remote.connect_stream(last_event_id.as_deref()).await {
            Ok(response) => {
                tracing::debug!(url = %response.url(), "change stream connected");
                self.parser.reset_connection();
                self.response = Some(response);
                self.queue.push_back(Ok(StreamEvent::Connected));
            }
            Err(error) if error.is_transient() => self.disconnected(error),
            Err(error) => {
                self.remote.inner.counters.failure(false);
                self.finish(error);
            }
        }
    }

    fn received(&mut self, bytes: &[u8]) {
        self.remote.inner.counters.received(bytes.len());
        self.remote.inner.counters.decoded(bytes.len());
        // Data arrived: the connection works, so the next failure starts the backoff afresh.
        self.failures = 0;
        let mut events = Vec::new();
        let parsed = self.parser.push(bytes, &mut events);
        for event in events {
            if let Err(error) = self.notice(event) {
                return self.disconnected(error);
            }
        }
        if let Err(too_large) = parsed {
            self.disconnected(protocol(
                CHANGE_STREAM_LABEL,
                Call::ChangeStream,
                format!("{too_large}: reconnecting; check the server's change stream"),
            ));
        }
    }

    fn notice(&mut self, event: SseEvent) -> Result<(), RemoteError> {
        if event.event != CHANGE_EVENT {
            tracing::trace!(event = %event.event, "change stream: other event ignored");
            return Ok(());
        }
        let notice = serde_json::from_str::<ChangeNotice>(&event.data).map_err(|error| {
            protocol(
                CHANGE_STREAM_LABEL,
                Call::ChangeStream,
                format!(
                    "a change notice does not parse ({error}): reconnecting, which makes the \
                     client sync every collection once, so the notice's change is not lost"
                ),
            )
        })?;
        self.queue.push_back(Ok(StreamEvent::Change(notice)));
        Ok(())
    }

    /// The connection failed or dropped: queue the news and plan the reconnect.
    fn disconnected(&mut self, error: RemoteError) {
        self.response = None;
        self.remote.inner.counters.failure(error.is_transient());
        self.failures = self.failures.saturating_add(1);
        let backoff = self.remote.inner.reconnect_backoff.clone();
        match backoff.delay(self.failures, &mut self.random) {
            Some(delay) => {
                let retry_in = delay.max(self.parser.retry().unwrap_or_default());
                tracing::debug!(%error, ?retry_in, "change stream disconnected");
                self.reconnect_after = Some(retry_in);
                self.queue
                    .push_back(Ok(StreamEvent::Disconnected { error, retry_in }));
            }
            None => {
                let mut error = error;
                error.message.push_str(&format!(
                    " (the reconnect backoff gave up after {} attempt(s))",
                    self.failures
                ));
                self.finish(error);
            }
        }
    }

    fn finish(&mut self, error: RemoteError) {
        tracing::warn!(%error, "change stream ended");
        self.response = None;
        self.finished = true;
        self.queue.push_back(Err(error));
    }
}
