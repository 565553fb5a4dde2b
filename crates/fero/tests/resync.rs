//! Resync: a fetch answered "resync required" makes the engine pull the feature again from
//! scratch, with the handler told when it starts, which pages belong to it, which page is the
//! last, and when it ends; a second request during that pull is a typed error, not a loop.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use fero::memory::{LocalRecord, Record};
use fero::{
    ApplyContext, ApplyResult, BackgroundSyncHandler, Error, FeatureKey, FeatureResult,
    FeatureSyncConfig, FeroSync, HandlerError, HandlerResult, InMemorySyncMetadataRepo,
    InitialSyncHandler, PushResult, RemoteChanges, ResyncOutcome, ResyncReason, SyncBatchResult,
    SyncCheckpoint, SyncEvent, SyncId, SyncMetadataRepo, SyncPayload, Version,
};

/// What the scripted handler was asked, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Call {
    Fetch(Option<u64>),
    Begin(ResyncReason),
    Apply {
        page: u64,
        ids: Vec<String>,
        last_page: bool,
        resync: Option<ResyncReason>,
    },
    End(ResyncReason),
}

type Answer = HandlerResult<SyncBatchResult<Record>>;

/// A handler whose fetches answer from a script and which logs every call.
#[derive(Clone, Default)]
struct Scripted {
    answers: Arc<Mutex<VecDeque<Answer>>>,
    calls: Arc<Mutex<Vec<Call>>>,
    outcome: ResyncOutcome,
    /// The resync begun and not yet ended, as a store would record it durably.
    in_progress: Arc<Mutex<Option<ResyncReason>>>,
    /// Applies outside a resync refuse the page: the store found the server behind its rows.
    server_behind_rows: bool,
}

impl Scripted {
    fn new(answers: Vec<Answer>, outcome: ResyncOutcome) -> Self {
        Scripted {
            answers: Arc::new(Mutex::new(answers.into())),
            calls: Arc::default(),
            outcome,
            in_progress: Arc::default(),
            server_behind_rows: false,
        }
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    fn log(&self, call: Call) {
        match call {
            Call::Begin(reason) => *self.in_progress.lock().unwrap() = Some(reason),
            Call::End(_) => *self.in_progress.lock().unwrap() = None,
            _ => {}
        }
        self.calls.lock().unwrap().push(call);
    }

    fn push_answers(&self, answers: Vec<Answer>) {
        self.answers.lock().unwrap().extend(answers);
    }

    fn fetch(&self, checkpoint: Option<&SyncCheckpoint>) -> Answer {
        self.log(Call::Fetch(checkpoint.map(|cp| cp.last_sync_id.0)));
        self.answers
            .lock()
            .unwrap()
            .pop_front()
            .expect("a fetch beyond the script")
    }

    fn apply(&self, ids: Vec<String>, context: &ApplyContext) -> HandlerResult<ApplyResult> {
        self.log(Call::Apply {
            page: context.page,
            ids: ids.clone(),
            last_page: context.last_page,
            resync: context.resync,
        });
        if self.server_behind_rows && context.resync.is_none() {
            return Err(HandlerError::resync_required(
                ResyncReason::ServerBehind,
                "a pulled row is older than the synced copy",
            ));
        }
        Ok(ApplyResult::applied(ids.len()))
    }
}

fn rec(id: &str, sync_id: u64) -> SyncPayload<Record> {
    SyncPayload::new(Record {
        id: id.into(),
        sync_id: SyncId(sync_id),
        version: Version(1),
        data: serde_json::json!({ "id": id }),
    })
}

fn purged() -> Answer {
    Err(HandlerError::resync_required(
        ResyncReason::TombstonesPurged,
        "checkpoint 50 is behind the purge horizon 60",
    ))
}

#[fero::async_trait]
impl BackgroundSyncHandler for Scripted {
    type Local = LocalRecord;
    type Server = Record;

    async fn get_locally_modified(&self) -> HandlerResult<Vec<LocalRecord>> {
        Ok(Vec::new())
    }

    async fn fetch_remote_changes(
        &self,
        checkpoint: Option<&SyncCheckpoint>,
        _batch_size: usize,
    ) -> Answer {
        self.fetch(checkpoint)
    }

