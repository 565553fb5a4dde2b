//! A device syncing with short-lived JWTs keeps syncing when its token expires: the server
//! answers 401 `token_expired`, the remote asks its `TokenProvider` for a fresh token once and
//! sends the request again. A second refusal is the request's error, a static token is never
//! resent, and the change stream refreshes the same way. The server's clock is the test's, so
//! expiry happens exactly when the test moves it.

mod support;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use fero::{Clock, Timestamp};
use fero_http::{HttpRemote, StreamEvent, TokenError, TokenProvider};
use fero_protocol::{PullRequest, Remote, RemoteErrorKind};
use fero_server::{JwtVerifier, Server, SqliteStorage};
use futures::StreamExt;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use support::device::{Device, DeviceConfig};

const SECRET: &str = "fero-http-test-secret-of-32-bytes-at-least";
/// The server's clock starts here: 2026-06-01T00:00:00Z.
const START_S: u64 = 1_780_272_000;
/// How long the tokens minted here live.
const TOKEN_LIFETIME_S: u64 = 300;

#[derive(Debug)]
struct TestClock(AtomicU64);

impl TestClock {
    fn now_s(&self) -> u64 {
        self.0.load(Ordering::SeqCst) / 1000
    }

    fn advance_s(&self, seconds: u64) {
        self.0.fetch_add(seconds * 1000, Ordering::SeqCst);
    }
}

impl Clock for TestClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst))
    }
}

fn mint(sub: &str, exp: u64) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({ "sub": sub, "exp": exp }),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// Hands out its current token, and mints one valid from the clock's now on refresh; counts
/// both calls.
struct Minting {
    clock: Arc<TestClock>,
    /// When set, refresh hands out an already expired token (an identity provider gone wrong).
    refresh_expired: bool,
    current: Mutex<String>,
    tokens: AtomicUsize,
    refreshes: AtomicUsize,
}

impl Minting {
    fn new(clock: Arc<TestClock>) -> Arc<Minting> {
        let current = mint("alice", clock.now_s() + TOKEN_LIFETIME_S);
        Arc::new(Minting {
            clock,
            refresh_expired: false,
            current: Mutex::new(current),
            tokens: AtomicUsize::new(0),
            refreshes: AtomicUsize::new(0),
        })
    }

    fn calls(&self) -> (usize, usize) {
        (
            self.tokens.load(Ordering::SeqCst),
            self.refreshes.load(Ordering::SeqCst),
        )
    }
}

/// The remote owns its provider; the test keeps a handle to count calls.
struct Shared(Arc<Minting>);

#[async_trait]
impl TokenProvider for Shared {
    async fn token(&self) -> Result<String, TokenError> {
        self.0.tokens.fetch_add(1, Ordering::SeqCst);
        Ok(self.0.current.lock().unwrap().clone())
    }

    async fn refresh(&self, expired: &str) -> Result<String, TokenError> {
        self.0.refreshes.fetch_add(1, Ordering::SeqCst);
        assert_eq!(
            expired,
            *self.0.current.lock().unwrap(),
            "the refused token"
        );
        let exp = if self.0.refresh_expired {
            self.0.clock.now_s() - 3600
        } else {
            self.0.clock.now_s() + TOKEN_LIFETIME_S
        };
        let fresh = mint("alice", exp);
        *self.0.current.lock().unwrap() = fresh.clone();
        Ok(fresh)
    }
}

/// A server accepting HS256 JWTs checked against `clock`, on a loopback port.
async fn serve(clock: Arc<TestClock>) -> String {
    let verifier = JwtVerifier::builder()
        .hs256_secret(SECRET)
        .clock(clock)
        .build()
        .unwrap();
    let server = Server::builder()
        .storage(SqliteStorage::open_in_memory().unwrap())
        .jwt(verifier)
        .build()
        .unwrap();
    let addr = support::serve(server.router()).await;
    format!("http://{addr}")
}

fn clock() -> Arc<TestClock> {
    Arc::new(TestClock(AtomicU64::new(START_S * 1000)))
}

fn remote(url: &str, provider: &Arc<Minting>) -> HttpRemote {
    HttpRemote::builder_with_token_provider(url, Shared(provider.clone()))
        .seed(1)
        .build()
        .unwrap()
}

