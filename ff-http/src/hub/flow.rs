//! Client flow control on a hub: a client that stops reading costs only
//! itself.
//!
//! Invariant: a catch-up hub reads no further ahead of its slowest client
//! than its replay window, so newcomers behind it can still join: it
//! *holds back* while a client has that many unread items — at most once
//! per stall, for the backend timeout. Then every client still that far
//! behind that read nothing meanwhile is *detached*: its receiver is
//! dropped (freeing what the hub kept for it), its next read answers
//! `Lagged`, and it is placed again from its own vouched position, as any
//! lagging client is. A client that reads on, however slowly, sets the
//! hub's pace. While a hub holds back with no client reading, a client is
//! placed on it only when no slot is free for a reader of its own (see
//! [`crate::catchup`]). A handed-over hub detaches the clients that have
//! read nothing for the backend timeout, so a stalled client holds no
//! catch-up slot. The live hub never holds back: its stalled clients lag.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::{broadcast, watch, Notify};
use tokio::time::Instant;

use super::{Hub, HubMsg};

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
    pub(super) fn new() -> Self {
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
pub(super) struct Member {
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

impl Hub {
    /// `true` while the hub waits for a client that reads nothing (see
    /// [`HoldBack`]): no client is placed on it meanwhile.
    pub fn is_held_back(&self) -> bool {
        self.hold.stalled()
    }

    /// A receiver of the hub's broadcast (call under the state lock).
    pub(super) fn receiver(&self) -> HubReceiver {
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
    pub(crate) fn detach(&self, stalled: impl Fn(usize, Duration) -> bool) -> usize {
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
}

/// Wait while the slowest client's buffer holds `hold_at` items or more,
/// at most `limit` (the backend timeout); `true` when the limit passed
/// (the caller then detaches the clients still that far behind). Woken by
/// its clients as they read or leave, never by polling; ends at once on
/// shutdown.
pub(crate) async fn hold_back(
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
