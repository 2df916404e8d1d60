//! The viewer page in a real headless Chromium: a filtered page that has
//! shown no event resumes from the position the stream gave it (its start
//! and checkpoints, as `ff-position` messages) after an HTTP error — a
//! proxy's 502, a 503 at the gateway's client cap — and loses nothing; its
//! chart keeps the live rate readable after a burst, and its cursor column
//! tells consecutive rows apart.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ff_backend_memory::MemoryBackend;
use ff_core::backend::EventPublisher;
use ff_core::stream_events::{CompletionOutcome, EventMeta, NewEvent};
use ff_core::types::ExecutionId;
use ff_http::{Auth, Gateway, GatewayConfig};
use ff_tests::browser::{skip_browser_tests, Chromium, Page};
use ff_tests::http_client;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;

const DEADLINE: Duration = Duration::from_secs(45);

/// A tiny HTTP proxy the test steers: it forwards each connection (one
/// request each: it asks the gateway to close after answering), answers
/// `502` instead, or holds new connections until told otherwise, and can
/// cut every open connection. It logs the request path and answer status
/// of each connection.
mod proxy {
    use super::*;

    /// What the proxy does with a new connection.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Mode {
        Forward,
        Refuse,
        Hold,
    }

    struct Shared {
        target: SocketAddr,
        mode: watch::Sender<Mode>,
        cut: watch::Sender<u64>,
        answers: Mutex<Vec<(String, u16)>>,
    }

    pub struct HttpProxy {
        pub addr: SocketAddr,
        shared: Arc<Shared>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Drop for HttpProxy {
        fn drop(&mut self) {
            self.cut();
            self.task.abort();
        }
    }

    impl HttpProxy {
        pub async fn start(target: SocketAddr) -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().unwrap();
            let shared = Arc::new(Shared {
                target,
                mode: watch::channel(Mode::Forward).0,
                cut: watch::channel(0).0,
                answers: Mutex::new(Vec::new()),
            });
            let accepting = shared.clone();
            let task = tokio::spawn(async move {
                while let Ok((conn, _)) = listener.accept().await {
                    tokio::spawn(serve(conn, accepting.clone()));
                }
            });
            Self { addr, shared, task }
        }

        pub fn set_mode(&self, mode: Mode) {
            self.shared.mode.send_replace(mode);
        }

        /// Close every connection open now.
        pub fn cut(&self) {
            self.shared.cut.send_modify(|n| *n += 1);
        }

        /// How many connections for a path starting with `prefix` were
        /// answered with `status`.
        pub fn answered(&self, prefix: &str, status: u16) -> usize {
            self.shared
                .answers
                .lock()
                .unwrap()
                .iter()
                .filter(|(path, s)| path.starts_with(prefix) && *s == status)
                .count()
        }
    }

    /// The request head with `Connection: close`, and its path.
    fn one_request(head: &[u8]) -> (Vec<u8>, String) {
        let text = String::from_utf8_lossy(head);
        let path = text.split(' ').nth(1).unwrap_or("").to_owned();
        let mut out = String::new();
        for line in text.trim_end_matches("\r\n").split("\r\n") {
            if !line.to_ascii_lowercase().starts_with("connection:") {
                out.push_str(line);
                out.push_str("\r\n");
            }
        }
        out.push_str("Connection: close\r\n\r\n");
        (out.into_bytes(), path)
    }

    async fn serve(mut conn: TcpStream, shared: Arc<Shared>) {
        let mut cut = shared.cut.subscribe();
        cut.borrow_and_update();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let (head, path) = one_request(&buf[..end]);
        let mode = *shared
            .mode
            .subscribe()
            .wait_for(|m| *m != Mode::Hold)
            .await
            .expect("the proxy lives");
        if mode == Mode::Refuse {
            let body = "<html><body>502 Bad Gateway</body></html>";
            let answer = format!(
                "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(answer.as_bytes()).await;
            shared.answers.lock().unwrap().push((path, 502));
            return;
        }
        let Ok(mut upstream) = TcpStream::connect(shared.target).await else {
            return;
        };
        if upstream.write_all(&head).await.is_err()
            || upstream.write_all(&buf[end..]).await.is_err()
        {
            return;
        }
        let forward = async {
            let (mut cr, mut cw) = conn.split();
            let (mut ur, mut uw) = upstream.split();
            let up = tokio::io::copy(&mut cr, &mut uw);
            let down = async {
                let n = ur.read(&mut chunk).await.unwrap_or(0);
                let status = std::str::from_utf8(&chunk[..n])
                    .ok()
                    .and_then(|t| t.split(' ').nth(1))
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                shared.answers.lock().unwrap().push((path, status));
                if n == 0 || cw.write_all(&chunk[..n]).await.is_err() {
                    return;
                }
                let _ = tokio::io::copy(&mut ur, &mut cw).await;
            };
            tokio::select! {
                _ = up => {}
                _ = down => {}
            }
        };
        tokio::select! {
            _ = forward => {}
            _ = cut.changed() => {}
        }
    }
}

