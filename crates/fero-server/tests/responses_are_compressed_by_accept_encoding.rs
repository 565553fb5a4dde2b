//! Over a real loopback port, responses are compressed with zstd or gzip as the client's
//! `Accept-Encoding` asks, say so in `Content-Encoding`, and decode to the plain response.

mod support;

use std::io::Read;

use axum::http::{Method, StatusCode};
use fero_server::{SeedRow, UserId};
use serde_json::{Value, json};
use support::{ALICE, IO_DEADLINE, Running, body_bytes, request, send, server};
use tokio::time::timeout;

async fn pull_with(addr: std::net::SocketAddr, accept: Option<&str>) -> (Option<String>, Vec<u8>) {
    let mut pull = request(
        Method::GET,
        addr,
        "/v1/collections/items/pull?limit=200",
        ALICE,
        None,
    );
    if let Some(accept) = accept {
        pull.headers_mut()
            .insert("accept-encoding", accept.parse().unwrap());
    }
    let response = timeout(IO_DEADLINE, send(addr, pull)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let encoding = response
        .headers()
        .get("content-encoding")
        .map(|v| v.to_str().unwrap().to_owned());
    (encoding, body_bytes(response).await.to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_and_zstd_are_chosen_by_accept_encoding() {
    let server = server();
    let rows = (0..200).map(|i| {
        SeedRow::new(
            format!("item-{i:07}"),
            json!({ "name": format!("name {i}"), "body": "x".repeat(100) }),
        )
    });
    server
        .seed(&UserId::new("alice"), "items", rows, 1_000)
        .await
        .unwrap();
    let mut running = Running::start(server).await;
    let addr = running.addr;

    let (encoding, plain) = pull_with(addr, None).await;
    assert_eq!(encoding, None, "no Accept-Encoding, no compression");
    let plain: Value = serde_json::from_slice(&plain).unwrap();
    assert_eq!(plain["items"].as_array().map(Vec::len), Some(200));

    let (encoding, gzipped) = pull_with(addr, Some("gzip")).await;
    assert_eq!(encoding.as_deref(), Some("gzip"));
    let mut unzipped = Vec::new();
    flate2::read::GzDecoder::new(&gzipped[..])
        .read_to_end(&mut unzipped)
        .unwrap();
    assert_eq!(serde_json::from_slice::<Value>(&unzipped).unwrap(), plain);
    assert!(
        gzipped.len() < unzipped.len() / 2,
        "gzip should shrink repetitive JSON"
    );

    let (encoding, zstded) = pull_with(addr, Some("zstd")).await;
    assert_eq!(encoding.as_deref(), Some("zstd"));
    let unzstded = zstd::stream::decode_all(&zstded[..]).unwrap();
    assert_eq!(serde_json::from_slice::<Value>(&unzstded).unwrap(), plain);

    running.shutdown();
    timeout(IO_DEADLINE, &mut running.serving)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
