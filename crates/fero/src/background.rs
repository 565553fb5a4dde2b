//! One background cycle of a feature: pull (conflicts resolved against the local edits), then
//! push (server conflicts resolved and re-pushed a bounded number of rounds, permanent
//! rejections quarantined). Also the manual resolution of parked conflicts.
//!
//! Pull first, then push: the client sees most conflicts before the server has to reject them;
//! the server still checks every change's base version, so the order is an optimisation, not a
//! correctness condition.

use std::collections::{BTreeMap, HashMap, HashSet};

use futures::future::BoxFuture;
use rustc_hash::FxHashMap;
use serde::Serialize;

use crate::checkpoint::SyncCheckpoint;
use crate::conflict::{
    Conflict, ConflictOutcome, ConflictPhase, ConflictResolutionStrategy, Decision,
    ManualResolution, decide, pulled_item_conflicts,
};
use crate::error::{Error, Operation, Result};
use crate::events::{ConflictEvent, SyncDirection, SyncEvent};
use crate::gate::PageGate;
use crate::handler::{BackgroundSyncHandler, HandlerResult};
use crate::item::{FeatureKey, LocalItem, ServerItem, SyncPayload};
use crate::metadata::{ParkedConflict, QuarantinedChange};
use crate::page::{ApplyContext, ApplyResult, Rebase, RemoteChanges, SyncBatchResult, SyncKind};
use crate::pull::Applier;
use crate::report::FeatureCounts;
use crate::sync::{FeatureSettings, Inner, RunCtx};

fn to_json<T: Serialize>(value: &T) -> serde_json::Value {
    // Items are plain serde data; a type whose Serialize fails is shown as null rather than
    // failing the sync (the event still names the id and both versions).
    serde_json::to_value(value).unwrap_or(serde_json::Value::Null)
}

/// A conflict's outcome before its apply succeeded: the event and the record to write after.
struct Settled {
    /// `None` when nobody subscribed to events as the conflict was settled: the event would be
    /// dropped unseen, and building its two JSON values was over half of a conflict's cost (W3).
    /// A subscriber that joins later misses it, as it misses every event sent before it joined.
    event: Option<ConflictEvent>,
    parked: Option<ParkedConflict>,
}

/// Resolves one conflict by the feature's strategy; a merge runs here.
struct Resolver<'a, H> {
    inner: &'a Inner,
    handler: &'a H,
    key: &'a FeatureKey,
    strategy: ConflictResolutionStrategy,
}

enum Resolved<L> {
    TakeServer,
    Keep(L),
    Park(String),
}

impl<L> Resolved<L> {
    /// Why the conflict is parked, when it is.
    fn park_reason(&self) -> Option<&str> {
        match self {
            Resolved::Park(reason) => Some(reason),
            Resolved::TakeServer | Resolved::Keep(_) => None,
        }
    }
}

