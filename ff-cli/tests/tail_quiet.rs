//! `ff tail` at the default log level says only what ff has to say: a
//! server restart under a running tail leaves no warning of a library
//! underneath on stderr. And `--idle-timeout` counts time without a
//! printed event: a filtered tail over a busy stream, whose checkpoints
//! keep arriving, still stops.

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::Duration;

use ff_backend_postgres::{PostgresBackend, PostgresConfig};
use ff_core::backend::EventPublisher;
use ff_core::stream_events::{CompletionOutcome, EventMeta, NewEvent};
use ff_core::testkit::support::ITEM_DEADLINE;
use ff_core::types::ExecutionId;
use ff_tests::support::PostgresServer;
use tokio::time::Instant;

/// How long the server stays down in a simulated outage.
const OUTAGE: Duration = Duration::from_secs(3);

/// A running `ff tail`, its stdout and stderr read as they come (a full
/// pipe would stall it).
struct Tail {
    child: Child,
    stdout: JoinHandle<String>,
    stderr: JoinHandle<String>,
}

impl Tail {
    /// `ff tail completion` on `url` with `args`, without the caller's log
    /// filter.
    fn spawn(url: &str, args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ff"))
            .args(["tail", "completion", "--backend", url])
            .args(args)
            .env_remove("RUST_LOG")
            .env_remove("FF_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run ff tail");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        Self {
            child,
            stdout: std::thread::spawn(move || read_all(stdout)),
            stderr: std::thread::spawn(move || read_all(stderr)),
        }
    }

    /// Its exit status (`None` if it had to be killed), stdout and stderr,
    /// once it exited or `limit` passed.
    async fn finish(mut self, limit: Duration) -> (Option<ExitStatus>, String, String) {
        let status = exited(&mut self.child, limit).await;
        let out = self.stdout.join().expect("stdout reader");
        let err = self.stderr.join().expect("stderr reader");
        (status, out, err)
    }
}

/// Wait (within `limit`) for `child` to exit; `None` if it is still running
/// then, after killing it.
async fn exited(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn read_all(mut pipe: impl Read) -> String {
    let mut text = String::new();
    pipe.read_to_string(&mut text).expect("read a pipe");
    text
}

async fn publish(backend: &PostgresBackend, partition: u16) {
    backend
        .publish(
            NewEvent::completion(ExecutionId::new(partition), CompletionOutcome::Success),
            EventMeta::new(),
        )
        .await
        .expect("publish");
}

/// Wait until the server shows `ff tail`'s subscription connection.
async fn wait_for_subscription(server: &PostgresServer) {
    let deadline = Instant::now() + ITEM_DEADLINE;
    while server
        .psql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'ff-sub'")
        .expect("pg_stat_activity")
        != "1"
    {
        assert!(Instant::now() < deadline, "ff tail did not subscribe");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_restarts_leave_no_library_warnings_on_stderr() {
    let server = PostgresServer::start().expect("start postgres");
    let url = server.url();
    PostgresBackend::connect(&url, PostgresConfig::default())
        .await
        .expect("migrate")
        .close()
        .await;
    let tail = Tail::spawn(&url, &["--from", "beginning", "--limit", "1"]);
    for _ in 0..2 {
        wait_for_subscription(&server).await;
        server.kill().expect("crash the server");
        // The outage itself: long enough that reconnecting outlasts the
        // connection pool's "slow acquire" threshold (2 s), which `sqlx`
        // reports as a warning.
        tokio::time::sleep(OUTAGE).await;
        server.restart().expect("start it again");
    }
    wait_for_subscription(&server).await;
    let publisher = PostgresBackend::connect(&url, PostgresConfig::default())
        .await
        .expect("connect");
    publish(&publisher, 1).await;
    publisher.close().await;
    let (status, out, err) = tail.finish(ITEM_DEADLINE).await;
    let status = status.unwrap_or_else(|| panic!("ff tail did not print the event: {err}"));
    assert!(status.success(), "ff tail failed: {err}");
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(
        !err.contains("sqlx"),
        "a library's warnings reached stderr: {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_counts_printed_events_not_checkpoints() {
    let server = PostgresServer::start().expect("start postgres");
    let url = server.url();
    let publisher = PostgresBackend::connect(&url, PostgresConfig::default())
        .await
        .expect("connect");
    // A filter nothing matches: every event is skipped, and checkpoints
    // (every second by default) report the skipped stretch.
    let never = ExecutionId::new(9).to_string();
    let mut tail = Tail::spawn(
        &url,
        &[
            "--execution-id",
            &never,
            "--idle-timeout",
            "2",
            "--positions",
        ],
    );
    wait_for_subscription(&server).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while tail.child.try_wait().expect("try_wait").is_none() && Instant::now() < deadline {
        publish(&publisher, 1).await;
    }
    let (status, out, err) = tail.finish(Duration::ZERO).await;
    let Some(status) = status else {
        panic!(
            "ff tail --idle-timeout 2 printed no event for a minute and kept running: {out}\n{err}"
        );
    };
    assert!(status.success(), "ff tail failed: {err}");
    assert!(
        out.lines().all(|l| !l.contains("\"execution_id\"")),
        "no event matched: {out}"
    );
}
