//! A complete client: one collection of a local SQLite file synced with a fero server over
//! HTTP, kept live by the change stream (no poll timer), until Ctrl-C.
//!
//! Start a server, then the client (the token must be one of the server's):
//! ```text
//! cargo run -p fero-server -- --db sync.db --listen 127.0.0.1:7700 --tokens tokens.toml
//! cargo run -p fero-http --example live_client -- http://127.0.0.1:7700 <token> notes client.db
//! ```
//! Edit the collection from another client and watch the cycles arrive here.

use fero::{FeatureSyncConfig, FeroSync, SyncEvent};
use fero_http::HttpRemote;
use fero_sqlite::SqliteStore;
use futures::StreamExt;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: live_client <base-url> <token> [collection] [db-file]";
    let url = args.next().ok_or(usage)?;
    let token = args.next().ok_or(usage)?;
    let collection = args.next().unwrap_or_else(|| "notes".to_owned());
    let db = args.next().unwrap_or_else(|| "client.db".to_owned());

    let store = SqliteStore::open(&db).await?;
    let remote = HttpRemote::builder(url, token)
        .device_id(store.device_id())
        .build()?;
    let handler = store.sync_handler(collection.as_str(), remote.clone())?;
    let sync = FeroSync::builder()
        .metadata_repo(store.metadata_repo())
        .initial_sync(
            collection.as_str(),
            handler.clone(),
            FeatureSyncConfig::new(),
        )
        .background_sync(collection.as_str(), handler, FeatureSyncConfig::new())
        .build()?;

    let mut events = sync.event_stream();
    sync.start_sync().await?;
    println!(
        "{collection}: {} documents after the first run",
        store.count(&collection).await?
    );
    let live = remote.live_triggers(sync.clone(), [(collection.as_str(), collection.as_str())]);

    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            event = events.next() => match event {
                Some(Ok(SyncEvent::BackgroundSyncCompleted { pulled, pushed, duration, .. })) => {
                    println!(
                        "cycle: {pulled} pulled, {pushed} pushed in {duration:?}; {} documents",
                        store.count(&collection).await?
                    );
                }
                Some(Ok(SyncEvent::BackgroundSyncFailed { error, .. })) => println!("cycle failed: {error}"),
                Some(_) => {}
                None => break,
            },
        }
    }

    live.stop();
    sync.dispose().await;
    let stats = remote.stats();
    println!(
        "{} requests, {} bytes sent, {} bytes received ({} decoded), {} transient failures",
        stats.requests,
        stats.bytes_sent,
        stats.bytes_received,
        stats.bytes_decoded,
        stats.transient_failures
    );
    Ok(())
}
