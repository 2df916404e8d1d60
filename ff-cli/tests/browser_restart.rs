//! The viewer page in a real headless Chromium keeps its place across an
//! `ff serve` restart: events published while the server was down arrive
//! after it comes back, with no gap and no duplicate. Its controls work on
//! real events (truncated cells with copy, failure and expired-lease rows
//! highlighted, pause/resume, the chart, the behind/caught-up indicator),
//! and what it keeps stays bounded however many events arrive.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use ff_backend_valkey::{ValkeyBackend, ValkeyConfig};
use ff_core::backend::EventPublisher;
use ff_core::stream_events::{CompletionOutcome, EventMeta, NewEvent};
use ff_core::types::ExecutionId;
use ff_tests::browser::{skip_browser_tests, Chromium, Page};
use ff_tests::http_client;
use ff_tests::support::ValkeyServer;
use serde_json::Value;
use tokio::process::{Child, Command};
use tokio::time::Instant;

use ff_tests::support::serve_process::start_listening;

/// The `ff serve` command on `port` (0: a port the server picks).
fn serve_command(backend_url: &str, port: u16) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ff"));
    command
        .args([
            "serve",
            "--no-auth",
            "--keep-alive",
            "1",
            "--backend",
            backend_url,
        ])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stdin(Stdio::null());
    command
}

/// Start `ff serve` on a port it picks and wait until `/healthz`
/// answers; the child and the port.
async fn start_serve(backend_url: &str) -> (Child, u16) {
    let (child, port) = start_listening(serve_command(backend_url, 0)).await;
    wait_healthy(port).await;
    (child, port)
}

/// Start `ff serve` again on `port` (the browser reconnects to it).
async fn restart_serve(backend_url: &str, port: u16) -> Child {
    let (child, again) = start_listening(serve_command(backend_url, port)).await;
    assert_eq!(again, port);
    wait_healthy(port).await;
    child
}