    async fn apply_remote_changes(
        &self,
        changes: RemoteChanges<LocalRecord, Record>,
        context: &ApplyContext,
    ) -> HandlerResult<ApplyResult> {
        let ids = changes.items.iter().map(|p| p.item.id.clone()).collect();
        self.apply(ids, context)
    }

    async fn push_local_changes(
        &self,
        _items: &[LocalRecord],
    ) -> HandlerResult<PushResult<Record>> {
        Ok(PushResult::default())
    }

    async fn begin_resync(&self, _: &FeatureKey, reason: ResyncReason) -> HandlerResult<()> {
        self.log(Call::Begin(reason));
        Ok(())
    }

    async fn end_resync(
        &self,
        _: &FeatureKey,
        reason: ResyncReason,
    ) -> HandlerResult<ResyncOutcome> {
        self.log(Call::End(reason));
        Ok(self.outcome)
    }

    async fn resync_in_progress(&self, _: &FeatureKey) -> HandlerResult<Option<ResyncReason>> {
        Ok(*self.in_progress.lock().unwrap())
    }
}

#[fero::async_trait]
impl InitialSyncHandler for Scripted {
    type Item = Record;

    async fn fetch_remote_data(
        &self,
        checkpoint: Option<&SyncCheckpoint>,
        _batch_size: usize,
    ) -> Answer {
        self.fetch(checkpoint)
    }

    async fn save_to_local(
        &self,
        items: Vec<SyncPayload<Record>>,
        context: &ApplyContext,
    ) -> HandlerResult<ApplyResult> {
        let ids = items.iter().map(|p| p.item.id.clone()).collect();
        self.apply(ids, context)
    }

    async fn begin_resync(&self, _: &FeatureKey, reason: ResyncReason) -> HandlerResult<()> {
        self.log(Call::Begin(reason));
        Ok(())
    }

    async fn end_resync(
        &self,
        _: &FeatureKey,
        reason: ResyncReason,
    ) -> HandlerResult<ResyncOutcome> {
        self.log(Call::End(reason));
        Ok(self.outcome)
    }

