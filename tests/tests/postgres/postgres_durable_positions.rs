//! Positions ff hands out survive a crash of the server, and a cursor at
//! or beyond the oldest open transaction misses nothing of it. Each test
//! has a server of its own: they stop it immediately, or hold a
//! transaction open (the horizon that holds delivery back is cluster-wide).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use ff_backend_postgres::sqlx::{self, Connection, PgConnection, PgPool};
use ff_backend_postgres::{PostgresBackend, PostgresConfig};
use ff_core::backend::{DeliveryItem, EventPublisher, StreamBackend};
use ff_core::filter::SubscriptionFilter;
use ff_core::stream_events::{CompletionOutcome, EventMeta, Family, NewEvent};
use ff_core::stream_subscribe::StreamCursor;
use ff_core::testkit::support::{next_item, Sub, ITEM_DEADLINE};
use ff_core::types::{ExecutionId, TimestampMs};
use ff_tests::harness::postgres::{admin_pool, own_server};
use ff_tests::support::{self, PostgresServer};
use tokio::time::Instant;

const FAMILY: Family = Family::Completion;

fn config() -> PostgresConfig {
    PostgresConfig::default()
        .with_schema("durable")
        .with_application_name("ff-durable")
        .with_checkpoint_interval(Duration::from_millis(200))
        .with_held_back_poll(Duration::from_millis(20))
}

/// Run a blocking server operation (`kill`, `restart`).
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

/// Commit one completion row tagged `n` with plain SQL; returns its xid.
async fn insert(admin: &PgPool, table: &str, n: &str, namespace: &str) -> i64 {
    sqlx::query_scalar(&format!(
        "INSERT INTO {table} (execution_id, outcome, namespace, tags) \
         VALUES ('{{fp:1}}:0b6f0c1e-4f3b-4c1e-9a57-2f7d9c1e0a11', 'success', $1, \
                 jsonb_build_object('n', $2::text)) \
         RETURNING xid::text::int8"
    ))
    .bind(namespace)
    .bind(n)
    .fetch_one(admin)
    .await
    .expect("insert a row")
}

/// The `n` tags of everything delivered after `from`, until `CaughtUp`.
async fn tags_after(backend: &PostgresBackend, from: &StreamCursor) -> Vec<String> {
    let mut sub = Sub::new(
        backend
            .subscribe_family(FAMILY, from.clone(), &SubscriptionFilter::default())
            .await
            .expect("subscribe from a handed-out position"),
    );
    let mut out = Vec::new();
    loop {
        match next_item(&mut sub, ITEM_DEADLINE, "events until CaughtUp").await {
            DeliveryItem::Event { meta, .. } => out.push(meta.tags["n"].clone()),
            DeliveryItem::CaughtUp { .. } => return out,
            _ => {}
        }
    }
}

/// The next item of `sub` that `pick` accepts.
async fn first_of(sub: &mut Sub, what: &str, pick: fn(&DeliveryItem) -> bool) -> StreamCursor {
    let deadline = Instant::now() + ITEM_DEADLINE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let item = next_item(sub, left, what).await;
        if pick(&item) {
            return match item {
                DeliveryItem::CaughtUp { cursor } | DeliveryItem::Checkpoint { cursor } => cursor,
                other => panic!("{what}: not a position: {other:?}"),
            };
        }
    }
}

