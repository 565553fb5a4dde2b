//! The `fero-server` program: `--help` documents its options, and a real process started on
//! port 0 with a token file and `FERO_TOKENS` answers requests and exits cleanly on SIGTERM.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BINARY: &str = env!("CARGO_BIN_EXE_fero-server");
/// Bounds every wait on the child process (real cross-process I/O).
const DEADLINE: Duration = Duration::from_secs(30);

/// One HTTP/1.1 GET over a fresh connection; the whole raw response.
fn get(addr: &str, path: &str, token: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

#[test]
fn help_lists_every_option() {
    let output = Command::new(BINARY).arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for option in [
        "--db",
        "--listen",
        "--tokens",
        "--token-list",
        "FERO_TOKENS",
        "--body-limit",
        ":memory:",
        "postgres://",
        "--pool-size",
    ] {
        assert!(
            help.contains(option),
            "--help does not mention {option}:\n{help}"
        );
    }
}

#[test]
fn the_program_serves_with_file_and_env_tokens_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.toml");
    std::fs::write(&tokens, "[tokens]\n\"file-token\" = \"alice\"\n").unwrap();
    let mut child = Command::new(BINARY)
        .args(["--db", ":memory:", "--listen", "127.0.0.1:0", "--tokens"])
        .arg(&tokens)
        .env("FERO_TOKENS", "env-token=bob")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("fero-server listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();

    assert!(get(&addr, "/healthz", "none").starts_with("HTTP/1.1 200"));
    assert!(get(&addr, "/v1/collections/notes/digest", "file-token").starts_with("HTTP/1.1 200"));
    assert!(get(&addr, "/v1/collections/notes/digest", "env-token").starts_with("HTTP/1.1 200"));
    assert!(get(&addr, "/v1/collections/notes/digest", "wrong").starts_with("HTTP/1.1 401"));

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "the server did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "the server exited with {status}");
}

#[test]
fn the_program_refuses_to_start_without_tokens() {
    let output = Command::new(BINARY)
        .args(["--db", ":memory:", "--listen", "127.0.0.1:0"])
        .env_remove("FERO_TOKENS")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no tokens"), "{stderr}");
}
