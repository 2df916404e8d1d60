//! [`GroupMember`]: the backend-independent member driver.
//!
//! One task per member heartbeats, computes the assignment from the live
//! members the store reports, acquires the units assigned to it that are
//! free or whose owner expired, and drains then releases the ones assigned
//! elsewhere; one shared reader task ([`reader`](super::reader)) reads
//! the family once for every held unit and feeds the member's stream.
//!
//! Invariants:
//! - an item is handed out only while its hold is active and the member's
//!   own clock is before the hold's `deliver_until` (the last heartbeat's
//!   send time + lease − margin), so a member never delivers a unit after
//!   its lease could have expired anywhere;
//! - a unit is released only after the events handed out were committed
//!   (or the drain bound passed): drain, then fence;
//! - the driver never waits on the consumer: notices go through an
//!   unbounded queue, and draining runs in a task of its own.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::backend::StreamBackend;
use crate::cursor::StreamCursor;
use crate::error::EngineError;
use crate::group::assign::assign;
use crate::group::config::GroupConfig;
use crate::group::item::{GroupItem, Hold};
use crate::group::reader::{Layout, ReaderFailed, SharedReader};
use crate::group::spec::GroupSpec;
use crate::group::store::{GroupStore, GroupView, GroupWake, UnitLease};

/// Batches the shared reader may queue ahead of the consumer (each at
/// most [`BATCH`](super::reader::BATCH) items).
const QUEUE: usize = 2;
/// Longest wait before a failed unit's subscription is opened again.
const MAX_RETRY: Duration = Duration::from_secs(30);

/// A member of a consumer group: a stream of [`GroupItem`]s of the units
/// it holds. Dropping it leaves the group at once (its units are released
/// without waiting for commits); [`GroupMember::leave`] first waits for
/// the events handed out to be committed.
pub struct GroupMember {
    items: mpsc::Receiver<Vec<GroupItem>>,
    /// The rest of the batch being handed out.
    batch: std::collections::VecDeque<GroupItem>,
    notices: mpsc::UnboundedReceiver<GroupItem>,
    leave: Option<oneshot::Sender<oneshot::Sender<Result<(), EngineError>>>>,
    driver: Option<JoinHandle<()>>,
    session: String,
}

impl std::fmt::Debug for GroupMember {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupMember")
            .field("session", &self.session)
            .finish_non_exhaustive()
    }
}

impl GroupMember {
    /// Join `spec`'s group on `backend` as member `id` (creating the group
    /// from the tail if it does not exist). Fails with `Unavailable` when
    /// the backend keeps no groups, `Validation` when the stored group
    /// differs from `spec` (another unit count, family or filter).
    pub async fn join(
        backend: Arc<dyn StreamBackend>,
        spec: GroupSpec,
        id: &str,
        config: GroupConfig,
    ) -> Result<Self, EngineError> {
        Self::join_from(backend, spec, id, config, StreamCursor::empty()).await
    }

