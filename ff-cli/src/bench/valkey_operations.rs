//! `ff bench --operations`: what a managed Valkey Cluster's routine
//! operations cost a live consumer, measured on the cluster the URL names
//! (primaries with one replica each). It fails over, migrates a slot and
//! makes a node unresponsive, so it is opt-in.
//!
//! Each disruptive figure runs a *probe*: a publisher sending events at a
//! steady [`PROBE_RATE`] to partition 0 (so every event goes through the
//! node the operation touches) and a tail subscription over the whole
//! family. The figure is the longest stretch, from the operation's start
//! until a settle time after its end, in which the subscription received
//! nothing; beside it, how many acknowledged events never arrived (a
//! correct run reports 0).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use ff_backend_valkey::{key_slot, ValkeyBackend, ValkeyConfig};
use ff_core::backend::{DeliveryItem, EventPublisher, StreamBackend};
use ff_core::engine_error::EngineError;
use ff_core::filter::SubscriptionFilter;
use ff_core::stream_events::{CompletionOutcome, EventMeta, Family, NewEvent};
use ff_core::stream_subscribe::StreamCursor;
use ff_core::types::ExecutionId;
use futures::StreamExt;
use tokio::task::JoinHandle;

use super::cluster_admin::{self as admin, ClusterNode};
use super::measure::{per_sec, percentiles_us, ticker};
use super::report::Figure;

/// Events per second the probe publishes.
const PROBE_RATE: u64 = 200;
/// How long the probe runs after an operation ends.
const SETTLE: Duration = Duration::from_secs(2);
/// Subscriptions opened to count sockets and time live delivery.
const SOCKET_SUBSCRIPTIONS: usize = 1000;
/// Partitions of the socket count.
const SOCKET_PARTITIONS: u16 = 64;
/// Events published (at [`SOCKET_LIVE_RATE`] a second, one partition after
/// another) while the subscriptions are open, each timed into every one.
const SOCKET_LIVE_EVENTS: usize = 256;
const SOCKET_LIVE_RATE: u64 = 64;
/// Concurrent publishers and events each, for the replica-acks figure.
const ACK_PUBLISHERS: usize = 16;
const ACK_EVENTS_EACH: usize = 250;

/// Measure every operations figure against the cluster at `url`.
pub async fn run(url: &str, prefix: &str) -> anyhow::Result<Vec<Figure>> {
    let mut figures = Vec::new();
    eprintln!("bench --operations: sockets and live latency of {SOCKET_SUBSCRIPTIONS} subscriptions over P = {SOCKET_PARTITIONS}");
    figures.extend(sockets(url, &format!("{prefix}sock:")).await?);
    eprintln!("bench --operations: publishes waiting for a replica's ack vs not");
    figures.push(replica_acks(url, &format!("{prefix}acks:")).await?);

    let config = ValkeyConfig::default()
        .with_key_prefix(format!("{prefix}ops:"))
        .with_client_name("ff-bench-ops");
    let backend = ValkeyBackend::connect(url, config).await?;
    anyhow::ensure!(
        backend.is_cluster(),
        "--operations needs a Valkey Cluster URL (primaries with one replica each)"
    );
    let key = backend
        .partition_stream_key(Family::Completion, 0)
        .to_owned();
    let seed = backend.nodes().first().cloned().context("no primary")?;
    admin::wait_until_stable(&backend, &seed, Duration::from_secs(60)).await?;

    eprintln!("bench --operations: CLUSTER FAILOVER under a live subscription");
    let (_, replica) = admin::primary_and_replica(&backend, &key).await?;
    let (silence, outcome) = probe(&backend, || async {
        admin::planned_failover(&backend, &replica, Duration::from_secs(30)).await
    })
    .await?;
    figures.push(Figure::new(
        "planned_failover_silence_ms",
        "ms",
        silence,
        None,
    ));
    figures.extend(outcome.figures("planned_failover"));
    admin::wait_until_stable(&backend, &seed, Duration::from_secs(60)).await?;

    eprintln!("bench --operations: a slot migration held open for 5 s");
    let (silence, outcome) = probe(&backend, || migrate_partition_zero(&backend, &key)).await?;
    figures.push(Figure::new("migration_silence_ms", "ms", silence, None));
    figures.extend(outcome.figures("migration"));
    admin::wait_until_stable(&backend, &seed, Duration::from_secs(60)).await?;

    eprintln!("bench --operations: the primary a subscription reads stops answering (DEBUG SLEEP)");
    figures.extend(dead_node(&backend, &key).await?);
    let _ = admin::wait_until_stable(&backend, &seed, Duration::from_secs(90)).await;
    for &family in Family::ALL.iter() {
        for n in 0..backend.partitions() {
            let key = backend.partition_stream_key(family, n).to_owned();
            if let Ok(mut conn) = backend.connection_for_key(&key).await {
                let _: ff_backend_valkey::redis::RedisResult<()> =
                    ff_backend_valkey::redis::cmd("DEL")
                        .arg(&key)
                        .query_async(&mut conn)
                        .await;
            }
        }
    }
    Ok(figures)
}

