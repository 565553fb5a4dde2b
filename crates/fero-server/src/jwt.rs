//! [`JwtVerifier`]: bearer JSON Web Tokens (HS256 from a shared secret; RS256 and ES256 with
//! public keys from a JWKS file), checked against the server's clock.
//!
//! A token is accepted when its signature verifies with the key its header names, its `exp`
//! has not passed (minus a [leeway](JwtVerifierBuilder::leeway) for clock skew), its `nbf`, if
//! any, has come, its `aud` and `iss` match the configured ones (when configured) and its `sub`
//! is a usable user id. The user is `sub`; every claim travels on in [`Principal::claims`].
//!
//! `exp` and `nbf` are compared with the verifier's [`Clock`] rather than read from the system
//! inside the JWT library, so that tests drive token expiry with a clock of their own.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fero::{Clock, SystemClock};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde_json::Value;

use crate::user::{Principal, UserId, is_valid_user_name};

/// The default tolerance for clock skew between the token issuer and this server when `exp`
/// and `nbf` are checked: 30 seconds, as most identity providers assume.
pub const DEFAULT_JWT_LEEWAY: Duration = Duration::from_secs(30);

/// The shortest HS256 secret accepted: 32 bytes, the size of the SHA-256 output (RFC 7518
/// section 3.2 requires at least that much key). A shorter secret can be brute-forced from one
/// captured token.
pub const MIN_HS256_SECRET_BYTES: usize = 32;

/// Verifies bearer JWTs; made by [`JwtVerifier::builder`], given to a server with
/// [`ServerBuilder::jwt`](crate::ServerBuilder::jwt).
///
/// Cheap to clone. `Debug` shows key ids and settings, never a secret.
///
/// # Examples
/// ```
/// use fero_server::JwtVerifier;
/// let verifier = JwtVerifier::builder()
///     .hs256_secret("a-secret-of-at-least-32-bytes-long!!")
///     .audience("fero")
///     .build()?;
/// assert!(verifier.verify("not-a-jwt").is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct JwtVerifier {
    inner: Arc<Inner>,
}

struct Inner {
    hs256: Option<DecodingKey>,
    /// JWKS keys by `kid`, each with the one algorithm it verifies.
    keys: HashMap<String, (Algorithm, DecodingKey)>,
    audience: Option<String>,
    issuer: Option<String>,
    leeway: Duration,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut kids: Vec<&str> = self.inner.keys.keys().map(String::as_str).collect();
        kids.sort_unstable();
        f.debug_struct("JwtVerifier")
            .field("hs256", &self.inner.hs256.is_some())
            .field("kids", &kids)
            .field("audience", &self.inner.audience)
            .field("issuer", &self.inner.issuer)
            .field("leeway", &self.inner.leeway)
            .finish_non_exhaustive()
    }
}

/// Why a JWT was refused. The messages say what failed, never the token.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwtRejection {
    /// The token was valid until its `exp` (plus the leeway); the client should get a fresh
    /// token and retry. Answered 401 `token_expired`.
    #[error("the token expired at {expired_at} (Unix seconds); get a fresh token and retry")]
    Expired {
        /// The token's `exp`, in seconds since the Unix epoch.
        expired_at: i64,
    },
    /// The token is malformed, badly signed, signed by an unknown key, not yet valid, for
    /// another audience or issuer, or lacks a usable `sub`. Answered 401 `unauthorized`.
    #[error("the token was refused: {reason}")]
    Invalid {
        /// What failed.
        reason: String,
    },
}

impl JwtRejection {
    fn invalid(reason: impl Into<String>) -> Self {
        JwtRejection::Invalid {
            reason: reason.into(),
        }
    }

    /// `true` for [`JwtRejection::Expired`]: a refreshed token would be accepted.
    pub fn is_expired(&self) -> bool {
        matches!(self, JwtRejection::Expired { .. })
    }
}

