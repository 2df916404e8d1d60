//! Fault tests for the Valkey backend over real servers: a server killed
//! and restarted under a live subscriber and a retrying producer, a server
//! that stays down, trimming under a slow consumer, and a garbage entry.
//! Tests that kill a server start their own (`appendonly yes`,
//! `appendfsync always`); waiting is always for a condition, with a deadline.
//! Every test runs twice: over plaintext (`plain::…`) and over TLS
//! (`tls::…`, a Redis 7.0 server with TLS and a throwaway CA).

use std::collections::HashSet;
use std::time::Duration;

use ff_backend_valkey::{EntryOf, EntryWitness, Retention, ValkeyBackend, ValkeyConfig};
use ff_core::backend::{
    DeliveryItem, DeliveryStream, EventPublisher, ReconnectPolicy, StreamBackend,
};
use ff_core::engine_error::EngineError;
use ff_core::filter::SubscriptionFilter;
use ff_core::stream_events::{CompletionOutcome, EventMeta, Family, NewEvent, StreamEvent};
use ff_core::stream_subscribe::StreamCursor;
use ff_core::types::ExecutionId;
use ff_tests::harness::valkey::{server_url, tls_server_urls};
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

/// How the backend reaches the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transport {
    Plain,
    Tls,
}

impl Transport {
    /// A server of its own, for tests that kill it.
    async fn own_server(self) -> ValkeyServer {
        tokio::task::spawn_blocking(move || match self {
            Transport::Plain => ValkeyServer::start(),
            Transport::Tls => ValkeyServer::start_tls(Default::default()),
        })
        .await
        .expect("support thread")
        .expect("start a Valkey server")
    }

    /// The URL the backend connects to `server` with.
    fn url(self, server: &ValkeyServer) -> String {
        match self {
            Transport::Plain => server.url(),
            Transport::Tls => server.tls_url().expect("a TLS server"),
        }
    }

    /// The shared server: (the backend's URL, a plaintext admin URL).
    async fn shared(self) -> (String, String) {
        match self {
            Transport::Plain => {
                let url = server_url().await;
                (url.clone(), url)
            }
            Transport::Tls => tls_server_urls().await,
        }
    }

    /// Whether a test that must kill its server is skipped (an external
    /// plaintext server; TLS tests always start their own).
    fn skip_killing(self, test: &str) -> bool {
        self == Transport::Plain && support::skip_if_external_valkey(test)
    }
}

/// Run each test function once per transport, as `plain::name` and
/// `tls::name`. Tests that kill their server need a plaintext server of
/// their own, so they are ignored over an external `FF_TEST_VALKEY_URL`.
macro_rules! over_plain_and_tls {
    (kill: [$($kill:ident),* $(,)?], share: [$($share:ident),* $(,)?] $(,)?) => {
        mod plain {
            $(
                #[cfg_attr(
                    ff_external_valkey,
                    ignore = "kills a Valkey server of its own; FF_TEST_VALKEY_URL is set"
                )]
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $kill() {
                    super::$kill(super::Transport::Plain).await
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $share() {
                    super::$share(super::Transport::Plain).await
                }
            )*
        }
        mod tls {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $kill() {
                    super::$kill(super::Transport::Tls).await
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $share() {
                    super::$share(super::Transport::Tls).await
                }
            )*
        }
    };
}

over_plain_and_tls!(
    kill: [
        server_killed_and_restarted_mid_stream_loses_and_repeats_nothing,
        server_down_past_the_policy_disconnects_and_resumes_losslessly,
    ],
    share: [
        trimming_under_a_slow_consumer_is_cursor_expired_not_a_gap,
        a_garbage_entry_mid_stream_is_one_corrupt_item_then_the_rest,
    ],
);

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

