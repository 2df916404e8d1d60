//! What a subscription logs when its connection is lost: the same level on
//! every backend (`WARN` for the loss, `INFO` for the recovery), inside
//! the subscription's `ff_subscription` span naming backend and family.
//!
//! One global subscriber writes every line of this binary into a buffer;
//! each test picks out the lines of its own backend's span.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use ff_core::testkit::support::{
    publish_retrying, subscribe, take_events, until_caught_up, ITEM_DEADLINE,
};
use ff_core::testkit::Harness;
use ff_core::{EventMeta, Family, NewEvent, StreamCursor, SubscriptionFilter};
use ff_tests::harness::postgres::PostgresHarness;
use ff_tests::harness::valkey::ValkeyHarness;
use tokio::time::Instant;

/// Every line logged in this test binary.
fn log() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(move || Sink(sink.clone()))
            .init();
        log
    })
}

/// The log, also after a failed assertion elsewhere poisoned its lock.
fn lock(log: &Mutex<Vec<u8>>) -> std::sync::MutexGuard<'_, Vec<u8>> {
    log.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Everything logged so far, as text.
fn logged() -> String {
    String::from_utf8_lossy(&lock(log())).into_owned()
}

/// A writer appending to the shared log.
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        lock(&self.0).extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The logged lines inside `backend`'s subscription span for `family`
/// that contain `text`.
fn lines_with(backend: &str, family: Family, text: &str) -> Vec<String> {
    let log = logged();
    let span = format!("ff_subscription{{backend=\"{backend}\" family=\"{family}\"}}");
    log.lines()
        .filter(|line| line.contains(&span) && line.contains(text))
        .map(str::to_owned)
        .collect()
}

/// Wait until a line of `backend`'s span contains `text`, and return it.
async fn wait_for_line(backend: &str, family: Family, text: &str) -> String {
    let deadline = Instant::now() + ITEM_DEADLINE;
    loop {
        if let Some(line) = lines_with(backend, family, text).pop() {
            return line;
        }
        assert!(
            Instant::now() < deadline,
            "no line with {text:?} inside {backend}'s ff_subscription span for {family}; the log:\n{}",
            logged()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Subscribe, then kill the backend's connections and see an event
/// published after the kill delivered, until the subscription has logged
/// a loss (a kill can land before a reader opens the connection it waits
/// on, and then costs it nothing); check the loss and recovery lines.
async fn a_lost_connection_is_a_warning_and_its_recovery_info<H: Harness>(h: &H, backend: &str) {
    log();
    let family = Family::Completion;
    let mut sub = subscribe(h, family, StreamCursor::empty(), &SubscriptionFilter::new()).await;
    until_caught_up(&mut sub, "the tail start").await;
    let deadline = Instant::now() + ITEM_DEADLINE;
    while lines_with(backend, family, "lost its connection").is_empty() {
        assert!(
            Instant::now() < deadline,
            "the {backend} subscription never logged a lost connection; the log:\n{}",
            logged()
        );
        h.kill_connections().await.expect("kill the connections");
        let draft = NewEvent::completion(
            ff_core::ExecutionId::new(0),
            ff_core::CompletionOutcome::Success,
        );
        publish_retrying(h.publisher().as_ref(), draft, EventMeta::new()).await;
        take_events(&mut sub, 1, "the event published after the kill").await;
    }

    let lost = wait_for_line(backend, family, "lost its connection").await;
    assert!(lost.contains(" WARN "), "the loss is not a warning: {lost}");
    let back = wait_for_line(backend, family, "subscription reconnected").await;
    assert!(back.contains(" INFO "), "the recovery is not info: {back}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valkey_logs_a_lost_connection_as_a_warning_inside_the_subscription_span() {
    let h = ValkeyHarness::new().await;
    a_lost_connection_is_a_warning_and_its_recovery_info(&h, "valkey").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_logs_a_lost_connection_as_a_warning_inside_the_subscription_span() {
    let h = PostgresHarness::new().await;
    a_lost_connection_is_a_warning_and_its_recovery_info(&h, "postgres").await;
}
