//! W4-style pull throughput of the reference server on PostgreSQL (and, for comparison, on a
//! SQLite file): seed N rows of bench-spec items, then pull them all by checkpoint in pages of
//! 1,000, once through the router in process and once over loopback HTTP. Prints one JSON line
//! per measurement.
//!
//! ```text
//! FERO_TEST_POSTGRES=postgres://postgres@127.0.0.1:5432/test \
//!     cargo run --release -p fero-server --example postgres_pull_throughput -- --n 100000
//! ```
//! It creates (and afterwards drops) a database `fero_bench_<pid>` on that server.

use std::error::Error;
use std::net::SocketAddr;
use std::time::Instant;

use axum::body::Body;
use axum::http::Request;
use fero::{RandomSource, SeededRandom, SyncCheckpoint};
use fero_protocol::PullResponse;
use fero_server::{PostgresStorage, SeedRow, Server, SqliteStorage, Storage, Tokens, UserId};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tower::ServiceExt;

const TOKEN: &str = "bench-token";
const PAGE: u32 = 1_000;
/// Rows per seeding transaction.
const SEED_PAGE: usize = 5_000;

type Result<T> = std::result::Result<T, Box<dyn Error + Send + Sync>>;

/// Bench-spec item `index`: a name of 20, an email of 30 and a body of 100 characters.
fn item(index: u64) -> SeedRow {
    let mut random = SeededRandom::new(index.wrapping_mul(0x9e37_79b9));
    let mut text = |len: usize| -> String {
        (0..len)
            .map(|_| char::from(b'a' + u8::try_from(random.next_u64() % 26).unwrap_or(0)))
            .collect()
    };
    let (name, email, body) = (text(20), format!("{}@example.com", text(18)), text(100));
    SeedRow::new(
        format!("item-{index:07}"),
        json!({ "name": name, "email": email, "body": body }),
    )
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
            line.split_whitespace().nth(1)?.parse::<f64>().ok()
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

fn report(workload: &str, backend: &str, n: u64, seconds: f64) {
    let line = json!({
        "workload": workload,
        "backend": backend,
        "n": n,
        "batch": PAGE,
        "seconds": (seconds * 1000.0).round() / 1000.0,
        "items_per_s": (n as f64 / seconds).round() as u64,
        "peak_rss_mb": (peak_rss_mb() * 10.0).round() / 10.0,
    });
    println!("{line}");
}

/// One page through the router in process.
async fn pull_in_process(
    server: &Server,
    checkpoint: Option<&SyncCheckpoint>,
) -> Result<PullResponse> {
    let body = json!({ "checkpoint": checkpoint, "limit": PAGE }).to_string();
    let request = Request::post("/v1/collections/items/pull")
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", "application/json")
        .body(Body::from(body))?;
    let response = server.router().oneshot(request).await?;
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await?;
    Ok(serde_json::from_slice(&bytes)?)
}

/// One page over a kept-alive loopback HTTP/1 connection.
async fn pull_over_http(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    addr: SocketAddr,
    checkpoint: Option<&SyncCheckpoint>,
) -> Result<PullResponse> {
    let body = json!({ "checkpoint": checkpoint, "limit": PAGE }).to_string();
    let request = Request::post(format!("http://{addr}/v1/collections/items/pull"))
        .header("host", addr.to_string())
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))?;
    // A kept-alive HTTP/1 connection takes the next request only once the last one is done.
    sender.ready().await?;
    let response = sender.send_request(request).await?;
    let bytes = response.into_body().collect().await?.to_bytes();
    Ok(serde_json::from_slice(&bytes)?)
}

/// Seeds `n` rows into `storage`, then measures pulling them all in process and over HTTP.
async fn measure(backend: &str, storage: impl Storage, n: u64) -> Result<()> {
    let server = Server::builder()
        .storage(storage)
        .tokens(Tokens::parse_list(&format!("{TOKEN}=bench"))?)
        .build()?;
    let started = Instant::now();
    let report_seed = server
        .seed(&UserId::new("bench"), "items", (1..=n).map(item), SEED_PAGE)
        .await?;
    assert_eq!(report_seed.written, n);
    report("seed", backend, n, started.elapsed().as_secs_f64());

    let started = Instant::now();
    let (mut checkpoint, mut pulled) = (None, 0u64);
    loop {
        let page = pull_in_process(&server, checkpoint.as_ref()).await?;
        pulled += page.items.len() as u64;
        checkpoint = Some(page.checkpoint);
        if !page.has_more {
            break;
        }
    }
    assert_eq!(pulled, n, "every row pulled once");
    report(
        "W4-pull-router",
        backend,
        n,
        started.elapsed().as_secs_f64(),
    );

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve(listener, async move {
        let _ = stopped.await;
    }));
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let connection = tokio::spawn(connection);
    let started = Instant::now();
    let (mut checkpoint, mut pulled) = (None, 0u64);
    loop {
        let page = pull_over_http(&mut sender, addr, checkpoint.as_ref()).await?;
        pulled += page.items.len() as u64;
        checkpoint = Some(page.checkpoint);
        if !page.has_more {
            break;
        }
    }
    assert_eq!(pulled, n, "every row pulled once");
    report("W4-pull-http", backend, n, started.elapsed().as_secs_f64());
    drop(sender);
    connection.await??;
    let _ = stop.send(());
    serving.await??;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let mut n: u64 = 100_000;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--n" => n = args.next().ok_or("--n needs a number")?.parse()?,
            other => return Err(format!("unknown argument {other:?}; use --n N").into()),
        }
    }
    let url = std::env::var("FERO_TEST_POSTGRES")
        .map_err(|_| "set FERO_TEST_POSTGRES=postgres://user@host:port/database")?;
    let (admin, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let database = format!("fero_bench_{}", std::process::id());
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
        .await?;
    admin
        .batch_execute(&format!("CREATE DATABASE {database}"))
        .await?;
    let bench_url = match url.rsplit_once('/') {
        Some((server, _)) => format!("{server}/{database}"),
        None => return Err("FERO_TEST_POSTGRES has no database part".into()),
    };
    let measured = async {
        let storage = PostgresStorage::builder(&bench_url)
            .pool_size(4)
            .connect()
            .await?;
        measure("postgres", storage, n).await?;
        let dir = tempfile::tempdir()?;
        measure(
            "sqlite",
            SqliteStorage::open(dir.path().join("bench.db"))?,
            n,
        )
        .await
    }
    .await;
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
        .await?;
    measured
}