/// A [`JwtVerifier`] could not be configured.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JwtError {
    /// A secret or JWKS file could not be read.
    #[error("cannot read {what} {path}: {source}")]
    Read {
        /// `HS256 secret file` or `JWKS file`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The HS256 secret is shorter than [`MIN_HS256_SECRET_BYTES`].
    #[error(
        "the HS256 secret has {len} bytes, fewer than {MIN_HS256_SECRET_BYTES}: use a random \
         secret of at least {MIN_HS256_SECRET_BYTES} bytes (`openssl rand -base64 48`)"
    )]
    ShortSecret {
        /// The secret's length in bytes.
        len: usize,
    },
    /// The JWKS text is not a JSON object with a `keys` array.
    #[error("the JWKS {origin} is not a JSON object with a \"keys\" array: {message}")]
    Jwks {
        /// The file, or `inline`.
        origin: String,
        /// What failed.
        message: String,
    },
    /// A key of the JWKS cannot be used.
    #[error("key {index} (kid {kid:?}) of the JWKS {origin}: {message}")]
    Key {
        /// The file, or `inline`.
        origin: String,
        /// Its position in `keys`, from 0.
        index: usize,
        /// Its `kid`, if it has one.
        kid: Option<String>,
        /// What is wrong with it.
        message: String,
    },
    /// Two keys of the JWKS have the same `kid`, so a token could not choose between them.
    #[error("two keys of the JWKS {origin} have kid {kid:?}; give each key its own kid")]
    DuplicateKid {
        /// The file, or `inline`.
        origin: String,
        /// The repeated kid.
        kid: String,
    },
    /// Neither an HS256 secret nor a JWKS key with RS256 or ES256 was given.
    #[error(
        "no JWT key: give an HS256 secret (--jwt-secret-file, FERO_JWT_SECRET) or a JWKS file \
         (--jwks) with RS256 or ES256 keys"
    )]
    NoKeys,
}

/// Configures a [`JwtVerifier`]; made by [`JwtVerifier::builder`].
pub struct JwtVerifierBuilder {
    hs256: Option<Vec<u8>>,
    keys: HashMap<String, (Algorithm, DecodingKey)>,
    audience: Option<String>,
    issuer: Option<String>,
    leeway: Duration,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for JwtVerifierBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut kids: Vec<&str> = self.keys.keys().map(String::as_str).collect();
        kids.sort_unstable();
        f.debug_struct("JwtVerifierBuilder")
            .field("hs256", &self.hs256.is_some())
            .field("kids", &kids)
            .field("audience", &self.audience)
            .field("issuer", &self.issuer)
            .field("leeway", &self.leeway)
            .finish_non_exhaustive()
    }
}

impl JwtVerifier {
    /// A builder with no keys, no audience or issuer check, [`DEFAULT_JWT_LEEWAY`] and the
    /// system clock.
    pub fn builder() -> JwtVerifierBuilder {
        JwtVerifierBuilder {
            hs256: None,
            keys: HashMap::new(),
            audience: None,
            issuer: None,
            leeway: DEFAULT_JWT_LEEWAY,
            clock: Arc::new(SystemClock),
        }
    }

