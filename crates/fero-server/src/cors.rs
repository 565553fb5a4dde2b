//! Cross-origin requests from browsers: which origins may call the server, and the CORS layer
//! that answers their preflights before authentication runs.
//!
//! A web app served from `https://app.example` that calls fero-server on another origin sends
//! an `OPTIONS` preflight first (its requests carry `Authorization` and a JSON body), without
//! the token. The layer built here sits outside the authenticated routes, so the preflight is
//! answered (204 with the `Access-Control-Allow-*` headers) for a configured origin and never
//! reaches the bearer check. Credentials (cookies) are never allowed: fero authenticates with a
//! bearer token in a header, which a page sends explicitly.

use std::time::Duration;

use axum::http::header::{self, HeaderName};
use axum::http::{HeaderValue, Method};
use fero_protocol::{COLLECTION_HEADER, PROTOCOL_HEADER};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// How long a browser may cache a preflight answer.
pub const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(60 * 60);

/// The browser origins allowed to call the server (`--cors-origin`, `FERO_CORS_ORIGINS`).
///
/// Empty (the default) means no CORS headers at all: browsers on other origins are refused by
/// the browser itself, and every other client is unaffected.
///
/// # Examples
/// ```
/// use fero_server::CorsOrigins;
/// let origins = CorsOrigins::parse(["http://localhost:5173", "https://app.example"])?;
/// assert_eq!(origins.len(), 2);
/// assert!(CorsOrigins::parse(["*"])?.allows_any());
/// assert!(CorsOrigins::parse(["app.example"]).is_err());
/// # Ok::<(), fero_server::CorsError>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CorsOrigins {
    /// Each allowed origin as the browser sends it (`scheme://host[:port]`), or empty with
    /// `any` set.
    origins: Vec<HeaderValue>,
    /// `*`: any origin may call (the bearer token still decides who the caller is).
    any: bool,
}

/// A configured CORS origin is not one a browser would send.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum CorsError {
    /// The origin is not `scheme://host[:port]` (no path, no trailing slash) nor `*`.
    #[error(
        "CORS origin {origin:?} is not an origin: write `scheme://host[:port]` as the browser \
         sends it (e.g. `http://localhost:5173`, no path or trailing slash), or `*` for any"
    )]
    InvalidOrigin {
        /// The origin as configured.
        origin: String,
    },
}

impl CorsOrigins {
    /// No origin: the server sends no CORS headers.
    pub fn none() -> Self {
        Self::default()
    }

    /// Parses origins such as `http://localhost:5173`; `*` allows any origin. Blank entries are
    /// skipped, so a trailing comma in `FERO_CORS_ORIGINS` is harmless.
    ///
    /// # Errors
    /// [`CorsError::InvalidOrigin`] for an entry that is not `scheme://host[:port]`.
    pub fn parse<I, S>(origins: I) -> Result<Self, CorsError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut parsed = Self::default();
        for origin in origins {
            let origin = origin.as_ref().trim();
            if origin.is_empty() {
                continue;
            }
            if origin == "*" {
                parsed.any = true;
                continue;
            }
            let invalid = || CorsError::InvalidOrigin {
                origin: origin.to_owned(),
            };
            let (scheme, rest) = origin.split_once("://").ok_or_else(invalid)?;
            let well_formed = matches!(scheme, "http" | "https")
                && !rest.is_empty()
                && !rest.contains(['/', '?', '#', ' ', '@']);
            if !well_formed {
                return Err(invalid());
            }
            let value = HeaderValue::from_str(origin).map_err(|_| invalid())?;
            if !parsed.origins.contains(&value) {
                parsed.origins.push(value);
            }
        }
        Ok(parsed)
    }

    /// Whether any origin is allowed (`*`).
    pub fn allows_any(&self) -> bool {
        self.any
    }

    /// How many origins are listed (not counting `*`).
    pub fn len(&self) -> usize {
        self.origins.len()
    }

    /// Whether no origin at all is allowed.
    pub fn is_empty(&self) -> bool {
        !self.any && self.origins.is_empty()
    }

    /// The layer for these origins, or `None` when none is allowed.
    pub(crate) fn layer(&self) -> Option<CorsLayer> {
        if self.is_empty() {
            return None;
        }
        let allow_origin = if self.any {
            AllowOrigin::any()
        } else {
            AllowOrigin::list(self.origins.clone())
        };
        Some(
            CorsLayer::new()
                .allow_origin(allow_origin)
                .allow_methods([Method::GET, Method::POST])
                .allow_headers([
                    header::AUTHORIZATION,
                    header::CONTENT_TYPE,
                    header::ACCEPT,
                    HeaderName::from_static(PROTOCOL_HEADER),
                ])
                .expose_headers([
                    HeaderName::from_static(PROTOCOL_HEADER),
                    HeaderName::from_static(COLLECTION_HEADER),
                    header::RETRY_AFTER,
                ])
                .max_age(PREFLIGHT_MAX_AGE),
        )
    }
}
