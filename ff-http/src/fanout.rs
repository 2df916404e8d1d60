//! Fan-out: one shared live backend subscription per family (the live
//! *hub*), read by one task and broadcast to every caught-up client, and a
//! bounded set of shared *catch-up* hubs for clients behind it (see
//! [`crate::catchup`]).
//!
//! A hub subscribes with no filter (the live hub from the tail, a catch-up
//! hub from a client's position), encodes each event's SSE message once,
//! and sends it on a bounded `tokio::sync::broadcast` channel; each client
//! applies its own filter. The hub also keeps the last
//! [`GatewayConfig::hub_replay`](crate::GatewayConfig::hub_replay) items
//! and its *window* `[base, position]`: `position` is the latest position it
//! has delivered, `base` the position just before its oldest kept item.
//!
//! # Joining without gap or duplicate
//!
//! A client joins only at a [`Vouched`] position `p`: one the backend
//! resolved for it, or one a hub yielded (see [`crate::vouched`]) — never a
//! cursor admitted because its bytes sort inside the window. It joins
//! under the hub's state lock, which the hub also holds while it sends an
//! item and advances `position`. If `base <= p`, the hub has seen every
//! event after `p` up to `position`, and the kept items after `p` are
//! exactly those events; the broadcast receiver, subscribed under the same
//! lock, yields exactly the items after `position`. So the client replays
//! the kept items after `p`, then reads the receiver, skipping anything at
//! or before `p`. A `p` beyond `position` (the backend vouched for a
//! position the hub has not reached yet) joins with nothing to replay and
//! skips items up to `p`.
//!
//! A catch-up hub that reaches the live hub's window (its position at or
//! after the live hub's base) is *handed over*: it tells its clients, which
//! join the live hub at their own positions, and it ends once the last has
//! left. So is one that reaches the window of a catch-up hub ahead of it
//! (see [`crate::catchup`]): its clients join that hub instead, and its
//! slot frees for clients further behind. A client that falls behind the
//! broadcast buffer (`Lagged`) is placed again from its last position. A
//! hub also says when it has broadcast every event committed before its
//! backend subscription started (`BacklogRead`); a client that reads that
//! message, or `HandedOver`, or joins a hub past either, has been sent
//! everything it had to catch up with once its replay is done.
//!
//! # A stalled client costs only itself
//!
//! A catch-up hub reads no further ahead of its slowest client than its
//! replay window, so newcomers behind it can still join: it *holds back*
//! while a client has that many unread items — at most once per stall, for
//! the backend timeout. Then every client still that far behind that read
//! nothing meanwhile is *detached*: its receiver is dropped (freeing what
//! the hub kept for it), its next read answers `Lagged`, and it is placed
//! again from its own vouched position, as any lagging client is. A client
//! that reads on, however slowly, sets the hub's pace. While a hub holds
//! back with no client reading, a client is placed on it only when no
//! slot is free for a reader of its own (see [`crate::catchup`]). A handed-over hub detaches the clients that
//! have read nothing for the backend timeout, so a stalled client holds
//! no catch-up slot. The live hub never holds back: its stalled clients
//! lag. None of this changes where a client joins, so the gap-free join
//! above holds for every placement.
//!
//! The live hub ends when it has had no client for
//! [`GatewayConfig::hub_linger`](crate::GatewayConfig::hub_linger) while
//! no catch-up hub of its family runs (they hand their clients over to
//! it, so it stays for them), on
//! shutdown, and on a terminal backend error (which its clients receive as
//! an `ff-error` message).
//!
//! # Bounded backend streams
//!
//! A hub frees its slot (the family's live slot, or its place in the
//! catch-up pool) only after it has dropped its backend stream, and a new
//! hub is started only in a free slot: the bound on backend subscriptions
//! holds for the streams actually open, not merely for the hubs counted.

use std::cmp::Ordering;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering as AtomicOrdering};
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
use tokio::sync::{broadcast, watch, Notify};
use tokio::time::Instant;

use crate::catchup::CatchUpPool;
use crate::encode;
use crate::metrics::{HubStats, Metrics, SubscriptionGauge, SubscriptionKind};
use crate::vouched::Vouched;

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
}

/// How a held-back catch-up hub learns that its clients read on: while
/// `held` is set, every receive and every receiver dropped notifies (and
/// marks when). A hub held back with no client reading for [`STALLED`] is
/// *stalled*: no client is placed on it.
#[derive(Debug)]
pub(crate) struct HoldBack {
    held: AtomicBool,
    drained: Notify,
    /// Milliseconds after `born` of the hold's start or latest progress.
    progress_ms: AtomicU64,
    born: Instant,
}

/// How long a held-back hub may see no client read before it counts as
/// stalled (a client reading on, however slowly, sets its pace instead).
const STALLED: Duration = Duration::from_secs(1);

