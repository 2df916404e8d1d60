//! `ff publish`, `tail`, `demo` and `serve` with `valkeys://` URLs, against
//! a real TLS server (Redis 7.0 with TLS, certificates from a throwaway CA
//! made by the test support), and the one-line errors of a wrong scheme.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use ff_tests::http_client;
use ff_tests::support::{TlsServerOptions, ValkeyServer};

use common::ff;

mod common;

fn tls_server() -> ValkeyServer {
    ValkeyServer::start_tls(TlsServerOptions::default()).expect("a TLS server (redis-server)")
}

const EVENT: &str =
    r#"{"execution_id":"{fp:1}:11111111-1111-4111-8111-111111111111","outcome":"success"}"#;

/// The events `ff tail --from beginning` prints, up to `limit`.
fn tail(url: &str, limit: usize) -> Vec<serde_json::Value> {
    let limit = limit.to_string();
    let (ok, out, err) = ff(
        &[
            "tail",
            "completion",
            "--backend",
            url,
            "--from",
            "beginning",
            "--limit",
            &limit,
        ],
        None,
    );
    assert!(ok, "ff tail over TLS failed: {err}");
    out.lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect()
}

#[test]
fn publish_and_tail_take_a_tls_url() {
    let server = tls_server();
    let url = server.tls_url().expect("TLS URL");
    let (ok, out, err) = ff(&["publish", "completion", "--backend", &url], Some(EVENT));
    assert!(ok, "ff publish over TLS failed: {err}");
    let events = tail(&url, 1);
    assert_eq!(events[0]["cursor"], out.trim());
}

#[test]
fn demo_takes_a_tls_url_and_loses_nothing() {
    let server = tls_server();
    let url = server.tls_url().expect("TLS URL");
    let (ok, out, err) = ff(
        &["demo", "--backend", &url, "--events", "3000", "--json"],
        None,
    );
    assert!(ok, "ff demo over TLS failed: {err}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("JSON report");
    for field in ["lost", "duplicated", "out_of_order", "mismatched"] {
        assert_eq!(report[field], 0, "{field}: {report}");
    }
    assert_eq!(report["delivered"], report["published"]);
}

#[test]
fn serve_takes_a_tls_url() {
    let server = tls_server();
    let url = server.tls_url().expect("TLS URL");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ff"))
        .args([
            "serve",
            "--backend",
            &url,
            "--listen",
            "127.0.0.1:0",
            "--no-auth",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ff serve");
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let mut addr = None;
    let mut seen = String::new();
    for _ in 0..50 {
        let mut line = String::new();
        if stderr.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        seen.push_str(&line);
        if let Some(rest) = line.split("listening on http://").nth(1) {
            addr = rest.split_whitespace().next().map(str::to_owned);
            break;
        }
    }
    let Some(addr) = addr else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("ff serve did not start over TLS: {seen}");
    };
    let addr: SocketAddr = addr.parse().expect("ff serve's listen address");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let response = runtime.block_on(async {
        tokio::time::timeout(
            Duration::from_secs(30),
            http_client::request(
                addr,
                "POST",
                "/v1/streams/completion",
                &[("Content-Type", "application/json")],
                Some(EVENT.as_bytes()),
            ),
        )
        .await
    });
    let _ = child.kill();
    let _ = child.wait();
    let response = response.expect("ff serve answered the publish in time");
    assert_eq!(
        response.status,
        200,
        "publish through ff serve over TLS: {}",
        response.text()
    );
    assert_eq!(tail(&url, 1).len(), 1, "the event was stored");
}

#[test]
fn a_wrong_scheme_is_a_one_line_error() {
    let server = tls_server();
    let files = server.tls_files().expect("files");
    for (url, needle) in [
        (
            format!(
                "valkeys://127.0.0.1:{}?ca_cert={}",
                server.port(),
                files.ca.display()
            ),
            "valkey://",
        ),
        (
            format!("valkey://127.0.0.1:{}", server.tls_port().expect("port")),
            "valkeys://",
        ),
    ] {
        let (ok, _, err) = ff(&["publish", "completion", "--backend", &url], Some(EVENT));
        assert!(!ok, "{url} must fail");
        let err = err.trim();
        assert!(err.contains(needle), "{url}: {err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
    }
}