/// Move partition 0's slot to another primary, held open for 5 s.
async fn migrate_partition_zero(backend: &ValkeyBackend, key: &str) -> anyhow::Result<()> {
    let (from, _) = admin::primary_and_replica(backend, key).await?;
    let table = admin::nodes(backend, &from.addr).await?;
    let primaries: Vec<ClusterNode> = table.into_iter().filter(|n| n.primary).collect();
    let to = primaries
        .iter()
        .find(|n| n.id != from.id)
        .cloned()
        .context("the cluster has one primary: nowhere to migrate to")?;
    let others: Vec<ClusterNode> = primaries
        .into_iter()
        .filter(|n| n.id != from.id && n.id != to.id)
        .collect();
    admin::migrate_slot(
        backend,
        key_slot(key.as_bytes()),
        &from,
        &to,
        &others,
        Duration::from_secs(5),
    )
    .await
}

/// Make partition 0's primary unresponsive for twice the node timeout
/// plus 5 s; `dead_node_detect_s` is the time from then until the
/// subscription delivers an event published after it.
async fn dead_node(backend: &ValkeyBackend, key: &str) -> anyhow::Result<Vec<Figure>> {
    let (primary, _) = admin::primary_and_replica(backend, key).await?;
    let timeout = admin::node_timeout(backend, &primary.addr).await?;
    let probe = Probe::start(backend).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    admin::debug_sleep(backend, &primary.addr, timeout * 2 + Duration::from_secs(5)).await?;
    // The sleep begins once the node reads the command.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stopped = Instant::now();
    let resumed = admin::wait_for(
        timeout * 3 + Duration::from_secs(30),
        "delivery from the promoted replica",
        || {
            let probe = &probe;
            async move { Ok(probe.received_sent_after(stopped).is_some()) }
        },
    )
    .await;
    let detected = probe.received_sent_after(stopped);
    let outcome = probe.finish().await?;
    resumed?;
    let detected = detected.context("no delivery after the node stopped")?;
    let mut figures = vec![Figure::new(
        "dead_node_detect_s",
        "s",
        detected.duration_since(stopped).as_secs_f64(),
        None,
    )];
    figures.extend(outcome.figures("dead_node"));
    Ok(figures)
}

/// Run `operation` under a probe: the longest silence in ms from its
/// start until [`SETTLE`] after its end, and what the probe saw.
async fn probe<F, Fut>(backend: &ValkeyBackend, operation: F) -> anyhow::Result<(f64, Outcome)>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let probe = Probe::start(backend).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let began = Instant::now();
    let done = operation().await;
    tokio::time::sleep(SETTLE).await;
    let ended = Instant::now();
    let silence = probe.longest_silence(began, ended);
    let outcome = probe.finish().await?;
    done?;
    Ok((silence.as_secs_f64() * 1e3, outcome))
}

impl Outcome {
    /// `{operation}_acked_lost` and `{operation}_cursor_expired`.
    fn figures(&self, operation: &str) -> [Figure; 2] {
        [
            Figure::new(
                &format!("{operation}_acked_lost"),
                "events",
                self.lost as f64,
                None,
            ),
            Figure::new(
                &format!("{operation}_cursor_expired"),
                "times",
                self.expired as f64,
                None,
            ),
        ]
    }
}

/// A steady publisher to partition 0 and a tail subscription, recording
/// what was acknowledged and what arrived when.
struct Probe {
    /// `CursorExpired` answers the subscription resumed from.
    expired: Arc<AtomicUsize>,
    stop_publishing: Arc<AtomicBool>,
    stop_receiving: Arc<AtomicBool>,
    /// Per event number: when it was sent; whether it was acknowledged.
    sent: Arc<Mutex<Vec<(Instant, bool)>>>,
    /// Event numbers in order of arrival, with their arrival time.
    received: Arc<Mutex<Vec<(usize, Instant)>>>,
    publisher: JoinHandle<()>,
    receiver: JoinHandle<anyhow::Result<()>>,
}

