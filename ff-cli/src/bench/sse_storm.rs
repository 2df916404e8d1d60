//! The reconnect storm of `ff bench sse`: N clients resume at once, with
//! `Last-Event-ID`s spread over the last M events, right after `ff serve`
//! restarted (over `memory:`, whose events live in the server process, on
//! the running server instead). Measures how many backend subscriptions the
//! server held at the peak, how long until every client was live, and
//! whether any client lost or repeated an event.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use memchr::memmem;
use tokio::process::Child;
use tokio::sync::watch;

use super::http_client::{get_text, post_json, SseReader};
use super::report::Figure;
use super::sse::{
    complete_messages, free_port, number_after, rss_of, spawn_server, tagged_numbers, uuid_text,
};

const INDEX_TAG: &str = "storm-n";
/// Events per publish request.
const PUBLISH_BATCH: usize = 1_000;
/// How long the storm may take before the clients still catching up are
/// counted as having lost what they did not get.
const STORM_DEADLINE: Duration = Duration::from_secs(180);

/// The storm's settings.
pub struct StormSettings {
    pub clients: usize,
    pub backlog: usize,
}

/// What one client saw.
#[derive(Default)]
struct Seen {
    lost: u64,
    duplicated: u64,
    live_at: Option<Instant>,
}

/// Publish `n` storm events (indexes `from..from + n`); their cursors.
async fn publish(port: u16, namespace: &str, from: usize, n: usize) -> Result<Vec<String>> {
    let mut cursors = Vec::with_capacity(n);
    let mut i = from;
    while i < from + n {
        let end = (i + PUBLISH_BATCH).min(from + n);
        let events: Vec<String> = (i..end)
            .map(|k| {
                format!(
                    "{{\"execution_id\":\"{{fp:0}}:{}\",\"outcome\":\"success\",\"namespace\":\"{namespace}\",\"tags\":{{\"{INDEX_TAG}\":\"{k}\"}}}}",
                    uuid_text(k as u64)
                )
            })
            .collect();
        let (status, reply) = post_json(
            port,
            "/v1/streams/completion",
            &format!("[{}]", events.join(",")),
        )
        .await?;
        if status != 200 {
            bail!("storm publish answered {status}: {reply}");
        }
        let reply: serde_json::Value = serde_json::from_str(&reply).context("publish reply")?;
        let got = reply["cursors"]
            .as_array()
            .context("publish reply without cursors")?;
        cursors.extend(got.iter().filter_map(|c| c.as_str().map(str::to_owned)));
        i = end;
    }
    Ok(cursors)
}

/// Calls `each` with the storm index of every complete message in `text`
/// that carries one; returns how many bytes those messages took.
fn indexes(text: &[u8], needle: &memmem::Finder<'_>, mut each: impl FnMut(usize)) -> usize {
    tagged_numbers(text, needle, |k| each(k as usize))
}

/// The backlog as a subscription delivers it: the storm indexes in
/// delivery order and each one's `id:` (its cursor). Publish order is
/// delivery order on a backend with one order per family; over
/// partitions, delivery merges them, and only a delivered cursor resumes
/// every partition (a publish cursor names its own partition alone).
async fn delivered_order(port: u16, path: &str, n: usize) -> Result<(Vec<usize>, Vec<String>)> {
    let (mut reader, first) = SseReader::open(port, &format!("{path}&from=beginning")).await?;
    let finder = format!("\"{INDEX_TAG}\":\"");
    let needle = memmem::Finder::new(finder.as_bytes());
    let (mut order, mut ids) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let mut text = first;
    let deadline = Instant::now() + STORM_DEADLINE;
    while order.len() < n {
        // Message by message: position ones (the start position,
        // checkpoints) carry no index and are passed over.
        let mut missing_id = None;
        let consumed = complete_messages(&text, |message| {
            let Some(k) = number_after(message, &needle) else {
                return;
            };
            match message
                .split(|b| *b == b'\n')
                .find_map(|line| line.strip_prefix(b"id: "))
            {
                Some(id) => {
                    order.push(k as usize);
                    ids.push(String::from_utf8_lossy(id).into_owned());
                }
                None => missing_id = Some(k),
            }
        });
        if let Some(k) = missing_id {
            bail!("storm event {k} came without an id");
        }
        text.drain(..consumed);
        if order.len() >= n {
            break;
        }
        if Instant::now() > deadline {
            bail!("reading the storm backlog: {} of {n} events", order.len());
        }
        let chunk = reader.next_chunk().await?;
        if chunk.is_empty() {
            bail!("the stream ended after {} of {n} storm events", order.len());
        }
        text.extend_from_slice(&chunk);
    }
    Ok((order, ids))
}

/// One storm client: resume after the event delivered `after`-th (of
/// index order\[after\]), expect every index delivered after it and `last`
/// (the live marker) once; stop at `last` or `stop`. `rank[k]` is where
/// index `k` was delivered.
async fn client(
    port: u16,
    path: String,
    resume: String,
    after: usize,
    rank: Arc<Vec<usize>>,
    mut stop: watch::Receiver<bool>,
) -> Result<Seen> {
    let last = rank.len();
    let (mut reader, first) = SseReader::open_after(port, &path, Some(&resume)).await?;
    let mut counts = vec![0u8; last + 1];
    let finder = format!("\"{INDEX_TAG}\":\"");
    let needle = memmem::Finder::new(finder.as_bytes());
    let mut text = first;
    let mut seen = Seen::default();
    loop {
        let consumed = indexes(&text, &needle, |k| {
            if k > last || (k < last && rank[k] <= after) {
                seen.duplicated += 1;
            } else {
                counts[k] = counts[k].saturating_add(1);
                if k == last {
                    seen.live_at = Some(Instant::now());
                }
            }
        });
        text.drain(..consumed);
        if seen.live_at.is_some() {
            break;
        }
        tokio::select! {
            chunk = reader.next_chunk() => {
                let chunk = chunk?;
                if chunk.is_empty() {
                    break;
                }
                text.extend_from_slice(&chunk);
            }
            _ = stop.changed() => break,
        }
    }
    let expected = (0..=last).filter(|&k| k == last || rank[k] > after);
    for c in expected.map(|k| counts[k]) {
        match c {
            0 => seen.lost += 1,
            1 => {}
            n => seen.duplicated += u64::from(n - 1),
        }
    }
    Ok(seen)
}

