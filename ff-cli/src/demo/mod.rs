//! `ff demo`: a realistic mixed workload over all four families, consumed
//! by checkpointing consumers that are interrupted and resumed, with a
//! report proving nothing was lost, repeated or reordered.

mod consumer;
mod workload;

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use ff_core::backend::{CursorStore, DeliveryItem, EventPublisher, StreamBackend};
use ff_core::filter::SubscriptionFilter;
use ff_core::stream_events::{CompletionKind, EventKind, Family};
use ff_core::stream_subscribe::StreamCursor;
use futures::StreamExt;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::backend_url::Opened;
use workload::RUN_TAG;

/// `ff demo` options.
#[derive(Args, Debug, Clone)]
pub struct DemoArgs {
    /// Backend URL: memory:, valkey://host:port[/db] (several seeds: valkey://a:1,b:2; any nodes of a cluster, the first that answers used; ?partitions=P splits each family; valkeys://…?ca_cert=PATH for TLS), postgres://...
    #[arg(long, default_value = "memory:")]
    pub backend: String,
    /// How many events to publish (at least).
    #[arg(long, default_value_t = 100_000)]
    pub events: usize,
    /// Events per publish batch.
    #[arg(long, default_value_t = 256)]
    pub batch: usize,
    /// Seed for the workload generator.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// One consumer's line of the report.
#[derive(Debug, Serialize)]
pub struct ConsumerReport {
    /// Family consumed.
    family: Family,
    /// The consumer's filter, in words.
    filter: String,
    /// Events published that the filter admits.
    published: u64,
    /// Events applied (effects that stuck).
    delivered: u64,
    lost: u64,
    duplicated: u64,
    out_of_order: u64,
    /// Events delivered that the filter should not have admitted.
    unexpected: u64,
    /// Events whose content or metadata differ from what was published.
    mismatched: u64,
    restarts: u32,
    /// Uncommitted events lost in the crash and delivered again on resume.
    replayed: u64,
}

impl ConsumerReport {
    fn new(family: Family, filter: &str, run: &consumer::ConsumerRun) -> Self {
        let t = &run.tally;
        Self {
            family,
            filter: filter.to_owned(),
            published: run.expected,
            delivered: t.delivered,
            lost: run.expected - t.distinct,
            duplicated: t.duplicated,
            out_of_order: t.out_of_order,
            unexpected: t.unexpected,
            mismatched: t.mismatched,
            restarts: run.restarts,
            replayed: run.replayed,
        }
    }

    fn clean(&self) -> bool {
        self.lost + self.duplicated + self.out_of_order + self.unexpected + self.mismatched == 0
    }
}

/// The whole report.
#[derive(Debug, Serialize)]
pub struct DemoReport {
    backend: String,
    /// Partitions per family: order is checked within each.
    partitions: u16,
    published: u64,
    delivered: u64,
    lost: u64,
    duplicated: u64,
    out_of_order: u64,
    mismatched: u64,
    events_per_sec: f64,
    publish_events_per_sec: f64,
    elapsed_ms: u128,
    families: Vec<ConsumerReport>,
    filtered_consumer: ConsumerReport,
}

impl DemoReport {
    fn ok(&self) -> bool {
        self.families.iter().all(ConsumerReport::clean) && self.filtered_consumer.clean()
    }