    async fn resync_in_progress(&self, _: &FeatureKey) -> HandlerResult<Option<ResyncReason>> {
        Ok(*self.in_progress.lock().unwrap())
    }
}

/// A repo holding checkpoint `at` for "items".
async fn repo_at(at: u64) -> Arc<InMemorySyncMetadataRepo> {
    let repo = Arc::new(InMemorySyncMetadataRepo::new());
    repo.save_checkpoint(&"items".into(), &SyncCheckpoint::at(SyncId(at)))
        .await
        .unwrap();
    repo
}

fn background(handler: &Scripted, repo: &Arc<InMemorySyncMetadataRepo>) -> FeroSync {
    FeroSync::builder()
        .metadata_repo_arc(repo.clone())
        .background_sync(
            "items",
            handler.clone(),
            FeatureSyncConfig::new().batch_size(2),
        )
        .seed(7)
        .build()
        .unwrap()
}

/// The resync events of `events`, as (name, reason, removed, kept, repushed).
fn resync_events(events: &[SyncEvent]) -> Vec<(&'static str, ResyncReason, u64, u64, u64)> {
    events
        .iter()
        .filter_map(|e| match e {
            SyncEvent::ResyncStarted { reason, .. } => Some(("started", *reason, 0, 0, 0)),
            SyncEvent::ResyncCompleted {
                reason,
                removed,
                kept,
                repushed,
                ..
            } => Some(("completed", *reason, *removed, *kept, *repushed)),
            _ => None,
        })
        .collect()
}

fn apply(page: u64, ids: &[&str], last_page: bool, resync: Option<ResyncReason>) -> Call {
    Call::Apply {
        page,
        ids: ids.iter().map(|s| s.to_string()).collect(),
        last_page,
        resync,
    }
}

#[tokio::test(start_paused = true)]
async fn a_resync_required_fetch_re_pulls_the_feature_from_scratch_and_reports_the_outcome() {
    let purged_reason = Some(ResyncReason::TombstonesPurged);
    let handler = Scripted::new(
        vec![
            purged(),
            Ok(SyncBatchResult::page(
                vec![rec("a", 61), rec("b", 62)],
                SyncCheckpoint::at(SyncId(62)),
            )),
            Ok(SyncBatchResult::final_page(
                vec![rec("c", 70)],
                SyncCheckpoint::at(SyncId(70)),
            )),
        ],
        ResyncOutcome::new(4, 1, 0),
    );
    let repo = repo_at(50).await;
    let sync = background(&handler, &repo);
    let mut stream = sync.event_stream();
    let report = sync.run().await.expect("the resync completes the cycle");
    assert!(report.failures().next().is_none(), "{report}");

    assert_eq!(
        handler.calls(),
        vec![
            Call::Fetch(Some(50)),
            Call::Begin(ResyncReason::TombstonesPurged),
            Call::Fetch(None),
            apply(1, &["a", "b"], false, purged_reason),
            Call::Fetch(Some(62)),
            apply(2, &["c"], true, purged_reason),
            Call::End(ResyncReason::TombstonesPurged),
        ]
    );
    assert_eq!(
        repo.checkpoint(&"items".into()).await.unwrap(),
        Some(SyncCheckpoint::at(SyncId(70)))
    );
    let mut events = Vec::new();
    while let Some(Some(Ok(event))) =
        futures::FutureExt::now_or_never(futures::StreamExt::next(&mut stream))
    {
        events.push(event);
    }
    assert_eq!(
        resync_events(&events),
        vec![
            ("started", ResyncReason::TombstonesPurged, 0, 0, 0),
            ("completed", ResyncReason::TombstonesPurged, 4, 1, 0),
        ]
    );
    sync.dispose().await;
}

#[tokio::test(start_paused = true)]
async fn a_second_resync_request_during_the_pull_from_scratch_is_a_typed_error_not_a_loop() {
    let handler = Scripted::new(
        vec![
            purged(),
            Err(HandlerError::resync_required(
                ResyncReason::ServerBehind,
                "still refused",
            )),
        ],
        ResyncOutcome::default(),
    );
    let repo = repo_at(50).await;
    let sync = background(&handler, &repo);
    let error = sync.run().await.expect_err("the feature fails");
    let report = error.report().expect("a run report");
    let failure = report.failures().next().expect("one failure");
    let FeatureResult::Failed(cause) = &failure.result else {
        panic!("expected a failure, got {:?}", failure.result);
    };
    match cause.as_ref() {
        Error::ResyncLoop {
            feature,
            first,
            second,
            message,
        } => {
            assert_eq!(feature.as_str(), "items");
            assert_eq!(*first, ResyncReason::TombstonesPurged);
            assert_eq!(*second, ResyncReason::ServerBehind);
            assert!(message.contains("still refused"), "{message}");
        }
        other => panic!("expected ResyncLoop, got {other}"),
    }
    assert!(!cause.is_transient());
    // Two fetches, one resync started, never ended: no third fetch, no loop.
    assert_eq!(
        handler.calls(),
        vec![
            Call::Fetch(Some(50)),
            Call::Begin(ResyncReason::TombstonesPurged),
            Call::Fetch(None),
        ]
    );
    sync.dispose().await;
}

#[tokio::test(start_paused = true)]
async fn a_resync_that_finds_an_empty_feed_still_ends_and_saves_no_checkpoint_ahead() {
    // The restored server has nothing at all: the pull from scratch ends on an empty page,
    // which is never applied; end_resync must still run.
    let handler = Scripted::new(
        vec![
            Err(HandlerError::resync_required(
                ResyncReason::ServerBehind,
                "checkpoint 50 is ahead of the feed",
            )),
            Ok(SyncBatchResult::final_page(
                Vec::new(),
                SyncCheckpoint::at(SyncId(0)),
            )),
        ],
        ResyncOutcome::new(0, 3, 3),
    );
    let repo = repo_at(50).await;
    let sync = background(&handler, &repo);
    sync.run().await.expect("the cycle completes");
    assert_eq!(
        handler.calls(),
        vec![
            Call::Fetch(Some(50)),
            Call::Begin(ResyncReason::ServerBehind),
            Call::Fetch(None),
            Call::End(ResyncReason::ServerBehind),
        ]
    );
    // The checkpoint ahead of the feed is gone: the next cycle starts from the server's feed.
    let saved = repo.checkpoint(&"items".into()).await.unwrap();
    assert!(
        saved.as_ref().is_none_or(|cp| cp.last_sync_id == SyncId(0)),
        "{saved:?}"
    );
    sync.dispose().await;
}

#[tokio::test(start_paused = true)]
async fn an_initial_sync_resuming_behind_the_horizon_resyncs_too() {
    let handler = Scripted::new(
        vec![purged(), Ok(SyncBatchResult::last(vec![rec("a", 61)]))],
        ResyncOutcome::default(),
    );
    let repo = repo_at(50).await;
    let sync = FeroSync::builder()
        .metadata_repo_arc(repo.clone())
        .initial_sync("items", handler.clone(), FeatureSyncConfig::new())
        .seed(7)
        .build()
        .unwrap();
    sync.run().await.expect("the initial sync completes");
    assert_eq!(
        handler.calls(),
        vec![
            Call::Fetch(Some(50)),
            Call::Begin(ResyncReason::TombstonesPurged),
            Call::Fetch(None),
            apply(1, &["a"], true, Some(ResyncReason::TombstonesPurged)),
            Call::End(ResyncReason::TombstonesPurged),
        ]
    );
    assert_eq!(
        repo.checkpoint(&"items".into()).await.unwrap(),
        Some(SyncCheckpoint::at(SyncId(61)))
    );
    sync.dispose().await;
}

#[tokio::test(start_paused = true)]
async fn a_resync_interrupted_by_a_failed_page_keeps_its_checkpoint_and_is_continued_next_run() {
    // Page 2's fetch fails for good: page 1's checkpoint was saved after its apply, nothing more.
    let handler = Scripted::new(
        vec![
            purged(),
            Ok(SyncBatchResult::page(
                vec![rec("a", 61), rec("b", 62)],
                SyncCheckpoint::at(SyncId(62)),
            )),
            Err(HandlerError::permanent("the server broke")),
        ],
        ResyncOutcome::default(),
    );
    let repo = repo_at(50).await;
    let sync = background(&handler, &repo);
    sync.run().await.expect_err("the cycle fails");
    assert_eq!(
        repo.checkpoint(&"items".into()).await.unwrap(),
        Some(SyncCheckpoint::at(SyncId(62)))
    );
    assert!(
        !handler
            .calls()
            .contains(&Call::End(ResyncReason::TombstonesPurged)),
        "a resync whose pull did not finish must not settle the unseen rows"
    );

    // The next run continues the resync from page 1's checkpoint, in resync mode, and ends it.
    let before = handler.calls().len();
    handler.push_answers(vec![Ok(SyncBatchResult::final_page(
        vec![rec("c", 70)],
        SyncCheckpoint::at(SyncId(70)),
    ))]);
    sync.run().await.expect("the continued resync completes");
    assert_eq!(
        handler.calls()[before..],
        [
            Call::Fetch(Some(62)),
            apply(1, &["c"], true, Some(ResyncReason::TombstonesPurged)),
            Call::End(ResyncReason::TombstonesPurged),
        ]
    );
    sync.dispose().await;
}

#[tokio::test(start_paused = true)]
async fn a_store_that_finds_the_server_behind_its_rows_during_an_apply_starts_a_resync() {
    let mut handler = Scripted::new(
        vec![
            Ok(SyncBatchResult::final_page(
                vec![rec("a", 51)],
                SyncCheckpoint::at(SyncId(51)),
            )),
            Ok(SyncBatchResult::final_page(
                vec![rec("a", 3), rec("b", 4)],
                SyncCheckpoint::at(SyncId(51)),
            )),
        ],
        ResyncOutcome::new(0, 0, 1),
    );
    handler.server_behind_rows = true;
    let repo = repo_at(50).await;
    let sync = background(&handler, &repo);
    sync.run().await.expect("the resync completes the cycle");
    let behind = Some(ResyncReason::ServerBehind);
    assert_eq!(
        handler.calls(),
        vec![
            Call::Fetch(Some(50)),
            apply(1, &["a"], true, None),
            Call::Begin(ResyncReason::ServerBehind),
            Call::Fetch(None),
            apply(1, &["a", "b"], true, behind),
            Call::End(ResyncReason::ServerBehind),
        ]
    );
    // The refused page saved no checkpoint; the resync's did.
    assert_eq!(
        repo.checkpoint(&"items".into()).await.unwrap(),
        Some(SyncCheckpoint::at(SyncId(51)))
    );
    sync.dispose().await;
}
