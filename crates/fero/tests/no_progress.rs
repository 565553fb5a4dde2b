//! A page that says more pages follow but ends where it started (same `last_sync_id`, same
//! cursor) used to be applied and fetched again forever: `sync_now()` never returned, held the
//! run and kept hitting the server. It is now a typed protocol error, like a checkpoint going
//! backwards: nothing of it applied, the checkpoint unchanged, the run ends.
//!
//! The scripted handler fails every fetch after 50, so a regression fails these tests instead of
//! hanging them; each run is also bounded by a (paused-clock) timeout.

mod scripted;
mod support;

use std::sync::Arc;
use std::time::Duration;

use fero::{
    Error, FeatureResult, FeatureSyncConfig, FeroSync, InMemorySyncMetadataRepo, ProtocolError,
    RunReport, SyncBatchResult, SyncCheckpoint, SyncId, SyncMetadataRepo, SyncPhase,
};
use scripted::{Scripted, rec};

/// The one failure of a run, which must have failed.
fn only_failure(result: fero::Result<RunReport>) -> Arc<Error> {
    let report = match result {
        Err(Error::FeaturesFailed { report }) => report,
        other => panic!("expected a failed run, got {other:?}"),
    };
    assert_eq!(report.outcomes.len(), 1, "{report}");
    match &report.outcomes[0].result {
        FeatureResult::Failed(error) => error.clone(),
        other => panic!("expected a failure, got {other:?}"),
    }
}

fn assert_no_progress(error: &Error, page: u64, last_sync_id: u64, cursor: Option<&str>) {
    match error {
        Error::Protocol {
            feature,
            page: failed_page,
            source:
                ProtocolError::NoProgress {
                    last_sync_id: at,
                    cursor: at_cursor,
                },
        } => {
            assert_eq!(feature.as_str(), "items");
            assert_eq!(*failed_page, page);
            assert_eq!(*at, SyncId(last_sync_id));
            assert_eq!(at_cursor.as_deref(), cursor);
        }
        other => panic!("expected ProtocolError::NoProgress, got {other}"),
    }
    assert!(
        error.to_string().contains("ends where it started"),
        "{error}"
    );
}

async fn repo_at(checkpoint: Option<SyncCheckpoint>) -> Arc<InMemorySyncMetadataRepo> {
    let repo = Arc::new(InMemorySyncMetadataRepo::new());
    if let Some(cp) = checkpoint {
        repo.save_checkpoint(&"items".into(), &cp).await.unwrap();
    }
    repo
}

const BOUND: Duration = Duration::from_secs(600);

#[tokio::test(start_paused = true)]
async fn an_initial_page_with_more_that_ends_where_it_started_is_refused() {
    let handler =
        Scripted::new(|_| SyncBatchResult::page(vec![rec("a", 5)], SyncCheckpoint::at(SyncId(5))));
    let repo = repo_at(Some(SyncCheckpoint::at(SyncId(5)))).await;
    let sync = FeroSync::builder()
        .metadata_repo_arc(repo.clone())
        .initial_sync("items", handler.clone(), FeatureSyncConfig::new())
        .build()
        .unwrap();
    let mut events = sync.event_stream();
    let result = tokio::time::timeout(BOUND, sync.run())
        .await
        .expect("the run must end");
    let error = only_failure(result);
    assert_no_progress(&error, 1, 5, None);
    assert_eq!(handler.fetches(), 1, "the page is fetched once, not again");
    assert_eq!(handler.applies(), 0, "nothing of the page is applied");
    assert_eq!(
        repo.checkpoint(&"items".into()).await.unwrap(),
        Some(SyncCheckpoint::at(SyncId(5)))
    );
    let names: Vec<String> = support::drain(&mut events)
        .iter()
        .map(support::name)
        .collect();
    assert!(
        names.contains(&"items:initial_failed".to_owned()),
        "{names:?}"
    );
    let status = sync.feature_status("items").unwrap();
    assert_eq!(status.phase, SyncPhase::Failed);
    assert!(matches!(
        status.last_error.as_deref(),
        Some(Error::Protocol {
            source: ProtocolError::NoProgress { .. },
            ..
        })
    ));
}

