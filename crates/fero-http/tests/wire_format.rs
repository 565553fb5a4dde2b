//! What goes over the wire: every request carries the bearer token, the protocol header, the
//! device id and `Accept-Encoding: zstd, gzip`; compressed answers are decoded, and the stats
//! count their compressed size as received and their decoded size as decoded.

mod support;

use axum::Router;
use axum::extract::Path;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::post;
use fero::{SyncCheckpoint, SyncId, Timestamp, Version};
use fero_protocol::{Document, PullRequest, PullResponse, Remote};
use serde_json::json;
use support::{json, serve};
use tokio::io::AsyncReadExt;

/// A page of `n` similar items: compresses well, as real pages do.
fn page(n: u64) -> PullResponse {
    PullResponse {
        items: (1..=n)
            .map(|i| Document {
                id: format!("item-{i:07}"),
                sync_id: SyncId(i),
                version: Version(1),
                updated_at: Timestamp(1_700_000_000_000),
                deleted: false,
                data: json!({ "name": format!("Ada Lovelace {i}"), "email": "ada@example.com" }),
            })
            .collect(),
        checkpoint: SyncCheckpoint::at(SyncId(n)),
        has_more: false,
    }
}

/// Refuses a request missing any of the headers the protocol requires.
fn header_problems(headers: &HeaderMap) -> Vec<String> {
    let expect = [
        ("authorization", "Bearer s3cret"),
        ("fero-protocol", "1"),
        ("fero-device", "phone-1"),
        ("accept-encoding", "zstd, gzip"),
        ("content-type", "application/json"),
        ("user-agent", "notes/2.0"),
    ];
    expect
        .iter()
        .filter(|(name, value)| headers.get(*name).and_then(|v| v.to_str().ok()) != Some(*value))
        .map(|(name, value)| format!("{name} should be {value:?}, got {:?}", headers.get(*name)))
        .collect()
}

async fn compress(encoding: &str, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match encoding {
        "gzip" => {
            async_compression::tokio::bufread::GzipEncoder::new(body)
                .read_to_end(&mut out)
                .await
                .unwrap();
        }
        "zstd" => {
            async_compression::tokio::bufread::ZstdEncoder::new(body)
                .read_to_end(&mut out)
                .await
                .unwrap();
        }
        _ => out.extend_from_slice(body),
    }
    out
}

async fn pull(Path(name): Path<String>, headers: HeaderMap) -> Response {
    let problems = header_problems(&headers);
    if !problems.is_empty() {
        return json(
            400,
            json!({ "error": { "code": "invalid_request", "message": problems.join("; ") } }),
        );
    }
    let body = serde_json::to_vec(&page(200)).unwrap();
    let encoding = match name.as_str() {
        "zipped" => "gzip",
        "zstded" => "zstd",
        _ => "identity",
    };
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .header("content-encoding", encoding)
        .header("fero-protocol", "1")
        .body(axum::body::Body::from(compress(encoding, &body).await))
        .unwrap()
}

fn configured_remote(addr: std::net::SocketAddr) -> fero_http::HttpRemote {
    fero_http::HttpRemote::builder(format!("http://{addr}"), "s3cret")
        .device_id("phone-1")
        .user_agent("notes/2.0")
        .build()
        .unwrap()
}

#[tokio::test]
async fn requests_carry_token_protocol_device_and_accepted_encodings() {
    let addr = serve(Router::new().route("/v1/collections/{name}/pull", post(pull))).await;
    let remote = configured_remote(addr);
    let request = PullRequest {
        checkpoint: None,
        limit: 500,
        subscription: None,
    };
    let answer = remote.pull("plain", &request).await;
    assert_eq!(answer.unwrap(), page(200));
}

#[tokio::test]
async fn gzip_and_zstd_answers_are_decoded_and_counted_at_their_wire_size() {
    let addr = serve(Router::new().route("/v1/collections/{name}/pull", post(pull))).await;
    let plain_size = serde_json::to_vec(&page(200)).unwrap().len() as u64;
    let request = PullRequest {
        checkpoint: None,
        limit: 500,
        subscription: None,
    };
    for collection in ["zipped", "zstded", "plain"] {
        let remote = configured_remote(addr);
        let answer = remote.pull(collection, &request).await.unwrap();
        assert_eq!(answer, page(200), "{collection}");

        let stats = remote.stats();
        assert_eq!(stats.requests, 1);
        assert_eq!(stats.bytes_decoded, plain_size, "{collection}");
        assert_eq!(
            stats.bytes_sent,
            serde_json::to_vec(&request).unwrap().len() as u64
        );
        if collection == "plain" {
            assert_eq!(stats.bytes_received, plain_size);
        } else {
            assert!(
                stats.bytes_received * 4 < plain_size,
                "{collection}: {} compressed bytes for {plain_size}",
                stats.bytes_received
            );
        }
    }
}

#[tokio::test]
async fn an_answer_over_the_size_limit_is_refused_compressed_or_not() {
    let addr = serve(Router::new().route("/v1/collections/{name}/pull", post(pull))).await;
    let request = PullRequest {
        checkpoint: None,
        limit: 500,
        subscription: None,
    };
    for collection in ["plain", "zipped", "zstded"] {
        let remote = fero_http::HttpRemote::builder(format!("http://{addr}"), "s3cret")
            .device_id("phone-1")
            .user_agent("notes/2.0")
            .max_response_bytes(4_000)
            .build()
            .unwrap();
        let error = remote.pull(collection, &request).await.unwrap_err();
        assert_eq!(
            error.kind,
            fero_protocol::RemoteErrorKind::Protocol,
            "{collection}: {error}"
        );
        assert!(
            error.message.contains("4000 bytes"),
            "{collection}: {error}"
        );
    }
}

#[tokio::test]
async fn with_compression_off_the_client_asks_for_identity_and_counts_plain_bytes() {
    // Answers 200 only to a request that asks for no compression.
    let plain = |headers: HeaderMap| async move {
        let encoding = headers.get("accept-encoding").and_then(|v| v.to_str().ok());
        if encoding == Some("identity") {
            json(200, serde_json::to_value(page(50)).unwrap())
        } else {
            json(
                400,
                json!({ "error": { "code": "invalid_request", "message": format!("{encoding:?}") } }),
            )
        }
    };
    let addr = serve(Router::new().route("/v1/collections/{name}/pull", post(plain))).await;
    let remote = fero_http::HttpRemote::builder(format!("http://{addr}"), "s3cret")
        .compression(false)
        .build()
        .unwrap();
    let request = PullRequest {
        checkpoint: None,
        limit: 100,
        subscription: None,
    };
    assert_eq!(remote.pull("plain", &request).await.unwrap(), page(50));
    let stats = remote.stats();
    assert!(stats.bytes_received > 0);
    assert_eq!(
        stats.bytes_received, stats.bytes_decoded,
        "nothing was compressed"
    );
}
