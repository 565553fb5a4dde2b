//! [`UserId`]: who owns a row.

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
