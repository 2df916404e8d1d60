//! `ff bench --operations` on a Valkey Cluster: what everyday operations
//! cost a live subscription. Opt-in, because it disturbs the cluster it is
//! given; expects primaries with a replica each and `enable-debug-command
//! yes` (or `local`).
//!
//! - `dead_node_detect_s`: the primary a live subscription reads is made
//!   unresponsive with `DEBUG SLEEP` (a black hole: its kernel still
//!   accepts connections); the figure is the time from the sleep's start
//!   until the subscription delivers an event published once the node no
//!   longer answered a `PING`, which only the replica the cluster promotes
//!   (or the node, once awake) can store. Events are published every [`PUBLISH_EVERY`] meanwhile, each
//!   once.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use ff_backend_valkey::redis;
use ff_backend_valkey::{ValkeyBackend, ValkeyConfig};
use ff_core::backend::{DeliveryItem, EventPublisher, StreamBackend};
use ff_core::stream_events::{CompletionOutcome, EventMeta, Family, NewEvent};
use ff_core::stream_subscribe::StreamCursor;
use ff_core::types::ExecutionId;
use futures::StreamExt;
use tokio::sync::mpsc;

use super::report::Figure;

/// How long the primary is put to sleep: longer than a failover takes
/// with the bench's node timeout (5 s).
const SLEEP_SECS: u64 = 30;
/// The longest the measurement waits for the subscription to deliver.
const GIVE_UP: Duration = Duration::from_secs(90);
/// A node that does not answer a `PING` within this is asleep.
const ASLEEP_AFTER: Duration = Duration::from_millis(300);
/// Publish pace during the measurement.
const PUBLISH_EVERY: Duration = Duration::from_millis(20);

/// The operations figures for the cluster `url`, under a fresh key
/// prefix whose keys are deleted afterwards.
pub async fn run(url: &str) -> anyhow::Result<Vec<Figure>> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let prefix = format!("ffbench:{}:{stamp}:ops:", std::process::id());
    let config = ValkeyConfig::default()
        .with_key_prefix(prefix.clone())
        .with_client_name("ff-bench");
    let subscriber = ValkeyBackend::connect(url, config.clone()).await?;
    if !subscriber.is_cluster() {
        bail!("--operations needs a Valkey Cluster URL (primaries with a replica each)");
    }
    // Publishes to the sleeping node fail after a second, not thirty.
    let publisher = ValkeyBackend::connect(
        url,
        config.with_timeouts(Duration::from_secs(1), Duration::from_secs(1)),
    )
    .await?;
    let result = dead_node_detect(&subscriber, &publisher).await;
    let key = subscriber.stream_key(Family::Completion).to_owned();
    if let Ok(mut conn) = subscriber.connection_for_key(&key).await {
        let _: redis::RedisResult<()> = redis::cmd("DEL").arg(&key).query_async(&mut conn).await;
    }
    Ok(vec![result?])
}

fn event(n: u64) -> (NewEvent, EventMeta) {
    (
        NewEvent::completion(ExecutionId::new(0), CompletionOutcome::Success),
        EventMeta::new()
            .with_namespace("bench")
            .with_tag("n", n.to_string()),
    )
}

async fn dead_node_detect(
    subscriber: &ValkeyBackend,
    publisher: &ValkeyBackend,
) -> anyhow::Result<Figure> {
    let key = subscriber.stream_key(Family::Completion).to_owned();
    let node = subscriber
        .node_for_key(&key)
        .context("no node serves the bench's stream")?;
    let mut sleeper = subscriber.connection_to_node(&node).await?;
    let allowed: redis::RedisResult<()> = redis::cmd("DEBUG")
        .arg("SLEEP")
        .arg(0)
        .query_async(&mut sleeper)
        .await;
    if let Err(e) = allowed {
        bail!("DEBUG SLEEP on {node} was refused ({e}); start the cluster with enable-debug-command yes");
    }
    let mut sub = subscriber
        .subscribe_family(
            Family::Completion,
            StreamCursor::empty(),
            &Default::default(),
        )
        .await?;
    let (tx, mut delivered) = mpsc::unbounded_channel::<anyhow::Result<u64>>();
    tokio::spawn(async move {
        while let Some(item) = sub.next().await {
            let sent = match item {
                Ok(DeliveryItem::Event { meta, .. }) => {
                    tx.send(Ok(meta.tags["n"].parse().unwrap_or(0)))
                }
                Ok(_) => continue,
                Err(e) => tx.send(Err(e.into())),
            };
            if sent.is_err() {
                return;
            }
        }
    });
    // The subscription delivers, hence waits on the node, before it sleeps.
    let (e, meta) = event(0);
    publisher.publish(e, meta).await?;
    wait_for(&mut delivered, 0, Instant::now() + GIVE_UP).await?;

    let next = Arc::new(AtomicU64::new(1));
    let stop = Arc::new(AtomicBool::new(false));
    let publishing = {
        let (publisher, next, stop) = (publisher.clone(), next.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let (e, meta) = event(next.fetch_add(1, Ordering::Relaxed));
                let _ = publisher.publish(e, meta).await;
                tokio::time::sleep(PUBLISH_EVERY).await;
            }
        })
    };
    eprintln!("bench: DEBUG SLEEP {SLEEP_SECS} on {node}, the primary a live subscription reads");
    let started = Instant::now();
    tokio::spawn(async move {
        let _: redis::RedisResult<()> = redis::cmd("DEBUG")
            .arg("SLEEP")
            .arg(SLEEP_SECS)
            .query_async(&mut sleeper)
            .await;
    });
    // Only events published once the node is asleep count: it stores none
    // of them until it wakes.
    let asleep = async {
        loop {
            let ping = async {
                let mut conn = subscriber.connection_to_node(&node).await.ok()?;
                redis::cmd("PING")
                    .query_async::<String>(&mut conn)
                    .await
                    .ok()
            };
            if tokio::time::timeout(ASLEEP_AFTER, ping).await.is_err() {
                return;
            }
        }
    };
    if tokio::time::timeout(GIVE_UP, asleep).await.is_err() {
        stop.store(true, Ordering::Relaxed);
        bail!("{node} kept answering PING after DEBUG SLEEP {SLEEP_SECS}");
    }
    let after = next.load(Ordering::Relaxed);
    let result = wait_for(&mut delivered, after, started + GIVE_UP).await;
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let _ = publishing.await;
    result?;
    Ok(Figure::new(
        "dead_node_detect_s",
        "s",
        elapsed.as_secs_f64(),
        None,
    ))
}

/// Wait until `delivered` yields an event numbered `at_least` or more.
async fn wait_for(
    delivered: &mut mpsc::UnboundedReceiver<anyhow::Result<u64>>,
    at_least: u64,
    deadline: Instant,
) -> anyhow::Result<()> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, delivered.recv()).await {
            Ok(Some(Ok(n))) if n >= at_least => return Ok(()),
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => return Err(e.context("the live subscription failed")),
            Ok(None) => bail!("the live subscription ended"),
            Err(_) => bail!(
                "the live subscription delivered no event numbered {at_least} or more within {GIVE_UP:?}"
            ),
        }
    }
}
