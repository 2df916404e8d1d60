//! [`Health`]: which nodes answered lately and which just failed to, so a
//! dead or black-holed node (a stopped process, a dropped network path) is
//! noticed within seconds rather than after a command or `XREAD BLOCK`
//! timeout, and topology probes ask it last.
//!
//! Invariants: a node is *suspect* from the moment it failed a probe, a
//! ping, a request (no reply in time) or a connection attempt until it
//! answers again or [`SUSPECT_FOR`] passes, and a failure forgets its
//! earlier answers; however many callers ask whether a node is
//! alive, at most one ping to it is in flight, and none is sent while its
//! last answer is younger than the ping interval.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::redirect::NodeAddr;

/// How long a node that failed stays suspect (unless it answers sooner).
pub(crate) const SUSPECT_FOR: Duration = Duration::from_secs(10);

/// What is known of one node.
#[derive(Default)]
struct Node {
    /// When it last answered a ping or a probe.
    answered: Mutex<Option<Instant>>,
    /// When it last failed to, if it has not answered since.
    failed: Mutex<Option<Instant>>,
    /// Held while a ping to it is in flight.
    pinging: tokio::sync::Mutex<()>,
}

/// The nodes' liveness; see the module docs.
pub(crate) struct Health {
    interval: Duration,
    timeout: Duration,
    nodes: Mutex<HashMap<NodeAddr, Arc<Node>>>,
    /// Since `epoch`, in milliseconds (plus one; 0: never), when any node
    /// last failed: while none did within [`SUSPECT_FOR`], no node is
    /// suspect, which requests learn without a lock.
    last_failure: AtomicU64,
    epoch: Instant,
}

impl Health {
    /// A node is pinged when it was last heard from `interval` ago or
    /// more, and is dead when it does not answer within `timeout`.
    pub(crate) fn new(interval: Duration, timeout: Duration) -> Self {
        Self {
            interval,
            timeout,
            nodes: Mutex::new(HashMap::new()),
            last_failure: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    fn millis_since_epoch(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1
    }

    /// How often a node a caller waits on is checked.
    pub(crate) fn interval(&self) -> Duration {
        self.interval
    }

    /// How long a node has to answer a ping or a probe.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    fn node(&self, addr: &NodeAddr) -> Arc<Node> {
        self.nodes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(addr.clone())
            .or_default()
            .clone()
    }

    /// `addr` answered (a ping, a probe).
    pub(crate) fn answered(&self, addr: &NodeAddr) {
        let node = self.node(addr);
        *node.answered.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        *node.failed.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// `addr` failed to answer, or to accept a connection.
    pub(crate) fn failed(&self, addr: &NodeAddr) {
        let node = self.node(addr);
        *node.answered.lock().unwrap_or_else(|e| e.into_inner()) = None;
        *node.failed.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        self.last_failure
            .store(self.millis_since_epoch(), Ordering::Release);
    }

    /// Whether `addr` failed within [`SUSPECT_FOR`] and has not answered
    /// since.
    pub(crate) fn is_suspect(&self, addr: &NodeAddr) -> bool {
        let last = self.last_failure.load(Ordering::Acquire);
        let window = u64::try_from(SUSPECT_FOR.as_millis()).unwrap_or(u64::MAX);
        if last == 0 || self.millis_since_epoch().saturating_sub(last) > window {
            return false;
        }
        let Some(node) = self
            .nodes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(addr)
            .cloned()
        else {
            return false;
        };
        let failed = *node.failed.lock().unwrap_or_else(|e| e.into_inner());
        failed.is_some_and(|at| at.elapsed() < SUSPECT_FOR)
    }

    /// Whether a ping to `addr` is in flight.
    pub(crate) fn is_pinging(&self, addr: &NodeAddr) -> bool {
        self.node(addr).pinging.try_lock().is_err()
    }

    /// Whether `addr` is alive: at once when it answered within the ping
    /// interval, else by `ping` (which answers whether the node replied
    /// within [`Health::timeout`]), shared with concurrent callers.
    pub(crate) async fn check<F>(&self, addr: &NodeAddr, ping: F) -> bool
    where
        F: Future<Output = bool>,
    {
        let node = self.node(addr);
        let fresh = |node: &Node| {
            node.answered
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_some_and(|at| at.elapsed() < self.interval)
        };
        if fresh(&node) {
            return true;
        }
        let asked_at = Instant::now();
        let _pinging = node.pinging.lock().await;
        // Another caller's ping answered (or failed) meanwhile: share it.
        if fresh(&node) {
            return true;
        }
        let failed = *node.failed.lock().unwrap_or_else(|e| e.into_inner());
        if failed.is_some_and(|at| at >= asked_at) {
            return false;
        }
        if ping.await {
            self.answered(addr);
            true
        } else {
            self.failed(addr);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn addr() -> NodeAddr {
        NodeAddr::new("127.0.0.1", 7000)
    }

    #[tokio::test]
    async fn a_node_that_answered_lately_is_not_pinged_again() {
        let health = Health::new(Duration::from_secs(60), Duration::from_secs(1));
        let pings = AtomicU32::new(0);
        let ping = || async {
            pings.fetch_add(1, Ordering::Relaxed);
            true
        };
        assert!(health.check(&addr(), ping()).await);
        assert!(health.check(&addr(), ping()).await);
        assert_eq!(pings.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn a_node_that_fails_a_ping_is_suspect_until_it_answers() {
        let health = Health::new(Duration::ZERO, Duration::from_secs(1));
        assert!(!health.is_suspect(&addr()));
        assert!(!health.check(&addr(), async { false }).await);
        assert!(health.is_suspect(&addr()));
        assert!(!health.is_suspect(&NodeAddr::new("127.0.0.1", 7001)));
        assert!(health.check(&addr(), async { true }).await);
        assert!(!health.is_suspect(&addr()));
    }

    #[tokio::test]
    async fn a_failure_after_an_answer_makes_the_next_check_ping() {
        let health = Health::new(Duration::from_secs(60), Duration::from_secs(1));
        assert!(health.check(&addr(), async { true }).await);
        health.failed(&addr());
        assert!(health.is_suspect(&addr()));
        assert!(!health.check(&addr(), async { false }).await);
    }

    #[tokio::test]
    async fn concurrent_checks_share_one_ping() {
        let health = Health::new(Duration::from_secs(60), Duration::from_secs(1));
        let pings = AtomicU32::new(0);
        let ping = || async {
            pings.fetch_add(1, Ordering::Relaxed);
            tokio::task::yield_now().await;
            false
        };
        let node = addr();
        let (a, b, c) = tokio::join!(
            health.check(&node, ping()),
            health.check(&node, ping()),
            health.check(&node, ping())
        );
        assert!(!a && !b && !c);
        assert_eq!(pings.load(Ordering::Relaxed), 1);
    }
}