    /// Verifies `token` and returns who it stands for, with all of its claims.
    ///
    /// # Errors
    /// [`JwtRejection::Expired`] when its `exp` plus the leeway has passed,
    /// [`JwtRejection::Invalid`] for everything else that fails.
    pub fn verify(&self, token: &str) -> Result<Principal, JwtRejection> {
        let inner = &self.inner;
        let header = jsonwebtoken::decode_header(token)
            .map_err(|error| JwtRejection::invalid(format!("malformed token header ({error})")))?;
        let (algorithm, key) = match header.alg {
            Algorithm::HS256 => match &inner.hs256 {
                Some(key) => (Algorithm::HS256, key),
                None => {
                    return Err(JwtRejection::invalid(
                        "HS256 tokens are not accepted here (no HS256 secret is configured)",
                    ));
                }
            },
            Algorithm::RS256 | Algorithm::ES256 => {
                let kid = header.kid.as_deref().ok_or_else(|| {
                    JwtRejection::invalid(format!(
                        "a {:?} token must name its key with `kid`",
                        header.alg
                    ))
                })?;
                let (algorithm, key) = inner.keys.get(kid).ok_or_else(|| {
                    JwtRejection::invalid(format!("unknown key id {:?}", truncate(kid)))
                })?;
                // The key decides the algorithm, never the token: a token may not make an RSA
                // key verify an ES256 signature (or the reverse).
                if *algorithm != header.alg {
                    return Err(JwtRejection::invalid(format!(
                        "key {kid:?} verifies {algorithm:?}, the token says {:?}",
                        header.alg
                    )));
                }
                (*algorithm, key)
            }
            other => {
                return Err(JwtRejection::invalid(format!(
                    "algorithm {other:?} is not accepted (HS256, RS256 and ES256 are)"
                )));
            }
        };
        let mut validation = Validation::new(algorithm);
        validation.set_required_spec_claims(&["exp", "sub"]);
        // Time is checked below against this verifier's clock.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        match &inner.audience {
            Some(audience) => validation.set_audience(&[audience]),
            // Without a configured audience, a token's `aud` is not checked (the library would
            // otherwise refuse every token that has one).
            None => validation.validate_aud = false,
        }
        if let Some(issuer) = &inner.issuer {
            validation.set_issuer(&[issuer]);
            validation.required_spec_claims.insert("iss".to_owned());
        }
        let data = jsonwebtoken::decode::<Value>(token, key, &validation)
            .map_err(|error| JwtRejection::invalid(describe(error.kind())))?;
        let claims = data.claims;
        self.check_times(&claims)?;
        let user = match claims.get("sub") {
            Some(Value::String(sub)) if is_valid_user_name(sub) => UserId::new(sub),
            Some(Value::String(_)) => {
                return Err(JwtRejection::invalid(
                    "the `sub` claim is empty or contains a control character",
                ));
            }
            _ => return Err(JwtRejection::invalid("the `sub` claim is not a string")),
        };
        Ok(Principal::with_claims(user, claims))
    }

    /// `exp` (required) and `nbf` (when present), against the clock with the leeway.
    fn check_times(&self, claims: &Value) -> Result<(), JwtRejection> {
        let now_ms = i128::from(self.inner.clock.now().0);
        let leeway_ms = i128::try_from(self.inner.leeway.as_millis()).unwrap_or(i128::MAX);
        let seconds = |name: &str| -> Result<Option<i64>, JwtRejection> {
            match claims.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Number(number)) => number
                    .as_i64()
                    // A fractional NumericDate counts from its whole second: never later.
                    .or_else(|| number.as_f64().map(|value| value.floor() as i64))
                    .map(Some)
                    .ok_or_else(|| JwtRejection::invalid(format!("`{name}` is not a number"))),
                Some(_) => Err(JwtRejection::invalid(format!("`{name}` is not a number"))),
            }
        };
        let Some(exp) = seconds("exp")? else {
            return Err(JwtRejection::invalid("the `exp` claim is missing"));
        };
        if i128::from(exp) * 1000 + leeway_ms <= now_ms {
            return Err(JwtRejection::Expired { expired_at: exp });
        }
        if let Some(nbf) = seconds("nbf")? {
            if i128::from(nbf) * 1000 - leeway_ms > now_ms {
                return Err(JwtRejection::invalid(format!(
                    "the token is not valid before {nbf} (Unix seconds, `nbf`)"
                )));
            }
        }
        Ok(())
    }
}

/// A kid from a token, shortened for a message: it is attacker-controlled text.
fn truncate(text: &str) -> String {
    text.chars().take(64).collect()
}

/// What failed, for the 401 message (never the token).
fn describe(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::InvalidSignature => "the signature does not verify".to_owned(),
        ErrorKind::InvalidAudience => "the `aud` claim does not name this server".to_owned(),
        ErrorKind::InvalidIssuer => "the `iss` claim is not the expected issuer".to_owned(),
        ErrorKind::MissingRequiredClaim(claim) => format!("the `{claim}` claim is missing"),
        ErrorKind::InvalidClaimFormat(claim) => format!("the `{claim}` claim is malformed"),
        ErrorKind::InvalidAlgorithm => "the token's algorithm does not match its key".to_owned(),
        ErrorKind::Base64(_)
        | ErrorKind::Json(_)
        | ErrorKind::Utf8(_)
        | ErrorKind::InvalidToken => "malformed token".to_owned(),
        other => format!("the token does not verify ({other:?})"),
    }
}

