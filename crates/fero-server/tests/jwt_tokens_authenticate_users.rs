//! Bearer JWTs: an HS256 token, or an RS256/ES256 token whose key comes from a JWKS file, stands
//! for the user its `sub` names, beside the static tokens; an expired one gets 401
//! `token_expired`, any other refused one 401 `unauthorized` saying what failed. The keys under
//! `tests/keys/` are test-only.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::http::{Method, StatusCode};
use fero::{Clock, Timestamp};
use fero_server::{BuildError, JwtVerifier, Server, SqliteStorage};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use support::{ALICE, Answer, call, change, pull, push};

const SECRET: &str = "integration-test-secret-32-bytes-or-more";
/// The server's "now" in these tests: 2026-06-01T00:00:00Z.
const NOW_S: u64 = 1_780_272_000;
const JWKS: &str = include_str!("keys/jwks.json");
const RSA_KEY: &[u8] = include_bytes!("keys/rsa-private.pem");
const EC_KEY: &[u8] = include_bytes!("keys/ec-private.pem");

/// A wall clock the test sets.
#[derive(Debug)]
struct TestClock(AtomicU64);

impl Clock for TestClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst))
    }
}

fn clock() -> Arc<TestClock> {
    Arc::new(TestClock(AtomicU64::new(NOW_S * 1000)))
}

/// A server accepting HS256 and the JWKS keys, plus the static tokens of `support`.
fn server(clock: Arc<TestClock>) -> Server {
    let verifier = JwtVerifier::builder()
        .hs256_secret(SECRET)
        .jwks(JWKS)
        .unwrap()
        .clock(clock)
        .build()
        .unwrap();
    Server::builder()
        .storage(SqliteStorage::open_in_memory().unwrap())
        .tokens(support::tokens())
        .jwt(verifier)
        .build()
        .unwrap()
}

fn hs256(claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn signed(algorithm: Algorithm, kid: &str, claims: &Value) -> String {
    let mut header = Header::new(algorithm);
    header.kid = Some(kid.to_owned());
    let key = match algorithm {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(RSA_KEY).unwrap(),
        Algorithm::ES256 => EncodingKey::from_ec_pem(EC_KEY).unwrap(),
        other => panic!("no test key for {other:?}"),
    };
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

fn claims(sub: &str) -> Value {
    json!({ "sub": sub, "exp": NOW_S + 3600, "iat": NOW_S })
}

async fn pull_as(router: &Router, token: &str) -> Answer {
    call(
        router,
        Method::POST,
        "/v1/collections/notes/pull",
        Some(token),
        Some(json!({ "limit": 100 })),
    )
    .await
}

#[track_caller]
fn assert_refused(answer: &Answer, code: &str, says: &str, token: &str) {
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{answer:?}");
    assert_eq!(answer.error_code(), code, "{answer:?}");
    let message = answer.body["error"]["message"].as_str().unwrap();
    assert!(message.contains(says), "{message:?} should say {says:?}");
    for part in token.split('.') {
        assert!(
            !message.contains(part),
            "the message echoes the token: {message}"
        );
    }
    let challenge = answer.headers.get("www-authenticate").unwrap();
    assert!(challenge.to_str().unwrap().starts_with("Bearer "));
}

#[tokio::test]
async fn an_hs256_token_pushes_and_pulls_as_its_sub() {
    let server = server(clock());
    let router = server.router();
    let carol = hs256(&claims("carol"));
    let results = push(
        &router,
        &carol,
        "notes",
        vec![change("n1", None, "carol-phone", 1, json!({ "t": "hi" }))],
    )
    .await;
    support::accepted(&results[0]);
    // Another token of the same user (other claims) reads the row; alice's static token does not.
    let carol_again = hs256(&json!({ "sub": "carol", "exp": NOW_S + 60, "device": "tablet" }));
    let page = pull(&router, &carol_again, "notes", None, 100).await;
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].id, "n1");
    assert!(
        pull(&router, ALICE, "notes", None, 100)
            .await
            .items
            .is_empty()
    );
}

#[tokio::test]
async fn static_tokens_keep_working_next_to_jwts_and_name_the_same_users() {
    let server = server(clock());
    let router = server.router();
    push(
        &router,
        ALICE,
        "notes",
        vec![change("a1", None, "alice-phone", 1, json!({}))],
    )
    .await;
    // A JWT whose sub is `alice` is the same user as alice's static token.
    let page = pull(&router, &hs256(&claims("alice")), "notes", None, 100).await;
    assert_eq!(page.items.len(), 1);
    let unknown = pull_as(&router, "nobodys-token").await;
    assert_refused(
        &unknown,
        "unauthorized",
        "not one this server knows",
        "nobodys-token",
    );
}

