//! Valkey benchmark: publish throughput, catch-up throughput and peak RSS,
//! and live latency through ff, each beside a raw `redis`-crate baseline
//! doing the same work against the same server in the same run. With a
//! `valkeys://` URL both sides go over TLS: the raw client's connections
//! come from [`ValkeyBackend::connection_for_key`] (the same rustls setup),
//! so the ratios compare ff with the raw client, TLS cost included on both.
//!
//! On a Valkey Cluster (a URL naming any node, with `?partitions=P` or
//! not), the figures are taken at the URL's P with the raw client on the
//! node of ff's partition 0, and the report adds `cluster_scaling` — ff's
//! catch-up over 6 partitions divided by ff's catch-up over 1, in the same
//! run — and the client's and the servers' CPU per event of each catch-up
//! (from `/proc`, when the servers are local processes).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use ff_backend_valkey::redis::streams::{StreamReadOptions, StreamReadReply};
use ff_backend_valkey::redis::{self, aio::MultiplexedConnection, AsyncCommands};
use ff_backend_valkey::{ValkeyBackend, ValkeyConfig};
use ff_core::backend::EventPublisher;
use ff_core::stream_events::{CompletionOutcome, EventMeta, Family, NewEvent};
use ff_core::types::ExecutionId;

use super::cpu::{own_cpu_ns, total_cpu_ns};
use super::measure::{
    collect, ff_catch_up, ff_live_receiver, latencies, per_sec, percentiles_us, ticker,
};
use super::report::{BenchReport, Figure};
use super::rss::RssSampler;

/// Catch-up is measured over at least this many events.
pub const MIN_CATCH_UP_EVENTS: usize = 200_000;
/// Events per publish batch / raw pipeline.
const PUBLISH_CHUNK: usize = 1000;
/// Live latency: events per second and samples per side.
const LIVE_RATE: u64 = 1000;
const LIVE_SAMPLES: usize = 2000;

/// Run the Valkey benchmark against `url` with `events` events (at least
/// [`MIN_CATCH_UP_EVENTS`]), and with `operations` the cluster operations'
/// figures too. Uses keys under a fresh prefix and deletes them
/// afterwards.
pub async fn run(url: &str, events: usize, operations: bool) -> anyhow::Result<BenchReport> {
    let events = events.max(MIN_CATCH_UP_EVENTS);
    let prefix = format!("ffbench:{}:{}:", std::process::id(), nanos());
    let config = ValkeyConfig::default()
        .with_key_prefix(prefix.clone())
        .with_client_name("ff-bench");
    let backend = ValkeyBackend::connect(url, config).await?;
    let ff_key = backend.stream_key(Family::Completion).to_owned();
    // On a cluster (or with partitions) the raw key shares partition 0's
    // slot, so both clients talk to the same node.
    let raw_key = if backend.is_cluster() || backend.partitions() > 1 {
        format!("{prefix}{{fp:0}}:raw")
    } else {
        format!("{prefix}raw")
    };
    let mut raw = backend
        .connection_for_key(&raw_key)
        .await
        .context("raw connection")?;
    // With one partition the raw client reads ff's own stream; with
    // several, its own (the same entries, published by the raw producer).
    let read_key = if backend.partitions() == 1 {
        ff_key.clone()
    } else {
        raw_key.clone()
    };
    let result = measure(&backend, &mut raw, &read_key, &raw_key, events).await;
    let mut keys = vec![raw_key.clone(), format!("{raw_key}-live")];
    keys.extend(all_stream_keys(&backend));
    delete(&backend, &keys).await;
    let mut figures = result?;
    if backend.is_cluster() {
        eprintln!("bench: cluster scaling (catch-up over 1 and 6 partitions)");
        figures.extend(cluster_scaling(url, &prefix, events).await?);
    }
    if operations {
        figures.extend(super::valkey_operations::run(url, &prefix).await?);
    }
    Ok(BenchReport {
        backend: format!("valkey {}", backend.url()),
        partitions: Some(backend.partitions()),
        nodes: Some(backend.nodes().len()),
        figures,
    })
}

/// Every stream key of every family and partition.
fn all_stream_keys(backend: &ValkeyBackend) -> Vec<String> {
    Family::ALL
        .iter()
        .flat_map(|&f| {
            (0..backend.partitions()).map(move |n| backend.partition_stream_key(f, n).to_owned())
        })
        .collect()
}

/// Delete `keys`, each on the node serving it (errors ignored: cleanup).
async fn delete(backend: &ValkeyBackend, keys: &[String]) {
    for key in keys {
        if let Ok(mut conn) = backend.connection_for_key(key).await {
            let _: redis::RedisResult<()> = redis::cmd("DEL").arg(key).query_async(&mut conn).await;
        }
    }
}

