//! Partial sync by subscription: `SubscriptionSync` driven by `FeroSync` (and, for the race with
//! an unsubscribe, called directly) against a small in-memory server that serves subscriptions
//! over one table of tasks.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use fero::{
    ApplyContext, BackgroundSyncHandler, ConflictResolutionStrategy, FeatureKey, FeatureSyncConfig,
    FeroSync, RemoteChanges, SyncCheckpoint, SyncEvent, SyncId, SyncKind, SyncMetadataRepo,
    Timestamp, Version,
};
use fero_protocol::{
    ChangeOutcome, ChangeResult, DigestResponse, Document, MutationId, PullRequest, PullResponse,
    PushRequest, PushResponse, Remote, RemoteError, RemoteErrorKind, Subscription,
};
use fero_sqlite::{SqliteStore, SubscriptionSync, UnsubscribeReport};
use futures::StreamExt;
use futures::future::BoxFuture;
use serde_json::{Value, json};

const C: &str = "tasks";

fn project(id: &str) -> Subscription {
    Subscription::new("project").param("project_id", id)
}

fn assignee(user: &str) -> Subscription {
    Subscription::new("assignee").param("user", user)
}

fn task(project: &str, assignee: &str) -> Value {
    json!({ "project": project, "assignee": assignee })
}

/// One pull as the server saw it: the subscription, the position it started after, the ids it
/// answered with.
#[derive(Clone, Debug)]
struct Pull {
    key: String,
    after: u64,
    ids: Vec<String>,
}

/// Runs once, inside the pull of its subscription, after the answer is computed and before it
/// is returned: the page is fetched, not yet applied.
type Hook = Box<dyn FnOnce() -> BoxFuture<'static, ()> + Send>;

#[derive(Default)]
struct State {
    next_sync_id: u64,
    /// Every state of every row, oldest first.
    history: BTreeMap<String, Vec<Document>>,
    /// Rows taken from one subscription without a write (the user lost access):
    /// (subscription key, sync_id, id).
    revoked: Vec<(String, u64, String)>,
    answers: BTreeMap<(String, u64), ChangeResult>,
    pulls: Vec<Pull>,
    hook: Option<(String, Hook)>,
}

/// The server: a subscription `project{"project_id":X}` selects the rows whose `project` is X,
/// `assignee{"user":U}` those whose `assignee` is U. A pull answers, after the checkpoint's
/// position and in `sync_id` order, the latest state of each row the subscription selects, a
/// removal (deleted, data null) for each row that left it after that position (a write moved it
/// out, or `revoke`, after which the subscription never sends that row again), paged by the
/// limit. Its checkpoint's cursor is the subscription's key, and
/// a pull with another subscription's checkpoint is refused.
#[derive(Clone, Default)]
struct Server(Arc<Mutex<State>>);

fn selects(subscription: &Subscription, data: &Value) -> bool {
    let (field, param) = match subscription.name.as_str() {
        "project" => ("project", "project_id"),
        "assignee" => ("assignee", "user"),
        _ => return false,
    };
    subscription
        .params
        .get(param)
        .is_some_and(|wanted| data.get(field) == Some(wanted))
}

fn removal(id: &str, sync_id: u64, version: Version) -> Document {
    Document {
        id: id.to_owned(),
        sync_id: SyncId(sync_id),
        version,
        updated_at: Timestamp(sync_id),
        deleted: true,
        data: Value::Null,
    }
}

impl Server {
    fn state(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap()
    }

    /// Writes `id` (a deletion keeps the last data, as a real tombstone does).
    fn write(&self, id: &str, data: Option<Value>) -> Document {
        let mut state = self.state();
        state.next_sync_id += 1;
        let sync_id = state.next_sync_id;
        let states = state.history.entry(id.to_owned()).or_default();
        let last = states.last();
        let doc = Document {
            id: id.to_owned(),
            sync_id: SyncId(sync_id),
            version: last.map_or(Version(1), |d| d.version.next()),
            updated_at: Timestamp(sync_id),
            deleted: data.is_none(),
            data: data.unwrap_or_else(|| last.map_or(json!({}), |d| d.data.clone())),
        };
        states.push(doc.clone());
        doc
    }

