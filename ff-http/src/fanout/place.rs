//! Placing a client on a hub: the live hub when it has seen every event
//! after the client's position, else a catch-up hub as the pool decides
//! (see [`crate::catchup`] for the order of preference and its invariant).

use std::sync::Arc;

use ff_core::stream_events::Family;
use tokio::time::Instant;

use super::Hubs;
use crate::catchup::{start_of, CatchUpPool, Decision, Waiter};
use crate::hub::vouched::Vouched;
use crate::hub::{wait_ready, Hub, Joined, StartError};

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
        match pool.decide(&|f, v| hubs.start_catch_up(f, v), family, p, queued) {
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
    use super::super::HubSettings;
    use super::*;
    use crate::catchup::earlier;
    use crate::hub::{HubMsg, Role, Status};
    use crate::metrics::Metrics;
    use ff_backend_memory::MemoryBackend;
    use ff_core::backend::{DeliveryStream, EventPublisher, StreamBackend, StreamBounds};
    use ff_core::engine_error::EngineError;
    use ff_core::filter::SubscriptionFilter;
    use ff_core::stream_events::{CompletionOutcome, EventMeta, NewEvent};
    use ff_core::stream_subscribe::StreamCursor;
    use ff_core::types::{ExecutionId, TimestampMs};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{OnceLock, Weak};
    use std::time::Duration;
    use tokio::sync::watch;

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
        assert_eq!(hubs.catch_up.held_by(family), 1);
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
        let before_first = ff_backend_memory::cursor_codec::encode_memory(
            family,
            match ff_backend_memory::cursor_codec::decode_memory(&c[0], family).unwrap() {
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
