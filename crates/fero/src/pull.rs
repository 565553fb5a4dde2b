//! The page loop shared by initial and background sync: fetch, validate, apply, save the
//! checkpoint, repeat; with the next page fetched while the current one is applied.
//!
//! # Invariants
//! - A page's checkpoint is saved only after its apply returned success (or by the store in the
//!   same transaction as the page, see [`ApplyContext`]). A crash therefore leaves the old page
//!   state with the old checkpoint, or the new with the new. A transient apply failure is
//!   retried with the feature's backoff by fetching the page again from the unchanged
//!   checkpoint; a permanent one ends the run with the checkpoint unchanged.
//! - Checkpoints are saved strictly in page order, even though page `k + 1` is fetched while page
//!   `k` is applied (at most one page ahead, so memory stays flat). The fetch of page `k + 1`
//!   gets a [`PageGate`] that opens when page `k`'s apply ends, for transports that read the
//!   answer only then.
//! - A bad page (checkpoint going backwards, a page with more to come that does not move the
//!   position, duplicate or empty ids, more items than asked for) is rejected before anything of
//!   it is applied.

use std::collections::HashSet;

use futures::future::BoxFuture;
use tracing::Instrument;

use crate::checkpoint::SyncCheckpoint;
use crate::error::{Error, Operation, ProtocolError, Result};
use crate::gate::PageGate;
use crate::handler::{HandlerResult, InitialSyncHandler};
use crate::item::{FeatureKey, ServerItem, SyncId, SyncPayload};
use crate::page::{ApplyContext, ApplyResult, SyncBatchResult, SyncKind};
use crate::report::FeatureCounts;
use crate::sync::{FeatureSettings, Inner, RunCtx};

/// Applies one validated page; implemented by the initial and the background apply.
pub(crate) trait Applier<S>: Send {
    fn apply<'a>(
        &'a mut self,
        items: Vec<SyncPayload<S>>,
        context: &'a ApplyContext,
    ) -> BoxFuture<'a, Result<ApplyResult>>;
}

/// Fetches the page after a checkpoint; with a gate when it is fetched ahead, during the apply of
/// the page before it.
pub(crate) type Fetch<'a, S> = dyn Fn(Option<SyncCheckpoint>, Option<PageGate>) -> BoxFuture<'a, HandlerResult<SyncBatchResult<S>>>
    + Send
    + Sync
    + 'a;

/// Rejects a page that would corrupt state if applied.
pub(crate) fn validate<S: ServerItem>(
    page: &SyncBatchResult<S>,
    current: Option<&SyncCheckpoint>,
    batch_size: usize,
) -> std::result::Result<(), ProtocolError> {
    if page.items.len() > batch_size {
        return Err(ProtocolError::PageTooLarge {
            requested: batch_size,
            received: page.items.len(),
        });
    }
    if let (Some(received), Some(previous)) = (&page.checkpoint, current) {
        if received.last_sync_id < previous.last_sync_id {
            return Err(ProtocolError::CheckpointWentBackwards {
                previous: previous.last_sync_id,
                received: received.last_sync_id,
            });
        }
    }
    if let Some(received) = &page.checkpoint {
        // A page with more to come must move the position: the next request is made from the
        // page's checkpoint, so one that ends where it started would be fetched and applied
        // again without end. No saved checkpoint is the start (sync_id 0, no cursor). An empty
        // page ends the pull whatever it says, so it cannot loop.
        let (from_id, from_cursor) =
            current.map_or((SyncId(0), None), |c| (c.last_sync_id, c.cursor.as_deref()));
        if page.has_more
            && !page.items.is_empty()
            && received.last_sync_id == from_id
            && received.cursor.as_deref() == from_cursor
        {
            return Err(ProtocolError::NoProgress {
                last_sync_id: from_id,
                cursor: from_cursor.map(str::to_owned),
            });
        }
    }
    check_ids(page.items.iter().map(|payload| payload.item.id()))
}

