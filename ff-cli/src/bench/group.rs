//! `ff bench group`: what consumer groups cost on a backend — clean and
//! crash hand-over times, redeliveries per crash, a one-member group's
//! throughput beside a plain subscription's over the same stream, and
//! events lost across the churn the bench runs (which must be none).
//!
//! Every phase runs in this one process: a crash is a member aborted
//! without a release (its heartbeats stop; its units move when its lease
//! expires). Each run uses groups and events of its own, tagged with a
//! run name, so other traffic on the backend is not counted.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::Args;
use ff_core::backend::{DeliveryItem, EventPublisher, StreamBackend};
use ff_core::filter::SubscriptionFilter;
use ff_core::group::{
    Commit, GroupConfig, GroupItem, GroupMember, GroupSpec, GroupStore, GroupView,
};
use ff_core::stream_events::Family;
use ff_core::stream_subscribe::StreamCursor;
use futures::StreamExt;
use tokio::time::Instant;

use super::group_crowd::{draft, n_of, Crowd, Producer, Stop};
use super::measure::{per_sec, percentiles_us};
use super::report::{BenchReport, Figure};
use crate::backend_url::{self, Opened};

const FAMILY: Family = Family::Completion;
/// Interval between the producer's batches (one event per unit each).
const PRODUCE_EVERY: Duration = Duration::from_millis(10);
/// Events of the throughput phase committed between two commits of each
/// unit's latest handle.
const COMMIT_EVERY: usize = 1000;