impl<H: BackgroundSyncHandler> Resolver<'_, H> {
    async fn resolve(
        &self,
        local: &H::Local,
        server: &SyncPayload<H::Server>,
        phase: ConflictPhase,
    ) -> (Resolved<H::Local>, Settled) {
        let decision = decide(self.strategy, local, server);
        let (resolved, outcome) = match decision {
            Decision::TakeServer => (Resolved::TakeServer, ConflictOutcome::ServerKept),
            Decision::KeepLocal => (Resolved::Keep(local.clone()), ConflictOutcome::LocalKept),
            Decision::Park => (
                Resolved::Park("the feature's strategy is manual".into()),
                ConflictOutcome::Parked,
            ),
            Decision::Merge => {
                let base = match self.handler.conflict_base(local).await {
                    Ok(base) => base,
                    Err(e) => {
                        tracing::warn!(feature = %self.key, id = local.id(), error = %e, "no merge base");
                        None
                    }
                };
                let mut conflict =
                    Conflict::new(self.key.clone(), local.clone(), server.clone(), phase);
                conflict.base = base;
                match self.handler.merge_conflict(&conflict).await {
                    Ok(merged) => (Resolved::Keep(merged), ConflictOutcome::Merged),
                    Err(e) => (
                        Resolved::Park(format!("merge failed: {e}")),
                        ConflictOutcome::Parked,
                    ),
                }
            }
        };
        let settled = self.settle(local, Some(server), phase, outcome, resolved.park_reason());
        (resolved, settled)
    }

    fn settle(
        &self,
        local: &H::Local,
        server: Option<&SyncPayload<H::Server>>,
        phase: ConflictPhase,
        outcome: ConflictOutcome,
        park_reason: Option<&str>,
    ) -> Settled {
        let listening = self.inner.has_event_subscribers();
        if park_reason.is_none() && !listening {
            return Settled {
                event: None,
                parked: None,
            };
        }
        let local_json = to_json(local);
        let server_json = server.map_or(serde_json::Value::Null, |s| to_json(&s.item));
        let server_version = server.map(|s| s.item.version());
        let server_deleted = server.is_some_and(|s| s.deleted);
        let parked = park_reason.map(|reason| ParkedConflict {
            feature: self.key.clone(),
            id: local.id().to_owned(),
            local: local_json.clone(),
            server: server_json.clone(),
            server_deleted,
            server_version,
            phase,
            reason: reason.to_owned(),
            parked_at: self.inner.clock.now(),
        });
        Settled {
            event: listening.then(|| ConflictEvent {
                feature: self.key.clone(),
                id: local.id().to_owned(),
                phase,
                strategy: self.strategy,
                outcome,
                local_version: local.version(),
                server_version,
                local: local_json,
                server: server_json,
                server_deleted,
            }),
            parked,
        }
    }

    /// Persists parked records and emits the events, after the apply they belong to succeeded.
    async fn publish(&self, settled: Vec<Settled>) -> Result<()> {
        for s in settled {
            if let Some(parked) = &s.parked {
                self.inner
                    .repo_call(self.key, self.inner.repo.park_conflict(parked))
                    .await?;
            }
            if let Some(event) = s.event {
                self.inner.emit(SyncEvent::ConflictResolved(event));
            }
        }
        Ok(())
    }
}

/// The background apply: resolves conflicts between a pulled page and the local edits.
struct BackgroundApply<'a, H: BackgroundSyncHandler> {
    resolver: Resolver<'a, H>,
    handler: &'a H,
    run: &'a RunCtx,
    settings: &'a FeatureSettings,
    /// Local edits, listed once per cycle when the first non-empty page arrives: a cycle with
    /// nothing new on the server does not read them for its pull (its push reads them anyway;
    /// listing them twice was 40% of a 200k-item push, W2). Listing before that page is applied
    /// keeps `RemoteChanges`' contract: an edit the engine did not list was made after the
    /// listing.
    /// The local edits by id, listed when the first page with items arrives. FxHash: SipHash
    /// was a tenth of a conflict-heavy pull (fero-bench W3), and the ids are the app's own.
    modified: Option<FxHashMap<String, H::Local>>,
    /// Ids with a parked conflict: left alone until the app resolves them.
    parked: HashSet<String>,
    conflicts: u64,
}