async fn subscribe(
    backend: &ValkeyBackend,
    cursor: StreamCursor,
) -> anyhow::Result<ff_core::backend::DeliveryStream> {
    Ok(backend
        .subscribe_family(Family::Completion, cursor, &SubscriptionFilter::default())
        .await?)
}

/// What a probe saw: acknowledged events that never arrived, and how
/// often the subscription was told its position had expired.
struct Outcome {
    lost: usize,
    expired: usize,
}

impl Probe {
    async fn start(backend: &ValkeyBackend) -> anyhow::Result<Self> {
        let mut sub = subscribe(backend, StreamCursor::empty()).await?;
        match sub.next().await {
            Some(Ok(DeliveryItem::CaughtUp { .. })) => {}
            other => anyhow::bail!("the probe's subscription began with {other:?}"),
        }
        let stop_publishing = Arc::new(AtomicBool::new(false));
        let stop_receiving = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(Mutex::new(Vec::new()));
        let received = Arc::new(Mutex::new(Vec::new()));
        let expired = Arc::new(AtomicUsize::new(0));
        let receiver = {
            let (stop, received) = (stop_receiving.clone(), received.clone());
            let (backend, expired) = (backend.clone(), expired.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let Ok(item) =
                        tokio::time::timeout(Duration::from_millis(200), sub.next()).await
                    else {
                        continue;
                    };
                    match item {
                        Some(Ok(DeliveryItem::Event { meta, .. })) => {
                            if let Some(n) = meta.tags.get("n").and_then(|n| n.parse().ok()) {
                                received.lock().unwrap().push((n, Instant::now()));
                            }
                        }
                        Some(Ok(_)) => {}
                        // A lossy failover: the promoted replica lacks what
                        // the subscription already read. Go on where the
                        // server says its history continues, as a consumer
                        // would, and count it.
                        Some(Err(EngineError::CursorExpired {
                            oldest: Some(oldest),
                            ..
                        })) => {
                            expired.fetch_add(1, Ordering::Relaxed);
                            sub = subscribe(&backend, oldest).await?;
                        }
                        Some(Err(e)) => return Err(e.into()),
                        None => anyhow::bail!("the probe's subscription ended"),
                    }
                }
                Ok(())
            })
        };
        let publisher = {
            let (stop, sent) = (stop_publishing.clone(), sent.clone());
            let backend = backend.clone();
            tokio::spawn(async move {
                let execution = ExecutionId::new(0);
                let mut tick = ticker(PROBE_RATE);
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    let n = {
                        let mut sent = sent.lock().unwrap();
                        sent.push((Instant::now(), false));
                        sent.len() - 1
                    };
                    // Each publish runs on its own, so one stuck on a
                    // stopped node does not hold back the next.
                    let (backend, sent) = (backend.clone(), sent.clone());
                    tokio::spawn(async move {
                        let event = NewEvent::completion(execution, CompletionOutcome::Success);
                        let meta = EventMeta::new().with_tag("n", n.to_string());
                        if backend.publish(event, meta).await.is_ok() {
                            sent.lock().unwrap()[n].1 = true;
                        }
                    });
                }
            })
        };
        Ok(Self {
            expired,
            stop_publishing,
            stop_receiving,
            sent,
            received,
            publisher,
            receiver,
        })
    }

    /// When the first event sent after `t` arrived.
    fn received_sent_after(&self, t: Instant) -> Option<Instant> {
        let sent = self.sent.lock().unwrap();
        let received = self.received.lock().unwrap();
        received
            .iter()
            .find(|(n, _)| sent.get(*n).is_some_and(|(at, _)| *at >= t))
            .map(|(_, at)| *at)
    }

    /// The longest stretch within `[from, to]` with no arrival.
    fn longest_silence(&self, from: Instant, to: Instant) -> Duration {
        let received = self.received.lock().unwrap();
        let mut arrivals: Vec<Instant> = received
            .iter()
            .map(|(_, at)| *at)
            .filter(|at| (from..=to).contains(at))
            .collect();
        arrivals.sort();
        longest_gap(from, &arrivals, to)
    }

    /// Stop publishing, wait (at most 30 s) until every acknowledged
    /// event arrived, and count those that did not.
    async fn finish(self) -> anyhow::Result<Outcome> {
        self.stop_publishing.store(true, Ordering::Relaxed);
        let _ = self.publisher.await;
        // Publishes still in flight finish within the command timeout.
        let missing = || {
            let sent = self.sent.lock().unwrap();
            let received: HashSet<usize> = self
                .received
                .lock()
                .unwrap()
                .iter()
                .map(|(n, _)| *n)
                .collect();
            (0..sent.len())
                .filter(|n| sent[*n].1 && !received.contains(n))
                .count()
        };
        let _ = admin::wait_for(Duration::from_secs(30), "acknowledged events", || {
            let missing = missing();
            async move { Ok(missing == 0) }
        })
        .await;
        self.stop_receiving.store(true, Ordering::Relaxed);
        match self.receiver.await {
            Ok(Err(e)) => return Err(e.context("the probe's subscription failed")),
            Err(e) => return Err(e.into()),
            Ok(Ok(())) => {}
        }
        Ok(Outcome {
            lost: missing(),
            expired: self.expired.load(Ordering::Relaxed),
        })
    }
}

