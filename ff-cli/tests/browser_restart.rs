//! The viewer page in a real headless Chromium keeps its place across an
//! `ff serve` restart: events published while the server was down arrive
//! after it comes back, with no gap and no duplicate.

use std::net::TcpListener;
use std::process::Stdio;
use std::time::Duration;

use ff_backend_valkey::{ValkeyBackend, ValkeyConfig};
use ff_core::backend::EventPublisher;
use ff_core::stream_events::{CompletionOutcome, EventMeta, NewEvent};
use ff_core::types::ExecutionId;
use ff_tests::browser::{skip_browser_tests, Chromium, Page};
use ff_tests::support::ValkeyServer;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::time::Instant;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Start `ff serve` and wait until `/healthz` answers.
async fn start_serve(backend_url: &str, port: u16) -> Child {
    let child = Command::new(env!("CARGO_BIN_EXE_ff"))
        .args([
            "serve",
            "--no-auth",
            "--keep-alive",
            "1",
            "--backend",
            backend_url,
        ])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn ff serve");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if healthz(port).await {
            return child;
        }
        assert!(
            Instant::now() < deadline,
            "ff serve did not answer /healthz within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn healthz(port: u16) -> bool {
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    let req = "GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    if s.write_all(req.as_bytes()).await.is_err() {
        return false;
    }
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut buf)).await;
    buf.starts_with(b"HTTP/1.1 200")
}

async fn viewer_events(browser: &mut Chromium, page: &Page) -> Vec<String> {
    let v = browser
        .eval(page, "window.ffViewer ? window.ffViewer.events : []")
        .await
        .expect("read the viewer's events");
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

async fn wait_for_events(browser: &mut Chromium, page: &Page, n: usize, what: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        let events = viewer_events(browser, page).await;
        if events.len() >= n {
            return events;
        }
        let state = browser
            .eval(page, "window.ffViewer && window.ffViewer.state")
            .await;
        assert!(
            Instant::now() < deadline,
            "{what}: the page shows {} of {n} events (state {state:?})",
            events.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn publish(backend: &ValkeyBackend, n: usize) -> Vec<String> {
    let batch = (0..n)
        .map(|_| {
            let draft = NewEvent::completion(ExecutionId::new(1), CompletionOutcome::Success);
            (draft, EventMeta::new().with_namespace("browser-test"))
        })
        .collect();
    let cursors = backend.publish_batch(batch).await.expect("publish");
    cursors.iter().map(ToString::to_string).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_resumes_after_a_server_restart_without_gap_or_duplicate() {
    if skip_browser_tests("viewer_resumes_after_a_server_restart_without_gap_or_duplicate") {
        return;
    }
    let valkey = ValkeyServer::start().expect("start valkey-server");
    let url = valkey.url();
    let backend = ValkeyBackend::connect(&url, ValkeyConfig::default())
        .await
        .expect("connect to valkey");
    let port = free_port();
    let mut serve = start_serve(&url, port).await;

    let mut browser = Chromium::launch().await.expect("launch chromium");
    let page = browser
        .open(&format!(
            "http://127.0.0.1:{port}/?family=completion&from=tail&autoconnect=1"
        ))
        .await
        .expect("open the viewer");
    let deadline = Instant::now() + Duration::from_secs(30);
    while browser
        .eval(&page, "window.ffViewer && window.ffViewer.state")
        .await
        .expect("eval")
        != "live"
    {
        assert!(Instant::now() < deadline, "the viewer never went live");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut expected = publish(&backend, 10).await;
    let before = wait_for_events(&mut browser, &page, 10, "before the restart").await;
    assert_eq!(
        before, expected,
        "the page shows the first 10 events in order"
    );

    serve.kill().await.expect("kill ff serve");
    serve.wait().await.expect("reap ff serve");
    expected.extend(publish(&backend, 10).await);
    let mut serve = start_serve(&url, port).await;
    expected.extend(publish(&backend, 5).await);

    let after = wait_for_events(&mut browser, &page, 25, "after the restart").await;
    assert_eq!(after, expected, "no gap, in order, across the restart");
    // A sentinel published last arrives after anything still in flight, so
    // once it shows, any duplicate would have shown too.
    expected.extend(publish(&backend, 1).await);
    let settled = wait_for_events(&mut browser, &page, 26, "the sentinel").await;
    assert_eq!(settled, expected, "nothing but the sentinel arrived");
    let duplicates = browser
        .eval(&page, "window.ffViewer.duplicates")
        .await
        .expect("eval");
    assert_eq!(duplicates, Value::from(0), "the page saw no duplicate");
    serve.kill().await.ok();
}