/// The process ids of the nodes serving data, from `INFO server`.
async fn server_pids(backend: &ValkeyBackend) -> Vec<u32> {
    let mut pids = Vec::new();
    for node in backend.nodes() {
        let Ok(mut conn) = backend.connection_to_node(&node).await else {
            continue;
        };
        let info: redis::RedisResult<String> = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut conn)
            .await;
        if let Some(pid) = info.ok().and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("process_id:"))
                .and_then(|p| p.trim().parse().ok())
        }) {
            pids.push(pid);
        }
    }
    pids
}

/// Catch-ups per partition count in [`cluster_scaling`], alternating, of
/// which the median counts: the machine's other load moves single runs.
const SCALING_ROUNDS: usize = 3;

/// ff's catch-up over 1 and over 6 partitions of the same cluster in one
/// run, their ratio (`cluster_scaling`), and the client's and servers' CPU
/// per event of each (servers: only when they are local processes). The
/// two catch-ups alternate [`SCALING_ROUNDS`] times; each figure is the
/// median of its rounds.
async fn cluster_scaling(url: &str, prefix: &str, events: usize) -> anyhow::Result<Vec<Figure>> {
    const COUNTS: [u16; 2] = [1, 6];
    let mut backends = Vec::new();
    for partitions in COUNTS {
        let config = ValkeyConfig::default()
            .with_key_prefix(format!("{prefix}p{partitions}:"))
            .with_client_name("ff-bench")
            .with_partitions(partitions);
        let backend = ValkeyBackend::connect(url, config).await?;
        for start in (0..events).step_by(PUBLISH_CHUNK) {
            let chunk = start..(start + PUBLISH_CHUNK).min(events);
            backend.publish_batch(chunk.map(draft).collect()).await?;
        }
        backends.push(backend);
    }
    let pids = server_pids(&backends[0]).await;
    // Per partition count: rates, client and server µs per event.
    let mut samples: [Vec<[Option<f64>; 3]>; 2] = [Vec::new(), Vec::new()];
    let mut result = Ok(());
    'rounds: for _ in 0..SCALING_ROUNDS {
        for (i, backend) in backends.iter().enumerate() {
            let (client_before, server_before) = (own_cpu_ns(), total_cpu_ns(&pids));
            let rate = match ff_catch_up(backend, Family::Completion, events).await {
                Ok((rate, _)) => rate,
                Err(e) => {
                    result = Err(e);
                    break 'rounds;
                }
            };
            let (client_after, server_after) = (own_cpu_ns(), total_cpu_ns(&pids));
            let per_event = |before: Option<u64>, after: Option<u64>| {
                Some(after?.saturating_sub(before?) as f64 / 1_000.0 / events as f64)
            };
            samples[i].push([
                Some(rate),
                per_event(client_before, client_after),
                per_event(server_before, server_after).filter(|_| !pids.is_empty()),
            ]);
        }
    }
    for backend in &backends {
        delete(backend, &all_stream_keys(backend)).await;
    }
    result?;
    let median = |i: usize, k: usize| -> Option<f64> {
        let mut v: Vec<f64> = samples[i].iter().filter_map(|s| s[k]).collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied()
    };
    let mut figures = Vec::new();
    for (i, partitions) in COUNTS.iter().enumerate() {
        let mut figure = |name: &str, unit: &str, k: usize| {
            if let Some(value) = median(i, k) {
                figures.push(Figure::new(
                    &format!("{name}_p{partitions}"),
                    unit,
                    value,
                    None,
                ));
            }
        };
        figure("catch_up_events_per_sec", "events/s", 0);
        figure("catch_up_client_cpu_us_per_event", "us", 1);
        figure("catch_up_server_cpu_us_per_event", "us", 2);
    }
    if let (Some(p6), Some(p1)) = (median(1, 0), median(0, 0)) {
        figures.push(Figure::new("cluster_scaling", "x", p6 / p1, None));
    }
    Ok(figures)
}

fn nanos() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
}

/// Event `n` of the workload (the same fields for ff and the raw client;
/// execution ids come from a pool so that id generation is not measured).
fn draft(n: usize) -> (NewEvent, EventMeta) {
    static EXECUTIONS: std::sync::OnceLock<Vec<ExecutionId>> = std::sync::OnceLock::new();
    let executions = EXECUTIONS.get_or_init(|| (0..64).map(ExecutionId::new).collect());
    let outcome = if n % 10 == 0 {
        CompletionOutcome::Failure
    } else {
        CompletionOutcome::Success
    };
    (
        NewEvent::completion(executions[n % 64], outcome),
        EventMeta::new()
            .with_namespace("bench")
            .with_tag("n", n.to_string()),
    )
}