fn metric(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// Run the storm against `server` (on `port`), restarting it first unless
/// the backend is `memory:`. Returns the figures and the server now running.
pub async fn run(
    backend: &str,
    settings: &StormSettings,
    mut server: Child,
    mut port: u16,
) -> Result<(Vec<Figure>, Child, u16)> {
    let namespace = format!("storm-{:x}", rand::random::<u32>());
    eprintln!(
        "ff bench sse: storm: publishing {} events",
        settings.backlog
    );
    publish(port, &namespace, 0, settings.backlog).await?;
    let path = format!("/v1/streams/completion?namespace={namespace}");
    let (order, cursors) = delivered_order(port, &path, settings.backlog).await?;
    let mut rank = vec![0; settings.backlog];
    for (position, &k) in order.iter().enumerate() {
        if k >= settings.backlog {
            bail!(
                "the storm backlog delivered index {k} of {}",
                settings.backlog
            );
        }
        rank[k] = position;
    }
    let rank = Arc::new(rank);
    if backend != "memory:" {
        eprintln!("ff bench sse: storm: restarting ff serve");
        server.kill().await.ok();
        port = free_port()?;
        server = spawn_server(backend, port).await?;
    }
    let last = settings.backlog;
    let (stop_tx, stop_rx) = watch::channel(false);
    eprintln!(
        "ff bench sse: storm: {} clients resume at once",
        settings.clients
    );
    let started = Instant::now();
    let connected = Arc::new(tokio::sync::Semaphore::new(0));
    let handles: Vec<_> = (0..settings.clients)
        .map(|i| {
            let after = i * (settings.backlog - 1) / settings.clients.saturating_sub(1).max(1);
            let (path, resume, stop) = (path.clone(), cursors[after].clone(), stop_rx.clone());
            let (connected, rank) = (connected.clone(), rank.clone());
            tokio::spawn(async move {
                let seen = client(port, path, resume, after, rank, stop).await;
                connected.add_permits(1);
                seen
            })
        })
        .collect();
    // The live marker goes out once every client is catching up.
    let metrics_deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let m = get_text(port, "/metrics").await.unwrap_or_default();
        if metric(&m, "ff_http_clients_connected") >= settings.clients as f64
            || Instant::now() > metrics_deadline
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    publish(port, &namespace, last, 1).await?;
    let deadline = tokio::time::Instant::now() + STORM_DEADLINE;
    let waited = tokio::time::timeout_at(
        deadline,
        connected.acquire_many(u32::try_from(settings.clients).unwrap_or(u32::MAX)),
    )
    .await;
    let _ = stop_tx.send(true);
    drop(waited);
    let mut lost = 0u64;
    let mut duplicated = 0u64;
    let mut live_at = started;
    let mut failed = 0usize;
    for h in handles {
        match h.await.context("storm client task")? {
            Ok(seen) => {
                lost += seen.lost;
                duplicated += seen.duplicated;
                match seen.live_at {
                    Some(at) => live_at = live_at.max(at),
                    None => failed += 1,
                }
            }
            Err(e) => {
                eprintln!("ff bench sse: storm client failed: {e:#}");
                failed += 1;
                lost += 1;
            }
        }
    }
    let metrics = get_text(port, "/metrics").await.unwrap_or_default();
    let rss_peak = server
        .id()
        .and_then(|pid| rss_of(pid, "VmHWM:"))
        .unwrap_or(f64::NAN);
    let to_live = if failed == 0 {
        live_at.duration_since(started).as_secs_f64()
    } else {
        f64::NAN
    };
    let figures = vec![
        Figure::new("storm_clients", "clients", settings.clients as f64, None),
        Figure::new(
            "storm_backlog_events",
            "events",
            settings.backlog as f64,
            None,
        ),
        Figure::new(
            "storm_backend_connections_peak",
            "subscriptions",
            metric(&metrics, "ff_http_backend_subscriptions_peak"),
            None,
        ),
        Figure::new("storm_seconds_to_live", "s", to_live, None),
        Figure::new("storm_clients_not_live", "clients", failed as f64, None),
        Figure::new("storm_lost", "events", lost as f64, None),
        Figure::new("storm_duplicated", "events", duplicated as f64, None),
        Figure::new("storm_server_rss_mib", "MiB", rss_peak, None),
    ];
    Ok((figures, server, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storm_indexes_are_read_from_complete_messages_only() {
        let needle = format!("\"{INDEX_TAG}\":\"");
        let finder = memmem::Finder::new(needle.as_bytes());
        let text = format!("id: a\n\nid: b\ndata: {{{needle}12\"}}\n\nid: c\ndata: {{{needle}3");
        let mut seen = Vec::new();
        let used = indexes(text.as_bytes(), &finder, |k| seen.push(k));
        assert_eq!(seen, vec![12]);
        assert_eq!(&text[used..], format!("id: c\ndata: {{{needle}3"));
    }
}
