//! Fault tests against PostgreSQL servers of their own: a server crashed
//! and restarted under a live producer and consumer, a server down longer
//! than the reconnect policy allows, pruning under a slow consumer, and
//! undecodable rows mid-stream.
//!
//! The oracle: what is delivered equals what is stored, each exactly once,
//! in order, and every acknowledged publish is stored (a publish whose
//! reply was lost may be retried and stored twice — the producer's
//! duplicate, not the subscription's).

use std::sync::Arc;
use std::time::Duration;

use ff_backend_postgres::sqlx;
use ff_backend_postgres::{PostgresBackend, PostgresConfig};
use ff_core::backend::{
    DeliveryItem, DeliveryStream, EventPublisher, ReconnectPolicy, StreamBackend,
};
use ff_core::engine_error::EngineError;
use ff_core::filter::SubscriptionFilter;
use ff_core::stream_events::{EventMeta, Family, LeaseHistoryKind, NewEvent, StreamEvent};
use ff_core::stream_subscribe::StreamCursor;
use ff_core::testkit::support::ITEM_DEADLINE;
use ff_core::types::{ExecutionId, LeaseId};
use ff_tests::harness::postgres::{own_server, returned_cursor, server_url, RETURNING_POSITION};
use ff_tests::support::{self, PostgresServer};
use futures::StreamExt;
use tokio::time::Instant;

const FAMILY: Family = Family::LeaseHistory;

/// Run a blocking server operation (`kill`, `stop`, `restart`).
async fn server_op(
    server: &Arc<PostgresServer>,
    op: fn(&PostgresServer) -> Result<(), support::SupportError>,
) {
    let server = server.clone();
    tokio::task::spawn_blocking(move || op(&server))
        .await
        .expect("support thread")
        .expect("server operation");
}

fn config(policy: ReconnectPolicy) -> PostgresConfig {
    PostgresConfig::default()
        .with_schema("faults")
        .with_application_name("ff-faults")
        .with_checkpoint_interval(Duration::from_millis(200))
        .with_reconnect(policy)
        .with_connect_timeout(Duration::from_secs(2))
}

fn fast_policy(max_elapsed: Duration) -> ReconnectPolicy {
    ReconnectPolicy::new(Some(max_elapsed), None)
        .with_backoff(Duration::from_millis(20), Duration::from_millis(200))
}

/// Event `n`: a lease acquisition tagged with its number.
fn event(n: usize) -> (NewEvent, EventMeta) {
    (
        NewEvent::lease_acquired(ExecutionId::new(1), Some(LeaseId::new()), None),
        EventMeta::new().with_tag("n", n.to_string()),
    )
}

fn number(meta: &EventMeta) -> usize {
    meta.tags["n"].parse().expect("numbered event")
}

