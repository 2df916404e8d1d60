//! What a time-range prune costs the family's readers and writers: it
//! asks for the table's exclusive lock only when a range is due (or
//! missing ahead), waits for it no longer than its lock timeout (and then
//! removes nothing, so the next run retries), and a pruner that fell
//! behind still removes every row past retention, the default
//! partition's too.
//!
//! These tests hold transactions open, so they run on a server of their
//! own.

use std::time::Duration;

use ff_backend_postgres::sqlx::{self, Connection, PgConnection};
use ff_backend_postgres::{PostgresBackend, PostgresConfig};
use ff_core::backend::{DeliveryItem, EventPublisher, StreamBackend};
use ff_core::engine_error::EngineError;
use ff_core::filter::SubscriptionFilter;
use ff_core::stream_events::{CompletionOutcome, EventMeta, Family, NewEvent};
use ff_core::stream_subscribe::StreamCursor;
use ff_core::testkit::support::{next_item, Sub, ITEM_DEADLINE};
use ff_core::types::ExecutionId;
use ff_tests::harness::postgres::{config, own_server};
use tokio::time::Instant;

const FAMILY: Family = Family::Completion;
const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;
/// The prune's lock timeout in these tests.
const LOCK_TIMEOUT: Duration = Duration::from_secs(1);

fn event(n: &str) -> (NewEvent, EventMeta) {
    (
        NewEvent::completion(ExecutionId::new(4), CompletionOutcome::Success),
        EventMeta::new().with_tag("n", n),
    )
}

fn prune_config(schema: &str) -> PostgresConfig {
    config(schema).with_prune_lock_timeout(LOCK_TIMEOUT)
}

/// The tags of the events from `from` up to `CaughtUp`.
async fn tags_from(
    backend: &PostgresBackend,
    from: StreamCursor,
) -> Result<Vec<String>, EngineError> {
    let mut sub = Sub::new(
        backend
            .subscribe_family(FAMILY, from, &SubscriptionFilter::default())
            .await?,
    );
    let mut out = Vec::new();
    loop {
        match next_item(&mut sub, ITEM_DEADLINE, "events until CaughtUp").await {
            DeliveryItem::Event { meta, .. } => out.push(meta.tags["n"].clone()),
            DeliveryItem::CaughtUp { .. } => return Ok(out),
            _ => {}
        }
    }
}

/// Every retained event's tag: from the beginning, or from the oldest
/// retained position once something was pruned.
async fn retained(backend: &PostgresBackend) -> Vec<String> {
    match tags_from(backend, StreamCursor::beginning()).await {
        Ok(tags) => tags,
        Err(EngineError::CursorExpired {
            oldest: Some(oldest),
            ..
        }) => tags_from(backend, oldest).await.expect("read from oldest"),
        Err(e) => panic!("reading from the beginning: {e}"),
    }
}

/// Insert a completion tagged `n` whose `at` is `offset_ms` from now.
async fn insert_at(admin: &mut PgConnection, table: &str, n: &str, offset_ms: i64) {
    sqlx::query(&format!(
        "INSERT INTO {table} (execution_id, outcome, tags, at) \
         VALUES ('{{fp:4}}:0b6f0c1e-4f3b-4c1e-9a57-2f7d9c1e0a11', 'success', \
                 jsonb_build_object('n', $1::text), \
                 (extract(epoch FROM clock_timestamp()) * 1000)::bigint + $2)"
    ))
    .bind(n)
    .bind(offset_ms)
    .execute(admin)
    .await
    .expect("insert a row at a chosen time");
}

/// Create the ranges covering `[now + from_ms, now + until_ms]`.
async fn ensure_ranges(admin: &mut PgConnection, schema: &str, from_ms: i64, until_ms: i64) {
    sqlx::query(&format!(
        "SELECT {schema}.ensure_partitions('completion', \
         (extract(epoch FROM clock_timestamp()) * 1000)::bigint + $1, \
         (extract(epoch FROM clock_timestamp()) * 1000)::bigint + $2)"
    ))
    .bind(from_ms)
    .bind(until_ms)
    .execute(admin)
    .await
    .expect("create ranges");
}

/// A connection that began a transaction and read the family, then went
/// idle: a report, `pg_dump`, an idle-in-transaction session.
async fn open_reader(url: &str, table: &str) -> PgConnection {
    let mut reader = PgConnection::connect(url).await.expect("reader connection");
    sqlx::query("BEGIN")
        .execute(&mut reader)
        .await
        .expect("begin the reader");
    sqlx::query(&format!("SELECT count(*) FROM {table}"))
        .execute(&mut reader)
        .await
        .expect("the reader reads the family");
    reader
}