use proxy::{HttpProxy, Mode};

/// Serve `backend` in process; the gateway and its address.
async fn serve(backend: &MemoryBackend, config: GatewayConfig) -> (Gateway, SocketAddr) {
    let gateway = Gateway::new(
        Arc::new(backend.clone()),
        Some(Arc::new(backend.clone())),
        config,
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().unwrap();
    let serving = gateway.clone();
    tokio::spawn(async move {
        serving
            .serve(listener, std::future::pending())
            .await
            .expect("serve")
    });
    (gateway, addr)
}

fn config() -> GatewayConfig {
    GatewayConfig::new(Auth::NoAuth)
        .with_checkpoint_interval(Duration::from_millis(100))
        .with_keep_alive(Duration::from_millis(200))
        .with_retry_after(Duration::from_secs(1))
}

async fn publish(backend: &MemoryBackend, outcome: CompletionOutcome, n: usize) -> Vec<String> {
    let batch = (0..n)
        .map(|i| {
            let draft = NewEvent::completion(ExecutionId::new(i as u16), outcome.clone());
            (draft, EventMeta::new().with_namespace("viewer-test"))
        })
        .collect();
    let cursors = backend.publish_batch(batch).await.expect("publish");
    cursors.iter().map(ToString::to_string).collect()
}

/// Evaluate `expr` in `page` until `want` holds (with a deadline).
async fn eval_until(
    browser: &mut Chromium,
    page: &Page,
    expr: &str,
    want: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let got = browser.eval(page, expr).await.unwrap_or(Value::Null);
        if want(&got) {
            return got;
        }
        let state = browser
            .eval(page, "window.ffViewer && [ffViewer.state, ffViewer.position, ffViewer.shown, ffViewer.errors]")
            .await
            .unwrap_or(Value::Null);
        assert!(
            Instant::now() < deadline,
            "{expr}: still {got} (viewer: {state})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_true(browser: &mut Chromium, page: &Page, expr: &str) {
    eval_until(browser, page, expr, |v| v == &json!(true)).await;
}

/// Open a viewer of completion failures through `proxy`, and wait until
/// its position has moved past 100 filtered-out events (checkpoints
/// reached the page); the browser and the page.
async fn filtered_viewer_past_100_successes(
    backend: &MemoryBackend,
    proxy: &HttpProxy,
) -> (Chromium, Page) {
    let mut browser = Chromium::launch().await.expect("launch chromium");
    let page = browser
        .open(&format!(
            "http://{}/?family=completion&kinds=failure&autoconnect=1",
            proxy.addr
        ))
        .await
        .expect("open the viewer");
    wait_true(
        &mut browser,
        &page,
        "!!window.ffViewer && ffViewer.state === 'live' && ffViewer.position !== null",
    )
    .await;
    let passed = publish(backend, CompletionOutcome::Success, 100).await;
    wait_true(
        &mut browser,
        &page,
        &format!("ffViewer.position === '{}'", passed[99]),
    )
    .await;
    assert_eq!(
        browser.eval(&page, "ffViewer.shown").await.unwrap(),
        json!(0)
    );
    (browser, page)
}

/// Wait until the page shows exactly `want`, once each (a sentinel
/// published after the others arrives after anything still in flight).
async fn shows_exactly(browser: &mut Chromium, page: &Page, want: &[String]) {
    let want = json!(want);
    eval_until(browser, page, "ffViewer.events", |v| v == &want).await;
    assert_eq!(
        browser.eval(page, "ffViewer.duplicates").await.unwrap(),
        json!(0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filtered_viewer_resumes_from_its_position_after_a_proxys_502() {
    if skip_browser_tests("a_filtered_viewer_resumes_from_its_position_after_a_proxys_502") {
        return;
    }
    let backend = MemoryBackend::new();
    let (gateway, addr) = serve(&backend, config()).await;
    let proxy = HttpProxy::start(addr).await;
    let (mut browser, page) = filtered_viewer_past_100_successes(&backend, &proxy).await;

    // The connection breaks; the browser's reconnect meets a 502.
    proxy.set_mode(Mode::Refuse);
    proxy.cut();
    let deadline = Instant::now() + DEADLINE;
    while proxy.answered("/v1/streams/", 502) == 0 {
        assert!(Instant::now() < deadline, "the stream was never refused");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Events 100–102, published while the page cannot reach the gateway.
    let mut want = publish(&backend, CompletionOutcome::Failure, 3).await;
    proxy.set_mode(Mode::Forward);
    shows_exactly(&mut browser, &page, &want).await;
    want.extend(publish(&backend, CompletionOutcome::Failure, 1).await);
    shows_exactly(&mut browser, &page, &want).await;
    drop(browser);
    gateway.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filtered_viewer_resumes_from_its_position_after_a_503_at_the_client_cap() {
    if skip_browser_tests(
        "a_filtered_viewer_resumes_from_its_position_after_a_503_at_the_client_cap",
    ) {
        return;
    }
    let backend = MemoryBackend::new();
    let (gateway, addr) = serve(&backend, config().with_max_clients(1)).await;
    let proxy = HttpProxy::start(addr).await;
    let (mut browser, page) = filtered_viewer_past_100_successes(&backend, &proxy).await;

    // The connection breaks and another client takes the only place
    // before the browser reconnects.
    proxy.set_mode(Mode::Hold);
    proxy.cut();
    let deadline = Instant::now() + DEADLINE;
    while gateway.metrics().clients_connected > 0 {
        assert!(
            Instant::now() < deadline,
            "the viewer's stream never closed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let other = match http_client::open_sse(addr, "/v1/streams/completion", &[]).await {
        Ok(admitted) => admitted,
        Err(refused) => panic!("the other client is refused: {}", refused.everything()),
    };
    // Events 100–102, published while the page cannot get a place.
    let mut want = publish(&backend, CompletionOutcome::Failure, 3).await;
    proxy.set_mode(Mode::Forward);
    while proxy.answered("/v1/streams/", 503) == 0 {
        assert!(
            Instant::now() < deadline,
            "the viewer never met the client cap"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(other);
    shows_exactly(&mut browser, &page, &want).await;
    want.extend(publish(&backend, CompletionOutcome::Failure, 1).await);
    shows_exactly(&mut browser, &page, &want).await;
    drop(browser);
    gateway.shutdown();
}

/// The page's clock, in whole seconds (what its chart counts by).
async fn page_second(browser: &mut Chromium, page: &Page) -> u64 {
    let now = browser
        .eval(page, "Math.floor(Date.now() / 1000)")
        .await
        .expect("eval");
    now.as_u64().expect("a second")
}

/// Wait until the page's clock has passed second `t`.
async fn after_second(browser: &mut Chromium, page: &Page, t: u64) {
    wait_true(
        browser,
        page,
        &format!("Math.floor(Date.now() / 1000) > {t}"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_keeps_the_live_rate_readable_after_a_burst_and_cursors_differ_by_row() {
    if skip_browser_tests(
        "the_chart_keeps_the_live_rate_readable_after_a_burst_and_cursors_differ_by_row",
    ) {
        return;
    }
    let backend = MemoryBackend::new();
    let (gateway, addr) = serve(&backend, config()).await;
    let mut browser = Chromium::launch().await.expect("launch chromium");
    let page = browser
        .open(&format!("http://{addr}/?family=completion&autoconnect=1"))
        .await
        .expect("open the viewer");
    browser
        .set_viewport(&page, 1280, 760)
        .await
        .expect("viewport");
    wait_true(
        &mut browser,
        &page,
        "!!window.ffViewer && ffViewer.state === 'live' && ffViewer.caughtUp",
    )
    .await;

    // A burst of 5,000, then a trickle of 3 a second, for more seconds
    // than the burst took (at least 8), each second's events counted apart
    // from the others.
    publish(&backend, CompletionOutcome::Success, 5_000).await;
    wait_true(&mut browser, &page, "ffViewer.shown === 5000").await;
    let burst_end = page_second(&mut browser, &page).await;
    after_second(&mut browser, &page, burst_end).await;
    let burst_seconds = eval_until(
        &mut browser,
        &page,
        &format!("ffViewer.chart && ffViewer.chart.bars.filter(b => b.t <= {burst_end})"),
        |v| {
            v.as_array().is_some_and(|bars| {
                bars.iter()
                    .map(|b| b["total"].as_u64().unwrap_or(0))
                    .sum::<u64>()
                    == 5_000
            })
        },
    )
    .await
    .as_array()
    .unwrap()
    .len();
    let trickle_seconds = (burst_seconds + 6).max(8);
    let mut shown = 5_000;
    let mut last = Vec::new();
    for _ in 0..trickle_seconds {
        last = publish(&backend, CompletionOutcome::Success, 3).await;
        shown += 3;
        wait_true(&mut browser, &page, &format!("ffViewer.shown === {shown}")).await;
        let t = page_second(&mut browser, &page).await;
        after_second(&mut browser, &page, t).await;
    }
    // Drawn with every trickle event.
    let chart = eval_until(
        &mut browser,
        &page,
        &format!(
            "ffViewer.chart && {{ chart: ffViewer.chart, trickle: ffViewer.chart.bars.filter(b => b.t > {burst_end}) }}"
        ),
        |v| {
            v["trickle"]
                .as_array()
                .is_some_and(|bars| bars.iter().map(|b| b["total"].as_u64().unwrap_or(0)).sum::<u64>() == 3 * trickle_seconds as u64)
        },
    )
    .await;
    let plot = chart["chart"]["plot"].as_f64().unwrap();
    let tallest = chart["trickle"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["px"].as_f64().unwrap())
        .fold(0.0, f64::max);
    assert!(
        tallest >= plot / 4.0,
        "the live bars stay readable after the burst: {tallest} px of {plot} ({chart})"
    );
    let burst = chart["chart"]["bars"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["t"].as_u64().unwrap() <= burst_end)
        .map(|b| b["total"].as_u64().unwrap())
        .sum::<u64>();
    assert_eq!(burst, 5_000, "the burst is still on the chart: {chart}");

    // The cursor column shows, whole, what tells two rows apart; the full
    // cursor is the tooltip.
    let cells = browser
        .eval(
            &page,
            "[...document.querySelectorAll('#rows tr')].slice(0, 2).map(r => { const td = r.querySelector('td.cursor'); \
             return { text: td.textContent, title: td.title, cursor: r.dataset.cursor, cut: td.scrollWidth > td.clientWidth }; })",
        )
        .await
        .expect("eval");
    let cells = cells.as_array().expect("two rows");
    assert_eq!(cells.len(), 2);
    for (cell, cursor) in cells.iter().zip([&last[2], &last[1]]) {
        assert_eq!(cell["cursor"], json!(cursor), "newest first: {cells:?}");
        assert_eq!(cell["title"], json!(cursor), "{cells:?}");
        assert_eq!(
            cell["cut"],
            json!(false),
            "the cell shows all its text: {cells:?}"
        );
    }
    assert_ne!(
        cells[0]["text"], cells[1]["text"],
        "consecutive rows read differently"
    );
    drop(browser);
    gateway.shutdown();
}
