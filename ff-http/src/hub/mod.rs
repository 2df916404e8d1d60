//! A hub: one shared, unfiltered backend subscription of a family, read by
//! one task (see [`crate::fanout`]) and broadcast to its clients, with the
//! window that lets a client join it without a gap or a duplicate. This is
//! the lowest layer of the gateway's fan-out: the catch-up pool
//! ([`crate::catchup`]) and the live-slot registry ([`crate::fanout`]) are
//! built on it, and it knows neither.
//!
//! A hub encodes each event's SSE message once and sends it on a bounded
//! `tokio::sync::broadcast` channel; each client applies its own filter.
//! The hub also keeps the last
//! [`GatewayConfig::hub_replay`](crate::GatewayConfig::hub_replay) items
//! and its *window* `[base, position]`: `position` is the latest position it
//! has delivered, `base` the position just before its oldest kept item.
//!
//! # Joining without gap or duplicate
//!
//! A client joins only at a [`Vouched`] position `p`: one the backend
//! resolved for it, or one a hub yielded (see [`crate::hub::vouched`]) — never a
//! cursor admitted because its bytes sort inside the window. A position
//! another hub yielded is admitted only when this hub has seen it itself
//! (it is the hub's base or position, or the cursor of an item it kept;
//! for a partitioned cursor, each partition's entry is one the hub saw in
//! that partition): two hubs may read two histories around a lossy
//! failover, and only positions of one history compare by their bytes. It joins
//! under the hub's state lock, which the hub also holds while it sends an
//! item and advances `position`. If `base <= p`, the hub has seen every
//! event after `p` up to `position`, and the kept items after `p` are
//! exactly those events; the broadcast receiver, subscribed under the same
//! lock, yields exactly the items after `position`. So the client replays
//! the kept items after `p`, then reads the receiver, skipping anything at
//! or before `p`. A `p` beyond `position` (the backend, or this hub,
//! vouched for a position the hub has not reached yet) joins with nothing
//! to replay and skips items up to `p`.
//!
//! A catch-up hub whose latest item the live hub has seen is *handed
//! over*: it tells its clients, which join the live hub at their own
//! positions once it has seen them too (it tells them again when it has
//! seen a later item), and it ends once the last has left. So is one whose
//! latest item a catch-up hub ahead of it has seen
//! (see [`crate::catchup`]): its clients join that hub instead, and its
//! slot frees for clients further behind. A client that falls behind the
//! broadcast buffer (`Lagged`) is placed again from its last position. A
//! hub also says when it has broadcast every event committed before its
//! backend subscription started (`BacklogRead`); a client that reads that
//! message, or `HandedOver`, or joins a hub past either, has been sent
//! everything it had to catch up with once its replay is done.
//!
//! How a stalled client is kept from holding a hub back is [`flow`]'s job;
//! none of it changes where a client joins, so the join above holds for
//! every placement.

mod flow;
mod seen;
pub(crate) mod vouched;

use std::cmp::Ordering;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;
use ff_core::backend::DeliveryItem;
use ff_core::engine_error::EngineError;
use ff_core::stream_events::{EventMeta, Family, StreamEvent};
use ff_core::stream_subscribe::{StreamCursor, VALKEY_PARTITIONED_BYTE};
use ff_core::types::TimestampMs;
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;

use crate::encode;
use crate::metrics::HubStats;
use vouched::Vouched;

pub(crate) use flow::{hold_back, HubReceiver};
use flow::{HoldBack, Member};

/// A hub's identity, naming which hub vouched for a position (see
/// [`vouched`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct HubId(u64);

impl HubId {
    fn next() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        Self(NEXT.fetch_add(1, AtomicOrdering::Relaxed))
    }
}

/// One item the hub delivers.
#[derive(Debug)]
pub(crate) struct HubItem {
    pub cursor: StreamCursor,
    pub body: HubBody,
    /// The hub that delivered it.
    pub hub: HubId,
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
    Corrupt { frame: Bytes, detail: String },
}

