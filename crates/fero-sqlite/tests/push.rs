//! Listing and pushing local edits: mutation ids, recording the server's answers, the outbox
//! emptied only by a recorded answer, conflict bases and discarding.

mod support;

use fero::{BackgroundSyncHandler, InitialSyncHandler, LocalItem, SyncId, Version};
use fero_sqlite::{CollectionSync, SqliteStore};
use serde_json::json;
use support::{FakeRemote, page_context, transient};

const C: &str = "notes";

async fn synced(ids: &[&str]) -> (SqliteStore, FakeRemote, CollectionSync<FakeRemote>) {
    let store = SqliteStore::open_in_memory().await.unwrap();
    let remote = FakeRemote::new();
    for id in ids {
        remote.write(C, id, json!({ "id": id, "rev": 0 }));
    }
    let handler = store.sync_handler(C, remote.clone()).unwrap();
    let page = handler.fetch_remote_data(None, 100).await.unwrap();
    let cp = page.checkpoint.clone().unwrap();
    handler
        .save_to_local(page.items, &page_context(C, 1, cp.last_sync_id.0))
        .await
        .unwrap();
    (store, remote, handler)
}

#[tokio::test]
async fn locally_modified_lists_pending_documents_oldest_edit_first() {
    let (store, _remote, handler) = synced(&["a", "b", "c"]).await;
    store.put(C, "c", json!({"rev": 1})).await.unwrap();
    store.put(C, "new", json!({"rev": 1})).await.unwrap();
    store.delete(C, "a").await.unwrap();
    // A second edit does not move a document's place: it is pending since its first edit.
    store.put(C, "c", json!({"rev": 2})).await.unwrap();
    let listed = handler.get_locally_modified().await.unwrap();
    let ids: Vec<&str> = listed.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["c", "new", "a"]);
    assert!(listed.iter().all(|d| d.locally_modified()));
    assert!(listed[2].deleted);
    assert_eq!(listed[0].data, json!({"rev": 2}));
}

#[tokio::test]
async fn an_accepted_push_records_the_server_version_and_empties_the_outbox() {
    let (store, remote, handler) = synced(&["a", "b"]).await;
    store.put(C, "a", json!({"rev": 1})).await.unwrap();
    store.put(C, "a", json!({"rev": 2})).await.unwrap();
    store.put(C, "new", json!({"rev": 1})).await.unwrap();
    let listed = handler.get_locally_modified().await.unwrap();
    let result = handler.push_local_changes(&listed).await.unwrap();
    assert_eq!(result.accepted.len(), 2);
    assert!(result.conflicts.is_empty() && result.rejected.is_empty());
    // One change per document: its newest state, with the newest entry's mutation id.
    let pushed = &remote.pushes()[0];
    assert_eq!(pushed.changes.len(), 2);
    assert_eq!(pushed.changes[0].id, "a");
    assert_eq!(pushed.changes[0].base_version, Some(Version(1)));
    assert_eq!(pushed.changes[0].data, json!({"rev": 2}));
    assert_eq!(pushed.changes[1].base_version, None);
    assert_eq!(pushed.changes[0].mutation_id.device, store.device_id());
    let a = store.get(C, "a").await.unwrap().unwrap();
    assert_eq!(a.version, Version(2));
    assert_eq!(LocalItem::base_version(&a), Some(Version(2)));
    assert_eq!(a.sync_id, Some(remote.get(C, "a").unwrap().sync_id));
    assert!(!a.locally_modified);
    assert_eq!(a.mutation_seq, None);
    assert!(store.outbox(C).await.unwrap().is_empty());
    assert!(handler.get_locally_modified().await.unwrap().is_empty());
    assert_eq!(store.digest(C).await.unwrap().count(), 3);
    assert!(handler.verify().await.unwrap().is_match());
}

