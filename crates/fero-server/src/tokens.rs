//! [`Tokens`]: which bearer token stands for which user.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;

use serde::Deserialize;

use crate::error::TokensError;
use crate::user::{UserId, is_valid_user_name};

/// The bearer tokens a server accepts, each standing for one user.
///
/// Read from a TOML file (`[tokens]` then `"secret-token" = "alice"` lines) or from the
/// `FERO_TOKENS` form `tok1=alice,tok2=bob`. Several tokens may name one user (one per device,
/// say); one token never names two users. `Debug` shows the users, never the tokens.
///
/// # Examples
/// ```
/// use fero_server::Tokens;
/// let tokens = Tokens::parse_toml("[tokens]\n\"s3cret\" = \"alice\"\n")?;
/// assert_eq!(tokens.user_for("s3cret").map(|user| user.as_str()), Some("alice"));
/// let more = Tokens::parse_list("tok1=alice, tok2=bob")?;
/// assert_eq!(more.len(), 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Default)]
pub struct Tokens {
    users: HashMap<String, UserId>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenFile {
    tokens: BTreeMap<String, String>,
}

impl Tokens {
    /// No tokens.
    pub fn new() -> Self {
        Tokens::default()
    }

    /// Tokens from `(token, user)` pairs.
    ///
    /// # Errors
    /// See [`insert`](Self::insert).
    pub fn from_pairs<T, U>(pairs: impl IntoIterator<Item = (T, U)>) -> Result<Self, TokensError>
    where
        T: Into<String>,
        U: AsRef<str>,
    {
        let mut tokens = Tokens::new();
        for (token, user) in pairs {
            tokens.insert(token, user)?;
        }
        Ok(tokens)
    }

    /// Adds `token` for `user`.
    ///
    /// # Errors
    /// [`TokensError::BadToken`] for an empty token or one with whitespace or control characters
    /// (it could not travel in an `Authorization` header), [`TokensError::EmptyUser`],
    /// [`TokensError::BadUser`] for a user name with a control character,
    /// [`TokensError::Duplicate`] when the token already names another user.
    pub fn insert(
        &mut self,
        token: impl Into<String>,
        user: impl AsRef<str>,
    ) -> Result<(), TokensError> {
        let token = token.into();
        let user = user.as_ref().trim();
        if user.is_empty() {
            return Err(TokensError::EmptyUser);
        }
        if !is_valid_user_name(user) {
            return Err(TokensError::BadUser {
                user: user.to_owned(),
            });
        }
        if token.is_empty() || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(TokensError::BadToken {
                user: user.to_owned(),
            });
        }
        match self.users.get(&token) {
            Some(existing) if existing.as_str() != user => Err(TokensError::Duplicate {
                first: existing.to_string(),
                second: user.to_owned(),
            }),
            _ => {
                self.users.insert(token, UserId::new(user));
                Ok(())
            }
        }
    }

    /// Adds every token of `other`.
    ///
    /// # Errors
    /// [`TokensError::Duplicate`] when a token of `other` names another user here.
    pub fn merge(&mut self, other: Tokens) -> Result<(), TokensError> {
        for (token, user) in other.users {
            self.insert(token, user.as_str())?;
        }
        Ok(())
    }

    /// Tokens from TOML text: a `[tokens]` table of `"token" = "user"`.
    ///
    /// # Errors
    /// [`TokensError::Toml`] when the text is not such a table, or as [`insert`](Self::insert).
    pub fn parse_toml(text: &str) -> Result<Self, TokensError> {
        Tokens::parse_toml_from(text, "inline")
    }

    fn parse_toml_from(text: &str, origin: &str) -> Result<Self, TokensError> {
        let file: TokenFile = toml::from_str(text).map_err(|error| TokensError::Toml {
            origin: origin.to_owned(),
            message: error.message().to_owned(),
        })?;
        Tokens::from_pairs(file.tokens)
    }