impl JwtVerifierBuilder {
    /// Accepts HS256 tokens signed with `secret` (at least [`MIN_HS256_SECRET_BYTES`] bytes;
    /// checked by [`build`](Self::build)).
    pub fn hs256_secret(mut self, secret: impl AsRef<[u8]>) -> Self {
        self.hs256 = Some(secret.as_ref().to_vec());
        self
    }

    /// Accepts HS256 tokens signed with the secret in the file at `path` (a trailing newline is
    /// not part of it).
    ///
    /// # Errors
    /// [`JwtError::Read`] when the file cannot be read.
    pub fn hs256_secret_file(self, path: impl AsRef<Path>) -> Result<Self, JwtError> {
        let path = path.as_ref();
        let mut secret = std::fs::read(path).map_err(|source| JwtError::Read {
            what: "HS256 secret file",
            path: path.to_path_buf(),
            source,
        })?;
        while secret
            .last()
            .is_some_and(|byte| matches!(byte, b'\n' | b'\r'))
        {
            secret.pop();
        }
        Ok(self.hs256_secret(secret))
    }

    /// Accepts RS256 and ES256 tokens signed by the keys of a JWKS (`{"keys": [...]}`), each
    /// chosen by the token's `kid`. Keys marked `"use": "enc"` and keys of other algorithms
    /// are skipped (logged); an RSA key verifies RS256, a P-256 key ES256, unless its `alg`
    /// says otherwise.
    ///
    /// # Errors
    /// [`JwtError::Jwks`] for text that is not a JWKS, [`JwtError::Key`] for a key without a
    /// `kid` or one that does not parse, [`JwtError::DuplicateKid`].
    pub fn jwks(self, text: &str) -> Result<Self, JwtError> {
        self.jwks_from(text, "inline")
    }

    /// As [`jwks`](Self::jwks), read from the file at `path`.
    ///
    /// # Errors
    /// [`JwtError::Read`] when the file cannot be read, else as `jwks`.
    pub fn jwks_file(self, path: impl AsRef<Path>) -> Result<Self, JwtError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| JwtError::Read {
            what: "JWKS file",
            path: path.to_path_buf(),
            source,
        })?;
        self.jwks_from(&text, &path.display().to_string())
    }

    fn jwks_from(mut self, text: &str, origin: &str) -> Result<Self, JwtError> {
        #[derive(serde::Deserialize)]
        struct Set {
            keys: Vec<Value>,
        }
        let set: Set = serde_json::from_str(text).map_err(|error| JwtError::Jwks {
            origin: origin.to_owned(),
            message: error.to_string(),
        })?;
        for (index, value) in set.keys.into_iter().enumerate() {
            let kid = value.get("kid").and_then(Value::as_str).map(str::to_owned);
            let key_error = |message: String| JwtError::Key {
                origin: origin.to_owned(),
                index,
                kid: kid.clone(),
                message,
            };
            let jwk: Jwk = serde_json::from_value(value)
                .map_err(|error| key_error(format!("not a JWK this server reads ({error})")))?;
            let Some(kid) = jwk.common.key_id.clone() else {
                return Err(key_error(
                    "it has no `kid`, so no token could choose it".to_owned(),
                ));
            };
            if jwk.common.public_key_use == Some(PublicKeyUse::Encryption) {
                tracing::info!(origin, kid = %kid, "skipping a JWKS key meant for encryption");
                continue;
            }
            let Some(algorithm) = signing_algorithm(&jwk) else {
                tracing::warn!(
                    origin,
                    kid = %kid,
                    "skipping a JWKS key that is neither RS256 nor ES256"
                );
                continue;
            };
            let key = DecodingKey::from_jwk(&jwk)
                .map_err(|error| key_error(format!("its key material is invalid ({error})")))?;
            if self.keys.insert(kid.clone(), (algorithm, key)).is_some() {
                return Err(JwtError::DuplicateKid {
                    origin: origin.to_owned(),
                    kid,
                });
            }
        }
        Ok(self)
    }

    /// Requires tokens whose `aud` names `audience` (default: `aud` is not checked).
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self
    }

    /// Requires tokens whose `iss` is `issuer` (default: `iss` is not checked).
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = Some(issuer.into());
        self
    }

    /// The clock skew tolerated on `exp` and `nbf` (default [`DEFAULT_JWT_LEEWAY`]).
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// The clock `exp` and `nbf` are compared with (default: the system clock). Give it the
    /// server's [clock](crate::ServerBuilder::clock) in tests that control time.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The verifier.
    ///
    /// # Errors
    /// [`JwtError::NoKeys`] without an HS256 secret or a usable JWKS key,
    /// [`JwtError::ShortSecret`] for an HS256 secret under [`MIN_HS256_SECRET_BYTES`].
    pub fn build(self) -> Result<JwtVerifier, JwtError> {
        if let Some(secret) = &self.hs256 {
            if secret.len() < MIN_HS256_SECRET_BYTES {
                return Err(JwtError::ShortSecret { len: secret.len() });
            }
        }
        if self.hs256.is_none() && self.keys.is_empty() {
            return Err(JwtError::NoKeys);
        }
        Ok(JwtVerifier {
            inner: Arc::new(Inner {
                hs256: self.hs256.as_deref().map(DecodingKey::from_secret),
                keys: self.keys,
                audience: self.audience,
                issuer: self.issuer,
                leeway: self.leeway,
                clock: self.clock,
            }),
        })
    }
}

