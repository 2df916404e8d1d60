//! Placing a client that starts behind the live hub: on a shared catch-up
//! hub, of which each family has a bounded number.
//!
//! Invariant: per family the gateway holds at most
//! [`GatewayConfig::max_family_subscriptions`](crate::GatewayConfig::max_family_subscriptions)
//! backend subscriptions — the live hub and up to that many minus one
//! catch-up hubs — however many clients arrive, and every client still
//! gets exactly the events after its position.
//!
//! A client is placed only at a [`Vouched`] position `p` — resolved by the
//! backend when the client connected, or yielded by a hub since (see
//! [`crate::vouched`]); no hub admits a cursor because its bytes sort
//! inside the hub's window. It is placed, in order of preference:
//! 1. on the live hub, when the live hub has seen every event after `p`
//!    (its window starts at or before `p`);
//! 2. on a ready catch-up hub whose window holds `p` and that is not
//!    holding back for a stalled client: it replays what the hub kept
//!    after `p` at once;
//! 3. behind a catch-up hub that is still starting from at or before `p`:
//!    it waits for that hub, then goes to 2;
//! 4. on a new catch-up hub from `p`, when a slot is free (the backend
//!    judges `p` again as the hub subscribes: a position that expired
//!    since fails that hub alone, and only its creator receives the error);
//! 5. when no slot is free, on a ready catch-up hub as in 2 that *is*
//!    holding back for a stalled client (it replays its window at once and
//!    delivers on within one hold), or else on one whose window starts at
//!    or before `p` but has not reached `p` (the client skips what it
//!    delivers up to `p`): a queued client would wait for a reader to end;
//! 6. otherwise it queues. When a catch-up hub ends, its slot goes to a new
//!    hub from the *oldest* queued position, which every other queued
//!    client can then join by 3: a reconnect storm is served in one pass.
//!
//! A catch-up hub hands its clients over to the live hub once it reaches the
//! live hub's window, or to a catch-up hub ahead of it once it reaches that
//! hub's window (so readers that meet share one slot, and the other frees
//! for clients further behind), and ends when its last client has left.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use ff_core::engine_error::EngineError;
use ff_core::stream_events::Family;
use ff_core::stream_subscribe::StreamCursor;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::fanout::{at_or_before, covers, wait_ready, Hub, Hubs, Joined, Role, StartError};
use crate::vouched::Vouched;

/// A queued client.
#[derive(Debug)]
struct Waiter {
    family: Family,
    cursor: StreamCursor,
    /// Set when a hub started from exactly this position failed.
    verdict: Mutex<Option<EngineError>>,
    /// Set when a freed slot was given to this waiter.
    granted: AtomicBool,
}

#[derive(Debug, Default)]
struct PoolState {
    hubs: Vec<Arc<Hub>>,
    waiters: Vec<Arc<Waiter>>,
}

/// The catch-up hubs of every family and the clients queued for one.
pub(crate) struct CatchUpPool {
    per_family: usize,
    state: Mutex<PoolState>,
    /// Bumped whenever a catch-up hub starts, becomes ready or ends.
    changes: watch::Sender<u64>,
}

/// `true` when `a` comes strictly before `b` (`beginning` before all).
fn earlier(a: &StreamCursor, b: &StreamCursor) -> bool {
    if a.is_beginning() {
        return !b.is_beginning();
    }
    matches!(a.position_cmp(b), Some(std::cmp::Ordering::Less))
}

fn start_of(hub: &Hub) -> Option<&StreamCursor> {
    match &hub.role {
        Role::CatchUp { start } => Some(start),
        Role::Live => None,
    }
}

/// What placing a client decided, under the pool's lock.
enum Decision {
    Joined(Arc<Hub>, Joined),
    Created(Arc<Hub>, Joined),
    WaitFor(Arc<Hub>),
    Queued,
    Failed(EngineError),
}

