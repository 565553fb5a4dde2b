//! fero_sync's README example in Rust: user preferences by initial sync, contacts and messages by
//! background sync (messages after contacts), with handlers written by hand against an
//! in-memory "server".
//!
//! Run it with `cargo run -p fero --example fero_sync_readme`. `tests/readme_example.rs` runs the
//! same [`run`] and checks its [`Outcome`], so this example cannot silently stop working.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use fero::memory::{MemoryRemote, MemoryStore};
use fero::{
    ApplyContext, ApplyResult, ConflictResolutionStrategy, FeatureSyncConfig, FeroSync,
    HandlerResult, InMemorySyncMetadataRepo, InitialSyncHandler, ServerItem, SyncBatchResult,
    SyncCheckpoint, SyncEvent, SyncId, SyncMetadataRepo, SyncPayload, Version,
};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

/// A user preference as the server sends it.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Preference {
    key: String,
    value: String,
    sync_id: u64,
    version: u64,
}

impl ServerItem for Preference {
    fn id(&self) -> &str {
        &self.key
    }
    fn sync_id(&self) -> SyncId {
        SyncId(self.sync_id)
    }
    fn version(&self) -> Version {
        Version(self.version)
    }
}

/// The hand-written initial-sync handler: pages through the server's preferences and keeps them
/// in the app's own map.
#[derive(Debug, Clone, Default)]
struct PreferencesHandler {
    server: Arc<Vec<Preference>>,
    local: Arc<Mutex<HashMap<String, String>>>,
}

#[fero::async_trait]
impl InitialSyncHandler for PreferencesHandler {
    type Item = Preference;

    async fn fetch_remote_data(
        &self,
        checkpoint: Option<&SyncCheckpoint>,
        batch_size: usize,
    ) -> HandlerResult<SyncBatchResult<Preference>> {
        let after = checkpoint.map_or(0, |c| c.last_sync_id.0);
        let page: Vec<_> = self
            .server
            .iter()
            .filter(|p| p.sync_id > after)
            .take(batch_size + 1)
            .cloned()
            .map(SyncPayload::new)
            .collect();
        if page.len() > batch_size {
            let page = page[..batch_size].to_vec();
            let last = SyncCheckpoint::at(page[batch_size - 1].item.sync_id());
            Ok(SyncBatchResult::page(page, last))
        } else {
            Ok(SyncBatchResult::last(page))
        }
    }

    async fn save_to_local(
        &self,
        items: Vec<SyncPayload<Preference>>,
        _context: &ApplyContext,
    ) -> HandlerResult<ApplyResult> {
        let mut local = self.local.lock().expect("no panics while holding the lock");
        for p in &items {
            local.insert(p.item.key.clone(), p.item.value.clone());
        }
        Ok(ApplyResult::applied(items.len()))
    }
}

/// What the example ends with: each side's data and where each feature's pull stands.
#[derive(Debug)]
pub struct Outcome {
    /// The preferences saved locally by the initial sync.
    pub preferences: HashMap<String, String>,
    /// Contacts held locally, and on the server.
    pub contacts: usize,
    /// Messages held locally, and on the server.
    pub messages: usize,
    /// The local stores equal the servers (ids, versions and data).
    pub converged: bool,
    /// Each feature's saved checkpoint.
    pub checkpoints: HashMap<&'static str, Option<SyncCheckpoint>>,
    /// What the events said, one line each, in order.
    pub log: Vec<String>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let outcome = run().await?;
    for line in &outcome.log {
        println!("{line}");
    }
    println!(
        "preferences: {} saved locally; converged: {} contacts, {} messages",
        outcome.preferences.len(),
        outcome.contacts,
        outcome.messages
    );
    Ok(())
}

/// The whole example: an initial sync, offline edits on both sides, a background cycle.
///
/// # Errors
/// A build error, or a sync run that did not complete.
pub async fn run() -> Result<Outcome, Box<dyn std::error::Error>> {
    let preferences = PreferencesHandler {
        server: Arc::new(
            [
                ("theme", "dark"),
                ("language", "en"),
                ("notifications", "on"),
            ]
            .iter()
            .enumerate()
            .map(|(i, (k, v))| Preference {
                key: (*k).into(),
                value: (*v).into(),
                sync_id: i as u64 + 1,
                version: 1,
            })
            .collect(),
        ),
        ..PreferencesHandler::default()
    };
    let contacts_server = MemoryRemote::new();
    let messages_server = MemoryRemote::new();
    for i in 0..250 {
        contacts_server.insert(
            format!("contact-{i}"),
            serde_json::json!({ "name": format!("Contact {i}") }),
        );
        messages_server.insert(
            format!("message-{i}"),
            serde_json::json!({ "to": format!("contact-{i}") }),
        );
    }
    let (contacts, messages) = (MemoryStore::new(), MemoryStore::new());

    let repo = Arc::new(InMemorySyncMetadataRepo::new());
    let sync = FeroSync::builder()
        .metadata_repo_arc(repo.clone())
        .initial_sync(
            "user_preferences",
            preferences.clone(),
            FeatureSyncConfig::new().batch_size(2),
        )
        .background_sync(
            "contacts",
            contacts.handler(contacts_server.clone()),
            FeatureSyncConfig::new().priority(10),
        )
        .background_sync(
            "messages",
            messages.handler(messages_server.clone()),
            FeatureSyncConfig::new()
                .depends_on("contacts")
                .batch_size(100),
        )
        .conflict_strategy(ConflictResolutionStrategy::HighestVersionWins)
        .build()?;

    let mut events = sync.event_stream();
    let mut log = Vec::new();
    sync.start_sync().await?;
    describe_events(&mut events, &mut log);

    // Offline edits on both sides, then a background cycle.
    contacts.put(
        "contact-1",
        serde_json::json!({ "name": "Ada (edited on this device)" }),
    );
    contacts_server.insert(
        "contact-1",
        serde_json::json!({ "name": "Ada (edited elsewhere)" }),
    );
    messages.put(
        "message-new",
        serde_json::json!({ "to": "contact-1", "text": "hello" }),
    );
    sync.sync_now().await?;
    describe_events(&mut events, &mut log);

    let mut checkpoints = HashMap::new();
    for feature in ["user_preferences", "contacts", "messages"] {
        checkpoints.insert(feature, repo.checkpoint(&feature.into()).await?);
    }
    let outcome = Outcome {
        preferences: preferences.local.lock().expect("no panics").clone(),
        contacts: contacts.len(),
        messages: messages.len(),
        converged: contacts.snapshot() == contacts_server.snapshot()
            && messages.snapshot() == messages_server.snapshot(),
        checkpoints,
        log,
    };
    sync.dispose().await;
    Ok(outcome)
}

/// Describes the events received so far, a line each.
fn describe_events(events: &mut fero::SyncEventStream, log: &mut Vec<String>) {
    while let Some(Some(Ok(event))) = futures::FutureExt::now_or_never(events.next()) {
        match event {
            SyncEvent::InitialSyncCompleted { feature, items, .. } => {
                log.push(format!("{feature}: initial sync done, {items} items"))
            }
            SyncEvent::BackgroundSyncCompleted {
                feature,
                pulled,
                pushed,
                conflicts,
                ..
            } => {
                log.push(format!(
                    "{feature}: background sync done, {pulled} pulled, {pushed} pushed, {conflicts} conflicts"
                ))
            }
            SyncEvent::ConflictResolved(c) => {
                log.push(format!("{}: conflict on {} -> {}", c.feature, c.id, c.outcome))
            }
            _ => {}
        }
    }
}
