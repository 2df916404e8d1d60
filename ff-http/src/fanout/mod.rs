//! Fan-out: the gateway's registry of shared backend subscriptions. Each
//! family has at most one live hub (a [`Hub`] that follows the tail and
//! broadcasts to every caught-up client) in its *live slot*, and a bounded
//! set of catch-up hubs for clients behind it (the [`CatchUpPool`]); this
//! module places each client on one of them ([`place`]) and runs each hub
//! ([`task`]).
//!
//! # Bounded backend streams
//!
//! Invariant: a hub frees its slot (the family's live slot, or its place in
//! the catch-up pool) only after it has dropped its backend stream, and a
//! new hub is started only in a free slot: the bound on backend
//! subscriptions holds for the streams actually open, not merely for the
//! hubs counted.
//!
//! The live hub ends when it has had no client for
//! [`GatewayConfig::hub_linger`](crate::GatewayConfig::hub_linger) while
//! no catch-up hub of its family runs (they hand their clients over to
//! it, so it stays for them), on shutdown, and on a terminal backend error
//! (which its clients receive as an `ff-error` message).

mod place;
mod task;

pub(crate) use place::{place, Unplaced, WhenQueued};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ff_core::backend::StreamBackend;
use ff_core::stream_events::Family;
use tokio::sync::watch;

use crate::catchup::CatchUpPool;
use crate::hub::vouched::Vouched;
use crate::hub::{wait_ready, Hub, Joined, Role, StartError};
use crate::metrics::{HubStats, Metrics};

/// Settings of the hubs.
#[derive(Clone, Debug)]
pub(crate) struct HubSettings {
    pub capacity: usize,
    pub keep: usize,
    pub linger: Duration,
    pub timeout: Duration,
    /// Backend subscriptions per family: the live hub plus catch-up hubs.
    pub per_family: usize,
}

/// The hubs of every family: the live ones and the catch-up pool.
pub(crate) struct Hubs {
    pub(crate) backend: Arc<dyn StreamBackend>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) settings: HubSettings,
    slots: Mutex<HashMap<Family, Arc<Hub>>>,
    pub(crate) catch_up: CatchUpPool,
    pub(crate) shutdown: watch::Receiver<bool>,
}

impl Hubs {
    pub fn new(
        backend: Arc<dyn StreamBackend>,
        metrics: Arc<Metrics>,
        settings: HubSettings,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        let readers = settings.per_family.max(2) - 1;
        Self {
            backend,
            metrics,
            settings,
            slots: Mutex::new(HashMap::new()),
            catch_up: CatchUpPool::new(readers),
            shutdown,
        }
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<Family, Arc<Hub>>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The family's live hub if one is running and ready (never starts one).
    pub fn existing(&self, family: Family) -> Option<Arc<Hub>> {
        let hub = self.slots().get(&family).cloned()?;
        hub.is_ready().then_some(hub)
    }

    /// The family's live hub, started if there is none. A hub that has
    /// closed stays in its slot until it has released its backend stream,
    /// so the caller waits for that before one more is started.
    fn get_or_start(self: &Arc<Self>, family: Family) -> Arc<Hub> {
        let mut slots = self.slots();
        if let Some(hub) = slots.get(&family) {
            return hub.clone();
        }
        let hub = Arc::new(Hub::new(family, self.settings.capacity, self.settings.keep));
        slots.insert(family, hub.clone());
        drop(slots);
        tokio::spawn(task::run_hub(hub.clone(), Arc::downgrade(self)));
        hub
    }

    /// Start a catch-up hub from `start` (the pool has reserved its slot),
    /// with its creator already joined, so the hub never reads further
    /// ahead of it than its buffer allows.
    pub(crate) fn start_catch_up(
        self: &Arc<Self>,
        family: Family,
        start: Vouched,
    ) -> (Arc<Hub>, Joined) {
        let hub = Arc::new(Hub::with_role(
            family,
            self.settings.capacity,
            self.settings.keep,
            Role::CatchUp {
                start: start.cursor().clone(),
            },
        ));
        let joined = hub.join_as_creator(start);
        tokio::spawn(task::run_hub(hub.clone(), Arc::downgrade(self)));
        (hub, joined)
    }

    /// The family's live hub, started if needed, once it has resolved its
    /// start position.
    pub async fn ready(self: &Arc<Self>, family: Family) -> Result<Arc<Hub>, StartError> {
        let deadline = tokio::time::Instant::now() + self.settings.timeout;
        loop {
            if *self.shutdown.borrow() {
                return Err(StartError::ShuttingDown);
            }
            let hub = self.get_or_start(family);
            if hub.is_closed() {
                let mut released = hub.released();
                let waited = tokio::time::timeout_at(deadline, released.wait_for(|r| *r)).await;
                match waited {
                    Ok(_) => continue,
                    Err(_) => return Err(StartError::Timeout),
                }
            }
            match wait_ready(&hub, deadline).await {
                Ok(()) => return Ok(hub),
                Err(StartError::Timeout) | Err(StartError::ShuttingDown)
                    if tokio::time::Instant::now() < deadline && hub.is_closed() => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Close `hub` if it has had no client and no catch-up hub of its
    /// family runs (each will hand its clients over to it); `true` when
    /// closed. It keeps its slot until its task has released the backend
    /// stream.
    pub(crate) fn close_if_idle(&self, hub: &Arc<Hub>) -> bool {
        if self.catch_up.held_by(hub.family()) > 0 {
            return false;
        }
        let _slots = self.slots();
        hub.close_if_no_client()
    }

    pub(crate) fn remove(&self, hub: &Arc<Hub>) {
        let mut slots = self.slots();
        if slots
            .get(&hub.family())
            .is_some_and(|h| Arc::ptr_eq(h, hub))
        {
            slots.remove(&hub.family());
        }
    }

    /// Slots of `family` held now: its live hub's and its catch-up hubs'.
    #[cfg(test)]
    pub(crate) fn held_slots(&self, family: Family) -> usize {
        usize::from(self.slots().contains_key(&family)) + self.catch_up.held_by(family)
    }

    /// Per-family statistics of the running live hubs.
    pub fn stats(&self) -> Vec<HubStats> {
        let mut stats: Vec<HubStats> = self.slots().values().map(|h| h.stats()).collect();
        stats.sort_by_key(|s| s.family.cursor_byte());
        stats
    }
}