impl CatchUpPool {
    pub fn new(per_family: usize) -> Self {
        Self {
            per_family: per_family.max(1),
            state: Mutex::new(PoolState::default()),
            changes: watch::Sender::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bump(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A catch-up hub stopped holding back: clients queued meanwhile may
    /// join it now.
    pub fn hold_released(&self) {
        if !self.lock().waiters.is_empty() {
            self.bump();
        }
    }

    fn decide(
        &self,
        hubs: &Arc<Hubs>,
        family: Family,
        p: &Vouched,
        queued: &mut Option<Arc<Waiter>>,
    ) -> Decision {
        let mut state = self.lock();
        if let Some(w) = queued.as_ref() {
            if let Some(e) = w.verdict.lock().unwrap_or_else(|e| e.into_inner()).take() {
                state.waiters.retain(|x| !Arc::ptr_eq(x, w));
                return Decision::Failed(e);
            }
        }
        // A closed hub holds its slot until its backend stream is dropped.
        let held_slots = state.hubs.iter().filter(|h| h.family() == family).count();
        let family_hubs: Vec<&Arc<Hub>> = state
            .hubs
            .iter()
            .filter(|h| h.family() == family && !h.is_closed())
            .collect();
        // 2: a ready hub that has seen everything after `p` and has
        // reached it (it serves the client at once); prefer the one closest
        // behind `p`, and one that is not held back.
        let mut best: Option<(&Arc<Hub>, StreamCursor)> = None;
        let mut behind: Option<(&Arc<Hub>, StreamCursor)> = None;
        let mut held_back: Option<(&Arc<Hub>, StreamCursor)> = None;
        for hub in family_hubs.iter().filter(|h| h.is_ready()) {
            let Some((base, position)) = hub.window() else {
                continue;
            };
            if !hub.covers(p.cursor()) {
                continue;
            }
            let pick = if hub.is_held_back() {
                &mut held_back
            } else if at_or_before(p.cursor(), &position) {
                &mut best
            } else {
                &mut behind
            };
            if pick.as_ref().is_none_or(|(_, b)| earlier(b, &base)) {
                *pick = Some((hub, base));
            }
        }
        if let Some((hub, _)) = best {
            if let Ok(joined) = hub.join_after(p) {
                let hub = hub.clone();
                drop(state);
                self.dequeue(queued);
                return Decision::Joined(hub, joined);
            }
        }
        // 3: a hub still starting from at or before `p`.
        if let Some(hub) = family_hubs
            .iter()
            .find(|h| !h.is_ready() && start_of(h).is_some_and(|s| covers(s, p.cursor())))
        {
            return Decision::WaitFor((*hub).clone());
        }
        // 4: a free slot (or one given to this client when it was freed).
        let mine = queued
            .as_ref()
            .is_some_and(|w| w.granted.load(Ordering::Acquire));
        let reserved = state
            .waiters
            .iter()
            .filter(|w| w.family == family && w.granted.load(Ordering::Acquire))
            .filter(|w| !queued.as_ref().is_some_and(|q| Arc::ptr_eq(q, w)))
            .count();
        if mine || held_slots + reserved < self.per_family {
            let (hub, joined) = hubs.start_catch_up(family, p.clone());
            state.hubs.push(hub.clone());
            if let Some(w) = queued.take() {
                state.waiters.retain(|x| !Arc::ptr_eq(x, &w));
            }
            drop(state);
            self.bump();
            return Decision::Created(hub, joined);
        }
        // 5: no reader of its own is possible now, so a hub that has seen
        // everything after `p` is the quickest place: one held back for a
        // stalled client replays its window at once and delivers on when
        // its hold ends, within the backend timeout; one behind `p`
        // delivers from `p` once it gets there. A queue would wait for a
        // slot to free, which takes as long as the readers ahead take to
        // catch up.
        let joined = [held_back, behind]
            .into_iter()
            .flatten()
            .find_map(|(hub, _)| Some((hub.clone(), hub.join_after(p).ok()?)));
        if let Some((hub, joined)) = joined {
            drop(state);
            self.dequeue(queued);
            return Decision::Joined(hub, joined);
        }
        // 6: queue.
        queued.get_or_insert_with(|| {
            let w = Arc::new(Waiter {
                family,
                cursor: p.cursor().clone(),
                verdict: Mutex::new(None),
                granted: AtomicBool::new(false),
            });
            state.waiters.push(w.clone());
            w
        });
        Decision::Queued
    }

    /// Hand the catch-up `hub` over to a catch-up hub ahead of it whose
    /// window holds its position (one that is neither handed over nor held
    /// back for a stalled client), if there is one: its clients move there
    /// at their own positions, and its slot frees once they have. Decided
    /// under the pool's lock, so two hubs never hand over to each other.
    pub fn hand_over_to_one_ahead(&self, hub: &Arc<Hub>) {
        let Some((_, position)) = hub.window() else {
            return;
        };
        let state = self.lock();
        let ahead = state.hubs.iter().find(|h| {
            !Arc::ptr_eq(h, hub)
                && h.family() == hub.family()
                && h.is_ready()
                && !h.is_closed()
                && !h.is_handed_over()
                && !h.is_held_back()
                && h.covers(&position)
                && h.window().is_some_and(|(_, p)| earlier(&position, &p))
        });
        if let Some(ahead) = ahead {
            hub.hand_over(Some(ahead));
        }
    }

    /// Take a client out of the queue (placed elsewhere, or gone). A slot
    /// it was given and did not use goes to the next oldest waiter.
    fn dequeue(&self, queued: &mut Option<Arc<Waiter>>) {
        let Some(w) = queued.take() else {
            return;
        };
        let mut state = self.lock();
        state.waiters.retain(|x| !Arc::ptr_eq(x, &w));
        if w.granted.load(Ordering::Acquire) {
            grant_oldest(&state, w.family);
            drop(state);
            self.bump();
        }
    }

    /// Clients queued now (all families).
    #[cfg(test)]
    pub(crate) fn queued(&self) -> usize {
        self.lock().waiters.len()
    }

    /// Catch-up hubs of `family` holding a slot now.
    pub(crate) fn held_by(&self, family: Family) -> usize {
        self.lock()
            .hubs
            .iter()
            .filter(|h| h.family() == family)
            .count()
    }

    /// A catch-up hub ended (its backend stream is dropped): free its slot, tell clients queued on exactly
    /// its start if it failed there, and give the slot to the oldest
    /// queued position of its family.
    pub fn ended(&self, hub: &Arc<Hub>) {
        let mut state = self.lock();
        state.hubs.retain(|h| !Arc::ptr_eq(h, hub));
        let failed_at_start = match &*hub.status.borrow() {
            crate::fanout::Status::Failed(e) if !hub.was_ready() => Some(e.clone()),
            _ => None,
        };
        if let (Some(e), Some(start)) = (failed_at_start, start_of(hub)) {
            for w in state.waiters.iter().filter(|w| &w.cursor == start) {
                *w.verdict.lock().unwrap_or_else(|e| e.into_inner()) = Some(e.clone());
            }
        }
        grant_oldest(&state, hub.family());
        drop(state);
        self.bump();
    }
}

/// Give a free slot of `family` to its oldest queued position without one.
fn grant_oldest(state: &PoolState, family: Family) {
    let oldest = state
        .waiters
        .iter()
        .filter(|w| w.family == family && !w.granted.load(Ordering::Acquire))
        .filter(|w| {
            w.verdict
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_none()
        })
        .fold(None::<&Arc<Waiter>>, |best, w| match best {
            Some(b) if !earlier(&w.cursor, &b.cursor) => Some(b),
            _ => Some(w),
        });
    if let Some(w) = oldest {
        w.granted.store(true, Ordering::Release);
    }
}

/// A client's place in the queue while [`place`] runs: left when `place`
/// returns or its future is dropped (the client went away while queued),
/// so a gone client neither stays queued nor keeps a slot given to it.
struct QueueSpot<'a> {
    pool: &'a CatchUpPool,
    waiter: Option<Arc<Waiter>>,
}

impl Drop for QueueSpot<'_> {
    fn drop(&mut self) {
        self.pool.dequeue(&mut self.waiter);
    }
}

/// What [`place`] does when the client has to queue for a catch-up hub.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WhenQueued {
    /// Return [`Placement::Queued`] (the caller answers first, then waits).
    Return,
    /// Wait, as long as it takes (until shutdown).
    Wait,
}

