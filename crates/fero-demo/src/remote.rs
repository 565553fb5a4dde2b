//! [`LoggedRemote`]: a device's [`HttpRemote`] with a log of the pages it fetched, the evidence
//! that a resumed initial sync fetched no page twice (beyond the one in flight at the cancel).

use std::sync::{Arc, Mutex, MutexGuard};

use fero::{PageGate, SyncCheckpoint};
use fero_http::HttpRemote;
use fero_protocol::{
    DigestResponse, PullRequest, PullResponse, PushRequest, PushResponse, Remote, RemoteError,
};
use tokio::sync::Semaphore;

/// One page a device received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageFetch {
    /// The collection.
    pub collection: String,
    /// The checkpoint the page was asked for after (`None`: from the beginning).
    pub after: Option<SyncCheckpoint>,
    /// Items on the page.
    pub items: usize,
}

/// The pages a device received, in order. Cheap to clone (shared).
#[derive(Clone, Debug, Default)]
pub struct PullLog {
    pages: Arc<Mutex<Vec<PageFetch>>>,
}

impl PullLog {
    fn lock(&self) -> MutexGuard<'_, Vec<PageFetch>> {
        // Entries are pushed whole; a panic elsewhere cannot leave the list half-written.
        self.pages
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Pages received so far (every collection): a mark for [`since`](Self::since).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// `true` before the first page.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// The pages of `collection` received after the mark `from`.
    pub fn since(&self, from: usize, collection: &str) -> Vec<PageFetch> {
        self.lock()
            .iter()
            .skip(from)
            .filter(|page| page.collection == collection)
            .cloned()
            .collect()
    }

    fn record(&self, page: PageFetch) {
        self.lock().push(page);
    }
}

/// Holds a collection's pulls back until the device's event watcher has seen the page before the
/// previous one, so a cancel issued from the event stream lands at a fixed page.
///
/// Events are broadcast and the engine never waits for a subscriber, so without the gate the
/// engine could apply several more pages (on a loaded machine, all of them) before the watcher's
/// cancel arrives. With it the engine runs at most one page ahead of the watcher: it applies the
/// page after the half-way event, and its prefetch of the next one is cancelled. The gate is
/// opened for good at the cancel, so the resumed run is not held back.
///
/// A retried pull asks for a position already let through, and passes without a permit: its
/// permit could only come from the progress event of the page being applied beside it, which the
/// engine emits after the retry succeeds.
#[derive(Debug)]
pub struct PullGate {
    collection: String,
    permits: Semaphore,
    /// Positions let through so far.
    admitted: Mutex<Vec<Option<SyncCheckpoint>>>,
}

impl PullGate {
    /// A closed-loop gate on `collection`'s pulls: the first page and its prefetch may go, each
    /// later pull needs one [`page_seen`](Self::page_seen).
    pub fn new(collection: impl Into<String>) -> Self {
        PullGate {
            collection: collection.into(),
            // The first page, and its prefetch issued while the first page is being applied.
            permits: Semaphore::new(2),
            admitted: Mutex::new(Vec::new()),
        }
    }

    fn admitted(&self) -> MutexGuard<'_, Vec<Option<SyncCheckpoint>>> {
        // Positions are pushed whole; a panic elsewhere cannot leave the list half-written.
        self.admitted
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The watcher saw a progress event: one more pull may go.
    pub fn page_seen(&self) {
        self.permits.add_permits(1);
    }

    /// Lets every pull through from now on.
    pub fn open(&self) {
        self.permits.close();
    }

    async fn pass(&self, collection: &str, after: &Option<SyncCheckpoint>) {
        if collection != self.collection || self.admitted().contains(after) {
            return;
        }
        // A closed semaphore (an open gate) answers Err: the pull goes on.
        if let Ok(permit) = self.permits.acquire().await {
            permit.forget();
        }
        self.admitted().push(after.clone());
    }
}

/// A device's remote: the [`HttpRemote`], a [`PullLog`] of what it fetched, and an optional
/// [`PullGate`].
#[derive(Clone, Debug)]
pub struct LoggedRemote {
    http: HttpRemote,
    log: PullLog,
    gate: Option<Arc<PullGate>>,
}

impl LoggedRemote {
    /// Wraps `http`.
    pub fn new(http: HttpRemote, gate: Option<Arc<PullGate>>) -> Self {
        LoggedRemote {
            http,
            log: PullLog::default(),
            gate,
        }
    }

    /// The log of pages fetched through this remote and its clones.
    pub fn log(&self) -> &PullLog {
        &self.log
    }

    /// The HTTP transport.
    pub fn http(&self) -> &HttpRemote {
        &self.http
    }
}