async fn measure(
    backend: &ValkeyBackend,
    raw: &mut MultiplexedConnection,
    ff_key: &str,
    raw_key: &str,
    events: usize,
) -> anyhow::Result<Vec<Figure>> {
    eprintln!("bench: publishing {events} events through ff and raw XADD");
    let published = publish(backend, raw, raw_key, events).await?;
    let [ff_publish, raw_publish, raw_transaction] = published.rate;

    eprintln!("bench: catching up over {events} events");
    let (raw_catch_up, raw_rss) = raw_catch_up(raw, ff_key, events).await?;
    let (ff_catch_up, ff_rss) = ff_catch_up(backend, Family::Completion, events).await?;

    eprintln!("bench: live latency at {LIVE_RATE} events/s");
    let raw_live = raw_live(backend, raw, &format!("{raw_key}-live")).await?;
    let ff_live = ff_live(backend).await?;

    let mut figures = vec![
        Figure::new(
            "publish_events_per_sec",
            "events/s",
            ff_publish,
            Some(raw_publish),
        ),
        // Beside raw `MULTI`/`EXEC`: a batch is all-or-none, and a
        // transaction's replies come after the server ran all of it, where
        // a plain pipeline's are read while the server still works.
        Figure::new(
            "publish_vs_raw_transaction_events_per_sec",
            "events/s",
            ff_publish,
            Some(raw_transaction),
        ),
        Figure::new(
            "catch_up_events_per_sec",
            "events/s",
            ff_catch_up,
            Some(raw_catch_up),
        ),
        Figure::new("live_p50_us", "us", ff_live.0, Some(raw_live.0)),
        Figure::new("live_p99_us", "us", ff_live.1, Some(raw_live.1)),
        Figure::new("catch_up_peak_rss_mib", "MiB", ff_rss, Some(raw_rss)),
    ];
    // This process's CPU per published event: where the client, not the
    // server, limits the rate, this is what the rates compare.
    if let [Some(ff), Some(raw)] = published.client_cpu_us {
        figures.insert(
            2,
            Figure::new("publish_client_cpu_us_per_event", "us", ff, Some(raw)),
        );
    }
    Ok(figures)
}

/// The raw producer: the same fields ff writes, 1000 `XADD`s per pipeline.
fn raw_xadd(pipe: &mut redis::Pipeline, key: &str, n: usize) {
    let (event, meta) = draft(n);
    let NewEvent::Completion {
        execution_id,
        outcome,
    } = event
    else {
        unreachable!("completion drafts")
    };
    pipe.cmd("XADD")
        .arg(key)
        .arg("*")
        .arg("v")
        .arg(1)
        .arg("execution_id")
        .arg(execution_id.to_string())
        .arg("outcome")
        .arg(outcome.as_wire())
        .arg("namespace")
        .arg("bench")
        .arg("tags")
        .arg(meta.tags_json());
}

/// What publishing measured, per side: ff's batches, the raw client's
/// plain pipelines, and the raw client's `MULTI`/`EXEC` pipelines (what
/// an all-or-none batch costs without ff).
struct Publish {
    /// Events/s: ff, raw pipeline, raw transaction.
    rate: [f64; 3],
    /// This process's CPU per event, in µs: ff, raw pipeline.
    client_cpu_us: [Option<f64>; 2],
}

/// Publish `events` through ff (batches of [`PUBLISH_CHUNK`]), with raw
/// pipelined `XADD`s and with the same pipelines in `MULTI`/`EXEC`,
/// alternating chunk by chunk so all see the same server state and
/// machine load.
async fn publish(
    backend: &ValkeyBackend,
    raw: &mut MultiplexedConnection,
    raw_key: &str,
    events: usize,
) -> anyhow::Result<Publish> {
    let mut time = [Duration::ZERO; 3];
    let mut cpu = [Some(0u64); 2];
    let mut add_cpu = |side: usize, before: Option<u64>| {
        cpu[side] = (|| Some(cpu[side]? + own_cpu_ns()?.saturating_sub(before?)))();
    };
    for start in (0..events).step_by(PUBLISH_CHUNK) {
        let chunk = start..(start + PUBLISH_CHUNK).min(events);

        for atomic in [false, true] {
            let (started, before) = (Instant::now(), own_cpu_ns());
            let mut pipe = redis::pipe();
            if atomic {
                pipe.atomic();
            }
            for n in chunk.clone() {
                raw_xadd(&mut pipe, raw_key, n);
            }
            let _: Vec<String> = pipe.query_async(raw).await.context("raw XADD")?;
            time[1 + usize::from(atomic)] += started.elapsed();
            if !atomic {
                add_cpu(1, before);
            }
        }

        let (started, before) = (Instant::now(), own_cpu_ns());
        backend.publish_batch(chunk.map(draft).collect()).await?;
        time[0] += started.elapsed();
        add_cpu(0, before);
    }
    let per_event_us = |ns: Option<u64>| ns.map(|ns| ns as f64 / 1_000.0 / events as f64);
    Ok(Publish {
        rate: time.map(|t| per_sec(events, t)),
        client_cpu_us: cpu.map(per_event_us),
    })
}

