//! Fan-out: one shared backend subscription per family (a *hub*), read by
//! one task and broadcast to every caught-up client.
//!
//! A hub subscribes from the tail with no filter, encodes each event's SSE
//! message once, and sends it on a bounded `tokio::sync::broadcast`
//! channel; each client applies its own filter. The hub also keeps the last
//! [`GatewayConfig::hub_replay`](crate::GatewayConfig::hub_replay) items
//! and its *window* `[base, position]`: `position` is the latest position it
//! has delivered, `base` the position just before its oldest kept item.
//!
//! # Joining without gap or duplicate
//!
//! A client at position `p` joins under the hub's state lock, which the hub
//! also holds while it sends an item and advances `position`. If
//! `base <= p`, the hub has seen every event after `p` up to `position`,
//! and the kept items after `p` are exactly those events; the broadcast
//! receiver, subscribed under the same lock, yields exactly the items after
//! `position`. So the client replays the kept items after `p`, then reads
//! the receiver, skipping anything at or before `p`. A `p` beyond
//! `position` is accepted only when it came from the client's own backend
//! subscription (the backend vouched for it); the client then skips hub
//! items up to `p`.
//!
//! A client whose position is outside the window (or not comparable, e.g.
//! `beginning`) reads its own backend subscription until it has caught up,
//! then joins as above. A client that falls behind the broadcast buffer
//! (`Lagged`) rejoins the same way from its last position.
//!
//! A hub ends when it has had no client for
//! [`GatewayConfig::hub_linger`](crate::GatewayConfig::hub_linger), on
//! shutdown, and on a terminal backend error (which its clients receive as
//! an `ff-error` message).

use std::cmp::Ordering;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use ff_core::backend::{DeliveryItem, StreamBackend};
use ff_core::engine_error::EngineError;
use ff_core::filter::SubscriptionFilter;
use ff_core::stream_events::{EventMeta, Family, StreamEvent};
use ff_core::stream_subscribe::StreamCursor;
use ff_core::types::TimestampMs;
use futures::StreamExt;
use tokio::sync::{broadcast, watch};

use crate::encode;
use crate::metrics::{HubStats, Metrics, SubscriptionGauge, SubscriptionKind};

/// One item the hub delivers.
#[derive(Debug)]
pub(crate) struct HubItem {
    pub cursor: StreamCursor,
    pub body: HubBody,
}

/// What a hub item carries. Events are nearly every item, so they are
/// kept inline rather than boxed (a box would cost an allocation each).
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub(crate) enum HubBody {
    /// An event, with its SSE message encoded once for every client.
    Event {
        event: StreamEvent,
        meta: EventMeta,
        frame: Bytes,
    },
    /// An undecodable entry, as its `ff-error` message.
    Corrupt { frame: Bytes },
}

/// A broadcast message.
#[derive(Clone, Debug)]
pub(crate) enum HubMsg {
    Item(Arc<HubItem>),
    /// The shared subscription ended with this terminal error.
    Failed(EngineError),
}

#[derive(Clone, Debug)]
enum Status {
    Starting,
    Ready,
    Failed(EngineError),
    Closed,
}

#[derive(Debug, Default)]
struct HubState {
    base: Option<StreamCursor>,
    position: Option<StreamCursor>,
    kept: VecDeque<Arc<HubItem>>,
    closed: bool,
}

/// A family's shared subscription, as seen by clients.
#[derive(Debug)]
pub(crate) struct Hub {
    family: Family,
    tx: broadcast::Sender<HubMsg>,
    state: Mutex<HubState>,
    status: watch::Sender<Status>,
    keep: usize,
    /// Milliseconds from the latest event's `at` to its arrival; `i64::MIN`
    /// before the first event.
    lag_ms: AtomicI64,
}

/// A successful join: replay `replay`, then read `rx`.
#[derive(Debug)]
pub(crate) struct Joined {
    pub rx: broadcast::Receiver<HubMsg>,
    pub replay: VecDeque<Arc<HubItem>>,
    /// The hub's position at the join.
    pub position: StreamCursor,
}

/// Why a client could not join a hub.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum JoinRefused {
    /// The hub has ended; look it up again.
    Gone,
    /// The position is outside the hub's window (or not comparable).
    OutOfWindow,
}

fn at_or_after(a: &StreamCursor, b: &StreamCursor) -> bool {
    matches!(a.position_cmp(b), Some(Ordering::Greater | Ordering::Equal))
}

/// `true` when `a` is at or before `b` (comparable positions only).
pub(crate) fn at_or_before(a: &StreamCursor, b: &StreamCursor) -> bool {
    matches!(a.position_cmp(b), Some(Ordering::Less | Ordering::Equal))
}