/// Publish event `n`, retrying failures until acknowledged.
async fn publish_retrying(b: &PostgresBackend, n: usize) -> StreamCursor {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (e, m) = event(n);
        match b.publish(e, m).await {
            Ok(c) => return c,
            Err(err @ (EngineError::Transport { .. } | EngineError::Backend { .. })) => {
                assert!(Instant::now() < deadline, "publish {n} kept failing: {err}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(err) => panic!("publish {n}: {err}"),
        }
    }
}

/// Every stored event of the family, in stream order, with its cursor.
async fn stored(b: &PostgresBackend) -> Vec<(usize, StreamCursor)> {
    let mut sub = b
        .subscribe_family(
            FAMILY,
            StreamCursor::beginning(),
            &SubscriptionFilter::default(),
        )
        .await
        .expect("subscribe");
    let mut out = Vec::new();
    loop {
        match next(&mut sub).await {
            DeliveryItem::Event { event, meta } => {
                out.push((number(&meta), event.cursor().clone()))
            }
            DeliveryItem::CaughtUp { .. } => return out,
            other => panic!("unexpected {other:?}"),
        }
    }
}

async fn next(sub: &mut DeliveryStream) -> DeliveryItem {
    match tokio::time::timeout(ITEM_DEADLINE, sub.next()).await {
        Err(_) => panic!("no item within {ITEM_DEADLINE:?}"),
        Ok(None) => panic!("the stream ended"),
        Ok(Some(Err(e))) => panic!("the stream failed: {e}"),
        Ok(Some(Ok(item))) => item,
    }
}

#[cfg_attr(
    ff_external_postgres,
    ignore = "needs a PostgreSQL server of its own; FF_TEST_POSTGRES_URL is set"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_crashed_and_restarted_mid_stream_loses_and_repeats_nothing() {
    let Some(server) =
        own_server("server_crashed_and_restarted_mid_stream_loses_and_repeats_nothing").await
    else {
        return;
    };
    let b = PostgresBackend::connect(&server.url(), config(fast_policy(Duration::from_secs(60))))
        .await
        .expect("connect");
    const TOTAL: usize = 300;
    let mut sub = b
        .subscribe_family(
            FAMILY,
            StreamCursor::beginning(),
            &SubscriptionFilter::default(),
        )
        .await
        .expect("subscribe");
    let producer = {
        let b = b.clone();
        tokio::spawn(async move {
            let mut acked = Vec::new();
            for n in 0..TOTAL {
                acked.push((n, publish_retrying(&b, n).await));
            }
            acked
        })
    };
    let mut delivered: Vec<(usize, StreamCursor)> = Vec::new();
    let mut crashed = false;
    while delivered.last().map(|(n, _)| *n) != Some(TOTAL - 1) {
        if let DeliveryItem::Event { event, meta } = next(&mut sub).await {
            delivered.push((number(&meta), event.cursor().clone()));
        }
        if !crashed && delivered.len() == TOTAL / 3 {
            server_op(&server, PostgresServer::kill).await;
            server_op(&server, PostgresServer::restart).await;
            crashed = true;
        }
    }
    let acked = producer.await.expect("producer");
    let stored = stored(&b).await;
    assert_eq!(
        delivered, stored,
        "delivered equals stored, once each, in order"
    );
    for (n, cursor) in &acked {
        assert!(
            stored.iter().any(|(m, c)| m == n && c == cursor),
            "acknowledged event {n} is not stored"
        );
    }
    let numbers: Vec<usize> = stored.iter().map(|(n, _)| *n).collect();
    let mut dedup = numbers.clone();
    dedup.dedup();
    assert_eq!(
        dedup,
        (0..TOTAL).collect::<Vec<_>>(),
        "every event is stored in publish order (a lost reply may repeat one)"
    );
}

#[cfg_attr(
    ff_external_postgres,
    ignore = "needs a PostgreSQL server of its own; FF_TEST_POSTGRES_URL is set"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_down_past_the_policy_disconnects_then_resumes_losslessly() {
    let Some(server) =
        own_server("server_down_past_the_policy_disconnects_then_resumes_losslessly").await
    else {
        return;
    };
    let b = PostgresBackend::connect(&server.url(), config(fast_policy(Duration::from_secs(1))))
        .await
        .expect("connect");
    for n in 0..5 {
        publish_retrying(&b, n).await;
    }
    let mut sub = b
        .subscribe_family(
            FAMILY,
            StreamCursor::beginning(),
            &SubscriptionFilter::default(),
        )
        .await
        .expect("subscribe");
    let mut last = None;
    for n in 0..5 {
        match next(&mut sub).await {
            DeliveryItem::Event { event, meta } => {
                assert_eq!(number(&meta), n);
                last = Some(event.cursor().clone());
            }
            other => panic!("expected event {n}, got {other:?}"),
        }
    }
    assert!(matches!(
        next(&mut sub).await,
        DeliveryItem::CaughtUp { .. }
    ));
    let last = last.unwrap();

    server_op(&server, PostgresServer::stop).await;
    let resume = match tokio::time::timeout(ITEM_DEADLINE, sub.next()).await {
        Ok(Some(Err(EngineError::StreamDisconnected { cursor }))) => cursor,
        other => panic!("expected StreamDisconnected once the policy gave up, got {other:?}"),
    };
    assert_eq!(
        resume, last,
        "StreamDisconnected carries the last yielded position"
    );
    assert!(
        matches!(
            tokio::time::timeout(ITEM_DEADLINE, sub.next()).await,
            Ok(None)
        ),
        "StreamDisconnected is terminal"
    );

    server_op(&server, PostgresServer::restart).await;
    for n in 5..10 {
        publish_retrying(&b, n).await;
    }
    let mut resumed = b
        .subscribe_family(FAMILY, resume, &SubscriptionFilter::default())
        .await
        .expect("resubscribe");
    for n in 5..10 {
        match next(&mut resumed).await {
            DeliveryItem::Event { meta, .. } => assert_eq!(number(&meta), n),
            other => panic!("expected event {n}, got {other:?}"),
        }
    }
    assert!(matches!(
        next(&mut resumed).await,
        DeliveryItem::CaughtUp { .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_under_a_slow_consumer_is_cursor_expired_not_a_gap() {
    let url = server_url().await;
    let b = PostgresBackend::connect(
        &url,
        config(ReconnectPolicy::default())
            .with_schema("faults_prune")
            .with_read_batch(10),
    )
    .await
    .expect("connect");
    let events: Vec<_> = (0..100).map(event).collect();
    let cursors = b.publish_batch(events).await.expect("publish");
    let mut sub = b
        .subscribe_family(
            FAMILY,
            StreamCursor::beginning(),
            &SubscriptionFilter::default(),
        )
        .await
        .expect("subscribe");
    let mut delivered = Vec::new();
    for _ in 0..5 {
        if let DeliveryItem::Event { meta, .. } = next(&mut sub).await {
            delivered.push(number(&meta));
        }
    }
    b.prune_before(FAMILY, &cursors[60]).await.expect("prune");
    let oldest = loop {
        match tokio::time::timeout(ITEM_DEADLINE, sub.next()).await {
            Ok(Some(Ok(DeliveryItem::Event { meta, .. }))) => delivered.push(number(&meta)),
            Ok(Some(Err(EngineError::CursorExpired { oldest, .. }))) => break oldest,
            other => panic!("expected events then CursorExpired, got {other:?}"),
        }
    };
    assert_eq!(
        delivered,
        (0..delivered.len()).collect::<Vec<_>>(),
        "what was delivered before the expiry is contiguous"
    );
    assert!(
        delivered.len() < 60,
        "a slow consumer buffers a bounded read-ahead"
    );
    let oldest = oldest.expect("CursorExpired names the oldest position");
    assert_eq!(
        oldest, cursors[59],
        "the horizon is the newest pruned event"
    );
    let mut resumed = b
        .subscribe_family(FAMILY, oldest, &SubscriptionFilter::default())
        .await
        .expect("resubscribe");
    let mut rest = Vec::new();
    loop {
        match next(&mut resumed).await {
            DeliveryItem::Event { meta, .. } => rest.push(number(&meta)),
            DeliveryItem::CaughtUp { .. } => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(rest, (60..100).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_rows_mid_stream_are_one_corrupt_item_each_then_the_rest() {
    let url = server_url().await;
    let b = PostgresBackend::connect(
        &url,
        config(ReconnectPolicy::default()).with_schema("faults_corrupt"),
    )
    .await
    .expect("connect");
    let admin = sqlx::PgPool::connect(&url).await.expect("admin");
    let mut sub = b
        .subscribe_family(
            FAMILY,
            StreamCursor::empty(),
            &SubscriptionFilter::default(),
        )
        .await
        .expect("subscribe");
    assert!(matches!(
        next(&mut sub).await,
        DeliveryItem::CaughtUp { .. }
    ));
    for n in 0..3 {
        publish_retrying(&b, n).await;
    }
    let table = b.table_name(FAMILY);
    let mut bad = Vec::new();
    for (what, values) in [
        ("unknown kind", "('stolen', $1, 1)"),
        ("malformed execution id", "('acquired', 'exec-42', 1)"),
        ("newer schema version", "('acquired', $1, 2)"),
    ] {
        let sql = format!(
            "INSERT INTO {table} (type, execution_id, v) VALUES {values} {RETURNING_POSITION}"
        );
        let mut q = sqlx::query(&sql);
        if values.contains("$1") {
            q = q.bind(ExecutionId::new(1).to_string());
        }
        let row = q.fetch_one(&admin).await.expect(what);
        bad.push((what, returned_cursor(FAMILY, &row)));
    }
    for n in 3..6 {
        publish_retrying(&b, n).await;
    }
    let mut events = Vec::new();
    let mut corrupt = Vec::new();
    while events.len() < 6 {
        match next(&mut sub).await {
            DeliveryItem::Event { event, meta } => {
                assert!(matches!(
                    event,
                    StreamEvent::LeaseHistory(ref e) if e.kind() == LeaseHistoryKind::Acquired
                ));
                events.push(number(&meta));
            }
            DeliveryItem::Corrupt { cursor, detail } => corrupt.push((cursor, detail)),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(events, (0..6).collect::<Vec<_>>());
    assert_eq!(
        corrupt.len(),
        3,
        "one Corrupt per undecodable row: {corrupt:?}"
    );
    for ((what, cursor), (got, detail)) in bad.iter().zip(&corrupt) {
        assert_eq!(got, cursor, "{what}: Corrupt carries the row's cursor");
        assert!(!detail.is_empty());
    }
    assert!(corrupt[0].1.contains("type"), "{}", corrupt[0].1);
    assert!(corrupt[1].1.contains("execution_id"), "{}", corrupt[1].1);
    assert!(corrupt[2].1.contains("schema version"), "{}", corrupt[2].1);
}

/// A server restarted while the publisher was idle: the pooled
/// connections the restart closed are noticed on reuse (a connection idle
/// for a second or more is pinged first) and replaced, so the first
/// publish after the restart succeeds instead of failing on a dead socket.
#[cfg_attr(
    ff_external_postgres,
    ignore = "needs a PostgreSQL server of its own; FF_TEST_POSTGRES_URL is set"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_publish_after_a_restart_succeeds_on_a_fresh_connection() {
    let Some(server) =
        own_server("the_first_publish_after_a_restart_succeeds_on_a_fresh_connection").await
    else {
        return;
    };
    let b = PostgresBackend::connect(&server.url(), config(fast_policy(Duration::from_secs(60))))
        .await
        .expect("connect");
    let (e, m) = event(0);
    b.publish(e, m).await.expect("publish before the restart");
    let idle_since = Instant::now();
    server_op(&server, PostgresServer::kill).await;
    server_op(&server, PostgresServer::restart).await;
    // The pool pings connections idle for a second or more; make sure the
    // ones returned around the publish (its own, the notifier's) have been
    // idle that long.
    tokio::time::sleep_until(idle_since + Duration::from_secs(2)).await;
    let (e, m) = event(1);
    b.publish(e, m)
        .await
        .expect("the first publish after the restart");
    let numbers: Vec<usize> = stored(&b).await.into_iter().map(|(n, _)| n).collect();
    assert_eq!(numbers, vec![0, 1], "both events stored once");
}
