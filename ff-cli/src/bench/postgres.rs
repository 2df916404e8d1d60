//! Postgres benchmark: publish throughput (single-event transactions from
//! 4 connections, 1000-event batches), catch-up throughput and peak RSS,
//! and live commit→receive latency through ff, each beside a raw `sqlx`
//! baseline doing the same work on the same table shape in the same run.
//!
//! ff writes to schema `ff_bench`, the baselines to `ff_bench_raw`; both
//! are created by ff's migrations (identical tables, indexes and trigger)
//! and dropped afterwards. `publish_batch_vs_plain_outbox` compares ff's
//! batch publish with the same `INSERT` into a bare table: the same
//! columns and primary key, no other index, no trigger. The raw publishers set `ff.defer_notify = on`
//! (no `NOTIFY`, like a plain `INSERT` into an untriggered table); one
//! more figure measures raw single-event transactions whose `NOTIFY` runs
//! inside the transaction, the cost ff avoids by notifying after commit.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use ff_backend_postgres::sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use ff_backend_postgres::sqlx::{self, ConnectOptions as _, Connection as _, PgConnection, Row};
use ff_backend_postgres::{redact_url, PostgresBackend, PostgresConfig};
use ff_core::backend::EventPublisher;
use ff_core::stream_events::{CompletionOutcome, EventMeta, Family, NewEvent};
use ff_core::types::ExecutionId;

use super::measure::{
    collect, ff_catch_up, ff_live_receiver, latencies, per_sec, percentiles_us, ticker,
};
use super::report::{BenchReport, Figure};
use super::rss::RssSampler;

/// Catch-up is measured over at least this many events.
pub const MIN_CATCH_UP_EVENTS: usize = 200_000;
/// Events per publish batch / raw multi-row `INSERT`.
const BATCH: usize = 1000;
/// Concurrent single-event publishers.
const PUBLISHERS: usize = 4;
/// How long each single-event publish phase runs, and how many
/// interleaved rounds of them are totalled.
const PUBLISH_PHASE: Duration = Duration::from_millis(400);
const PUBLISH_ROUNDS: usize = 24;
/// Interleaved rounds of the batch-publish measurements (even, so each
/// order of [`round_order`] runs as often as the other).
const BATCH_ROUNDS: usize = 20;
/// Live latency: events per second and samples per side.
const LIVE_RATE: u64 = 500;
const LIVE_SAMPLES: usize = 1000;

const FF_SCHEMA: &str = "ff_bench";
const RAW_SCHEMA: &str = "ff_bench_raw";
/// A bare outbox in [`RAW_SCHEMA`]: the completion table's columns and
/// primary key, no other index, no trigger.
const PLAIN_TABLE: &str = "plain_completion";
/// ff's schema with the opt-in filter indexes, to measure what writers pay
/// for them.
const INDEXED_SCHEMA: &str = "ff_bench_indexed";

/// Run the Postgres benchmark against `url` with `events` events (at least
/// [`MIN_CATCH_UP_EVENTS`]). Uses schemas `ff_bench` and `ff_bench_raw`,
/// replacing any left from an earlier run, and drops them afterwards.
pub async fn run(url: &str, events: usize) -> anyhow::Result<BenchReport> {
    let events = events.max(MIN_CATCH_UP_EVENTS);
    let options = PgConnectOptions::from_str(url)
        .with_context(|| format!("invalid Postgres URL {}", redact_url(url)))?
        .disable_statement_logging()
        .application_name("ff-bench-raw");
    let mut admin = PgConnection::connect_with(&options)
        .await
        .context("raw connection")?;
    drop_schemas(&mut admin).await?;
    let backend = PostgresBackend::connect(url, bench_config(FF_SCHEMA)).await?;
    PostgresBackend::connect(url, bench_config(RAW_SCHEMA))
        .await?
        .close()
        .await;
    sqlx::raw_sql(&format!(
        "CREATE TABLE {RAW_SCHEMA}.{PLAIN_TABLE} \
         (LIKE {RAW_SCHEMA}.completion INCLUDING DEFAULTS INCLUDING IDENTITY INCLUDING INDEXES)"
    ))
    .execute(&mut admin)
    .await
    .context("creating the plain outbox table")?;
    let mut result = measure(url, &backend, &options, events).await;
    backend.close().await;
    drop_schemas(&mut admin).await?;
    if let Ok(figures) = &mut result {
        eprintln!(
            "bench: pruning {} events by time range and by row",
            super::postgres_prune::PRUNED
        );
        figures.push(super::postgres_prune::measure(url, &mut admin).await?);
    }
    Ok(BenchReport {
        partitions: None,
        nodes: None,
        backend: format!("postgres {}", redact_url(url)),
        figures: result?,
    })
}