    fn put(&self, id: &str, data: Value) -> Document {
        self.write(id, Some(data))
    }

    fn delete(&self, id: &str) -> Document {
        self.write(id, None)
    }

    fn revoke(&self, subscription: &Subscription, id: &str) {
        let mut state = self.state();
        state.next_sync_id += 1;
        let sync_id = state.next_sync_id;
        state
            .revoked
            .push((subscription.key(), sync_id, id.to_owned()));
    }

    fn current(&self, id: &str) -> Option<Document> {
        self.state().history.get(id)?.last().cloned()
    }

    fn take_pulls(&self) -> Vec<Pull> {
        std::mem::take(&mut self.state().pulls)
    }

    fn on_pull(&self, subscription: &Subscription, hook: Hook) {
        self.state().hook = Some((subscription.key(), hook));
    }

    /// The subscription's feed after `after`, in `sync_id` order.
    fn feed(state: &State, subscription: &Subscription, after: u64) -> Vec<Document> {
        let key = subscription.key();
        let mut feed = Vec::new();
        for (id, states) in &state.history {
            let latest = states.last().unwrap();
            let revoked = state
                .revoked
                .iter()
                .filter(|(k, _, rid)| *k == key && rid == id)
                .map(|(_, sync_id, _)| *sync_id)
                .max();
            let entry = match revoked {
                // Lost for good: the subscription never sends the row again.
                Some(at) => Some(removal(id, at, latest.version)),
                None if selects(subscription, &latest.data) => Some(latest.clone()),
                _ => {
                    // Left the subscription after `after`: a state it selected was followed by
                    // one it does not.
                    let left = states.windows(2).any(|pair| {
                        selects(subscription, &pair[0].data)
                            && !selects(subscription, &pair[1].data)
                            && pair[1].sync_id.0 > after
                    });
                    left.then(|| removal(id, latest.sync_id.0, latest.version))
                }
            };
            if let Some(doc) = entry.filter(|doc| doc.sync_id.0 > after) {
                feed.push(doc);
            }
        }
        feed.sort_by_key(|doc| doc.sync_id);
        feed
    }
}

#[fero::async_trait]
impl Remote for Server {
    async fn pull(&self, _: &str, request: &PullRequest) -> Result<PullResponse, RemoteError> {
        let Some(subscription) = request.subscription.clone() else {
            return Err(RemoteError::new(
                RemoteErrorKind::Permanent,
                C,
                "this server serves subscriptions only",
            ));
        };
        let key = subscription.key();
        let after = match &request.checkpoint {
            None => 0,
            Some(cp) if cp.cursor.as_deref() == Some(key.as_str()) => cp.last_sync_id.0,
            Some(cp) => {
                return Err(RemoteError::new(
                    RemoteErrorKind::Permanent,
                    C,
                    format!("checkpoint {cp:?} was not given to subscription {key}"),
                ));
            }
        };
        let (response, hook) = {
            let mut state = self.state();
            let mut feed = Server::feed(&state, &subscription, after);
            let has_more = feed.len() > request.limit as usize;
            feed.truncate(request.limit as usize);
            let last = feed.last().map_or(after, |doc| doc.sync_id.0);
            state.pulls.push(Pull {
                key: key.clone(),
                after,
                ids: feed.iter().map(|doc| doc.id.clone()).collect(),
            });
            let hook = match state.hook.take() {
                Some((hook_key, hook)) if hook_key == key => Some(hook),
                other => {
                    state.hook = other;
                    None
                }
            };
            let response = PullResponse {
                items: feed,
                checkpoint: SyncCheckpoint::at(SyncId(last)).with_cursor(key),
                has_more,
            };
            (response, hook)
        };
        if let Some(hook) = hook {
            hook().await;
        }
        Ok(response)
    }

