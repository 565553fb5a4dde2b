//! The reference model and the invariant checks.
//!
//! Every simulated edit writes a unique tag into its document's data. The model remembers, per
//! device and id, the tag of the edit that should still be pending: an edit replaces the
//! previous one (the store keeps only a document's newest state), and a `ConflictResolved` event
//! whose outcome drops the local edit (`ServerKept`) ends it. (By default the event accounts for
//! whatever edit of that item is pending; with strict accounting only for the edit whose content
//! it carries — see `SimBuilder::strict_conflict_events`.) At quiescence every remembered tag
//! must have been accepted by the server; one that was not is a local edit lost without a
//! conflict event.

use std::collections::BTreeMap;

use fero::{ConflictOutcome, SyncEvent, SyncId, Version};

use crate::error::Invariant;
use crate::handler::COLLECTION;
use crate::network::Ack;
use crate::server::{SimServer, tag_of};
use crate::store::SimStore;

/// A failed check: which invariant, and what was seen.
pub(crate) type Broke = (Invariant, String);

/// Counters of the model, for the report.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ModelCounts {
    /// Local edits (puts and deletes) made.
    pub edits: u64,
    /// Edits replaced by a newer edit of the same device before they were pushed.
    pub superseded: u64,
    /// Edits dropped by a conflict resolved for the server, with an event.
    pub dropped_by_conflict: u64,
    /// Conflict events seen, whatever the outcome.
    pub conflict_events: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Model {
    pending: BTreeMap<(usize, String), String>,
    next_tag: u64,
    /// A `ServerKept` event accounts only for the edit whose content it carries, not for a newer
    /// edit of the same item (see `SimBuilder::strict_conflict_events`).
    strict: bool,
    pub(crate) counts: ModelCounts,
}

impl Model {
    pub(crate) fn new_tag(&mut self, device: usize) -> String {
        self.next_tag += 1;
        format!("d{device}-{}", self.next_tag)
    }

    pub(crate) fn new(strict: bool) -> Self {
        Model {
            strict,
            ..Model::default()
        }
    }

    /// The number of the last tag handed out.
    pub(crate) fn last_tag(&self) -> u64 {
        self.next_tag
    }

    /// A local edit of `id` on `device`, tagged `tag`.
    pub(crate) fn edit(&mut self, device: usize, id: &str, tag: String) {
        self.counts.edits += 1;
        if self.pending.insert((device, id.to_owned()), tag).is_some() {
            self.counts.superseded += 1;
        }
    }

    /// An event of `device`'s engine.
    pub(crate) fn observe(&mut self, device: usize, event: &SyncEvent) {
        if let SyncEvent::ConflictResolved(conflict) = event {
            self.counts.conflict_events += 1;
            if conflict.outcome != ConflictOutcome::ServerKept {
                return;
            }
            let key = (device, conflict.id.clone());
            let named = conflict.local.get("data").and_then(tag_of);
            let accounted = match self.pending.get(&key) {
                Some(pending) => !self.strict || named == Some(pending.as_str()),
                None => false,
            };
            if accounted {
                self.pending.remove(&key);
                self.counts.dropped_by_conflict += 1;
            }
        }
    }

