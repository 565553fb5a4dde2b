//! Push: accepted writes raise the version, a stale base is a conflict carrying the server's
//! row, a replay after a lost response gets the original answer (not a conflict with itself),
//! and deletions are tombstones pulled like any change.

mod support;

use fero_protocol::ChangeOutcome;
use serde_json::json;
use support::{ALICE, accepted, change, deletion, pull, push, server};

#[tokio::test]
async fn an_accepted_change_gets_a_new_version_and_sync_id() {
    let server = server();
    let router = server.router();
    let created = push(
        &router,
        ALICE,
        "notes",
        vec![change("n1", None, "phone", 1, json!({ "t": "a" }))],
    )
    .await;
    assert_eq!(accepted(&created[0]), (1, 1));
    let updated = push(
        &router,
        ALICE,
        "notes",
        vec![change("n1", Some(1), "phone", 2, json!({ "t": "b" }))],
    )
    .await;
    assert_eq!(accepted(&updated[0]), (2, 2));
    assert_eq!(updated[0].id, "n1");
    assert_eq!(
        updated[0].mutation_id,
        fero_protocol::MutationId::new("phone", 2)
    );
    let page = pull(&router, ALICE, "notes", None, 10).await;
    assert_eq!(page.items.len(), 1);
    assert_eq!((page.items[0].version.0, page.items[0].sync_id.0), (2, 2));
    assert_eq!(page.items[0].data, json!({ "t": "b" }));
}

#[tokio::test]
async fn a_stale_base_version_is_a_conflict_with_the_current_document() {
    let server = server();
    let router = server.router();
    push(
        &router,
        ALICE,
        "notes",
        vec![change("n1", None, "phone", 1, json!("v1"))],
    )
    .await;
    push(
        &router,
        ALICE,
        "notes",
        vec![change("n1", Some(1), "phone", 2, json!("v2 from phone"))],
    )
    .await;
    let laptop = push(
        &router,
        ALICE,
        "notes",
        vec![change("n1", Some(1), "laptop", 1, json!("v2 from laptop"))],
    )
    .await;
    match &laptop[0].outcome {
        ChangeOutcome::Conflict {
            server: Some(current),
        } => {
            assert_eq!(current.version.0, 2);
            assert_eq!(current.data, json!("v2 from phone"));
        }
        other => panic!("expected a conflict with the current row, got {other:?}"),
    }
    let create_again = push(
        &router,
        ALICE,
        "notes",
        vec![change("n1", None, "tablet", 1, json!("new"))],
    )
    .await;
    assert!(matches!(
        &create_again[0].outcome,
        ChangeOutcome::Conflict { server: Some(_) }
    ));
    let page = pull(&router, ALICE, "notes", None, 10).await;
    assert_eq!(
        page.items[0].data,
        json!("v2 from phone"),
        "conflicts write nothing"
    );
}

#[tokio::test]
async fn a_replayed_change_with_a_now_stale_base_gets_its_original_acceptance() {
    let server = server();
    let router = server.router();
    let original = change("n1", None, "phone", 7, json!("hello"));
    let first = push(&router, ALICE, "notes", vec![original.clone()]).await;
    assert_eq!(accepted(&first[0]), (1, 1));
    // The response was lost on the way back; the phone sends the very same change again. Its
    // base (None: create) is stale now, yet the answer is the original acceptance.
    let replay = push(&router, ALICE, "notes", vec![original]).await;
    assert_eq!(replay, first);
    // An update replayed after another device wrote on top of it: still the original answer.
    let update = change("n1", Some(1), "phone", 8, json!("hello again"));
    let first = push(&router, ALICE, "notes", vec![update.clone()]).await;
    push(
        &router,
        ALICE,
        "notes",
        vec![change("n1", Some(2), "laptop", 1, json!("laptop"))],
    )
    .await;
    let replay = push(&router, ALICE, "notes", vec![update]).await;
    assert_eq!(replay, first);
    assert_eq!(accepted(&replay[0]), (2, 2));
    let page = pull(&router, ALICE, "notes", None, 10).await;
    assert_eq!(
        (page.items[0].version.0, &page.items[0].data),
        (3, &json!("laptop")),
        "the replay wrote nothing"
    );
}

#[tokio::test]
async fn a_deletion_is_pulled_as_a_tombstone_with_a_new_version() {
    let server = server();
    let router = server.router();
    push(
        &router,
        ALICE,
        "notes",
        vec![change("n1", None, "phone", 1, json!({ "t": "bye" }))],
    )
    .await;
    let first = pull(&router, ALICE, "notes", None, 10).await;
    let deleted = push(&router, ALICE, "notes", vec![deletion("n1", 1, "phone", 2)]).await;
    assert_eq!(accepted(&deleted[0]), (2, 2));
    let next = pull(&router, ALICE, "notes", Some(&first.checkpoint), 10).await;
    assert_eq!(
        next.items.len(),
        1,
        "the tombstone is a change after the checkpoint"
    );
    let tombstone = &next.items[0];
    assert!(tombstone.deleted);
    assert_eq!((tombstone.version.0, tombstone.sync_id.0), (2, 2));
    assert_eq!(
        tombstone.data,
        json!({ "t": "bye" }),
        "a tombstone keeps its last data"
    );
    let stale_edit = push(
        &router,
        ALICE,
        "notes",
        vec![change("n1", Some(1), "laptop", 1, json!("edit"))],
    )
    .await;
    match &stale_edit[0].outcome {
        ChangeOutcome::Conflict {
            server: Some(current),
        } => assert!(current.deleted),
        other => panic!(
            "an edit on the pre-deletion version conflicts with the tombstone, got {other:?}"
        ),
    }
}