    async fn push(&self, _: &str, request: &PushRequest) -> Result<PushResponse, RemoteError> {
        let mut results = Vec::new();
        for change in &request.changes {
            let MutationId { device, seq } = change.mutation_id.clone();
            if let Some(answer) = self.state().answers.get(&(device.clone(), seq)) {
                results.push(answer.clone());
                continue;
            }
            let current = self.current(&change.id);
            let outcome = if current.as_ref().map(|d| d.version) != change.base_version {
                ChangeOutcome::Conflict { server: current }
            } else {
                let doc = self.write(&change.id, (!change.deleted).then(|| change.data.clone()));
                ChangeOutcome::Accepted {
                    version: doc.version,
                    sync_id: doc.sync_id,
                }
            };
            let answer = ChangeResult {
                id: change.id.clone(),
                mutation_id: change.mutation_id.clone(),
                outcome,
            };
            self.state().answers.insert((device, seq), answer.clone());
            results.push(answer);
        }
        Ok(PushResponse { results })
    }

    async fn digest(&self, collection: &str) -> Result<DigestResponse, RemoteError> {
        Err(RemoteError::unsupported(collection, "a digest"))
    }
}

fn engine(handler: &SubscriptionSync<Server>, strategy: ConflictResolutionStrategy) -> FeroSync {
    let config = || FeatureSyncConfig::new().batch_size(2);
    FeroSync::builder()
        .metadata_repo(handler.store().metadata_repo())
        .initial_sync(C, handler.clone(), config())
        .background_sync(C, handler.clone(), config())
        .conflict_strategy(strategy)
        .seed(7)
        .build()
        .unwrap()
}

/// The ids of the live documents of the store.
async fn live(store: &SqliteStore) -> Vec<String> {
    store
        .query(C)
        .await
        .unwrap()
        .into_iter()
        .map(|doc| doc.id)
        .collect()
}

fn ids(list: &[&str]) -> Vec<String> {
    list.iter().map(|id| id.to_string()).collect()
}

/// The pulled ids of each subscription, in pull order.
fn pulled(pulls: &[Pull], subscription: &Subscription) -> Vec<String> {
    pulls
        .iter()
        .filter(|pull| pull.key == subscription.key())
        .flat_map(|pull| pull.ids.clone())
        .collect()
}

async fn stored_cursor(store: &SqliteStore) -> Value {
    let checkpoint = store
        .metadata_repo()
        .checkpoint(&FeatureKey::new(C))
        .await
        .unwrap()
        .expect("a checkpoint was saved");
    serde_json::from_str(checkpoint.cursor.as_deref().unwrap()).unwrap()
}

#[tokio::test]
async fn two_subscriptions_pull_their_rows_each_from_its_own_checkpoint() {
    let server = Server::default();
    for (id, p) in [("a1", "p1"), ("b1", "p2"), ("a2", "p1"), ("c1", "p3")] {
        server.put(id, task(p, "ann"));
    }
    let a3 = server.put("a3", task("p1", "bob"));
    let b2 = server.put("b2", task("p2", "bob"));
    let store = SqliteStore::open_in_memory().await.unwrap();
    assert!(store.subscribe(C, project("p1")).await.unwrap());
    assert!(!store.subscribe(C, project("p1")).await.unwrap(), "not new");
    assert!(store.subscribe(C, project("p2")).await.unwrap());
    let handler = store.subscriptions_handler(C, server.clone()).unwrap();
    let sync = engine(&handler, ConflictResolutionStrategy::HighestVersionWins);

    sync.run().await.unwrap();
    assert_eq!(live(&store).await, ids(&["a1", "a2", "a3", "b1", "b2"]));
    let first = server.take_pulls();
    // Pages of two (the batch size): p1 takes two pulls, then p2.
    assert_eq!(pulled(&first, &project("p1")), ids(&["a1", "a2", "a3"]));
    assert_eq!(pulled(&first, &project("p2")), ids(&["b1", "b2"]));
    assert!(first.iter().all(|pull| pull.key != project("p3").key()));
    let cursor = stored_cursor(&store).await;
    assert!(
        cursor.get("work").is_none(),
        "stored without work: {cursor}"
    );
    let subs = cursor["subs"].as_object().unwrap();
    assert_eq!(subs.len(), 2, "{cursor}");
    assert!(subs.values().all(|position| position["done"] == false));

    server.put("a4", task("p1", "ann"));
    server.put("b3", task("p2", "ann"));
    server.put("c2", task("p3", "ann"));
    sync.sync_now().await.unwrap();
    let second = server.take_pulls();
    // Each subscription from its own position, and only its new row.
    assert!(!second.is_empty());
    for pull in &second {
        let after = if pull.key == project("p1").key() {
            a3.sync_id.0
        } else {
            b2.sync_id.0
        };
        assert!(pull.after >= after, "{pull:?}");
    }
    assert_eq!(pulled(&second, &project("p1")), ids(&["a4"]));
    assert_eq!(pulled(&second, &project("p2")), ids(&["b3"]));
    assert_eq!(
        live(&store).await,
        ids(&["a1", "a2", "a3", "a4", "b1", "b2", "b3"])
    );
    sync.dispose().await;
}

