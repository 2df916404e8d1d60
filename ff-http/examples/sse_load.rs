//! A quick fan-out load check for the gateway: N SSE clients tail one
//! family while events are published at a steady rate; prints delivered
//! events/s, publish→client latency percentiles (from each event's `at`,
//! millisecond resolution), and the server's backend subscriptions and RSS.
//!
//! Run the server and the clients as two processes, so the clients' work
//! does not distort the server's scheduling:
//!
//! ```text
//! cargo build --release -p ff-http --example sse_load
//! target/release/examples/sse_load server 127.0.0.1:8099 100 &   # events/s
//! target/release/examples/sse_load clients 127.0.0.1:8099 1000 10  # clients, seconds
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ff_backend_memory::MemoryBackend;
use ff_core::backend::EventPublisher;
use ff_core::stream_events::{CompletionOutcome, EventMeta, NewEvent};
use ff_core::types::{ExecutionId, TimestampMs};
use ff_http::{Auth, Gateway, GatewayConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// Read the stream, recording each event's latency until `stop`.
async fn client(addr: SocketAddr, stop: Instant) -> std::io::Result<Vec<i64>> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(
        b"GET /v1/streams/completion HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n",
    )
    .await?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut carry: Vec<u8> = Vec::new();
    let mut latencies = Vec::new();
    let deadline = tokio::time::sleep_until(stop.into());
    tokio::pin!(deadline);
    loop {
        let n = tokio::select! {
            _ = &mut deadline => break,
            r = s.read(&mut buf) => match r? {
                0 => break,
                n => n,
            },
        };
        carry.extend_from_slice(&buf[..n]);
        let now = TimestampMs::now().0;
        while let Some(pos) = carry.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = carry.drain(..=pos).collect();
            if let Some(rest) = line.strip_prefix(b"data: ") {
                let text = String::from_utf8_lossy(rest);
                if let Some(i) = text.find("\"at\":") {
                    let digits: String = text[i + 5..]
                        .chars()
                        .take_while(char::is_ascii_digit)
                        .collect();
                    if let Ok(at) = digits.parse::<i64>() {
                        latencies.push(now - at);
                    }
                }
            }
        }
    }
    Ok(latencies)
}

async fn run_server(addr: &str, rate: u64) -> std::io::Result<()> {
    let backend = MemoryBackend::new();
    let gateway = Gateway::new(
        Arc::new(backend.clone()),
        None,
        GatewayConfig::new(Auth::NoAuth),
    );
    let addr: SocketAddr = addr.parse().map_err(std::io::Error::other)?;
    let listener = ff_http::bind(addr)?;
    let server = gateway.clone();
    tokio::spawn(async move { server.serve(listener, std::future::pending()).await });
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(1) as f64));
    let mut report = Instant::now();
    loop {
        tick.tick().await;
        let draft = NewEvent::completion(ExecutionId::new(0), CompletionOutcome::Success);
        let _ = backend.publish(draft, EventMeta::new()).await;
        if report.elapsed() >= Duration::from_secs(5) {
            report = Instant::now();
            let m = gateway.metrics();
            println!(
                "clients {}, events sent {}, backend subscriptions {}, RSS {:.1} MiB",
                m.clients_connected,
                m.events_sent,
                m.backend_subscriptions,
                rss_mib()
            );
        }
    }
}

async fn run_clients(addr: SocketAddr, clients: usize, seconds: u64) {
    let stop = Instant::now() + Duration::from_secs(seconds);
    let tasks: Vec<_> = (0..clients)
        .map(|_| tokio::spawn(client(addr, stop)))
        .collect();
    let mut all = Vec::new();
    let mut failed = 0;
    for t in tasks {
        match t.await {
            Ok(Ok(l)) => all.extend(l),
            _ => failed += 1,
        }
    }
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or(-1)
    };
    println!(
        "{clients} clients ({failed} failed): delivered {} ({:.0}/s), latency p50 {} ms, p99 {} ms, max {} ms",
        all.len(),
        all.len() as f64 / seconds as f64,
        pct(0.5),
        pct(0.99),
        all.last().copied().unwrap_or(-1),
    );
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: u64| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let addr = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "127.0.0.1:8099".into());
    match args.first().map(String::as_str) {
        Some("server") => run_server(&addr, arg(2, 100)).await,
        Some("clients") => {
            let addr = addr.parse().expect("ADDR as ip:port");
            run_clients(addr, arg(2, 1000) as usize, arg(3, 10)).await;
            Ok(())
        }
        _ => {
            eprintln!(
                "usage: sse_load server ADDR [RATE] | sse_load clients ADDR [CLIENTS] [SECONDS]"
            );
            Ok(())
        }
    }
}
