//! Producers that use two-phase commit: a transaction that sets
//! `ff.defer_notify = 'on'` can write events and `PREPARE TRANSACTION`,
//! and a subscriber of another backend instance sees them within the live
//! deadline of `COMMIT PREPARED` — though nothing sends a wake-up (a
//! prepared transaction cannot `NOTIFY`). The subscribers' safety-net poll
//! and liveness read are far beyond the deadline.

use ff_backend_postgres::sqlx::{self, Connection, Executor, PgConnection};
use ff_backend_postgres::PostgresBackend;
use ff_core::backend::{DeliveryItem, StreamBackend};
use ff_core::filter::SubscriptionFilter;
use ff_core::stream_events::{CompletionOutcome, EventMeta, Family, NewEvent};
use ff_core::stream_subscribe::StreamCursor;
use ff_core::testkit::support::{next_item, Sub, ITEM_DEADLINE, LIVE_DEADLINE};
use ff_core::types::ExecutionId;
use ff_tests::harness::postgres::{config, own_server};
use tokio::time::Instant;

const FAMILY: Family = Family::Completion;
const SCHEMA: &str = "twophase";

use ff_tests::support::blocking;

/// The tags of the next `n` events on `tail`, each within the live
/// deadline.
async fn woken_with(tail: &mut Sub, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut deadline = Instant::now() + LIVE_DEADLINE;
    while out.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match tail.next_raw(left).await {
            None => panic!("no event within {LIVE_DEADLINE:?} of COMMIT PREPARED"),
            Some(Some(Ok(DeliveryItem::Event { meta, .. }))) => {
                out.push(meta.tags["n"].clone());
                deadline = Instant::now() + LIVE_DEADLINE;
            }
            Some(Some(Ok(_))) => {}
            Some(other) => panic!("expected an event, got {other:?}"),
        }
    }
    out
}

/// Begin a transaction on `conn` that will be prepared.
async fn begin_two_phase(conn: &mut PgConnection) {
    conn.execute("BEGIN; SET LOCAL ff.defer_notify = 'on'")
        .await
        .expect("begin");
}

#[cfg_attr(
    ff_external_postgres,
    ignore = "needs a PostgreSQL server of its own; FF_TEST_POSTGRES_URL is set"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_transactions_publish_and_wake_subscribers_at_commit_prepared() {
    let Some(server) =
        own_server("prepared_transactions_publish_and_wake_subscribers_at_commit_prepared").await
    else {
        return;
    };
    {
        let server = server.clone();
        blocking(move || server.configure(&["max_prepared_transactions = 8"])).await;
    }
    let producer = PostgresBackend::connect(&server.url(), config(SCHEMA))
        .await
        .expect("connect the producer");
    let subscriber = PostgresBackend::connect(&server.url(), config(SCHEMA))
        .await
        .expect("connect the subscriber");
    let mut tail = Sub::new(
        subscriber
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

    // Without the setting, the trigger's NOTIFY makes PREPARE fail.
    let mut conn = PgConnection::connect(&server.url()).await.expect("connect");
    conn.execute("BEGIN").await.expect("begin");
    let plain = NewEvent::completion(ExecutionId::new(7), CompletionOutcome::Success);
    producer
        .append(
            &mut conn,
            &plain,
            &EventMeta::new().with_tag("n", "refused"),
        )
        .await
        .expect("append");
    let refused = conn
        .execute("PREPARE TRANSACTION 'ff-refused'")
        .await
        .expect_err("PREPARE after a NOTIFY");
    assert!(refused.to_string().contains("NOTIFY"), "{refused}");
    conn.execute("ROLLBACK").await.ok();

    // With it: one transaction through `append`, one in plain SQL.
    begin_two_phase(&mut conn).await;
    producer
        .append(&mut conn, &plain, &EventMeta::new().with_tag("n", "p0"))
        .await
        .expect("append");
    conn.execute("PREPARE TRANSACTION 'ff-p0'")
        .await
        .expect("prepare p0");
    begin_two_phase(&mut conn).await;
    sqlx::query(&format!(
        "INSERT INTO {SCHEMA}.completion (execution_id, outcome, tags) \
         VALUES ($1, 'success', '{{\"n\": \"p1\"}}')"
    ))
    .bind(ExecutionId::new(8).to_string())
    .execute(&mut conn)
    .await
    .expect("insert p1");
    conn.execute("PREPARE TRANSACTION 'ff-p1'")
        .await
        .expect("prepare p1");

    // A transaction manager commits them later, from another session.
    let mut manager = PgConnection::connect(&server.url()).await.expect("connect");
    manager
        .execute("COMMIT PREPARED 'ff-p0'")
        .await
        .expect("commit p0");
    assert_eq!(woken_with(&mut tail, 1).await, ["p0"]);
    manager
        .execute("COMMIT PREPARED 'ff-p1'")
        .await
        .expect("commit p1");
    assert_eq!(woken_with(&mut tail, 1).await, ["p1"]);
}
