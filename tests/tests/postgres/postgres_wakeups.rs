//! A publish that committed on the server wakes subscribers of another
//! backend instance within the live deadline, whatever became of the
//! publishing instance or call: dropped or closed right after the publish,
//! or the publish call cancelled while the server was still running it.
//! The subscribers' safety-net poll and liveness read are far beyond the
//! deadline, so only the wake-up can deliver in time.
//!
//! The tests run on a current-thread runtime: nothing else runs between a
//! publish returning and the next statement, so the publishing instance is
//! gone before its notifier task could have sent anything on its own.

use std::future::Future;
use std::time::Duration;

use ff_backend_postgres::sqlx::{self, Connection, PgConnection};
use ff_backend_postgres::PostgresBackend;
use ff_core::backend::{DeliveryItem, EventPublisher, StreamBackend};
use ff_core::filter::SubscriptionFilter;
use ff_core::stream_events::{CompletionOutcome, EventMeta, Family, NewEvent};
use ff_core::stream_subscribe::StreamCursor;
use ff_core::testkit::support::{next_item, Sub, ITEM_DEADLINE, LIVE_DEADLINE};
use ff_core::types::ExecutionId;
use ff_tests::harness::postgres::{config, own_server, serial, server_url};
use ff_tests::support::unique_name;
use tokio::time::Instant;

const FAMILY: Family = Family::Completion;

fn event(n: &str) -> (NewEvent, EventMeta) {
    (
        NewEvent::completion(ExecutionId::new(4), CompletionOutcome::Success),
        EventMeta::new().with_tag("n", n),
    )
}

/// A subscriber instance in `schema` tailing `FAMILY`, caught up.
async fn tailing(url: &str, schema: &str) -> (PostgresBackend, Sub) {
    let backend = PostgresBackend::connect(url, config(schema))
        .await
        .expect("connect the subscriber");
    let mut tail = Sub::new(
        backend
            .subscribe_family(
                FAMILY,
                StreamCursor::empty(),
                &SubscriptionFilter::default(),
            )
            .await
            .expect("tail"),
    );
    assert!(matches!(
        next_item(&mut tail, ITEM_DEADLINE, "CaughtUp").await,
        DeliveryItem::CaughtUp { .. }
    ));
    (backend, tail)
}

/// The tag of the next event on `tail` within the live deadline.
async fn woken_with(tail: &mut Sub, what: &str) -> String {
    let deadline = Instant::now() + LIVE_DEADLINE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tail.next_raw(left).await {
            Some(Some(Ok(DeliveryItem::Event { meta, .. }))) => return meta.tags["n"].clone(),
            Some(Some(Ok(_))) => {}
            None => panic!("{what}: no wake-up within {LIVE_DEADLINE:?}"),
            Some(other) => panic!("{what}: {other:?}"),
        }
    }
}

/// Publish through a fresh instance, end it with `end` at once, and
/// expect the subscriber of another instance to be woken.
async fn publish_then<F, Fut>(what: &str, end: F)
where
    F: FnOnce(PostgresBackend) -> Fut,
    Fut: Future<Output = ()>,
{
    let _serial = serial().await;
    let url = server_url().await;
    let schema = unique_name("wake");
    let (_subscriber, mut tail) = tailing(&url, &schema).await;
    let publisher = PostgresBackend::connect(&url, config(&schema))
        .await
        .expect("connect the publisher");
    let (e, m) = event(what);
    publisher.publish(e, m).await.expect("publish");
    end(publisher).await;
    assert_eq!(woken_with(&mut tail, what).await, what);
}

#[tokio::test]
async fn a_publish_wakes_other_instances_when_its_backend_is_dropped_right_after() {
    publish_then("dropped", |publisher| async move { drop(publisher) }).await;
}

#[tokio::test]
async fn a_publish_wakes_other_instances_when_its_backend_is_closed_right_after() {
    publish_then("closed", |publisher| async move {
        publisher.close().await;
        drop(publisher);
    })
    .await;
}

#[cfg_attr(
    ff_external_postgres,
    ignore = "needs a PostgreSQL server of its own; FF_TEST_POSTGRES_URL is set"
)]
#[tokio::test]
async fn a_publish_cancelled_while_the_server_runs_it_still_wakes_subscribers() {
    let Some(server) =
        own_server("a_publish_cancelled_while_the_server_runs_it_still_wakes_subscribers").await
    else {
        return;
    };
    let url = server.url();
    let schema = "cancelled";
    let (_subscriber, mut tail) = tailing(&url, schema).await;
    let publisher = PostgresBackend::connect(&url, config(schema))
        .await
        .expect("connect the publisher");
    let table = publisher.table_name(FAMILY);
    // Once prepared on the connection, the insert is sent whole (bind,
    // execute, sync) and waits for its lock in the server as it executes.
    let (e, m) = event("prepared");
    publisher.publish(e, m).await.expect("publish");
    assert_eq!(woken_with(&mut tail, "the first publish").await, "prepared");

    // Hold a lock the insert needs, so the publish waits in the server.
    let mut locker = PgConnection::connect(&url)
        .await
        .expect("locker connection");
    let mut locked = locker.begin().await.expect("begin the locker");
    sqlx::query(&format!("LOCK TABLE {table} IN SHARE MODE"))
        .execute(&mut *locked)
        .await
        .expect("lock the outbox");
    let mut admin = PgConnection::connect(&url).await.expect("admin connection");
    {
        let (e, m) = event("cancelled");
        let publish = publisher.publish(e, m);
        tokio::pin!(publish);
        let deadline = Instant::now() + ITEM_DEADLINE;
        loop {
            tokio::select! {
                done = &mut publish => panic!("the publish ended while the outbox was locked: {done:?}"),
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
            let waiting: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE NOT granted AND relation = $1::regclass)",
            )
            .bind(&table)
            .fetch_one(&mut admin)
            .await
            .expect("pg_locks");
            if waiting {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the publish never reached the lock"
            );
        }
        // Leaving the block drops (cancels) the publish call.
    }
    locked.commit().await.expect("release the lock");
    let deadline = Instant::now() + ITEM_DEADLINE;
    loop {
        let stored: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(&mut admin)
            .await
            .expect("count");
        if stored == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the server never committed the cancelled publish"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        woken_with(&mut tail, "a publish cancelled after it was sent").await,
        "cancelled"
    );
}