impl Hub {
    fn new(family: Family, capacity: usize, keep: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity);
        Self {
            family,
            tx,
            state: Mutex::new(HubState::default()),
            status: watch::Sender::new(Status::Starting),
            keep,
            lag_ms: AtomicI64::new(i64::MIN),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Join at the hub's current position (a tail start).
    pub fn join_tail(&self) -> Result<Joined, JoinRefused> {
        let state = self.lock();
        if state.closed {
            return Err(JoinRefused::Gone);
        }
        let position = state.position.clone().ok_or(JoinRefused::Gone)?;
        Ok(Joined {
            rx: self.tx.subscribe(),
            replay: VecDeque::new(),
            position,
        })
    }

    /// Join exactly after `after`. `trusted`: the position came from the
    /// backend (the client's own subscription), so it may lie beyond the
    /// hub's position.
    pub fn join_after(&self, after: &StreamCursor, trusted: bool) -> Result<Joined, JoinRefused> {
        let state = self.lock();
        if state.closed {
            return Err(JoinRefused::Gone);
        }
        let (Some(base), Some(position)) = (&state.base, &state.position) else {
            return Err(JoinRefused::Gone);
        };
        if !at_or_after(after, base) || (!trusted && !at_or_before(after, position)) {
            return Err(JoinRefused::OutOfWindow);
        }
        let newer = state
            .kept
            .iter()
            .rev()
            .take_while(|item| !at_or_before(&item.cursor, after))
            .count();
        let replay = state
            .kept
            .iter()
            .skip(state.kept.len() - newer)
            .cloned()
            .collect();
        Ok(Joined {
            rx: self.tx.subscribe(),
            replay,
            position: position.clone(),
        })
    }

    /// Deliver one item of the shared subscription.
    fn deliver(&self, item: DeliveryItem) {
        let cursor = item.cursor().clone();
        let hub_item = match item {
            DeliveryItem::Event { event, meta } => {
                let lag = TimestampMs::now().0.saturating_sub(event.at().0);
                self.lag_ms.store(lag, AtomicOrdering::Relaxed);
                let frame = encode::event_frame(&event, &meta);
                Some(HubBody::Event { event, meta, frame })
            }
            DeliveryItem::Corrupt { cursor, detail } => Some(HubBody::Corrupt {
                frame: corrupt_frame(&cursor, &detail),
            }),
            _ => None,
        };
        let mut state = self.lock();
        match hub_item {
            Some(body) => {
                let item = Arc::new(HubItem {
                    cursor: cursor.clone(),
                    body,
                });
                if self.keep == 0 {
                    state.base = Some(cursor.clone());
                } else {
                    if state.kept.len() == self.keep {
                        if let Some(old) = state.kept.pop_front() {
                            state.base = Some(old.cursor.clone());
                        }
                    }
                    state.kept.push_back(item.clone());
                }
                if state.base.is_none() {
                    state.base = Some(cursor.clone());
                }
                state.position = Some(cursor);
                // No receiver is not an error: the hub lingers for a while.
                let _ = self.tx.send(HubMsg::Item(item));
            }
            None => {
                if state.kept.is_empty() || state.base.is_none() {
                    state.base = Some(cursor.clone());
                }
                state.position = Some(cursor);
            }
        }
        drop(state);
        self.status.send_if_modified(|s| {
            if matches!(s, Status::Starting) {
                *s = Status::Ready;
                true
            } else {
                false
            }
        });
    }

    /// End with a terminal error, telling every client.
    fn fail(&self, err: EngineError) {
        let mut state = self.lock();
        state.closed = true;
        let _ = self.tx.send(HubMsg::Failed(err.clone()));
        drop(state);
        self.status.send_replace(Status::Failed(err));
    }

    fn close(&self) {
        self.lock().closed = true;
        self.status.send_replace(Status::Closed);
    }

    fn stats(&self) -> HubStats {
        let lag = self.lag_ms.load(AtomicOrdering::Relaxed);
        HubStats {
            family: self.family,
            clients: self.tx.receiver_count(),
            delivery_lag_ms: (lag != i64::MIN).then_some(lag),
        }
    }
}

fn corrupt_frame(cursor: &StreamCursor, detail: &str) -> Bytes {
    let mut out = Vec::new();
    encode::push_error(
        &mut out,
        Some(cursor),
        &crate::errors::corrupt_json(cursor, detail),
    );
    Bytes::from(out)
}

/// Why a hub could not be made ready.
#[derive(Debug)]
pub(crate) enum StartError {
    Engine(EngineError),
    Timeout,
    ShuttingDown,
}

/// Settings of the hubs.
#[derive(Clone, Debug)]
pub(crate) struct HubSettings {
    pub capacity: usize,
    pub keep: usize,
    pub linger: Duration,
    pub timeout: Duration,
}

/// The hubs of every family.
pub(crate) struct Hubs {
    backend: Arc<dyn StreamBackend>,
    metrics: Arc<Metrics>,
    settings: HubSettings,
    slots: Mutex<HashMap<Family, Arc<Hub>>>,
    shutdown: watch::Receiver<bool>,
}

impl Hubs {
    pub fn new(
        backend: Arc<dyn StreamBackend>,
        metrics: Arc<Metrics>,
        settings: HubSettings,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Self {
            backend,
            metrics,
            settings,
            slots: Mutex::new(HashMap::new()),
            shutdown,
        }
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<Family, Arc<Hub>>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The family's hub if one is running and ready (never starts one).
    pub fn existing(&self, family: Family) -> Option<Arc<Hub>> {
        let hub = self.slots().get(&family).cloned()?;
        let ready = matches!(*hub.status.borrow(), Status::Ready);
        ready.then_some(hub)
    }

    fn get_or_start(self: &Arc<Self>, family: Family) -> Arc<Hub> {
        let mut slots = self.slots();
        if let Some(hub) = slots.get(&family) {
            if !hub.lock().closed {
                return hub.clone();
            }
        }
        let hub = Arc::new(Hub::new(family, self.settings.capacity, self.settings.keep));
        slots.insert(family, hub.clone());
        drop(slots);
        tokio::spawn(run_hub(
            hub.clone(),
            Arc::downgrade(self),
            self.backend.clone(),
            self.metrics.clone(),
            self.settings.linger,
            self.shutdown.clone(),
        ));
        hub
    }

    /// The family's hub, started if needed, once it has resolved its start
    /// position.
    pub async fn ready(self: &Arc<Self>, family: Family) -> Result<Arc<Hub>, StartError> {
        let deadline = tokio::time::Instant::now() + self.settings.timeout;
        loop {
            if *self.shutdown.borrow() {
                return Err(StartError::ShuttingDown);
            }
            let hub = self.get_or_start(family);
            let mut status = hub.status.subscribe();
            let waited = tokio::time::timeout_at(
                deadline,
                status.wait_for(|s| !matches!(s, Status::Starting)),
            )
            .await;
            let status = match waited {
                Err(_) => return Err(StartError::Timeout),
                Ok(Err(_)) => continue,
                Ok(Ok(s)) => s.clone(),
            };
            match status {
                Status::Ready => return Ok(hub),
                Status::Failed(e) => return Err(StartError::Engine(e)),
                Status::Closed | Status::Starting => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(StartError::Timeout);
                    }
                }
            }
        }
    }