#[tokio::test]
async fn a_push_that_fails_leaves_the_outbox_and_the_edits_untouched() {
    let (store, remote, handler) = synced(&["a"]).await;
    store.put(C, "a", json!({"rev": 1})).await.unwrap();
    let outbox = store.outbox(C).await.unwrap();
    remote.fail_next_push(transient(C, "503 from the load balancer"));
    let listed = handler.get_locally_modified().await.unwrap();
    let err = handler.push_local_changes(&listed).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert_eq!(store.outbox(C).await.unwrap(), outbox);
    assert_eq!(handler.get_locally_modified().await.unwrap(), listed);
}

#[tokio::test]
async fn a_retried_push_of_the_same_state_carries_the_same_mutation_id() {
    let (store, remote, handler) = synced(&["a"]).await;
    store.put(C, "a", json!({"rev": 1})).await.unwrap();
    // The server commits, the answer is lost.
    remote.lose_next_push_answer();
    let listed = handler.get_locally_modified().await.unwrap();
    assert!(handler.push_local_changes(&listed).await.is_err());
    assert_eq!(store.outbox(C).await.unwrap().len(), 1);
    // A restart in between changes nothing: the id comes from the stored outbox entry.
    let listed = handler.get_locally_modified().await.unwrap();
    let result = handler.push_local_changes(&listed).await.unwrap();
    let pushes = remote.pushes();
    assert_eq!(pushes.len(), 2);
    assert_eq!(
        pushes[0].changes[0].mutation_id,
        pushes[1].changes[0].mutation_id
    );
    // The server answered the replay with its original result, not a conflict with itself.
    assert_eq!(result.accepted.len(), 1);
    assert!(result.conflicts.is_empty());
    assert_eq!(remote.get(C, "a").unwrap().version, Version(2));
    let a = store.get(C, "a").await.unwrap().unwrap();
    assert_eq!((a.version, a.locally_modified), (Version(2), false));
    assert!(store.outbox(C).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_push_sends_the_newest_stored_state_for_an_older_listing() {
    let (store, remote, handler) = synced(&["a"]).await;
    store.put(C, "a", json!({"rev": 1})).await.unwrap();
    let stale_listing = handler.get_locally_modified().await.unwrap();
    store.put(C, "a", json!({"rev": 2})).await.unwrap();
    let result = handler.push_local_changes(&stale_listing).await.unwrap();
    assert_eq!(result.accepted.len(), 1);
    assert_eq!(remote.get(C, "a").unwrap().data, json!({"rev": 2}));
    // Both entries leave: the pushed state includes both edits.
    assert!(store.outbox(C).await.unwrap().is_empty());
    assert!(!store.get(C, "a").await.unwrap().unwrap().locally_modified);
}

#[tokio::test]
async fn an_edit_made_while_the_push_is_in_flight_stays_pending() {
    // A remote that edits the document locally while the push request is on the wire.
    #[derive(Clone)]
    struct EditingRemote {
        inner: FakeRemote,
        store: SqliteStore,
    }
    #[fero::async_trait]
    impl fero_protocol::Remote for EditingRemote {
        async fn pull(
            &self,
            collection: &str,
            request: &fero_protocol::PullRequest,
        ) -> Result<fero_protocol::PullResponse, fero_protocol::RemoteError> {
            self.inner.pull(collection, request).await
        }
        async fn push(
            &self,
            collection: &str,
            request: &fero_protocol::PushRequest,
        ) -> Result<fero_protocol::PushResponse, fero_protocol::RemoteError> {
            let answer = self.inner.push(collection, request).await;
            self.store
                .put(collection, "a", json!({"rev": "during push"}))
                .await
                .unwrap();
            answer
        }
        async fn digest(
            &self,
            collection: &str,
        ) -> Result<fero_protocol::DigestResponse, fero_protocol::RemoteError> {
            self.inner.digest(collection).await
        }
    }
    let (store, remote, _) = synced(&["a"]).await;
    let handler = store
        .sync_handler(
            C,
            EditingRemote {
                inner: remote.clone(),
                store: store.clone(),
            },
        )
        .unwrap();
    store.put(C, "a", json!({"rev": 1})).await.unwrap();
    let listed = handler.get_locally_modified().await.unwrap();
    let result = handler.push_local_changes(&listed).await.unwrap();
    assert_eq!(result.accepted[0].version, Version(2));
    let a = store.get(C, "a").await.unwrap().unwrap();
    assert!(a.locally_modified);
    assert_eq!(a.data, json!({"rev": "during push"}));
    assert_eq!(LocalItem::base_version(&a), Some(Version(2)));
    assert_eq!(a.version, Version(3));
    let outbox = store.outbox(C).await.unwrap();
    assert_eq!(outbox.len(), 1);
    assert_eq!(outbox[0].data, json!({"rev": "during push"}));
    // Its base copy is the pushed (accepted) state, for a three-way merge.
    let base = handler.conflict_base(&a).await.unwrap().unwrap();
    assert_eq!((base.version, base.data), (Version(2), json!({"rev": 1})));
    // The next push rests on the accepted version and is accepted too.
    let listed = handler.get_locally_modified().await.unwrap();
    let inner_handler = store.sync_handler(C, remote.clone()).unwrap();
    let again = inner_handler.push_local_changes(&listed).await.unwrap();
    assert_eq!(again.accepted[0].version, Version(3));
    assert!(store.outbox(C).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_conflict_carries_the_server_document_and_writes_nothing() {
    let (store, remote, handler) = synced(&["a"]).await;
    let theirs = remote.write(C, "a", json!({"rev": "theirs"}));
    store.put(C, "a", json!({"rev": "mine"})).await.unwrap();
    let outbox = store.outbox(C).await.unwrap();
    let listed = handler.get_locally_modified().await.unwrap();
    let result = handler.push_local_changes(&listed).await.unwrap();
    assert!(result.accepted.is_empty());
    assert_eq!(result.conflicts.len(), 1);
    let server = result.conflicts[0].server.clone().unwrap();
    assert_eq!(server.item, theirs);
    assert!(!server.deleted);
    assert_eq!(store.outbox(C).await.unwrap(), outbox);
    let a = store.get(C, "a").await.unwrap().unwrap();
    assert_eq!(a.data, json!({"rev": "mine"}));
    assert!(a.locally_modified);
}

#[tokio::test]
async fn a_rejected_change_carries_the_reason_and_stays_pending() {
    let (store, remote, handler) = synced(&["a", "b"]).await;
    remote.reject("a");
    store.put(C, "a", json!({"rev": "bad"})).await.unwrap();
    store.put(C, "b", json!({"rev": "good"})).await.unwrap();
    let listed = handler.get_locally_modified().await.unwrap();
    let result = handler.push_local_changes(&listed).await.unwrap();
    assert_eq!(result.rejected.len(), 1);
    assert_eq!(result.rejected[0].id, "a");
    assert_eq!(result.rejected[0].reason, "invalid: rejected by validation");
    assert_eq!(result.accepted.len(), 1);
    let outbox = store.outbox(C).await.unwrap();
    assert_eq!(outbox.len(), 1);
    assert_eq!(outbox[0].id, "a");
}

#[tokio::test]
async fn a_pushed_deletion_leaves_a_synced_tombstone() {
    let (store, remote, handler) = synced(&["a", "b"]).await;
    store.delete(C, "a").await.unwrap();
    let listed = handler.get_locally_modified().await.unwrap();
    let result = handler.push_local_changes(&listed).await.unwrap();
    assert_eq!(result.accepted.len(), 1);
    assert!(remote.pushes()[0].changes[0].deleted);
    assert!(remote.get(C, "a").unwrap().deleted);
    let a = store.get_including_deleted(C, "a").await.unwrap().unwrap();
    assert!(a.deleted && !a.locally_modified);
    assert_eq!(a.base_version, Some(Version(2)));
    assert!(handler.verify().await.unwrap().is_match());
}

#[tokio::test]
async fn conflict_base_returns_the_server_state_the_edit_rests_on() {
    let (store, _remote, handler) = synced(&["a"]).await;
    let edited = store.put(C, "a", json!({"rev": 1})).await.unwrap();
    let base = handler.conflict_base(&edited).await.unwrap().unwrap();
    assert_eq!(base.id, "a");
    assert_eq!(base.version, Version(1));
    assert_eq!(base.sync_id, SyncId(1));
    assert_eq!(base.data, json!({"id": "a", "rev": 0}));
    let new = store.put(C, "new", json!({"rev": 1})).await.unwrap();
    assert_eq!(handler.conflict_base(&new).await.unwrap(), None);
}

#[tokio::test]
async fn discarding_a_local_change_restores_the_base_copy() {
    let (store, _remote, handler) = synced(&["a"]).await;
    store.put(C, "a", json!({"rev": 1})).await.unwrap();
    store.delete(C, "a").await.unwrap();
    store.put(C, "new", json!({"rev": 1})).await.unwrap();
    handler.discard_local_change("a").await.unwrap();
    handler.discard_local_change("new").await.unwrap();
    let a = store.get(C, "a").await.unwrap().unwrap();
    assert_eq!(a.data, json!({"id": "a", "rev": 0}));
    assert_eq!(a.version, Version(1));
    assert!(!a.locally_modified && !a.deleted);
    assert_eq!(store.get_including_deleted(C, "new").await.unwrap(), None);
    assert!(store.outbox(C).await.unwrap().is_empty());
    // Discarding what is not pending changes nothing.
    handler.discard_local_change("a").await.unwrap();
    assert_eq!(store.get(C, "a").await.unwrap().unwrap(), a);
}

#[tokio::test]
async fn pending_edits_survive_reopening_and_push_with_their_original_mutation_ids() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("push.db");
    let remote = FakeRemote::new();
    let outbox = {
        let store = SqliteStore::open(&path).await.unwrap();
        store.put(C, "a", json!({"rev": 1})).await.unwrap();
        store.put(C, "b", json!({"rev": 1})).await.unwrap();
        store.outbox(C).await.unwrap()
    };
    let store = SqliteStore::open(&path).await.unwrap();
    let handler = store.sync_handler(C, remote.clone()).unwrap();
    let listed = handler.get_locally_modified().await.unwrap();
    assert_eq!(listed.len(), 2);
    handler.push_local_changes(&listed).await.unwrap();
    let sent: Vec<_> = remote.pushes()[0]
        .changes
        .iter()
        .map(|c| c.mutation_id.clone())
        .collect();
    let stored: Vec<_> = outbox.into_iter().map(|e| e.mutation_id).collect();
    assert_eq!(sent, stored);
}

#[tokio::test]
async fn an_answer_for_a_change_that_was_not_sent_records_nothing() {
    /// A server that answers every push with a result for another id.
    #[derive(Clone)]
    struct ConfusedRemote(FakeRemote);
    #[fero::async_trait]
    impl fero_protocol::Remote for ConfusedRemote {
        async fn pull(
            &self,
            collection: &str,
            request: &fero_protocol::PullRequest,
        ) -> Result<fero_protocol::PullResponse, fero_protocol::RemoteError> {
            self.0.pull(collection, request).await
        }
        async fn push(
            &self,
            collection: &str,
            request: &fero_protocol::PushRequest,
        ) -> Result<fero_protocol::PushResponse, fero_protocol::RemoteError> {
            let mut answer = self.0.push(collection, request).await?;
            answer.results[0].id = "someone-else".into();
            Ok(answer)
        }
        async fn digest(
            &self,
            collection: &str,
        ) -> Result<fero_protocol::DigestResponse, fero_protocol::RemoteError> {
            self.0.digest(collection).await
        }
    }
    let (store, remote, _) = synced(&["a"]).await;
    let handler = store.sync_handler(C, ConfusedRemote(remote)).unwrap();
    store.put(C, "a", json!({"rev": 1})).await.unwrap();
    let outbox = store.outbox(C).await.unwrap();
    let listed = handler.get_locally_modified().await.unwrap();
    let err = handler.push_local_changes(&listed).await.unwrap_err();
    assert!(
        matches!(
            support::sqlite_error(&err),
            fero_sqlite::Error::UnexpectedPushResult { id, sent: 1, .. } if id == "someone-else"
        ),
        "{err}"
    );
    assert_eq!(store.outbox(C).await.unwrap(), outbox);
    assert_eq!(handler.get_locally_modified().await.unwrap(), listed);
}