/// Refuses an empty id, or one that appears twice.
fn check_ids<'a>(ids: impl Iterator<Item = &'a str> + Clone) -> Result<(), ProtocolError> {
    // Fast path: ids in strictly increasing order cannot repeat. That is the common shape of a
    // first sync of rows whose ids follow insertion order (sequences, ULIDs, UUIDv7), and it
    // costs one comparison of neighbours per id instead of a hash and a probe.
    let mut previous: Option<&str> = None;
    let mut increasing = true;
    for id in ids.clone() {
        if id.is_empty() {
            return Err(ProtocolError::EmptyId);
        }
        if previous.is_some_and(|p| p >= id) {
            increasing = false;
            break;
        }
        previous = Some(id);
    }
    if increasing {
        return Ok(());
    }
    // std's SipHash made this check 99% of the engine's own cost in a 1M-item initial sync (6%
    // of all instructions); FxHash is a fraction of that. It is not collision resistant, but a
    // page is capped at `batch_size` ids, so a hostile server's worst case stays bounded.
    let mut seen: HashSet<&str, rustc_hash::FxBuildHasher> =
        HashSet::with_capacity_and_hasher(ids.size_hint().0, rustc_hash::FxBuildHasher);
    for id in ids {
        if id.is_empty() {
            return Err(ProtocolError::EmptyId);
        }
        if !seen.insert(id) {
            return Err(ProtocolError::DuplicateId { id: id.to_owned() });
        }
    }
    Ok(())
}

/// The checkpoint after a page: the server's, or for a page without one (fero_sync's last page)
/// the largest `sync_id` of its items, never behind the current checkpoint.
fn checkpoint_after<S: ServerItem>(
    page: &SyncBatchResult<S>,
    current: Option<&SyncCheckpoint>,
) -> SyncCheckpoint {
    if let Some(cp) = &page.checkpoint {
        return cp.clone();
    }
    let mut derived = current.cloned().unwrap_or_default();
    if let Some(max) = page.items.iter().map(|p| p.item.sync_id()).max() {
        if max > derived.last_sync_id {
            derived.last_sync_id = max;
            derived.cursor = None;
            derived.updated_at = page
                .items
                .iter()
                .find(|p| p.item.sync_id() == max)
                .and_then(|p| p.item.updated_at());
        }
    }
    derived
}

/// Pulls pages from the feature's saved checkpoint until the server has no more.
///
/// `on_page` runs after each page's checkpoint is saved (progress events and status).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn pull<S: ServerItem>(
    inner: &Inner,
    run: &RunCtx,
    key: &FeatureKey,
    kind: SyncKind,
    settings: &FeatureSettings,
    fetch: &Fetch<'_, S>,
    applier: &mut dyn Applier<S>,
    mut on_page: impl FnMut(&FeatureCounts, &SyncCheckpoint) + Send,
) -> Result<FeatureCounts> {
    let mut counts = FeatureCounts::default();
    let mut current = inner.repo_checkpoint(key).await?;
    let batch_size = settings.batch_size;
    let fetch_page = |from: Option<SyncCheckpoint>, gate: Option<PageGate>| {
        inner.attempt(run, key, Operation::Fetch, settings, true, move || {
            fetch(from.clone(), gate.clone())
        })
    };
    let mut page = fetch_page(current.clone(), None).await?;
    // Failed applies at the current checkpoint, bounded by the backoff as fetch attempts are.
    let mut apply_failures = 0u32;
    loop {
        run.check(key)?;
        if let Err(source) = validate(&page, current.as_ref(), batch_size) {
            return Err(Error::Protocol {
                feature: key.clone(),
                page: counts.pages + 1,
                source,
            });
        }
        if page.items.is_empty() {
            // An empty page ends the pull; keep a checkpoint that moved (e.g. past rows the
            // server filtered out), since no data of it can be missing.
            if let Some(cp) = page.checkpoint {
                if current
                    .as_ref()
                    .is_none_or(|c| cp.last_sync_id > c.last_sync_id || cp.cursor != c.cursor)
                {
                    inner.repo_save_checkpoint(key, &cp).await?;
                }
            }
            break;
        }
        let next = checkpoint_after(&page, current.as_ref());
        let more = page.checkpoint.is_some() && page.has_more;
        let number = counts.pages + 1;
        let context =
            ApplyContext::new(key.clone(), kind, Some(next.clone()), number).with_last_page(!more);
        let items = page.items.len() as u64;
        let span = tracing::debug_span!("fero.page", page = number, items);
        let apply = applier.apply(page.items, &context).instrument(span);
        // Pipelining: page k+1's request needs only page k's checkpoint, known now. Its gate
        // opens when page k's apply ends (or is dropped), so a transport can hold the answer back
        // until then: a crash mid-apply loses one read page, not two.
        let (applied, prefetched) = if more {
            let (opener, gate) = PageGate::closed();
            let apply = async move {
                let applied = apply.await;
                opener.open();
                applied
            };
            let (applied, prefetched) =
                futures::join!(apply, fetch_page(Some(next.clone()), Some(gate)));
            (applied, Some(prefetched))
        } else {
            (apply.await, None)
        };
        let applied = match applied {
            Ok(applied) => applied,
            Err(Error::Handler {
                operation: Operation::Apply,
                source,
                ..
            }) => {
                // A failed apply wrote nothing of the page (the handler contract) and saved no
                // checkpoint. A transient failure is retried with the feature's backoff (the wait
                // is cancellable; the apply itself never is), a permanent one or the last
                // attempt ends the run.
                //
                // The retry fetches the page again from the unchanged checkpoint instead of
                // applying a kept copy: the page was moved into the apply, and keeping a clone
                // of every page in case its apply fails would copy every item on the hot path
                // (W1). Fetching is side-effect free by contract, and the page after the same
                // checkpoint is the one a later run would fetch anyway; a page fetched ahead
                // for the failed one is dropped, since it was asked from that page's end.
                apply_failures += 1;
                inner
                    .wait_before_retry(run, key, Operation::Apply, settings, source, apply_failures)
                    .await?;
                page = fetch_page(current.clone(), None).await?;
                continue;
            }
            Err(other) => return Err(other),
        };
        apply_failures = 0;
        if !applied.failed.is_empty() {
            return Err(Error::ApplyFailed {
                feature: key.clone(),
                page: number,
                failed: applied.failed,
            });
        }
        if !applied.checkpoint_saved {
            inner.repo_save_checkpoint(key, &next).await?;
        }
        counts.pages = number;
        counts.pulled += items;
        on_page(&counts, &next);
        current = Some(next);
        match prefetched {
            None => break,
            Some(prefetched) => page = prefetched?,
        }
    }
    Ok(counts)
}