async fn wait_healthy(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !healthz(port).await {
        assert!(
            Instant::now() < deadline,
            "ff serve did not answer /healthz within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn healthz(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    http_client::status_of(addr, "/healthz", Duration::from_secs(2)).await == Some(200)
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
    let (mut serve, port) = start_serve(&url).await;

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
    let mut serve = restart_serve(&url, port).await;
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

/// `POST` a JSON array of completion events to `ff serve` (no auth).
async fn post_events(port: u16, events: &[Value]) -> Vec<String> {
    post_family(port, "completion", events).await
}

/// `POST` a JSON array of `family` events to `ff serve` (no auth).
async fn post_family(port: u16, family: &str, events: &[Value]) -> Vec<String> {
    let body = Value::from(events.to_vec()).to_string();
    let response = tokio::time::timeout(
        Duration::from_secs(10),
        http_client::request(
            SocketAddr::from(([127, 0, 0, 1], port)),
            "POST",
            &format!("/v1/streams/{family}"),
            &[("Content-Type", "application/json")],
            Some(body.as_bytes()),
        ),
    )
    .await
    .expect("publish answered in time");
    assert_eq!(response.status, 200, "{}", response.text());
    response.json()["cursors"]
        .as_array()
        .expect("cursors")
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect()
}

fn completion(outcome: &str, i: usize) -> Value {
    serde_json::json!({
        "execution_id": format!("{{fp:{}}}:{:08x}-1111-4111-8111-{:012x}", i % 64, i, i),
        "outcome": outcome,
        "namespace": "billing",
        "tags": {"region": if i % 2 == 0 { "eu" } else { "us" }, "request": format!("req-{i:06}-{}", "x".repeat(40))},
    })
}

/// Wait until `expression` evaluates to `true` in the page.
async fn wait_true(browser: &mut Chromium, page: &Page, expression: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = browser.eval(page, expression).await.expect("eval");
        if v == Value::Bool(true) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: `{expression}` is {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn eval(browser: &mut Chromium, page: &Page, expression: &str) -> Value {
    browser.eval(page, expression).await.expect("eval")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_controls_truncate_copy_highlight_pause_chart_lag_and_stay_bounded() {
    if skip_browser_tests(
        "viewer_controls_truncate_copy_highlight_pause_chart_lag_and_stay_bounded",
    ) {
        return;
    }
    let (mut serve, port) = start_serve("memory:").await;
    let mut browser = Chromium::launch().await.expect("launch chromium");
    let page = browser
        .open(&format!(
            "http://127.0.0.1:{port}/?family=completion&from=tail&autoconnect=1"
        ))
        .await
        .expect("open the viewer");
    browser
        .set_viewport(&page, 1280, 760)
        .await
        .expect("viewport");
    wait_true(
        &mut browser,
        &page,
        "window.ffViewer && window.ffViewer.state === 'live'",
        "connect",
    )
    .await;

    // Events, one of them a failure.
    let mut events: Vec<Value> = (0..9).map(|i| completion("success", i)).collect();
    events.insert(4, completion("failure", 99));
    let mut expected = post_events(port, &events).await;
    let shown = wait_for_events(&mut browser, &page, 10, "the first events").await;
    assert_eq!(shown, expected);

    // One line per event: every row is as tall as one line of text, and a
    // long execution id is cut, with its full value as the tooltip.
    let heights = eval(&mut browser, &page, "(() => { const rows = [...document.querySelectorAll('#rows tr')]; const font = parseFloat(getComputedStyle(rows[0].cells[0]).fontSize); return {rows: rows.map(r => r.offsetHeight), font}; })()").await;
    let font = heights["font"].as_f64().unwrap();
    let rows: Vec<f64> = heights["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_f64().unwrap())
        .collect();
    assert!(
        rows.iter().all(|h| *h == rows[0] && *h < 2.5 * font),
        "rows are one line each: {heights}"
    );
    let exec = eval(&mut browser, &page, "(() => { const td = document.querySelector('#rows tr td.exec'); return {full: td.title, cut: td.scrollWidth > td.clientWidth, nowrap: getComputedStyle(td).whiteSpace, ellipsis: getComputedStyle(td).textOverflow}; })()").await;
    assert!(exec["full"].as_str().unwrap().starts_with("{fp:"), "{exec}");
    assert_eq!(exec["nowrap"], "nowrap", "{exec}");
    assert_eq!(exec["ellipsis"], "ellipsis", "{exec}");
    assert_eq!(
        exec["cut"], true,
        "a long execution id is shown truncated: {exec}"
    );
    // A click copies the full value.
    let copied = eval(&mut browser, &page, "(() => { const td = document.querySelector('#rows tr td.cursor'); td.click(); return [td.title, window.ffViewer.copied]; })()").await;
    assert_eq!(copied[0], copied[1], "the click copies the full cursor");
    assert_eq!(copied[0].as_str().unwrap(), expected.last().unwrap());

    // Failures and expired leases are highlighted.
    let failure_row = eval(
        &mut browser,
        &page,
        &format!(
            "document.querySelector('#rows tr[data-cursor=\"{}\"]').className",
            expected[4]
        ),
    )
    .await;
    assert_eq!(failure_row, "row-failure");
    assert_eq!(
        eval(
            &mut browser,
            &page,
            "window.ffViewer.rowClass('lease-history', 'expired')"
        )
        .await,
        "row-expired"
    );
    assert_eq!(
        eval(
            &mut browser,
            &page,
            "window.ffViewer.rowClass('completion', 'success')"
        )
        .await,
        ""
    );

    // Pause holds new events without losing the position; resume shows
    // them in order, once.
    eval(
        &mut browser,
        &page,
        "document.getElementById('pause').click()",
    )
    .await;
    wait_true(
        &mut browser,
        &page,
        "window.ffViewer.paused && document.getElementById('status').dataset.state === 'paused'",
        "pause",
    )
    .await;
    let held: Vec<Value> = (10..15).map(|i| completion("cancelled", i)).collect();
    expected.extend(post_events(port, &held).await);
    wait_true(
        &mut browser,
        &page,
        "window.ffViewer.pending === 5",
        "events held while paused",
    )
    .await;
    assert_eq!(
        eval(&mut browser, &page, "window.ffViewer.events.length").await,
        10
    );
    // The page now shows less than the gateway has delivered: the lag
    // indicator says so.
    wait_true(
        &mut browser,
        &page,
        "window.ffViewer.families.completion === 'behind'",
        "behind indicator while paused",
    )
    .await;
    let chip = eval(
        &mut browser,
        &page,
        "(() => { const c = document.querySelector('#families .chip[data-family=\"completion\"]'); return [c.dataset.state, c.textContent]; })()",
    )
    .await;
    assert_eq!(chip[0], "behind", "{chip}");
    assert!(
        chip[1].as_str().unwrap().contains("behind"),
        "the chip says the page is behind: {chip}"
    );
    eval(
        &mut browser,
        &page,
        "document.getElementById('pause').click()",
    )
    .await;
    let shown = wait_for_events(&mut browser, &page, 15, "after resume").await;
    assert_eq!(shown, expected, "resume shows the held events in order");
    assert_eq!(
        eval(&mut browser, &page, "window.ffViewer.duplicates").await,
        0
    );

    // The chart counts events per second by kind.
    wait_true(&mut browser, &page, "window.ffViewer.chartDraws > 1 && window.ffViewer.rate(60).failure === 1 && window.ffViewer.rate(60).success === 9 && window.ffViewer.rate(60).cancelled === 5", "chart counts").await;
    // The lag indicator: caught up with the gateway's live position.
    wait_true(
        &mut browser,
        &page,
        "window.ffViewer.families.completion === 'caught-up'",
        "caught-up indicator",
    )
    .await;

    // A long-lived page stays bounded: more events than the rows kept
    // leave the page with the newest rows and cursors only, and no
    // duplicate counted.
    let max_rows = eval(&mut browser, &page, "window.ffViewer.maxRows")
        .await
        .as_u64()
        .unwrap() as usize;
    let many: Vec<Value> = (0..max_rows + 100)
        .map(|i| completion("success", 1000 + i))
        .collect();
    expected.extend(post_events(port, &many).await);
    wait_true(
        &mut browser,
        &page,
        &format!("window.ffViewer.shown === {}", expected.len()),
        "every event shown",
    )
    .await;
    let kept = viewer_events(&mut browser, &page).await;
    assert_eq!(
        kept,
        expected[expected.len() - max_rows..],
        "the page keeps the cursors of its newest rows only"
    );
    assert_eq!(
        eval(&mut browser, &page, "window.ffViewer.remembered()").await,
        max_rows
    );
    assert_eq!(
        eval(
            &mut browser,
            &page,
            "document.querySelectorAll('#rows tr').length"
        )
        .await,
        max_rows
    );
    assert_eq!(
        eval(&mut browser, &page, "window.ffViewer.duplicates").await,
        0
    );

    // An expired lease is highlighted on its row, in a page that watches
    // lease history.
    let leases = browser
        .open(&format!(
            "http://127.0.0.1:{port}/?family=lease-history&from=tail&autoconnect=1"
        ))
        .await
        .expect("open a lease-history viewer");
    wait_true(
        &mut browser,
        &leases,
        "window.ffViewer && window.ffViewer.state === 'live'",
        "connect the lease-history viewer",
    )
    .await;
    let exec = "{fp:3}:33333333-1111-4111-8111-333333333333";
    let lease_events = post_family(
        port,
        "lease-history",
        &[
            serde_json::json!({"type": "acquired", "execution_id": exec, "lease_id": "44444444-1111-4111-8111-444444444444", "worker_instance_id": "worker-1"}),
            serde_json::json!({"type": "expired", "execution_id": exec, "lease_id": "44444444-1111-4111-8111-444444444444", "prev_owner": "worker-1"}),
        ],
    )
    .await;
    let shown = wait_for_events(&mut browser, &leases, 2, "the lease events").await;
    assert_eq!(shown, lease_events);
    let classes = eval(
        &mut browser,
        &leases,
        &format!(
            "[...document.querySelectorAll('#rows tr')].filter(r => r.dataset.cursor === '{}' || r.dataset.cursor === '{}').map(r => [r.dataset.cursor, r.className])",
            lease_events[0], lease_events[1]
        ),
    )
    .await;
    assert_eq!(
        classes,
        serde_json::json!([[lease_events[1], "row-expired"], [lease_events[0], ""]]),
        "the expired lease's row is highlighted, the acquired one's is not"
    );

    if let Ok(path) = std::env::var("FF_VIEWER_SCREENSHOT") {
        // A realistic minute for the README: a steady mix of kinds.
        for round in 0..12 {
            let batch: Vec<Value> = (0..(6 + round % 4))
                .map(|i| {
                    let k = round * 10 + i + 100;
                    completion(
                        [
                            "success",
                            "success",
                            "success",
                            "failure",
                            "cancelled",
                            "timed_out",
                        ][k % 6],
                        k,
                    )
                })
                .collect();
            post_events(port, &batch).await;
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
        wait_true(
            &mut browser,
            &page,
            "window.ffViewer.families.completion === 'caught-up'",
            "caught up before the screenshot",
        )
        .await;
        let png = browser.screenshot(&page).await.expect("screenshot");
        std::fs::write(&path, png).expect("write the screenshot");
    }
    serve.kill().await.ok();
}
