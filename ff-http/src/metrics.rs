//! Counters and gauges, rendered as Prometheus text on `GET /metrics` and
//! readable in process as a [`MetricsSnapshot`].

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use ff_core::stream_events::Family;

/// The gateway's counters (all relaxed atomics: they are statistics).
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    pub clients_connected: AtomicUsize,
    pub clients_total: AtomicU64,
    pub clients_rejected: AtomicU64,
    pub events_sent: AtomicU64,
    pub checkpoints_sent: AtomicU64,
    pub errors_sent: AtomicU64,
    pub lagged: AtomicU64,
    pub clients_detached: AtomicU64,
    pub shared_joins: AtomicU64,
    pub shared_subscriptions: AtomicUsize,
    pub own_subscriptions: AtomicUsize,
    pub own_subscriptions_opened: AtomicU64,
    pub backend_subscriptions_peak: AtomicUsize,
    pub published_events: AtomicU64,
}

impl Metrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> MetricsSnapshot {
        let shared = self.shared_subscriptions.load(Ordering::Relaxed);
        let own = self.own_subscriptions.load(Ordering::Relaxed);
        MetricsSnapshot {
            clients_connected: self.clients_connected.load(Ordering::Relaxed),
            clients_total: self.clients_total.load(Ordering::Relaxed),
            events_sent: self.events_sent.load(Ordering::Relaxed),
            checkpoints_sent: self.checkpoints_sent.load(Ordering::Relaxed),
            errors_sent: self.errors_sent.load(Ordering::Relaxed),
            lagged_clients: self.lagged.load(Ordering::Relaxed),
            clients_detached: self.clients_detached.load(Ordering::Relaxed),
            shared_joins: self.shared_joins.load(Ordering::Relaxed),
            shared_subscriptions: shared,
            catch_up_subscriptions: own,
            backend_subscriptions: shared + own,
            catch_up_subscriptions_opened: self.own_subscriptions_opened.load(Ordering::Relaxed),
            backend_subscriptions_peak: self.backend_subscriptions_peak.load(Ordering::Relaxed),
            published_events: self.published_events.load(Ordering::Relaxed),
        }
    }
}

/// A point-in-time copy of the gateway's metrics (what `ff bench sse` and
/// tests read; `GET /metrics` renders the same values).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MetricsSnapshot {
    /// SSE clients connected now.
    pub clients_connected: usize,
    /// SSE clients accepted since start.
    pub clients_total: u64,
    /// Event messages sent, over all clients.
    pub events_sent: u64,
    /// Checkpoint position messages sent.
    pub checkpoints_sent: u64,
    /// `ff-error` messages sent.
    pub errors_sent: u64,
    /// Times a client fell behind the shared subscription's buffer.
    pub lagged_clients: u64,
    /// Times a stalled client was detached from a shared reader it had
    /// held back (it is placed again from its own position when it reads).
    pub clients_detached: u64,
    /// Times a client joined a shared subscription.
    pub shared_joins: u64,
    /// Shared (one per family) backend subscriptions open now.
    pub shared_subscriptions: usize,
    /// Shared catch-up backend subscriptions open now.
    pub catch_up_subscriptions: usize,
    /// All backend subscriptions the gateway holds now.
    pub backend_subscriptions: usize,
    /// Catch-up backend subscriptions opened since start (a client
    /// resuming inside a shared subscription's window needs none).
    pub catch_up_subscriptions_opened: u64,
    /// The most backend subscriptions held at once since start.
    pub backend_subscriptions_peak: usize,
    /// Events appended through `POST`.
    pub published_events: u64,
}

/// Which gauge a [`SubscriptionGauge`] counts in.
#[derive(Clone, Copy, Debug)]
pub(crate) enum SubscriptionKind {
    Shared,
    Own,
}

/// Counts one open backend subscription until dropped.
#[derive(Debug)]
pub(crate) struct SubscriptionGauge {
    metrics: Arc<Metrics>,
    kind: SubscriptionKind,
}

impl SubscriptionGauge {
    pub fn new(metrics: Arc<Metrics>, kind: SubscriptionKind) -> Self {
        metrics.gauge(kind).fetch_add(1, Ordering::Relaxed);
        let now = metrics.shared_subscriptions.load(Ordering::Relaxed)
            + metrics.own_subscriptions.load(Ordering::Relaxed);
        metrics
            .backend_subscriptions_peak
            .fetch_max(now, Ordering::Relaxed);
        if let SubscriptionKind::Own = kind {
            Metrics::add(&metrics.own_subscriptions_opened, 1);
        }
        Self { metrics, kind }
    }
}

impl Drop for SubscriptionGauge {
    fn drop(&mut self) {
        self.metrics
            .gauge(self.kind)
            .fetch_sub(1, Ordering::Relaxed);
    }
}

