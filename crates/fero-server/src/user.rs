//! [`UserId`]: who owns a row; [`Principal`]: who made a request, with their token's claims.

use std::fmt;
use std::sync::Arc;

/// The user a bearer token stands for, and the owner of every row that user writes.
///
/// Every storage query is scoped by it (`WHERE owner = ?`), so two users may hold rows with the
/// same id without ever seeing or conflicting with each other's. Cheap to clone.
///
/// # Examples
/// ```
/// use fero_server::UserId;
/// let alice = UserId::new("alice");
/// assert_eq!(alice.as_str(), "alice");
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UserId(Arc<str>);

impl UserId {
    /// A user id from its name.
    pub fn new(name: impl AsRef<str>) -> Self {
        UserId(Arc::from(name.as_ref()))
    }

    /// The user's name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Whether `name` may name a user: not empty, and no control character (U+0000 to U+001F,
/// U+007F to U+009F). The server's own notice keys (one per bucket of a shared collection)
/// start with a control character, so no user's key can ever be one of them.
pub(crate) fn is_valid_user_name(name: &str) -> bool {
    !name.is_empty() && !name.chars().any(char::is_control)
}

impl fmt::Debug for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for UserId {
    fn from(value: &str) -> Self {
        UserId::new(value)
    }
}

/// Who made a request: the [`UserId`] its bearer token stands for, and the claims the token
/// carried.
///
/// For a JWT ([`JwtVerifier`](crate::JwtVerifier)) `claims` is the token's whole claims object
/// (`sub`, `exp`, and any others such as `teams`), for sync rules to read; for a static token
/// ([`Tokens`](crate::Tokens)) it is the empty object `{}`. Cheap to clone.
///
/// A `Principal` dereferences to its user, so code written for a `&UserId` (storage calls, the
/// change notifier) takes a `&Principal` unchanged.
///
/// # Examples
/// ```
/// use fero_server::{Principal, UserId};
/// let principal = Principal::new(UserId::new("alice"));
/// assert_eq!(principal.user.as_str(), "alice");
/// assert_eq!(*principal.claims, serde_json::json!({}));
/// ```
#[derive(Clone, Debug)]
pub struct Principal {
    /// The user: owner of the rows the request reads and writes.
    pub user: UserId,
    /// The token's claims (a JSON object); `{}` for a static token.
    pub claims: Arc<serde_json::Value>,
}

impl Principal {
    /// A principal without claims (a static token's).
    pub fn new(user: UserId) -> Self {
        Principal {
            user,
            claims: Arc::new(serde_json::Value::Object(serde_json::Map::new())),
        }
    }

    /// A principal with the claims of its token.
    pub fn with_claims(user: UserId, claims: serde_json::Value) -> Self {
        Principal {
            user,
            claims: Arc::new(claims),
        }
    }
}

impl std::ops::Deref for Principal {
    type Target = UserId;

    fn deref(&self) -> &UserId {
        &self.user
    }
}