#[tokio::test]
async fn an_expired_token_gets_token_expired_and_a_fresh_one_is_accepted() {
    let clock = clock();
    let server = server(clock.clone());
    let router = server.router();
    let token = hs256(&json!({ "sub": "carol", "exp": NOW_S + 60 }));
    assert_eq!(pull_as(&router, &token).await.status, StatusCode::OK);
    // 60 s later the token is within the 30 s leeway; 91 s later it is expired.
    clock.0.store((NOW_S + 89) * 1000, Ordering::SeqCst);
    assert_eq!(pull_as(&router, &token).await.status, StatusCode::OK);
    clock.0.store((NOW_S + 91) * 1000, Ordering::SeqCst);
    let expired = pull_as(&router, &token).await;
    assert_refused(&expired, "token_expired", "expired", &token);
    let challenge = expired.headers["www-authenticate"].to_str().unwrap();
    assert!(challenge.contains("invalid_token"), "{challenge}");
    let fresh = hs256(&json!({ "sub": "carol", "exp": NOW_S + 3600 }));
    assert_eq!(pull_as(&router, &fresh).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_token_signed_with_another_secret_is_unauthorized() {
    let server = server(clock());
    let router = server.router();
    let forged = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims("alice"),
        &EncodingKey::from_secret(b"not-the-servers-secret-but-long-enough"),
    )
    .unwrap();
    let answer = pull_as(&router, &forged).await;
    assert_refused(&answer, "unauthorized", "signature", &forged);
    // A token whose payload was swapped after signing fails the same way.
    let honest = hs256(&claims("carol"));
    let parts: Vec<&str> = honest.split('.').collect();
    let forged_payload = hs256(&claims("alice"));
    let swapped = format!(
        "{}.{}.{}",
        parts[0],
        forged_payload.split('.').nth(1).unwrap(),
        parts[2]
    );
    assert_refused(
        &pull_as(&router, &swapped).await,
        "unauthorized",
        "signature",
        &swapped,
    );
    // A JWT-shaped token that is neither valid nor a static token is refused as malformed.
    let junk = "abc.def.ghi";
    assert_refused(
        &pull_as(&router, junk).await,
        "unauthorized",
        "malformed",
        junk,
    );
}

#[tokio::test]
async fn rs256_and_es256_tokens_verify_with_keys_from_the_jwks() {
    let server = server(clock());
    let router = server.router();
    let by_rsa = signed(Algorithm::RS256, "test-rsa-1", &claims("dave"));
    let by_ec = signed(Algorithm::ES256, "test-ec-1", &claims("dave"));
    push(
        &router,
        &by_rsa,
        "notes",
        vec![change("d1", None, "dave-laptop", 1, json!({ "by": "rsa" }))],
    )
    .await;
    push(
        &router,
        &by_ec,
        "notes",
        vec![change("d2", None, "dave-phone", 1, json!({ "by": "ec" }))],
    )
    .await;
    for token in [&by_rsa, &by_ec] {
        let page = pull(&router, token, "notes", None, 100).await;
        let ids: Vec<&str> = page.items.iter().map(|item| item.id.as_str()).collect();
        assert_eq!(ids, ["d1", "d2"]);
    }
}

#[tokio::test]
async fn an_unknown_kid_or_a_key_of_the_other_algorithm_is_refused() {
    let server = server(clock());
    let router = server.router();
    let unknown = signed(Algorithm::RS256, "rotated-away", &claims("dave"));
    assert_refused(
        &pull_as(&router, &unknown).await,
        "unauthorized",
        "unknown key id",
        &unknown,
    );
    // The header may not make the EC key verify an RS256 signature.
    let confused = signed(Algorithm::RS256, "test-ec-1", &claims("dave"));
    assert_refused(
        &pull_as(&router, &confused).await,
        "unauthorized",
        "ES256",
        &confused,
    );
    // An RS256 token without a kid cannot choose a key.
    let mut header = Header::new(Algorithm::RS256);
    header.kid = None;
    let no_kid = jsonwebtoken::encode(
        &header,
        &claims("dave"),
        &EncodingKey::from_rsa_pem(RSA_KEY).unwrap(),
    )
    .unwrap();
    assert_refused(
        &pull_as(&router, &no_kid).await,
        "unauthorized",
        "kid",
        &no_kid,
    );
}

#[tokio::test]
async fn a_wrong_audience_is_unauthorized() {
    let verifier = JwtVerifier::builder()
        .hs256_secret(SECRET)
        .audience("fero-sync")
        .clock(clock())
        .build()
        .unwrap();
    let server = Server::builder()
        .storage(SqliteStorage::open_in_memory().unwrap())
        .jwt(verifier)
        .build()
        .unwrap();
    let router = server.router();
    let mut good = claims("carol");
    good["aud"] = json!(["other-app", "fero-sync"]);
    assert_eq!(pull_as(&router, &hs256(&good)).await.status, StatusCode::OK);
    let mut wrong = claims("carol");
    wrong["aud"] = json!("other-app");
    let token = hs256(&wrong);
    assert_refused(
        &pull_as(&router, &token).await,
        "unauthorized",
        "aud",
        &token,
    );
}

#[tokio::test]
async fn a_server_needs_static_tokens_or_a_jwt_verifier() {
    let jwt_only = Server::builder()
        .storage(SqliteStorage::open_in_memory().unwrap())
        .jwt(JwtVerifier::builder().hs256_secret(SECRET).build().unwrap())
        .build()
        .unwrap();
    // Without static tokens, a token that is not a JWT is unknown.
    let answer = pull_as(&jwt_only.router(), ALICE).await;
    assert_refused(&answer, "unauthorized", "not one this server knows", ALICE);
    let neither = Server::builder()
        .storage(SqliteStorage::open_in_memory().unwrap())
        .build()
        .unwrap_err();
    assert!(matches!(neither, BuildError::NoAuthentication));
    assert!(neither.to_string().contains(".jwt("), "{neither}");
}

#[tokio::test]
async fn a_jwt_works_over_a_loopback_connection_too() {
    let mut running = support::Running::start(server(clock())).await;
    let token = hs256(&claims("erin"));
    let response = support::send(
        running.addr,
        support::request(
            Method::POST,
            running.addr,
            "/v1/collections/notes/pull",
            &token,
            Some(json!({ "limit": 10 })),
        ),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = serde_json::from_slice(&support::body_bytes(response).await).unwrap();
    assert_eq!(body["items"], json!([]));
    running.shutdown();
    running.serving.await.unwrap().unwrap();
}