    fn print(&self) {
        println!("ff demo on {}", self.backend);
        println!(
            "{:<16} {:>10} {:>10} {:>6} {:>10} {:>12} {:>10} {:>9} {:>8}",
            "family",
            "published",
            "delivered",
            "lost",
            "duplicated",
            "out_of_order",
            "mismatched",
            "restarts",
            "replayed"
        );
        let line = |name: &str, c: &ConsumerReport| {
            println!(
                "{:<16} {:>10} {:>10} {:>6} {:>10} {:>12} {:>10} {:>9} {:>8}",
                name,
                c.published,
                c.delivered,
                c.lost,
                c.duplicated,
                c.out_of_order,
                c.mismatched,
                c.restarts,
                c.replayed
            );
        };
        for f in &self.families {
            line(f.family.as_str(), f);
        }
        println!(
            "{:<16} {:>10} {:>10} {:>6} {:>10} {:>12} {:>10}",
            "total",
            self.published,
            self.delivered,
            self.lost,
            self.duplicated,
            self.out_of_order,
            self.mismatched
        );
        let f = &self.filtered_consumer;
        println!(
            "filtered consumer ({}): published {}, delivered {}, lost {}, duplicated {}, out of order {}, unexpected {}, restarts {}",
            f.filter, f.published, f.delivered, f.lost, f.duplicated, f.out_of_order, f.unexpected, f.restarts
        );
        println!(
            "{:.0} events/s end to end ({:.0} events/s published) in {:.2} s",
            self.events_per_sec,
            self.publish_events_per_sec,
            self.elapsed_ms as f64 / 1000.0
        );
        println!(
            "{}",
            match (self.ok(), self.partitions) {
                (true, 1) => "OK: every event delivered exactly once, in order, intact, across consumer restarts".to_owned(),
                (true, p) => format!("OK: every event delivered exactly once, in order within each of the {p} partitions, intact, across consumer restarts"),
                (false, _) => "FAILED: see the counts above".to_owned(),
            }
        );
    }
}

fn bar(multi: &MultiProgress, len: u64, label: &str) -> ProgressBar {
    let pb = multi.add(ProgressBar::new(len));
    pb.set_style(
        ProgressStyle::with_template("{prefix:>16} [{bar:30}] {pos}/{len} {per_sec}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb.set_prefix(label.to_owned());
    pb
}

/// Wait for a subscription's `CaughtUp` and return its cursor: the start
/// position resolved before anything is published.
async fn resolve_tail(
    opened: &Opened,
    family: Family,
    filter: &SubscriptionFilter,
) -> Result<StreamCursor> {
    let mut s = opened
        .subscribe_family(family, StreamCursor::empty(), filter)
        .await?;
    loop {
        match tokio::time::timeout(Duration::from_secs(30), s.next()).await {
            Ok(Some(Ok(DeliveryItem::CaughtUp { cursor }))) => return Ok(cursor),
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => return Err(e.into()),
            Ok(None) => bail!("subscription ended before CaughtUp"),
            Err(_) => bail!("no CaughtUp within 30 s"),
        }
    }
}

/// Run the demo and print its report; fails when anything was lost,
/// duplicated or reordered.
pub async fn run(args: DemoArgs, opened: Opened) -> Result<()> {
    let run_id = format!("{:016x}", rand::random::<u64>());
    let plan = workload::generate(args.events.max(1), &run_id, args.seed);
    let multi = MultiProgress::with_draw_target(if args.json {
        ProgressDrawTarget::hidden()
    } else {
        ProgressDrawTarget::stderr()
    });
    let run_filter = SubscriptionFilter::new().with_tag(RUN_TAG, run_id.clone());
    let failures = run_filter
        .clone()
        .with_namespace("billing")
        .with_kinds([EventKind::Completion(CompletionKind::Failure)]);
    let by_family = plan.by_family();

    let mut consumers = Vec::new();
    for family in Family::ALL.iter().copied() {
        let events = by_family[family.index()].clone();
        let consumer_plan = consumer::Plan {
            wanted: vec![true; events.len()],
            events,
            partitions: opened.partitions(),
        };
        let expected = consumer_plan.wanted.len() as u64;
        let name = format!("demo-{run_id}-{family}");
        let start = resolve_tail(&opened, family, &run_filter).await?;
        opened.store(&name, &start).await?;
        let pb = bar(&multi, expected, family.as_str());
        consumers.push(tokio::spawn(consumer::run(
            opened.clone(),
            opened.clone(),
            name,
            family,
            run_filter.clone(),
            consumer_plan,
            expected / 2,
            pb,
        )));
    }
    let completions = by_family[Family::Completion.index()].clone();
    let failures_plan = consumer::Plan {
        wanted: completions
            .iter()
            .map(|(d, m)| failures.matches_parts(d.kind(), d.execution_id(), m))
            .collect(),
        events: completions,
        partitions: opened.partitions(),
    };
    let failures_start = resolve_tail(&opened, Family::Completion, &failures).await?;
    let failures_name = format!("demo-{run_id}-billing-failures");
    opened.store(&failures_name, &failures_start).await?;
    let filtered = tokio::spawn(consumer::run(
        opened.clone(),
        opened.clone(),
        failures_name,
        Family::Completion,
        failures.clone(),
        failures_plan,
        plan.billing_failures / 2,
        ProgressBar::hidden(),
    ));

    let started = Instant::now();
    let publish_bar = bar(&multi, plan.events.len() as u64, "published");
    for chunk in plan.events.chunks(args.batch.max(1)) {
        opened
            .publish_batch(chunk.to_vec())
            .await
            .context("publishing the workload")?;
        publish_bar.inc(chunk.len() as u64);
    }
    let publish_secs = started.elapsed().as_secs_f64();
    publish_bar.finish();

    let mut families = Vec::new();
    let mut finished = started;
    for (family, handle) in Family::ALL.iter().copied().zip(consumers) {
        let run = handle.await.context("consumer task")??;
        finished = finished.max(run.completed_at.unwrap_or_else(Instant::now));
        families.push(ConsumerReport::new(family, "this run's events", &run));
    }
    let elapsed = finished - started;
    let filtered_run = filtered.await.context("filtered consumer task")??;
    multi.clear().ok();

    let sum = |f: fn(&ConsumerReport) -> u64| families.iter().map(f).sum::<u64>();
    let report = DemoReport {
        backend: opened.label().to_owned(),
        partitions: opened.partitions(),
        published: sum(|f| f.published),
        delivered: sum(|f| f.delivered),
        lost: sum(|f| f.lost),
        duplicated: sum(|f| f.duplicated),
        out_of_order: sum(|f| f.out_of_order),
        mismatched: sum(|f| f.mismatched),
        events_per_sec: sum(|f| f.delivered) as f64 / elapsed.as_secs_f64(),
        publish_events_per_sec: plan.events.len() as f64 / publish_secs,
        elapsed_ms: elapsed.as_millis(),
        families,
        filtered_consumer: ConsumerReport::new(
            Family::Completion,
            "namespace=billing, kinds=failure",
            &filtered_run,
        ),
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        report.print();
    }
    if !report.ok() {
        bail!("the demo found lost, duplicated, reordered or altered events");
    }
    Ok(())
}