/// What the raw loop decodes each entry into.
#[allow(dead_code)]
struct RawCompletion {
    id: String,
    execution_id: String,
    outcome: String,
    namespace: Option<String>,
    tags: Option<String>,
}

/// `XREAD COUNT 1000` of `key` from the start until `events` entries were
/// decoded.
async fn raw_catch_up(
    raw: &mut MultiplexedConnection,
    key: &str,
    events: usize,
) -> anyhow::Result<(f64, f64)> {
    let rss = RssSampler::start();
    let started = Instant::now();
    let options = StreamReadOptions::default().count(1000);
    let mut last = "0-0".to_owned();
    let mut seen = 0usize;
    while seen < events {
        let reply: StreamReadReply = raw
            .xread_options(&[key], &[&last], &options)
            .await
            .context("raw XREAD")?;
        let Some(stream) = reply.keys.into_iter().next() else {
            bail!("raw XREAD returned nothing after {seen} of {events} entries");
        };
        for entry in stream.ids {
            let event = RawCompletion {
                execution_id: entry.get("execution_id").context("execution_id")?,
                outcome: entry.get("outcome").context("outcome")?,
                namespace: entry.get("namespace"),
                tags: entry.get("tags"),
                id: entry.id,
            };
            last = event.id.clone();
            seen += 1;
            std::hint::black_box(&event);
        }
    }
    let rate = per_sec(seen, started.elapsed());
    Ok((rate, rss.stop_mib()))
}

/// Raw `XADD` → raw `XREAD BLOCK` on a dedicated connection.
async fn raw_live(
    backend: &ValkeyBackend,
    raw: &mut MultiplexedConnection,
    key: &str,
) -> anyhow::Result<(f64, f64)> {
    let mut reader = backend.connection_for_key(key).await?;
    let key_owned = key.to_owned();
    let receiver = tokio::spawn(async move {
        let options = StreamReadOptions::default().count(1000).block(30_000);
        // A fresh key: every entry is one of ours.
        let mut last = "0-0".to_owned();
        let mut received: HashMap<usize, Instant> = HashMap::with_capacity(LIVE_SAMPLES);
        while received.len() < LIVE_SAMPLES {
            let reply: Option<StreamReadReply> = reader
                .xread_options(&[&key_owned], &[&last], &options)
                .await?;
            let now = Instant::now();
            for stream in reply.into_iter().flat_map(|r| r.keys) {
                for entry in stream.ids {
                    if let Some(n) = entry.get::<usize>("n") {
                        received.insert(n, now);
                    }
                    last = entry.id;
                }
            }
        }
        anyhow::Ok(received)
    });
    let mut sent = Vec::with_capacity(LIVE_SAMPLES);
    let mut tick = ticker(LIVE_RATE);
    for n in 0..LIVE_SAMPLES {
        tick.tick().await;
        sent.push(Instant::now());
        let _: String = redis::cmd("XADD")
            .arg(key)
            .arg("*")
            .arg("n")
            .arg(n)
            .query_async(raw)
            .await?;
    }
    let received = collect("raw live", receiver).await?;
    Ok(percentiles_us(latencies(&sent, &received)))
}

/// ff `publish` → a tail subscription.
async fn ff_live(backend: &ValkeyBackend) -> anyhow::Result<(f64, f64)> {
    let receiver = ff_live_receiver(backend, Family::SignalDelivery, LIVE_SAMPLES, |meta| {
        meta.tags.get("n")?.parse().ok()
    })
    .await?;
    let mut sent = Vec::with_capacity(LIVE_SAMPLES);
    let mut tick = ticker(LIVE_RATE);
    for n in 0..LIVE_SAMPLES {
        tick.tick().await;
        let event = NewEvent::signal_delivery(
            ExecutionId::new(1),
            ff_core::types::SignalId::new(),
            None,
            None,
            ff_core::stream_events::SignalDeliveryEffect::Satisfied,
        );
        sent.push(Instant::now());
        backend
            .publish(event, EventMeta::new().with_tag("n", n.to_string()))
            .await?;
    }
    let received = collect("ff live", receiver).await?;
    Ok(percentiles_us(latencies(&sent, &received)))
}