    /// Like [`GroupMember::join`], creating a new group's units at `start`
    /// (as the backend resolves it: the tail for the empty cursor,
    /// everything retained for `beginning()`). An existing group keeps its
    /// cursors.
    pub async fn join_from(
        backend: Arc<dyn StreamBackend>,
        spec: GroupSpec,
        id: &str,
        config: GroupConfig,
        start: StreamCursor,
    ) -> Result<Self, EngineError> {
        config.validate()?;
        crate::group::spec::validate_group_name(id).map_err(|_| {
            EngineError::validation(format!(
                "member id {} must be 1..=200 bytes without control characters",
                crate::error::excerpt(id)
            ))
        })?;
        let store = backend.group_store()?;
        let layout = layout_of(store.as_ref(), &spec)?;
        let start = backend.resolve_cursor(spec.family, start).await?;
        store.create_or_check(&spec, &start).await?;
        let wake = store.watch(&spec.name).await?;
        let session = format!("{id}#{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let (item_tx, items) = mpsc::channel(QUEUE);
        let (notice_tx, notices) = mpsc::unbounded_channel();
        let (leave_tx, leave_rx) = oneshot::channel();
        let (fenced_tx, fenced_rx) = mpsc::unbounded_channel();
        let (failed_tx, failed_rx) = mpsc::unbounded_channel();
        let (drained_tx, drained_rx) = mpsc::unbounded_channel();
        let (add_tx, add_rx) = mpsc::unbounded_channel();
        let reader = SharedReader::new(
            backend,
            store.clone(),
            spec.clone(),
            layout,
            config.checkpoint_interval,
            item_tx.clone(),
            failed_tx,
        );
        let reader = tokio::spawn(reader.run(add_rx));
        let driver = Driver {
            store,
            spec,
            session: session.clone(),
            config,
            held: HashMap::new(),
            item_tx,
            notice_tx,
            fenced_tx,
            drained_tx,
            reader,
            add_tx,
            added: Vec::new(),
        };
        let task = tokio::spawn(driver.run(wake, leave_rx, fenced_rx, failed_rx, drained_rx));
        Ok(Self {
            items,
            batch: std::collections::VecDeque::new(),
            notices,
            leave: Some(leave_tx),
            driver: Some(task),
            session,
        })
    }

    /// This member's session in the store (`id#incarnation`).
    pub fn session(&self) -> &str {
        &self.session
    }

    /// Leave the group cleanly: stop reading, wait (up to the drain bound)
    /// for the events handed out to be committed, then release every unit
    /// at once so other members take them without waiting for a lease.
    pub async fn leave(mut self) -> Result<(), EngineError> {
        let (reply_tx, reply_rx) = oneshot::channel();
        if let Some(leave) = self.leave.take() {
            if leave.send(reply_tx).is_ok() {
                return reply_rx.await.unwrap_or(Ok(()));
            }
        }
        Ok(())
    }

    /// Stop at once without telling the store, as a crash would: the
    /// units stay held until the lease expires, then move. For tests and
    /// fault drills.
    pub fn abort(mut self) {
        if let Some(driver) = self.driver.take() {
            driver.abort();
        }
    }
}

impl Stream for GroupMember {
    type Item = GroupItem;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<GroupItem>> {
        if let Poll::Ready(Some(notice)) = self.notices.poll_recv(cx) {
            return Poll::Ready(Some(notice));
        }
        loop {
            if let Some(item) = self.batch.pop_front() {
                if let Some((hold, seq, event)) = item.hand_out() {
                    if !hold.deliverable() {
                        continue;
                    }
                    hold.handed(seq, event);
                }
                return Poll::Ready(Some(item));
            }
            match self.items.poll_recv(cx) {
                Poll::Ready(Some(batch)) => self.batch.extend(batch),
                Poll::Ready(None) => {
                    return match self.notices.poll_recv(cx) {
                        Poll::Ready(n) => Poll::Ready(n),
                        Poll::Pending => Poll::Pending,
                    }
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// A store call that gives up after a bound, so one hung call cannot keep
/// the driver from closing delivery windows on time.
trait Bounded: std::future::Future + Sized {
    async fn bounded<T>(self, limit: Duration) -> Result<T, EngineError>
    where
        Self: std::future::Future<Output = Result<T, EngineError>>,
    {
        tokio::time::timeout(limit, self).await.unwrap_or_else(|_| {
            Err(EngineError::Backend {
                backend: "group",
                detail: format!("a group store call took longer than {limit:?}; retrying"),
            })
        })
    }
}

impl<F: std::future::Future> Bounded for F {}

/// A unit this member holds, and what it is doing with it.
struct Held {
    hold: Arc<Hold>,
    state: HeldState,
    failures: u32,
}

/// How long to wait before opening a unit's subscription again after its
/// `failures`-th failure: 1 s, doubling, at most [`MAX_RETRY`].
fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.saturating_sub(1).min(5)).min(MAX_RETRY)
}

enum HeldState {
    Reading,
    Draining(JoinHandle<()>),
    Failed { retry_at: Instant },
}

impl Drop for Held {
    fn drop(&mut self) {
        self.hold.deactivate();
        if let HeldState::Draining(task) = &self.state {
            task.abort();
        }
    }
}

/// How `spec`'s units map onto `store`'s backend: on a family split into
/// P > 1 partitions a unit is a partition, so U must be P.
fn layout_of(store: &dyn GroupStore, spec: &GroupSpec) -> Result<Layout, EngineError> {
    match store.unit_partitions(spec.family) {
        Some(partitions) if partitions > 1 => {
            if spec.units != u32::from(partitions) {
                return Err(EngineError::validation(format!(
                    "group {:?} asked for {} units, but this backend splits family {} into {partitions} \
                     partitions and a unit is a partition: join with {partitions} units",
                    spec.name,
                    spec.units,
                    spec.family.as_str()
                )));
            }
            Ok(Layout::Partitioned(partitions))
        }
        _ => Ok(Layout::Filtered),
    }
}

struct Driver {
    store: Arc<dyn GroupStore>,
    spec: GroupSpec,
    session: String,
    config: GroupConfig,
    held: HashMap<u32, Held>,
    item_tx: mpsc::Sender<Vec<GroupItem>>,
    notice_tx: mpsc::UnboundedSender<GroupItem>,
    fenced_tx: mpsc::UnboundedSender<(u32, u64)>,
    drained_tx: mpsc::UnboundedSender<(u32, u64)>,
    /// The shared reader, and where newly held units are sent to it.
    reader: JoinHandle<()>,
    add_tx: mpsc::UnboundedSender<Vec<Arc<Hold>>>,
    /// Units taken during the current step, sent to the reader together.
    added: Vec<Arc<Hold>>,
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Driver {
    async fn run(
        mut self,
        mut wake: GroupWake,
        mut leave_rx: oneshot::Receiver<oneshot::Sender<Result<(), EngineError>>>,
        mut fenced_rx: mpsc::UnboundedReceiver<(u32, u64)>,
        mut failed_rx: mpsc::UnboundedReceiver<ReaderFailed>,
        mut drained_rx: mpsc::UnboundedReceiver<(u32, u64)>,
    ) {
        let mut next_beat = Instant::now();
        let mut woken = true;
        loop {
            let now = Instant::now();
            self.expire_holds(now);
            if woken || now >= next_beat {
                woken = false;
                next_beat = Instant::now() + self.config.heartbeat;
                self.step().await;
                self.send_added();
            }
            let deadline = self.next_deadline(next_beat);
            let item_tx = self.item_tx.clone();
            tokio::select! {
                biased;
                reply = &mut leave_rx => {
                    match reply {
                        Ok(reply) => {
                            let result = self.leave(true).await;
                            let _ = reply.send(result);
                        }
                        Err(_) => {
                            let _ = self.leave(false).await;
                        }
                    }
                    return;
                }
                () = item_tx.closed() => {
                    let _ = self.leave(false).await;
                    return;
                }
                Some((unit, epoch)) = fenced_rx.recv() => {
                    self.lose(unit, epoch, "a commit was fenced: another member holds the unit or its stored cursor moved".into());
                    woken = true;
                }
                Some(failed) = failed_rx.recv() => self.reader_failed(failed),
                Some((unit, epoch)) = drained_rx.recv() => {
                    if self.held.get(&unit).is_some_and(|h| h.hold.lease.epoch == epoch) {
                        self.held.remove(&unit);
                        let _ = self.notice_tx.send(GroupItem::Released { unit });
                    }
                }
                w = wake.next() => {
                    if w.is_none() {
                        wake = Box::pin(futures::stream::pending());
                    }
                    woken = true;
                }
                () = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    /// The earliest instant the driver must act at on its own.
    fn next_deadline(&self, next_beat: Instant) -> Instant {
        self.held
            .values()
            .map(|h| match h.state {
                HeldState::Reading => h.hold.deliver_until(),
                HeldState::Failed { retry_at, .. } => retry_at,
                HeldState::Draining(_) => next_beat,
            })
            .fold(next_beat, Instant::min)
    }

    /// Units whose delivery window closed on this member's clock are lost.
    fn expire_holds(&mut self, now: Instant) {
        let expired: Vec<(u32, u64)> = self
            .held
            .iter()
            .filter(|(_, h)| h.hold.deliver_until() <= now)
            .map(|(u, h)| (*u, h.hold.lease.epoch))
            .collect();
        for (unit, epoch) in expired {
            self.lose(
                unit,
                epoch,
                "no heartbeat succeeded in time: the lease may expire".into(),
            );
        }
    }

    fn lose(&mut self, unit: u32, epoch: u64, reason: String) {
        if self
            .held
            .get(&unit)
            .is_some_and(|h| h.hold.lease.epoch == epoch)
        {
            self.held.remove(&unit);
            let _ = self.notice_tx.send(GroupItem::Lost { unit, reason });
        }
    }

    fn reader_failed(&mut self, failed: ReaderFailed) {
        let Some(held) = self.held.get_mut(&failed.unit) else {
            return;
        };
        if held.hold.lease.epoch != failed.epoch || !matches!(held.state, HeldState::Reading) {
            return;
        }
        held.failures += 1;
        held.state = HeldState::Failed {
            retry_at: Instant::now() + backoff(held.failures),
        };
        let _ = self.notice_tx.send(GroupItem::UnitFailed {
            unit: failed.unit,
            error: failed.error,
        });
    }

    /// One heartbeat and rebalance.
    async fn step(&mut self) {
        let sent = Instant::now();
        // A heartbeat that hangs must not keep the driver from closing
        // delivery windows on time: give up after one interval.
        let beat = self
            .store
            .heartbeat(&self.spec.name, &self.session, self.config.lease);
        let view = match tokio::time::timeout(self.config.heartbeat, beat).await {
            Ok(Ok(view)) => view,
            Ok(Err(e)) => {
                tracing::warn!(group = %self.spec.name, error = %e, "group heartbeat failed; retrying on the next tick");
                return;
            }
            Err(_) => {
                tracing::warn!(group = %self.spec.name, "group heartbeat took longer than the heartbeat interval; retrying on the next tick");
                return;
            }
        };
        let until = sent + self.config.lease - self.config.margin;
        self.confirm_holds(&view, until);
        let members: Vec<&str> = view.members.iter().map(|m| m.session.as_str()).collect();
        let Some(me) = members.iter().position(|m| *m == self.session) else {
            return;
        };
        let target = assign(self.spec.units, &members);
        let now = Instant::now();
        for state in &view.unit_states {
            let unit = state.unit;
            let mine = target.get(unit as usize).copied().flatten() == Some(me);
            match self.held.get(&unit).map(|h| &h.state) {
                Some(HeldState::Reading) if !mine => self.start_drain(unit),
                Some(HeldState::Failed { retry_at, .. }) if !mine || *retry_at <= now => {
                    if mine {
                        self.retry(unit, until).await;
                    } else {
                        self.start_drain(unit);
                    }
                }
                None if mine && state.takeable_by(&self.session) => {
                    self.acquire(unit, until).await;
                }
                None if !mine && state.owner.as_deref() == Some(self.session.as_str()) => {
                    // Ours in the store but no longer read here (lost on our
                    // own clock, or its drain was cut short): nothing of it
                    // is delivered, so hand it over rather than pin it.
                    let orphan = UnitLease::new(
                        self.spec.name.clone(),
                        unit,
                        self.session.clone(),
                        state.epoch,
                        state.cursor.clone(),
                    );
                    if let Err(e) = self
                        .store
                        .release(&orphan)
                        .bounded(self.config.heartbeat)
                        .await
                    {
                        tracing::warn!(group = %self.spec.name, unit, error = %e, "releasing a unit failed");
                    }
                }
                _ => {}
            }
        }
    }

    /// Keep the holds the store still shows as ours, extended to `until`;
    /// the others were taken.
    fn confirm_holds(&mut self, view: &GroupView, until: Instant) {
        let mut taken = Vec::new();
        for (unit, held) in &self.held {
            if matches!(held.state, HeldState::Draining(_)) {
                continue;
            }
            let state = view.unit_states.get(*unit as usize);
            let ours = state.is_some_and(|s| {
                s.owner.as_deref() == Some(self.session.as_str())
                    && s.epoch == held.hold.lease.epoch
            });
            if ours {
                held.hold.extend(until);
            } else {
                taken.push((*unit, held.hold.lease.epoch));
            }
        }
        for (unit, epoch) in taken {
            self.lose(unit, epoch, "another member took the unit".into());
        }
    }

    async fn acquire(&mut self, unit: u32, until: Instant) {
        let lease = match self
            .store
            .acquire(&self.spec.name, unit, &self.session)
            .bounded(self.config.heartbeat)
            .await
        {
            Ok(Some(lease)) => lease,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(group = %self.spec.name, unit, error = %e, "acquiring a unit failed");
                return;
            }
        };
        let epoch = lease.epoch;
        self.start_reading(lease, until, 0);
        let _ = self.notice_tx.send(GroupItem::Assigned { unit, epoch });
    }

    /// Open a failed unit's subscription again from its stored cursor.
    async fn retry(&mut self, unit: u32, until: Instant) {
        let Some(held) = self.held.get(&unit) else {
            return;
        };
        let (epoch, failures) = (held.hold.lease.epoch, held.failures);
        match self
            .store
            .acquire(&self.spec.name, unit, &self.session)
            .bounded(self.config.heartbeat)
            .await
        {
            Ok(Some(lease)) if lease.epoch == epoch => {
                self.start_reading(lease, until, failures);
            }
            Ok(_) => self.lose(unit, epoch, "another member took the unit".into()),
            Err(e) => {
                tracing::warn!(group = %self.spec.name, unit, error = %e, "re-reading a failed unit's cursor failed");
                if let Some(held) = self.held.get_mut(&unit) {
                    held.state = HeldState::Failed {
                        retry_at: Instant::now() + backoff(failures),
                    };
                }
            }
        }
    }

    /// Hold `lease` and start its reader; `failures` counts how often the
    /// unit's subscription failed while this member held it.
    fn start_reading(&mut self, lease: UnitLease, until: Instant, failures: u32) {
        let unit = lease.unit;
        let hold = Arc::new(Hold::new(
            lease,
            self.store.clone(),
            until,
            self.fenced_tx.clone(),
        ));
        self.added.push(hold.clone());
        self.held.insert(
            unit,
            Held {
                hold,
                state: HeldState::Reading,
                failures,
            },
        );
    }

    /// Hand the units taken since the last call to the shared reader.
    fn send_added(&mut self) {
        if !self.added.is_empty() {
            let _ = self.add_tx.send(std::mem::take(&mut self.added));
        }
    }

    /// Stop reading `unit`, wait for what was handed out to be committed,
    /// then release it (in a task, so heartbeats go on meanwhile).
    fn start_drain(&mut self, unit: u32) {
        let Some(held) = self.held.get_mut(&unit) else {
            return;
        };
        let hold = held.hold.clone();
        hold.deactivate();
        let until = (Instant::now() + self.config.drain).min(hold.deliver_until());
        let drained = self.drained_tx.clone();
        let task = tokio::spawn(async move {
            hold.drained(until).await;
            if let Err(e) = hold.store.release(&hold.lease).await {
                tracing::warn!(unit = hold.lease.unit, error = %e, "releasing a unit failed; it moves when the lease expires");
            }
            let _ = drained.send((hold.lease.unit, hold.lease.epoch));
        });
        held.state = HeldState::Draining(task);
    }

    /// Leave the group: optionally drain first, then release everything.
    async fn leave(&mut self, drain: bool) -> Result<(), EngineError> {
        let holds: Vec<Arc<Hold>> = self.held.values().map(|h| h.hold.clone()).collect();
        self.reader.abort();
        for held in self.held.values() {
            held.hold.deactivate();
        }
        if drain {
            let until = Instant::now() + self.config.drain;
            for hold in &holds {
                hold.drained(until.min(hold.deliver_until())).await;
            }
        }
        self.held.clear();
        self.store.leave(&self.spec.name, &self.session).await
    }
}
