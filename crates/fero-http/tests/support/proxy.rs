//! A fault-injecting HTTP proxy on 127.0.0.1:0 that forwards to an upstream server: scripted
//! faults for exact scenarios, and seeded random faults (drops, 503s, slow answers) for chaos.
//! Bodies stream through unchanged (compressed answers stay compressed, event streams stay
//! live).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::response::Response;
use fero::{RandomSource, SeededRandom};
use futures::StreamExt;

/// What the proxy does to one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    /// Forward it and its answer unchanged.
    Pass,
    /// Forward it, let the server answer in full, then break the connection mid-answer: the
    /// server committed, the client never learns the result.
    DropResponse,
    /// Break the connection without forwarding: the server never sees the request.
    DropRequest,
    /// Answer 503 without forwarding.
    Unavailable,
    /// Wait, then forward.
    Slow(Duration),
}

/// Seeded random faults, each with a probability in percent; the rest pass.
#[derive(Clone, Debug)]
pub(crate) struct Chaos {
    pub(crate) drop_response: u64,
    pub(crate) drop_request: u64,
    pub(crate) unavailable: u64,
    pub(crate) slow: u64,
    pub(crate) max_delay: Duration,
}

struct ProxyState {
    upstream: String,
    client: reqwest::Client,
    /// Faults for the next requests whose path ends with the given suffix, in order.
    script: Mutex<VecDeque<(String, Fault)>>,
    chaos: Mutex<Option<(Chaos, SeededRandom)>>,
    /// (path, fault applied) of every request, in arrival order.
    log: Mutex<Vec<(String, Fault)>>,
}

/// A running proxy; it lives until the test's runtime ends.
#[derive(Clone)]
pub(crate) struct FaultProxy {
    pub(crate) addr: SocketAddr,
    state: Arc<ProxyState>,
}

impl FaultProxy {
    /// A proxy forwarding to `upstream` (such as `http://127.0.0.1:7700`).
    pub(crate) async fn start(upstream: &str) -> FaultProxy {
        let state = Arc::new(ProxyState {
            upstream: upstream.trim_end_matches('/').to_owned(),
            // Answers pass through as the server encoded them.
            client: reqwest::Client::builder()
                .no_gzip()
                .no_zstd()
                .build()
                .unwrap(),
            script: Mutex::default(),
            chaos: Mutex::default(),
            log: Mutex::default(),
        });
        let router = Router::new().fallback(forward).with_state(state.clone());
        let addr = super::serve(router).await;
        FaultProxy { addr, state }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Applies `fault` to the next request whose path ends with `suffix` (after earlier scripted
    /// faults for it).
    pub(crate) fn script(&self, suffix: &str, fault: Fault) {
        self.state
            .script
            .lock()
            .unwrap()
            .push_back((suffix.to_owned(), fault));
    }

    /// Turns seeded random faults on (`Some`) or off (`None`).
    pub(crate) fn chaos(&self, chaos: Option<(Chaos, u64)>) {
        *self.state.chaos.lock().unwrap() =
            chaos.map(|(chaos, seed)| (chaos, SeededRandom::new(seed)));
    }

    /// The requests seen so far: (path, fault).
    pub(crate) fn log(&self) -> Vec<(String, Fault)> {
        self.state.log.lock().unwrap().clone()
    }
}

impl ProxyState {
    fn fault_for(&self, path: &str) -> Fault {
        let mut script = self.script.lock().unwrap();
        if let Some(index) = script.iter().position(|(suffix, _)| path.ends_with(suffix)) {
            return script.remove(index).map(|(_, fault)| fault).unwrap();
        }
        drop(script);
        // The change stream is left alone by chaos: its faults are tested on their own.
        if path.ends_with("/changes") {
            return Fault::Pass;
        }
        let mut chaos = self.chaos.lock().unwrap();
        let Some((chaos, random)) = chaos.as_mut() else {
            return Fault::Pass;
        };
        let roll = random.next_u64() % 100;
        let mut threshold = chaos.drop_response;
        if roll < threshold {
            return Fault::DropResponse;
        }
        threshold += chaos.drop_request;
        if roll < threshold {
            return Fault::DropRequest;
        }
        threshold += chaos.unavailable;
        if roll < threshold {
            return Fault::Unavailable;
        }
        threshold += chaos.slow;
        if roll < threshold {
            let max = u64::try_from(chaos.max_delay.as_millis()).unwrap().max(1);
            return Fault::Slow(Duration::from_millis(random.next_u64() % max));
        }
        Fault::Pass
    }
}

/// A body that fails at once: hyper breaks the connection mid-answer.
fn broken_body() -> Body {
    Body::from_stream(futures::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::other("fault proxy: connection dropped"))
    }))
}

const HOP_BY_HOP: [&str; 5] = [
    "connection",
    "keep-alive",
    "transfer-encoding",
    "host",
    "content-length",
];

async fn forward(State(state): State<Arc<ProxyState>>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    let fault = state.fault_for(&path);
    state
        .log
        .lock()
        .unwrap()
        .push((path.clone(), fault.clone()));
    match &fault {
        Fault::DropRequest => {
            return Response::builder().status(200).body(broken_body()).unwrap();
        }
        Fault::Unavailable => {
            return super::json(
                503,
                serde_json::json!({ "error": { "code": "unavailable", "message": "fault proxy: unavailable" } }),
            );
        }
        Fault::Slow(delay) => tokio::time::sleep(*delay).await,
        Fault::Pass | Fault::DropResponse => {}
    }

    let (parts, body) = request.into_parts();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or(path);
    let body = axum::body::to_bytes(body, 64 * 1024 * 1024).await.unwrap();
    let mut upstream = state
        .client
        .request(parts.method, format!("{}{path_and_query}", state.upstream))
        .body(body);
    for (name, value) in &parts.headers {
        if !HOP_BY_HOP.contains(&name.as_str()) {
            upstream = upstream.header(name, value);
        }
    }
    let answer = match upstream.send().await {
        Ok(answer) => answer,
        Err(error) => {
            return super::json(
                502,
                serde_json::json!({ "error": { "code": "unavailable", "message": format!("fault proxy: upstream failed: {error}") } }),
            );
        }
    };
    let mut response = Response::builder().status(answer.status());
    for (name, value) in answer.headers() {
        if !HOP_BY_HOP.contains(&name.as_str()) {
            response = response.header(name, value);
        }
    }
    if fault == Fault::DropResponse {
        // Let the server finish (and commit) before the client loses the answer.
        let _ = answer.bytes().await;
        return response.body(broken_body()).unwrap();
    }
    let stream = answer
        .bytes_stream()
        .map(|chunk| chunk.map_err(std::io::Error::other));
    response.body(Body::from_stream(stream)).unwrap()
}
