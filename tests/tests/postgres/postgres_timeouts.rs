//! Timeouts on Postgres: a server that stops answering without closing
//! the connection (black-holed by a loopback proxy the test controls) is
//! noticed in seconds; subscriptions reconnect and deliver every committed
//! row once, and a publish fails in bounded time instead of hanging. A
//! publish stuck in the server does not hold back the wake-up for another
//! publish's commit.

use std::str::FromStr;
use std::time::Duration;

use ff_backend_postgres::sqlx::postgres::PgConnectOptions;
use ff_backend_postgres::sqlx::{self, Connection as _, PgConnection};
use ff_backend_postgres::{PostgresBackend, PostgresConfig};
use ff_core::backend::{DeliveryItem, EventPublisher, ReconnectPolicy, StreamBackend};
use ff_core::engine_error::EngineError;
use ff_core::filter::SubscriptionFilter;
use ff_core::stream_events::{
    CompletionOutcome, EventMeta, Family, LeaseHistoryEvent, NewEvent, StreamEvent,
};
use ff_core::stream_subscribe::StreamCursor;
use ff_core::testkit::support::{next_item, take_events, Sub, ITEM_DEADLINE};
use ff_core::types::{ExecutionId, WorkerInstanceId};
use ff_tests::harness::postgres::{config, serial, server_url};
use ff_tests::support::{unique_name, TcpProxy};
use tokio::time::Instant;

const FAMILY: Family = Family::Completion;

/// A proxy in front of the server at `url`, and `url` rewritten to go
/// through it.
fn proxied(url: &str) -> (TcpProxy, String) {
    let options = PgConnectOptions::from_str(url).expect("a Postgres URL");
    let (host, port) = (options.get_host().to_owned(), options.get_port());
    let target = format!("{host}:{port}")
        .parse()
        .expect("a loopback address");
    let proxy = TcpProxy::start(target).expect("start the proxy");
    let through = url.replacen(
        &format!("{host}:{port}"),
        &format!("127.0.0.1:{}", proxy.port()),
        1,
    );
    assert_ne!(through, url, "the URL names the server's port");
    (proxy, through)
}

/// Settings that notice a silent server within about two seconds.
fn impatient(schema: &str, name: &str) -> PostgresConfig {
    config(schema)
        .with_application_name(name)
        .with_read_timeout(Duration::from_secs(1))
        .with_query_timeout(Duration::from_secs(1))
        .with_liveness_interval(Duration::from_millis(500))
        .with_connect_timeout(Duration::from_secs(2))
        .with_reconnect(
            ReconnectPolicy::new(Some(Duration::from_secs(60)), None)
                .with_backoff(Duration::from_millis(20), Duration::from_millis(200)),
        )
}

fn completion(n: usize) -> (NewEvent, EventMeta) {
    (
        NewEvent::completion(ExecutionId::new(2), CompletionOutcome::Failure),
        EventMeta::new().with_tag("n", n.to_string()),
    )
}

