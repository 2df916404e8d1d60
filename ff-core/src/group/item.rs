//! [`GroupItem`] and its [`Commit`] handle, over the per-unit hold state
//! they share with the member driver.
//!
//! Invariant: a hold's commits are serialised and move forward only — a
//! handle older than the last committed one commits nothing — and every
//! commit names the hold's epoch and the cursor the hold last committed,
//! so the store can refuse a zombie or a regression.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

use crate::cursor::StreamCursor;
use crate::error::EngineError;
use crate::event::{EventMeta, StreamEvent};
use crate::group::store::{GroupStore, UnitLease};

/// One item of a member's stream.
#[derive(Debug)]
#[non_exhaustive]
pub enum GroupItem {
    /// This member now holds `unit`; its events follow.
    Assigned {
        /// The unit.
        unit: u32,
        /// The epoch it is held under.
        epoch: u64,
    },
    /// An event of `unit`, in order. Commit it after its effects.
    Event {
        /// The unit.
        unit: u32,
        /// The event.
        event: StreamEvent,
        /// Its metadata.
        meta: EventMeta,
        /// Commits the unit's position exactly after this event.
        commit: Commit,
    },
    /// `unit`'s scanned position moved past events of other units or ones
    /// the filter rejected; committing it keeps the unit's position inside
    /// retention.
    Checkpoint {
        /// The unit.
        unit: u32,
        /// Commits the unit's position at the scanned cursor.
        commit: Commit,
    },
    /// An entry `unit`'s reader could not decode; the unit goes on.
    Corrupt {
        /// The unit.
        unit: u32,
        /// What could not be decoded.
        detail: String,
        /// Commits the unit's position past the entry.
        commit: Commit,
    },
    /// This member gave `unit` up on purpose (a rebalance or a leave)
    /// after draining what it had handed out.
    Released {
        /// The unit.
        unit: u32,
    },
    /// This member lost `unit`: its lease may have expired, another member
    /// took it, or a commit was fenced. Nothing more of the unit follows
    /// and its uncommitted events go to the next owner.
    Lost {
        /// The unit.
        unit: u32,
        /// Why.
        reason: String,
    },
    /// `unit`'s subscription failed (e.g. `CursorExpired` when retention
    /// trimmed past its cursor). The member keeps the unit and retries
    /// from its committed cursor after a backoff; the stream goes on.
    UnitFailed {
        /// The unit.
        unit: u32,
        /// The error.
        error: EngineError,
    },
}

impl GroupItem {
    /// The unit this item is about.
    pub fn unit(&self) -> u32 {
        match self {
            Self::Assigned { unit, .. }
            | Self::Event { unit, .. }
            | Self::Checkpoint { unit, .. }
            | Self::Corrupt { unit, .. }
            | Self::Released { unit }
            | Self::Lost { unit, .. }
            | Self::UnitFailed { unit, .. } => *unit,
        }
    }

    /// The commit handle of an event, checkpoint or corrupt item.
    pub fn commit_handle(&self) -> Option<&Commit> {
        match self {
            Self::Event { commit, .. }
            | Self::Checkpoint { commit, .. }
            | Self::Corrupt { commit, .. } => Some(commit),
            _ => None,
        }
    }

    pub(crate) fn hand_out(&self) -> Option<(&Arc<Hold>, u64, bool)> {
        match self {
            Self::Event { commit, .. } | Self::Corrupt { commit, .. } => {
                Some((&commit.hold, commit.seq, true))
            }
            Self::Checkpoint { commit, .. } => Some((&commit.hold, commit.seq, false)),
            _ => None,
        }
    }
}

/// Commits a unit's position for one item. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Commit {
    hold: Arc<Hold>,
    seq: u64,
    cursor: StreamCursor,
}

impl Commit {
    pub(crate) fn new(hold: Arc<Hold>, seq: u64, cursor: StreamCursor) -> Self {
        Self { hold, seq, cursor }
    }

    /// The cursor this handle commits.
    pub fn cursor(&self) -> &StreamCursor {
        &self.cursor
    }

    /// The unit's lease this handle commits under.
    pub fn lease(&self) -> &UnitLease {
        &self.hold.lease
    }

