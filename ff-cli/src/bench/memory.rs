//! `ff bench --backend memory:`: the embedded backend's throughput and
//! latency through the ff API. There is no client to compare against, so
//! figures carry no raw baseline.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use ff_core::backend::{DeliveryItem, EventPublisher, StreamBackend};
use ff_core::filter::SubscriptionFilter;
use ff_core::stream_events::{CompletionOutcome, EventMeta, Family, NewEvent};
use ff_core::stream_subscribe::StreamCursor;
use ff_core::types::ExecutionId;
use futures::StreamExt;

use super::report::{BenchReport, Figure};
use super::rss::RssSampler;
use crate::backend_url::Opened;

fn draft(i: usize) -> (NewEvent, EventMeta) {
    let outcome = if i % 10 == 0 {
        CompletionOutcome::Failure
    } else {
        CompletionOutcome::Success
    };
    (
        NewEvent::completion(ExecutionId::new((i % 64) as u16), outcome),
        EventMeta::new().with_namespace("bench"),
    )
}

/// Measure publish, catch-up and live latency over `events` events.
pub async fn run(opened: &Opened, events: usize) -> Result<BenchReport> {
    let family = Family::Completion;
    let started = Instant::now();
    for chunk_start in (0..events).step_by(1000) {
        let batch = (chunk_start..events.min(chunk_start + 1000))
            .map(draft)
            .collect();
        opened.publish_batch(batch).await?;
    }
    let publish = events as f64 / started.elapsed().as_secs_f64();

    let sampler = RssSampler::start();
    let started = Instant::now();
    let mut sub = opened
        .subscribe_family(
            family,
            StreamCursor::beginning(),
            &SubscriptionFilter::default(),
        )
        .await?;
    let mut read = 0usize;
    loop {
        match sub.next().await {
            Some(Ok(DeliveryItem::Event { .. })) => read += 1,
            Some(Ok(DeliveryItem::CaughtUp { .. })) => break,
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
            None => bail!("catch-up stream ended early"),
        }
    }
    let catch_up = read as f64 / started.elapsed().as_secs_f64();
    let rss = sampler.stop_mib();
    drop(sub);

    let mut live = opened
        .subscribe_family(
            family,
            StreamCursor::empty(),
            &SubscriptionFilter::default(),
        )
        .await?;
    let mut latencies = Vec::with_capacity(2000);
    for i in 0..2000 {
        let sent = Instant::now();
        let (d, m) = draft(i);
        opened.publish(d, m).await?;
        loop {
            match tokio::time::timeout(Duration::from_secs(5), live.next()).await {
                Ok(Some(Ok(DeliveryItem::Event { .. }))) => break,
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(e))) => return Err(e.into()),
                Ok(None) | Err(_) => bail!("live event {i} not delivered within 5 s"),
            }
        }
        latencies.push(sent.elapsed().as_secs_f64() * 1e6);
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];
    Ok(BenchReport {
        partitions: None,
        nodes: None,
        backend: opened.label().to_owned(),
        figures: vec![
            Figure::new("publish_events_per_sec", "events/s", publish, None),
            Figure::new("catch_up_events_per_sec", "events/s", catch_up, None),
            Figure::new("live_p50_us", "us", pct(0.50), None),
            Figure::new("live_p99_us", "us", pct(0.99), None),
            Figure::new("catch_up_peak_rss_mib", "MiB", rss, None),
        ],
    })
}