/// Why a client was not placed.
#[derive(Debug)]
pub(crate) enum Unplaced {
    /// The backend refused the position, did not answer, or shutdown.
    Start(StartError),
    /// It has to wait for a catch-up hub (only with [`WhenQueued::Return`]).
    Queued,
}

/// Place a client of `family` exactly after `p` (see the module
/// documentation). Each wait on the backend is bounded by `backend_wait`;
/// a wait for a slot is not, since a slot always frees once the hubs ahead
/// have caught up.
pub(crate) async fn place(
    hubs: &Arc<Hubs>,
    family: Family,
    p: &Vouched,
    backend_wait: std::time::Duration,
    when_queued: WhenQueued,
) -> Result<(Arc<Hub>, Joined), Unplaced> {
    let pool = &hubs.catch_up;
    let mut changes = pool.changes.subscribe();
    let mut shutdown = hubs.shutdown.clone();
    let mut spot = QueueSpot { pool, waiter: None };
    let queued = &mut spot.waiter;
    loop {
        if *shutdown.borrow() {
            break Err(Unplaced::Start(StartError::ShuttingDown));
        }
        let live = match hubs.ready(family).await {
            Ok(live) => live,
            Err(e) => break Err(Unplaced::Start(e)),
        };
        if let Ok(joined) = live.join_after(p) {
            break Ok((live, joined));
        }
        changes.borrow_and_update();
        let deadline = Instant::now() + backend_wait;
        match pool.decide(hubs, family, p, queued) {
            Decision::Joined(hub, joined) => break Ok((hub, joined)),
            Decision::Created(hub, joined) => match wait_ready(&hub, deadline).await {
                Ok(()) => break Ok((hub, joined)),
                Err(e) => break Err(Unplaced::Start(e)),
            },
            Decision::Failed(e) => break Err(Unplaced::Start(StartError::Engine(e))),
            Decision::WaitFor(hub) => match wait_ready(&hub, deadline).await {
                Ok(()) => {}
                Err(StartError::Engine(e)) if start_of(&hub) == Some(p.cursor()) => {
                    break Err(Unplaced::Start(StartError::Engine(e)))
                }
                Err(StartError::Timeout) if when_queued == WhenQueued::Return => {
                    break Err(Unplaced::Queued)
                }
                Err(_) => {}
            },
            Decision::Queued if when_queued == WhenQueued::Return => break Err(Unplaced::Queued),
            Decision::Queued => {
                tokio::select! {
                    _ = changes.changed() => {}
                    _ = shutdown.wait_for(|s| *s) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fanout::HubSettings;
    use crate::fanout::{HubMsg, Status};
    use crate::metrics::Metrics;
    use ff_backend_memory::MemoryBackend;
    use ff_core::backend::{DeliveryStream, EventPublisher, StreamBackend, StreamBounds};
    use ff_core::filter::SubscriptionFilter;
    use ff_core::stream_events::{CompletionOutcome, EventMeta, NewEvent};
    use ff_core::types::{ExecutionId, TimestampMs};
    use std::sync::atomic::AtomicUsize;
    use std::sync::{OnceLock, Weak};
    use std::time::Duration;

    const WAIT: Duration = Duration::from_secs(10);

    /// A position of the backend's own history, as if it had resolved it.
    fn at(cursor: &StreamCursor) -> Vouched {
        Vouched::assumed(cursor.clone())
    }

    async fn hubs_over(
        events: usize,
        per_family: usize,
    ) -> (Arc<Hubs>, Vec<StreamCursor>, watch::Sender<bool>) {
        hubs_over_backend(MemoryBackend::new(), events, per_family, |b| Arc::new(b)).await
    }

    async fn hubs_over_backend(
        backend: MemoryBackend,
        events: usize,
        per_family: usize,
        wrap: impl FnOnce(MemoryBackend) -> Arc<dyn StreamBackend>,
    ) -> (Arc<Hubs>, Vec<StreamCursor>, watch::Sender<bool>) {
        let drafts = (0..events)
            .map(|_| {
                (
                    NewEvent::completion(ExecutionId::new(0), CompletionOutcome::Success),
                    EventMeta::new(),
                )
            })
            .collect();
        let cursors = backend.publish_batch(drafts).await.unwrap();
        let (stop, shutdown) = watch::channel(false);
        let hubs = Arc::new(Hubs::new(
            wrap(backend),
            Arc::new(Metrics::default()),
            HubSettings {
                capacity: 64,
                keep: 32,
                linger: Duration::from_millis(200),
                timeout: WAIT,
                per_family,
            },
            shutdown,
        ));
        (hubs, cursors, stop)
    }

    #[test]
    fn beginning_comes_before_every_position() {
        let a = ff_core::stream_subscribe::encode_memory(Family::Completion, 1, 5);
        let b = ff_core::stream_subscribe::encode_memory(Family::Completion, 1, 9);
        assert!(earlier(&StreamCursor::beginning(), &a));
        assert!(!earlier(&a, &StreamCursor::beginning()));
        assert!(earlier(&a, &b) && !earlier(&b, &a) && !earlier(&a, &a));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn clients_behind_share_readers_and_queue_at_the_bound() {
        // The live hub plus one catch-up reader.
        let (hubs, c, _stop) = hubs_over(100, 2).await;
        let family = Family::Completion;
        // Fewer events ahead than make the reader hold back for its
        // clients (which read nothing here).
        let (first, joined) = place(&hubs, family, &at(&c[75]), WAIT, WhenQueued::Return)
            .await
            .expect("a free slot starts a reader");
        assert!(matches!(first.role, Role::CatchUp { .. }));
        // Ahead of the reader, before the live head: shares it.
        let (second, joined2) = place(&hubs, family, &at(&c[85]), WAIT, WhenQueued::Return)
            .await
            .expect("joins the reader ahead");
        assert!(Arc::ptr_eq(&first, &second));
        // Behind every reader with no slot left: queued, not a new reader.
        let older = place(&hubs, family, &at(&c[10]), WAIT, WhenQueued::Return).await;
        assert!(matches!(older, Err(Unplaced::Queued)));
        assert_eq!(hubs.catch_up.lock().hubs.len(), 1);
        // Once the reader's clients leave, the queued client gets the slot.
        drop((joined, joined2));
        let waited = tokio::time::timeout(
            WAIT,
            place(&hubs, family, &at(&c[10]), WAIT, WhenQueued::Wait),
        )
        .await
        .expect("placed once the slot frees")
        .expect("placed");
        assert!(!Arc::ptr_eq(&waited.0, &first));
        assert_eq!(waited.1.position.cursor(), &c[10]);
    }

    /// Wait until `cond` holds, failing after [`WAIT`].
    async fn eventually(what: &str, cond: impl Fn() -> bool) {
        let deadline = Instant::now() + WAIT;
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_gone_while_queued_leaves_the_queue_and_its_slot_goes_on() {
        let (hubs, c, _stop) = hubs_over(100, 2).await;
        let family = Family::Completion;
        let (_reader, joined) = place(&hubs, family, &at(&c[50]), WAIT, WhenQueued::Return)
            .await
            .expect("a free slot starts a reader");
        let queue = |from: StreamCursor| {
            let hubs = hubs.clone();
            tokio::spawn(
                async move { place(&hubs, family, &at(&from), WAIT, WhenQueued::Wait).await },
            )
        };
        let gone = queue(c[10].clone());
        eventually("the first client to queue", || hubs.catch_up.queued() == 1).await;
        let staying = queue(c[20].clone());
        eventually("the second client to queue", || hubs.catch_up.queued() == 2).await;
        // The oldest waiter goes away (its response body is dropped).
        gone.abort();
        assert!(gone.await.unwrap_err().is_cancelled());
        assert_eq!(hubs.catch_up.queued(), 1, "a gone client leaves the queue");
        // The slot that frees goes to the client still waiting.
        drop(joined);
        let (_, placed) = tokio::time::timeout(WAIT, staying)
            .await
            .expect("the waiting client is placed once the slot frees")
            .unwrap()
            .expect("placed");
        assert_eq!(placed.position.cursor(), &c[20]);
        assert_eq!(hubs.catch_up.queued(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hub_from_beginning_does_not_vouch_for_positions_before_its_first_event() {
        let backend = MemoryBackend::new();
        let (hubs, c, _stop) = hubs_over_backend(backend, 10, 4, |b| Arc::new(b)).await;
        let family = Family::Completion;
        let (from_start, joined) = place(
            &hubs,
            family,
            &Vouched::beginning(),
            WAIT,
            WhenQueued::Return,
        )
        .await
        .expect("a reader from the beginning");
        eventually("the reader to deliver its first event", || {
            from_start
                .window()
                .is_some_and(|(_, position)| position == c[9])
        })
        .await;
        // c[0] is the reader's first event: what follows it, it has seen.
        assert!(from_start.covers(&c[0]) && from_start.covers(&c[5]));
        assert!(from_start.covers(&StreamCursor::beginning()));
        // A position before that event (say, one since trimmed) is the
        // backend's to judge, not the reader's to accept.
        let before_first = ff_core::stream_subscribe::encode_memory(
            family,
            match ff_core::stream_subscribe::decode_memory(&c[0], family).unwrap() {
                ff_core::stream_subscribe::CursorStart::After(p) => p.epoch,
                other => panic!("{other:?}"),
            },
            0,
        );
        assert!(!from_start.covers(&before_first));
        assert!(from_start.join_after(&at(&before_first)).is_err());
        drop(joined);
    }

    /// A memory backend whose streams check, as they are dropped, that
    /// every open stream still holds a slot of the gateway's bound.
    struct SlotCheckingBackend {
        inner: MemoryBackend,
        hubs: Arc<OnceLock<Weak<Hubs>>>,
        open: Arc<AtomicUsize>,
        unslotted_drops: Arc<AtomicUsize>,
    }

    /// Runs the check when its stream is dropped.
    struct DropCheck {
        family: Family,
        hubs: Arc<OnceLock<Weak<Hubs>>>,
        open: Arc<AtomicUsize>,
        unslotted_drops: Arc<AtomicUsize>,
    }

    impl Drop for DropCheck {
        fn drop(&mut self) {
            if let Some(hubs) = self.hubs.get().and_then(Weak::upgrade) {
                if self.open.load(Ordering::SeqCst) > hubs.held_slots(self.family) {
                    self.unslotted_drops.fetch_add(1, Ordering::SeqCst);
                }
            }
            self.open.fetch_sub(1, Ordering::SeqCst);
        }
    }

    #[async_trait::async_trait]
    impl StreamBackend for SlotCheckingBackend {
        fn backend_name(&self) -> &'static str {
            "slot-checking memory"
        }

        async fn subscribe_family(
            &self,
            family: Family,
            cursor: StreamCursor,
            filter: &SubscriptionFilter,
        ) -> Result<DeliveryStream, EngineError> {
            let stream = self.inner.subscribe_family(family, cursor, filter).await?;
            self.open.fetch_add(1, Ordering::SeqCst);
            let check = DropCheck {
                family,
                hubs: self.hubs.clone(),
                open: self.open.clone(),
                unslotted_drops: self.unslotted_drops.clone(),
            };
            Ok(Box::pin(futures::StreamExt::map(stream, move |item| {
                let _ = &check;
                item
            })))
        }

        async fn resolve_cursor(
            &self,
            family: Family,
            cursor: StreamCursor,
        ) -> Result<StreamCursor, EngineError> {
            self.inner.resolve_cursor(family, cursor).await
        }

        async fn bounds(&self, family: Family) -> Result<StreamBounds, EngineError> {
            self.inner.bounds(family).await
        }

        async fn cursor_at(
            &self,
            family: Family,
            at: TimestampMs,
        ) -> Result<StreamCursor, EngineError> {
            self.inner.cursor_at(family, at).await
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reader_frees_its_slot_only_after_closing_its_backend_stream() {
        let hubs_cell = Arc::new(OnceLock::new());
        let unslotted_drops = Arc::new(AtomicUsize::new(0));
        let (hubs, c, _stop) = hubs_over_backend(MemoryBackend::new(), 100, 2, |inner| {
            Arc::new(SlotCheckingBackend {
                inner,
                hubs: hubs_cell.clone(),
                open: Arc::new(AtomicUsize::new(0)),
                unslotted_drops: unslotted_drops.clone(),
            })
        })
        .await;
        hubs_cell.set(Arc::downgrade(&hubs)).unwrap();
        let family = Family::Completion;
        let (first, joined) = place(&hubs, family, &at(&c[50]), WAIT, WhenQueued::Return)
            .await
            .expect("a free slot starts a reader");
        let queued = tokio::spawn({
            let (hubs, p) = (hubs.clone(), c[10].clone());
            async move { place(&hubs, family, &at(&p), WAIT, WhenQueued::Wait).await }
        });
        // The queued client is placed once the first reader's client leaves
        // and the reader ends.
        drop(joined);
        let (second, placed) = tokio::time::timeout(WAIT, queued)
            .await
            .expect("placed once the slot frees")
            .expect("task")
            .expect("placed");
        assert!(!Arc::ptr_eq(&first, &second));
        assert_eq!(placed.position.cursor(), &c[10]);
        assert_eq!(
            unslotted_drops.load(Ordering::SeqCst),
            0,
            "a backend stream was still open after its hub had freed its slot"
        );
    }

    /// Wait (in virtual time) until `hub` holds back for its clients.
    async fn until_held_back(hub: &Hub) {
        let deadline = Instant::now() + WAIT;
        while !hub.is_held_back() {
            assert!(Instant::now() < deadline, "the reader never held back");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_held_back_reader_ends_at_once_on_shutdown() {
        let (hubs, c, stop) = hubs_over(200, 2).await;
        let (hub, _joined) = place(
            &hubs,
            Family::Completion,
            &at(&c[10]),
            WAIT,
            WhenQueued::Return,
        )
        .await
        .expect("a reader starts");
        // Its only client reads nothing: the reader fills the buffer and
        // holds back.
        until_held_back(&hub).await;
        let stopped = Instant::now();
        stop.send_replace(true);
        let mut status = hub.status.subscribe();
        status
            .wait_for(|s| matches!(s, Status::Closed))
            .await
            .expect("the hub reports its end");
        assert_eq!(
            stopped.elapsed(),
            Duration::ZERO,
            "the held-back reader waited for a timer instead of ending on shutdown"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_reader_holds_back_once_per_stall_and_takes_no_newcomer_meanwhile() {
        let (hubs, c, _stop) = hubs_over(200, 3).await;
        let family = Family::Completion;
        let (hub, mut stalled) = place(&hubs, family, &at(&c[10]), WAIT, WhenQueued::Return)
            .await
            .expect("a reader starts");
        until_held_back(&hub).await;
        // A newcomer the held-back reader covers gets a reader of its own.
        let (other, _newcomer) = place(&hubs, family, &at(&c[12]), WAIT, WhenQueued::Return)
            .await
            .expect("placed beside the held-back reader");
        assert!(!Arc::ptr_eq(&hub, &other));
        // Past the limit the stalled client is detached, and the reader
        // goes on without it: its clients gone, it ends.
        let mut status = hub.status.subscribe();
        tokio::time::timeout(WAIT * 2, status.wait_for(|s| matches!(s, Status::Closed)))
            .await
            .expect("the reader ends once its only client is detached")
            .expect("status");
        assert!(hubs.metrics.snapshot().clients_detached >= 1);
        let mut got = Vec::new();
        let lagged = loop {
            match stalled.rx.recv().await {
                Ok(HubMsg::Item(item)) => got.push(item.cursor.clone()),
                Ok(other) => panic!("{other:?}"),
                Err(e) => break e,
            }
        };
        assert!(got.is_empty(), "a detached client keeps nothing");
        assert!(matches!(
            lagged,
            tokio::sync::broadcast::error::RecvError::Lagged(_)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_newcomer_with_no_free_slot_joins_a_held_back_reader_and_is_served_after_one_hold() {
        // The live hub plus one catch-up reader: no slot for a second one.
        let (hubs, c, _stop) = hubs_over(200, 2).await;
        let family = Family::Completion;
        let (hub, _stalled) = place(&hubs, family, &at(&c[10]), WAIT, WhenQueued::Return)
            .await
            .expect("a reader starts");
        until_held_back(&hub).await;
        // Queued, it would wait until that reader ends; on the reader it
        // waits for one hold at most.
        let (joined_on, mut newcomer) = place(&hubs, family, &at(&c[12]), WAIT, WhenQueued::Return)
            .await
            .expect("placed on the held-back reader, not queued");
        assert!(Arc::ptr_eq(&hub, &joined_on));
        let mut got: Vec<StreamCursor> = newcomer.replay.iter().map(|i| i.cursor.clone()).collect();
        tokio::time::timeout(WAIT * 2, async {
            while got.last() != c.last() {
                match newcomer.rx.recv().await.expect("the reader goes on") {
                    HubMsg::Item(item) => got.push(item.cursor.clone()),
                    HubMsg::HandedOver => {}
                    other => panic!("{other:?}"),
                }
            }
        })
        .await
        .expect("the newcomer is served once the hold ends");
        assert_eq!(got, c[13..].to_vec());
        assert!(hubs.metrics.snapshot().clients_detached >= 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_live_hub_stays_while_a_catch_up_reader_runs_without_it_having_a_client() {
        let (hubs, c, _stop) = hubs_over(200, 2).await;
        let family = Family::Completion;
        let live = hubs.ready(family).await.expect("the live hub starts");
        let (reader, _joined) = place(&hubs, family, &at(&c[150]), WAIT, WhenQueued::Return)
            .await
            .expect("a reader starts");
        assert!(matches!(reader.role, Role::CatchUp { .. }));
        // Well past the live hub's linger, well before the reader's hold
        // would end: the reader still has the live hub to hand over to.
        tokio::time::sleep(hubs.settings.linger * 10).await;
        assert!(!live.is_closed(), "the live hub closed while a reader ran");
        assert!(hubs
            .existing(family)
            .is_some_and(|now| Arc::ptr_eq(&now, &live)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_reader_that_reaches_the_window_of_one_ahead_hands_over_to_it_and_frees_its_slot() {
        // The live hub plus two catch-up readers.
        let (hubs, c, _stop) = hubs_over(200, 3).await;
        let family = Family::Completion;
        let (ahead, _first) = place(&hubs, family, &at(&c[60]), WAIT, WhenQueued::Return)
            .await
            .expect("a reader starts");
        // Behind that reader's window: a reader of its own, which soon
        // reaches the window of the one ahead.
        let (behind, mut second) = place(&hubs, family, &at(&c[55]), WAIT, WhenQueued::Return)
            .await
            .expect("a second reader starts");
        assert!(!Arc::ptr_eq(&ahead, &behind));
        eventually("the reader behind to hand over", || behind.is_handed_over()).await;
        let successor = behind
            .successor()
            .expect("handed over to a catch-up reader");
        assert!(Arc::ptr_eq(&successor, &ahead));
        // Its client moves at its own position, with nothing skipped.
        let mut got = Vec::new();
        let moved = loop {
            match second.rx.recv().await.expect("the reader delivers") {
                HubMsg::Item(item) => got.push(item.cursor.clone()),
                HubMsg::HandedOver => {
                    let pos = at(got.last().unwrap_or(&c[55]));
                    break successor.join_after(&pos).expect("inside the window ahead");
                }
                other => panic!("{other:?}"),
            }
        };
        got.extend(moved.replay.iter().map(|i| i.cursor.clone()));
        assert_eq!(got, c[56..56 + got.len()].to_vec());
        assert!(got.len() > 5);
        drop(second);
        // Its last client gone, the reader behind frees its slot: a client
        // further behind gets a reader of its own.
        eventually("the reader behind to end", || {
            hubs.catch_up.held_by(family) == 1
        })
        .await;
        let (third, _joined) = place(&hubs, family, &at(&c[10]), WAIT, WhenQueued::Return)
            .await
            .expect("placed on a reader of its own, not queued");
        assert!(!Arc::ptr_eq(&third, &ahead));
        drop(moved);
    }

    #[tokio::test(start_paused = true)]
    async fn a_newcomer_ahead_of_every_reader_gets_a_reader_of_its_own_while_a_slot_is_free() {
        // The live hub plus two catch-up readers.
        let (hubs, c, _stop) = hubs_over(200, 3).await;
        let family = Family::Completion;
        let (behind, _first) = place(&hubs, family, &at(&c[10]), WAIT, WhenQueued::Return)
            .await
            .expect("a reader starts");
        // Its client reads nothing: the reader stops a window past c[10].
        let (_, position) = behind.window().expect("a window");
        assert!(earlier(&position, &c[150]));
        // A newcomer far ahead of it would receive nothing until it got
        // there: it gets a reader of its own, which serves it at once.
        let (own, mut newcomer) = place(&hubs, family, &at(&c[150]), WAIT, WhenQueued::Return)
            .await
            .expect("placed");
        assert!(!Arc::ptr_eq(&own, &behind));
        let first = tokio::time::timeout(Duration::from_millis(1), newcomer.rx.recv())
            .await
            .expect("served at once")
            .expect("a message");
        match first {
            HubMsg::Item(item) => assert_eq!(item.cursor, c[151]),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_held_back_reader_resumes_as_soon_as_its_client_reads() {
        let (hubs, c, _stop) = hubs_over(200, 2).await;
        let (hub, mut joined) = place(
            &hubs,
            Family::Completion,
            &at(&c[10]),
            WAIT,
            WhenQueued::Return,
        )
        .await
        .expect("a reader starts");
        until_held_back(&hub).await;
        let resumed = Instant::now();
        let mut got = Vec::new();
        while got.len() < 150 {
            match joined.rx.recv().await.expect("the reader goes on") {
                HubMsg::Item(item) => got.push(item.cursor.clone()),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(got, c[11..161].to_vec());
        assert_eq!(
            resumed.elapsed(),
            Duration::ZERO,
            "the held-back reader waited for a timer instead of its client"
        );
    }
}