async fn drop_schemas(conn: &mut PgConnection) -> anyhow::Result<()> {
    sqlx::raw_sql(&format!(
        "DROP SCHEMA IF EXISTS {FF_SCHEMA} CASCADE; DROP SCHEMA IF EXISTS {RAW_SCHEMA} CASCADE; \
         DROP SCHEMA IF EXISTS {INDEXED_SCHEMA} CASCADE"
    ))
    .execute(conn)
    .await
    .context("dropping the bench schemas")?;
    Ok(())
}

fn draft(n: usize) -> (NewEvent, EventMeta) {
    let outcome = if n % 10 == 0 {
        CompletionOutcome::Failure
    } else {
        CompletionOutcome::Success
    };
    (
        NewEvent::completion(ExecutionId::new((n % 64) as u16), outcome),
        EventMeta::new()
            .with_namespace("bench")
            .with_tag("n", n.to_string()),
    )
}

/// The raw row of event `n`: `(execution_id, outcome, namespace, tags)`.
fn raw_values(n: usize) -> (String, &'static str, &'static str, String) {
    let (event, meta) = draft(n);
    let NewEvent::Completion {
        execution_id,
        outcome,
    } = event
    else {
        unreachable!("completion drafts")
    };
    let outcome = match outcome {
        CompletionOutcome::Failure => "failure",
        _ => "success",
    };
    (execution_id.to_string(), outcome, "bench", meta.tags_json())
}

fn bench_config(schema: &str) -> PostgresConfig {
    PostgresConfig::default()
        .with_schema(schema)
        .with_application_name("ff-bench")
}