#[tokio::test(start_paused = true)]
async fn a_page_fetched_ahead_that_repeats_the_cursor_is_refused_after_the_good_page() {
    // From the start: one page that moves the cursor, then from there a page with more to come
    // that stays at that cursor (fetched ahead while the first was applied).
    let at = SyncCheckpoint::at(SyncId(2)).with_cursor("c2");
    let at_served = at.clone();
    let handler = Scripted::new(move |from| match from {
        None => SyncBatchResult::page(vec![rec("a", 1), rec("b", 2)], at_served.clone()),
        Some(_) => SyncBatchResult::page(vec![rec("c", 2)], at_served.clone()),
    });
    let repo = repo_at(None).await;
    let sync = FeroSync::builder()
        .metadata_repo_arc(repo.clone())
        .initial_sync("items", handler.clone(), FeatureSyncConfig::new())
        .build()
        .unwrap();
    let result = tokio::time::timeout(BOUND, sync.run())
        .await
        .expect("the run must end");
    let error = only_failure(result);
    assert_no_progress(&error, 2, 2, Some("c2"));
    assert_eq!(handler.fetches(), 2);
    assert_eq!(
        handler.applied(),
        ["a", "b"],
        "only the good page is applied"
    );
    assert_eq!(repo.checkpoint(&"items".into()).await.unwrap(), Some(at));
}

#[tokio::test(start_paused = true)]
async fn a_background_page_with_more_that_ends_where_it_started_ends_sync_now() {
    let start = SyncCheckpoint::at(SyncId(5)).with_cursor("s5");
    let served = start.clone();
    let handler = Scripted::new(move |_| SyncBatchResult::page(vec![rec("a", 5)], served.clone()));
    let repo = repo_at(Some(start.clone())).await;
    let sync = FeroSync::builder()
        .metadata_repo_arc(repo.clone())
        .background_sync("items", handler.clone(), FeatureSyncConfig::new())
        .build()
        .unwrap();
    let mut events = sync.event_stream();
    let result = tokio::time::timeout(BOUND, sync.sync_now())
        .await
        .expect("sync_now must return");
    let error = only_failure(result);
    assert_no_progress(&error, 1, 5, Some("s5"));
    assert_eq!(handler.fetches(), 1);
    assert_eq!(handler.applies(), 0);
    assert_eq!(repo.checkpoint(&"items".into()).await.unwrap(), Some(start));
    let names: Vec<String> = support::drain(&mut events)
        .iter()
        .map(support::name)
        .collect();
    assert!(
        names.contains(&"items:background_failed".to_owned()),
        "{names:?}"
    );
    assert_eq!(
        sync.feature_status("items").unwrap().phase,
        SyncPhase::Failed
    );
    // The run lock is free: another run starts (and fails the same way) instead of waiting.
    let again = tokio::time::timeout(BOUND, sync.sync_now())
        .await
        .expect("a second sync_now must return too");
    assert_no_progress(&only_failure(again), 1, 5, Some("s5"));
}

#[tokio::test(start_paused = true)]
async fn a_page_that_moves_only_its_cursor_is_progress() {
    // Several rows can share a sync_id position while the server's cursor moves through them.
    let handler = Scripted::new(|from| match from.and_then(|c| c.cursor.as_deref()) {
        None => SyncBatchResult::page(
            vec![rec("a", 3)],
            SyncCheckpoint::at(SyncId(3)).with_cursor("3:a"),
        ),
        Some("3:a") => SyncBatchResult::page(
            vec![rec("b", 3)],
            SyncCheckpoint::at(SyncId(3)).with_cursor("3:b"),
        ),
        Some(_) => SyncBatchResult::empty(),
    });
    let repo = repo_at(None).await;
    let sync = FeroSync::builder()
        .metadata_repo_arc(repo.clone())
        .background_sync("items", handler.clone(), FeatureSyncConfig::new())
        .build()
        .unwrap();
    tokio::time::timeout(BOUND, sync.sync_now())
        .await
        .expect("sync_now must return")
        .unwrap();
    assert_eq!(handler.applied(), ["a", "b"]);
    assert_eq!(
        repo.checkpoint(&"items".into()).await.unwrap(),
        Some(SyncCheckpoint::at(SyncId(3)).with_cursor("3:b"))
    );
}
