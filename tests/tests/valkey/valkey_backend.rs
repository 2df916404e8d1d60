//! Valkey-specific behaviour beyond the conformance suite: URLs and
//! credentials, appending inside a caller's transaction, entries written by
//! other clients, exact retention, and a stream whose history was reset.

use std::time::Duration;

use ff_backend_valkey::redis::{self, aio::MultiplexedConnection};
use ff_backend_valkey::{EntryOf, Retention, ValkeyBackend, ValkeyConfig};
use ff_core::backend::{DeliveryItem, DeliveryStream, EventPublisher, StreamBackend};
use ff_core::engine_error::EngineError;
use ff_core::filter::SubscriptionFilter;
use ff_core::stream_events::{
    CompletionEvent, CompletionOutcome, EventMeta, Family, NewEvent, StreamEvent,
};
use ff_core::stream_subscribe::StreamCursor;
use ff_core::types::ExecutionId;
use ff_tests::harness::valkey::server_url;
use ff_tests::support;
use futures::StreamExt;
use tokio::time::{timeout_at, Instant};

const DEADLINE: Duration = Duration::from_secs(20);

async fn backend(config: ValkeyConfig) -> ValkeyBackend {
    let name = support::unique_name("ffvk");
    ValkeyBackend::connect(
        &server_url().await,
        config
            .with_key_prefix(format!("{name}:"))
            .with_client_name(name),
    )
    .await
    .expect("connect")
}

async fn raw() -> MultiplexedConnection {
    redis::Client::open(server_url().await)
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("connection")
}

fn completion(n: usize) -> (NewEvent, EventMeta) {
    (
        NewEvent::completion(ExecutionId::new(7), CompletionOutcome::Success),
        EventMeta::new().with_tag("n", n.to_string()),
    )
}

async fn subscribe(b: &ValkeyBackend, family: Family, from: StreamCursor) -> DeliveryStream {
    b.subscribe_family(family, from, &SubscriptionFilter::default())
        .await
        .expect("subscribe")
}

/// Events (with metadata) up to `CaughtUp`; any other item panics.
async fn backlog(sub: &mut DeliveryStream) -> Vec<(StreamEvent, EventMeta)> {
    let mut events = Vec::new();
    loop {
        match timeout_at(Instant::now() + DEADLINE, sub.next()).await {
            Ok(Some(Ok(DeliveryItem::Event { event, meta }))) => events.push((event, meta)),
            Ok(Some(Ok(DeliveryItem::CaughtUp { .. }))) => return events,
            other => panic!("reading a backlog: {other:?}"),
        }
    }
}

fn numbers(events: &[(StreamEvent, EventMeta)]) -> Vec<usize> {
    events
        .iter()
        .map(|(_, m)| m.tags["n"].parse().expect("n"))
        .collect()
}

#[tokio::test]
async fn bad_urls_and_unreachable_servers_never_reveal_the_password() {
    let config = ValkeyConfig::default;
    for bad in [
        "valkey://user:hunter2@host:notaport",
        "postgres://user:hunter2@host/db",
        "user:hunter2@host:6379",
    ] {
        match ValkeyBackend::connect(bad, config()).await {
            Err(EngineError::Validation { detail }) => {
                assert!(!detail.contains("hunter2"), "{detail}")
            }
            other => panic!("{bad}: expected Validation, got {other:?}"),
        }
    }
    // Nothing listens on port 1.
    match ValkeyBackend::connect("valkey://user:hunter2@127.0.0.1:1", config()).await {
        Err(e @ EngineError::Transport { .. }) => {
            let text = format!("{e} {e:?}");
            assert!(!text.contains("hunter2"), "{text}");
            assert!(
                text.contains("127.0.0.1:1"),
                "the message names the server: {text}"
            );
        }
        other => panic!("expected Transport, got {other:?}"),
    }
    match ValkeyBackend::connect(&server_url().await, config().with_key_prefix("bad prefix")).await
    {
        Err(EngineError::Validation { detail }) => assert!(detail.contains("prefix"), "{detail}"),
        other => panic!("expected Validation, got {other:?}"),
    }
}

