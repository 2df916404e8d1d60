//! `ff demo`, `publish`, `tail` and `serve` with the URL of one node of a
//! real Valkey Cluster, families split into partitions (`?partitions=P`),
//! and a partition count the CLI refuses in one line.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ff_tests::support::shared_valkey_cluster_url;

use common::ff;

mod common;

/// P for every test here: they share the cluster and the default key
/// prefix, whose layout (P) is recorded on the server at first use.
const PARTITIONS: u16 = 8;

fn cluster_url() -> String {
    let url = shared_valkey_cluster_url().expect("a Valkey Cluster");
    format!(
        "{}?partitions={PARTITIONS}",
        url.replace("redis://", "valkey://")
    )
}

#[test]
fn demo_over_eight_partitions_on_a_cluster_loses_repeats_and_reorders_nothing() {
    let url = cluster_url();
    let (ok, out, err) = ff(
        &["demo", "--backend", &url, "--events", "20000", "--json"],
        None,
    );
    assert!(ok, "ff demo failed: {err}");
    let report: serde_json::Value =
        serde_json::from_str(&out).expect("the report is one JSON object");
    assert_eq!(report["partitions"], 8, "{report}");
    assert!(report["published"].as_u64().unwrap() >= 20_000, "{report}");
    assert_eq!(report["delivered"], report["published"], "{report}");
    for field in ["lost", "duplicated", "out_of_order", "mismatched"] {
        assert_eq!(report[field], 0, "{field}: {report}");
    }
    let filtered = &report["filtered_consumer"];
    assert_eq!(filtered["published"], filtered["delivered"], "{report}");
    for field in ["lost", "duplicated", "out_of_order", "unexpected"] {
        assert_eq!(filtered[field], 0, "filtered consumer {field}: {report}");
    }
}

#[test]
fn publish_and_tail_go_through_any_node_with_partitions() {
    let url = cluster_url();
    let input: Vec<String> = (0..8)
        .map(|n| {
            format!(
                r#"{{"execution_id":"{{fp:{n}}}:{n}1111111-1111-4111-8111-111111111111","outcome":"success","namespace":"cli-cluster","tags":{{"run":"{}"}}}}"#,
                std::process::id()
            )
        })
        .collect();
    let (ok, out, err) = ff(
        &["publish", "completion", "--backend", &url],
        Some(&input.join("\n")),
    );
    assert!(ok, "ff publish failed: {err}");
    assert_eq!(out.lines().count(), 8, "one cursor per event: {out}");
    let run = std::process::id().to_string();
    let (ok, out, err) = ff(
        &[
            "tail",
            "completion",
            "--backend",
            &url,
            "--from",
            "beginning",
            "--tag",
            &format!("run:{run}"),
            "--limit",
            "8",
        ],
        None,
    );
    assert!(ok, "ff tail failed: {err}");
    let events: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON lines"))
        .collect();
    assert_eq!(events.len(), 8);
    let mut executions: Vec<&str> = events
        .iter()
        .map(|e| e["execution_id"].as_str().unwrap())
        .collect();
    executions.sort();
    executions.dedup();
    assert_eq!(executions.len(), 8, "each event once");
    // Resuming after the fourth yields the other four.
    let (ok, out, err) = ff(
        &[
            "tail",
            "completion",
            "--backend",
            &url,
            "--from",
            events[3]["cursor"].as_str().unwrap(),
            "--tag",
            &format!("run:{run}"),
            "--limit",
            "4",
        ],
        None,
    );
    assert!(ok, "ff tail from a cursor failed: {err}");
    let rest: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON lines"))
        .collect();
    assert_eq!(rest, events[4..], "exactly the rest");
}

#[test]
fn a_partition_count_that_is_not_1_to_256_is_refused_in_one_line() {
    for bad in ["0", "257", "eight", ""] {
        let url = format!("valkey://ffuser:hunter2@127.0.0.1:1?partitions={bad}");
        let (ok, _, err) = ff(&["tail", "completion", "--backend", &url], None);
        assert!(!ok, "partitions={bad} was accepted");
        let line = err.trim();
        assert_eq!(line.lines().count(), 1, "one line: {err}");
        assert!(line.contains("partitions="), "{line}");
        assert!(line.contains("1 to 256"), "{line}");
        assert!(!line.contains("hunter2"), "{line}");
    }
}

#[test]
fn serve_streams_a_partitioned_family_from_a_cluster() {
    let url = cluster_url();
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let listen = format!("127.0.0.1:{port}");
    let mut serve = Command::new(env!("CARGO_BIN_EXE_ff"))
        .args(["serve", "--backend", &url, "--listen", &listen, "--no-auth"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn ff serve");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut conn = loop {
        match TcpStream::connect(&listen) {
            Ok(conn) => break conn,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => {
                let _ = serve.kill();
                panic!("ff serve did not listen: {e}");
            }
        }
    };
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        conn,
        "GET /v1/streams/completion?from=tail HTTP/1.1\r\nHost: {listen}\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    let text = loop {
        let n = conn.read(&mut buf).unwrap_or(0);
        received.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&received).into_owned();
        if n == 0 || text.contains("\nid:") || Instant::now() > deadline {
            break text;
        }
    };
    let _ = serve.kill();
    let _ = serve.wait();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.contains("\nid:"),
        "the stream starts with its resolved position: {text}"
    );
}
