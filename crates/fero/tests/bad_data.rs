//! Bad data from a server gets a typed error and leaves local state and the checkpoint untouched.

mod support;

use std::sync::{Arc, Mutex};

use fero::memory::{MemoryStore, Record};
use fero::{
    ApplyContext, ApplyResult, FeatureSyncConfig, FeroSync, HandlerResult,
    InMemorySyncMetadataRepo, InitialSyncHandler, ProtocolError, SyncBatchResult, SyncCheckpoint,
    SyncId, SyncMetadataRepo, SyncPayload, Version,
};

/// Serves scripted pages and records what was applied.
#[derive(Debug, Clone, Default)]
struct Scripted {
    pages: Arc<Mutex<Vec<SyncBatchResult<Record>>>>,
    applied: Arc<Mutex<Vec<String>>>,
}

#[fero::async_trait]
impl InitialSyncHandler for Scripted {
    type Item = Record;
    async fn fetch_remote_data(
        &self,
        _: Option<&SyncCheckpoint>,
        _: usize,
    ) -> HandlerResult<SyncBatchResult<Record>> {
        let mut pages = self.pages.lock().unwrap();
        Ok(if pages.is_empty() {
            SyncBatchResult::empty()
        } else {
            pages.remove(0)
        })
    }
    async fn save_to_local(
        &self,
        items: Vec<SyncPayload<Record>>,
        _: &ApplyContext,
    ) -> HandlerResult<ApplyResult> {
        let mut applied = self.applied.lock().unwrap();
        applied.extend(items.iter().map(|p| p.item.id.clone()));
        Ok(ApplyResult::applied(items.len()))
    }
}

fn rec(id: &str, sync_id: u64) -> SyncPayload<Record> {
    SyncPayload::new(Record {
        id: id.into(),
        sync_id: SyncId(sync_id),
        version: Version(1),
        data: serde_json::json!({}),
    })
}

async fn run_pages(
    pages: Vec<SyncBatchResult<Record>>,
) -> (Arc<fero::Error>, Scripted, Option<SyncCheckpoint>) {
    let handler = Scripted::default();
    *handler.pages.lock().unwrap() = pages;
    let repo = Arc::new(InMemorySyncMetadataRepo::new());
    let sync = FeroSync::builder()
        .metadata_repo_arc(repo.clone())
        .initial_sync(
            "items",
            handler.clone(),
            FeatureSyncConfig::new().batch_size(3),
        )
        .build()
        .unwrap();
    let err = sync.run().await.unwrap_err();
    let inner = match err {
        fero::Error::FeaturesFailed { report } => match &report.outcomes[0].result {
            fero::FeatureResult::Failed(e) => e.clone(),
            other => panic!("expected a failure, got {other:?}"),
        },
        other => panic!("expected FeaturesFailed, got {other}"),
    };
    let cp = repo.checkpoint(&"items".into()).await.unwrap();
    (inner, handler, cp)
}

#[tokio::test(start_paused = true)]
async fn a_checkpoint_going_backwards_is_refused_after_the_good_pages() {
    let (err, handler, cp) = run_pages(vec![
        SyncBatchResult::page(
            vec![rec("a", 10), rec("b", 11)],
            SyncCheckpoint::at(SyncId(11)),
        ),
        SyncBatchResult::page(vec![rec("c", 5)], SyncCheckpoint::at(SyncId(5))),
    ])
    .await;
    assert!(matches!(
        &*err,
        fero::Error::Protocol {
            page: 2,
            source: ProtocolError::CheckpointWentBackwards { .. },
            ..
        }
    ));
    assert!(
        err.to_string()
            .contains("went backwards from sync_id 11 to 5"),
        "{err}"
    );
    assert_eq!(*handler.applied.lock().unwrap(), ["a", "b"]);
    assert_eq!(cp, Some(SyncCheckpoint::at(SyncId(11))));
}

#[tokio::test(start_paused = true)]
async fn a_page_with_duplicate_ids_is_not_applied() {
    let (err, handler, cp) = run_pages(vec![SyncBatchResult::page(
        vec![rec("a", 1), rec("a", 2)],
        SyncCheckpoint::at(SyncId(2)),
    )])
    .await;
    assert!(
        matches!(
            &*err,
            fero::Error::Protocol {
                source: ProtocolError::DuplicateId { .. },
                ..
            }
        ),
        "{err}"
    );
    assert!(handler.applied.lock().unwrap().is_empty());
    assert_eq!(cp, None);
}

#[tokio::test(start_paused = true)]
async fn a_page_larger_than_asked_for_or_with_an_empty_id_is_not_applied() {
    let (err, handler, _) = run_pages(vec![SyncBatchResult::last(vec![
        rec("a", 1),
        rec("b", 2),
        rec("c", 3),
        rec("d", 4),
    ])])
    .await;
    assert!(matches!(
        &*err,
        fero::Error::Protocol {
            source: ProtocolError::PageTooLarge {
                requested: 3,
                received: 4
            },
            ..
        }
    ));
    assert!(handler.applied.lock().unwrap().is_empty());
    let (err, _, _) = run_pages(vec![SyncBatchResult::last(vec![rec("", 1)])]).await;
    assert!(matches!(
        &*err,
        fero::Error::Protocol {
            source: ProtocolError::EmptyId,
            ..
        }
    ));
}

#[tokio::test(start_paused = true)]
async fn a_final_page_keeps_the_servers_opaque_cursor() {
    let handler = Scripted::default();
    let cp = SyncCheckpoint::at(SyncId(2)).with_cursor("opaque:2");
    *handler.pages.lock().unwrap() = vec![SyncBatchResult::final_page(
        vec![rec("a", 1), rec("b", 2)],
        cp.clone(),
    )];
    let repo = Arc::new(InMemorySyncMetadataRepo::new());
    let sync = FeroSync::builder()
        .metadata_repo_arc(repo.clone())
        .initial_sync("items", handler.clone(), FeatureSyncConfig::new())
        .build()
        .unwrap();
    sync.run().await.unwrap();
    assert_eq!(repo.checkpoint(&"items".into()).await.unwrap(), Some(cp));
    assert!(
        handler.pages.lock().unwrap().is_empty(),
        "no extra fetch after the final page"
    );
    let _ = MemoryStore::new();
}