impl<H: BackgroundSyncHandler> Applier<H::Server> for BackgroundApply<'_, H> {
    fn apply<'b>(
        &'b mut self,
        items: Vec<SyncPayload<H::Server>>,
        context: &'b ApplyContext,
    ) -> BoxFuture<'b, Result<ApplyResult>> {
        Box::pin(async move {
            let key = &context.feature;
            let apply_error = |source| Error::Handler {
                feature: key.clone(),
                operation: Operation::Apply,
                attempts: 1,
                source,
            };
            let modified = match self.modified.take() {
                Some(modified) => modified,
                None => {
                    let handler = self.handler;
                    self.resolver
                        .inner
                        .attempt(
                            self.run,
                            key,
                            Operation::ListModified,
                            self.settings,
                            true,
                            || handler.get_locally_modified(),
                        )
                        .await?
                        .into_iter()
                        .map(|l| (l.id().to_owned(), l))
                        .collect()
                }
            };
            let modified = self.modified.insert(modified);
            if modified.is_empty() && self.parked.is_empty() {
                // Nothing local to protect: the page goes through untouched.
                return self
                    .handler
                    .apply_remote_changes(RemoteChanges::from_items(items), context)
                    .await
                    .map_err(apply_error);
            }
            let mut changes = RemoteChanges {
                items: Vec::with_capacity(items.len()),
                discard_local: Vec::new(),
                rebase: Vec::new(),
            };
            let mut settled = Vec::new();
            // A transiently failed apply is retried with the page fetched again, and its
            // conflicts must then be decided again the same way: newly parked ids join `parked`
            // only after the apply succeeded, and `modified` (from which the edits the server
            // won were taken) is listed again after a failure.
            let mut newly_parked = Vec::new();
            for payload in items {
                let id = payload.item.id();
                if self.parked.contains(id) {
                    // Still parked: keep the newest server state beside it.
                    if let Some(local) = modified.get(id) {
                        settled.push(self.resolver.settle(
                            local,
                            Some(&payload),
                            ConflictPhase::Pull,
                            ConflictOutcome::Parked,
                            Some("still waiting for the app"),
                        ));
                    }
                    if context.resync.is_some() {
                        // A resync's store must see every id the server holds; it keeps the
                        // pending edit (the `RemoteChanges` contract).
                        changes.items.push(payload);
                    }
                    continue;
                }
                let Some(local) = modified.get(id) else {
                    changes.items.push(payload);
                    continue;
                };
                if !pulled_item_conflicts(local, &payload.item) {
                    // The state the edit was made on (or our own write echoed back): the local
                    // edit stays on top of it. A resync passes it on all the same, so the store
                    // sees every id the server holds; the store keeps the pending edit.
                    if context.resync.is_some() {
                        changes.items.push(payload);
                    }
                    continue;
                }
                let (resolved, s) = self
                    .resolver
                    .resolve(local, &payload, ConflictPhase::Pull)
                    .await;
                settled.push(s);
                match resolved {
                    Resolved::TakeServer => {
                        if let Some(lost) = modified.remove(payload.item.id()) {
                            changes.discard_local.push(lost);
                        }
                        changes.items.push(payload);
                    }
                    Resolved::Keep(local) => changes.rebase.push(Rebase {
                        local,
                        server: payload,
                    }),
                    Resolved::Park(_) => {
                        newly_parked.push(payload.item.id().to_owned());
                    }
                }
            }
            let result = match self.handler.apply_remote_changes(changes, context).await {
                Ok(result) => result,
                Err(error) => {
                    // The store kept every local edit (nothing of the page was written), so
                    // listing them again is exact; it happens on this failure path only.
                    self.modified = None;
                    return Err(apply_error(error));
                }
            };
            self.parked.extend(newly_parked);
            self.conflicts += settled.len() as u64;
            self.resolver.publish(settled).await?;
            Ok(result)
        })
    }
}

/// The type-erased background work of one feature.
pub(crate) trait BackgroundRunner: Send + Sync {
    fn cycle<'a>(
        &'a self,
        inner: &'a Inner,
        run: &'a RunCtx,
        key: &'a FeatureKey,
        settings: &'a FeatureSettings,
    ) -> BoxFuture<'a, Result<FeatureCounts>>;

    fn resolve_parked<'a>(
        &'a self,
        inner: &'a Inner,
        key: &'a FeatureKey,
        parked: ParkedConflict,
        resolution: ManualResolution,
    ) -> BoxFuture<'a, Result<ConflictOutcome>>;

    fn discard<'a>(&'a self, key: &'a FeatureKey, id: &'a str) -> BoxFuture<'a, Result<()>>;
}

pub(crate) struct TypedBackground<H>(pub(crate) H);

/// A local edit kept after a push conflict, with the server state it now rests on.
type Kept<H> = (
    <H as BackgroundSyncHandler>::Local,
    Option<SyncPayload<<H as BackgroundSyncHandler>::Server>>,
);

