//! A minimal headless-Chromium driver over the DevTools protocol, for tests
//! that watch a real browser use the SSE viewer page.
//!
//! [`Chromium::launch`] starts Debian's `chromium` headless with remote
//! debugging on a free port, reads the DevTools WebSocket address it prints,
//! and [`Chromium::open`] / [`Chromium::eval`] open a page and evaluate
//! JavaScript in it. The browser and its profile directory go away on drop.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Why the browser could not be driven.
#[derive(Debug, thiserror::Error)]
pub enum BrowserError {
    /// No Chromium binary was found.
    #[error("no chromium found (tried {0}); install Debian's `chromium` or set FF_CHROMIUM")]
    NotFound(String),
    /// Starting or talking to the browser failed.
    #[error("chromium: {0}")]
    Failed(String),
}

fn failed(e: impl std::fmt::Display) -> BrowserError {
    BrowserError::Failed(e.to_string())
}

/// Find the browser: `FF_CHROMIUM`, then `chromium`, `chromium-browser`,
/// `google-chrome` on `PATH`.
pub fn find_chromium() -> Result<PathBuf, BrowserError> {
    if let Some(p) = std::env::var_os("FF_CHROMIUM") {
        return Ok(PathBuf::from(p));
    }
    let names = ["chromium", "chromium-browser", "google-chrome"];
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for name in names {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    Err(BrowserError::NotFound(format!(
        "FF_CHROMIUM, {} on PATH",
        names.join(", ")
    )))
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A running headless Chromium and its DevTools connection.
pub struct Chromium {
    child: Child,
    ws: Ws,
    next_id: u64,
    profile: PathBuf,
}

/// A page (target) the browser has open.
#[derive(Clone, Debug)]
pub struct Page {
    session: String,
}

impl Chromium {
    /// Launch headless with a fresh profile and connect to DevTools.
    pub async fn launch() -> Result<Self, BrowserError> {
        let binary = find_chromium()?;
        let profile = std::env::temp_dir().join(format!(
            "ff-chromium-{}-{}",
            std::process::id(),
            random_suffix()
        ));
        std::fs::create_dir_all(&profile).map_err(failed)?;
        let mut child = Command::new(&binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--remote-debugging-port=0",
                "--remote-debugging-address=127.0.0.1",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            // Its own process group, so dropping it stops the renderer and
            // GPU helpers too, which otherwise keep writing into the
            // profile while it is removed.
            .process_group(0)
            .spawn()
            .map_err(|e| failed(format!("starting {}: {e}", binary.display())))?;
        let stderr = child.stderr.take().expect("piped stderr");
        let mut lines = BufReader::new(stderr).lines();
        let address = tokio::time::timeout(Duration::from_secs(60), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(i) = line.find("ws://") {
                    return Some(line[i..].trim().to_owned());
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
        .ok_or_else(|| failed("no DevTools address printed within 60 s"))?;
        // Keep draining stderr so the browser never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let (ws, _) = tokio_tungstenite::connect_async(address.as_str())
            .await
            .map_err(failed)?;
        Ok(Self {
            child,
            ws,
            next_id: 1,
            profile,
        })
    }

    /// Send one DevTools command and wait for its result.
    async fn call(
        &mut self,
        session: Option<&str>,
        method: &str,
        params: Value,
    ) -> Result<Value, BrowserError> {
        let id = self.next_id;
        self.next_id += 1;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        self.ws
            .send(Message::text(msg.to_string()))
            .await
            .map_err(failed)?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let next = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .map_err(|_| failed(format!("{method}: no reply within 30 s")))?;
            let Some(frame) = next else {
                return Err(failed("DevTools connection closed"));
            };
            let Message::Text(text) = frame.map_err(failed)? else {
                continue;
            };
            let reply: Value = serde_json::from_str(text.as_str()).map_err(failed)?;
            if reply["id"] == json!(id) {
                if let Some(err) = reply.get("error") {
                    return Err(failed(format!("{method}: {err}")));
                }
                return Ok(reply["result"].clone());
            }
        }
    }

    /// Open `url` in a new page.
    pub async fn open(&mut self, url: &str) -> Result<Page, BrowserError> {
        let target = self
            .call(None, "Target.createTarget", json!({ "url": url }))
            .await?;
        let target_id = target["targetId"].clone();
        let attached = self
            .call(
                None,
                "Target.attachToTarget",
                json!({ "targetId": target_id, "flatten": true }),
            )
            .await?;
        let session = attached["sessionId"]
            .as_str()
            .ok_or_else(|| failed("attachToTarget returned no sessionId"))?
            .to_owned();
        Ok(Page { session })
    }

    /// Set `page`'s viewport to `width` × `height` CSS pixels.
    pub async fn set_viewport(
        &mut self,
        page: &Page,
        width: u32,
        height: u32,
    ) -> Result<(), BrowserError> {
        self.call(
            Some(&page.session),
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": false }),
        )
        .await?;
        Ok(())
    }

    /// A PNG screenshot of `page`'s viewport.
    pub async fn screenshot(&mut self, page: &Page) -> Result<Vec<u8>, BrowserError> {
        use base64::Engine as _;
        let shot = self
            .call(
                Some(&page.session),
                "Page.captureScreenshot",
                json!({ "format": "png" }),
            )
            .await?;
        let data = shot["data"]
            .as_str()
            .ok_or_else(|| failed("captureScreenshot returned no data"))?;
        base64::engine::general_purpose::STANDARD
            .decode(data)
            .map_err(failed)
    }

    /// Evaluate `expression` in `page` and return its JSON value.
    pub async fn eval(&mut self, page: &Page, expression: &str) -> Result<Value, BrowserError> {
        let result = self
            .call(
                Some(&page.session),
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
            )
            .await?;
        if let Some(exc) = result.get("exceptionDetails") {
            return Err(failed(format!("{expression}: {exc}")));
        }
        Ok(result["result"]["value"].clone())
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            // The whole group: the browser and every helper it started.
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .stderr(Stdio::null())
                .status();
        }
        let _ = self.child.start_kill();
        // Give the browser a moment to exit before removing its profile,
        // and remove it again should a helper still have written into it.
        for _ in 0..50 {
            if matches!(self.child.try_wait(), Ok(Some(_)))
                && std::fs::remove_dir_all(&self.profile).is_ok()
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

fn random_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::process::id() as u64);
    h.finish()
}

/// `true` (after saying so loudly) when `FF_SKIP_BROWSER=1` asks to skip
/// browser tests; otherwise a missing browser fails the test.
pub fn skip_browser_tests(test: &str) -> bool {
    let skip = std::env::var("FF_SKIP_BROWSER").is_ok_and(|v| v == "1");
    if skip {
        eprintln!("SKIPPED {test}: FF_SKIP_BROWSER=1");
    }
    skip
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn chromium_opens_a_page_and_evaluates_javascript() {
        if skip_browser_tests("chromium_opens_a_page_and_evaluates_javascript") {
            return;
        }
        let mut browser = Chromium::launch().await.expect("launch chromium");
        let page = browser
            .open("data:text/html,<p id=x>hello</p>")
            .await
            .expect("open page");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let text = browser
                .eval(&page, "document.getElementById('x')?.textContent ?? null")
                .await
                .expect("eval");
            if text == json!("hello") {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "page never loaded: {text}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(browser.eval(&page, "1 + 2").await.unwrap(), json!(3));
    }
}