/// A broadcast message.
#[derive(Clone, Debug)]
pub(crate) enum HubMsg {
    Item(Arc<HubItem>),
    /// The shared subscription ended with this terminal error.
    Failed(EngineError),
    /// This catch-up hub reached the live hub's window: move over.
    HandedOver,
    /// This hub has sent every event committed before its backend
    /// subscription started (the subscription's `CaughtUp`).
    BacklogRead,
}

/// What a hub is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// The family's live subscription, from the tail.
    Live,
    /// A catch-up reader that started exactly after `start`.
    CatchUp { start: StreamCursor },
}

#[derive(Clone, Debug)]
pub(crate) enum Status {
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
    /// The cursor of the latest item (event or corrupt entry) delivered.
    tip: Option<StreamCursor>,
    closed: bool,
}

impl HubState {
    /// `true` when the hub has seen every event after `p`. A hub that
    /// started at `beginning` and still keeps its first event covers
    /// `beginning` and every position at or after that event; a position
    /// before it may have been trimmed away before the hub started, which
    /// only the backend can judge.
    fn covers(&self, p: &StreamCursor) -> bool {
        match &self.base {
            None => false,
            Some(base) if base.is_beginning() => {
                p.is_beginning()
                    || self
                        .kept
                        .front()
                        .is_some_and(|first| at_or_before(&first.cursor, p))
            }
            Some(base) => covers(base, p),
        }
    }

    /// `true` when the hub `me` may place a client at `p` (see the module
    /// docs): it has seen every event after `p`, and `p` is a position of
    /// its own history — the backend vouched for it, this hub did, or this
    /// hub has itself seen it.
    fn admits(&self, p: &Vouched, me: HubId, family: Family) -> bool {
        self.covers(p.cursor())
            && match p.by() {
                None => true,
                Some(by) => by == me || self.has_seen(p.cursor(), family),
            }
    }

    /// The positions the hub has seen within its window, latest first:
    /// its position, its kept items' cursors, its base.
    fn seen_latest_first(&self) -> impl Iterator<Item = &StreamCursor> {
        self.position
            .iter()
            .chain(self.kept.iter().rev().map(|item| &item.cursor))
            .chain(self.base.iter())
    }

    /// `true` when the hub has seen the position `p` itself, within its
    /// window. For a partitioned cursor, two hubs that merged the same
    /// events in different orders reach different merged positions, so
    /// each partition's entry (id and witness) must be one the hub saw in
    /// that partition.
    fn has_seen(&self, p: &StreamCursor, family: Family) -> bool {
        if p.as_bytes().first() == Some(&VALKEY_PARTITIONED_BYTE) {
            return seen::each_partition(family, p, self.seen_latest_first());
        }
        for seen in self.seen_latest_first() {
            match seen.position_cmp(p) {
                Some(Ordering::Equal) => return true,
                Some(Ordering::Less) => return false,
                _ => {}
            }
        }
        false
    }
}

/// A family's shared subscription, as seen by clients.
#[derive(Debug)]
pub(crate) struct Hub {
    family: Family,
    pub(crate) role: Role,
    pub(crate) tx: broadcast::Sender<HubMsg>,
    state: Mutex<HubState>,
    pub(crate) status: watch::Sender<Status>,
    keep: usize,
    /// Set once a catch-up hub has reached the live hub's window, or that
    /// of a catch-up hub ahead of it.
    handed_over: AtomicBool,
    /// Set once the backend subscription has yielded every event committed
    /// before it started (its `CaughtUp`), under the state lock.
    backlog_read: AtomicBool,
    /// The catch-up hub ahead this one handed its clients over to (none:
    /// the live hub).
    successor: Mutex<Option<Weak<Hub>>>,
    id: HubId,
    /// Wakes the hub task while it holds back for its slowest client.
    hold: Arc<HoldBack>,
    /// The clients' places, for detaching the stalled ones.
    members: Mutex<Vec<Weak<Member>>>,
    born: Instant,
    /// Set once the hub task has dropped its backend stream (and, for a
    /// live hub, left its family's slot).
    released: watch::Sender<bool>,
    /// Set once any client has joined.
    joined_ever: AtomicBool,
    /// Set once the hub has delivered (its start was accepted).
    ready_ever: AtomicBool,
    /// Milliseconds from the latest event's `at` to its arrival; `i64::MIN`
    /// before the first event.
    lag_ms: AtomicI64,
}