impl<H: BackgroundSyncHandler> TypedBackground<H> {
    async fn list_modified(
        &self,
        inner: &Inner,
        run: &RunCtx,
        key: &FeatureKey,
        settings: &FeatureSettings,
    ) -> Result<Vec<H::Local>> {
        let handler = &self.0;
        inner
            .attempt(run, key, Operation::ListModified, settings, true, || {
                handler.get_locally_modified()
            })
            .await
    }

    async fn cycle_inner(
        &self,
        inner: &Inner,
        run: &RunCtx,
        key: &FeatureKey,
        settings: &FeatureSettings,
    ) -> Result<FeatureCounts> {
        let handler = &self.0;
        let parked: HashSet<String> = inner
            .repo_call(key, inner.repo.parked_conflicts(key))
            .await?
            .into_iter()
            .map(|p| p.id)
            .collect();
        let resolver = Resolver {
            inner,
            handler,
            key,
            strategy: settings.strategy,
        };
        let mut applier = BackgroundApply {
            resolver,
            handler,
            run,
            settings,
            modified: None,
            parked,
            conflicts: 0,
        };
        let fetch = move |from: Option<SyncCheckpoint>,
                          gate: Option<PageGate>|
              -> BoxFuture<'_, HandlerResult<SyncBatchResult<H::Server>>> {
            Box::pin(async move {
                match gate {
                    None => {
                        handler
                            .fetch_remote_changes(from.as_ref(), settings.batch_size)
                            .await
                    }
                    Some(gate) => {
                        handler
                            .prefetch_remote_changes(from.as_ref(), settings.batch_size, &gate)
                            .await
                    }
                }
            })
        };
        let mut counts = crate::resync::pull_or_resync(
            inner,
            run,
            key,
            SyncKind::Background,
            settings,
            &fetch,
            &mut applier,
            &crate::resync::BackgroundHooks(handler),
            |counts, _| {
                inner.progress(key, SyncDirection::Pull, counts.pages, counts.pulled);
            },
        )
        .await?;
        counts.conflicts = applier.conflicts;
        let parked = applier.parked;
        self.push(inner, run, key, settings, parked, &mut counts)
            .await?;
        Ok(counts)
    }

    /// Pushes local edits page by page; conflicts are resolved and the kept ones re-pushed, at
    /// most `max_push_rounds` rounds, after which they are parked (never dropped).
    async fn push(
        &self,
        inner: &Inner,
        run: &RunCtx,
        key: &FeatureKey,
        settings: &FeatureSettings,
        mut excluded: HashSet<String>,
        counts: &mut FeatureCounts,
    ) -> Result<()> {
        let handler = &self.0;
        excluded.extend(
            inner
                .repo_call(key, inner.repo.quarantined(key))
                .await?
                .into_iter()
                .map(|q| q.id),
        );
        let resolver = Resolver {
            inner,
            handler,
            key,
            strategy: settings.strategy,
        };
        let mut only: Option<HashSet<String>> = None;
        let mut pages = 0u64;
        let mut round = 0u32;
        loop {
            let items: Vec<H::Local> = self
                .list_modified(inner, run, key, settings)
                .await?
                .into_iter()
                .filter(|l| {
                    !excluded.contains(l.id()) && only.as_ref().is_none_or(|o| o.contains(l.id()))
                })
                .collect();
            if items.is_empty() {
                return Ok(());
            }
            // Ordered by id: the edits parked after the last round are parked (and their events
            // sent) in the same order on every run, so a simulation seed replays exactly.
            let mut repush: BTreeMap<String, Kept<H>> = BTreeMap::new();
            let mut remaining = items.into_iter();
            loop {
                let chunk: Vec<H::Local> = remaining.by_ref().take(settings.batch_size).collect();
                if chunk.is_empty() {
                    break;
                }
                run.check(key)?;
                let result = inner
                    .attempt(run, key, Operation::Push, settings, true, || {
                        handler.push_local_changes(&chunk)
                    })
                    .await?;
                counts.pushed += result.accepted.len() as u64;
                if !result.conflicts.is_empty() {
                    let by_id: HashMap<&str, &H::Local> =
                        chunk.iter().map(|l| (l.id(), l)).collect();
                    let mut changes = RemoteChanges {
                        items: Vec::new(),
                        discard_local: Vec::new(),
                        rebase: Vec::new(),
                    };
                    let mut settled = Vec::new();
                    for conflict in result.conflicts {
                        let Some(local) = by_id.get(conflict.id.as_str()).copied() else {
                            tracing::warn!(feature = %key, id = conflict.id, "server reported a conflict for an id it was not sent");
                            continue;
                        };
                        let Some(server) = conflict.server else {
                            settled.push(resolver.settle(
                                local,
                                None,
                                ConflictPhase::Push,
                                ConflictOutcome::Parked,
                                Some("the server has no such item to re-base on"),
                            ));
                            excluded.insert(conflict.id);
                            continue;
                        };
                        let (resolved, s) =
                            resolver.resolve(local, &server, ConflictPhase::Push).await;
                        settled.push(s);
                        match resolved {
                            Resolved::TakeServer => {
                                changes.discard_local.push(local.clone());
                                changes.items.push(server);
                            }
                            Resolved::Keep(kept) => {
                                repush.insert(conflict.id, (kept.clone(), Some(server.clone())));
                                changes.rebase.push(Rebase {
                                    local: kept,
                                    server,
                                });
                            }
                            Resolved::Park(_) => {
                                excluded.insert(conflict.id);
                            }
                        }
                    }
                    apply_outside_pull(handler, key, changes).await?;
                    counts.conflicts += settled.len() as u64;
                    resolver.publish(settled).await?;
                }
                for rejected in result.rejected {
                    let item = chunk
                        .iter()
                        .find(|l| l.id() == rejected.id)
                        .map_or(serde_json::Value::Null, to_json);
                    let change = QuarantinedChange {
                        feature: key.clone(),
                        id: rejected.id.clone(),
                        item,
                        reason: rejected.reason.clone(),
                        quarantined_at: inner.clock.now(),
                    };
                    inner.repo_call(key, inner.repo.quarantine(&change)).await?;
                    counts.quarantined += 1;
                    inner.emit(SyncEvent::ChangeQuarantined {
                        feature: key.clone(),
                        id: rejected.id.clone(),
                        reason: rejected.reason,
                    });
                    excluded.insert(rejected.id);
                }
                pages += 1;
                inner.progress(key, SyncDirection::Push, pages, counts.pushed);
            }
            if repush.is_empty() {
                return Ok(());
            }
            round += 1;
            if round >= inner.max_push_rounds {
                let mut settled = Vec::new();
                for (id, (local, server)) in repush {
                    let reason = format!(
                        "still conflicting after {round} push round(s): the item changes on the \
                         server faster than this device can push"
                    );
                    settled.push(resolver.settle(
                        &local,
                        server.as_ref(),
                        ConflictPhase::Push,
                        ConflictOutcome::Parked,
                        Some(&reason),
                    ));
                    excluded.insert(id);
                }
                counts.conflicts += settled.len() as u64;
                resolver.publish(settled).await?;
                return Ok(());
            }
            only = Some(repush.into_keys().collect());
        }
    }
}