async fn measure(
    url: &str,
    backend: &PostgresBackend,
    options: &PgConnectOptions,
    events: usize,
) -> anyhow::Result<Vec<Figure>> {
    let quiet = options.clone().options([("ff.defer_notify", "on")]);

    eprintln!("bench: single-event transactions from {PUBLISHERS} connections");
    // Commit throughput is bound by the WAL flush, which varies from
    // moment to moment: interleave many short phases of the three
    // measurements, so each sees the same conditions, and total them.
    let (mut raw_tx, mut raw_tx_notify, mut ff_tx) =
        (Tally::default(), Tally::default(), Tally::default());
    for round in 0..PUBLISH_ROUNDS {
        for writer in round_order::<3>(round) {
            match writer {
                0 => raw_tx.add(raw_publish_tx(&quiet).await?),
                1 => ff_tx.add(ff_publish_tx(backend).await?),
                _ => raw_tx_notify.add(raw_publish_tx(options).await?),
            }
        }
    }
    let (raw_tx, raw_tx_notify, ff_tx) = (raw_tx.rate(), raw_tx_notify.rate(), ff_tx.rate());

    eprintln!("bench: publishing {events} events in batches of {BATCH}");
    // Insert rates drift as tables grow and checkpoints come and go:
    // interleave rounds of the four writers, so each sees the same
    // conditions, and total them.
    let indexed = PostgresBackend::connect(url, bench_config(INDEXED_SCHEMA)).await?;
    indexed.create_filter_indexes().await?;
    let (mut raw_batch, mut ff_batch, mut plain_batch, mut indexed_batch) = (
        Tally::default(),
        Tally::default(),
        Tally::default(),
        Tally::default(),
    );
    let per_round = events.div_ceil(BATCH_ROUNDS);
    for round in 0..BATCH_ROUNDS {
        for writer in round_order::<4>(round) {
            match writer {
                0 => raw_batch
                    .add(raw_publish_batch(&quiet, RAW_SCHEMA, "completion", per_round).await?),
                1 => ff_batch.add(ff_publish_batch(backend, per_round).await?),
                2 => plain_batch
                    .add(raw_publish_batch(&quiet, RAW_SCHEMA, PLAIN_TABLE, per_round).await?),
                _ => indexed_batch.add(ff_publish_batch(&indexed, per_round).await?),
            }
        }
    }
    indexed.close().await;
    let (raw_batch, ff_batch, plain_batch, indexed_batch) = (
        raw_batch.rate(),
        ff_batch.rate(),
        plain_batch.rate(),
        indexed_batch.rate(),
    );

    let ff_total = count(options, FF_SCHEMA).await?;
    let raw_total = count(options, RAW_SCHEMA).await?;
    eprintln!("bench: catching up over {ff_total} events");
    let (raw_catch_up, raw_rss) = raw_catch_up(options, raw_total).await?;
    let (ff_catch_up, ff_rss) = ff_catch_up(backend, Family::Completion, ff_total).await?;

    eprintln!("bench: live commit-to-receive latency at {LIVE_RATE} events/s");
    let raw_live = raw_live(options).await?;
    // A subscriber on another backend instance is woken only by NOTIFY,
    // as one in another process would be; one on the publishing instance
    // is also woken in process.
    let other = PostgresBackend::connect(url, bench_config(FF_SCHEMA)).await?;
    let ff_remote = ff_live(backend, &other).await?;
    other.close().await;
    let ff_local = ff_live(backend, backend).await?;

    Ok(vec![
        Figure::new("publish_tx_per_sec", "tx/s", ff_tx, Some(raw_tx)),
        Figure::new(
            "publish_tx_notify_in_tx_per_sec",
            "tx/s",
            raw_tx_notify,
            Some(raw_tx),
        ),
        Figure::new(
            "publish_batch_events_per_sec",
            "events/s",
            ff_batch,
            Some(raw_batch),
        ),
        Figure::new(
            "publish_batch_vs_plain_outbox",
            "events/s",
            ff_batch,
            Some(plain_batch),
        ),
        Figure::new(
            "publish_batch_with_filter_indexes_vs_plain_outbox",
            "events/s",
            indexed_batch,
            Some(plain_batch),
        ),
        Figure::new(
            "catch_up_events_per_sec",
            "events/s",
            ff_catch_up,
            Some(raw_catch_up),
        ),
        Figure::new("live_p50_us", "us", ff_remote.0, Some(raw_live.0)),
        Figure::new("live_p99_us", "us", ff_remote.1, Some(raw_live.1)),
        Figure::new("live_in_process_p50_us", "us", ff_local.0, Some(raw_live.0)),
        Figure::new("live_in_process_p99_us", "us", ff_local.1, Some(raw_live.1)),
        Figure::new("catch_up_peak_rss_mib", "MiB", ff_rss, Some(raw_rss)),
    ])
}

async fn count(options: &PgConnectOptions, schema: &str) -> anyhow::Result<usize> {
    let mut conn = PgConnection::connect_with(options).await?;
    let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {schema}.completion"))
        .fetch_one(&mut conn)
        .await?;
    Ok(n as usize)
}

/// The order `N` interleaved writers run in during `round`: forwards in
/// even rounds, backwards in odd ones, so no writer always runs right
/// after the same other one (and inherits its WAL, checkpoints and
/// vacuum every time).
fn round_order<const N: usize>(round: usize) -> [usize; N] {
    let mut order: [usize; N] = std::array::from_fn(|i| i);
    if round % 2 == 1 {
        order.reverse();
    }
    order
}

/// Transactions and time summed over interleaved phases.
#[derive(Default)]
struct Tally {
    done: usize,
    took: Duration,
}

impl Tally {
    fn add(&mut self, (done, took): (usize, Duration)) {
        self.done += done;
        self.took += took;
    }

    fn rate(&self) -> f64 {
        per_sec(self.done, self.took)
    }
}

fn raw_insert_one() -> String {
    format!(
        "INSERT INTO {RAW_SCHEMA}.completion (v, execution_id, outcome, namespace, tags) \
         VALUES (1, $1, $2, $3, $4::jsonb) RETURNING xid::text::int8, id"
    )
}

