//! [`TokenProvider`]: where an [`HttpRemote`](crate::HttpRemote) gets its bearer token, so a
//! short-lived token (a JWT from an identity provider) is renewed without rebuilding the remote.
//!
//! # The contract
//! - [`token`](TokenProvider::token) is asked before **every** request (pull, push, digest,
//!   each change stream connection): return a cached token; do not fetch one each time.
//! - When the server answers 401 with the code `token_expired`, the remote calls
//!   [`refresh`](TokenProvider::refresh) **once** with the refused token and sends the same
//!   request again with the new one. A second refusal is the request's error
//!   ([`RemoteErrorKind::Unauthorized`](fero_protocol::RemoteErrorKind::Unauthorized)); the
//!   engine does not retry it. A refresh that returns the refused token again is not resent.
//! - Any other 401 (`unauthorized`: a bad signature, an unknown key, a token of the wrong
//!   audience) is not refreshed: a new token from the same source would fail the same way.
//! - A [`TokenError`] fails the request before it is sent: a
//!   [transient](TokenError::transient) one (the identity provider is unreachable) is retried
//!   with backoff like a lost connection; a [permanent](TokenError::permanent) one (the user
//!   signed out) is reported as `Unauthorized`.
//!
//! Several requests may call `refresh` at once when they all meet the same expired token; a
//! provider should let one of them renew it and hand the others the result (comparing the
//! refused token with the one it holds does that).

use std::fmt;

use async_trait::async_trait;

/// A source of bearer tokens for an [`HttpRemote`](crate::HttpRemote); see the
/// [module docs](self) for when each method is called.
///
/// # Examples
/// A provider that renews its token from an identity provider when the server says it expired:
/// ```
/// use std::sync::Mutex;
/// use fero_http::{HttpRemote, TokenError, TokenProvider};
///
/// struct Renewing { current: Mutex<String> }
///
/// impl Renewing {
///     async fn fetch_new_token(&self) -> Result<String, TokenError> {
///         // Ask the identity provider (an OAuth refresh grant, say).
///         Ok("eyJ...fresh".to_owned())
///     }
/// }
///
/// #[async_trait::async_trait]
/// impl TokenProvider for Renewing {
///     async fn token(&self) -> Result<String, TokenError> {
///         Ok(self.current.lock().unwrap().clone())
///     }
///     async fn refresh(&self, expired: &str) -> Result<String, TokenError> {
///         if *self.current.lock().unwrap() != expired {
///             // Another request renewed it already.
///             return self.token().await;
///         }
///         let fresh = self.fetch_new_token().await?;
///         *self.current.lock().unwrap() = fresh.clone();
///         Ok(fresh)
///     }
/// }
///
/// let provider = Renewing { current: Mutex::new("eyJ...old".to_owned()) };
/// let remote = HttpRemote::builder_with_token_provider("http://127.0.0.1:7700", provider)
///     .build()?;
/// # drop(remote);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[async_trait]
pub trait TokenProvider: Send + Sync + 'static {
    /// The token to send now (without the `Bearer ` prefix). Called before every request.
    ///
    /// # Errors
    /// A [`TokenError`]: the request is not sent (see the [module docs](self)).
    async fn token(&self) -> Result<String, TokenError>;

    /// A new token, after the server refused `expired` with 401 `token_expired`. The default
    /// asks [`token`](Self::token) again, which suits a provider whose token is renewed by
    /// something else in the background.
    ///
    /// # Errors
    /// A [`TokenError`]: the request fails with it.
    async fn refresh(&self, expired: &str) -> Result<String, TokenError> {
        let _ = expired;
        self.token().await
    }
}

/// `TokenProvider` is used as `dyn`: this fails to compile if it stops being object safe.
const _: Option<&dyn TokenProvider> = None;

/// The provider behind [`HttpRemote::new`](crate::HttpRemote::new) and
/// [`HttpRemote::builder`](crate::HttpRemote::builder): always the same token, so a refresh
/// changes nothing and an expired token is simply the request's error. `Debug` hides it.
#[derive(Clone)]
pub struct StaticToken(String);

impl StaticToken {
    /// A provider of `token`.
    pub fn new(token: impl Into<String>) -> Self {
        StaticToken(token.into())
    }
}

impl fmt::Debug for StaticToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StaticToken(<hidden>)")
    }
}

#[async_trait]
impl TokenProvider for StaticToken {
    async fn token(&self) -> Result<String, TokenError> {
        Ok(self.0.clone())
    }
}

/// A [`TokenProvider`] could not give a token.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the token provider failed: {message}")]
pub struct TokenError {
    message: String,
    transient: bool,
}

impl TokenError {
    /// A failure that may pass (the identity provider is unreachable): the request is retried
    /// with backoff.
    pub fn transient(message: impl Into<String>) -> Self {
        TokenError {
            message: message.into(),
            transient: true,
        }
    }

    /// A failure retrying cannot fix (the user signed out, the refresh token was revoked): the
    /// request fails as `Unauthorized`.
    pub fn permanent(message: impl Into<String>) -> Self {
        TokenError {
            message: message.into(),
            transient: false,
        }
    }

    /// `true` for a [`transient`](Self::transient) failure.
    pub fn is_transient(&self) -> bool {
        self.transient
    }

    /// What failed.
    pub fn message(&self) -> &str {
        &self.message
    }
}