const PULL: PullRequest = PullRequest {
    checkpoint: None,
    limit: 100,
    subscription: None,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_keeps_syncing_across_an_expired_token() {
    let clock = clock();
    let url = serve(clock.clone()).await;
    let provider = Minting::new(clock.clone());
    let remote = remote(&url, &provider);
    let device = Device::with_remote(
        DeviceConfig::new(&url, "unused", "phone"),
        remote.clone(),
        remote.clone(),
    )
    .await;

    device
        .store
        .put("notes", "n1", json!({ "t": "before" }))
        .await
        .unwrap();
    device.sync.run().await.unwrap();
    let (tokens_before, refreshes) = provider.calls();
    assert!(tokens_before > 0);
    assert_eq!(refreshes, 0, "a valid token is never refreshed");
    let requests_before = remote.stats().requests;

    // The token's lifetime and the leeway pass: the next request meets an expired token.
    clock.advance_s(TOKEN_LIFETIME_S + 31);
    device
        .store
        .put("notes", "n2", json!({ "t": "after" }))
        .await
        .unwrap();
    // `run` fails unless every feature completed.
    let report = device.sync.run().await.unwrap();
    assert_eq!(report.totals().pushed, 1, "{report:?}");
    let (tokens_after, refreshes) = provider.calls();
    assert_eq!(
        refreshes, 1,
        "one refresh renews the token for every later request"
    );
    let requests = remote.stats().requests - requests_before;
    let token_calls = u64::try_from(tokens_after - tokens_before).unwrap();
    // Every request asked the provider once, and the refused one was sent twice.
    assert_eq!(
        requests,
        token_calls + 1,
        "requests {requests}, token calls {token_calls}"
    );
    assert_eq!(remote.stats().other_failures, 0);

    // Both notes reached the server under alice, and the device is in step with it.
    let page = remote.pull("notes", &PULL).await.unwrap();
    let ids: Vec<&str> = page.items.iter().map(|item| item.id.as_str()).collect();
    assert_eq!(ids, ["n1", "n2"]);
    device.assert_in_step_with_server("notes").await;
    assert_eq!(provider.calls().1, 1);
    device.sync.dispose().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refreshed_token_that_is_refused_again_is_the_error() {
    let clock = clock();
    let url = serve(clock.clone()).await;
    let provider = Arc::new(Minting {
        refresh_expired: true,
        ..Arc::into_inner(Minting::new(clock.clone())).unwrap()
    });
    let remote = remote(&url, &provider);
    clock.advance_s(TOKEN_LIFETIME_S + 31);
    let error = remote.pull("notes", &PULL).await.unwrap_err();
    assert_eq!(error.kind, RemoteErrorKind::Unauthorized, "{error}");
    assert!(error.message.contains("token_expired"), "{error}");
    assert_eq!(provider.calls(), (1, 1), "asked once, refreshed once");
    assert_eq!(
        remote.stats().requests,
        2,
        "sent, refused, resent once, refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_token_that_expired_is_not_resent() {
    let clock = clock();
    let url = serve(clock.clone()).await;
    let remote = HttpRemote::new(&url, mint("alice", START_S - 3600)).unwrap();
    let error = remote.pull("notes", &PULL).await.unwrap_err();
    assert_eq!(error.kind, RemoteErrorKind::Unauthorized, "{error}");
    assert_eq!(remote.stats().requests, 1);
    // A token of the right shape with a bad signature is `unauthorized`, never refreshed.
    let provider = Minting::new(clock.clone());
    *provider.current.lock().unwrap() = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({ "sub": "alice", "exp": START_S + 60 }),
        &EncodingKey::from_secret(b"some-other-secret-of-32-bytes-or-more"),
    )
    .unwrap();
    let remote = self::remote(&url, &provider);
    let error = remote.pull("notes", &PULL).await.unwrap_err();
    assert_eq!(error.kind, RemoteErrorKind::Unauthorized);
    assert!(error.message.contains("signature"), "{error}");
    assert_eq!(provider.calls(), (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_change_stream_refreshes_an_expired_token_when_it_connects() {
    let clock = clock();
    let url = serve(clock.clone()).await;
    let provider = Minting::new(clock.clone());
    let remote = remote(&url, &provider);
    clock.advance_s(TOKEN_LIFETIME_S + 31);
    let mut changes = remote.changes();
    let first = tokio::time::timeout(std::time::Duration::from_secs(20), changes.next())
        .await
        .expect("the stream answers")
        .expect("the stream has an item")
        .expect("the stream connects");
    assert_eq!(first, StreamEvent::Connected);
    assert_eq!(provider.calls(), (1, 1));
}

#[tokio::test]
async fn a_failing_provider_fails_the_request_before_it_is_sent() {
    struct Offline;

    #[async_trait]
    impl TokenProvider for Offline {
        async fn token(&self) -> Result<String, TokenError> {
            Err(TokenError::transient(
                "the identity provider is unreachable",
            ))
        }
    }

    let remote = HttpRemote::builder_with_token_provider("http://127.0.0.1:9", Offline)
        .build()
        .unwrap();
    let error = remote.pull("notes", &PULL).await.unwrap_err();
    assert!(error.is_transient(), "{error}");
    assert!(error.message.contains("unreachable"), "{error}");
    assert_eq!(remote.stats().requests, 0);
}