#[fero::async_trait]
impl Remote for LoggedRemote {
    async fn pull(
        &self,
        collection: &str,
        request: &PullRequest,
    ) -> Result<PullResponse, RemoteError> {
        self.pull_with(collection, request, None).await
    }

    async fn pull_ahead(
        &self,
        collection: &str,
        request: &PullRequest,
        page_gate: &PageGate,
    ) -> Result<PullResponse, RemoteError> {
        self.pull_with(collection, request, Some(page_gate)).await
    }

    async fn push(
        &self,
        collection: &str,
        request: &PushRequest,
    ) -> Result<PushResponse, RemoteError> {
        self.http.push(collection, request).await
    }

    async fn digest(&self, collection: &str) -> Result<DigestResponse, RemoteError> {
        self.http.digest(collection).await
    }
}

impl LoggedRemote {
    async fn pull_with(
        &self,
        collection: &str,
        request: &PullRequest,
        page_gate: Option<&PageGate>,
    ) -> Result<PullResponse, RemoteError> {
        if let Some(gate) = &self.gate {
            gate.pass(collection, &request.checkpoint).await;
        }
        let response = match page_gate {
            None => self.http.pull(collection, request).await?,
            Some(page_gate) => self.http.pull_ahead(collection, request, page_gate).await?,
        };
        // Recorded once the page arrived: a pull dropped in flight was never received.
        self.log.record(PageFetch {
            collection: collection.to_owned(),
            after: request.checkpoint.clone(),
            items: response.items.len(),
        });
        Ok(response)
    }
}

/// The pages a resumed pull fetched that the interrupted one had fetched already: those of
/// `after` asked for from a position `before` had asked for too.
pub fn fetched_twice(before: &[PageFetch], after: &[PageFetch]) -> Vec<PageFetch> {
    after
        .iter()
        .filter(|page| before.iter().any(|earlier| earlier.after == page.after))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use fero::SyncId;

    fn page(after: Option<u64>, items: usize) -> PageFetch {
        PageFetch {
            collection: "messages".into(),
            after: after.map(|id| SyncCheckpoint::at(SyncId(id))),
            items,
        }
    }

    #[test]
    fn only_pages_asked_for_from_the_same_position_count_as_fetched_twice() {
        let before = [page(None, 10), page(Some(10), 10), page(Some(20), 10)];
        let after = [page(Some(20), 10), page(Some(30), 5)];
        assert_eq!(fetched_twice(&before, &after), vec![page(Some(20), 10)]);
        assert!(fetched_twice(&before, &[page(Some(30), 5)]).is_empty());
    }

    #[test]
    fn the_log_filters_by_collection_after_a_mark() {
        let log = PullLog::default();
        log.record(page(None, 1));
        let mark = log.len();
        log.record(PageFetch {
            collection: "contacts".into(),
            ..page(None, 2)
        });
        log.record(page(Some(1), 3));
        assert_eq!(log.since(mark, "messages"), vec![page(Some(1), 3)]);
        assert_eq!(log.since(0, "messages").len(), 2);
    }

    fn at(id: u64) -> Option<SyncCheckpoint> {
        Some(SyncCheckpoint::at(SyncId(id)))
    }

    #[tokio::test]
    async fn a_gate_lets_two_pulls_go_then_one_per_page_seen_until_opened() {
        let gate = PullGate::new("messages");
        gate.pass("messages", &None).await;
        gate.pass("messages", &at(10)).await;
        // Other collections are never held.
        gate.pass("contacts", &at(99)).await;
        let third = at(20);
        let mut third = Box::pin(gate.pass("messages", &third));
        assert!(futures::poll!(&mut third).is_pending());
        gate.page_seen();
        assert!(futures::poll!(&mut third).is_ready());
        let fourth = at(30);
        let mut fourth = Box::pin(gate.pass("messages", &fourth));
        assert!(futures::poll!(&mut fourth).is_pending());
        gate.open();
        assert!(futures::poll!(&mut fourth).is_ready());
    }

    #[tokio::test]
    async fn a_retried_pull_passes_the_gate_without_a_permit() {
        let gate = PullGate::new("messages");
        gate.pass("messages", &None).await;
        gate.pass("messages", &at(10)).await;
        // Both permits used: a retry of either position must not wait for a progress event.
        let retry = at(10);
        let mut retry = Box::pin(gate.pass("messages", &retry));
        assert!(futures::poll!(&mut retry).is_ready());
        let new = at(20);
        let mut new = Box::pin(gate.pass("messages", &new));
        assert!(futures::poll!(&mut new).is_pending());
    }
}
