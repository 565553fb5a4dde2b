//! The change stream's source: [`ChangeNotifier`], and [`ChangeHub`], its in-process form.
//!
//! After a push commits, the server calls [`ChangeNotifier::publish`] with the collection and its
//! newest `sync_id`; every open `GET /v1/changes` stream of that user holds a
//! [`ChangeSubscription`] and turns what it yields into `change` events.
//!
//! # Coalescing instead of lagging
//! A subscription does not queue notices. The hub keeps, per user, the newest `sync_id` of each
//! collection; a subscriber that wakes up compares it with what it last yielded and yields one
//! notice per collection that moved. A slow subscriber therefore never lags or loses a
//! collection: it sees fewer, later notices (the newest position of each collection), which is
//! all a client needs to know that it should pull.
//!
//! # Across processes
//! A PostgreSQL deployment runs several server processes. There the storage sends a `NOTIFY`
//! inside each write transaction (delivered only on commit), and
//! [`PostgresNotifier`](crate::PostgresNotifier) runs a `LISTEN` connection in each process that
//! feeds a local [`ChangeHub`], so a push handled by one process reaches streams held by another.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::sync::{Mutex, PoisonError};

use fero::SyncId;
use fero_protocol::ChangeNotice;
use tokio::sync::watch;

use crate::user::UserId;

/// Where commits are announced and change streams listen.
///
/// # Contract
/// - `publish` is called after the commit it announces, so a client that pulls on a notice sees
///   the rows. It must not block: it runs on the async request path.
/// - A subscription yields, for every later `publish` for its user, a notice for that collection
///   at that `sync_id` or a greater one; several publishes may coalesce into one notice. It never
///   yields another user's notices.
pub trait ChangeNotifier: Send + Sync + fmt::Debug + 'static {
    /// Announces that `user`'s `notice.collection` has committed rows up to `notice.sync_id`.
    fn publish(&self, user: &UserId, notice: ChangeNotice);

    /// A subscription to `user`'s notices published from now on.
    fn subscribe(&self, user: &UserId) -> ChangeSubscription;
}

#[allow(dead_code)]
fn _object_safe(_: &dyn ChangeNotifier) {}

/// Newest `sync_id` per collection of one user.
type Heads = BTreeMap<String, SyncId>;

/// The in-process [`ChangeNotifier`]: one watch channel of collection heads per user.
///
/// Memory is one small map per user that ever wrote or listened (users come from the configured
/// tokens, so it is bounded).
#[derive(Default)]
pub struct ChangeHub {
    users: Mutex<HashMap<UserId, watch::Sender<Heads>>>,
}

impl ChangeHub {
    /// An empty hub.
    pub fn new() -> Self {
        ChangeHub::default()
    }

    fn sender(&self, user: &UserId) -> watch::Sender<Heads> {
        // The map is only ever inserted into, so a poisoned lock still holds a valid map.
        let mut users = self.users.lock().unwrap_or_else(PoisonError::into_inner);
        users
            .entry(user.clone())
            .or_insert_with(|| watch::Sender::new(Heads::new()))
            .clone()
    }
}

impl fmt::Debug for ChangeHub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let users = self.users.lock().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("ChangeHub")
            .field("users", &users.len())
            .finish()
    }
}

impl ChangeNotifier for ChangeHub {
    fn publish(&self, user: &UserId, notice: ChangeNotice) {
        self.sender(user).send_if_modified(|heads| {
            let head = heads.entry(notice.collection).or_default();
            if notice.sync_id > *head {
                *head = notice.sync_id;
                true
            } else {
                false
            }
        });
    }

    fn subscribe(&self, user: &UserId) -> ChangeSubscription {
        let mut heads = self.sender(user).subscribe();
        let seen = heads.borrow_and_update().clone();
        ChangeSubscription {
            heads,
            seen,
            ready: VecDeque::new(),
        }
    }
}

/// One listener's view of a user's collection heads.
///
/// It queues no notices, so a slow listener never lags or loses a collection: when it wakes up
/// it yields one notice per collection that moved since its last notice, at that collection's
/// newest `sync_id` (several commits coalesce into one notice).
#[derive(Debug)]
pub struct ChangeSubscription {
    heads: watch::Receiver<Heads>,
    /// The heads as of the last notice yielded.
    seen: Heads,
    /// Notices found on the last wake-up, not yet yielded.
    ready: VecDeque<ChangeNotice>,
}

impl ChangeSubscription {
    /// A subscription fed by `heads`, a watch channel of newest `sync_id` per collection; for
    /// notifiers other than [`ChangeHub`] that keep their own channel.
    pub fn new(mut heads: watch::Receiver<BTreeMap<String, SyncId>>) -> Self {
        let seen = heads.borrow_and_update().clone();
        ChangeSubscription {
            heads,
            seen,
            ready: VecDeque::new(),
        }
    }

    /// The next notice; `None` when the notifier is gone.
    ///
    /// Cancel-safe: a notice found but not yet returned stays queued.
    pub async fn next(&mut self) -> Option<ChangeNotice> {
        loop {
            if let Some(notice) = self.ready.pop_front() {
                return Some(notice);
            }
            self.heads.changed().await.ok()?;
            let heads = self.heads.borrow_and_update().clone();
            for (collection, sync_id) in &heads {
                if self.seen.get(collection).is_none_or(|seen| seen < sync_id) {
                    self.ready.push_back(ChangeNotice {
                        collection: collection.clone(),
                        sync_id: *sync_id,
                    });
                }
            }
            self.seen = heads;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(collection: &str, sync_id: u64) -> ChangeNotice {
        ChangeNotice {
            collection: collection.into(),
            sync_id: SyncId(sync_id),
        }
    }

    #[tokio::test]
    async fn a_subscriber_gets_its_own_users_notices_only() {
        let hub = ChangeHub::new();
        let (alice, bob) = (UserId::new("alice"), UserId::new("bob"));
        let mut alices = hub.subscribe(&alice);
        hub.publish(&bob, notice("contacts", 9));
        hub.publish(&alice, notice("contacts", 3));
        assert_eq!(alices.next().await, Some(notice("contacts", 3)));
        let mut bobs = hub.subscribe(&bob);
        hub.publish(&bob, notice("notes", 10));
        assert_eq!(bobs.next().await, Some(notice("notes", 10)));
    }

    #[tokio::test]
    async fn a_slow_subscriber_gets_the_newest_head_of_every_collection_that_moved() {
        let hub = ChangeHub::new();
        let alice = UserId::new("alice");
        hub.publish(&alice, notice("old", 1));
        let mut subscription = hub.subscribe(&alice);
        for sync_id in 2..50 {
            hub.publish(&alice, notice("contacts", sync_id));
        }
        hub.publish(&alice, notice("notes", 50));
        let first = subscription.next().await;
        let second = subscription.next().await;
        assert_eq!(first, Some(notice("contacts", 49)));
        assert_eq!(second, Some(notice("notes", 50)));
    }

    #[tokio::test]
    async fn an_older_position_is_not_announced_again() {
        let hub = ChangeHub::new();
        let alice = UserId::new("alice");
        let mut subscription = hub.subscribe(&alice);
        hub.publish(&alice, notice("contacts", 5));
        assert_eq!(subscription.next().await, Some(notice("contacts", 5)));
        hub.publish(&alice, notice("contacts", 4));
        hub.publish(&alice, notice("notes", 6));
        assert_eq!(subscription.next().await, Some(notice("notes", 6)));
    }
}