/// Applies initial-sync pages with the handler's `save_to_local`.
struct InitialApply<'h, H> {
    handler: &'h H,
}

impl<H: InitialSyncHandler> Applier<H::Item> for InitialApply<'_, H> {
    fn apply<'a>(
        &'a mut self,
        items: Vec<SyncPayload<H::Item>>,
        context: &'a ApplyContext,
    ) -> BoxFuture<'a, Result<ApplyResult>> {
        Box::pin(async move {
            self.handler
                .save_to_local(items, context)
                .await
                .map_err(|source| Error::Handler {
                    feature: context.feature.clone(),
                    operation: Operation::Apply,
                    attempts: 1,
                    source,
                })
        })
    }
}

/// The type-erased initial sync of one feature.
pub(crate) trait InitialRunner: Send + Sync {
    fn run<'a>(
        &'a self,
        inner: &'a Inner,
        run: &'a RunCtx,
        key: &'a FeatureKey,
        settings: &'a FeatureSettings,
    ) -> BoxFuture<'a, Result<FeatureCounts>>;
}

pub(crate) struct TypedInitial<H>(pub(crate) H);

impl<H: InitialSyncHandler> InitialRunner for TypedInitial<H> {
    fn run<'a>(
        &'a self,
        inner: &'a Inner,
        run: &'a RunCtx,
        key: &'a FeatureKey,
        settings: &'a FeatureSettings,
    ) -> BoxFuture<'a, Result<FeatureCounts>> {
        Box::pin(async move {
            let handler = &self.0;
            let fetch =
                move |from: Option<SyncCheckpoint>,
                      gate: Option<PageGate>|
                      -> BoxFuture<'a, HandlerResult<SyncBatchResult<H::Item>>> {
                    Box::pin(async move {
                        match gate {
                            None => {
                                handler
                                    .fetch_remote_data(from.as_ref(), settings.batch_size)
                                    .await
                            }
                            Some(gate) => {
                                handler
                                    .prefetch_remote_data(from.as_ref(), settings.batch_size, &gate)
                                    .await
                            }
                        }
                    })
                };
            let mut applier = InitialApply { handler };
            crate::resync::pull_or_resync(
                inner,
                run,
                key,
                SyncKind::Initial,
                settings,
                &fetch,
                &mut applier,
                &crate::resync::InitialHooks(handler),
                |counts, checkpoint| {
                    inner.page_done(key, SyncKind::Initial, counts, checkpoint);
                },
            )
            .await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::item::{SyncId, Version};
    use crate::memory::Record;

    fn rec(id: &str, sync_id: u64) -> SyncPayload<Record> {
        SyncPayload::new(Record {
            id: id.into(),
            sync_id: SyncId(sync_id),
            version: Version(1),
            data: serde_json::Value::Null,
        })
    }

    #[test]
    fn a_page_with_a_duplicate_id_is_rejected() {
        let page = SyncBatchResult::last(vec![rec("a", 1), rec("b", 2), rec("a", 3)]);
        assert_eq!(
            validate(&page, None, 10),
            Err(ProtocolError::DuplicateId { id: "a".into() })
        );
    }

    /// What `check_ids` must answer: the first empty or repeated id, in page order.
    fn naive_check(ids: &[String]) -> Result<(), ProtocolError> {
        let mut seen = std::collections::BTreeSet::new();
        for id in ids {
            if id.is_empty() {
                return Err(ProtocolError::EmptyId);
            }
            if !seen.insert(id.as_str()) {
                return Err(ProtocolError::DuplicateId { id: id.clone() });
            }
        }
        Ok(())
    }

    #[test]
    fn ids_in_increasing_order_pass_and_any_repeat_or_empty_id_is_still_found() {
        let check = |ids: &[&str]| check_ids(ids.iter().copied());
        assert_eq!(check(&["a", "b", "c"]), Ok(()));
        assert_eq!(check(&[]), Ok(()));
        assert_eq!(
            check(&["a", "a"]),
            Err(ProtocolError::DuplicateId { id: "a".into() })
        );
        assert_eq!(
            check(&["a", "c", "b", "c"]),
            Err(ProtocolError::DuplicateId { id: "c".into() })
        );
        assert_eq!(check(&["a", "b", ""]), Err(ProtocolError::EmptyId));
        assert_eq!(check(&["b", "a", ""]), Err(ProtocolError::EmptyId));
    }

    proptest::proptest! {
        #[test]
        fn check_ids_answers_as_a_plain_scan_does(
            mut ids in proptest::collection::vec("[a-d]{0,2}", 0..12),
            sort in proptest::bool::ANY,
        ) {
            if sort {
                ids.sort();
            }
            proptest::prop_assert_eq!(check_ids(ids.iter().map(String::as_str)), naive_check(&ids));
        }
    }

    #[test]
    fn a_checkpoint_going_backwards_is_rejected() {
        let page = SyncBatchResult::page(vec![rec("a", 4)], SyncCheckpoint::at(SyncId(4)));
        let current = SyncCheckpoint::at(SyncId(9));
        assert_eq!(
            validate(&page, Some(&current), 10),
            Err(ProtocolError::CheckpointWentBackwards {
                previous: SyncId(9),
                received: SyncId(4)
            })
        );
    }

    #[test]
    fn a_page_with_more_must_move_its_sync_id_or_cursor() {
        let at = SyncCheckpoint::at(SyncId(5)).with_cursor("c5");
        let stuck = SyncBatchResult::page(vec![rec("a", 5)], at.clone());
        assert_eq!(
            validate(&stuck, Some(&at), 10),
            Err(ProtocolError::NoProgress {
                last_sync_id: SyncId(5),
                cursor: Some("c5".into())
            })
        );
        let cursor_moved = SyncBatchResult::page(
            vec![rec("a", 5)],
            SyncCheckpoint::at(SyncId(5)).with_cursor("c6"),
        );
        assert_eq!(validate(&cursor_moved, Some(&at), 10), Ok(()));
        // The last page may end where it started, and an empty page ends the pull anyway.
        let last = SyncBatchResult::final_page(vec![rec("a", 5)], at.clone());
        assert_eq!(validate(&last, Some(&at), 10), Ok(()));
        let empty: SyncBatchResult<Record> = SyncBatchResult::page(Vec::new(), at.clone());
        assert_eq!(validate(&empty, Some(&at), 10), Ok(()));
        // No saved checkpoint is the start: a page with more that stays there is stuck too.
        let at_start = SyncBatchResult::page(vec![rec("a", 1)], SyncCheckpoint::default());
        assert!(matches!(
            validate(&at_start, None, 10),
            Err(ProtocolError::NoProgress { .. })
        ));
    }

    #[test]
    fn an_oversized_page_and_an_empty_id_are_rejected() {
        let page = SyncBatchResult::last(vec![rec("a", 1), rec("b", 2)]);
        assert!(matches!(
            validate(&page, None, 1),
            Err(ProtocolError::PageTooLarge { .. })
        ));
        let page = SyncBatchResult::last(vec![rec("", 1)]);
        assert_eq!(validate(&page, None, 5), Err(ProtocolError::EmptyId));
    }

    #[test]
    fn the_last_page_without_a_checkpoint_ends_at_its_largest_sync_id() {
        let page = SyncBatchResult::last(vec![rec("a", 7), rec("b", 5)]);
        assert_eq!(
            checkpoint_after(&page, Some(&SyncCheckpoint::at(SyncId(3)))).last_sync_id,
            SyncId(7)
        );
        let stale = SyncBatchResult::last(vec![rec("a", 2)]);
        assert_eq!(
            checkpoint_after(&stale, Some(&SyncCheckpoint::at(SyncId(3)))).last_sync_id,
            SyncId(3)
        );
    }
}
