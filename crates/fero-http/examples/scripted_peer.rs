//! A fero Rust client driven line by line on standard input, for tests in other languages
//! (the JavaScript client's tests run it beside two RxDB clients): a local SQLite store synced
//! with a fero server over HTTP, with the default conflict strategy (highest version wins).
//!
//! ```text
//! cargo run -p fero-http --example scripted_peer -- http://127.0.0.1:7700 <token> todos
//! put todo-1 {"title":"milk"}     -> ok
//! delete todo-1                   -> ok
//! sync                            -> ok <pulled> <pushed>
//! dump                            -> {"todo-1":{"version":2,"data":{...}}, ...}  (live rows)
//! quit
//! ```
//! Every command answers one line; a failure answers `error <message>` and the peer goes on.

use std::collections::BTreeMap;

use fero::{FeatureSyncConfig, FeroSync};
use fero_http::HttpRemote;
use fero_sqlite::SqliteStore;
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: scripted_peer <base-url> <token> <collection>";
    let url = args.next().ok_or(usage)?;
    let token = args.next().ok_or(usage)?;
    let collection = args.next().ok_or(usage)?;

    let store = SqliteStore::open_in_memory().await?;
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
    sync.run().await?;
    println!("ready");

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let mut parts = line.trim().splitn(3, ' ');
        let answer: Result<String, Box<dyn std::error::Error>> = async {
            match (parts.next(), parts.next(), parts.next()) {
                (Some("put"), Some(id), Some(json)) => {
                    store
                        .put(&collection, id, serde_json::from_str(json)?)
                        .await?;
                    Ok("ok".to_owned())
                }
                (Some("delete"), Some(id), None) => {
                    store.delete(&collection, id).await?;
                    Ok("ok".to_owned())
                }
                (Some("sync"), None, None) => {
                    let report = sync.sync_now().await?;
                    Ok(format!("ok {report:?}").replace('\n', " "))
                }
                (Some("dump"), None, None) => {
                    let rows: BTreeMap<String, serde_json::Value> = store
                        .query(&collection)
                        .await?
                        .into_iter()
                        .map(|doc| {
                            let row =
                                serde_json::json!({ "version": doc.version.0, "data": doc.data });
                            (doc.id, row)
                        })
                        .collect();
                    Ok(serde_json::to_string(&rows)?)
                }
                (Some("quit"), None, None) => Ok("bye".to_owned()),
                _ => Err(format!("unknown command {line:?}").into()),
            }
        }
        .await;
        match answer {
            Ok(text) => println!("{text}"),
            Err(error) => println!("error {}", error.to_string().replace('\n', " ")),
        }
        if line.trim() == "quit" {
            break;
        }
    }
    sync.dispose().await;
    Ok(())
}