impl HoldBack {
    fn new() -> Self {
        Self {
            held: AtomicBool::new(false),
            drained: Notify::new(),
            progress_ms: AtomicU64::new(0),
            born: Instant::now(),
        }
    }

    fn mark(&self) {
        let ms = u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.progress_ms.store(ms, AtomicOrdering::Relaxed);
    }

    /// A client read a message or left.
    fn progressed(&self) {
        if self.held.load(AtomicOrdering::SeqCst) {
            self.mark();
            self.drained.notify_waiters();
        }
    }

    /// `true` while held back with no client reading for [`STALLED`].
    fn stalled(&self) -> bool {
        if !self.held.load(AtomicOrdering::SeqCst) {
            return false;
        }
        let at = Duration::from_millis(self.progress_ms.load(AtomicOrdering::Relaxed));
        self.born.elapsed().saturating_sub(at) >= STALLED
    }
}

/// A client's place on a hub: its broadcast receiver, which the hub takes
/// away (*detaches*) when the client has stalled it, and when the client
/// last read.
#[derive(Debug)]
struct Member {
    rx: tokio::sync::Mutex<Option<broadcast::Receiver<HubMsg>>>,
    /// Milliseconds after the hub's `born` of the client's latest read.
    read_at_ms: AtomicU64,
    born: Instant,
}

impl Member {
    fn read_now(&self) {
        let ms = self.born.elapsed().as_millis();
        self.read_at_ms.store(
            u64::try_from(ms).unwrap_or(u64::MAX),
            AtomicOrdering::Relaxed,
        );
    }

    /// How long since the client last read.
    fn idle(&self) -> Duration {
        let read_at = Duration::from_millis(self.read_at_ms.load(AtomicOrdering::Relaxed));
        self.born.elapsed().saturating_sub(read_at)
    }
}

/// A client's receiver of a hub's broadcast: it wakes the hub when the
/// hub is held back waiting for its clients to read. Once the hub has
/// detached it, it answers `Lagged`: the client is placed again from its
/// own position.
#[derive(Debug)]
pub(crate) struct HubReceiver {
    member: Option<Arc<Member>>,
    hold: Arc<HoldBack>,
}

impl HubReceiver {
    fn member(&self) -> &Member {
        self.member.as_ref().expect("the member lives until drop")
    }

    /// The next message (see [`broadcast::Receiver::recv`]).
    pub async fn recv(&mut self) -> Result<HubMsg, broadcast::error::RecvError> {
        let member = self.member();
        let msg = {
            let mut rx = member.rx.lock().await;
            match rx.as_mut() {
                Some(rx) => rx.recv().await,
                None => Err(broadcast::error::RecvError::Lagged(0)),
            }
        };
        member.read_now();
        self.hold.progressed();
        msg
    }

    /// The next message if one is ready (see
    /// [`broadcast::Receiver::try_recv`]).
    pub fn try_recv(&mut self) -> Result<HubMsg, broadcast::error::TryRecvError> {
        let member = self.member();
        let msg = match member.rx.try_lock() {
            Ok(mut rx) => match rx.as_mut() {
                Some(rx) => rx.try_recv(),
                None => Err(broadcast::error::TryRecvError::Lagged(0)),
            },
            Err(_) => Err(broadcast::error::TryRecvError::Empty),
        };
        if msg.is_ok() {
            member.read_now();
            self.hold.progressed();
        }
        msg
    }
}