/// A successful join: replay `replay`, then read `rx`.
#[derive(Debug)]
pub(crate) struct Joined {
    pub rx: HubReceiver,
    pub replay: VecDeque<Arc<HubItem>>,
    /// The hub's position at the join.
    pub position: Vouched,
    /// The client's position, as admitted by the hub (see
    /// [`Vouched::admitted_by`]).
    pub at: Vouched,
    /// Whether the hub had, at the join, sent everything it catches up
    /// with: it is the live hub, it was handed over, or it had read its
    /// backend subscription's backlog. Otherwise its broadcast will say
    /// so ([`HubMsg::HandedOver`], [`HubMsg::BacklogRead`]).
    pub settled: bool,
}

/// Why a client could not join a hub.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum JoinRefused {
    /// The hub has ended; look it up again.
    Gone,
    /// The hub has not seen every event after the position (or it is
    /// not comparable).
    OutOfWindow,
}

/// `true` when a hub whose window starts at `base` has seen every event
/// after `p`. A `beginning` base covers only `beginning`: such a hub read
/// from the oldest event retained when it started, and cannot tell whether
/// an older position was trimmed away since (see [`HubState::covers`] for a
/// hub that has delivered).
pub(crate) fn covers(base: &StreamCursor, p: &StreamCursor) -> bool {
    if base.is_beginning() {
        return p.is_beginning();
    }
    matches!(
        p.position_cmp(base),
        Some(Ordering::Greater | Ordering::Equal)
    )
}

/// `true` when `a` is at or before `b` (comparable positions only).
pub(crate) fn at_or_before(a: &StreamCursor, b: &StreamCursor) -> bool {
    matches!(a.position_cmp(b), Some(Ordering::Less | Ordering::Equal))
}

impl Hub {
    /// The family's live hub, not yet started.
    pub(crate) fn new(family: Family, capacity: usize, keep: usize) -> Self {
        Self::with_role(family, capacity, keep, Role::Live)
    }

