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
//! [`crate::hub::vouched`]); no hub admits a cursor because its bytes sort
//! inside the hub's window, and no hub admits a position another hub
//! yielded unless it has seen that position itself: around a lossy
//! failover two hubs may read two histories, whose positions interleave
//! by their bytes. A position no hub at hand admits is judged by the
//! backend again, by a catch-up hub that subscribes from it (4). It is
//! placed, in order of preference:
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
//!    delivers up to `p`; only for a position the backend vouched for,
//!    since the hub has not seen `p`): a queued client would wait for a
//!    reader to end;
//! 6. otherwise it queues. When a catch-up hub ends, its slot goes to a new
//!    hub from the *oldest* queued position, which every other queued
//!    client can then join by 3: a reconnect storm is served in one pass.
//!
//! A catch-up hub hands its clients over to the live hub once the live hub
//! has seen the catch-up hub's latest item, or to a catch-up hub ahead of
//! it once that hub has (so readers that meet share one slot, and the
//! other frees for clients further behind), and ends when its last client
//! has left. Each client moves once the hub it goes to has seen its own
//! position; a catch-up hub reading a history the other hub does not
//! share never hands over, and its own subscription ends it with
//! `CursorExpired` when it reconnects to the new history.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use ff_core::engine_error::EngineError;
use ff_core::stream_events::Family;
use ff_core::stream_subscribe::StreamCursor;
use tokio::sync::watch;

use crate::hub::vouched::Vouched;
#[cfg(test)]
use crate::hub::HubMsg;
use crate::hub::{at_or_before, covers, Hub, Joined, Role, Status};

/// A queued client.
#[derive(Debug)]
pub(crate) struct Waiter {
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
    pub(crate) changes: watch::Sender<u64>,
}

/// `true` when `a` comes strictly before `b` (`beginning` before all).
pub(crate) fn earlier(a: &StreamCursor, b: &StreamCursor) -> bool {
    if a.is_beginning() {
        return !b.is_beginning();
    }
    matches!(a.position_cmp(b), Some(std::cmp::Ordering::Less))
}

pub(crate) fn start_of(hub: &Hub) -> Option<&StreamCursor> {
    match &hub.role {
        Role::CatchUp { start } => Some(start),
        Role::Live => None,
    }
}

/// What placing a client decided, under the pool's lock.
pub(crate) enum Decision {
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

    /// Decide where a client at `p` goes among the catch-up hubs (2–6 in
    /// the module docs), starting a hub with `start_hub` when a slot is
    /// free.
    pub(crate) fn decide(
        &self,
        start_hub: &dyn Fn(Family, Vouched) -> (Arc<Hub>, Joined),
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
            if !hub.admits(p) {
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
            let (hub, joined) = start_hub(family, p.clone());
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

    /// Hand the catch-up `hub` over to a catch-up hub ahead of it that
    /// admits its latest item ([`Hub::tip`]: it has seen it, see
    /// [`Hub::admits`]) and is neither handed over nor held back for a
    /// stalled client, if there is one: its clients move there at their
    /// own positions, and its slot frees once they have. Decided under the
    /// pool's lock, so two hubs never hand over to each other.
    pub fn hand_over_to_one_ahead(&self, hub: &Arc<Hub>) {
        let Some(tip) = hub.tip() else {
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
                && h.admits(&tip)
                && h.window().is_some_and(|(_, p)| earlier(tip.cursor(), &p))
        });
        if let Some(ahead) = ahead {
            hub.hand_over(Some(ahead));
        }
    }

    /// Take a client out of the queue (placed elsewhere, or gone). A slot
    /// it was given and did not use goes to the next oldest waiter.
    pub(crate) fn dequeue(&self, queued: &mut Option<Arc<Waiter>>) {
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
            Status::Failed(e) if !hub.was_ready() => Some(e.clone()),
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

#[cfg(test)]
mod tests {
    use super::*;
    use ff_backend_memory::cursor_codec::encode_memory;
    use ff_core::backend::DeliveryItem;
    use ff_core::stream_events::{CompletionOutcome, EventMeta, NewEvent};
    use ff_core::types::{ExecutionId, TimestampMs};

    fn c(seq: u64) -> StreamCursor {
        encode_memory(Family::Completion, 1, seq)
    }

    fn event(seq: u64) -> DeliveryItem {
        DeliveryItem::Event {
            event: NewEvent::completion(ExecutionId::new(0), CompletionOutcome::Success)
                .into_event(c(seq), TimestampMs(0)),
            meta: EventMeta::new(),
        }
    }

    /// A catch-up hub that is not run: the test delivers its items.
    fn start(family: Family, start: Vouched) -> (Arc<Hub>, Joined) {
        let hub = Arc::new(Hub::with_role(
            family,
            64,
            16,
            Role::CatchUp {
                start: start.cursor().clone(),
            },
        ));
        let joined = hub.join_as_creator(start);
        (hub, joined)
    }

    #[test]
    fn a_reader_hands_over_to_one_ahead_only_once_that_one_has_seen_its_latest_item() {
        let family = Family::Completion;
        let pool = CatchUpPool::new(3);
        let created =
            |from: u64| match pool.decide(&start, family, &Vouched::assumed(c(from)), &mut None) {
                Decision::Created(hub, joined) => (hub, joined),
                _ => panic!("a free slot starts a reader"),
            };
        // The reader ahead reads one history: 11, 13, 14.
        let (ahead, _first) = created(10);
        for seq in [11, 13, 14] {
            ahead.deliver(event(seq));
        }
        // The reader behind reads another: its 12 sorts between the two,
        // but the reader ahead never had it.
        let (behind, mut second) = created(5);
        behind.deliver(event(12));
        pool.hand_over_to_one_ahead(&behind);
        assert!(!behind.is_handed_over(), "handed over by byte order");
        let mut pos = second.at.clone();
        while let Ok(HubMsg::Item(item)) = second.rx.try_recv() {
            pos = pos.advanced_by(&item).unwrap_or(pos);
        }
        assert_eq!(pos.cursor(), &c(12));
        assert!(ahead.join_after(&pos).is_err());
        assert!(!ahead.admits(&pos));
        // Once it delivers an item the reader ahead has seen, it hands over.
        behind.deliver(event(13));
        pool.hand_over_to_one_ahead(&behind);
        assert!(behind.is_handed_over());
        assert!(behind
            .successor()
            .is_some_and(|successor| Arc::ptr_eq(&successor, &ahead)));
        let moved = ahead
            .join_after(&behind.tip().expect("a latest item"))
            .expect("the reader ahead has seen it");
        assert_eq!(moved.replay.len(), 1, "replays 14");
    }

    #[test]
    fn beginning_comes_before_every_position() {
        let a = ff_backend_memory::cursor_codec::encode_memory(Family::Completion, 1, 5);
        let b = ff_backend_memory::cursor_codec::encode_memory(Family::Completion, 1, 9);
        assert!(earlier(&StreamCursor::beginning(), &a));
        assert!(!earlier(&a, &StreamCursor::beginning()));
        assert!(earlier(&a, &b) && !earlier(&b, &a) && !earlier(&a, &a));
    }
}
