//! `ff bench sse`: N concurrent SSE clients tail one family through a real
//! `ff serve` process while events are published at a steady rate.
//! Measures delivery rate, publish→client latency, the backend
//! subscriptions the server holds, and the server's memory.

use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::Args;
use memchr::memmem;
use tokio::process::{Child, Command};
use tokio::sync::watch;

use super::http_client::{get_text, post_json, SseReader};
use super::report::{BenchReport, Figure};

const SENT_TAG: &str = "bench-sent-us";

/// `ff bench sse` options.
#[derive(Args, Debug, Clone)]
pub struct SseBenchArgs {
    /// Backend the spawned `ff serve` uses.
    #[arg(long, default_value = "memory:")]
    pub backend: String,
    /// Concurrent SSE clients.
    #[arg(long, default_value_t = 1000)]
    pub clients: usize,
    /// Events published per second.
    #[arg(long, default_value = "100", value_parser = crate::duration_arg::parse_rate)]
    pub rate: f64,
    /// Seconds to publish for.
    #[arg(long, default_value = "10", value_parser = crate::duration_arg::parse_secs)]
    pub seconds: Duration,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Clients in the reconnect storm (0 skips it).
    #[arg(long, default_value_t = 1000)]
    pub storm_clients: usize,
    /// Events the storm's clients resume within.
    #[arg(long, default_value_t = 10_000)]
    pub storm_events: usize,
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

pub(super) fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

pub(super) async fn spawn_server(backend: &str, port: u16) -> Result<Child> {
    let exe = std::env::current_exe().context("locating the ff binary")?;
    // The backend URL travels in the environment, not the command line,
    // where `ps` would show its password.
    let child = Command::new(exe)
        .env("FF_BACKEND", backend)
        .args(["serve", "--no-auth"])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting ff serve")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while get_text(port, "/healthz").await.is_err() {
        if Instant::now() > deadline {
            bail!("ff serve did not come up within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(child)
}

/// Latencies (µs) one client observed, until `stop` turns true.
async fn client(
    port: u16,
    path: String,
    ready: Arc<AtomicUsize>,
    mut stop: watch::Receiver<bool>,
) -> Result<Vec<u32>> {
    let (mut reader, first) = SseReader::open(port, &path).await?;
    ready.fetch_add(1, Ordering::Relaxed);
    let mut latencies = Vec::new();
    let mut text = first;
    let needle = format!("\"{SENT_TAG}\":\"");
    let needle = memmem::Finder::new(needle.as_bytes());
    loop {
        let consumed = tagged_numbers(&text, &needle, |sent| {
            latencies.push(now_us().saturating_sub(sent).min(u32::MAX as u64) as u32);
        });
        text.drain(..consumed);
        tokio::select! {
            chunk = reader.next_chunk() => {
                let chunk = chunk?;
                if chunk.is_empty() {
                    return Ok(latencies);
                }
                text.extend_from_slice(&chunk);
            }
            _ = stop.changed() => return Ok(latencies),
        }
    }
}

/// Calls `each` with every complete SSE message in `text` (without its
/// blank-line end); returns how many bytes those messages took.
pub(super) fn complete_messages(text: &[u8], mut each: impl FnMut(&[u8])) -> usize {
    let mut start = 0;
    while let Some(end) = memmem::find(&text[start..], b"\n\n") {
        each(&text[start..start + end]);
        start += end + 2;
    }
    start
}

/// The decimal number right after `needle` in `message`, if there is one.
pub(super) fn number_after(message: &[u8], needle: &memmem::Finder<'_>) -> Option<u64> {
    let digits = &message[needle.find(message)? + needle.needle().len()..];
    let n = digits.iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&digits[..n]).ok()?.parse().ok()
}

/// Calls `each` with the number after `needle` in every complete SSE
/// message in `text` that carries one; returns how many bytes those
/// messages took.
pub(super) fn tagged_numbers(
    text: &[u8],
    needle: &memmem::Finder<'_>,
    mut each: impl FnMut(u64),
) -> usize {
    complete_messages(text, |message| {
        if let Some(n) = number_after(message, needle) {
            each(n);
        }
    })
}

pub(super) fn rss_of(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn backend_subscriptions(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("ff_http_backend_subscriptions{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[i])
}

/// Run the SSE benchmark.
pub async fn run(args: &SseBenchArgs) -> Result<BenchReport> {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let port = free_port()?;
    let mut server = spawn_server(&args.backend, port).await?;
    let pid = server.id().context("server pid")?;
    let namespace = format!("bench-{:x}", rand::random::<u32>());
    let path = format!("/v1/streams/completion?from=tail&namespace={namespace}");
    let ready = Arc::new(AtomicUsize::new(0));
    let (stop_tx, stop_rx) = watch::channel(false);
    eprintln!(
        "ff bench sse: connecting {} clients to ff serve on port {port}",
        args.clients
    );
    let handles: Vec<_> = (0..args.clients)
        .map(|_| tokio::spawn(client(port, path.clone(), ready.clone(), stop_rx.clone())))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while ready.load(Ordering::Relaxed) < args.clients {
        if Instant::now() > deadline {
            bail!(
                "only {} of {} clients connected within 60 s",
                ready.load(Ordering::Relaxed),
                args.clients
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "ff bench sse: {} clients live; publishing {}/s for {} s",
        args.clients,
        args.rate,
        args.seconds.as_secs_f64()
    );
    let total = (args.rate * args.seconds.as_secs_f64()).round().max(1.0) as usize;
    let period = Duration::from_secs_f64(1.0 / args.rate);
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    for i in 0..total {
        ticker.tick().await;
        let body = format!(
            "{{\"execution_id\":\"{{fp:0}}:{}\",\"outcome\":\"success\",\"namespace\":\"{namespace}\",\"tags\":{{\"{SENT_TAG}\":\"{}\",\"n\":\"{i}\"}}}}",
            uuid_text(i as u64),
            now_us()
        );
        let (status, reply) = post_json(port, "/v1/streams/completion", &body).await?;
        if status != 200 {
            bail!("publish answered {status}: {reply}");
        }
    }
    let publish_secs = started.elapsed().as_secs_f64();
    let metrics = get_text(port, "/metrics").await.unwrap_or_default();
    let rss_now = rss_of(pid, "VmRSS:").unwrap_or(f64::NAN);
    let rss_peak = rss_of(pid, "VmHWM:").unwrap_or(rss_now);
    // Let the last events drain to every client, then stop them.
    let drain_deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < drain_deadline {
        let sent = get_text(port, "/metrics").await.unwrap_or_default();
        let delivered = sent
            .lines()
            .find(|l| l.starts_with("ff_http_events_sent_total "))
            .and_then(|l| l.rsplit(' ').next()?.parse::<usize>().ok())
            .unwrap_or(0);
        if delivered >= total * args.clients {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = stop_tx.send(true);
    let mut all = Vec::with_capacity(total * args.clients);
    let mut incomplete = 0usize;
    for h in handles {
        let lat = h.await.context("client task")??;
        if lat.len() < total {
            incomplete += 1;
        }
        all.extend(lat);
    }
    let mut storm_figures = Vec::new();
    if args.storm_clients > 0 && args.storm_events > 1 {
        let settings = super::sse_storm::StormSettings {
            clients: args.storm_clients,
            backlog: args.storm_events,
        };
        let (figures, restarted, _) =
            super::sse_storm::run(&args.backend, &settings, server, port).await?;
        storm_figures = figures;
        server = restarted;
    }
    server.kill().await.ok();
    all.sort_unstable();
    let delivered = all.len();
    let figures = vec![
        Figure::new("clients", "clients", args.clients as f64, None),
        Figure::new("published_events", "events", total as f64, None),
        Figure::new(
            "delivered_events_per_sec",
            "events/s",
            delivered as f64 / publish_secs,
            None,
        ),
        Figure::new("clients_missing_events", "clients", incomplete as f64, None),
        Figure::new(
            "latency_p50_ms",
            "ms",
            percentile(&all, 0.50) / 1000.0,
            None,
        ),
        Figure::new(
            "latency_p99_ms",
            "ms",
            percentile(&all, 0.99) / 1000.0,
            None,
        ),
        Figure::new(
            "backend_connections",
            "subscriptions",
            backend_subscriptions(&metrics),
            None,
        ),
        Figure::new("server_rss_mib", "MiB", rss_peak, None),
    ];
    let figures = figures.into_iter().chain(storm_figures).collect();
    Ok(BenchReport {
        partitions: None,
        nodes: None,
        backend: format!(
            "ff serve over {}",
            ff_core::redact::redact_url(&args.backend)
        ),
        figures,
    })
}

/// A deterministic, valid v4-shaped UUID for event `i`.
pub(super) fn uuid_text(i: u64) -> String {
    format!("00000000-0000-4000-8000-{:012x}", i & 0xffff_ffff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_stamps_are_read_from_complete_messages_only() {
        let needle = format!("\"{SENT_TAG}\":\"");
        let finder = memmem::Finder::new(needle.as_bytes());
        let text = format!(
            ": keep-alive\n\nid: a\ndata: {{\"tags\":{{{needle}12\"}}}}\n\nid: b\ndata: {{{needle}34"
        );
        let mut seen = Vec::new();
        let used = tagged_numbers(text.as_bytes(), &finder, |s| seen.push(s));
        assert_eq!(seen, vec![12]);
        assert_eq!(&text[used..], format!("id: b\ndata: {{{needle}34"));
    }
}