    /// A hub in `role`; a catch-up hub's window starts as `[start, start]`.
    pub(crate) fn with_role(family: Family, capacity: usize, keep: usize, role: Role) -> Self {
        let (tx, _) = broadcast::channel(capacity);
        let state = match &role {
            Role::Live => HubState::default(),
            Role::CatchUp { start } => HubState {
                base: Some(start.clone()),
                position: Some(start.clone()),
                ..HubState::default()
            },
        };
        Self {
            family,
            role,
            tx,
            state: Mutex::new(state),
            status: watch::Sender::new(Status::Starting),
            keep,
            handed_over: AtomicBool::new(false),
            backlog_read: AtomicBool::new(false),
            successor: Mutex::new(None),
            id: HubId::next(),
            hold: Arc::new(HoldBack::new()),
            members: Mutex::new(Vec::new()),
            born: Instant::now(),
            released: watch::Sender::new(false),
            joined_ever: AtomicBool::new(false),
            ready_ever: AtomicBool::new(false),
            lag_ms: AtomicI64::new(i64::MIN),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The latest position the hub has delivered, if any.
    pub(crate) fn position(&self) -> Option<StreamCursor> {
        self.lock().position.clone()
    }

    /// Mark the hub's backend stream dropped (and, for a live hub, its
    /// family's slot left).
    pub(crate) fn release(&self) {
        self.released.send_replace(true);
    }

    /// Watch for [`Hub::release`].
    pub(crate) fn released(&self) -> watch::Receiver<bool> {
        self.released.subscribe()
    }

    /// `true` once any client has joined.
    pub(crate) fn has_had_client(&self) -> bool {
        self.joined_ever.load(AtomicOrdering::Acquire)
    }

    /// Join the creator of a catch-up hub at the hub's start, before the
    /// hub runs, so it never reads further ahead of it than its buffer
    /// allows.
    pub(crate) fn join_as_creator(&self, start: Vouched) -> Joined {
        // The hub's own subscription judges `start` as it subscribes.
        let start = start.admitted_by(self.id);
        let joined = Joined {
            rx: self.receiver(),
            replay: VecDeque::new(),
            position: start.clone(),
            at: start,
            settled: false,
        };
        self.joined_ever.store(true, AtomicOrdering::Release);
        joined
    }

    /// Close the hub if no client holds a receiver; `true` when closed.
    pub(crate) fn close_if_no_client(&self) -> bool {
        let mut state = self.lock();
        if self.tx.receiver_count() > 0 {
            return false;
        }
        state.closed = true;
        true
    }

    /// The family this hub reads.
    pub fn family(&self) -> Family {
        self.family
    }

    /// `true` once the hub delivers (its start position was accepted).
    pub fn is_ready(&self) -> bool {
        matches!(*self.status.borrow(), Status::Ready)
    }

    /// `true` if the hub ever delivered (its start position was accepted).
    pub fn was_ready(&self) -> bool {
        self.ready_ever.load(AtomicOrdering::Acquire)
    }

    /// `true` once the hub has ended (closed or failed).
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// `true` once a catch-up hub has reached the live hub's window.
    pub fn is_handed_over(&self) -> bool {
        self.handed_over.load(AtomicOrdering::Acquire)
    }
    /// The hub's window `(base, position)`, when it has one.
    pub fn window(&self) -> Option<(StreamCursor, StreamCursor)> {
        let state = self.lock();
        Some((state.base.clone()?, state.position.clone()?))
    }

    /// `true` when the hub has seen every event after `p` (see
    /// [`HubState::covers`]); placement asks [`Hub::admits`].
    #[cfg(test)]
    pub fn covers(&self, p: &StreamCursor) -> bool {
        self.lock().covers(p)
    }

    /// Join at the hub's current position (a tail start).
    pub fn join_tail(&self) -> Result<Joined, JoinRefused> {
        let state = self.lock();
        if state.closed {
            return Err(JoinRefused::Gone);
        }
        let position = state.position.clone().ok_or(JoinRefused::Gone)?;
        self.joined_ever.store(true, AtomicOrdering::Release);
        let position = Vouched::reached_by_hub(self.id, position);
        Ok(Joined {
            rx: self.receiver(),
            replay: VecDeque::new(),
            position: position.clone(),
            at: position,
            settled: self.is_settled(),
        })
    }

    /// The hub's identity.
    #[cfg(test)]
    pub(crate) fn id(&self) -> HubId {
        self.id
    }

    /// `true` when the hub would admit a client at `p` now (see
    /// [`Hub::join_after`]).
    pub fn admits(&self, p: &Vouched) -> bool {
        self.lock().admits(p, self.id, self.family)
    }

    /// Where a client that has read everything this hub delivered is: the
    /// cursor of its latest item, or else its start (its position, for a
    /// live hub), vouched by this hub.
    pub fn tip(&self) -> Option<Vouched> {
        let state = self.lock();
        let tip = match (&state.tip, &self.role) {
            (Some(tip), _) => tip.clone(),
            (None, Role::CatchUp { start }) => start.clone(),
            (None, Role::Live) => state.position.clone()?,
        };
        Some(Vouched::reached_by_hub(self.id, tip))
    }

    /// Join exactly after the vouched position `vouched`, when the hub
    /// admits it (see [`HubState::admits`]): it has seen every event after
    /// it (it may lie beyond the hub's position when the backend or this
    /// hub vouched for it: the client then skips items up to it), and it is
    /// a position of this hub's history.
    pub fn join_after(&self, vouched: &Vouched) -> Result<Joined, JoinRefused> {
        let after = vouched.cursor();
        let state = self.lock();
        if state.closed {
            return Err(JoinRefused::Gone);
        }
        let (Some(_), Some(position)) = (&state.base, &state.position) else {
            return Err(JoinRefused::Gone);
        };
        if !state.admits(vouched, self.id, self.family) {
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
        self.joined_ever.store(true, AtomicOrdering::Release);
        Ok(Joined {
            rx: self.receiver(),
            replay,
            position: Vouched::reached_by_hub(self.id, position.clone()),
            at: vouched.clone().admitted_by(self.id),
            settled: self.is_settled(),
        })
    }

    /// See [`Joined::settled`]; read under the state lock, which the hub
    /// holds while it sets either flag and says so.
    fn is_settled(&self) -> bool {
        self.role == Role::Live
            || self.is_handed_to_live()
            || self.backlog_read.load(AtomicOrdering::Acquire)
    }

    /// Whether this catch-up hub was handed over to the live hub (not to a
    /// catch-up hub ahead, which is still catching up itself).
    pub fn is_handed_to_live(&self) -> bool {
        self.handed_over.load(AtomicOrdering::Acquire)
            && self
                .successor
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_none()
    }

    /// The catch-up hub this one handed its clients over to, while it
    /// runs (none: they go to the live hub).
    pub fn successor(&self) -> Option<Arc<Hub>> {
        let successor = self.successor.lock().unwrap_or_else(|p| p.into_inner());
        successor
            .as_ref()
            .and_then(Weak::upgrade)
            .filter(|h| !h.is_closed())
    }

    /// Mark a catch-up hub handed over (to `successor`, or to the live hub)
    /// and tell its clients. A hub is handed over once: later calls change
    /// nothing.
    pub(crate) fn hand_over(&self, successor: Option<&Arc<Hub>>) {
        let _state = self.lock();
        if !self.handed_over.load(AtomicOrdering::Acquire) {
            *self.successor.lock().unwrap_or_else(|p| p.into_inner()) =
                successor.map(Arc::downgrade);
            self.handed_over.store(true, AtomicOrdering::Release);
            let _ = self.tx.send(HubMsg::HandedOver);
        }
    }

    /// Tell the clients of a handed-over hub again that they should move
    /// (the hub it was handed to has since seen where they are).
    pub(crate) fn remind_handed_over(&self) {
        let _state = self.lock();
        if self.handed_over.load(AtomicOrdering::Acquire) {
            let _ = self.tx.send(HubMsg::HandedOver);
        }
    }

    /// Deliver one item of the shared subscription.
    pub(crate) fn deliver(&self, item: DeliveryItem) {
        let cursor = item.cursor().clone();
        let caught_up = matches!(item, DeliveryItem::CaughtUp { .. });
        let hub_item = match item {
            DeliveryItem::Event { event, meta } => {
                let lag = TimestampMs::now().0.saturating_sub(event.at().0);
                self.lag_ms.store(lag, AtomicOrdering::Relaxed);
                let frame = encode::event_frame(&event, &meta);
                Some(HubBody::Event { event, meta, frame })
            }
            DeliveryItem::Corrupt { cursor, detail } => Some(HubBody::Corrupt {
                frame: corrupt_frame(&cursor, &detail),
                detail,
            }),
            _ => None,
        };
        let mut state = self.lock();
        match hub_item {
            Some(body) => {
                let item = Arc::new(HubItem {
                    cursor: cursor.clone(),
                    body,
                    hub: self.id,
                });
                state.tip = Some(cursor.clone());
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
        if caught_up && !self.backlog_read.swap(true, AtomicOrdering::AcqRel) {
            let _ = self.tx.send(HubMsg::BacklogRead);
        }
        drop(state);
        self.ready_ever.store(true, AtomicOrdering::Release);
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
    pub(crate) fn fail(&self, err: EngineError) {
        let mut state = self.lock();
        state.closed = true;
        let _ = self.tx.send(HubMsg::Failed(err.clone()));
        drop(state);
        self.status.send_replace(Status::Failed(err));
    }

    /// End the hub (no terminal error).
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.status.send_replace(Status::Closed);
    }

    /// The hub's statistics, for `/metrics` and `/v1/status`.
    pub(crate) fn stats(&self) -> HubStats {
        let lag = self.lag_ms.load(AtomicOrdering::Relaxed);
        HubStats {
            family: self.family,
            clients: self.tx.receiver_count(),
            delivery_lag_ms: (lag != i64::MIN).then_some(lag),
            position: self.lock().position.clone(),
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

/// Wait until `hub` is ready (or failed, closed, or the deadline passed).
pub(crate) async fn wait_ready(
    hub: &Hub,
    deadline: tokio::time::Instant,
) -> Result<(), StartError> {
    let mut status = hub.status.subscribe();
    let waited = tokio::time::timeout_at(
        deadline,
        status.wait_for(|s| !matches!(s, Status::Starting)),
    )
    .await;
    let status = match waited {
        Err(_) => return Err(StartError::Timeout),
        Ok(Err(_)) => return Err(StartError::ShuttingDown),
        Ok(Ok(s)) => s.clone(),
    };
    match status {
        Status::Ready => Ok(()),
        Status::Failed(e) => Err(StartError::Engine(e)),
        Status::Closed | Status::Starting => Err(StartError::ShuttingDown),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ff_backend_memory::cursor_codec::encode_memory;
    use ff_core::stream_events::{CompletionOutcome, NewEvent};
    use ff_core::types::ExecutionId;

    fn event(seq: u64) -> DeliveryItem {
        event_at(encode_memory(Family::Completion, 1, seq))
    }

    fn event_at(cursor: StreamCursor) -> DeliveryItem {
        DeliveryItem::Event {
            event: NewEvent::completion(ExecutionId::new(0), CompletionOutcome::Success)
                .into_event(cursor, TimestampMs(0)),
            meta: EventMeta::new(),
        }
    }

    /// A position `hub` delivered.
    fn by(hub: &Hub, cursor: StreamCursor) -> Vouched {
        Vouched::reached_by_hub(hub.id(), cursor)
    }

    fn c(seq: u64) -> StreamCursor {
        encode_memory(Family::Completion, 1, seq)
    }

    fn v(seq: u64) -> Vouched {
        Vouched::assumed(c(seq))
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
            seqs(&hub.join_after(&v(12)).unwrap()),
            [c(13), c(14), c(15)]
        );
        assert_eq!(seqs(&hub.join_after(&v(14)).unwrap()), [c(15)]);
        assert!(hub.join_after(&v(15)).unwrap().replay.is_empty());
        assert_eq!(
            hub.join_after(&v(11)).unwrap_err(),
            JoinRefused::OutOfWindow
        );
        // A vouched position the hub has not reached: nothing to replay.
        assert!(hub.join_after(&v(16)).unwrap().replay.is_empty());
        assert_eq!(
            hub.join_after(&Vouched::beginning()).unwrap_err(),
            JoinRefused::OutOfWindow
        );
        assert_eq!(hub.join_tail().unwrap().position.cursor(), &c(15));
    }

    #[test]
    fn positions_without_events_move_the_window_only_when_nothing_is_kept() {
        let hub = Hub::new(Family::Completion, 16, 3);
        hub.deliver(DeliveryItem::CaughtUp { cursor: c(10) });
        hub.deliver(DeliveryItem::Checkpoint { cursor: c(12) });
        assert!(hub.join_after(&v(12)).is_ok());
        assert!(hub.join_after(&v(11)).is_err());
        hub.deliver(event(13));
        hub.deliver(DeliveryItem::Checkpoint { cursor: c(20) });
        assert_eq!(seqs(&hub.join_after(&v(12)).unwrap()), [c(13)]);
        assert!(hub.join_after(&v(17)).unwrap().replay.is_empty());
    }

    #[test]
    fn a_receiver_joined_under_the_lock_gets_exactly_the_later_items() {
        let hub = Hub::new(Family::Completion, 16, 0);
        hub.deliver(DeliveryItem::CaughtUp { cursor: c(1) });
        hub.deliver(event(2));
        let mut joined = hub.join_after(&v(2)).unwrap();
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

    #[test]
    fn a_hub_admits_a_position_another_hub_vouched_only_when_it_has_seen_it() {
        // The live hub reads one history: 11 and 13 (its window).
        let live = Hub::new(Family::Completion, 16, 8);
        live.deliver(DeliveryItem::CaughtUp { cursor: c(10) });
        live.deliver(event(11));
        live.deliver(event(13));
        // A catch-up hub reading another history delivered 12, which sorts
        // between the live hub's 11 and 13 but was never one of its events.
        let other = Hub::with_role(Family::Completion, 16, 8, Role::CatchUp { start: c(10) });
        other.deliver(event(12));
        let stranger = by(&other, c(12));
        assert!(live.covers(&c(12)), "its bytes sort inside the window");
        assert!(!live.admits(&stranger));
        assert_eq!(
            live.join_after(&stranger).unwrap_err(),
            JoinRefused::OutOfWindow
        );
        // Nor is the other hub's latest item, so it would not hand over.
        assert_eq!(other.tip(), Some(stranger));
        // Positions the live hub has seen itself are admitted: its base, a
        // kept item, its position.
        for seen in [10, 11, 13] {
            let joined = live.join_after(&by(&other, c(seen))).expect("seen");
            assert_eq!(joined.at.cursor(), &c(seen));
            assert_eq!(joined.at.by(), Some(live.id()), "now the live hub's");
        }
        // A position beyond its own is not seen yet.
        assert!(live.join_after(&by(&other, c(14))).is_err());
        // The backend judged the store itself, and the live hub its own
        // history: those compare by their bytes.
        assert!(live.join_after(&v(12)).is_ok());
        assert!(live.join_after(&by(&live, c(12))).is_ok());
        assert!(live.join_after(&v(14)).is_ok());
    }

    fn parts(family: Family, at: [(u64, Option<u32>); 2]) -> StreamCursor {
        use ff_core::stream_subscribe::{
            encode_valkey_partitioned, PartitionedPosition, ValkeyPosition,
        };
        let mut position =
            PartitionedPosition::all_at(2, ValkeyPosition { ms: 0, seq: 0 }).unwrap();
        for (partition, (ms, witness)) in (0u16..).zip(at) {
            position
                .set_witnessed(partition, ValkeyPosition { ms, seq: 0 }, witness)
                .unwrap();
        }
        encode_valkey_partitioned(family, &position)
    }

    #[test]
    fn a_partitioned_position_is_admitted_when_the_hub_saw_each_partitions_entry() {
        let f = Family::Completion;
        let w = |ms: u64| Some(ms as u32 + 1000);
        let at = |a: u64, b: u64| parts(f, [(a, w(a)), (b, w(b))]);
        // The live hub merged partition 0 first: (1,1) (3,1) (3,3) (5,3).
        let live = Hub::new(f, 16, 8);
        live.deliver(DeliveryItem::CaughtUp { cursor: at(1, 1) });
        for cursor in [at(3, 1), at(3, 3), at(5, 3)] {
            live.deliver(event_at(cursor));
        }
        let other = Hub::with_role(f, 16, 8, Role::CatchUp { start: at(1, 1) });
        // Another hub merged partition 1 first: (1,3), a merged position
        // the live hub never had, of entries it saw each.
        assert!(live.join_after(&by(&other, at(1, 3))).is_ok());
        assert!(live.join_after(&by(&other, at(5, 3))).is_ok());
        // An entry of partition 0 between two of the live hub's (one of a
        // lost history) is not, though the position sorts in the window.
        let lost = at(4, 3);
        assert!(live.covers(&lost));
        assert!(live.join_after(&by(&other, lost.clone())).is_err());
        assert!(
            live.join_after(&Vouched::assumed(lost)).is_ok(),
            "the backend's verdict"
        );
        // Nor is the live hub's entry id with another entry's witness.
        let forged = parts(f, [(3, Some(7)), (3, w(3))]);
        assert!(live.join_after(&by(&other, forged)).is_err());
        // Nor one ahead of what it has seen in a partition.
        assert!(live.join_after(&by(&other, at(5, 4))).is_err());
    }
}