#[tokio::test]
async fn subscriptions_added_and_dropped_at_runtime_change_what_the_store_holds() {
    let server = Server::default();
    server.put("t1", task("p1", "ann"));
    server.put("t2", task("p1", "bob"));
    server.put("t3", task("p2", "ann"));
    server.put("t4", task("p2", "bob"));
    server.put("t5", task("p2", "bob"));
    let store = SqliteStore::open_in_memory().await.unwrap();
    store.subscribe(C, project("p1")).await.unwrap();
    let handler = store.subscriptions_handler(C, server.clone()).unwrap();
    let sync = engine(&handler, ConflictResolutionStrategy::HighestVersionWins);
    sync.run().await.unwrap();
    assert_eq!(live(&store).await, ids(&["t1", "t2"]));

    // Added on the running FeroSync: pulled from its beginning by the next run.
    server.take_pulls();
    store.subscribe(C, project("p2")).await.unwrap();
    sync.sync_now().await.unwrap();
    let pulls = server.take_pulls();
    let p2: Vec<&Pull> = pulls
        .iter()
        .filter(|pull| pull.key == project("p2").key())
        .collect();
    assert_eq!(p2[0].after, 0, "{pulls:?}");
    assert_eq!(pulled(&pulls, &project("p2")), ids(&["t3", "t4", "t5"]));
    assert_eq!(pulled(&pulls, &project("p1")), Vec::<String>::new());
    assert_eq!(live(&store).await, ids(&["t1", "t2", "t3", "t4", "t5"]));

    store.subscribe(C, assignee("ann")).await.unwrap();
    sync.sync_now().await.unwrap();
    assert_eq!(
        pulled(&server.take_pulls(), &assignee("ann")),
        ids(&["t1", "t3"])
    );

    store
        .put(
            C,
            "t4",
            json!({ "project": "p2", "assignee": "bob", "done": true }),
        )
        .await
        .unwrap();
    let report = store.unsubscribe(C, &project("p2")).await.unwrap();
    assert_eq!(
        report,
        UnsubscribeReport {
            existed: true,
            removed: 1,       // t5
            kept_pending: 1,  // t4, edited here and not pushed yet
            still_covered: 1  // t3, ann's too
        }
    );
    assert_eq!(live(&store).await, ids(&["t1", "t2", "t3", "t4"]));
    assert_eq!(store.get_including_deleted(C, "t5").await.unwrap(), None);
    assert_eq!(store.outbox(C).await.unwrap().len(), 1);

    sync.sync_now().await.unwrap();
    let pulls = server.take_pulls();
    assert!(pulls.iter().all(|pull| pull.key != project("p2").key()));
    assert!(store.outbox(C).await.unwrap().is_empty(), "t4 was pushed");
    assert_eq!(server.current("t4").unwrap().data["done"], true);
    assert_eq!(live(&store).await, ids(&["t1", "t2", "t3", "t4"]));
    let cursor = stored_cursor(&store).await;
    assert!(
        cursor["subs"].get(project("p2").key()).is_none(),
        "{cursor}"
    );

    assert_eq!(
        store.unsubscribe(C, &project("p2")).await.unwrap(),
        UnsubscribeReport::default()
    );
    assert_eq!(
        store.subscriptions(C).await.unwrap(),
        vec![assignee("ann"), project("p1")]
    );
    sync.dispose().await;
}