    /// Remove `hub` if it has had no client; `true` when removed.
    fn remove_if_idle(&self, hub: &Arc<Hub>) -> bool {
        let mut slots = self.slots();
        let mut state = hub.lock();
        if hub.tx.receiver_count() > 0 {
            return false;
        }
        state.closed = true;
        if slots.get(&hub.family).is_some_and(|h| Arc::ptr_eq(h, hub)) {
            slots.remove(&hub.family);
        }
        true
    }

    fn remove(&self, hub: &Arc<Hub>) {
        let mut slots = self.slots();
        if slots.get(&hub.family).is_some_and(|h| Arc::ptr_eq(h, hub)) {
            slots.remove(&hub.family);
        }
    }

    /// Per-family statistics of the running hubs.
    pub fn stats(&self) -> Vec<HubStats> {
        let mut stats: Vec<HubStats> = self.slots().values().map(|h| h.stats()).collect();
        stats.sort_by_key(|s| s.family.cursor_byte());
        stats
    }
}

/// The hub task: subscribe from the tail, deliver every item, end when idle
/// for `linger`, on shutdown, or on a terminal error.
async fn run_hub(
    hub: Arc<Hub>,
    hubs: Weak<Hubs>,
    backend: Arc<dyn StreamBackend>,
    metrics: Arc<Metrics>,
    linger: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let family = hub.family;
    let everything = SubscriptionFilter::default();
    let subscribed = tokio::select! {
        r = backend.subscribe_family(family, StreamCursor::empty(), &everything) => r,
        _ = shutdown.wait_for(|s| *s) => {
            hub.close();
            return;
        }
    };
    let mut stream = match subscribed {
        Ok(stream) => stream,
        Err(e) => {
            tracing::warn!(%family, error = %e, "shared subscription could not start");
            hub.fail(e);
            if let Some(hubs) = hubs.upgrade() {
                hubs.remove(&hub);
            }
            return;
        }
    };
    let _gauge = SubscriptionGauge::new(metrics, SubscriptionKind::Shared);
    tracing::debug!(%family, "shared subscription started");
    let tick_every = (linger / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    let mut tick = tokio::time::interval(tick_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut idle_since: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            biased;
            _ = shutdown.wait_for(|s| *s) => {
                hub.close();
                break;
            }
            item = stream.next() => match item {
                Some(Ok(item)) => hub.deliver(item),
                Some(Err(EngineError::Corrupt { cursor, detail })) => {
                    hub.deliver(DeliveryItem::Corrupt { cursor, detail });
                }
                Some(Err(e)) => {
                    tracing::warn!(%family, error = %e, "shared subscription ended");
                    hub.fail(e);
                    break;
                }
                None => {
                    let cursor = hub.lock().position.clone().unwrap_or_default();
                    hub.fail(EngineError::StreamDisconnected { cursor });
                    break;
                }
            },
            _ = tick.tick() => {
                if hub.tx.receiver_count() > 0 {
                    idle_since = None;
                    continue;
                }
                let since = *idle_since.get_or_insert_with(tokio::time::Instant::now);
                if since.elapsed() >= linger {
                    match hubs.upgrade() {
                        Some(hubs) if !hubs.remove_if_idle(&hub) => idle_since = None,
                        _ => {
                            hub.close();
                            break;
                        }
                    }
                }
            }
        }
    }
    if let Some(hubs) = hubs.upgrade() {
        hubs.remove(&hub);
    }
    tracing::debug!(%family, "shared subscription ended");
}