/// The one algorithm a JWKS key verifies: its `alg` when given, else RS256 for RSA and ES256
/// for P-256; `None` for anything else.
fn signing_algorithm(jwk: &Jwk) -> Option<Algorithm> {
    let by_key = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(params) if params.curve == EllipticCurve::P256 => {
            Algorithm::ES256
        }
        _ => return None,
    };
    match jwk.common.key_algorithm {
        None => Some(by_key),
        Some(KeyAlgorithm::RS256) if by_key == Algorithm::RS256 => Some(by_key),
        Some(KeyAlgorithm::ES256) if by_key == Algorithm::ES256 => Some(by_key),
        Some(_) => None,
    }
}

/// `true` when `token` has the shape of a compact JWS: three non-empty base64url parts.
pub(crate) fn looks_like_jwt(token: &str) -> bool {
    let mut parts = 0;
    for part in token.split('.') {
        parts += 1;
        if part.is_empty()
            || !part
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
        {
            return false;
        }
    }
    parts == 3
}

#[cfg(test)]
mod tests {
    use super::*;
    use fero::Timestamp;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;
    use std::sync::atomic::{AtomicU64, Ordering};

    const SECRET: &str = "unit-test-secret-of-at-least-32-bytes";

    #[derive(Debug)]
    struct FixedClock(AtomicU64);

    impl Clock for FixedClock {
        fn now(&self) -> Timestamp {
            Timestamp(self.0.load(Ordering::SeqCst))
        }
    }

    /// Now, for the verifiers here: 2026-01-01T00:00:00Z.
    const NOW_S: u64 = 1_767_225_600;

    fn verifier() -> JwtVerifier {
        JwtVerifier::builder()
            .hs256_secret(SECRET)
            .clock(Arc::new(FixedClock(AtomicU64::new(NOW_S * 1000))))
            .build()
            .unwrap()
    }

    fn sign(claims: &Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    }

    #[test]
    fn every_claim_reaches_the_principal() {
        let claims = json!({
            "sub": "alice",
            "exp": NOW_S + 60,
            "teams": ["red", "blue"],
            "role": "admin",
        });
        let principal = verifier().verify(&sign(&claims)).unwrap();
        assert_eq!(principal.user.as_str(), "alice");
        assert_eq!(*principal.claims, claims);
        assert_eq!(principal.claims["teams"][1], "blue");
    }