#[tokio::test]
async fn a_removal_keeps_a_row_another_subscription_covers_and_removes_one_none_covers() {
    let server = Server::default();
    server.put("t1", task("p1", "ann"));
    server.put("t2", task("p1", "bob"));
    server.put("t3", task("p1", "bob"));
    let store = SqliteStore::open_in_memory().await.unwrap();
    store.subscribe(C, project("p1")).await.unwrap();
    store.subscribe(C, assignee("ann")).await.unwrap();
    let handler = store.subscriptions_handler(C, server.clone()).unwrap();
    let sync = engine(&handler, ConflictResolutionStrategy::ServerWins);
    let mut events = sync.event_stream();
    sync.run().await.unwrap();
    assert_eq!(live(&store).await, ids(&["t1", "t2", "t3"]));

    // t1 leaves p1 (ann still covers it) while edited here: under ServerWins, a removal that
    // reached the engine's conflict handling would drop the edit. It is the only change, so the
    // pull ends on an empty page: its checkpoint's save records that p1 let go of t1.
    let edit = json!({ "project": "p1", "assignee": "ann", "title": "mine" });
    store.put(C, "t1", edit.clone()).await.unwrap();
    server.revoke(&project("p1"), "t1");
    sync.sync_now().await.unwrap();
    let t1 = store.get(C, "t1").await.unwrap().expect("t1 stays");
    assert_eq!(t1.data, edit);
    assert!(store.conflict_log().await.unwrap().is_empty());
    assert_eq!(
        server.current("t1").unwrap().data,
        edit,
        "the edit was pushed"
    );

    // t2 leaves p1, and nothing else covers it.
    server.revoke(&project("p1"), "t2");
    sync.sync_now().await.unwrap();
    assert_eq!(store.get(C, "t2").await.unwrap(), None, "t2 is removed");
    assert!(
        store
            .get_including_deleted(C, "t2")
            .await
            .unwrap()
            .unwrap()
            .deleted
    );
    assert_eq!(live(&store).await, ids(&["t1", "t3"]));

    // p1 let go of t1, so t1 is ann's alone: dropping ann removes it.
    let report = store.unsubscribe(C, &assignee("ann")).await.unwrap();
    assert_eq!((report.removed, report.still_covered), (1, 0), "{report:?}");
    assert_eq!(live(&store).await, ids(&["t3"]));

    // A removal of a row edited here that nothing else covers goes through the conflict path:
    // under ServerWins the edit is dropped, and recorded in the conflict log.
    store
        .put(
            C,
            "t3",
            json!({ "project": "p1", "assignee": "bob", "title": "mine" }),
        )
        .await
        .unwrap();
    server.put("t3", task("p2", "bob"));
    sync.sync_now().await.unwrap();
    assert_eq!(store.get(C, "t3").await.unwrap(), None);
    let log = store.conflict_log().await.unwrap();
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0].id, "t3");

    sync.dispose().await;
    let mut conflicts = Vec::new();
    while let Some(event) = events.next().await {
        if let Ok(SyncEvent::ConflictResolved(conflict)) = event {
            conflicts.push(conflict.id);
        }
    }
    assert_eq!(
        conflicts,
        ["t3"],
        "t1's removal never reached the conflict handling"
    );
}