#[tokio::test]
async fn a_password_authenticates_every_connection_and_never_shows() {
    // Written into the URL unencoded, `/ ? # @ :` included.
    const PASSWORD: &str = "hun/ter2?#x@y:z";
    let mut conn = raw().await;
    let user = support::unique_name("ffuser");
    let created: redis::RedisResult<()> = redis::cmd("ACL")
        .arg("SETUSER")
        .arg(&user)
        .arg("on")
        .arg(format!(">{PASSWORD}"))
        .arg("~*")
        .arg("&*")
        .arg("+@all")
        .query_async(&mut conn)
        .await;
    if let Err(e) = created {
        eprintln!("SKIPPED a_password_authenticates_every_connection_and_never_shows: ACL SETUSER failed ({e})");
        return;
    }
    let server = server_url().await;
    let with_password = server.replacen("redis://", &format!("valkey://{user}:{PASSWORD}@"), 1);
    let name = support::unique_name("ffauth");
    let b = ValkeyBackend::connect(
        &with_password,
        ValkeyConfig::default()
            .with_key_prefix(format!("{name}:"))
            .with_client_name(name),
    )
    .await
    .expect("connect with a password");
    let shown = format!("{b:?} {}", b.url());
    assert!(!shown.contains("hun/ter2"), "{shown}");
    assert!(shown.contains("***"), "{shown}");
    let cursors = b
        .publish_batch((0..3).map(completion).collect())
        .await
        .expect("publish");
    // The subscription authenticates its own connection too.
    let mut sub = subscribe(&b, Family::Completion, StreamCursor::beginning()).await;
    let events = backlog(&mut sub).await;
    assert_eq!(events.last().map(|(e, _)| e.cursor()), cursors.last());
    let wrong = with_password.replacen("hun/ter2", "hun/ter3", 1);
    match ValkeyBackend::connect(&wrong, ValkeyConfig::default()).await {
        Err(e) => {
            let text = format!("{e} {e:?}");
            assert!(!text.contains("hun/ter"), "{text}");
        }
        Ok(_) => panic!("a wrong password must not connect"),
    }
    let _: redis::RedisResult<()> = redis::cmd("ACL")
        .arg("DELUSER")
        .arg(&user)
        .query_async(&mut conn)
        .await;
}

#[tokio::test]
async fn an_append_inside_the_callers_transaction_commits_with_its_state_change() {
    let b = backend(ValkeyConfig::default()).await;
    let mut conn = raw().await;
    let exec = ExecutionId::new(2);
    let state_key = format!("{}state", b.stream_key(Family::Completion));
    let event = NewEvent::completion(exec, CompletionOutcome::Failure);
    let meta = EventMeta::new().with_namespace("billing");
    let (entry_id,): (String,) = redis::pipe()
        .atomic()
        .hset(&state_key, exec.to_string(), "failed")
        .ignore()
        .add_command(b.append_cmd(&event, &meta).expect("append_cmd"))
        .query_async(&mut conn)
        .await
        .expect("MULTI/EXEC");
    let cursor = b
        .entry_id_cursor(
            &entry_id,
            EntryOf::Event {
                event: &event,
                meta: &meta,
            },
        )
        .expect("cursor");
    let mut sub = b
        .subscribe_completion(StreamCursor::beginning(), &SubscriptionFilter::default())
        .await
        .expect("subscribe");
    let got: CompletionEvent = timeout_at(Instant::now() + DEADLINE, sub.next())
        .await
        .expect("in time")
        .expect("an event")
        .expect("not an error");
    assert_eq!(got.cursor, cursor);
    assert_eq!(got.execution_id, exec);
    assert_eq!(got.outcome, CompletionOutcome::Failure);
    let bad = NewEvent::tag_attached(exec, "");
    assert!(matches!(
        b.append_cmd(&bad, &EventMeta::new()),
        Err(EngineError::Validation { .. })
    ));
}