#[cfg_attr(
    ff_external_postgres,
    ignore = "needs a PostgreSQL server of its own; FF_TEST_POSTGRES_URL is set"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn positions_handed_out_survive_an_immediate_stop_of_the_server() {
    let Some(server) =
        own_server("positions_handed_out_survive_an_immediate_stop_of_the_server").await
    else {
        return;
    };
    // Nothing but commits may write WAL out, so a rolled-back transaction's
    // abort record stays in memory until the crash.
    for sql in [
        "ALTER SYSTEM SET wal_writer_delay = '10s'",
        "ALTER SYSTEM SET autovacuum = off",
        "SELECT pg_reload_conf()",
    ] {
        server.psql(sql).expect("configure the server");
    }
    let url = server.url();
    let backend = PostgresBackend::connect(&url, config())
        .await
        .expect("connect");
    let admin = admin_pool(&url).await;
    let table = backend.table_name(FAMILY);

    let mut filtered = Sub::new(
        backend
            .subscribe_family(
                FAMILY,
                StreamCursor::empty(),
                &SubscriptionFilter::new().with_namespace("nobody"),
            )
            .await
            .expect("a filtered subscription"),
    );
    first_of(&mut filtered, "the filtered CaughtUp", |i| {
        matches!(i, DeliveryItem::CaughtUp { .. })
    })
    .await;
    for n in ["a", "b", "c"] {
        insert(&admin, &table, n, "billing").await;
    }
    let published = backend
        .publish(
            NewEvent::completion(ExecutionId::new(1), CompletionOutcome::Success),
            EventMeta::new().with_tag("n", "published"),
        )
        .await
        .expect("publish");
    let checkpoint = first_of(&mut filtered, "a Checkpoint past the rows", |i| {
        matches!(i, DeliveryItem::Checkpoint { .. })
    })
    .await;

    // A transaction takes an id and rolls back; nothing flushes its abort.
    let mut conn = PgConnection::connect(&url).await.expect("connect");
    let mut tx = conn.begin().await.expect("begin");
    let rolled_back: i64 = sqlx::query_scalar("SELECT pg_current_xact_id()::text::int8")
        .fetch_one(&mut *tx)
        .await
        .expect("take a transaction id");
    tx.rollback().await.expect("roll back");

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
    let tail_start = first_of(&mut tail, "the tail's CaughtUp", |i| {
        matches!(i, DeliveryItem::CaughtUp { .. })
    })
    .await;
    let future = TimestampMs(i64::MAX / 2);
    let at_future = backend.cursor_at(FAMILY, future).await.expect("cursor_at");
    let bounds = backend.bounds(FAMILY).await.expect("bounds");
    drop((tail, filtered));

    server_op(&server, PostgresServer::kill).await;
    server_op(&server, PostgresServer::restart).await;
    let admin = admin_pool(&url).await;
    let reissued = insert(&admin, &table, "after-crash", "billing").await;
    assert!(
        reissued <= rolled_back,
        "the restarted server hands out the rolled-back transaction's id again \
         ({reissued} > {rolled_back}: the precondition of this test did not occur)"
    );

    for (what, position) in [
        ("the tail start (CaughtUp)", &tail_start),
        ("a Checkpoint", &checkpoint),
        ("cursor_at after every event", &at_future),
        ("bounds().head", &bounds.head),
        ("bounds().oldest", &bounds.oldest),
        ("a publish cursor", &published),
    ] {
        let after = tags_after(&backend, position).await;
        assert!(
            after.contains(&"after-crash".to_owned()),
            "subscribing from {what} misses the row committed after the crash: {after:?}"
        );
    }
}

#[cfg_attr(
    ff_external_postgres,
    ignore = "needs a PostgreSQL server of its own; FF_TEST_POSTGRES_URL is set"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_beyond_an_open_transaction_misses_nothing_of_it() {
    let Some(server) = own_server("a_cursor_beyond_an_open_transaction_misses_nothing_of_it").await
    else {
        return;
    };
    let url = server.url();
    let backend = PostgresBackend::connect(&url, config())
        .await
        .expect("connect");
    let event = |n: &str| {
        (
            NewEvent::completion(ExecutionId::new(1), CompletionOutcome::Success),
            EventMeta::new().with_tag("n", n),
        )
    };
    let (e, m) = event("before");
    backend.publish(e, m).await.expect("publish before");

    // An older transaction writes an event and stays open while a newer
    // publish commits and returns its cursor.
    let mut conn = PgConnection::connect(&url).await.expect("connect");
    let mut open = conn.begin().await.expect("begin");
    let (e, m) = event("held-open");
    backend
        .append(&mut open, &e, &m)
        .await
        .expect("append in the open transaction");
    let (e, m) = event("published");
    let published = backend.publish(e, m).await.expect("publish");

    let mut sub = Sub::new(
        backend
            .subscribe_family(FAMILY, published, &SubscriptionFilter::default())
            .await
            .expect("subscribe from the publish cursor"),
    );
    open.commit().await.expect("commit the older transaction");
    let (e, m) = event("later");
    backend.publish(e, m).await.expect("publish later");

    let mut seen = BTreeSet::new();
    while !seen.contains("later") {
        if let DeliveryItem::Event { meta, .. } =
            next_item(&mut sub, ITEM_DEADLINE, "events after the publish cursor").await
        {
            seen.insert(meta.tags["n"].clone());
        }
    }
    assert!(
        seen.contains("held-open"),
        "the open transaction's event, committed later, was skipped: {seen:?}"
    );
    assert!(
        !seen.contains("before"),
        "events committed before every open transaction are not repeated: {seen:?}"
    );
}