#[tokio::test]
async fn a_removal_withheld_for_a_covered_row_never_reaches_the_conflict_handling() {
    let server = Server::default();
    server.put("t1", task("p1", "ann"));
    let store = SqliteStore::open_in_memory().await.unwrap();
    store.subscribe(C, project("p1")).await.unwrap();
    store.subscribe(C, assignee("ann")).await.unwrap();
    let handler = store.subscriptions_handler(C, server.clone()).unwrap();
    let sync = engine(&handler, ConflictResolutionStrategy::ServerWins);
    let mut events = sync.event_stream();
    sync.run().await.unwrap();

    // Edited here on version 1; on the server t1 goes to bob (version 2): ann, pulled first,
    // gets a removal, p1 the new state. Only p1's page is a conflict for the engine.
    store
        .put(
            C,
            "t1",
            json!({ "project": "p1", "assignee": "ann", "title": "mine" }),
        )
        .await
        .unwrap();
    let theirs = server.put("t1", task("p1", "bob"));
    sync.sync_now().await.unwrap();
    let t1 = store.get(C, "t1").await.unwrap().unwrap();
    assert_eq!((t1.data, t1.version), (theirs.data, theirs.version));
    assert_eq!(store.conflict_log().await.unwrap().len(), 1);

    sync.dispose().await;
    let mut conflicts = Vec::new();
    while let Some(event) = events.next().await {
        if let Ok(SyncEvent::ConflictResolved(conflict)) = event {
            conflicts.push((conflict.id, conflict.server_version));
        }
    }
    assert_eq!(
        conflicts,
        [("t1".to_owned(), Some(theirs.version))],
        "one conflict, with p1's state; ann's removal was withheld"
    );
}

#[tokio::test]
async fn a_removal_passed_on_is_dropped_when_an_earlier_page_of_the_pull_covers_the_row() {
    let server = Server::default();
    server.put("t1", task("p1", "ann"));
    let store = SqliteStore::open_in_memory().await.unwrap();
    store.subscribe(C, project("p1")).await.unwrap();
    let handler = store.subscriptions_handler(C, server.clone()).unwrap();
    let sync = engine(&handler, ConflictResolutionStrategy::HighestVersionWins);
    sync.run().await.unwrap();
    sync.dispose().await;
    let saved = store
        .metadata_repo()
        .checkpoint(&FeatureKey::new(C))
        .await
        .unwrap();

    // ann's page brings t1; p1's page, fetched before ann's is applied (as the engine fetches
    // ahead), removes it: when that page was fetched, no other subscription tagged t1.
    store.subscribe(C, assignee("ann")).await.unwrap();
    let first = handler
        .fetch_remote_changes(saved.as_ref(), 10)
        .await
        .unwrap();
    assert!(first.has_more);
    server.revoke(&project("p1"), "t1");
    let second = handler
        .fetch_remote_changes(first.checkpoint.as_ref(), 10)
        .await
        .unwrap();
    let removal: Vec<(&str, bool)> = second
        .items
        .iter()
        .map(|p| (p.item.id.as_str(), p.item.data.is_null()))
        .collect();
    assert_eq!(removal, [("t1", true)], "passed on to the engine");
    for (page, number) in [(&first, 1), (&second, 2)] {
        handler
            .apply_remote_changes(
                RemoteChanges::from_items(page.items.clone()),
                &context(page, number),
            )
            .await
            .unwrap();
    }
    assert_eq!(live(&store).await, ids(&["t1"]), "ann covers t1");
    let report = store.unsubscribe(C, &project("p1")).await.unwrap();
    assert_eq!((report.removed, report.still_covered), (0, 0), "{report:?}");
}