    /// Every edit still remembered must have reached the server.
    pub(crate) fn check_no_edit_lost(&self, server: &SimServer) -> Result<(), Broke> {
        for ((device, id), tag) in &self.pending {
            if !server.accepted_tag(tag) {
                return Err((
                    Invariant::LocalEditLostSilently,
                    format!(
                        "device {device}'s edit {tag} of {id} never reached the server and no \
                         conflict event dropped it"
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Start and end events of one device's current incarnation.
#[derive(Debug, Default)]
pub(crate) struct OpenRuns {
    initial: bool,
    background: bool,
}

impl OpenRuns {
    pub(crate) fn observe(&mut self, device: usize, event: &SyncEvent) -> Result<(), Broke> {
        use fero::SyncKind::{Background, Initial};
        // (which kind, true for a start and false for an end)
        let (kind, starts) = match event {
            SyncEvent::InitialSyncStarted { .. } => (Initial, true),
            SyncEvent::InitialSyncCompleted { .. } | SyncEvent::InitialSyncFailed { .. } => {
                (Initial, false)
            }
            SyncEvent::BackgroundSyncStarted { .. } => (Background, true),
            SyncEvent::BackgroundSyncCompleted { .. } | SyncEvent::BackgroundSyncFailed { .. } => {
                (Background, false)
            }
            SyncEvent::Cancelled { kind, .. } => (*kind, false),
            _ => return Ok(()),
        };
        let open = match kind {
            Initial => &mut self.initial,
            Background => &mut self.background,
        };
        if std::mem::replace(open, starts) == starts {
            let what = if starts {
                "started twice without ending"
            } else {
                "ended without starting"
            };
            return Err((
                Invariant::EventStreamGap,
                format!("device {device}: a {kind:?} sync {what} (event {event:?})"),
            ));
        }
        Ok(())
    }

    /// After a run returned, nothing may be left open.
    pub(crate) fn check_closed(&self, device: usize) -> Result<(), Broke> {
        if self.initial || self.background {
            return Err((
                Invariant::EventStreamGap,
                format!(
                    "device {device}: the run returned but its {} sync never reported an end",
                    if self.initial {
                        "initial"
                    } else {
                        "background"
                    }
                ),
            ));
        }
        Ok(())
    }
}

/// The checkpoint never moves backwards and never covers a row the durable store lacks.
///
/// A row whose current `sync_id` is at or below the checkpoint was written before the page that
/// carried the checkpoint was read (the server hands out `sync_id`s in commit order), so that
/// page or an earlier one delivered it: the device must hold it at that version or newer, or
/// hold a pending edit of it (kept by conflict resolution, or made after the engine listed edits).
pub(crate) fn check_checkpoint(
    device: usize,
    store: &SimStore,
    server: &SimServer,
    highest: &mut SyncId,
) -> Result<(), Broke> {
    let Some(checkpoint) = store.checkpoint(COLLECTION) else {
        return Ok(());
    };
    let at = checkpoint.last_sync_id;
    if at < *highest {
        return Err((
            Invariant::CheckpointWentBackwards,
            format!("device {device}'s checkpoint went from sync_id {highest} back to {at}"),
        ));
    }
    *highest = at;
    for row in server.rows(COLLECTION).values() {
        if row.sync_id > at {
            continue;
        }
        let held = store.get(&row.id);
        let ok = held
            .as_ref()
            .is_some_and(|doc| doc.modified || doc.version >= row.version);
        if !ok {
            return Err((
                Invariant::CheckpointPastData,
                format!(
                    "device {device}'s checkpoint is at sync_id {at}, past {} v{} (sync_id {}), \
                     but its durable store holds {}",
                    row.id,
                    row.version,
                    row.sync_id,
                    held.map_or("nothing".to_owned(), |d| format!(
                        "v{} modified={}",
                        d.version, d.modified
                    ))
                ),
            ));
        }
    }
    Ok(())
}

/// Every acknowledged write is the current row, or the next version of its row was written by
/// a change based on it (its writer had seen it): nothing acknowledged was overwritten blindly.
pub(crate) fn check_acks(acks: &[Ack], server: &SimServer) -> Result<(), Broke> {
    let history: BTreeMap<(String, String, Version), Option<Version>> = server
        .history()
        .into_iter()
        .map(|w| ((w.collection, w.id, w.version), w.base_version))
        .collect();
    for ack in acks {
        let lost = |what: String| {
            Err((
                Invariant::AcknowledgedWriteLost,
                format!(
                    "device {}'s write {} of {} was acknowledged at v{}, but {what}",
                    ack.device,
                    ack.tag.as_deref().unwrap_or("(untagged)"),
                    ack.id,
                    ack.version
                ),
            ))
        };
        let next = (ack.collection.clone(), ack.id.clone(), ack.version.next());
        if let Some(base) = history.get(&next) {
            if *base != Some(ack.version) {
                return lost(format!(
                    "v{} overwrote it from a change based on {}",
                    ack.version.next(),
                    base.map_or("nothing".to_owned(), |b| format!("v{b}"))
                ));
            }
            continue;
        }
        match server.row(&ack.collection, &ack.id) {
            Some(row)
                if row.version == ack.version
                    && row.deleted == ack.deleted
                    && (ack.deleted || tag_of(&row.data) == ack.tag.as_deref()) => {}
            other => {
                return lost(format!("the server holds {other:?}"));
            }
        }
    }
    Ok(())
}

/// At quiescence: the device holds exactly the server's rows, nothing pending.
pub(crate) fn check_converged(
    device: usize,
    store: &SimStore,
    server: &SimServer,
) -> Result<(), Broke> {
    let rows = server.rows(COLLECTION);
    let docs = store.docs();
    let differ = |what: String| {
        Err((
            Invariant::NotConverged,
            format!("device {device} differs from the server: {what}"),
        ))
    };
    for (id, row) in &rows {
        match docs.get(id) {
            None => return differ(format!("it lacks {id} v{}", row.version)),
            Some(doc) => {
                if doc.modified
                    || doc.version != row.version
                    || doc.deleted != row.deleted
                    || doc.data != row.data
                {
                    return differ(format!(
                        "{id}: server v{} deleted={} data={}, device v{} deleted={} \
                         modified={} data={}",
                        row.version,
                        row.deleted,
                        row.data,
                        doc.version,
                        doc.deleted,
                        doc.modified,
                        doc.data
                    ));
                }
            }
        }
    }
    if let Some((id, doc)) = docs.iter().find(|(id, _)| !rows.contains_key(*id)) {
        return differ(format!(
            "it holds {id} (v{}, modified={}), which the server never had",
            doc.version, doc.modified
        ));
    }
    Ok(())
}