#[cfg(test)]
mod tests {
    use super::*;
    use ff_core::stream_events::{CompletionOutcome, NewEvent};
    use ff_core::stream_subscribe::encode_memory;
    use ff_core::types::ExecutionId;

    fn event(seq: u64) -> DeliveryItem {
        DeliveryItem::Event {
            event: NewEvent::completion(ExecutionId::new(0), CompletionOutcome::Success)
                .into_event(encode_memory(Family::Completion, 1, seq), TimestampMs(0)),
            meta: EventMeta::new(),
        }
    }

    fn c(seq: u64) -> StreamCursor {
        encode_memory(Family::Completion, 1, seq)
    }

    fn seqs(j: &Joined) -> Vec<StreamCursor> {
        j.replay.iter().map(|i| i.cursor.clone()).collect()
    }

    #[test]
    fn joining_inside_the_window_replays_exactly_the_later_items() {
        let hub = Hub::new(Family::Completion, 16, 3);
        hub.deliver(DeliveryItem::CaughtUp { cursor: c(10) });
        for s in 11..=15 {
            hub.deliver(event(s));
        }
        // Kept: 13, 14, 15; base 12.
        assert_eq!(
            seqs(&hub.join_after(&c(12), false).unwrap()),
            [c(13), c(14), c(15)]
        );
        assert_eq!(seqs(&hub.join_after(&c(14), false).unwrap()), [c(15)]);
        assert!(hub.join_after(&c(15), false).unwrap().replay.is_empty());
        assert_eq!(
            hub.join_after(&c(11), false).unwrap_err(),
            JoinRefused::OutOfWindow
        );
        assert_eq!(
            hub.join_after(&c(16), false).unwrap_err(),
            JoinRefused::OutOfWindow
        );
        assert!(hub.join_after(&c(16), true).is_ok());
        assert_eq!(
            hub.join_after(&StreamCursor::beginning(), true)
                .unwrap_err(),
            JoinRefused::OutOfWindow
        );
        assert_eq!(hub.join_tail().unwrap().position, c(15));
    }

    #[test]
    fn positions_without_events_move_the_window_only_when_nothing_is_kept() {
        let hub = Hub::new(Family::Completion, 16, 3);
        hub.deliver(DeliveryItem::CaughtUp { cursor: c(10) });
        hub.deliver(DeliveryItem::Checkpoint { cursor: c(12) });
        assert!(hub.join_after(&c(12), false).is_ok());
        assert!(hub.join_after(&c(11), false).is_err());
        hub.deliver(event(13));
        hub.deliver(DeliveryItem::Checkpoint { cursor: c(20) });
        assert_eq!(seqs(&hub.join_after(&c(12), false).unwrap()), [c(13)]);
        assert!(hub.join_after(&c(17), false).unwrap().replay.is_empty());
    }

    #[test]
    fn a_receiver_joined_under_the_lock_gets_exactly_the_later_items() {
        let hub = Hub::new(Family::Completion, 16, 0);
        hub.deliver(DeliveryItem::CaughtUp { cursor: c(1) });
        hub.deliver(event(2));
        let mut joined = hub.join_after(&c(2), false).unwrap();
        assert!(joined.replay.is_empty());
        hub.deliver(event(3));
        match joined.rx.try_recv().unwrap() {
            HubMsg::Item(item) => assert_eq!(item.cursor, c(3)),
            other => panic!("{other:?}"),
        }
        assert!(joined.rx.try_recv().is_err());
        hub.fail(EngineError::unavailable("x"));
        assert!(matches!(joined.rx.try_recv(), Ok(HubMsg::Failed(_))));
        assert_eq!(hub.join_tail().unwrap_err(), JoinRefused::Gone);
    }
}