impl Metrics {
    fn gauge(&self, kind: SubscriptionKind) -> &AtomicUsize {
        match kind {
            SubscriptionKind::Shared => &self.shared_subscriptions,
            SubscriptionKind::Own => &self.own_subscriptions,
        }
    }
}

/// Per-family state of a shared subscription, for rendering.
pub(crate) struct HubStats {
    pub family: Family,
    pub clients: usize,
    pub delivery_lag_ms: Option<i64>,
    /// The latest position the live subscription has delivered.
    pub position: Option<ff_core::stream_subscribe::StreamCursor>,
}

fn metric(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
    );
}

/// The Prometheus text exposition of `m` and the shared subscriptions.
pub(crate) fn render(m: &MetricsSnapshot, hubs: &[HubStats]) -> String {
    let mut out = String::with_capacity(2048);
    metric(
        &mut out,
        "ff_http_clients_connected",
        "gauge",
        "SSE clients connected now.",
        m.clients_connected,
    );
    metric(
        &mut out,
        "ff_http_clients_total",
        "counter",
        "SSE clients accepted.",
        m.clients_total,
    );
    metric(
        &mut out,
        "ff_http_events_sent_total",
        "counter",
        "Event messages sent over all clients.",
        m.events_sent,
    );
    metric(
        &mut out,
        "ff_http_checkpoints_sent_total",
        "counter",
        "Checkpoint position messages sent.",
        m.checkpoints_sent,
    );
    metric(
        &mut out,
        "ff_http_errors_sent_total",
        "counter",
        "ff-error messages sent.",
        m.errors_sent,
    );
    metric(
        &mut out,
        "ff_http_lagged_clients_total",
        "counter",
        "Times a client fell behind the shared buffer.",
        m.lagged_clients,
    );
    metric(
        &mut out,
        "ff_http_clients_detached_total",
        "counter",
        "Times a stalled client was detached from a shared reader.",
        m.clients_detached,
    );
    metric(
        &mut out,
        "ff_http_shared_joins_total",
        "counter",
        "Times a client joined a shared subscription.",
        m.shared_joins,
    );
    metric(
        &mut out,
        "ff_http_catch_up_subscriptions_total",
        "counter",
        "Shared catch-up backend subscriptions opened.",
        m.catch_up_subscriptions_opened,
    );
    metric(
        &mut out,
        "ff_http_published_events_total",
        "counter",
        "Events appended through POST.",
        m.published_events,
    );
    let _ = writeln!(
        out,
        "# HELP ff_http_backend_subscriptions Backend subscriptions held now.\n# TYPE ff_http_backend_subscriptions gauge\nff_http_backend_subscriptions{{role=\"shared\"}} {}\nff_http_backend_subscriptions{{role=\"catch_up\"}} {}",
        m.shared_subscriptions, m.catch_up_subscriptions
    );
    metric(
        &mut out,
        "ff_http_backend_subscriptions_peak",
        "gauge",
        "The most backend subscriptions held at once since start.",
        m.backend_subscriptions_peak,
    );
    let _ = writeln!(
        out,
        "# HELP ff_http_shared_clients Clients on a family's shared subscription.\n# TYPE ff_http_shared_clients gauge"
    );
    for h in hubs {
        let _ = writeln!(
            out,
            "ff_http_shared_clients{{family=\"{}\"}} {}",
            h.family, h.clients
        );
    }
    let _ = writeln!(
        out,
        "# HELP ff_http_backend_lag_seconds Time from an event's recording to its arrival at the gateway, for the latest event per family.\n# TYPE ff_http_backend_lag_seconds gauge"
    );
    for h in hubs {
        if let Some(ms) = h.delivery_lag_ms {
            let _ = writeln!(
                out,
                "ff_http_backend_lag_seconds{{family=\"{}\"}} {:.3}",
                h.family,
                ms.max(0) as f64 / 1000.0
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_is_prometheus_text() {
        let m = Metrics::default();
        let _g = SubscriptionGauge::new(Arc::new(Metrics::default()), SubscriptionKind::Own);
        Metrics::add(&m.events_sent, 3);
        let text = render(
            &m.snapshot(),
            &[HubStats {
                family: Family::Completion,
                clients: 2,
                delivery_lag_ms: Some(1500),
                position: None,
            }],
        );
        assert!(text.contains("\nff_http_events_sent_total 3\n"), "{text}");
        assert!(text.contains("ff_http_shared_clients{family=\"completion\"} 2"));
        assert!(text.contains("ff_http_backend_lag_seconds{family=\"completion\"} 1.500"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').unwrap();
            value.parse::<f64>().unwrap();
        }
    }
}
