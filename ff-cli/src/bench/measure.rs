//! Measuring helpers shared by the backend benchmarks: rates, latency
//! percentiles, a steady ticker, and the ff side of catch-up and live
//! measurements (identical for every backend, since they go through the
//! `StreamBackend` trait).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::bail;
use ff_core::backend::{DeliveryItem, StreamBackend};
use ff_core::filter::SubscriptionFilter;
use ff_core::stream_events::{EventMeta, Family};
use ff_core::stream_subscribe::StreamCursor;
use futures::StreamExt;
use tokio::task::JoinHandle;

use super::rss::RssSampler;

/// Events per second for `n` events in `elapsed`.
pub fn per_sec(n: usize, elapsed: Duration) -> f64 {
    n as f64 / elapsed.as_secs_f64()
}

/// The p50 and p99 of `samples`, in microseconds (nearest-rank).
pub fn percentiles_us(mut samples: Vec<Duration>) -> (f64, f64) {
    if samples.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[i].as_secs_f64() * 1e6
    };
    (at(0.50), at(0.99))
}

/// A ticker firing `rate` times a second that skips missed ticks, so a
/// stall does not turn into a burst.
pub fn ticker(rate: u64) -> tokio::time::Interval {
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    tick
}

/// Latency of each sample `n` from `sent[n]` to its receipt (a receipt that
/// beat the send timestamp counts as zero; a lost one is left out).
pub fn latencies(sent: &[Instant], received: &HashMap<usize, Instant>) -> Vec<Duration> {
    (0..sent.len())
        .filter_map(|n| Some(received.get(&n)?.saturating_duration_since(sent[n])))
        .collect()
}

/// An ff subscription of `family` from the beginning until `CaughtUp`:
/// events/s and the process's peak RSS meanwhile. Fails unless exactly
/// `events` events were delivered.
pub async fn ff_catch_up(
    backend: &dyn StreamBackend,
    family: Family,
    events: usize,
) -> anyhow::Result<(f64, f64)> {
    let rss = RssSampler::start();
    let started = Instant::now();
    let mut sub = backend
        .subscribe_family(
            family,
            StreamCursor::beginning(),
            &SubscriptionFilter::default(),
        )
        .await?;
    let mut seen = 0usize;
    while let Some(item) = sub.next().await {
        match item? {
            DeliveryItem::Event { event, meta } => {
                seen += 1;
                std::hint::black_box((&event, &meta));
            }
            DeliveryItem::CaughtUp { .. } => break,
            _ => {}
        }
    }
    let rate = per_sec(seen, started.elapsed());
    if seen != events {
        bail!("ff catch-up delivered {seen} events, expected {events}");
    }
    Ok((rate, rss.stop_mib()))
}

/// Subscribe to `family` at the tail, wait for `CaughtUp`, then collect in
/// a task the receipt time of `samples` events, each numbered by
/// `sample_of(meta)` (events it maps to `None` are not samples).
pub async fn ff_live_receiver(
    backend: &dyn StreamBackend,
    family: Family,
    samples: usize,
    sample_of: fn(&EventMeta) -> Option<usize>,
) -> anyhow::Result<JoinHandle<anyhow::Result<HashMap<usize, Instant>>>> {
    let mut sub = backend
        .subscribe_family(
            family,
            StreamCursor::empty(),
            &SubscriptionFilter::default(),
        )
        .await?;
    match sub.next().await {
        Some(Ok(DeliveryItem::CaughtUp { .. })) => {}
        other => bail!("tail subscription began with {other:?}"),
    }
    Ok(tokio::spawn(async move {
        let mut received = HashMap::with_capacity(samples);
        while received.len() < samples {
            match sub.next().await {
                Some(Ok(DeliveryItem::Event { meta, .. })) => {
                    if let Some(n) = sample_of(&meta) {
                        received.insert(n, Instant::now());
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => bail!("the live subscription ended"),
            }
        }
        Ok(received)
    }))
}

/// Wait (at most 30 s) for a receiver task's samples.
pub async fn collect(
    what: &str,
    receiver: JoinHandle<anyhow::Result<HashMap<usize, Instant>>>,
) -> anyhow::Result<HashMap<usize, Instant>> {
    match tokio::time::timeout(Duration::from_secs(30), receiver).await {
        Ok(joined) => joined?,
        Err(_) => bail!("{what} receiver timed out"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let samples = (1..=100).map(Duration::from_micros).collect();
        assert_eq!(percentiles_us(samples), (50.0, 99.0));
        assert_eq!(percentiles_us(vec![Duration::from_micros(7)]), (7.0, 7.0));
        assert!(percentiles_us(Vec::new()).0.is_nan());
    }

    #[test]
    fn latencies_skip_lost_samples_and_clamp_early_receipts() {
        let t0 = Instant::now();
        let sent = vec![t0, t0 + Duration::from_millis(5), t0];
        let received = HashMap::from([(0, t0 + Duration::from_millis(2)), (1, t0)]);
        assert_eq!(
            latencies(&sent, &received),
            vec![Duration::from_millis(2), Duration::ZERO]
        );
    }
}