impl Drop for HubReceiver {
    fn drop(&mut self) {
        drop(self.member.take());
        self.hold.progressed();
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
    fn new(family: Family, capacity: usize, keep: usize) -> Self {
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

    /// `true` while the hub waits for a client that reads nothing (see
    /// [`HoldBack`]): no client is placed on it meanwhile.
    pub fn is_held_back(&self) -> bool {
        self.hold.stalled()
    }

    /// A receiver of the hub's broadcast (call under the state lock).
    fn receiver(&self) -> HubReceiver {
        let member = Arc::new(Member {
            rx: tokio::sync::Mutex::new(Some(self.tx.subscribe())),
            read_at_ms: AtomicU64::new(0),
            born: self.born,
        });
        member.read_now();
        let mut members = self.members.lock().unwrap_or_else(|p| p.into_inner());
        members.retain(|m| m.strong_count() > 0);
        members.push(Arc::downgrade(&member));
        HubReceiver {
            member: Some(member),
            hold: self.hold.clone(),
        }
    }

    /// Detach every client for which `stalled` holds (given its unread
    /// messages and how long since it read): its receiver is dropped, so
    /// the hub no longer waits for it, nor keeps messages for it. A client
    /// busy receiving right now is reading, and is left alone. Returns how
    /// many were detached.
    fn detach(&self, stalled: impl Fn(usize, Duration) -> bool) -> usize {
        let members: Vec<Arc<Member>> = {
            let mut members = self.members.lock().unwrap_or_else(|p| p.into_inner());
            members.retain(|m| m.strong_count() > 0);
            members.iter().filter_map(Weak::upgrade).collect()
        };
        let mut detached = 0;
        for member in members {
            let Ok(mut rx) = member.rx.try_lock() else {
                continue;
            };
            if rx.as_ref().is_some_and(|r| stalled(r.len(), member.idle())) {
                drop(rx.take());
                detached += 1;
            }
        }
        detached
    }

    /// The hub's window `(base, position)`, when it has one.
    pub fn window(&self) -> Option<(StreamCursor, StreamCursor)> {
        let state = self.lock();
        Some((state.base.clone()?, state.position.clone()?))
    }

    /// `true` when the hub has seen every event after `p` (see
    /// [`HubState::covers`]).
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
        Ok(Joined {
            rx: self.receiver(),
            replay: VecDeque::new(),
            position: Vouched::reached_by_hub(position),
            settled: self.is_settled(),
        })
    }

    /// Join exactly after the vouched position `after`, when the hub has
    /// seen every event after it (it may lie beyond the hub's position:
    /// the client then skips items up to it).
    pub fn join_after(&self, after: &Vouched) -> Result<Joined, JoinRefused> {
        let after = after.cursor();
        let state = self.lock();
        if state.closed {
            return Err(JoinRefused::Gone);
        }
        let (Some(_), Some(position)) = (&state.base, &state.position) else {
            return Err(JoinRefused::Gone);
        };
        if !state.covers(after) {
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
            position: Vouched::reached_by_hub(position.clone()),
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

    /// Deliver one item of the shared subscription.
    fn deliver(&self, item: DeliveryItem) {
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
        tokio::spawn(run_hub(hub.clone(), Arc::downgrade(self)));
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
        let joined = Joined {
            rx: hub.receiver(),
            replay: VecDeque::new(),
            position: start,
            settled: false,
        };
        hub.joined_ever.store(true, AtomicOrdering::Release);
        tokio::spawn(run_hub(hub.clone(), Arc::downgrade(self)));
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
                let mut released = hub.released.subscribe();
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
    fn close_if_idle(&self, hub: &Arc<Hub>) -> bool {
        if self.catch_up.held_by(hub.family) > 0 {
            return false;
        }
        let _slots = self.slots();
        let mut state = hub.lock();
        if hub.tx.receiver_count() > 0 {
            return false;
        }
        state.closed = true;
        true
    }

    fn remove(&self, hub: &Arc<Hub>) {
        let mut slots = self.slots();
        if slots.get(&hub.family).is_some_and(|h| Arc::ptr_eq(h, hub)) {
            slots.remove(&hub.family);
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

/// The hub task: subscribe from the hub's start, deliver every item, end
/// when idle, on shutdown, or on a terminal error. A catch-up hub also
/// holds back while its slowest client's buffer is full (up to a limit),
/// hands over once it reaches the live hub's window, and ends as soon as
/// its last client has left.
async fn run_hub(hub: Arc<Hub>, hubs: Weak<Hubs>) {
    let Some(strong) = hubs.upgrade() else {
        hub.close();
        hub.released.send_replace(true);
        return;
    };
    let (backend, metrics, settings, mut shutdown) = (
        strong.backend.clone(),
        strong.metrics.clone(),
        strong.settings.clone(),
        strong.shutdown.clone(),
    );
    drop(strong);
    let family = hub.family;
    let (start, kind) = match &hub.role {
        Role::Live => (StreamCursor::empty(), SubscriptionKind::Shared),
        Role::CatchUp { start } => (start.clone(), SubscriptionKind::Own),
    };
    let catching_up = kind_is_catch_up(kind);
    let everything = SubscriptionFilter::default();
    let subscribed = tokio::select! {
        r = backend.subscribe_family(family, start, &everything) => r,
        _ = shutdown.wait_for(|s| *s) => {
            hub.close();
            finish(&hub, &hubs);
            return;
        }
    };
    let mut stream = match subscribed {
        Ok(stream) => stream,
        Err(e) => {
            tracing::debug!(%family, error = %e, "shared subscription could not start");
            hub.fail(e);
            finish(&hub, &hubs);
            return;
        }
    };
    let gauge = SubscriptionGauge::new(metrics.clone(), kind);
    tracing::debug!(%family, role = ?hub.role, "shared subscription started");
    let linger = if catching_up {
        settings.linger.min(Duration::from_secs(1))
    } else {
        settings.linger
    };
    let tick_every = (linger / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    let mut tick = tokio::time::interval(tick_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut idle_since: Option<tokio::time::Instant> = None;
    // Hold back within the replay window too, so the window still covers
    // the slowest client and newcomers behind it can join.
    let hold_at = match settings.keep {
        0 => settings.capacity * 3 / 4,
        keep => (settings.capacity * 3 / 4).min(keep),
    }
    .max(1);
    let mut handed_over_at: Option<Instant> = None;
    loop {
        if catching_up && hub.tx.len() >= hold_at {
            if hold_back(&hub, hold_at, settings.timeout, &mut shutdown).await {
                // Once per stall: whoever still has as much unread and read
                // nothing meanwhile is detached, and is placed again from
                // its own position when it reads on. A client that reads
                // on, however slowly, sets the hub's pace instead.
                let quiet = settings.timeout;
                let detached = hub.detach(|unread, idle| unread >= hold_at && idle >= quiet);
                Metrics::add(&metrics.clients_detached, detached as u64);
            }
            if let Some(hubs) = hubs.upgrade() {
                hubs.catch_up.hold_released();
            }
        }
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
                    tracing::debug!(%family, error = %e, "shared subscription ended");
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
                if let Some(at) = handed_over_at {
                    // Clients that have not moved to the live hub within
                    // the limit and read nothing meanwhile have stalled:
                    // they do not keep this reader's slot.
                    if at.elapsed() >= settings.timeout {
                        let limit = settings.timeout;
                        let detached = hub.detach(|unread, idle| unread > 0 && idle >= limit);
                        Metrics::add(&metrics.clients_detached, detached as u64);
                    }
                }
                if hub.tx.receiver_count() > 0 {
                    idle_since = None;
                    continue;
                }
                if catching_up {
                    let since = *idle_since.get_or_insert_with(tokio::time::Instant::now);
                    if hub.joined_ever.load(AtomicOrdering::Acquire) || since.elapsed() >= linger {
                        hub.close();
                        break;
                    }
                    continue;
                }
                let since = *idle_since.get_or_insert_with(tokio::time::Instant::now);
                if since.elapsed() >= linger {
                    match hubs.upgrade() {
                        Some(hubs) if !hubs.close_if_idle(&hub) => idle_since = None,
                        _ => {
                            hub.close();
                            break;
                        }
                    }
                }
            }
        }
        if catching_up && !hub.is_handed_over() {
            if let Some(hubs) = hubs.upgrade() {
                if reached_live(&hub, &hubs) {
                    hub.hand_over(None);
                } else {
                    hubs.catch_up.hand_over_to_one_ahead(&hub);
                }
                if hub.is_handed_over() {
                    handed_over_at = Some(Instant::now());
                }
            }
        }
    }
    // Close the backend stream before freeing the slot, so a new hub never
    // opens its subscription while this one is still open.
    drop(stream);
    drop(gauge);
    finish(&hub, &hubs);
    tracing::debug!(%family, role = ?hub.role, "shared subscription ended");
}

fn kind_is_catch_up(kind: SubscriptionKind) -> bool {
    matches!(kind, SubscriptionKind::Own)
}

/// Wait while the slowest client's buffer holds `hold_at` items or more,
/// at most `limit` (the backend timeout); `true` when the limit passed
/// (the caller then detaches the clients still that far behind). Woken by
/// its clients as they read or leave, never by polling; ends at once on
/// shutdown.
async fn hold_back(
    hub: &Hub,
    hold_at: usize,
    limit: Duration,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    let mut timed_out = false;
    let until = Instant::now() + limit;
    hub.hold.mark();
    hub.hold.held.store(true, AtomicOrdering::SeqCst);
    loop {
        let drained = hub.hold.drained.notified();
        let mut drained = std::pin::pin!(drained);
        drained.as_mut().enable();
        if hub.tx.len() < hold_at || hub.tx.receiver_count() == 0 {
            break;
        }
        tokio::select! {
            () = drained => {}
            () = tokio::time::sleep_until(until) => {
                timed_out = true;
                break;
            }
            _ = shutdown.wait_for(|s| *s) => break,
        }
    }
    hub.hold.held.store(false, AtomicOrdering::SeqCst);
    timed_out
}

/// `true` when the catch-up `hub`'s position lies in the live hub's window.
fn reached_live(hub: &Hub, hubs: &Hubs) -> bool {
    let Some(live) = hubs.existing(hub.family) else {
        return false;
    };
    let (Some((live_base, _)), Some((_, position))) = (live.window(), hub.window()) else {
        return false;
    };
    covers(&live_base, &position)
}

/// Unregister an ended hub, whose backend stream is closed: this frees its
/// slot.
fn finish(hub: &Arc<Hub>, hubs: &Weak<Hubs>) {
    if let Some(hubs) = hubs.upgrade() {
        match hub.role {
            Role::Live => hubs.remove(hub),
            Role::CatchUp { .. } => hubs.catch_up.ended(hub),
        }
    }
    hub.released.send_replace(true);
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
}
