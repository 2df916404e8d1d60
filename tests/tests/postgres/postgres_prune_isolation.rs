//! Pruning (by time ranges, and by rows) under a writer that commits while
//! the prune waits for its lock, at every isolation level a session may default to
//! or a caller's transaction may use: every committed, acknowledged row
//! is still read from the beginning, or lies behind the recorded horizon
//! so that a subscriber positioned before it gets `CursorExpired` — never
//! silently missing. A level at which the SQL function cannot be correct
//! is refused with an error that names it.
//!
//! These tests hold a transaction open, so they run on a server of their
//! own (the horizon that holds delivery back is cluster-wide).

use std::time::Duration;

use ff_backend_postgres::sqlx::{self, Connection, PgConnection};
use ff_backend_postgres::PostgresBackend;
use ff_core::backend::{DeliveryItem, EventPublisher, StreamBackend};
use ff_core::engine_error::EngineError;
use ff_core::filter::SubscriptionFilter;
use ff_core::stream_events::{CompletionOutcome, EventMeta, Family, NewEvent};
use ff_core::stream_subscribe::StreamCursor;
use ff_core::testkit::support::{next_item, Sub, ITEM_DEADLINE};
use ff_core::types::ExecutionId;
use ff_tests::harness::postgres::{config, own_server, position};
use tokio::time::Instant;

const FAMILY: Family = Family::Completion;
const LEVELS: [&str; 3] = ["read committed", "repeatable read", "serializable"];

/// How the prune is started.
#[derive(Clone, Copy, Debug)]
enum Pruner {
    /// `PostgresBackend::prune_partitions_older_than` on a pool whose
    /// sessions default to the level.
    Backend,
    /// The SQL function called directly in a caller's transaction begun
    /// at the level (as from `pg_cron`).
    CallersTransaction,
    /// Row pruning (`PostgresBackend::prune_older_than`) on a pool whose
    /// sessions default to the level, waiting for another pruner.
    Rows,
}

