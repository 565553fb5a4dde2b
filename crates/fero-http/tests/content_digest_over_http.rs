//! Digest version 2 end to end: a real `fero-server` (SQLite file and PostgreSQL backends) and a
//! real client (`SqliteStore` + `HttpRemote` + `FeroSync`) compute the same content digest for
//! the same rows, whatever key order each side stores; a local row hand-edited at its version
//! is content drift that `verify()` reports and a new initial sync heals; and an older server
//! that ignores `?version=2` or refuses it makes the client fall back to version 1.

mod support;

#[path = "../../fero-server/tests/support/postgres.rs"]
#[allow(dead_code, unreachable_pub)]
mod postgres;

use std::path::{Path, PathBuf};

use axum::Router;
use axum::routing::get;
use fero::{FeatureSyncConfig, FeroSync};
use fero_protocol::{DigestVersion, Remote};
use fero_server::{Server, Storage, Tokens, UserId};
use fero_sqlite::SqliteStore;
use serde_json::json;

/// Where the server's rows live, to change one behind its back.
enum Backend {
    Sqlite(PathBuf),
    Postgres(postgres::TestDatabase),
}

impl Backend {
    async fn rewrite(&self, id: &str, text: &str) {
        let changed = match self {
            Backend::Sqlite(path) => rusqlite::Connection::open(path)
                .unwrap()
                .execute("UPDATE rows SET data = ?1 WHERE id = ?2", [text, id])
                .unwrap() as u64,
            Backend::Postgres(database) => database
                .client()
                .await
                .execute(
                    "UPDATE fero_rows SET data = $1 WHERE id = $2",
                    &[&text, &id],
                )
                .await
                .unwrap(),
        };
        assert_eq!(changed, 1);
    }
}

fn rewrite_local(path: &Path, id: &str, text: &str) {
    let changed = rusqlite::Connection::open(path)
        .unwrap()
        .execute(
            "UPDATE fero_documents SET data = ?1 WHERE collection = 'notes' AND id = ?2",
            [text, id],
        )
        .unwrap();
    assert_eq!(changed, 1);
}

async fn client_and_server_agree_on_content(storage: impl Storage, backend: Backend) {
    let server = Server::builder()
        .storage(storage)
        .tokens(Tokens::parse_list("alice-phone=alice").unwrap())
        .build()
        .unwrap();
    server
        .seed(
            &UserId::new("alice"),
            "notes",
            (0..50).map(|i| {
                fero_server::SeedRow::new(
                    format!("s-{i:03}"),
                    json!({ "z": i, "a": { "é": [i, 0.5, null] } }),
                )
            }),
            100,
        )
        .await
        .unwrap();
    let addr = support::serve(server.router()).await;
    let remote = support::remote(addr, "alice-phone");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("client.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let handler = store.sync_handler("notes", remote.clone()).unwrap();
    let sync = FeroSync::builder()
        .metadata_repo(store.metadata_repo())
        .initial_sync("notes", handler.clone(), FeatureSyncConfig::new())
        .background_sync("notes", handler.clone(), FeatureSyncConfig::new())
        .build()
        .unwrap();
    sync.run().await.unwrap();
    store
        .put(
            "notes",
            "mine",
            json!({ "title": "Zoë — 東京 😀", "body": "a \"b\"\n\\c", "deep": { "y": [{ "x": 1e100 }], "b": true } }),
        )
        .await
        .unwrap();
    sync.sync_now().await.unwrap();

    let from_server = remote.content_digest("notes").await.unwrap();
    let from_store = store.content_digest("notes").await.unwrap();
    let from_storage = server
        .storage()
        .content_digest(&UserId::new("alice"), "notes")
        .await
        .unwrap();
    assert_eq!(from_server.count, 51);
    assert_eq!(
        (from_server.count, from_server.digest.as_str()),
        (from_store.count(), from_store.hex().as_str())
    );
    assert_eq!(from_storage, from_store);

    // The server's stored text in another key order and spacing: the same content.
    backend
        .rewrite(
            "mine",
            "{\"deep\": {\"b\": true, \"y\": [{\"x\": 1e100}]},\n \"body\": \"a \\\"b\\\"\\n\\\\c\", \
             \"title\": \"Zo\\u00eb \\u2014 \\u6771\\u4eac \\ud83d\\ude00\"}",
        )
        .await;
    let report = handler.verify().await.unwrap();
    assert!(report.is_match(), "{report}");
    assert_eq!(report.digest_version, DigestVersion::V2);

    // A local row hand-edited at its version: version 1 is blind, version 2 is not.
    rewrite_local(&path, "s-007", r#"{"z":7,"a":{"é":[7,0.5,"forged"]}}"#);
    assert_eq!(
        remote.digest("notes").await.unwrap().digest,
        store.digest("notes").await.unwrap().hex()
    );
    let report = handler.verify().await.unwrap();
    assert!(report.is_content_drift(), "{report}");

    sync.trigger_initial_sync("notes").await.unwrap();
    let report = handler.verify().await.unwrap();
    assert!(report.is_match(), "{report}");
    assert_eq!(
        store.get("notes", "s-007").await.unwrap().unwrap().data,
        json!({ "z": 7, "a": { "é": [7, 0.5, null] } })
    );
    sync.dispose().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_and_sqlite_server_agree_on_content_and_heal_content_drift() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("server.db");
    let storage = fero_server::SqliteStorage::open(&path).unwrap();
    client_and_server_agree_on_content(storage, Backend::Sqlite(path)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_and_postgres_server_agree_on_content_and_heal_content_drift() {
    let Some(database) = postgres::TestDatabase::create("content_digest").await else {
        return;
    };
    let storage = fero_server::PostgresStorage::connect(&database.url)
        .await
        .unwrap();
    client_and_server_agree_on_content(storage, Backend::Postgres(database)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_server_makes_the_client_verify_with_version_1() {
    // A server from before version 2 ignores the query and answers version 1.
    let ignores = Router::new().route(
        "/v1/collections/{name}/digest",
        get(|| async { support::json(200, json!({ "count": 0, "digest": "0000000000000000" })) }),
    );
    let remote = support::remote(support::serve(ignores).await, "t");
    let error = remote.content_digest("notes").await.unwrap_err();
    assert!(error.is_unsupported(), "{error}");

    let store = SqliteStore::open_in_memory().await.unwrap();
    let report = store
        .sync_handler("notes", remote)
        .unwrap()
        .verify()
        .await
        .unwrap();
    assert_eq!(report.digest_version, DigestVersion::V1);
    assert!(report.is_match(), "{report}");

    // One that refuses the query.
    let refuses = Router::new().route(
        "/v1/collections/{name}/digest",
        get(|| async {
            support::json(
                422,
                json!({ "error": { "code": "invalid_request", "message": "unknown query" } }),
            )
        }),
    );
    let remote = support::remote(support::serve(refuses).await, "t");
    assert!(
        remote
            .content_digest("notes")
            .await
            .unwrap_err()
            .is_unsupported()
    );
}
