//! The wire types of fero's HTTP sync protocol (version [`PROTOCOL_VERSION`]), and the
//! [`Remote`] trait that both a transport (`fero-http`) and an in-process server (`fero-sim`)
//! implement, so that a local store (`fero-sqlite`) can sync with either.
//!
//! The conversation, step by step, is in `docs/protocol.md`:
//! 1. pull pages of [`Document`]s after a checkpoint ([`PullRequest`] → [`PullResponse`]);
//! 2. push [`Change`]s, each on the `base_version` it was made on and with a [`MutationId`]
//!    ([`PushRequest`] → [`PushResponse`], one [`ChangeOutcome`] per change);
//! 3. listen for [`ChangeNotice`]s on the change stream;
//! 4. compare a [`DigestResponse`] with the local store's [`Digest`], or (digest version 2, which
//!    also covers each row's content) a [`ContentDigestResponse`] with its [`ContentDigest`].
//!
//! # Example
//! ```
//! use fero_protocol::{Change, MutationId, PushRequest};
//! let push = PushRequest {
//!     changes: vec![Change {
//!         id: "contact-1".into(),
//!         base_version: None,
//!         mutation_id: MutationId::new("device-a", 1),
//!         deleted: false,
//!         data: serde_json::json!({ "name": "Ada" }),
//!     }],
//! };
//! let json = serde_json::to_string(&push)?;
//! assert_eq!(serde_json::from_str::<PushRequest>(&json)?, push);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![doc(test(attr(deny(warnings))))]

mod digest;
mod error;
mod remote;
mod types;

pub use digest::{
    ContentDigest, Digest, DigestVersion, canonical_json, content_row_digest, row_digest,
    write_canonical_json,
};
pub use error::{ErrorBody, ErrorCode, ErrorDetail, RemoteError, RemoteErrorKind, ResyncReason};
pub use remote::Remote;
pub use types::{
    COLLECTION_HEADER, Change, ChangeNotice, ChangeOutcome, ChangeResult, ContentDigestResponse,
    DigestResponse, Document, MAX_COLLECTION_NAME, MAX_PAGE_SIZE, MutationId, PROTOCOL_HEADER,
    PROTOCOL_VERSION, PullRequest, PullResponse, PushRequest, PushResponse, Subscription,
    validate_collection_name,
};