async fn publish_n(b: &PostgresBackend, range: std::ops::Range<usize>) -> Vec<StreamCursor> {
    let mut out = Vec::new();
    for n in range {
        let (e, m) = completion(n);
        out.push(b.publish(e, m).await.expect("publish directly"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_subscription_reconnects_within_seconds_and_delivers_every_row_once() {
    let _serial = serial().await;
    let url = server_url().await;
    let schema = unique_name("hole");
    let direct = PostgresBackend::connect(&url, config(&schema))
        .await
        .expect("connect directly");
    let (proxy, through) = proxied(&url);
    let remote = PostgresBackend::connect(&through, impatient(&schema, "ff-hole"))
        .await
        .expect("connect through the proxy");
    let mut sub = Sub::new(
        remote
            .subscribe_family(
                FAMILY,
                StreamCursor::empty(),
                &SubscriptionFilter::default(),
            )
            .await
            .expect("subscribe through the proxy"),
    );
    assert!(matches!(
        next_item(&mut sub, ITEM_DEADLINE, "CaughtUp").await,
        DeliveryItem::CaughtUp { .. }
    ));
    let mut published = publish_n(&direct, 0..3).await;
    let mut delivered = take_events(&mut sub, 3, "events before the black hole").await;

    let accepted = proxy.accepted();
    proxy.black_hole_existing();
    published.extend(publish_n(&direct, 3..8).await);
    delivered.extend(take_events(&mut sub, 5, "events committed while black-holed").await);
    assert!(
        proxy.accepted() > accepted,
        "the subscription reconnected through the proxy"
    );
    published.extend(publish_n(&direct, 8..10).await);
    delivered.extend(take_events(&mut sub, 2, "events after reconnecting").await);

    let delivered: Vec<StreamCursor> = delivered.iter().map(|(e, _)| e.cursor().clone()).collect();
    assert_eq!(delivered, published, "every committed row, once, in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_on_a_black_holed_connection_fails_in_bounded_time_and_the_next_succeeds() {
    let _serial = serial().await;
    let url = server_url().await;
    let schema = unique_name("holepub");
    PostgresBackend::connect(&url, config(&schema))
        .await
        .expect("migrate directly");
    let (proxy, through) = proxied(&url);
    // One pooled connection: connecting leaves it idle in the pool, and
    // the next publish must use it.
    let remote =
        PostgresBackend::connect(&through, impatient(&schema, "ff-holepub").with_pool_size(1))
            .await
            .expect("connect through the proxy");
    proxy.black_hole_existing();
    let (e, m) = completion(1);
    let outcome = tokio::time::timeout(ITEM_DEADLINE, remote.publish(e, m))
        .await
        .expect("a publish on a silent connection returns instead of hanging");
    match outcome {
        Err(EngineError::Transport { .. }) => {}
        other => panic!("expected a Transport error, got {other:?}"),
    }
    let (e, m) = completion(2);
    tokio::time::timeout(ITEM_DEADLINE, remote.publish(e, m))
        .await
        .expect("the next publish returns")
        .expect("the next publish uses a new connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_stuck_in_the_server_does_not_hold_back_another_publishs_wake_up() {
    let _serial = serial().await;
    let url = server_url().await;
    let schema = unique_name("stuck");
    // The stuck publish would end only at its query timeout, far beyond
    // the deadline the wake-up must meet.
    let publisher = PostgresBackend::connect(
        &url,
        config(&schema)
            .with_application_name("ff-stuck-pub")
            .with_query_timeout(Duration::from_secs(120)),
    )
    .await
    .expect("connect the publisher");
    // Another instance: only the server's NOTIFY wakes its subscriptions
    // (its safety-net poll and liveness reads are far beyond the deadline).
    let subscriber = PostgresBackend::connect(
        &url,
        config(&schema).with_liveness_interval(Duration::from_secs(120)),
    )
    .await
    .expect("connect the subscriber");
    let mut sub = Sub::new(
        subscriber
            .subscribe_family(
                Family::LeaseHistory,
                StreamCursor::empty(),
                &SubscriptionFilter::default(),
            )
            .await
            .expect("subscribe"),
    );
    assert!(matches!(
        next_item(&mut sub, ITEM_DEADLINE, "CaughtUp").await,
        DeliveryItem::CaughtUp { .. }
    ));

    // A completion publish waits for a lock the test holds. (SHARE blocks
    // inserts without giving the test's transaction an id, which would
    // hold back every later commit's delivery; ACCESS EXCLUSIVE would.)
    let mut locker = PgConnection::connect(&url).await.expect("connect");
    sqlx::raw_sql(&format!(
        "BEGIN; LOCK TABLE {} IN SHARE MODE",
        publisher.table_name(FAMILY)
    ))
    .execute(&mut locker)
    .await
    .expect("lock the completion table");
    let stuck = {
        let publisher = publisher.clone();
        tokio::spawn(async move {
            let (e, m) = completion(0);
            publisher.publish(e, m).await
        })
    };
    let deadline = Instant::now() + ITEM_DEADLINE;
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE application_name = 'ff-stuck-pub' AND wait_event_type = 'Lock'",
        )
        .fetch_one(&mut locker)
        .await
        .expect("read pg_stat_activity");
        if waiting == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the completion publish never waited for the lock"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Meanwhile a lease event commits: the subscriber elsewhere hears of it.
    let worker = WorkerInstanceId::parse("worker-1").expect("a worker id");
    publisher
        .publish(
            NewEvent::lease_acquired(ExecutionId::new(1), None, Some(worker)),
            EventMeta::new(),
        )
        .await
        .expect("publish a lease event");
    match next_item(&mut sub, ITEM_DEADLINE, "the lease event").await {
        DeliveryItem::Event { event, .. } => assert!(
            matches!(
                event,
                StreamEvent::LeaseHistory(LeaseHistoryEvent::Acquired { .. })
            ),
            "got {event:?}"
        ),
        other => panic!("expected the lease event, got {other:?}"),
    }

    sqlx::raw_sql("ROLLBACK")
        .execute(&mut locker)
        .await
        .expect("release the lock");
    tokio::time::timeout(ITEM_DEADLINE, stuck)
        .await
        .expect("the stuck publish ends once the lock is released")
        .expect("its task")
        .expect("and commits");
}
