//! The HTTP handlers' paths for shared collections (named by the sync rules): pull by bucket
//! cursor, push routed by the rules, digest of the readable rows, and the change stream of the
//! caller's buckets.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::http::StatusCode;
use fero::{SyncCheckpoint, SyncId};
use fero_protocol::{
    Change, ChangeNotice, ContentDigestResponse, DigestResponse, DigestVersion, ErrorCode,
    ResyncReason,
};
use futures::{Stream, StreamExt};

use crate::api_error::ApiError;
use crate::notify::ChangeSubscription;
use crate::server::Server;
use crate::shared::{Access, SharedCursor, SharedDigest, Sharing, bucket_key};
use crate::storage::{PushOutcome, StoredDocument};
use crate::user::UserId;

/// A pull of a shared collection from the checkpoint `from`: its rows and the next checkpoint.
pub(crate) async fn pull(
    server: &Server,
    access: Arc<dyn Access>,
    collection: &str,
    from: &SyncCheckpoint,
    limit: u32,
) -> Result<(Vec<StoredDocument>, SyncCheckpoint, bool), ApiError> {
    let cursor = match &from.cursor {
        Some(text) => match SharedCursor::decode(text).map_err(ApiError::invalid_cursor)? {
            Some(cursor) => Some(cursor),
            None => return Err(no_longer_private(collection)),
        },
        None if from.last_sync_id.0 == 0 => None,
        None => return Err(no_longer_private(collection)),
    };
    let page = server
        .storage()
        .shared_pull(access, collection, cursor, limit)
        .await
        .inspect_err(|error| server.metrics().storage_failed("pull", error))?;
    server.metrics().record_pulled_rows(page.items.len() as u64);
    let mut checkpoint = SyncCheckpoint::at(SyncId(page.cursor.p));
    if let Some(last) = page.items.last() {
        checkpoint = checkpoint.with_updated_at(last.updated_at);
    }
    let checkpoint = checkpoint.with_cursor(page.cursor.encode());
    Ok((page.items, checkpoint, page.has_more))
}

/// A position in a per-user feed (an `s1-` cursor or a plain `sync_id`) for a collection the
/// rules share: the device must pull the shared collection from the beginning.
fn no_longer_private(collection: &str) -> ApiError {
    ApiError {
        reason: Some(ResyncReason::ServerBehind),
        ..ApiError::new(
            StatusCode::GONE,
            ErrorCode::ResyncRequired,
            format!(
                "collection {collection:?} is shared by the server's sync rules, and this \
                 checkpoint is a position in a private feed; pull it again from the beginning \
                 (rows the server lacks are kept and pushed again)"
            ),
        )
    }
}

/// Writes valid changes to a shared collection and announces the buckets they touched (and the
/// membership changes to the users they concern).
pub(crate) async fn push(
    server: &Server,
    access: Arc<dyn Access>,
    collection: &str,
    valid: Vec<Change>,
) -> Result<PushOutcome, ApiError> {
    let pushed = server
        .storage()
        .shared_push(access, collection, valid)
        .await
        .inspect_err(|error| server.metrics().storage_failed("push", error))?;
    if let Some(sync_id) = pushed.outcome.last_written {
        let notice = ChangeNotice {
            collection: collection.to_owned(),
            sync_id,
        };
        for bucket in &pushed.touched {
            server
                .notifier()
                .publish(&bucket_key(bucket), notice.clone());
        }
        // A member's streams learn that their readable set changed: they subscribe again and
        // tell the client to pull every shared collection.
        for user in &pushed.regranted {
            server
                .notifier()
                .publish(&UserId::new(user), notice.clone());
        }
    }
    Ok(pushed.outcome)
}

/// The digest of the rows of a shared collection the caller may read.
pub(crate) async fn digest(
    server: &Server,
    access: Arc<dyn Access>,
    collection: &str,
    version: DigestVersion,
) -> Result<axum::response::Response, ApiError> {
    use axum::Json;
    use axum::response::IntoResponse;
    let content = matches!(version, DigestVersion::V2);
    let digest = server
        .storage()
        .shared_digest(access, collection, content)
        .await
        .inspect_err(|error| server.metrics().storage_failed("digest", error))?;
    Ok(match digest {
        SharedDigest::V2(digest) => Json(ContentDigestResponse {
            version: DigestVersion::V2.number(),
            count: digest.count(),
            digest: digest.hex(),
        })
        .into_response(),
        SharedDigest::V1(digest) => Json(DigestResponse {
            count: digest.count(),
            digest: digest.hex(),
        })
        .into_response(),
    })
}

/// The notices of a change stream with sync rules: the caller's own key (private collections,
/// and membership changes that concern the caller) and the key of every bucket the caller may
/// read, all subscribed before this returns (so before the response head is sent). A notice on
/// the caller's own key for a shared collection means the readable set may have changed: the
/// stream subscribes again for the new set first, then announces every shared collection, so
/// the client pulls them (rows moved in or out) and misses no later write.
pub(crate) async fn notices(
    server: Server,
    sharing: Arc<dyn Sharing>,
    user: UserId,
    claims: serde_json::Value,
) -> impl Stream<Item = ChangeNotice> + Send {
    let own = server.notifier().subscribe(&user);
    let buckets = subscribe_buckets(&server, &sharing, &user, &claims).await;
    let state = (server, sharing, user, claims, own, buckets, Vec::new());
    futures::stream::unfold(state, |state| async move {
        let (server, sharing, user, claims, mut own, mut buckets, mut queued) = state;
        loop {
            if let Some(notice) = queued.pop() {
                return Some((
                    notice,
                    (server, sharing, user, claims, own, buckets, queued),
                ));
            }
            tokio::select! {
                notice = own.next() => {
                    let notice = notice?;
                    if sharing.is_shared(&notice.collection) {
                        buckets = subscribe_buckets(&server, &sharing, &user, &claims).await;
                        for collection in sharing.shared_collections() {
                            queued.push(ChangeNotice { collection, sync_id: notice.sync_id });
                        }
                    } else {
                        queued.push(notice);
                    }
                }
                Some(notice) = buckets.next() => queued.push(notice),
            }
        }
    })
}

/// One stream of the notices of every bucket `user` may read now. A failure to compute the set
/// (rules, storage) subscribes to none: the client still learns of its private collections and
/// of membership changes, and it syncs on every (re)connection anyway.
async fn subscribe_buckets(
    server: &Server,
    sharing: &Arc<dyn Sharing>,
    user: &UserId,
    claims: &serde_json::Value,
) -> futures::stream::SelectAll<std::pin::Pin<Box<dyn Stream<Item = ChangeNotice> + Send>>> {
    let access = sharing.access(user, claims);
    let readable: BTreeSet<String> = match server.storage().shared_readable(access).await {
        Ok(readable) => readable,
        Err(error) => {
            tracing::warn!(%user, %error, "change stream: cannot compute the readable buckets");
            BTreeSet::new()
        }
    };
    futures::stream::select_all(
        readable
            .iter()
            .map(|bucket| subscription_stream(server.notifier().subscribe(&bucket_key(bucket)))),
    )
}

fn subscription_stream(
    subscription: ChangeSubscription,
) -> std::pin::Pin<Box<dyn Stream<Item = ChangeNotice> + Send>> {
    Box::pin(futures::stream::unfold(
        subscription,
        |mut subscription| async move {
            let notice = subscription.next().await?;
            Some((notice, subscription))
        },
    ))
}