/// `ff bench group` options.
#[derive(Args, Debug, Clone)]
pub struct GroupBenchArgs {
    /// Backend URL: memory:, valkey://host:port[/db] (?partitions=P), postgres://...
    #[arg(long, env = "FF_BACKEND", default_value = "memory:")]
    pub backend: String,
    /// The members' lease in seconds (1..=3600); shorter than the 10 s
    /// default so the crash rounds stay quick.
    #[arg(long, value_name = "SECS", default_value = "2", value_parser = crate::group_tail::parse_lease)]
    pub lease: Duration,
    /// Units of each group (1..=256).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub units: u32,
    /// Clean hand-overs to time (a member joining, then leaving, two each round).
    #[arg(long, default_value_t = 20)]
    pub handovers: usize,
    /// Member crashes to time.
    #[arg(long, default_value_t = 5)]
    pub crashes: usize,
    /// Events the throughput phase reads through a plain subscription and
    /// through a one-member group.
    #[arg(long, default_value_t = 20_000)]
    pub events: usize,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Run every phase and report the figures.
pub async fn run(args: &GroupBenchArgs) -> Result<BenchReport> {
    let opened = backend_url::open(&args.backend).await?;
    let config = GroupConfig::with_lease(args.lease);
    config.validate()?;
    eprintln!(
        "ff bench group: lease {} ms, heartbeat {} ms, margin {} ms, drain {} ms, {} units, \
         {} clean hand-overs, {} crashes, {} events for throughput, \
         one event per unit published every {} ms",
        config.lease.as_millis(),
        config.heartbeat.as_millis(),
        config.margin.as_millis(),
        config.drain.as_millis(),
        args.units,
        args.handovers,
        args.crashes,
        args.events,
        PRODUCE_EVERY.as_millis()
    );
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let run = format!("bench-group-{}-{stamp}", std::process::id());
    let result = phases(&opened, &config, args, &run).await;
    opened.close().await;
    let figures = result?;
    Ok(BenchReport {
        backend: opened.label().to_string(),
        partitions: None,
        nodes: None,
        figures,
    })
}

async fn phases(
    opened: &Opened,
    config: &GroupConfig,
    args: &GroupBenchArgs,
    run: &str,
) -> Result<Vec<Figure>> {
    let (group_rate, plain_rate) = throughput(
        opened,
        config,
        args.units,
        args.events,
        &format!("{run}-tp"),
    )
    .await
    .context("the throughput phase")?;
    let churn = churn(opened, config, args, run)
        .await
        .context("the hand-over phases")?;
    let (p50, p99) = percentiles_us(churn.clean);
    Ok(vec![
        Figure::new("group_handover_clean_p50_ms", "ms", p50 / 1e3, None),
        Figure::new("group_handover_clean_p99_ms", "ms", p99 / 1e3, None),
        Figure::new(
            "group_redelivered_per_handover",
            "events",
            churn.clean_repeats as f64 / args.handovers.max(1) as f64,
            None,
        ),
        Figure::new(
            "group_handover_crash_s",
            "s",
            churn
                .crash
                .iter()
                .max()
                .map_or(f64::NAN, |d| d.as_secs_f64()),
            None,
        ),
        Figure::new(
            "group_redelivered_per_crash",
            "events",
            churn.crash_repeats as f64 / args.crashes.max(1) as f64,
            None,
        ),
        Figure::new(
            "group_throughput_vs_subscription",
            "events/s",
            group_rate,
            Some(plain_rate),
        ),
        Figure::new("group_lost", "events", churn.lost as f64, None),
    ])
}

/// A deadline for one wait of the bench: generous beside any lease.
fn deadline(config: &GroupConfig) -> Instant {
    Instant::now() + config.lease * 3 + Duration::from_secs(60)
}

/// Publish `events` events, then read them through a plain subscription
/// and through a one-member group from the same cursor; answer both
/// rates (group, plain) in events/s.
async fn throughput(
    opened: &Opened,
    config: &GroupConfig,
    units: u32,
    events: usize,
    run: &str,
) -> Result<(f64, f64)> {
    let start = opened.resolve_cursor(FAMILY, StreamCursor::empty()).await?;
    for from in (0..events).step_by(1000) {
        let batch = (from..events.min(from + 1000))
            .map(|n| draft(run, n as u64, n as u32 % units))
            .collect();
        opened.publish_batch(batch).await?;
    }
    let plain = plain_rate(opened.as_ref(), &start, events, run, deadline(config)).await?;
    let spec = GroupSpec::new(run, FAMILY, units)?;
    let until = deadline(config);
    let started = Instant::now();
    let mut member = GroupMember::join_from(
        opened.clone(),
        spec,
        "bench-throughput",
        config.clone(),
        start,
    )
    .await?;
    let mut seen = 0usize;
    let mut latest: HashMap<u32, Commit> = HashMap::new();
    while seen < events {
        let item = match tokio::time::timeout_at(until, member.next()).await {
            Ok(Some(item)) => item,
            Ok(None) => bail!("the group member's stream ended after {seen} events"),
            Err(_) => bail!("the group member delivered {seen} of {events} events in time"),
        };
        match item {
            GroupItem::Event {
                unit, meta, commit, ..
            } if n_of(&meta, run).is_some() => {
                seen += 1;
                latest.insert(unit, commit);
                if seen % COMMIT_EVERY == 0 {
                    commit_all(&mut latest).await?;
                }
            }
            GroupItem::Lost { unit, reason } => bail!("the only member lost unit {unit}: {reason}"),
            _ => {}
        }
    }
    commit_all(&mut latest).await?;
    let group = per_sec(seen, started.elapsed());
    member.leave().await?;
    Ok((group, plain))
}

async fn commit_all(latest: &mut HashMap<u32, Commit>) -> Result<()> {
    for (_, commit) in latest.drain() {
        commit.commit().await?;
    }
    Ok(())
}

/// A plain subscription's rate over the `events` events of `run` after `start`.
async fn plain_rate(
    backend: &dyn StreamBackend,
    start: &StreamCursor,
    events: usize,
    run: &str,
    until: Instant,
) -> Result<f64> {
    let started = Instant::now();
    let mut sub = backend
        .subscribe_family(FAMILY, start.clone(), &SubscriptionFilter::default())
        .await?;
    let mut seen = 0usize;
    while seen < events {
        match tokio::time::timeout_at(until, sub.next()).await {
            Ok(Some(Ok(DeliveryItem::Event { meta, .. }))) => {
                if n_of(&meta, run).is_some() {
                    seen += 1;
                }
            }
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => return Err(e.into()),
            Ok(None) => bail!("the plain subscription ended after {seen} events"),
            Err(_) => bail!("the plain subscription delivered {seen} of {events} events in time"),
        }
    }
    Ok(per_sec(seen, started.elapsed()))
}

/// What the churn phases measured.
struct Churn {
    clean: Vec<Duration>,
    clean_repeats: u64,
    crash: Vec<Duration>,
    crash_repeats: u64,
    lost: u64,
}

/// One member stays; another joins and leaves (clean hand-overs), then
/// joins and crashes (crash hand-overs), while a producer publishes to
/// every unit; at the end every published event must have been handled.
async fn churn(
    opened: &Opened,
    config: &GroupConfig,
    args: &GroupBenchArgs,
    run: &str,
) -> Result<Churn> {
    let store = opened.group_store()?;
    let spec = GroupSpec::new(run, FAMILY, args.units)?;
    let all: BTreeSet<u32> = (0..args.units).collect();
    let mut crowd = Crowd::new(opened.clone(), spec, config.clone(), run);
    let (stay, _) = crowd.join().await?;
    converged(store.as_ref(), run, 1, deadline(config)).await?;
    let producer = Producer::start(opened.clone(), run, args.units, PRODUCE_EVERY);
    crowd
        .wait_delivering(stay, &all, Instant::now(), deadline(config))
        .await?;

    let mut clean = Vec::new();
    while clean.len() < args.handovers {
        let joined_at = Instant::now();
        let (other, moved) = join_other(&mut crowd, store.as_ref(), run, config).await?;
        clean.push(
            crowd
                .wait_delivering(other, &moved, joined_at, deadline(config))
                .await?,
        );
        if clean.len() == args.handovers {
            crowd.stop(other, Stop::Leave).await;
            break;
        }
        let left_at = Instant::now();
        crowd.stop(other, Stop::Leave).await;
        clean.push(
            crowd
                .wait_delivering(stay, &moved, left_at, deadline(config))
                .await?,
        );
    }
    crowd
        .wait_delivering(stay, &all, Instant::now(), deadline(config))
        .await?;
    crowd.drain();
    let clean_repeats = crowd.repeats();

    let mut crash = Vec::new();
    for _ in 0..args.crashes {
        let (other, moved) = join_other(&mut crowd, store.as_ref(), run, config).await?;
        crowd
            .wait_delivering(other, &moved, Instant::now(), deadline(config))
            .await?;
        let crashed_at = Instant::now();
        crowd.stop(other, Stop::Crash).await;
        crash.push(
            crowd
                .wait_delivering(stay, &moved, crashed_at, deadline(config))
                .await?,
        );
    }
    let published = producer.stop().await?;
    let lost = crowd.wait_all_handled(published, deadline(config)).await;
    let crash_repeats = crowd.repeats() - clean_repeats;
    crowd.stop(stay, Stop::Leave).await;
    Ok(Churn {
        clean,
        clean_repeats,
        crash,
        crash_repeats,
        lost,
    })
}

/// Join a second member and wait until the group settled on both; answer
/// its index and the units it took.
async fn join_other(
    crowd: &mut Crowd,
    store: &dyn GroupStore,
    group: &str,
    config: &GroupConfig,
) -> Result<(usize, BTreeSet<u32>)> {
    let (index, session) = crowd.join().await?;
    let view = converged(store, group, 2, deadline(config)).await?;
    let moved: BTreeSet<u32> = view
        .unit_states
        .iter()
        .filter(|u| u.owner.as_deref() == Some(session.as_str()))
        .map(|u| u.unit)
        .collect();
    if moved.is_empty() {
        bail!("the joining member took no unit: {view:?}");
    }
    Ok((index, moved))
}

/// Wait until `members` members are live and every unit is held by the
/// one the assignment names.
async fn converged(
    store: &dyn GroupStore,
    group: &str,
    members: usize,
    until: Instant,
) -> Result<GroupView> {
    loop {
        let view = store.view(group).await?;
        if view.settled(members) {
            return Ok(view);
        }
        if Instant::now() > until {
            bail!("group {group:?} did not settle on {members} members in time: {view:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