#[tokio::test]
async fn a_row_deleted_on_the_server_is_deleted_locally_and_loses_its_tags() {
    let server = Server::default();
    server.put("t1", task("p1", "ann"));
    server.put("t2", task("p1", "ann"));
    let store = SqliteStore::open_in_memory().await.unwrap();
    store.subscribe(C, project("p1")).await.unwrap();
    store.subscribe(C, assignee("ann")).await.unwrap();
    let handler = store.subscriptions_handler(C, server.clone()).unwrap();
    let sync = engine(&handler, ConflictResolutionStrategy::HighestVersionWins);
    sync.run().await.unwrap();
    assert_eq!(live(&store).await, ids(&["t1", "t2"]));

    let tombstone = server.delete("t1");
    assert!(tombstone.data.is_object(), "a deletion keeps its data");
    sync.sync_now().await.unwrap();
    assert_eq!(live(&store).await, ids(&["t2"]));
    let t1 = store.get_including_deleted(C, "t1").await.unwrap().unwrap();
    assert!(t1.deleted);
    assert_eq!(t1.version, tombstone.version);

    // The deletion cleared t1's tags: dropping both subscriptions removes t2 only, and leaves
    // t1's tombstone.
    let first = store.unsubscribe(C, &project("p1")).await.unwrap();
    assert_eq!((first.removed, first.still_covered), (0, 1), "{first:?}");
    let second = store.unsubscribe(C, &assignee("ann")).await.unwrap();
    assert_eq!((second.removed, second.still_covered), (1, 0), "{second:?}");
    assert!(
        store
            .get_including_deleted(C, "t1")
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(store.get_including_deleted(C, "t2").await.unwrap(), None);
    sync.dispose().await;
}

#[tokio::test]
async fn subscriptions_and_their_checkpoints_survive_reopening_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("subs.db");
    let server = Server::default();
    server.put("t1", task("p1", "ann"));
    server.put("t2", task("p2", "bob"));
    {
        let store = SqliteStore::open(&path).await.unwrap();
        store.subscribe(C, project("p2")).await.unwrap();
        store.subscribe(C, project("p1")).await.unwrap();
        let handler = store.subscriptions_handler(C, server.clone()).unwrap();
        let sync = engine(&handler, ConflictResolutionStrategy::HighestVersionWins);
        sync.run().await.unwrap();
        sync.dispose().await;
    }
    server.take_pulls();
    server.put("t3", task("p1", "bob"));

    let store = SqliteStore::open(&path).await.unwrap();
    assert_eq!(
        store.subscriptions(C).await.unwrap(),
        vec![project("p1"), project("p2")]
    );
    let handler = store.subscriptions_handler(C, server.clone()).unwrap();
    let sync = engine(&handler, ConflictResolutionStrategy::HighestVersionWins);
    sync.run().await.unwrap();
    let pulls = server.take_pulls();
    assert_eq!(pulled(&pulls, &project("p1")), ids(&["t3"]), "{pulls:?}");
    assert_eq!(pulled(&pulls, &project("p2")), Vec::<String>::new());
    assert!(pulls.iter().all(|pull| pull.after > 0), "{pulls:?}");
    assert_eq!(live(&store).await, ids(&["t1", "t2", "t3"]));
    // The tags were kept too.
    let report = store.unsubscribe(C, &project("p1")).await.unwrap();
    assert_eq!(report.removed, 2);
    assert_eq!(live(&store).await, ids(&["t2"]));
    sync.dispose().await;
}

#[tokio::test]
async fn without_subscriptions_a_pull_asks_the_server_nothing() {
    let server = Server::default();
    server.put("t1", task("p1", "ann"));
    let store = SqliteStore::open_in_memory().await.unwrap();
    let handler = store.subscriptions_handler(C, server.clone()).unwrap();
    let page = handler.fetch_remote_changes(None, 10).await.unwrap();
    assert!(page.items.is_empty() && !page.has_more);
    let sync = engine(&handler, ConflictResolutionStrategy::HighestVersionWins);
    sync.run().await.unwrap();
    assert!(server.take_pulls().is_empty());
    assert!(live(&store).await.is_empty());
    sync.dispose().await;
}

/// The context the engine gives the apply of `page`.
fn context(page: &fero::SyncBatchResult<Document>, number: u64) -> ApplyContext {
    ApplyContext::new(
        FeatureKey::new(C),
        SyncKind::Background,
        page.checkpoint.clone(),
        number,
    )
}

