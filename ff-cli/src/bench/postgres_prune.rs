//! Postgres retention cost: pruning 1,000,000 events by dropping a time
//! range of a partitioned outbox, beside deleting them row by row from the
//! plain layout, measured in the same run on the same server.
//!
//! Both outboxes (schemas `ff_bench_prune_rows` and `ff_bench_prune_ranges`)
//! get the same million completion rows, written three hours in the past
//! by one server-side `INSERT ... SELECT generate_series`; each is then
//! pruned of everything older than an hour through ff's own prune
//! functions, and the schemas are dropped.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use ff_backend_postgres::sqlx::{self, PgConnection};
use ff_backend_postgres::{PostgresBackend, PostgresConfig};
use ff_core::stream_events::Family;

use super::report::Figure;

/// Events pruned each way.
pub const PRUNED: i64 = 1_000_000;
const ROWS_SCHEMA: &str = "ff_bench_prune_rows";
const RANGES_SCHEMA: &str = "ff_bench_prune_ranges";
const HOUR: Duration = Duration::from_secs(3600);

fn config(schema: &str) -> PostgresConfig {
    PostgresConfig::default()
        .with_schema(schema)
        .with_application_name("ff-bench-prune")
        .with_query_timeout(Duration::from_secs(600))
}

async fn drop_schemas(conn: &mut PgConnection) -> anyhow::Result<()> {
    sqlx::raw_sql(&format!(
        "DROP SCHEMA IF EXISTS {ROWS_SCHEMA} CASCADE; DROP SCHEMA IF EXISTS {RANGES_SCHEMA} CASCADE"
    ))
    .execute(conn)
    .await
    .context("dropping the prune bench schemas")?;
    Ok(())
}

/// Write [`PRUNED`] completion rows three hours old into `schema`.
async fn fill(conn: &mut PgConnection, schema: &str) -> anyhow::Result<()> {
    sqlx::raw_sql(&format!(
        "INSERT INTO {schema}.completion (execution_id, outcome, namespace, tags, at) \
         SELECT '{{fp:' || (g % 64) || '}}:0b6f0c1e-4f3b-4c1e-9a57-' || lpad(g::text, 12, '0'), \
                'success', 'bench', jsonb_build_object('n', g::text), \
                (extract(epoch FROM clock_timestamp()) * 1000)::bigint - 3 * 3600000 \
         FROM generate_series(1, {PRUNED}) g"
    ))
    .execute(conn)
    .await
    .with_context(|| format!("filling {schema}"))?;
    Ok(())
}

/// Measure both ways; returns the figure (`ff`: dropping the range,
/// baseline: deleting the rows), in milliseconds.
pub async fn measure(url: &str, admin: &mut PgConnection) -> anyhow::Result<Figure> {
    drop_schemas(admin).await?;
    let result = async {
        let rows = PostgresBackend::connect(url, config(ROWS_SCHEMA)).await?;
        let ranges = PostgresBackend::connect(url, config(RANGES_SCHEMA)).await?;
        ranges.partition_by_time(HOUR).await?;
        sqlx::raw_sql(&format!(
            "SELECT {RANGES_SCHEMA}.ensure_partitions('completion', \
             (extract(epoch FROM clock_timestamp()) * 1000)::bigint - 4 * 3600000, \
             (extract(epoch FROM clock_timestamp()) * 1000)::bigint)"
        ))
        .execute(&mut *admin)
        .await
        .context("creating past ranges")?;
        fill(admin, ROWS_SCHEMA).await?;
        fill(admin, RANGES_SCHEMA).await?;
        for schema in [ROWS_SCHEMA, RANGES_SCHEMA] {
            sqlx::raw_sql(&format!("VACUUM ANALYZE {schema}.completion"))
                .execute(&mut *admin)
                .await
                .context("vacuuming the filled outboxes")?;
        }

        let started = Instant::now();
        let deleted = rows.prune_older_than(Family::Completion, HOUR).await?;
        let by_rows = started.elapsed();
        let started = Instant::now();
        let dropped = ranges
            .prune_partitions_older_than(Family::Completion, HOUR, false)
            .await?;
        let by_ranges = started.elapsed();
        if deleted != PRUNED as u64 || dropped == 0 {
            bail!("pruning removed {deleted} rows and {dropped} ranges, expected {PRUNED} rows and a range");
        }
        rows.close().await;
        ranges.close().await;
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        anyhow::Ok(Figure::new(
            "prune_1m_events_by_range_vs_by_row_ms",
            "ms",
            ms(by_ranges),
            Some(ms(by_rows)),
        ))
    }
    .await;
    drop_schemas(admin).await?;
    result
}
