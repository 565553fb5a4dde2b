//! A user's own handler runs under the simulation through `SimBuilder::handler`: a correct one
//! passes, and one with a classic bug (a mutation id that is not unique per pending state) is
//! caught.

use fero::{
    ApplyContext, ApplyResult, BackgroundSyncHandler, HandlerResult, PushResult, RemoteChanges,
    SyncBatchResult, SyncCheckpoint,
};
use fero_protocol::{Document, MutationId, PullRequest, PushRequest, Remote};
use fero_sim::{DeviceContext, Sim, SimDoc, SimRemote, SimStore, batch_from, run_seeds};

/// An app's handler over the `Remote` trait, keeping its data in the simulation's store.
struct AppHandler {
    store: SimStore,
    remote: SimRemote,
    collection: String,
    /// The bug under test: the mutation id's sequence number is the document's version, which
    /// two different pending states (of two ids, or after a re-base) can share.
    version_as_mutation_seq: bool,
}

impl AppHandler {
    fn new(device: DeviceContext, version_as_mutation_seq: bool) -> Self {
        AppHandler {
            store: device.store,
            remote: device.remote,
            collection: device.collection,
            version_as_mutation_seq,
        }
    }
}

#[fero::async_trait]
impl BackgroundSyncHandler for AppHandler {
    type Local = SimDoc;
    type Server = Document;

    async fn get_locally_modified(&self) -> HandlerResult<Vec<SimDoc>> {
        Ok(self.store.modified()?)
    }

    async fn fetch_remote_changes(
        &self,
        checkpoint: Option<&SyncCheckpoint>,
        batch_size: usize,
    ) -> HandlerResult<SyncBatchResult<Document>> {
        let request = PullRequest {
            checkpoint: checkpoint.cloned(),
            limit: batch_size as u32,
            subscription: None,
        };
        Ok(batch_from(
            self.remote.pull(&self.collection, &request).await?,
        ))
    }

    async fn apply_remote_changes(
        &self,
        changes: RemoteChanges<SimDoc, Document>,
        context: &ApplyContext,
    ) -> HandlerResult<ApplyResult> {
        Ok(self.store.apply(changes, context).await?)
    }

    async fn push_local_changes(&self, items: &[SimDoc]) -> HandlerResult<PushResult<Document>> {
        let changes = items
            .iter()
            .map(|doc| {
                let mut change = doc.to_change(self.store.device());
                if self.version_as_mutation_seq {
                    change.mutation_id = MutationId::new(self.store.device(), doc.version.0);
                }
                change
            })
            .collect();
        let response = self
            .remote
            .push(&self.collection, &PushRequest { changes })
            .await?;
        Ok(self.store.record_push(items, &response)?)
    }
}

#[test]
fn a_correct_user_handler_passes_the_simulation() {
    let summary = run_seeds(0..60, 2, true, |_| {
        Sim::builder().handler(|device| AppHandler::new(device, false))
    });
    if let Some((seed, error)) = summary.first_failure() {
        panic!("seed {seed} failed with the user's handler: {error}");
    }
    println!(
        "fero-sim: seeds 0..60 with a user handler: {:?}",
        summary.totals
    );
    assert_eq!(summary.passed, 60);
}

#[test]
fn a_user_handler_reusing_mutation_ids_is_caught() {
    let summary = run_seeds(0..60, 2, true, |_| {
        Sim::builder().handler(|device| AppHandler::new(device, true))
    });
    let Some((seed, error)) = summary.first_failure() else {
        panic!("the mutation-id bug survived seeds 0..60");
    };
    println!("caught at seed {seed}: {error}");
    assert!(error.violation().is_some());
}