/// The longest gap between consecutive instants of `from`, `arrivals`
/// (sorted, within the window) and `to`.
fn longest_gap(from: Instant, arrivals: &[Instant], to: Instant) -> Duration {
    let mut longest = Duration::ZERO;
    let mut last = from;
    for &at in arrivals.iter().chain(std::iter::once(&to)) {
        longest = longest.max(at.saturating_duration_since(last));
        last = at;
    }
    longest
}

/// Sockets a process holds per 1,000 subscriptions over P = 64 — the
/// subscription connections (wake-ups and reads) named for this run on
/// every primary, opened by [`SOCKET_SUBSCRIPTIONS`] tail subscriptions,
/// scaled to 1,000 — and the p99 latency from publish to receipt of
/// [`SOCKET_LIVE_EVENTS`] events in every one of them.
async fn sockets(url: &str, prefix: &str) -> anyhow::Result<Vec<Figure>> {
    let name = format!("ffbench-sock-{}", std::process::id());
    let config = ValkeyConfig::default()
        .with_key_prefix(prefix.to_owned())
        .with_client_name(name)
        .with_partitions(SOCKET_PARTITIONS);
    let backend = ValkeyBackend::connect(url, config).await?;
    let sent: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let mut receivers = Vec::new();
    for _ in 0..SOCKET_SUBSCRIPTIONS {
        let mut sub = backend
            .subscribe_family(
                Family::Completion,
                StreamCursor::empty(),
                &SubscriptionFilter::default(),
            )
            .await?;
        match sub.next().await {
            Some(Ok(DeliveryItem::CaughtUp { .. })) => {}
            other => anyhow::bail!("tail subscription began with {other:?}"),
        }
        let sent = sent.clone();
        receivers.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(SOCKET_LIVE_EVENTS);
            while latencies.len() < SOCKET_LIVE_EVENTS {
                match sub.next().await {
                    Some(Ok(DeliveryItem::Event { meta, .. })) => {
                        let at = Instant::now();
                        let n: usize = meta
                            .tags
                            .get("n")
                            .and_then(|n| n.parse().ok())
                            .context("an event without its number")?;
                        let sent_at = sent.lock().unwrap_or_else(|e| e.into_inner())[n];
                        latencies.push(at.saturating_duration_since(sent_at));
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(anyhow::Error::from(e)),
                    None => anyhow::bail!("a live subscription ended"),
                }
            }
            anyhow::Ok((latencies, sub))
        }));
    }
    let sub_name = format!("name={} ", backend.subscription_client_name());
    let read_name = format!("name={}:read ", backend.client_name());
    let count = || async {
        let mut total = 0usize;
        for addr in backend.nodes() {
            let mut conn = admin::node(&backend, &addr).await?;
            let list: String = ff_backend_valkey::redis::cmd("CLIENT")
                .arg("LIST")
                .query_async(&mut conn)
                .await?;
            total += list
                .lines()
                .filter(|l| l.contains(&sub_name) || l.contains(&read_name))
                .count();
        }
        anyhow::Ok(total)
    };
    let mut tick = ticker(SOCKET_LIVE_RATE);
    for n in 0..SOCKET_LIVE_EVENTS {
        tick.tick().await;
        let execution = ExecutionId::new((n % usize::from(SOCKET_PARTITIONS)) as u16);
        sent.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Instant::now());
        backend
            .publish(
                NewEvent::completion(execution, CompletionOutcome::Success),
                EventMeta::new().with_tag("n", n.to_string()),
            )
            .await?;
    }
    let mut latencies = Vec::new();
    let mut subscriptions = Vec::new();
    for receiver in receivers {
        let (mine, sub) = tokio::time::timeout(Duration::from_secs(60), receiver)
            .await
            .context("a live subscription did not receive every event within 60 s")???;
        latencies.extend(mine);
        subscriptions.push(sub);
    }
    // Server-side counts lag the client: take the count once two
    // readings a moment apart agree.
    let mut last = usize::MAX;
    let mut counted = 0;
    for _ in 0..50 {
        counted = count().await?;
        if counted == last {
            break;
        }
        last = counted;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(subscriptions);
    for n in 0..SOCKET_PARTITIONS {
        let key = backend
            .partition_stream_key(Family::Completion, n)
            .to_owned();
        if let Ok(mut conn) = backend.connection_for_key(&key).await {
            let _: ff_backend_valkey::redis::RedisResult<()> = ff_backend_valkey::redis::cmd("DEL")
                .arg(&key)
                .query_async(&mut conn)
                .await;
        }
    }
    let (_, p99) = percentiles_us(latencies);
    Ok(vec![
        Figure::new(
            "sockets_per_1000_subscriptions_p64",
            "sockets",
            counted as f64 * 1000.0 / SOCKET_SUBSCRIPTIONS as f64,
            None,
        ),
        Figure::new(
            "live_p99_ms_1000_subscriptions_p64",
            "ms",
            p99 / 1000.0,
            None,
        ),
    ])
}