/// Single-row `INSERT` transactions from [`PUBLISHERS`] raw connections.
async fn raw_publish_tx(options: &PgConnectOptions) -> anyhow::Result<(usize, Duration)> {
    // Connect first: ff's pool is warm, so connecting is not measured.
    let mut conns = Vec::with_capacity(PUBLISHERS);
    for _ in 0..PUBLISHERS {
        conns.push(PgConnection::connect_with(options).await?);
    }
    let deadline = Instant::now() + PUBLISH_PHASE;
    let started = Instant::now();
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(p, mut conn)| {
            tokio::spawn(async move {
                let sql = raw_insert_one();
                let mut n = p * 1_000_000;
                let mut done = 0usize;
                while Instant::now() < deadline {
                    let (e, o, ns, tags) = raw_values(n);
                    let row = sqlx::query(&sql)
                        .bind(e)
                        .bind(o)
                        .bind(ns)
                        .bind(tags)
                        .fetch_one(&mut conn)
                        .await?;
                    std::hint::black_box((row.get::<i64, _>(0), row.get::<i64, _>(1)));
                    n += 1;
                    done += 1;
                }
                anyhow::Ok(done)
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    Ok((total, started.elapsed()))
}

/// `publish` of single events from [`PUBLISHERS`] concurrent tasks.
async fn ff_publish_tx(backend: &PostgresBackend) -> anyhow::Result<(usize, Duration)> {
    let deadline = Instant::now() + PUBLISH_PHASE;
    let started = Instant::now();
    let tasks: Vec<_> = (0..PUBLISHERS)
        .map(|p| {
            let backend = backend.clone();
            tokio::spawn(async move {
                let mut n = p * 1_000_000;
                let mut done = 0usize;
                while Instant::now() < deadline {
                    let (event, meta) = draft(n);
                    backend.publish(event, meta).await?;
                    n += 1;
                    done += 1;
                }
                anyhow::Ok(done)
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    Ok((total, started.elapsed()))
}

/// 1000-row `INSERT ... SELECT FROM UNNEST` statements on one connection
/// into `schema.table`.
async fn raw_publish_batch(
    options: &PgConnectOptions,
    schema: &str,
    table: &str,
    events: usize,
) -> anyhow::Result<(usize, Duration)> {
    let mut conn = PgConnection::connect_with(options).await?;
    let sql = format!(
        "INSERT INTO {schema}.{table} (v, execution_id, outcome, namespace, tags) \
         SELECT 1, u.e, u.o, u.ns, u.t::jsonb FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[]) \
         AS u(e, o, ns, t) RETURNING xid::text::int8, id"
    );
    let started = Instant::now();
    for start in (0..events).step_by(BATCH) {
        let rows: Vec<_> = (start..(start + BATCH).min(events))
            .map(raw_values)
            .collect();
        let e: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
        let o: Vec<&str> = rows.iter().map(|r| r.1).collect();
        let ns: Vec<&str> = rows.iter().map(|r| r.2).collect();
        let t: Vec<&str> = rows.iter().map(|r| r.3.as_str()).collect();
        let out = sqlx::query(&sql)
            .bind(&e)
            .bind(&o)
            .bind(&ns)
            .bind(&t)
            .fetch_all(&mut conn)
            .await
            .context("raw batch insert")?;
        std::hint::black_box(out.len());
    }
    Ok((events, started.elapsed()))
}

async fn ff_publish_batch(
    backend: &PostgresBackend,
    events: usize,
) -> anyhow::Result<(usize, Duration)> {
    let started = Instant::now();
    for start in (0..events).step_by(BATCH) {
        let batch = (start..(start + BATCH).min(events)).map(draft).collect();
        backend.publish_batch(batch).await?;
    }
    Ok((events, started.elapsed()))
}

/// What the raw loop decodes each row into.
#[allow(dead_code)]
struct RawCompletion {
    xid: i64,
    id: i64,
    at: i64,
    v: i16,
    execution_id: String,
    outcome: String,
    namespace: Option<String>,
    tags: String,
}

/// A keyset `SELECT ... LIMIT 1000` loop over `(xid, id)` until every row
/// was decoded.
async fn raw_catch_up(options: &PgConnectOptions, events: usize) -> anyhow::Result<(f64, f64)> {
    let mut conn = PgConnection::connect_with(options).await?;
    let sql = format!(
        "SELECT xid::text::int8, id, at, v, execution_id, outcome, namespace, tags::text \
         FROM {RAW_SCHEMA}.completion c WHERE (c.xid, c.id) > ($1::text::xid8, $2) \
         ORDER BY c.xid, c.id LIMIT 1000"
    );
    let rss = RssSampler::start();
    let started = Instant::now();
    let mut last = (0i64, i64::MIN);
    let mut seen = 0usize;
    loop {
        let rows = sqlx::query(&sql)
            .bind(last.0.to_string())
            .bind(last.1)
            .fetch_all(&mut conn)
            .await
            .context("raw keyset read")?;
        if rows.is_empty() {
            break;
        }
        for row in &rows {
            let r = RawCompletion {
                xid: row.try_get(0)?,
                id: row.try_get(1)?,
                at: row.try_get(2)?,
                v: row.try_get(3)?,
                execution_id: row.try_get(4)?,
                outcome: row.try_get(5)?,
                namespace: row.try_get(6)?,
                tags: row.try_get(7)?,
            };
            last = (r.xid, r.id);
            seen += 1;
            std::hint::black_box(&r);
        }
    }
    let rate = per_sec(seen, started.elapsed());
    if seen != events {
        bail!("raw catch-up read {seen} rows, expected {events}");
    }
    Ok((rate, rss.stop_mib()))
}

/// Raw `INSERT` (its `NOTIFY` sent by the trigger inside the transaction)
/// → raw `LISTEN` + keyset `SELECT` on a dedicated connection.
async fn raw_live(options: &PgConnectOptions) -> anyhow::Result<(f64, f64)> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options.clone())
        .await?;
    let mut listener = PgListener::connect_with(&pool).await?;
    listener.listen(&format!("{RAW_SCHEMA}.completion")).await?;
    let mut conn = PgConnection::connect_with(options).await?;
    let head: Option<(i64, i64)> = sqlx::query_as(&format!(
        "SELECT xid::text::int8, id FROM {RAW_SCHEMA}.completion c \
         ORDER BY c.xid DESC, c.id DESC LIMIT 1"
    ))
    .fetch_optional(&mut conn)
    .await?;
    let start = head.unwrap_or((0, i64::MIN));
    let receiver = tokio::spawn(async move {
        let sql = format!(
            "SELECT xid::text::int8, id, tags->>'n' FROM {RAW_SCHEMA}.completion \
             c WHERE (c.xid, c.id) > ($1::text::xid8, $2) ORDER BY c.xid, c.id LIMIT 1000"
        );
        let mut last = start;
        let mut received: HashMap<usize, Instant> = HashMap::with_capacity(LIVE_SAMPLES);
        while received.len() < LIVE_SAMPLES {
            listener.recv().await?;
            let rows = sqlx::query(&sql)
                .bind(last.0.to_string())
                .bind(last.1)
                .fetch_all(&mut listener)
                .await?;
            let now = Instant::now();
            for row in rows {
                last = (row.try_get(0)?, row.try_get(1)?);
                let n: String = row.try_get(2)?;
                if let Some(n) = n.strip_prefix("live-") {
                    received.insert(n.parse()?, now);
                }
            }
        }
        anyhow::Ok(received)
    });
    let sql = raw_insert_one();
    let mut sent = Vec::with_capacity(LIVE_SAMPLES);
    let mut tick = ticker(LIVE_RATE);
    for n in 0..LIVE_SAMPLES {
        tick.tick().await;
        let (e, o, ns, _) = raw_values(n);
        let tags = EventMeta::new()
            .with_tag("n", format!("live-{n}"))
            .tags_json();
        sqlx::query(&sql)
            .bind(e)
            .bind(o)
            .bind(ns)
            .bind(tags)
            .fetch_one(&mut conn)
            .await?;
        sent.push(Instant::now());
    }
    let received = collect("raw live", receiver).await?;
    Ok(percentiles_us(latencies(&sent, &received)))
}

/// ff `publish` on `publisher` → a tail subscription on `subscriber`.
async fn ff_live(
    publisher: &PostgresBackend,
    subscriber: &PostgresBackend,
) -> anyhow::Result<(f64, f64)> {
    let receiver = ff_live_receiver(subscriber, Family::Completion, LIVE_SAMPLES, |meta| {
        meta.tags.get("n")?.strip_prefix("live-")?.parse().ok()
    })
    .await?;
    let mut sent = Vec::with_capacity(LIVE_SAMPLES);
    let mut tick = ticker(LIVE_RATE);
    for n in 0..LIVE_SAMPLES {
        tick.tick().await;
        let (event, _) = draft(n);
        publisher
            .publish(event, EventMeta::new().with_tag("n", format!("live-{n}")))
            .await?;
        sent.push(Instant::now());
    }
    let received = collect("ff live", receiver).await?;
    Ok(percentiles_us(latencies(&sent, &received)))
}