#[tokio::test]
async fn entries_written_by_any_client_decode_and_filter_by_their_metadata() {
    let b = backend(ValkeyConfig::default()).await;
    let mut conn = raw().await;
    let exec = "{fp:3}:6f1c0a4e-2b7d-4c53-9a3e-8f0e5d2c1b7a";
    for (outcome, ns) in [("success", "billing"), ("timed_out", "search")] {
        let _: String = redis::cmd("XADD")
            .arg(b.stream_key(Family::Completion))
            .arg("*")
            .arg("v")
            .arg("1")
            .arg("execution_id")
            .arg(exec)
            .arg("outcome")
            .arg(outcome)
            .arg("namespace")
            .arg(ns)
            .arg("tags")
            .arg(r#"{"region":"eu"}"#)
            .arg("added_by_a_newer_producer")
            .arg("ignored")
            .query_async(&mut conn)
            .await
            .expect("XADD");
    }
    let filter = SubscriptionFilter::new()
        .with_namespace("search")
        .with_tag("region", "eu");
    let mut sub = b
        .subscribe_family(Family::Completion, StreamCursor::beginning(), &filter)
        .await
        .expect("subscribe");
    let events = backlog(&mut sub).await;
    assert_eq!(events.len(), 1, "the filter admits only the second entry");
    let (event, meta) = &events[0];
    let StreamEvent::Completion(c) = event else {
        panic!("{event:?}")
    };
    assert_eq!(c.execution_id.to_string(), exec);
    assert_eq!(c.outcome, CompletionOutcome::Other("timed_out".into()));
    assert_eq!(meta.namespace.as_deref(), Some("search"));
    assert_eq!(meta.tags.get("region").map(String::as_str), Some("eu"));
}

#[tokio::test]
async fn max_len_retention_trims_exactly_and_expires_only_lost_positions() {
    let b =
        backend(ValkeyConfig::default().with_retention(Family::Completion, Retention::MaxLen(20)))
            .await;
    let cursors = b
        .publish_batch((0..100).map(completion).collect())
        .await
        .expect("publish");
    b.apply_retention(Family::Completion).await.expect("trim");
    let bounds = b.bounds(Family::Completion).await.expect("bounds");
    assert_eq!(bounds.retained, Some(20));
    assert_eq!(&bounds.head, cursors.last().unwrap());

    // The last removed event lost nothing after it: not expired.
    let mut sub = subscribe(&b, Family::Completion, cursors[79].clone()).await;
    assert_eq!(
        numbers(&backlog(&mut sub).await),
        (80..100).collect::<Vec<_>>()
    );
    // One before it lost event 79.
    match b
        .subscribe_family(
            Family::Completion,
            cursors[78].clone(),
            &SubscriptionFilter::default(),
        )
        .await
    {
        Err(EngineError::CursorExpired { oldest, .. }) => {
            let mut sub = subscribe(&b, Family::Completion, oldest.expect("oldest")).await;
            assert_eq!(
                numbers(&backlog(&mut sub).await),
                (80..100).collect::<Vec<_>>()
            );
        }
        Ok(_) => panic!("a cursor whose successor was trimmed must be expired"),
        Err(e) => panic!("expected CursorExpired, got {e}"),
    }
    assert_eq!(
        b.apply_retention(Family::Completion).await.expect("trim"),
        0,
        "nothing more to trim"
    );
}

#[tokio::test]
async fn min_age_retention_removes_only_old_enough_entries() {
    let b = backend(ValkeyConfig::default().with_retention(
        Family::Completion,
        Retention::MinAge(Duration::from_millis(1)),
    ))
    .await;
    b.publish_batch((0..10).map(completion).collect())
        .await
        .expect("publish");
    // The server clock must pass the entries' ids by 1 ms: retry until then.
    let deadline = Instant::now() + DEADLINE;
    let mut removed = 0;
    while removed < 10 {
        assert!(Instant::now() < deadline, "entries never aged out");
        removed += b.apply_retention(Family::Completion).await.expect("trim");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(removed, 10);
    let bounds = b.bounds(Family::Completion).await.expect("bounds");
    assert_eq!(bounds.retained, Some(0));
    assert_eq!(
        bounds.oldest, bounds.head,
        "an emptied stream resumes after its last id"
    );
}

#[tokio::test]
async fn a_stream_whose_history_was_reset_expires_old_cursors() {
    let b = backend(ValkeyConfig::default()).await;
    let cursors = b
        .publish_batch((0..3).map(completion).collect())
        .await
        .expect("publish");
    let mut conn = raw().await;
    let _: () = redis::cmd("DEL")
        .arg(b.stream_key(Family::Completion))
        .query_async(&mut conn)
        .await
        .expect("DEL");
    match b
        .subscribe_family(
            Family::Completion,
            cursors[1].clone(),
            &SubscriptionFilter::default(),
        )
        .await
    {
        Err(EngineError::CursorExpired { detail, .. }) => {
            assert!(detail.contains("beyond"), "{detail}")
        }
        Ok(_) => panic!("a cursor beyond the stream's history must be expired"),
        Err(e) => panic!("expected CursorExpired, got {e}"),
    }
    let mut sub = subscribe(&b, Family::Completion, StreamCursor::beginning()).await;
    assert!(backlog(&mut sub).await.is_empty());
}

#[tokio::test]
async fn a_subscription_holds_one_connection_named_for_it() {
    let b = backend(ValkeyConfig::default()).await;
    let mut conn = raw().await;
    let count = |list: String| {
        list.lines()
            .filter(|l| l.contains(&format!(" name={} ", b.subscription_client_name())))
            .count()
    };
    let mut subs = Vec::new();
    for family in Family::ALL.iter().copied() {
        let mut sub = subscribe(&b, family, StreamCursor::empty()).await;
        match timeout_at(Instant::now() + DEADLINE, sub.next()).await {
            Ok(Some(Ok(DeliveryItem::CaughtUp { .. }))) => {}
            other => panic!("{other:?}"),
        }
        subs.push(sub);
    }
    let deadline = Instant::now() + DEADLINE;
    loop {
        let list: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query_async(&mut conn)
            .await
            .expect("CLIENT LIST");
        match count(list) {
            4 => break,
            n if n < 4 && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            n => panic!("{n} subscription connections for 4 subscriptions"),
        }
    }
    drop(subs);
}

/// `cmdstat_xrange` calls so far on the server behind `conn`.
async fn xrange_calls(conn: &mut MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .expect("INFO");
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_xrange:calls="))
        .and_then(|rest| rest.split(',').next()?.parse().ok())
        .unwrap_or(0)
}

#[cfg_attr(
    ff_external_valkey,
    ignore = "needs a Valkey server of its own; FF_TEST_VALKEY_URL is set"
)]
#[tokio::test]
async fn the_largest_possible_entry_id_is_delivered_once_and_never_again() {
    if support::skip_if_external_valkey(
        "the_largest_possible_entry_id_is_delivered_once_and_never_again",
    ) {
        return;
    }
    // Its own server: the test counts the server's XRANGE calls.
    let server = tokio::task::spawn_blocking(support::ValkeyServer::start)
        .await
        .expect("support thread")
        .expect("a Valkey server");
    let name = support::unique_name("ffmax");
    let b = ValkeyBackend::connect(
        &server.url(),
        ValkeyConfig::default()
            .with_key_prefix(format!("{name}:"))
            .with_client_name(name)
            .with_safety_net_poll(Duration::from_millis(10)),
    )
    .await
    .expect("connect");
    let mut conn = redis::Client::open(server.url())
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("connection");
    let max = "18446744073709551615-18446744073709551615";
    for (id, n) in [("1-1", 0), (max, 1)] {
        let _: String = redis::cmd("XADD")
            .arg(b.stream_key(Family::Completion))
            .arg(id)
            .arg("v")
            .arg(1)
            .arg("execution_id")
            .arg(ExecutionId::new(1).to_string())
            .arg("outcome")
            .arg("success")
            .arg("tags")
            .arg(format!(r#"{{"n":"{n}"}}"#))
            .query_async(&mut conn)
            .await
            .expect("XADD");
    }
    let max_cursor = b
        .entry_id_cursor(
            max,
            EntryOf::Stored {
                family: Family::Completion,
                partition: 0,
                witness: None,
            },
        )
        .expect("cursor");

    let mut from_beginning = subscribe(&b, Family::Completion, StreamCursor::beginning()).await;
    assert_eq!(numbers(&backlog(&mut from_beginning).await), vec![0, 1]);
    let mut from_max = subscribe(&b, Family::Completion, max_cursor.clone()).await;
    match timeout_at(Instant::now() + DEADLINE, from_max.next()).await {
        Ok(Some(Ok(DeliveryItem::CaughtUp { cursor }))) => assert_eq!(cursor, max_cursor),
        other => panic!("resuming from the largest id: {other:?}"),
    }
    // Let both subscriptions run many safety-net polls. A redelivery would
    // fill the (unread) channel and stall that subscription's polls.
    let start = xrange_calls(&mut conn).await;
    let deadline = Instant::now() + DEADLINE;
    while xrange_calls(&mut conn).await < start + 20 {
        assert!(
            Instant::now() < deadline,
            "the subscriptions stopped polling"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    use futures::FutureExt;
    assert!(
        from_beginning.next().now_or_never().is_none(),
        "nothing after the largest id"
    );
    assert!(
        from_max.next().now_or_never().is_none(),
        "nothing after the largest id"
    );
}

/// Publishes waiting for a replica that never acknowledges (`WAIT` on a
/// server without one) hold up no other command of the backend: `bounds()`
/// sent while they wait returns before any of them.
#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_publishes_waiting_for_replicas_hold_up_no_other_command() {
    let name = support::unique_name("ffacks");
    let b = ValkeyBackend::connect(
        &server_url().await,
        ValkeyConfig::default()
            .with_key_prefix(format!("{name}:"))
            .with_client_name(name.clone())
            .with_replica_acks(1, Duration::from_secs(5)),
    )
    .await
    .expect("connect");
    let (done_tx, mut done) = tokio::sync::mpsc::unbounded_channel();
    let publishes: Vec<_> = (0..4)
        .map(|n| {
            let (b, done) = (b.clone(), done_tx.clone());
            tokio::spawn(async move {
                let (event, meta) = completion(n);
                let result = b.publish(event, meta).await;
                let _ = done.send(format!("publish {n}"));
                result
            })
        })
        .collect();
    // Until the server shows one of the backend's connections blocked in WAIT.
    let mut conn = raw().await;
    let deadline = Instant::now() + DEADLINE;
    loop {
        let clients: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query_async(&mut conn)
            .await
            .expect("CLIENT LIST");
        let waiting = clients
            .lines()
            .any(|l| l.contains(&format!("name={name} ")) && l.contains("cmd=wait"));
        if waiting {
            break;
        }
        assert!(Instant::now() < deadline, "no publish reached WAIT");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    b.bounds(Family::Completion).await.expect("bounds");
    let _ = done_tx.send("bounds".to_owned());
    let first = timeout_at(deadline, done.recv())
        .await
        .expect("something completes")
        .expect("open");
    assert_eq!(first, "bounds", "bounds() waited for the acknowledgements");
    for publish in publishes {
        match publish.await.expect("the publish task") {
            Err(e @ EngineError::Transport { .. }) => {
                assert!(e.to_string().contains("0 of the 1 replica(s)"), "{e}")
            }
            other => panic!("expected the unacknowledged Transport error, got {other:?}"),
        }
    }
}
