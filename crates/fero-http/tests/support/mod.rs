//! Test support shared by the integration tests: a loopback stub server, remotes with short
//! timeouts, and (in `proxy`) a fault-injecting HTTP proxy.
//!
//! Each test binary uses only part of it.
#![allow(dead_code)]

pub(crate) mod device;
pub(crate) mod proxy;
pub(crate) mod server;

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use fero_http::HttpRemote;
use tokio::net::TcpListener;

/// Serves `router` on 127.0.0.1, port 0, until the test's runtime ends.
pub(crate) async fn serve(router: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    addr
}

/// A remote for `addr` with the token `token` and timeouts short enough for tests.
pub(crate) fn remote(addr: SocketAddr, token: &str) -> HttpRemote {
    HttpRemote::builder(format!("http://{addr}"), token)
        .connect_timeout(Duration::from_secs(2))
        .request_timeout(Duration::from_secs(5))
        .seed(1)
        .build()
        .unwrap()
}

/// A JSON body answer with `status`.
pub(crate) fn json(status: u16, body: serde_json::Value) -> axum::response::Response {
    axum::response::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body.to_string()))
        .unwrap()
}
