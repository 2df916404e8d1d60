//! Signing in to the gateway in a real browser: the viewer page's own
//! sign-in works, and a form on another site that posts a token to
//! `/v1/session` (the one cross-site request a page can make without
//! CORS) does not sign the browser in.

use std::sync::Arc;
use std::time::Duration;

use ff_backend_memory::MemoryBackend;
use ff_http::{Auth, Gateway, GatewayConfig, Token};
use ff_tests::browser::{skip_browser_tests, Chromium, Page};
use serde_json::{json, Value};
use tokio::time::Instant;

const READ: &str = "read-token-aaaaaaaaaaaaaaaa";
const DEADLINE: Duration = Duration::from_secs(20);

/// Evaluate `expr` in `page` until it returns `want` (with a deadline).
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
        assert!(Instant::now() < deadline, "{expr}: still {got}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The status of a same-origin `GET /metrics` (it needs a read token) from
/// a page of the gateway's own origin.
const METRICS_STATUS: &str =
    "fetch('/metrics', { credentials: 'same-origin' }).then(r => r.status)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_form_on_another_site_does_not_sign_the_browser_in() {
    if skip_browser_tests("a_form_on_another_site_does_not_sign_the_browser_in") {
        return;
    }
    let backend = MemoryBackend::new();
    let gateway = Gateway::new(
        Arc::new(backend.clone()),
        Some(Arc::new(backend)),
        GatewayConfig::new(Auth::tokens(vec![Token::read_only(READ).unwrap()])),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().unwrap();
    let serving = gateway.clone();
    let server = tokio::spawn(async move {
        serving
            .serve(listener, std::future::pending())
            .await
            .expect("serve")
    });
    let origin = format!("http://{addr}");
    let mut browser = Chromium::launch().await.expect("launch chromium");

    let viewer = browser
        .open(&format!("{origin}/"))
        .await
        .expect("open the viewer");
    let loaded =
        format!("location.href.startsWith('{origin}/') && document.readyState === 'complete'");
    eval_until(&mut browser, &viewer, &loaded, |v| v == &json!(true)).await;
    let status = browser.eval(&viewer, METRICS_STATUS).await.expect("fetch");
    assert_eq!(status, json!(401), "not signed in at first");

    // A page on another site (an opaque data: origin) posts the attacker's
    // token as a text/plain form, whose body reads as JSON.
    let attacker = format!(
        "data:text/html,<form method=post enctype=text/plain action='{origin}/v1/session'>\
         <input name='{{\"token\":\"{READ}\",\"x\":\"' value='\"}}'></form>\
         <script>document.forms[0].submit()</script>"
    );
    let page = browser
        .open(&attacker)
        .await
        .expect("open the attacker page");
    // The form's answer has arrived once the page shows it (an error), or
    // once the browser is signed in (a 204 leaves the page where it was).
    let deadline = Instant::now() + DEADLINE;
    let status = loop {
        let href = browser
            .eval(&page, "location.href")
            .await
            .unwrap_or(Value::Null);
        let status = browser.eval(&viewer, METRICS_STATUS).await.expect("fetch");
        if status != json!(401) || href.as_str().is_some_and(|h| h.starts_with(&origin)) {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the form's answer never arrived: the page is at {href}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        status,
        json!(401),
        "the form on another site signed the browser in"
    );

    // The viewer page's own sign-in (JSON, same origin) works.
    let sign_in = format!(
        "fetch('/v1/session', {{ method: 'POST', credentials: 'same-origin', \
         headers: {{ 'Content-Type': 'application/json' }}, \
         body: JSON.stringify({{ token: '{READ}' }}) }}).then(r => r.status)"
    );
    let status = browser.eval(&viewer, &sign_in).await.expect("sign in");
    assert_eq!(status, json!(204), "the viewer's own sign-in");
    let status = browser.eval(&viewer, METRICS_STATUS).await.expect("fetch");
    assert_eq!(status, json!(200), "signed in by the viewer page");
    drop(browser);
    gateway.shutdown();
    server.abort();
}