    #[test]
    fn exp_is_checked_against_the_clock_with_the_leeway() {
        let verifier = verifier();
        // Expired 10 s ago: within the 30 s leeway.
        let recent = sign(&json!({ "sub": "a", "exp": NOW_S - 10 }));
        assert!(verifier.verify(&recent).is_ok());
        let old = sign(&json!({ "sub": "a", "exp": NOW_S - 31 }));
        assert_eq!(
            verifier.verify(&old).unwrap_err(),
            JwtRejection::Expired {
                expired_at: (NOW_S - 31) as i64
            }
        );
    }

    #[test]
    fn missing_exp_empty_sub_and_future_nbf_are_refused() {
        let verifier = verifier();
        let cases = [
            (json!({ "sub": "a" }), "exp"),
            (json!({ "sub": "", "exp": NOW_S + 60 }), "sub"),
            (json!({ "sub": "a\u{0}b", "exp": NOW_S + 60 }), "sub"),
            (
                json!({ "sub": "\u{1}bucket/team:red", "exp": NOW_S + 60 }),
                "sub",
            ),
            (json!({ "sub": 7, "exp": NOW_S + 60 }), "sub"),
            (json!({ "exp": NOW_S + 60 }), "sub"),
            (
                json!({ "sub": "a", "exp": NOW_S + 600, "nbf": NOW_S + 300 }),
                "not valid before",
            ),
        ];
        for (claims, expected) in cases {
            let error = verifier.verify(&sign(&claims)).unwrap_err();
            assert!(!error.is_expired(), "{claims}");
            assert!(error.to_string().contains(expected), "{claims}: {error}");
        }
    }

    #[test]
    fn audience_and_issuer_are_checked_when_configured() {
        let verifier = JwtVerifier::builder()
            .hs256_secret(SECRET)
            .audience("fero")
            .issuer("https://id.example")
            .build()
            .unwrap();
        let exp = jsonwebtoken::get_current_timestamp() + 600;
        let good = json!({ "sub": "a", "exp": exp, "aud": "fero", "iss": "https://id.example" });
        assert!(verifier.verify(&sign(&good)).is_ok());
        let wrong_aud =
            json!({ "sub": "a", "exp": exp, "aud": "other", "iss": "https://id.example" });
        let error = verifier.verify(&sign(&wrong_aud)).unwrap_err();
        assert!(error.to_string().contains("aud"), "{error}");
        let no_iss = json!({ "sub": "a", "exp": exp, "aud": "fero" });
        let error = verifier.verify(&sign(&no_iss)).unwrap_err();
        assert!(error.to_string().contains("iss"), "{error}");
    }

    #[test]
    fn a_wrong_secret_is_a_bad_signature_and_the_message_never_shows_the_token() {
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &json!({ "sub": "a", "exp": NOW_S + 60 }),
            &EncodingKey::from_secret(b"another-secret-of-at-least-32-bytes!!"),
        )
        .unwrap();
        let error = verifier().verify(&token).unwrap_err();
        assert!(error.to_string().contains("signature"), "{error}");
        for part in token.split('.') {
            assert!(!error.to_string().contains(part), "{error}");
        }
    }

    #[test]
    fn short_secrets_and_no_keys_are_refused_at_build() {
        assert!(matches!(
            JwtVerifier::builder().hs256_secret("short").build(),
            Err(JwtError::ShortSecret { len: 5 })
        ));
        assert!(matches!(
            JwtVerifier::builder().build(),
            Err(JwtError::NoKeys)
        ));
        let error = JwtVerifier::builder()
            .jwks(r#"{"keys":[{"kty":"RSA","n":"AQAB","e":"AQAB"}]}"#)
            .unwrap_err();
        assert!(error.to_string().contains("kid"), "{error}");
    }

    #[test]
    fn the_jwt_shape_is_three_base64url_parts() {
        assert!(looks_like_jwt("eyJh.eyJz.c2ln"));
        assert!(looks_like_jwt("a-_0.b.c"));
        assert!(!looks_like_jwt("static-token"));
        assert!(!looks_like_jwt("a.b"));
        assert!(!looks_like_jwt("a.b."));
        assert!(!looks_like_jwt("a.b.c.d"));
        assert!(!looks_like_jwt("a+b.c.d"));
    }
}