/// Wait (with a deadline) until some lock request is waiting.
async fn wait_for_a_lock_wait(admin: &mut PgConnection) {
    let deadline = Instant::now() + ITEM_DEADLINE;
    loop {
        let waiting: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_locks WHERE NOT granted)")
                .fetch_one(&mut *admin)
                .await
                .expect("pg_locks");
        if waiting {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the prune never waited for its lock"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg_attr(
    ff_external_postgres,
    ignore = "needs a PostgreSQL server of its own; FF_TEST_POSTGRES_URL is set"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prune_behind_an_open_reader_gives_up_at_its_lock_timeout_and_removes_nothing() {
    let Some(server) = own_server(
        "a_prune_behind_an_open_reader_gives_up_at_its_lock_timeout_and_removes_nothing",
    )
    .await
    else {
        return;
    };
    let url = server.url();
    let schema = ff_tests::support::unique_name("plock");
    let backend = PostgresBackend::connect(&url, prune_config(&schema))
        .await
        .expect("connect");
    backend
        .partition_by_time(Duration::from_millis(HOUR_MS as u64))
        .await
        .expect("partition by the hour");
    let table = backend.table_name(FAMILY);
    let mut admin = PgConnection::connect(&url).await.expect("admin");
    ensure_ranges(&mut admin, &schema, -5 * HOUR_MS, 0).await;
    insert_aged_and_recent(&mut admin, &backend, &table).await;

    let mut reader = open_reader(&url, &table).await;
    let started = Instant::now();
    let prune = {
        let backend = backend.clone();
        tokio::spawn(async move {
            let r = backend
                .prune_partitions_older_than(FAMILY, Duration::from_millis(HOUR_MS as u64), false)
                .await;
            (r, started.elapsed())
        })
    };
    wait_for_a_lock_wait(&mut admin).await;
    // Queued behind the prune's lock request, which waits for the reader.
    let publish = async {
        let started = Instant::now();
        let (e, m) = event("during");
        let published = backend.publish(e, m).await;
        (published, started.elapsed())
    };
    let read = async {
        let started = Instant::now();
        let seen = tags_from(&backend, StreamCursor::beginning()).await;
        (seen, started.elapsed())
    };
    let ((published, publish_took), (read_during, read_took)) = tokio::join!(publish, read);
    published.expect("a publish while the prune waits");
    let read_during = read_during.expect("a read while the prune waits");
    assert!(read_during.iter().any(|t| t == "o0"), "{read_during:?}");
    let seen = retained(&backend).await;
    let (pruned, prune_took) = prune.await.expect("prune task");
    // The reader is still open: everything above finished without it.
    let still_open: i64 = sqlx::query_scalar("SELECT 1::int8")
        .fetch_one(&mut reader)
        .await
        .expect("the reader's transaction is still open");
    assert_eq!(still_open, 1);
    eprintln!(
        "behind an open reader, lock timeout {LOCK_TIMEOUT:?}: the prune gave up after \
         {prune_took:?}, a publish queued behind it took {publish_took:?}, a read from the \
         beginning started with it {read_took:?}"
    );
    match pruned {
        Err(EngineError::Backend { detail, .. }) => assert!(
            detail.contains("removed nothing") && detail.contains("again"),
            "the error says nothing was removed and to retry: {detail}"
        ),
        other => panic!("the prune behind an open reader: {other:?}"),
    }
    for tag in ["o0", "o1", "r0", "during"] {
        assert!(seen.iter().any(|t| t == tag), "{tag} retained: {seen:?}");
    }
    assert_eq!(
        retained(&backend).await,
        seen,
        "the failed prune removed nothing"
    );

    sqlx::query("COMMIT")
        .execute(&mut reader)
        .await
        .expect("end the reader");
    let removed = backend
        .prune_partitions_older_than(FAMILY, Duration::from_millis(HOUR_MS as u64), false)
        .await
        .expect("the next run prunes");
    assert!(removed >= 1, "the next run removes the old range");
    let after = retained(&backend).await;
    assert_eq!(
        after,
        ["r0", "during"],
        "only the recent events are retained"
    );
    backend.close().await;
}

/// Two rows three hours old, then one recent.
async fn insert_aged_and_recent(admin: &mut PgConnection, backend: &PostgresBackend, table: &str) {
    insert_at(admin, table, "o0", -3 * HOUR_MS).await;
    insert_at(admin, table, "o1", -3 * HOUR_MS).await;
    let (e, m) = event("r0");
    backend.publish(e, m).await.expect("publish a recent event");
}

#[cfg_attr(
    ff_external_postgres,
    ignore = "needs a PostgreSQL server of its own; FF_TEST_POSTGRES_URL is set"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prune_with_nothing_due_takes_no_table_lock() {
    let Some(server) = own_server("a_prune_with_nothing_due_takes_no_table_lock").await else {
        return;
    };
    let url = server.url();
    let schema = ff_tests::support::unique_name("pnone");
    let backend = PostgresBackend::connect(&url, prune_config(&schema))
        .await
        .expect("connect");
    backend
        .partition_by_time(Duration::from_millis(HOUR_MS as u64))
        .await
        .expect("partition by the hour");
    let table = backend.table_name(FAMILY);
    let mut admin = PgConnection::connect(&url).await.expect("admin");
    // Every range a prune would create in the next hours exists already.
    ensure_ranges(&mut admin, &schema, -HOUR_MS, 12 * HOUR_MS).await;
    let (e, m) = event("r0");
    backend.publish(e, m).await.expect("publish");

    let mut reader = open_reader(&url, &table).await;
    // Nothing has been older than a day: a lock request would wait for
    // the reader and fail at the lock timeout.
    let removed = backend
        .prune_partitions_older_than(FAMILY, Duration::from_millis(DAY_MS as u64), false)
        .await
        .expect("a prune with nothing due returns without waiting for the reader");
    assert_eq!(removed, 0);
    let waiting: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_locks WHERE NOT granted)")
            .fetch_one(&mut admin)
            .await
            .expect("pg_locks");
    assert!(!waiting, "no lock request is left waiting");
    sqlx::query("COMMIT")
        .execute(&mut reader)
        .await
        .expect("end the reader");
    assert_eq!(retained(&backend).await, ["r0"]);
    backend.close().await;
}

/// How many rows the default partition holds.
async fn in_default(admin: &mut PgConnection, schema: &str) -> i64 {
    sqlx::query_scalar(&format!("SELECT count(*) FROM {schema}.completion_default"))
        .fetch_one(admin)
        .await
        .expect("count the default partition")
}

#[cfg_attr(
    ff_external_postgres,
    ignore = "needs a PostgreSQL server of its own; FF_TEST_POSTGRES_URL is set"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pruner_two_weeks_behind_removes_everything_past_retention_default_partition_too() {
    let Some(server) = own_server(
        "a_pruner_two_weeks_behind_removes_everything_past_retention_default_partition_too",
    )
    .await
    else {
        return;
    };
    let url = server.url();
    let schema = ff_tests::support::unique_name("pbehind");
    let backend = PostgresBackend::connect(&url, prune_config(&schema))
        .await
        .expect("connect");
    backend
        .partition_by_time(Duration::from_millis(DAY_MS as u64))
        .await
        .expect("partition by the day");
    let table = backend.table_name(FAMILY);
    let mut admin = PgConnection::connect(&url).await.expect("admin");
    // Three weeks ago the ranges were created a week ahead; the pruner
    // then stopped, so the second week's rows went to the default
    // partition.
    ensure_ranges(&mut admin, &schema, -21 * DAY_MS, -15 * DAY_MS).await;
    for (n, days) in [("w1a", -20), ("w1b", -16)] {
        insert_at(&mut admin, &table, n, days * DAY_MS).await;
    }
    for (n, days) in [("d1", -13), ("d2", -11), ("d3", -9)] {
        insert_at(&mut admin, &table, n, days * DAY_MS).await;
    }
    assert_eq!(
        in_default(&mut admin, &schema).await,
        3,
        "the second week sits in the default partition"
    );
    let (e, m) = event("now");
    backend
        .publish(e, m)
        .await
        .expect("publish a current event");
    // Written far past the created ranges, and not past retention.
    insert_at(&mut admin, &table, "ahead", 30 * DAY_MS).await;

    let today: i64 = sqlx::query_scalar(&format!(
        "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint / {DAY_MS}"
    ))
    .fetch_one(&mut admin)
    .await
    .expect("the server's day");
    let removed = backend
        .prune_partitions_older_than(FAMILY, Duration::from_millis(7 * DAY_MS as u64), false)
        .await
        .expect("prune a week's retention");
    assert!(
        removed >= 2,
        "the first week's ranges are dropped, got {removed}"
    );
    assert_eq!(
        retained(&backend).await,
        ["now", "ahead"],
        "every row past retention is removed, those in the default partition too"
    );
    assert_eq!(
        in_default(&mut admin, &schema).await,
        1,
        "only the row ahead stays in the default partition"
    );
    // The current interval and the seven after it have ranges.
    let ahead: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM generate_series(0, 7) k \
         WHERE to_regclass(format('{schema}.completion_p%s', ({today} + k)::int8 * {DAY_MS}::int8)) IS NOT NULL"
    ))
    .fetch_one(&mut admin)
    .await
    .expect("count the ranges ahead");
    assert_eq!(
        ahead, 8,
        "ranges for the current day and the seven after it"
    );
    backend.close().await;
}