fn event(n: &str) -> (NewEvent, EventMeta) {
    (
        NewEvent::completion(ExecutionId::new(3), CompletionOutcome::Success),
        EventMeta::new().with_tag("n", n),
    )
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

/// A cursor's `(xid, id)`, comparable in stream order.
fn pos(cursor: &StreamCursor) -> (u64, i64) {
    let (xid, id) = position(FAMILY, cursor);
    (xid.parse().expect("an xid"), id)
}

/// Wait (with a deadline) until `probe` on `admin` returns true.
async fn wait_until(admin: &mut PgConnection, probe: &str, what: &str) {
    let deadline = Instant::now() + ITEM_DEADLINE;
    loop {
        let done: bool = sqlx::query_scalar(probe)
            .fetch_one(&mut *admin)
            .await
            .expect("probe");
        if done {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Partition a fresh schema by the second, publish `a`, then append `w`
/// in a writer's transaction, start the prune once their range is due
/// (row pruning: while another pruner holds the pruners' lock),
/// commit the writer while the prune waits for its lock, and check that
/// neither row went missing silently.
async fn prune_under_a_writer(url: &str, level: &str, pruner: Pruner) {
    let what = format!("{pruner:?} at {level}");
    let mut admin = PgConnection::connect(url).await.expect("admin connection");
    sqlx::query(&format!(
        "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET default_transaction_isolation = %L', \
         current_database(), '{level}'); END $$"
    ))
    .execute(&mut admin)
    .await
    .expect("set the database's default isolation");
    let mut admin = PgConnection::connect(url).await.expect("admin connection");
    let session_level: String =
        sqlx::query_scalar("SELECT current_setting('transaction_isolation')")
            .fetch_one(&mut admin)
            .await
            .unwrap();
    assert_eq!(session_level, level, "new sessions default to the level");

    let schema = ff_tests::support::unique_name("iso");
    let backend = PostgresBackend::connect(url, config(&schema))
        .await
        .expect("connect");
    backend
        .partition_by_time(Duration::from_secs(1))
        .await
        .expect("partition by the second");
    let (ea, ma) = event("a");
    let ca = backend.publish(ea, ma).await.expect("publish a");

    let mut writer = PgConnection::connect(url).await.expect("writer connection");
    let mut tx = writer.begin().await.expect("begin the writer");
    let (ew, mw) = event("w");
    let cw = backend.append(&mut tx, &ew, &mw).await.expect("append w");
    // The row's `at` is the server's clock at the insert; reading the
    // clock after it (not the row: the writer reads nothing, as a reader
    // would change what SERIALIZABLE makes of the two) bounds its range.
    let due_ms: i64 = sqlx::query_scalar(
        "SELECT ((extract(epoch FROM clock_timestamp()) * 1000)::bigint / 1000 + 1) * 1000",
    )
    .fetch_one(&mut admin)
    .await
    .expect("the server's clock");
    wait_until(
        &mut admin,
        &format!("SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint >= {due_ms}"),
        "the writer's range to end",
    )
    .await;

    // Row pruning takes no table lock: make it wait for another pruner.
    let mut blocker = PgConnection::connect(url)
        .await
        .expect("blocker connection");
    let mut blocking = blocker.begin().await.expect("begin the blocker");
    if matches!(pruner, Pruner::Rows) {
        sqlx::query(&format!(
            "SELECT pg_advisory_xact_lock(hashtextextended('{schema}.prune.completion', 0))"
        ))
        .execute(&mut *blocking)
        .await
        .expect("hold the pruners' lock");
    }
    let prune = {
        let schema = schema.clone();
        let (backend, url, level) = (backend.clone(), url.to_owned(), level.to_owned());
        tokio::spawn(async move {
            match pruner {
                Pruner::Backend => backend
                    .prune_partitions_older_than(FAMILY, Duration::ZERO, false)
                    .await
                    .map_err(|e| e.to_string()),
                Pruner::Rows => backend
                    .prune_older_than(FAMILY, Duration::ZERO)
                    .await
                    .map_err(|e| e.to_string()),
                Pruner::CallersTransaction => {
                    let mut conn = PgConnection::connect(&url)
                        .await
                        .expect("caller connection");
                    let mut tx = conn
                        .begin_with(format!("BEGIN ISOLATION LEVEL {level}"))
                        .await
                        .expect("begin the caller's transaction");
                    let removed: Result<i32, _> = sqlx::query_scalar(&format!(
                        "SELECT {schema}.prune_partitions_older_than('completion', 0)"
                    ))
                    .fetch_one(&mut *tx)
                    .await;
                    match removed {
                        Ok(n) => {
                            tx.commit().await.map_err(|e| e.to_string())?;
                            Ok(n as u64)
                        }
                        Err(e) => Err(e.to_string()),
                    }
                }
            }
        })
    };
    let deadline = Instant::now() + ITEM_DEADLINE;
    loop {
        let waiting: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_locks WHERE NOT granted)")
                .fetch_one(&mut admin)
                .await
                .expect("pg_locks");
        if waiting || prune.is_finished() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: the prune never waited for its lock"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tx.commit().await.expect("commit the writer");
    blocking.commit().await.expect("release the pruners' lock");
    let pruned = prune.await.expect("prune task");
    if let Err(refused) = &pruned {
        assert!(
            matches!(pruner, Pruner::CallersTransaction) && level != "read committed",
            "{what}: the prune failed: {refused}"
        );
        assert!(
            refused.contains("READ COMMITTED") && refused.contains(&level.to_uppercase()),
            "{what}: the refusal names the level and the one to use: {refused}"
        );
    }

    let from_beginning = tags_from(&backend, StreamCursor::beginning())
        .await
        .expect("read from the beginning");
    let oldest = backend.bounds(FAMILY).await.expect("bounds").oldest;
    // Never pruned: `oldest` is the beginning, behind every row.
    let horizon = if oldest == StreamCursor::beginning() {
        (0, i64::MIN)
    } else {
        pos(&oldest)
    };
    for (tag, cursor) in [("a", &ca), ("w", &cw)] {
        assert!(
            from_beginning.iter().any(|t| t == tag) || pos(cursor) <= horizon,
            "{what} ({pruned:?}): {tag} is neither retained ({from_beginning:?}) nor behind the horizon"
        );
    }
    match tags_from(&backend, ca.clone()).await {
        Ok(after_a) => assert!(
            after_a.iter().any(|t| t == "w"),
            "{what} ({pruned:?}): a subscriber after a neither reads w nor gets CursorExpired"
        ),
        Err(EngineError::CursorExpired { .. }) => {}
        Err(e) => panic!("{what}: subscribing after a: {e}"),
    }
    backend.close().await;
}

#[cfg_attr(
    ff_external_postgres,
    ignore = "needs a PostgreSQL server of its own; FF_TEST_POSTGRES_URL is set"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_committed_while_the_prune_waits_is_never_silently_dropped() {
    let Some(server) =
        own_server("a_row_committed_while_the_prune_waits_is_never_silently_dropped").await
    else {
        return;
    };
    let url = server.url();
    for level in LEVELS {
        for pruner in [Pruner::Backend, Pruner::CallersTransaction, Pruner::Rows] {
            prune_under_a_writer(&url, level, pruner).await;
        }
    }
}
