//! A subscription keeps reading its `LISTEN` connection while its consumer
//! does not poll: otherwise the server's cluster-wide notification queue
//! cannot advance past it, and once that queue is full every producer's
//! `COMMIT` fails. Runs on a server of its own (the queue is cluster-wide).

use ff_backend_postgres::sqlx::{self, PgPool};
use ff_backend_postgres::{PostgresBackend, PostgresConfig};
use ff_core::backend::{DeliveryItem, StreamBackend};
use ff_core::filter::SubscriptionFilter;
use ff_core::stream_events::Family;
use ff_core::stream_subscribe::StreamCursor;
use ff_core::testkit::support::{next_item, Sub, ITEM_DEADLINE};
use ff_tests::harness::postgres::{admin_pool, own_server};
use tokio::time::Instant;

const FAMILY: Family = Family::Completion;
/// Transactions committed while the consumer does not poll.
const COMMITS: usize = 4000;
/// Bytes of notification payload each of them also sends on the family's
/// channel, so the connection's socket buffers (megabytes) fill after a
/// few hundred commits rather than hundreds of thousands.
const PAYLOAD: usize = 7500;

async fn usage(admin: &PgPool) -> f64 {
    sqlx::query_scalar("SELECT pg_notification_queue_usage()")
        .fetch_one(admin)
        .await
        .expect("queue usage")
}

/// Commit one outbox row (the trigger notifies the family's channel) and a
/// large notification on the same channel, in one transaction.
async fn commit_with_notification(admin: &PgPool, table: &str, channel: &str, n: usize) {
    sqlx::raw_sql(&format!(
        "BEGIN; \
         INSERT INTO {table} (execution_id, outcome, tags) \
         VALUES ('{{fp:1}}:0b6f0c1e-4f3b-4c1e-9a57-2f7d9c1e0a11', 'success', '{{\"n\": \"{n}\"}}'); \
         SELECT pg_notify('{channel}', repeat('x', {PAYLOAD})); \
         COMMIT"
    ))
    .execute(admin)
    .await
    .expect("a producer commits");
}

#[cfg_attr(
    ff_external_postgres,
    ignore = "needs a PostgreSQL server of its own; FF_TEST_POSTGRES_URL is set"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unpolled_subscription_keeps_the_notification_queue_from_growing() {
    let Some(server) =
        own_server("an_unpolled_subscription_keeps_the_notification_queue_from_growing").await
    else {
        return;
    };
    let url = server.url();
    let config = PostgresConfig::default()
        .with_schema("listen")
        .with_application_name("ff-listen")
        .with_read_batch(10);
    let backend = PostgresBackend::connect(&url, config)
        .await
        .expect("connect");
    let admin = admin_pool(&url).await;
    let table = backend.table_name(FAMILY);
    let channel = backend.notification_channel(FAMILY);
    let mut sub = Sub::new(
        backend
            .subscribe_family(
                FAMILY,
                StreamCursor::empty(),
                &SubscriptionFilter::default(),
            )
            .await
            .expect("subscribe"),
    );
    let before = usage(&admin).await;

    // The subscription's channel holds two batches of ten: after a few
    // dozen rows its task waits for a consumer that never comes.
    let mut committed = 0;
    while committed < COMMITS {
        commit_with_notification(&admin, &table, &channel, committed).await;
        committed += 1;
    }
    // The server trims the queue only as later commits cross page
    // boundaries, so producers go on committing while the queue is watched.
    let produced = (COMMITS * PAYLOAD) as f64 / (8u64 << 30) as f64;
    let bound = before + produced / 10.0;
    let deadline = Instant::now() + ITEM_DEADLINE;
    loop {
        let now = usage(&admin).await;
        if now <= bound {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the notification queue stays at {now} (it was {before}; {COMMITS} commits \
             sent {produced} of it): the unpolled subscription does not read its connection"
        );
        commit_with_notification(&admin, &table, &channel, committed).await;
        committed += 1;
    }

    // The consumer finally polls and gets every row once, in order.
    assert!(matches!(
        next_item(&mut sub, ITEM_DEADLINE, "CaughtUp").await,
        DeliveryItem::CaughtUp { .. }
    ));
    for n in 0..committed {
        match next_item(&mut sub, ITEM_DEADLINE, "a committed row").await {
            DeliveryItem::Event { meta, .. } => {
                assert_eq!(meta.tags["n"], n.to_string(), "rows arrive once, in order")
            }
            other => panic!("expected event {n}, got {other:?}"),
        }
    }
}