async fn server_killed_and_restarted_mid_stream_loses_and_repeats_nothing(transport: Transport) {
    if transport.skip_killing("server_killed_and_restarted_mid_stream_loses_and_repeats_nothing") {
        return;
    }
    const N: usize = 3000;
    let server = transport.own_server().await;
    let backend = ValkeyBackend::connect(
        &transport.url(&server),
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

async fn server_down_past_the_policy_disconnects_and_resumes_losslessly(transport: Transport) {
    if transport.skip_killing("server_down_past_the_policy_disconnects_and_resumes_losslessly") {
        return;
    }
    let mut server = transport.own_server().await;
    let backend = ValkeyBackend::connect(
        &transport.url(&server),
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

async fn trimming_under_a_slow_consumer_is_cursor_expired_not_a_gap(transport: Transport) {
    let backend = ValkeyBackend::connect(
        &transport.shared().await.0,
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

async fn a_garbage_entry_mid_stream_is_one_corrupt_item_then_the_rest(transport: Transport) {
    let (url, admin_url) = transport.shared().await;
    let backend = ValkeyBackend::connect(&url, config("ffgarbage"))
        .await
        .expect("connect");
    let key = backend.stream_key(Family::Completion).to_owned();
    let batch = |range: std::ops::Range<usize>| range.map(event).collect::<Vec<_>>();
    backend.publish_batch(batch(0..5)).await.expect("publish");
    let garbage = tokio::task::spawn_blocking(move || {
        let client = ff_backend_valkey::redis::Client::open(admin_url).expect("client");
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
        .entry_id_cursor(
            &garbage,
            EntryOf::Stored {
                family: Family::Completion,
                partition: 0,
                witness: Some(EntryWitness::of_fields(&[("hello", "world")])),
            },
        )
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

/// Publish events `range` (sequence numbers as the `seq` tag) through
/// `backend`, each acknowledged by a replica.
async fn publish_seqs(backend: &ValkeyBackend, range: std::ops::Range<u64>) {
    for n in range {
        let event = NewEvent::completion(ExecutionId::new(0), CompletionOutcome::Success);
        let meta = EventMeta::new().with_tag("seq", n.to_string());
        backend
            .publish(event, meta)
            .await
            .unwrap_or_else(|e| panic!("publishing event {n}: {e}"));
    }
}

/// Read `sub` until it delivered events `0..n` in total (their `seq` tags
/// appended to `seen`), failing on any error.
async fn deliver_until(sub: &mut DeliveryStream, seen: &mut Vec<u64>, n: usize) {
    let deadline = Instant::now() + DEADLINE;
    while seen.len() < n {
        match timeout_at(deadline, sub.next()).await {
            Ok(Some(Ok(DeliveryItem::Event { meta, .. }))) => {
                seen.push(meta.tags["seq"].parse().expect("a seq tag"))
            }
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => panic!("the subscription failed after {} events: {e}", seen.len()),
            Ok(None) => panic!("the subscription ended after {} events", seen.len()),
            Err(_) => panic!("{} of {n} events delivered within {DEADLINE:?}", seen.len()),
        }
    }
}

/// A standalone primary demoted with `REPLICAOF` while a subscription waits
/// on it (its blocked `XREAD` is answered `-UNBLOCKED`): the subscription
/// reconnects to the same address, now a replica of the new primary, and
/// delivers what is published there — every event once, in order, without
/// an error.
#[cfg_attr(
    ff_external_valkey,
    ignore = "starts Valkey servers of its own; FF_TEST_VALKEY_URL is set"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_demoted_by_replicaof_is_followed_without_an_error() {
    if support::skip_if_external_valkey(
        "a_primary_demoted_by_replicaof_is_followed_without_an_error",
    ) {
        return;
    }
    let a = Transport::Plain.own_server().await;
    let b = Transport::Plain.own_server().await;
    tokio::task::block_in_place(|| b.replicate(Some(&a))).expect("B replicates A");
    tokio::task::block_in_place(|| b.wait_until_in_sync(&a)).expect("B in sync");
    let cfg = config("demoted")
        .with_replica_acks(1, Duration::from_secs(5))
        .with_reconnect(
            ReconnectPolicy::new(Some(DEADLINE), None)
                .with_backoff(Duration::from_millis(20), Duration::from_millis(500)),
        );
    let on_a = ValkeyBackend::connect(&a.url(), cfg.clone())
        .await
        .expect("connect to A");
    let mut sub = on_a
        .subscribe_family(
            Family::Completion,
            StreamCursor::beginning(),
            &SubscriptionFilter::default(),
        )
        .await
        .expect("subscribe on A");
    let mut seen = Vec::new();
    publish_seqs(&on_a, 0..100).await;
    // Everything delivered: the subscription now waits in `XREAD BLOCK`.
    deliver_until(&mut sub, &mut seen, 100).await;
    tokio::task::block_in_place(|| {
        b.wait_until_in_sync(&a)?;
        b.replicate(None)?;
        a.replicate(Some(&b))?;
        a.wait_until_in_sync(&b)
    })
    .expect("A demoted to a replica of B");
    let on_b = ValkeyBackend::connect(&b.url(), cfg)
        .await
        .expect("connect to B");
    publish_seqs(&on_b, 100..200).await;
    deliver_until(&mut sub, &mut seen, 200).await;
    assert_eq!(
        seen,
        (0..200).collect::<Vec<u64>>(),
        "every event once, in order"
    );
}

/// A standalone primary demoted while its address moves to the promoted
/// replica (a virtual IP, a DNS name, a proxy — as a sentinel or a managed
/// service switches over): the publisher's open connection still leads to
/// the old server, which refuses writes with `-READONLY`; the publisher
/// reconnects to the address and reaches the new primary. Every publish
/// succeeds, and a subscription through the same address delivers each
/// event once, in order.
#[cfg_attr(
    ff_external_valkey,
    ignore = "starts Valkey servers of its own; FF_TEST_VALKEY_URL is set"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_follows_its_address_to_the_promoted_replica() {
    if support::skip_if_external_valkey("a_publisher_follows_its_address_to_the_promoted_replica") {
        return;
    }
    let a = Transport::Plain.own_server().await;
    let b = Transport::Plain.own_server().await;
    tokio::task::block_in_place(|| b.replicate(Some(&a))).expect("B replicates A");
    tokio::task::block_in_place(|| b.wait_until_in_sync(&a)).expect("B in sync");
    let proxy = support::TcpProxy::start(std::net::SocketAddr::from(([127, 0, 0, 1], a.port())))
        .expect("a proxy in front of A");
    let url = format!("redis://127.0.0.1:{}", proxy.port());
    // A command timeout well inside the test's deadline: a publish that
    // keeps meeting `-READONLY` fails with it.
    let cfg = config("switchover").with_timeouts(Duration::from_secs(5), Duration::from_secs(5));
    let backend = ValkeyBackend::connect(&url, cfg)
        .await
        .expect("connect through the proxy");
    let mut sub = backend
        .subscribe_family(
            Family::Completion,
            StreamCursor::beginning(),
            &SubscriptionFilter::default(),
        )
        .await
        .expect("subscribe through the proxy");
    let mut seen = Vec::new();
    publish_seqs(&backend, 0..20).await;
    deliver_until(&mut sub, &mut seen, 20).await;
    tokio::task::block_in_place(|| {
        b.wait_until_in_sync(&a)?;
        b.replicate(None)?;
        proxy.retarget(std::net::SocketAddr::from(([127, 0, 0, 1], b.port())));
        a.replicate(Some(&b))?;
        a.wait_until_in_sync(&b)
    })
    .expect("B promoted, the address moved to it, A its replica");
    publish_seqs(&backend, 20..40).await;
    deliver_until(&mut sub, &mut seen, 40).await;
    assert_eq!(
        seen,
        (0..40).collect::<Vec<u64>>(),
        "every event once, in order"
    );
}
