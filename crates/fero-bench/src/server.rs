//! The in-process "servers" of W1–W3: a [`GeneratedFeed`] that builds each page of items when it
//! is fetched (it never holds N items), and an [`AcceptAllSink`] that accepts every pushed change.

use std::sync::atomic::{AtomicU64, Ordering};

use fero::{
    HandlerError, HandlerResult, PushAccepted, PushResult, SyncBatchResult, SyncCheckpoint, SyncId,
    SyncPayload, Version,
};

use crate::data::{BenchDoc, BenchItem};

/// A server's change feed of `count` generated items at one version, paged by `sync_id`.
///
/// Item `i` (1-based) sits at `sync_id = offset + i`, so a feed with `offset = N` continues a feed
/// of N items that a client already holds (W2, W3: the client's checkpoint is `N`).
///
/// # Examples
/// ```
/// use fero::{SyncCheckpoint, SyncId, Version};
/// use fero_bench::server::GeneratedFeed;
///
/// let feed = GeneratedFeed::new(2_500, Version(1), 0);
/// let first = feed.fetch(None, 1_000)?;
/// assert_eq!(first.items.len(), 1_000);
/// assert!(first.has_more);
/// let last = feed.fetch(Some(&SyncCheckpoint::at(SyncId(2_000))), 1_000)?;
/// assert_eq!((last.items.len(), last.has_more), (500, false));
/// assert_eq!(feed.fetched_items(), 1_500);
/// # Ok::<(), fero::HandlerError>(())
/// ```
#[derive(Debug)]
pub struct GeneratedFeed {
    count: u64,
    version: Version,
    offset: u64,
    fetched: AtomicU64,
}

impl GeneratedFeed {
    /// `count` items at `version`, item `i` at `sync_id = offset + i`.
    pub fn new(count: u64, version: Version, offset: u64) -> Self {
        GeneratedFeed {
            count,
            version,
            offset,
            fetched: AtomicU64::new(0),
        }
    }

    /// The items handed out so far, over all fetches.
    pub fn fetched_items(&self) -> u64 {
        self.fetched.load(Ordering::Relaxed)
    }

    /// The page after `checkpoint` (`None`: from the start), at most `limit` items. The last page
    /// carries the feed's final checkpoint and `has_more = false`.
    ///
    /// # Errors
    /// A permanent [`HandlerError`] for `limit = 0`.
    pub fn fetch(
        &self,
        checkpoint: Option<&SyncCheckpoint>,
        limit: usize,
    ) -> HandlerResult<SyncBatchResult<BenchItem>> {
        if limit == 0 {
            return Err(HandlerError::permanent(
                "a page of 0 items was requested from the generated feed: use a batch size of at \
                 least 1",
            ));
        }
        let after = checkpoint
            .map_or(self.offset, |cp| cp.last_sync_id.0)
            .max(self.offset);
        let first = after - self.offset + 1;
        let last = (first + limit as u64 - 1).min(self.count);
        if first > last {
            return Ok(SyncBatchResult::final_page(
                Vec::new(),
                SyncCheckpoint::at(SyncId(after)),
            ));
        }
        let items: Vec<_> = (first..=last)
            .map(|index| {
                SyncPayload::new(BenchItem::generate(
                    index,
                    self.version,
                    SyncId(self.offset + index),
                ))
            })
            .collect();
        self.fetched
            .fetch_add(items.len() as u64, Ordering::Relaxed);
        let checkpoint = SyncCheckpoint::at(SyncId(self.offset + last));
        Ok(if last < self.count {
            SyncBatchResult::page(items, checkpoint)
        } else {
            SyncBatchResult::final_page(items, checkpoint)
        })
    }
}

/// A push endpoint that accepts every change: the version after its base (1 for a new item) and
/// the next `sync_id` of its feed.
#[derive(Debug)]
pub struct AcceptAllSink {
    next_sync_id: AtomicU64,
    accepted: AtomicU64,
}

impl AcceptAllSink {
    /// A sink whose first accepted change gets `sync_id = after + 1`.
    pub fn new(after: SyncId) -> Self {
        AcceptAllSink {
            next_sync_id: AtomicU64::new(after.0),
            accepted: AtomicU64::new(0),
        }
    }

    /// Changes accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Accepts `changes`, in order.
    pub fn push(&self, changes: &[BenchDoc]) -> PushResult<BenchItem> {
        let first = self
            .next_sync_id
            .fetch_add(changes.len() as u64, Ordering::Relaxed);
        self.accepted
            .fetch_add(changes.len() as u64, Ordering::Relaxed);
        let accepted = changes
            .iter()
            .zip(first + 1..)
            .map(|(change, sync_id)| PushAccepted {
                id: change.id.clone(),
                version: change.base_version.map_or(Version(1), Version::next),
                sync_id: SyncId(sync_id),
            })
            .collect();
        PushResult {
            accepted,
            conflicts: Vec::new(),
            rejected: Vec::new(),
        }
    }
}