/// Applies conflict outcomes found outside a pull (during a push, or resolved by the app): no
/// checkpoint goes with them.
async fn apply_outside_pull<H: BackgroundSyncHandler>(
    handler: &H,
    key: &FeatureKey,
    changes: RemoteChanges<H::Local, H::Server>,
) -> Result<()> {
    if changes.is_empty() {
        return Ok(());
    }
    let context = ApplyContext::new(key.clone(), SyncKind::Background, None, 0);
    handler
        .apply_remote_changes(changes, &context)
        .await
        .map(drop)
        .map_err(|source| Error::Handler {
            feature: key.clone(),
            operation: Operation::Apply,
            attempts: 1,
            source,
        })
}

fn decode<T: serde::de::DeserializeOwned>(
    key: &FeatureKey,
    id: &str,
    value: serde_json::Value,
) -> Result<T> {
    serde_json::from_value(value).map_err(|e| Error::Decode {
        feature: key.clone(),
        id: id.to_owned(),
        message: e.to_string(),
    })
}

impl<H: BackgroundSyncHandler> BackgroundRunner for TypedBackground<H> {
    fn cycle<'a>(
        &'a self,
        inner: &'a Inner,
        run: &'a RunCtx,
        key: &'a FeatureKey,
        settings: &'a FeatureSettings,
    ) -> BoxFuture<'a, Result<FeatureCounts>> {
        Box::pin(self.cycle_inner(inner, run, key, settings))
    }

    fn resolve_parked<'a>(
        &'a self,
        inner: &'a Inner,
        key: &'a FeatureKey,
        parked: ParkedConflict,
        resolution: ManualResolution,
    ) -> BoxFuture<'a, Result<ConflictOutcome>> {
        Box::pin(async move {
            let handler = &self.0;
            let id = parked.id.clone();
            let server: Option<SyncPayload<H::Server>> = if parked.server.is_null() {
                None
            } else {
                Some(SyncPayload {
                    item: decode(key, &id, parked.server.clone())?,
                    deleted: parked.server_deleted,
                })
            };
            // The local edit as the store holds it now (it may have been edited again since it
            // was parked); the parked copy otherwise.
            let current = handler
                .get_locally_modified()
                .await
                .map_err(|source| Error::Handler {
                    feature: key.clone(),
                    operation: Operation::ListModified,
                    attempts: 1,
                    source,
                })?
                .into_iter()
                .find(|l| l.id() == id);
            let local: H::Local = match current {
                Some(local) => local,
                None => decode(key, &id, parked.local.clone())?,
            };
            let mut changes = RemoteChanges {
                items: Vec::new(),
                discard_local: Vec::new(),
                rebase: Vec::new(),
            };
            let outcome = match resolution {
                ManualResolution::KeepServer => {
                    match server.clone() {
                        Some(server) => {
                            changes.discard_local.push(local.clone());
                            changes.items.push(server);
                        }
                        None => self.discard(key, &id).await?,
                    }
                    ConflictOutcome::ServerKept
                }
                ManualResolution::KeepLocal | ManualResolution::Merged(_) if server.is_none() => {
                    // Nothing to re-base on: the edit would be refused again the same way.
                    return Err(Error::NothingToRebase {
                        feature: key.clone(),
                        id,
                    });
                }
                ManualResolution::KeepLocal => {
                    if let Some(server) = server.clone() {
                        changes.rebase.push(Rebase {
                            local: local.clone(),
                            server,
                        });
                    }
                    ConflictOutcome::LocalKept
                }
                ManualResolution::Merged(value) => {
                    let merged: H::Local = decode(key, &id, value)?;
                    if let Some(server) = server.clone() {
                        changes.rebase.push(Rebase {
                            local: merged,
                            server,
                        });
                    }
                    ConflictOutcome::Merged
                }
            };
            apply_outside_pull(handler, key, changes).await?;
            inner
                .repo_call(key, inner.repo.remove_parked_conflict(key, &id))
                .await?;
            let resolver = Resolver {
                inner,
                handler,
                key,
                strategy: ConflictResolutionStrategy::Manual,
            };
            let mut settled = resolver.settle(&local, server.as_ref(), parked.phase, outcome, None);
            if let Some(event) = settled.event.as_mut() {
                event.server_version = parked.server_version.or(event.server_version);
            }
            resolver.publish(vec![settled]).await?;
            Ok(outcome)
        })
    }

    fn discard<'a>(&'a self, key: &'a FeatureKey, id: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.0
                .discard_local_change(id)
                .await
                .map_err(|source| Error::Handler {
                    feature: key.clone(),
                    operation: Operation::Discard,
                    attempts: 1,
                    source,
                })
        })
    }
}
