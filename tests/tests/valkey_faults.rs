//! Fault tests for the Valkey backend over real servers: a server killed
//! and restarted under a live subscriber and a retrying producer, a server
//! that stays down, trimming under a slow consumer, and a garbage entry.
//! Tests that kill a server start their own (`appendonly yes`,
//! `appendfsync always`); waiting is always for a condition, with a deadline.

use std::collections::HashSet;
use std::time::Duration;

use ff_backend_valkey::{Retention, ValkeyBackend, ValkeyConfig};
use ff_core::backend::{
    DeliveryItem, DeliveryStream, EventPublisher, ReconnectPolicy, StreamBackend,
};
use ff_core::engine_error::EngineError;
use ff_core::filter::SubscriptionFilter;
use ff_core::stream_events::{CompletionOutcome, EventMeta, Family, NewEvent, StreamEvent};
use ff_core::stream_subscribe::StreamCursor;
use ff_core::types::ExecutionId;
use ff_tests::harness::valkey::server_url;
use ff_tests::support::{self, ValkeyServer};
use futures::StreamExt;
use tokio::time::{timeout_at, Instant};

const DEADLINE: Duration = Duration::from_secs(60);

fn config(label: &str) -> ValkeyConfig {
    let name = support::unique_name(label);
    ValkeyConfig::default()
        .with_key_prefix(format!("{name}:"))
        .with_client_name(name)
}

async fn start_server() -> ValkeyServer {
    tokio::task::spawn_blocking(ValkeyServer::start)
        .await
        .expect("support thread")
        .expect("start a Valkey server")
}

/// Completion event number `n` (its number is in the `n` tag).
fn event(n: usize) -> (NewEvent, EventMeta) {
    (
        NewEvent::completion(
            ExecutionId::new((n % 16) as u16),
            CompletionOutcome::Success,
        ),
        EventMeta::new().with_tag("n", n.to_string()),
    )
}

fn number(meta: &EventMeta) -> usize {
    meta.tags["n"].parse().expect("an n tag")
}

/// Publish, retrying while the server is unreachable (a failed publish
/// may still have been stored: that is the producer's duplicate).
async fn publish_retrying(backend: &ValkeyBackend, n: usize) -> StreamCursor {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (e, m) = event(n);
        match backend.publish(e, m).await {
            Ok(cursor) => return cursor,
            Err(EngineError::Transport { .. } | EngineError::Backend { .. })
                if Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(10)).await
            }
            Err(e) => panic!("publish of event {n} failed: {e}"),
        }
    }
}

