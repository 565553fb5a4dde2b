//! A fresh PostgreSQL database per test, created on the server named by `FERO_TEST_POSTGRES` and
//! dropped when the test ends, so tests run in parallel and rerun cleanly.
//!
//! Without `FERO_TEST_POSTGRES` a test skips with a printed reason, unless
//! `FERO_REQUIRE_POSTGRES=1` (CI), where it fails.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio_postgres::NoTls;

/// The variable naming the PostgreSQL server for tests.
pub const URL_VARIABLE: &str = "FERO_TEST_POSTGRES";

static NEXT: AtomicU64 = AtomicU64::new(0);

/// The test server's URL; `None` (after printing why) when tests should skip.
///
/// # Panics
/// When the URL is missing and `FERO_REQUIRE_POSTGRES=1`.
pub fn server_url() -> Option<String> {
    match std::env::var(URL_VARIABLE) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            let required = std::env::var("FERO_REQUIRE_POSTGRES").is_ok_and(|v| v == "1");
            assert!(
                !required,
                "FERO_REQUIRE_POSTGRES=1 but {URL_VARIABLE} is not set; set it to e.g. \
                 postgres://postgres@127.0.0.1:5432/test"
            );
            println!(
                "skipped: {URL_VARIABLE} is not set (set it to e.g. \
                 postgres://postgres@127.0.0.1:5432/test to run the PostgreSQL tests)"
            );
            None
        }
    }
}

/// `url` with its database replaced by `database`.
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (url, String::new()),
    };
    let authority = base.find("://").map_or(0, |i| i + 3);
    let prefix = match base[authority..].find('/') {
        Some(slash) => &base[..authority + slash],
        None => base,
    };
    format!("{prefix}/{database}{query}")
}

/// A database that exists for one test.
pub struct TestDatabase {
    /// Its URL.
    pub url: String,
    /// Its name.
    pub name: String,
    server: String,
}

impl TestDatabase {
    /// Creates a fresh, empty database whose name starts with `fero_t_{label}`; `None` when
    /// PostgreSQL tests skip.
    pub async fn create(label: &str) -> Option<TestDatabase> {
        let server = server_url()?;
        let label: String = label
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(24)
            .collect::<String>()
            .to_ascii_lowercase();
        let name = format!(
            "fero_t_{label}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        let client = admin(&server).await;
        // A database left by an earlier run that died with the same process id goes first.
        // Two statements: a multi-statement string would run as one transaction, which
        // CREATE DATABASE refuses.
        for statement in [
            format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            format!("CREATE DATABASE {name}"),
        ] {
            client
                .batch_execute(&statement)
                .await
                .unwrap_or_else(|e| panic!("{statement} failed: {e:?}"));
        }
        Some(TestDatabase {
            url: with_database(&server, &name),
            name,
            server,
        })
    }

    /// A plain client on this database (for inspecting it).
    pub async fn client(&self) -> tokio_postgres::Client {
        admin(&self.url).await
    }
}

async fn admin(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {url}: {e:?}"));
    tokio::spawn(connection);
    client
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime, which cannot be blocked on: a thread of its own
        // drops the database (and ends the connections the test left open).
        let (server, name) = (self.server.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let client = admin(&server).await;
                client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test database {}: {dropped:?}", self.name);
        }
    }
}
