//! The [`Remote`] trait: one end of the protocol as an async API.

use async_trait::async_trait;
use fero::PageGate;

use crate::error::RemoteError;
use crate::types::{
    ContentDigestResponse, DigestResponse, PullRequest, PullResponse, PushRequest, PushResponse,
    Subscription,
};

/// A sync server as seen by a client: pull, push and digest per collection.
///
/// `fero-http`'s `HttpRemote` speaks it over HTTP; `fero-sim`'s simulated server speaks it in
/// process; `fero-sqlite`'s handlers take any `Remote` as their remote half.
///
/// # Contract
/// - `pull` returns the rows after `request.checkpoint` in feed order, never skipping a committed
///   row, with a checkpoint that does not go backwards.
/// - `push` answers each change in request order; it is idempotent per
///   [`MutationId`](crate::MutationId): a replay gets the original answer.
/// - Errors say whether retrying helps ([`RemoteError::is_transient`]).
#[async_trait]
pub trait Remote: Send + Sync + 'static {
    /// A page of changes after the request's checkpoint.
    ///
    /// # Errors
    /// A [`RemoteError`] of the matching kind.
    async fn pull(
        &self,
        collection: &str,
        request: &PullRequest,
    ) -> Result<PullResponse, RemoteError>;

    /// [`pull`](Self::pull) for a page fetched ahead, while the page before it is applied:
    /// `gate` opens when that apply ends.
    ///
    /// The default pulls at once. A network transport should send the request at once (the
    /// server's work and the transfer overlap the apply) and read the answer only after
    /// [`PageGate::ready`], so a client killed mid-apply has read at most one page it must fetch
    /// again; `fero-http`'s `HttpRemote` does.
    ///
    /// # Errors
    /// As [`pull`](Self::pull).
    async fn pull_ahead(
        &self,
        collection: &str,
        request: &PullRequest,
        gate: &PageGate,
    ) -> Result<PullResponse, RemoteError> {
        let _ = gate;
        self.pull(collection, request).await
    }

    /// Pushes changes.
    ///
    /// # Errors
    /// A [`RemoteError`] of the matching kind; on error the client cannot know which changes were
    /// written, and replays them all (safe by mutation id).
    async fn push(
        &self,
        collection: &str,
        request: &PushRequest,
    ) -> Result<PushResponse, RemoteError>;

    /// The count and digest of the user's live rows in `collection` (digest version 1,
    /// [`Digest`](crate::Digest): ids and versions).
    ///
    /// # Errors
    /// A [`RemoteError`] of the matching kind.
    async fn digest(&self, collection: &str) -> Result<DigestResponse, RemoteError>;

    /// The count and content digest of the user's live rows in `collection` (digest version 2,
    /// [`ContentDigest`](crate::ContentDigest): ids, versions and data), which also sees a row
    /// whose content differs at the same version.
    ///
    /// The default answers [`RemoteErrorKind::Unsupported`](crate::RemoteErrorKind::Unsupported),
    /// so a remote written before version 2 keeps working: callers such as `fero-sqlite`'s
    /// `verify` fall back to [`digest`](Self::digest) then.
    ///
    /// # Errors
    /// [`RemoteErrorKind::Unsupported`](crate::RemoteErrorKind::Unsupported) when the remote
    /// (or the server behind it) does not compute version 2; another [`RemoteError`] kind as for
    /// [`digest`](Self::digest).
    async fn content_digest(&self, collection: &str) -> Result<ContentDigestResponse, RemoteError> {
        Err(RemoteError::unsupported(
            collection,
            "the content digest (digest version 2)",
        ))
    }

    /// The count and content digest (version 2) of the live rows of a shared `collection` that
    /// `subscriptions` select together (their union, narrowed to what the user may read): what
    /// a store that syncs exactly these subscriptions should hold.
    ///
    /// The default answers [`RemoteErrorKind::Unsupported`](crate::RemoteErrorKind::Unsupported).
    ///
    /// # Errors
    /// [`RemoteErrorKind::Unsupported`](crate::RemoteErrorKind::Unsupported) when the remote
    /// does not compute it; another [`RemoteError`] kind as for [`digest`](Self::digest).
    async fn subscriptions_digest(
        &self,
        collection: &str,
        subscriptions: &[Subscription],
    ) -> Result<ContentDigestResponse, RemoteError> {
        let _ = subscriptions;
        Err(RemoteError::unsupported(
            collection,
            "the digest of subscriptions",
        ))
    }
}

#[async_trait]
impl<R: Remote + ?Sized> Remote for std::sync::Arc<R> {
    async fn pull(
        &self,
        collection: &str,
        request: &PullRequest,
    ) -> Result<PullResponse, RemoteError> {
        (**self).pull(collection, request).await
    }
    async fn pull_ahead(
        &self,
        collection: &str,
        request: &PullRequest,
        gate: &PageGate,
    ) -> Result<PullResponse, RemoteError> {
        (**self).pull_ahead(collection, request, gate).await
    }
    async fn push(
        &self,
        collection: &str,
        request: &PushRequest,
    ) -> Result<PushResponse, RemoteError> {
        (**self).push(collection, request).await
    }
    async fn digest(&self, collection: &str) -> Result<DigestResponse, RemoteError> {
        (**self).digest(collection).await
    }
    async fn content_digest(&self, collection: &str) -> Result<ContentDigestResponse, RemoteError> {
        (**self).content_digest(collection).await
    }
    async fn subscriptions_digest(
        &self,
        collection: &str,
        subscriptions: &[Subscription],
    ) -> Result<ContentDigestResponse, RemoteError> {
        (**self)
            .subscriptions_digest(collection, subscriptions)
            .await
    }
}

#[allow(dead_code)]
fn _object_safe(_: &dyn Remote) {}