    /// Tokens from a TOML file (see [`parse_toml`](Self::parse_toml)).
    ///
    /// # Errors
    /// [`TokensError::Read`] when the file cannot be read, else as `parse_toml`.
    pub fn load_toml(path: impl AsRef<Path>) -> Result<Self, TokensError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| TokensError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Tokens::parse_toml_from(&text, &path.display().to_string())
    }

    /// Tokens from the `FERO_TOKENS` form: `token=user` entries separated by commas; blanks
    /// around entries are ignored.
    ///
    /// # Errors
    /// [`TokensError::BadEntry`] for an entry without `=`, else as [`insert`](Self::insert).
    pub fn parse_list(list: &str) -> Result<Self, TokensError> {
        let mut tokens = Tokens::new();
        for (index, entry) in list.split(',').map(str::trim).enumerate() {
            if entry.is_empty() {
                continue;
            }
            let Some((token, user)) = entry.split_once('=') else {
                return Err(TokensError::BadEntry {
                    position: index + 1,
                    entry: "<hidden: no '=' found>".to_owned(),
                });
            };
            tokens.insert(token.trim(), user)?;
        }
        Ok(tokens)
    }

    /// The user `token` stands for.
    pub fn user_for(&self, token: &str) -> Option<&UserId> {
        self.users.get(token)
    }

    /// Tokens held.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// `true` when no token is held (every request would get 401).
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut users: Vec<&str> = self.users.values().map(UserId::as_str).collect();
        users.sort_unstable();
        users.dedup();
        f.debug_struct("Tokens")
            .field("count", &self.users.len())
            .field("users", &users)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_toml_file_maps_tokens_to_users() {
        let tokens =
            Tokens::parse_toml("[tokens]\n\"tok-a\" = \"alice\"\n\"tok-b\" = \"bob\"\n").unwrap();
        assert_eq!(tokens.user_for("tok-a"), Some(&UserId::new("alice")));
        assert_eq!(tokens.user_for("tok-b"), Some(&UserId::new("bob")));
        assert_eq!(tokens.user_for("tok-c"), None);
    }

    #[test]
    fn toml_without_a_tokens_table_is_refused_with_the_expected_form() {
        let error = Tokens::parse_toml("alice = \"x\"").unwrap_err();
        assert!(matches!(error, TokensError::Toml { .. }));
        assert!(error.to_string().contains("[tokens]"), "{error}");
    }

    #[test]
    fn the_env_list_form_is_parsed_and_checked() {
        let tokens = Tokens::parse_list(" tok1=alice ,tok2=bob,").unwrap();
        assert_eq!(tokens.user_for("tok1"), Some(&UserId::new("alice")));
        assert_eq!(tokens.user_for("tok2"), Some(&UserId::new("bob")));
        assert!(matches!(
            Tokens::parse_list("tok1=alice,oops"),
            Err(TokensError::BadEntry { position: 2, .. })
        ));
        assert!(matches!(
            Tokens::parse_list("tok1="),
            Err(TokensError::EmptyUser)
        ));
        assert!(matches!(
            Tokens::parse_list("=alice"),
            Err(TokensError::BadToken { .. })
        ));
        // A control character would let a user name collide with the server's own notice keys
        // (a shared bucket's key starts with U+0001).
        assert!(matches!(
            Tokens::parse_list("tok1=\u{1}bucket/team:red"),
            Err(TokensError::BadUser { .. })
        ));
    }

    #[test]
    fn one_token_cannot_name_two_users() {
        let error = Tokens::parse_list("t=alice,t=bob").unwrap_err();
        assert!(matches!(error, TokensError::Duplicate { .. }));
    }

    #[test]
    fn debug_output_never_shows_a_token() {
        let tokens = Tokens::parse_list("very-secret=alice").unwrap();
        let shown = format!("{tokens:?}");
        assert!(!shown.contains("very-secret"), "{shown}");
        assert!(shown.contains("alice"), "{shown}");
    }
}