/// The next item within the deadline; `None` at the end of the stream.
async fn next(sub: &mut DeliveryStream, what: &str) -> Option<Result<DeliveryItem, EngineError>> {
    timeout_at(Instant::now() + DEADLINE, sub.next())
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// Every event from the beginning up to `CaughtUp`.
async fn stored(backend: &ValkeyBackend) -> Vec<StreamEvent> {
    let mut sub = backend
        .subscribe_family(
            Family::Completion,
            StreamCursor::beginning(),
            &SubscriptionFilter::default(),
        )
        .await
        .expect("subscribe");
    let mut events = Vec::new();
    loop {
        match next(&mut sub, "the stored events").await {
            Some(Ok(DeliveryItem::Event { event, .. })) => events.push(event),
            Some(Ok(DeliveryItem::CaughtUp { .. })) => return events,
            other => panic!("reading what is stored: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_and_restarted_mid_stream_loses_and_repeats_nothing() {
    if support::skip_if_external_valkey(
        "server_killed_and_restarted_mid_stream_loses_and_repeats_nothing",
    ) {
        return;
    }
    const N: usize = 3000;
    let server = start_server().await;
    let backend = ValkeyBackend::connect(
        &server.url(),
        config("ffkill").with_reconnect(
            ReconnectPolicy::new(Some(DEADLINE), None)
                .with_backoff(Duration::from_millis(20), Duration::from_millis(200)),
        ),
    )
    .await
    .expect("connect");

    let mut sub = backend
        .subscribe_family(
            Family::Completion,
            StreamCursor::beginning(),
            &SubscriptionFilter::default(),
        )
        .await
        .expect("subscribe");
    let producer = {
        let backend = backend.clone();
        tokio::spawn(async move {
            let mut acknowledged = Vec::with_capacity(N + 1);
            for n in 0..=N {
                acknowledged.push(publish_retrying(&backend, n).await);
            }
            acknowledged
        })
    };

    let mut delivered: Vec<StreamEvent> = Vec::new();
    let mut server = Some(server);
    let mut restarted = None;
    loop {
        match next(&mut sub, "events across the restart").await {
            Some(Ok(DeliveryItem::Event { event, meta })) => {
                let last = number(&meta) == N;
                delivered.push(event);
                if delivered.len() == N / 3 {
                    let mut server = server.take().expect("killed once");
                    server.kill().expect("kill the server");
                    restarted = Some(tokio::task::spawn_blocking(move || {
                        server.restart().expect("restart the server");
                        server
                    }));
                }
                if last {
                    break;
                }
            }
            Some(Ok(_)) => {}
            other => panic!("the subscription must ride out the restart, got {other:?}"),
        }
    }
    let _server = restarted
        .expect("the server was restarted")
        .await
        .expect("restart thread");
    let acknowledged = producer.await.expect("producer");

    let stored = stored(&backend).await;
    let cursors = |events: &[StreamEvent]| {
        events
            .iter()
            .map(|e| e.cursor().clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        cursors(&delivered),
        cursors(&stored),
        "delivered must equal what is stored, each once, in order"
    );
    let stored_set: HashSet<StreamCursor> = cursors(&stored).into_iter().collect();
    for (n, c) in acknowledged.iter().enumerate() {
        assert!(
            stored_set.contains(c),
            "acknowledged event {n} ({c:?}) was not stored"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_down_past_the_policy_disconnects_and_resumes_losslessly() {
    if support::skip_if_external_valkey(
        "server_down_past_the_policy_disconnects_and_resumes_losslessly",
    ) {
        return;
    }
    let mut server = start_server().await;
    let backend = ValkeyBackend::connect(
        &server.url(),
        config("ffdown").with_reconnect(
            ReconnectPolicy::new(Some(Duration::from_secs(2)), None)
                .with_backoff(Duration::from_millis(20), Duration::from_millis(200)),
        ),
    )
    .await
    .expect("connect");
    for n in 0..10 {
        publish_retrying(&backend, n).await;
    }
    let mut sub = backend
        .subscribe_family(
            Family::Completion,
            StreamCursor::beginning(),
            &SubscriptionFilter::default(),
        )
        .await
        .expect("subscribe");
    let mut last = None;
    loop {
        match next(&mut sub, "the backlog").await {
            Some(Ok(DeliveryItem::Event { event, .. })) => last = Some(event.cursor().clone()),
            Some(Ok(DeliveryItem::CaughtUp { cursor })) => {
                assert_eq!(Some(&cursor), last.as_ref());
                break;
            }
            other => panic!("backlog: {other:?}"),
        }
    }
    let last = last.expect("ten events");
    let mut tail = backend
        .subscribe_family(
            Family::Completion,
            StreamCursor::empty(),
            &SubscriptionFilter::default(),
        )
        .await
        .expect("subscribe to the tail");
    let resolved = match next(&mut tail, "the tail's CaughtUp").await {
        Some(Ok(DeliveryItem::CaughtUp { cursor })) => cursor,
        other => panic!("tail: {other:?}"),
    };

    server.kill().expect("kill");
    let started = Instant::now();
    match next(&mut sub, "StreamDisconnected").await {
        Some(Err(EngineError::StreamDisconnected { cursor })) => {
            assert_eq!(
                cursor, last,
                "StreamDisconnected carries the last yielded position"
            )
        }
        other => panic!("expected StreamDisconnected, got {other:?}"),
    }
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "gave up after {:?}, before the policy's 2 s",
        started.elapsed()
    );
    assert!(
        next(&mut sub, "the end").await.is_none(),
        "StreamDisconnected is terminal"
    );
    match next(&mut tail, "the tail's StreamDisconnected").await {
        Some(Err(EngineError::StreamDisconnected { cursor })) => assert_eq!(
            cursor, resolved,
            "before any event, StreamDisconnected carries the position resolved at subscribe"
        ),
        other => panic!("tail: expected StreamDisconnected, got {other:?}"),
    }

    let server = tokio::task::spawn_blocking(move || {
        server.restart().expect("restart");
        server
    })
    .await
    .expect("restart thread");
    for n in 10..15 {
        publish_retrying(&backend, n).await;
    }
    let mut resumed = backend
        .subscribe_family(Family::Completion, last, &SubscriptionFilter::default())
        .await
        .expect("resume");
    let mut got = Vec::new();
    loop {
        match next(&mut resumed, "events after the outage").await {
            Some(Ok(DeliveryItem::Event { meta, .. })) => got.push(number(&meta)),
            Some(Ok(DeliveryItem::CaughtUp { .. })) => break,
            other => panic!("resumed: {other:?}"),
        }
    }
    assert_eq!(got, (10..15).collect::<Vec<_>>());
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trimming_under_a_slow_consumer_is_cursor_expired_not_a_gap() {
    let backend = ValkeyBackend::connect(
        &server_url().await,
        config("fftrim")
            .with_read_batch(10)
            .with_retention(Family::Completion, Retention::MaxLen(100)),
    )
    .await
    .expect("connect");
    let batch = |range: std::ops::Range<usize>| range.map(event).collect::<Vec<_>>();
    backend.publish_batch(batch(0..50)).await.expect("publish");
    let mut sub = backend
        .subscribe_family(
            Family::Completion,
            StreamCursor::beginning(),
            &SubscriptionFilter::default(),
        )
        .await
        .expect("subscribe");
    let mut delivered = Vec::new();
    while delivered.len() < 10 {
        match next(&mut sub, "the first events").await {
            Some(Ok(DeliveryItem::Event { meta, .. })) => delivered.push(number(&meta)),
            other => panic!("first events: {other:?}"),
        }
    }
    // The consumer stalls while 1000 more events arrive and retention trims.
    for start in (50..1050).step_by(50) {
        backend
            .publish_batch(batch(start..start + 50))
            .await
            .expect("publish");
    }
    backend
        .apply_retention(Family::Completion)
        .await
        .expect("trim");
    let bounds = backend.bounds(Family::Completion).await.expect("bounds");
    assert_eq!(bounds.retained, Some(100), "trimmed to the retention");

    let oldest = loop {
        match next(&mut sub, "the rest or CursorExpired").await {
            Some(Ok(DeliveryItem::Event { meta, .. })) => delivered.push(number(&meta)),
            Some(Ok(_)) => {}
            Some(Err(EngineError::CursorExpired { oldest, .. })) => break oldest.expect("oldest"),
            other => panic!("after the trim: {other:?}"),
        }
    };
    assert!(
        next(&mut sub, "the end").await.is_none(),
        "CursorExpired is terminal"
    );
    assert_eq!(
        delivered,
        (0..delivered.len()).collect::<Vec<_>>(),
        "what was delivered before CursorExpired is contiguous"
    );
    assert!(delivered.len() < 950, "the trim overtook the consumer");
    let mut from_oldest = backend
        .subscribe_family(Family::Completion, oldest, &SubscriptionFilter::default())
        .await
        .expect("resume from oldest");
    let mut rest = Vec::new();
    loop {
        match next(&mut from_oldest, "the retained events").await {
            Some(Ok(DeliveryItem::Event { meta, .. })) => rest.push(number(&meta)),
            Some(Ok(DeliveryItem::CaughtUp { .. })) => break,
            other => panic!("from oldest: {other:?}"),
        }
    }
    assert_eq!(
        rest,
        (950..1050).collect::<Vec<_>>(),
        "oldest resumes at the first retained"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbage_entry_mid_stream_is_one_corrupt_item_then_the_rest() {
    let backend = ValkeyBackend::connect(&server_url().await, config("ffgarbage"))
        .await
        .expect("connect");
    let key = backend.stream_key(Family::Completion).to_owned();
    let batch = |range: std::ops::Range<usize>| range.map(event).collect::<Vec<_>>();
    backend.publish_batch(batch(0..5)).await.expect("publish");
    let url = server_url().await;
    let garbage = tokio::task::spawn_blocking(move || {
        let client = ff_backend_valkey::redis::Client::open(url).expect("client");
        let mut conn = client.get_connection().expect("connection");
        ff_backend_valkey::redis::cmd("XADD")
            .arg(&key)
            .arg("*")
            .arg("hello")
            .arg("world")
            .query::<String>(&mut conn)
            .expect("XADD garbage")
    })
    .await
    .expect("thread");
    let garbage = backend
        .cursor_from_entry_id(Family::Completion, &garbage)
        .expect("cursor");
    backend.publish_batch(batch(5..10)).await.expect("publish");

    let mut sub = backend
        .subscribe_family(
            Family::Completion,
            StreamCursor::beginning(),
            &SubscriptionFilter::default(),
        )
        .await
        .expect("subscribe");
    let mut seen = Vec::new();
    loop {
        match next(&mut sub, "events around the garbage").await {
            Some(Ok(DeliveryItem::Event { meta, .. })) => seen.push(format!("{}", number(&meta))),
            Some(Ok(DeliveryItem::Corrupt { cursor, detail })) => {
                assert_eq!(
                    cursor, garbage,
                    "Corrupt carries the garbage entry's cursor"
                );
                assert!(detail.contains("execution_id"), "{detail}");
                seen.push("corrupt".into());
            }
            Some(Ok(DeliveryItem::CaughtUp { .. })) => break,
            other => panic!("around the garbage: {other:?}"),
        }
    }
    let expected: Vec<String> = (0..5)
        .map(|n| n.to_string())
        .chain(["corrupt".to_owned()])
        .chain((5..10).map(|n| n.to_string()))
        .collect();
    assert_eq!(seen, expected);
}