#[tokio::test]
async fn a_page_fetched_before_an_unsubscribe_and_applied_after_writes_none_of_its_rows() {
    let server = Server::default();
    server.put("a1", task("p1", "ann"));
    server.put("a2", task("p1", "bob"));
    server.put("b1", task("p2", "bob"));
    let store = SqliteStore::open_in_memory().await.unwrap();
    store.subscribe(C, project("p1")).await.unwrap();
    store.subscribe(C, project("p2")).await.unwrap();
    let handler = store.subscriptions_handler(C, server.clone()).unwrap();

    let page = handler.fetch_remote_changes(None, 10).await.unwrap();
    assert_eq!(page.items.len(), 2, "p1's rows");
    assert!(page.has_more, "p2 is still to pull");
    let report = store.unsubscribe(C, &project("p1")).await.unwrap();
    assert_eq!(report.removed, 0, "nothing of p1 was applied yet");
    let changes = RemoteChanges::from_items(page.items.clone());
    let applied = handler
        .apply_remote_changes(changes, &context(&page, 1))
        .await
        .unwrap();
    assert!(applied.checkpoint_saved);
    assert!(live(&store).await.is_empty(), "p1's rows are not applied");
    let saved = store
        .metadata_repo()
        .checkpoint(&FeatureKey::new(C))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        saved.last_sync_id,
        page.checkpoint.as_ref().unwrap().last_sync_id
    );

    // The pull goes on with p2 only.
    let next = handler
        .fetch_remote_changes(Some(&saved), 10)
        .await
        .unwrap();
    assert_eq!(next.items.len(), 1);
    assert!(!next.has_more);
    assert!(next.checkpoint.as_ref().unwrap().last_sync_id > saved.last_sync_id);
    handler
        .apply_remote_changes(
            RemoteChanges::from_items(next.items.clone()),
            &context(&next, 2),
        )
        .await
        .unwrap();
    assert_eq!(live(&store).await, ids(&["b1"]));
    let cursor = stored_cursor(&store).await;
    assert!(
        cursor["subs"].get(project("p1").key()).is_none(),
        "{cursor}"
    );
}

#[tokio::test]
async fn an_unsubscribe_during_a_pull_keeps_the_fetched_page_of_that_subscription_out() {
    let server = Server::default();
    server.put("a1", task("p1", "ann"));
    server.put("b1", task("p2", "bob"));
    let store = SqliteStore::open_in_memory().await.unwrap();
    store.subscribe(C, project("p1")).await.unwrap();
    store.subscribe(C, project("p2")).await.unwrap();
    let handler = store.subscriptions_handler(C, server.clone()).unwrap();
    let sync = engine(&handler, ConflictResolutionStrategy::HighestVersionWins);
    // The server has answered p1's page; the app unsubscribes before FeroSync applies it.
    let unsubscriber = store.clone();
    server.on_pull(
        &project("p1"),
        Box::new(move || {
            Box::pin(async move {
                unsubscriber.unsubscribe(C, &project("p1")).await.unwrap();
            })
        }),
    );
    sync.run().await.unwrap();
    assert_eq!(live(&store).await, ids(&["b1"]));
    assert_eq!(store.subscriptions(C).await.unwrap(), vec![project("p2")]);
    sync.dispose().await;
}

#[tokio::test]
async fn a_withheld_removal_is_applied_when_the_row_lost_its_other_cover_before_the_apply() {
    let server = Server::default();
    server.put("t1", task("p1", "ann"));
    let store = SqliteStore::open_in_memory().await.unwrap();
    store.subscribe(C, project("p1")).await.unwrap();
    store.subscribe(C, assignee("ann")).await.unwrap();
    let handler = store.subscriptions_handler(C, server.clone()).unwrap();
    let sync = engine(&handler, ConflictResolutionStrategy::HighestVersionWins);
    sync.run().await.unwrap();
    sync.dispose().await;
    let repo = store.metadata_repo();
    let saved = repo.checkpoint(&FeatureKey::new(C)).await.unwrap();

    server.revoke(&project("p1"), "t1");
    server.put("t9", task("p1", "bob"));
    // ann has nothing new; p1's page holds t1's removal, withheld (ann covers t1), and t9.
    let page = handler
        .fetch_remote_changes(saved.as_ref(), 10)
        .await
        .unwrap();
    let items: Vec<&str> = page.items.iter().map(|p| p.item.id.as_str()).collect();
    assert_eq!(items, ["t9"], "the removal is kept from the engine");
    // ann goes before the page is applied: nothing covers t1 any more.
    let report = store.unsubscribe(C, &assignee("ann")).await.unwrap();
    assert_eq!(report.still_covered, 1, "p1 still tags t1 until the page");
    handler
        .apply_remote_changes(
            RemoteChanges::from_items(page.items.clone()),
            &context(&page, 1),
        )
        .await
        .unwrap();
    assert_eq!(live(&store).await, ids(&["t9"]));
    assert!(
        store
            .get_including_deleted(C, "t1")
            .await
            .unwrap()
            .unwrap()
            .deleted
    );
}
