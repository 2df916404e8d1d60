//! Starting an `ff serve` process on a port it picks itself.
//!
//! A test that asks the kernel for a free port, releases it and passes it
//! to `ff serve` races every other connection on the machine for it (in a
//! full test run thousands of client sockets take ephemeral ports), and
//! loses now and then with "Address already in use". So the server
//! listens on port 0 and the test reads the address from the line it
//! prints: `ff serve: listening on <scheme>://<addr> (...)`.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long `ff serve` may take to start listening.
const START_DEADLINE: Duration = Duration::from_secs(30);

/// Spawn `command` (an `ff serve` with `--listen 127.0.0.1:0`) and wait
/// for it to listen; its child process and port. The rest of its stderr
/// is passed on to the test's. Panics, with what the server printed, when
/// it exits or stays silent past the deadline.
pub async fn start_listening(mut command: Command) -> (Child, u16) {
    command.stderr(Stdio::piped()).kill_on_drop(true);
    let mut child = command.spawn().expect("spawn ff serve");
    let stderr = child.stderr.take().expect("piped stderr");
    let mut lines = BufReader::new(stderr).lines();
    let mut seen = Vec::new();
    let port = tokio::time::timeout(START_DEADLINE, async {
        while let Some(line) = lines.next_line().await.expect("read ff serve's stderr") {
            if let Some(port) = listening_port(&line) {
                return Some(port);
            }
            seen.push(line);
        }
        None
    })
    .await;
    let port = match port {
        Ok(Some(port)) => port,
        Ok(None) => panic!("ff serve exited before listening: {}", seen.join(" | ")),
        Err(_) => panic!(
            "ff serve did not listen within {START_DEADLINE:?}: {}",
            seen.join(" | ")
        ),
    };
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("{line}");
        }
    });
    (child, port)
}

/// The port of a `listening on <scheme>://<host>:<port> ...` line.
fn listening_port(line: &str) -> Option<u16> {
    let rest = line.split("listening on ").nth(1)?;
    let addr = rest.split_whitespace().next()?;
    addr.rsplit(':').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::listening_port;

    #[test]
    fn the_port_is_read_from_the_listening_line() {
        assert_eq!(
            listening_port("ff serve: listening on https://127.0.0.1:43125 (backend memory:, …)"),
            Some(43125)
        );
        assert_eq!(listening_port("ff serve: shutting down"), None);
    }
}