    /// Commit the unit's position exactly after this item, fenced by the
    /// lease's epoch and the previous committed cursor. `Fenced` when the
    /// unit changed hands (or its stored cursor moved): the member then
    /// reports the unit `Lost`. A handle older than one already committed
    /// commits nothing.
    pub async fn commit(&self) -> Result<(), EngineError> {
        let store = self.hold.store.clone();
        self.commit_with(|lease, prev, next| {
            let store = store.clone();
            let lease = lease.clone();
            let prev = prev.clone();
            let next = next.clone();
            async move { store.commit(&lease, &prev, &next).await }
        })
        .await
    }

    /// Commit through `write(lease, prev, next)`, a backend's own fenced
    /// write (e.g. one inside the caller's transaction), with the same
    /// ordering and bookkeeping as [`Commit::commit`]. `write` must check
    /// the lease's owner and epoch and that the stored cursor is `prev`,
    /// and answer `Fenced` otherwise.
    pub async fn commit_with<F, Fut>(&self, write: F) -> Result<(), EngineError>
    where
        F: FnOnce(&UnitLease, &StreamCursor, &StreamCursor) -> Fut,
        Fut: std::future::Future<Output = Result<(), EngineError>>,
    {
        let hold = &self.hold;
        let mut committed = hold.committed.lock().await;
        if self.seq <= committed.0 {
            return Ok(());
        }
        match write(&hold.lease, &committed.1, &self.cursor).await {
            Ok(()) => {
                *committed = (self.seq, self.cursor.clone());
                hold.committed_seq.store(self.seq, Ordering::Release);
                hold.progress.notify_waiters();
                Ok(())
            }
            Err(e) => {
                if matches!(e, EngineError::Fenced { .. }) {
                    hold.deactivate();
                    let _ = hold.fenced.send((hold.lease.unit, hold.lease.epoch));
                }
                Err(e)
            }
        }
    }
}

/// A unit held by a member under one epoch: shared by the driver, the
/// unit's reader, the member's stream and the commit handles.
#[derive(Debug)]
pub(crate) struct Hold {
    pub(crate) lease: UnitLease,
    pub(crate) store: Arc<dyn GroupStore>,
    /// Sequence and cursor of the last commit (seq 0: the acquired cursor).
    committed: tokio::sync::Mutex<(u64, StreamCursor)>,
    committed_seq: AtomicU64,
    /// Sequence of the last event or corrupt item handed to the consumer.
    handed_seq: AtomicU64,
    active: AtomicBool,
    /// The member stops delivering this unit at this instant (its own clock).
    deliver_until: Mutex<Instant>,
    progress: Notify,
    fenced: mpsc::UnboundedSender<(u32, u64)>,
}

impl std::fmt::Debug for dyn GroupStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GroupStore({})", self.backend_name())
    }
}

impl Hold {
    pub(crate) fn new(
        lease: UnitLease,
        store: Arc<dyn GroupStore>,
        deliver_until: Instant,
        fenced: mpsc::UnboundedSender<(u32, u64)>,
    ) -> Self {
        let start = lease.cursor.clone();
        Self {
            lease,
            store,
            committed: tokio::sync::Mutex::new((0, start)),
            committed_seq: AtomicU64::new(0),
            handed_seq: AtomicU64::new(0),
            active: AtomicBool::new(true),
            deliver_until: Mutex::new(deliver_until),
            progress: Notify::new(),
            fenced,
        }
    }

    /// Whether an item of this hold may be handed out now.
    pub(crate) fn deliverable(&self) -> bool {
        self.active.load(Ordering::Acquire) && Instant::now() < self.deliver_until()
    }

    pub(crate) fn deliver_until(&self) -> Instant {
        *self.deliver_until.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn extend(&self, until: Instant) {
        let mut d = self.deliver_until.lock().unwrap_or_else(|p| p.into_inner());
        if until > *d {
            *d = until;
        }
    }

    pub(crate) fn deactivate(&self) {
        self.active.store(false, Ordering::Release);
    }

    pub(crate) fn is_active(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }

    pub(crate) fn handed(&self, seq: u64, event: bool) {
        if event {
            self.handed_seq.fetch_max(seq, Ordering::AcqRel);
        }
    }

    /// Wait until every event handed out is committed, up to `until`.
    pub(crate) async fn drained(&self, until: Instant) {
        loop {
            let notified = self.progress.notified();
            if self.committed_seq.load(Ordering::Acquire) >= self.handed_seq.load(Ordering::Acquire)
            {
                return;
            }
            if tokio::time::timeout_at(until, notified).await.is_err() {
                return;
            }
        }
    }
}