/// Publish throughput with `with_replica_acks(1, 1 s)` divided by the
/// same without, [`ACK_PUBLISHERS`] concurrent single publishes each.
async fn replica_acks(url: &str, prefix: &str) -> anyhow::Result<Figure> {
    let plain = ValkeyConfig::default()
        .with_key_prefix(format!("{prefix}plain:"))
        .with_client_name("ff-bench-acks");
    let acked = plain
        .clone()
        .with_key_prefix(format!("{prefix}acked:"))
        .with_replica_acks(1, Duration::from_secs(1));
    let plain = ValkeyBackend::connect(url, plain).await?;
    let acked = ValkeyBackend::connect(url, acked).await?;
    // Alternate, so both see the same machine load.
    let mut rates = [Vec::new(), Vec::new()];
    for _ in 0..3 {
        for (i, backend) in [&plain, &acked].into_iter().enumerate() {
            rates[i].push(publish_rate(backend).await?);
        }
    }
    for backend in [&plain, &acked] {
        for n in 0..backend.partitions() {
            let key = backend
                .partition_stream_key(Family::Completion, n)
                .to_owned();
            if let Ok(mut conn) = backend.connection_for_key(&key).await {
                let _: ff_backend_valkey::redis::RedisResult<()> =
                    ff_backend_valkey::redis::cmd("DEL")
                        .arg(&key)
                        .query_async(&mut conn)
                        .await;
            }
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (plain, acked) = (median(&mut rates[0]), median(&mut rates[1]));
    Ok(Figure::new(
        "publish_with_replica_acks_vs_without",
        "events/s",
        acked,
        Some(plain),
    ))
}

async fn publish_rate(backend: &ValkeyBackend) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..ACK_PUBLISHERS {
        let backend = backend.clone();
        tasks.push(tokio::spawn(async move {
            let execution = ExecutionId::new(p as u16);
            for _ in 0..ACK_EVENTS_EACH {
                backend
                    .publish(
                        NewEvent::completion(execution, CompletionOutcome::Success),
                        EventMeta::new(),
                    )
                    .await?;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(per_sec(ACK_PUBLISHERS * ACK_EVENTS_EACH, started.elapsed()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_gap_counts_the_window_edges() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        assert_eq!(
            longest_gap(t0, &[ms(10), ms(20), ms(400)], ms(450)),
            Duration::from_millis(380)
        );
        assert_eq!(longest_gap(t0, &[], ms(90)), Duration::from_millis(90));
        assert_eq!(
            longest_gap(t0, &[ms(5)], ms(500)),
            Duration::from_millis(495)
        );
    }
}
