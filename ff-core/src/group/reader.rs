//! A member's shared reader: one backend subscription feeds every unit the
//! member holds, so a member reads each event of the family once however
//! many units it holds.
//!
//! Each held unit keeps a *position*: a cursor before which every event of
//! the unit was queued (or committed before the unit was acquired). Only
//! the backend vouches for a position: it is either the answer of the
//! backend's judgment of the unit's committed cursor when the unit is
//! added ([`StreamBackend::resolve_cursor`], or for partitions
//! [`GroupStore::start_partitions`]; a refusal, e.g. `CursorExpired`, fails
//! that unit alone), or a cursor the open subscription yielded. Ordering
//! two vouched positions of one family's stream is what
//! [`StreamCursor::position_cmp`] is for; no cursor is ever admitted
//! because its bytes sort inside what was read.
//!
//! Two layouts:
//! - **Filtered** (one stream per family): the subscription starts at the
//!   least position of the held units and keeps, for each unit, the events
//!   of the unit after its position. A unit added with a position behind
//!   the subscription's (its committed cursor is older than what was read)
//!   restarts the subscription from the least position: the other units
//!   skip what they already queued, so nothing of theirs repeats, and the
//!   added unit misses nothing. A unit added at or after the subscription's
//!   position joins it without a restart. Restarts happen only when a unit
//!   is acquired behind the reader — at a hand-over, not per event. Once a
//!   unit's events up to the reader's position were all queued, the unit
//!   *follows* the reader: its position is the reader's, so an event costs
//!   one look at its own unit, whatever the number of units.
//! - **Partitioned** (a unit is a partition): the subscription follows the
//!   held partitions only, from a cursor naming each unit's own position,
//!   which the backend judges partition by partition; acquiring or giving
//!   up a unit reopens it over the new set.
//!
//! Invariants:
//! - every item queued for a unit carries a cursor that resumes exactly
//!   after everything the unit's consumer has been handed: events of the
//!   unit, and positions past events of other units (checkpoints) only
//!   once every earlier event of the unit was queued — so committing any
//!   handle never skips an event of the unit;
//! - each unit's events are queued in the order the subscription yields
//!   them, each at most once per holding;
//! - a unit whose hold was deactivated (lost, drained, released) gets no
//!   further item;
//! - memory is one subscription plus O(held units); items go to the
//!   consumer in batches of at most [`BATCH`] (what the subscription had
//!   ready, so one hand-off per batch rather than per event) over a
//!   bounded queue, so a slow consumer slows the read down.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};

use crate::backend::{DeliveryItem, DeliveryStream, StreamBackend};
use crate::cursor::codec::{
    decode_valkey_partitioned, encode_valkey_partitioned, CursorStart, PartitionedPosition,
};
use crate::cursor::StreamCursor;
use crate::error::EngineError;
use crate::group::item::{Commit, GroupItem, Hold};
use crate::group::spec::GroupSpec;
use crate::group::store::GroupStore;

/// Most items handed to the consumer at once.
pub(crate) const BATCH: usize = 128;

/// What a reader tells the driver when it stops reading a unit.
#[derive(Debug)]
pub(crate) struct ReaderFailed {
    pub(crate) unit: u32,
    pub(crate) epoch: u64,
    pub(crate) error: EngineError,
}

/// How a group's units map onto the backend's streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Layout {
    /// Units are filtered views of one stream.
    Filtered,
    /// A unit is one of the family's P partitions.
    Partitioned(u16),
}

/// One held unit, as the reader tracks it.
struct Unit {
    hold: Arc<Hold>,
    /// Everything of the unit up to here was queued (or committed); while
    /// `following`, the reader's own position is the unit's.
    position: StreamCursor,
    /// Filtered units only: every event of the unit up to the reader's
    /// position was queued, so the unit needs no look at other units'
    /// events (one comparison per event of the unit, none per other).
    following: bool,
    /// The cursor of the last item queued (or the unit's start).
    last: StreamCursor,
    /// Sequence of the last item queued.
    seq: u64,
    /// When the last item of the unit was queued (or it was added).
    quiet_since: Instant,
}

impl Unit {
    /// The unit's position, given the reader's.
    fn at<'a>(&'a self, read_at: &'a Option<StreamCursor>) -> &'a StreamCursor {
        match (self.following, read_at) {
            (true, Some(read_at)) => read_at,
            _ => &self.position,
        }
    }

    /// Record an item queued at `at`; answer its sequence.
    fn queued(&mut self, at: &StreamCursor, following: bool) -> u64 {
        self.seq += 1;
        self.position = at.clone();
        self.last = at.clone();
        self.following = following;
        self.quiet_since = Instant::now();
        self.seq
    }
}

/// The shared reader of one member.
pub(crate) struct SharedReader {
    backend: Arc<dyn StreamBackend>,
    store: Arc<dyn GroupStore>,
    spec: GroupSpec,
    layout: Layout,
    checkpoint_interval: Duration,
    out: mpsc::Sender<Vec<GroupItem>>,
    failed: mpsc::UnboundedSender<ReaderFailed>,
    units: BTreeMap<u32, Unit>,
    /// Items queued for the next hand-off.
    pending: Vec<GroupItem>,
    stream: Option<DeliveryStream>,
    /// The last position the open subscription yielded, or its start.
    read_at: Option<StreamCursor>,
    /// The subscription must be reopened over the held units.
    reopen: bool,
}

/// What woke the reader; one lives on the stack per turn of its loop.
#[allow(clippy::large_enum_variant)]
enum Step {
    Add(Option<Vec<Arc<Hold>>>),
    Next(Option<Result<DeliveryItem, EngineError>>),
    Tick,
}

impl SharedReader {
    /// A reader queueing into `out` and reporting units it stops reading
    /// on `failed`.
    pub(crate) fn new(
        backend: Arc<dyn StreamBackend>,
        store: Arc<dyn GroupStore>,
        spec: GroupSpec,
        layout: Layout,
        checkpoint_interval: Duration,
        out: mpsc::Sender<Vec<GroupItem>>,
        failed: mpsc::UnboundedSender<ReaderFailed>,
    ) -> Self {
        Self {
            backend,
            store,
            spec,
            layout,
            checkpoint_interval,
            out,
            failed,
            units: BTreeMap::new(),
            pending: Vec::new(),
            stream: None,
            read_at: None,
            reopen: false,
        }
    }

    /// Read until `adds` closes (the driver is gone) or the consumer is.
    /// Each message on `adds` is a batch of newly held units.
    pub(crate) async fn run(mut self, mut adds: mpsc::UnboundedReceiver<Vec<Arc<Hold>>>) {
        let mut tick = tokio::time::interval(self.checkpoint_interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            self.prune();
            if self.units.is_empty() {
                self.close();
            } else if self.stream.is_none() || self.reopen {
                self.open().await;
            }
            let step = match &mut self.stream {
                Some(stream) => tokio::select! {
                    biased;
                    holds = adds.recv() => Step::Add(holds),
                    _ = tick.tick() => Step::Tick,
                    next = stream.next() => Step::Next(next),
                },
                None => tokio::select! {
                    biased;
                    holds = adds.recv() => Step::Add(holds),
                    _ = tick.tick() => Step::Tick,
                },
            };
            match step {
                Step::Add(None) => return,
                Step::Add(Some(mut holds)) => {
                    while let Ok(more) = adds.try_recv() {
                        holds.extend(more);
                    }
                    self.add(holds).await;
                }
                Step::Next(next) => {
                    self.handle(next);
                    // Take what else the subscription has ready, to hand
                    // it over in one batch.
                    while self.pending.len() < BATCH {
                        let Some(stream) = &mut self.stream else {
                            break;
                        };
                        match stream.next().now_or_never() {
                            Some(next) => self.handle(next),
                            None => break,
                        }
                    }
                }
                Step::Tick => self.checkpoints(),
            }
            if !self.pending.is_empty() {
                let batch = std::mem::take(&mut self.pending);
                if self.out.send(batch).await.is_err() {
                    return;
                }
            }
        }
    }

    /// Forget units whose hold was deactivated.
    fn prune(&mut self) {
        let before = self.units.len();
        self.units.retain(|_, u| u.hold.is_active());
        if self.units.len() != before && matches!(self.layout, Layout::Partitioned(_)) {
            self.reopen = true;
        }
    }

    /// Drop the subscription (nothing is held).
    fn close(&mut self) {
        self.stream = None;
        self.read_at = None;
        self.reopen = false;
    }

    /// Stop reading every unit, reporting `error` for each.
    fn fail_all(&mut self, error: EngineError) {
        for (unit, u) in std::mem::take(&mut self.units) {
            self.report(unit, &u.hold, error.clone());
        }
        self.close();
    }

    fn report(&self, unit: u32, hold: &Hold, error: EngineError) {
        let _ = self.failed.send(ReaderFailed {
            unit,
            epoch: hold.lease.epoch,
            error,
        });
    }

    /// Have the backend judge each new unit's committed cursor, then read
    /// the unit from the position it answers.
    async fn add(&mut self, holds: Vec<Arc<Hold>>) {
        let family = self.spec.family;
        for hold in holds {
            if !hold.is_active() {
                continue;
            }
            let unit = hold.lease.unit;
            let judged = match self.layout {
                Layout::Filtered => {
                    self.backend
                        .resolve_cursor(family, hold.lease.cursor.clone())
                        .await
                }
                Layout::Partitioned(count) => {
                    let partition = [unit as u16];
                    match self
                        .store
                        .start_partitions(family, &partition, hold.lease.cursor.clone())
                        .await
                    {
                        Ok(start) => project(self.layout, family, &start, unit).ok_or_else(|| {
                            EngineError::invalid_cursor(format!(
                                "the backend answered {start} as the start of partition {unit} of {count}, which names no position in it"
                            ))
                        }),
                        Err(e) => Err(e),
                    }
                }
            };
            let position = match judged {
                Ok(position) => position,
                Err(e) => {
                    self.report(unit, &hold, e);
                    continue;
                }
            };
            match (&self.layout, &self.read_at) {
                (Layout::Partitioned(_), _) => self.reopen = true,
                (Layout::Filtered, Some(read_at)) => match compare(&position, read_at) {
                    Some(Ordering::Less) => self.reopen = true,
                    Some(_) => {}
                    None => {
                        self.report(
                            unit,
                            &hold,
                            EngineError::invalid_cursor(format!(
                                "unit {unit}'s cursor {position} cannot be ordered against this member's reader at {read_at}: \
                                 it belongs to another stream's history; reset the group"
                            )),
                        );
                        continue;
                    }
                },
                (Layout::Filtered, None) => {}
            }
            self.units.insert(
                unit,
                Unit {
                    hold,
                    last: position.clone(),
                    position,
                    following: false,
                    seq: 0,
                    quiet_since: Instant::now(),
                },
            );
        }
    }

    /// Open the subscription over the held units from their positions.
    async fn open(&mut self) {
        self.stream = None;
        self.reopen = false;
        let family = self.spec.family;
        let opened = match self.layout {
            Layout::Filtered => {
                let Some(start) = self.least_position() else {
                    return self.fail_all(EngineError::invalid_cursor(
                        "the held units' cursors cannot be ordered against each other: they belong to different histories; reset the group",
                    ));
                };
                self.backend
                    .subscribe_family(family, start.clone(), &self.spec.filter)
                    .await
                    .map(|s| (s, start))
            }
            Layout::Partitioned(count) => match self.joined_position(count) {
                Ok(start) => {
                    let partitions: Vec<u16> = self.units.keys().map(|&u| u as u16).collect();
                    self.store
                        .subscribe_partitions(family, &partitions, start.clone(), &self.spec.filter)
                        .await
                        .map(|s| (s, start))
                }
                Err(e) => Err(e),
            },
        };
        match opened {
            Ok((stream, start)) => {
                for u in self.units.values_mut() {
                    u.position = u.at(&self.read_at).clone();
                    u.following = false;
                }
                self.stream = Some(stream);
                self.read_at = Some(start);
            }
            Err(e) => self.fail_all(e),
        }
    }

    /// The least position of the held units (`None` when two of them
    /// cannot be ordered).
    fn least_position(&self) -> Option<StreamCursor> {
        let mut least: Option<&StreamCursor> = None;
        for u in self.units.values() {
            let at = u.at(&self.read_at);
            least = Some(match least {
                None => at,
                Some(l) => match compare(at, l)? {
                    Ordering::Less => at,
                    _ => l,
                },
            });
        }
        least.cloned()
    }

    /// One partitioned cursor naming each held partition's position.
    fn joined_position(&self, count: u16) -> Result<StreamCursor, EngineError> {
        let family = self.spec.family;
        let mut entries = Vec::with_capacity(self.units.len());
        for (&unit, u) in &self.units {
            let partition = [unit as u16];
            let CursorStart::After(one) =
                decode_valkey_partitioned(&u.position, family, count, Some(&partition))?
            else {
                return Err(EngineError::invalid_cursor(format!(
                    "unit {unit}'s position {} names no position in its partition",
                    u.position
                )));
            };
            let Some(at) = one.position(unit as u16) else {
                return Err(EngineError::invalid_cursor(format!(
                    "unit {unit}'s position {} does not cover its partition",
                    u.position
                )));
            };
            entries.push((unit as u16, at, one.witness(unit as u16)));
        }
        let mut joined =
            PartitionedPosition::new(count, entries.iter().map(|&(p, at, _)| (p, at)))?;
        for (p, at, witness) in entries {
            joined.set_witnessed(p, at, witness)?;
        }
        Ok(encode_valkey_partitioned(family, &joined))
    }

    /// Act on one item of the subscription.
    fn handle(&mut self, next: Option<Result<DeliveryItem, EngineError>>) {
        let (layout, family) = (self.layout, self.spec.family);
        match next {
            Some(Ok(DeliveryItem::Event { event, meta })) => {
                let cursor = event.cursor().clone();
                let owner = self.spec.unit_of(event.execution_id());
                self.read_at = Some(cursor.clone());
                let Some(u) = self.units.get_mut(&owner) else {
                    return;
                };
                let Some(at) = project(layout, family, &cursor, owner) else {
                    return;
                };
                if !u.hold.is_active() || !(u.following || is_after(&at, &u.position)) {
                    return;
                }
                let seq = u.queued(&at, layout == Layout::Filtered);
                let commit = Commit::new(u.hold.clone(), seq, at);
                self.pending.push(GroupItem::Event {
                    unit: owner,
                    event,
                    meta,
                    commit,
                });
            }
            Some(Ok(DeliveryItem::Corrupt { cursor, detail }))
            | Some(Err(EngineError::Corrupt { cursor, detail })) => {
                self.read_at = Some(cursor.clone());
                for (&unit, u) in self.units.iter_mut() {
                    let Some(at) = project(layout, family, &cursor, unit) else {
                        continue;
                    };
                    if !u.hold.is_active() || !(u.following || is_after(&at, &u.position)) {
                        continue;
                    }
                    let seq = u.queued(&at, layout == Layout::Filtered);
                    let commit = Commit::new(u.hold.clone(), seq, at);
                    self.pending.push(GroupItem::Corrupt {
                        unit,
                        detail: detail.clone(),
                        commit,
                    });
                }
            }
            Some(Ok(other)) => {
                let cursor = other.cursor().clone();
                for (&unit, u) in self.units.iter_mut() {
                    if u.following {
                        continue;
                    }
                    let Some(at) = project(layout, family, &cursor, unit) else {
                        continue;
                    };
                    if compare(&at, &u.position) == Some(Ordering::Greater) {
                        u.position = at;
                        u.following = layout == Layout::Filtered;
                    }
                }
                self.read_at = Some(cursor);
            }
            Some(Err(e)) => self.fail_all(e),
            None => {
                let backend = self.backend.backend_name();
                self.fail_all(EngineError::Backend {
                    backend,
                    detail: "the group member's subscription ended without an error".into(),
                });
            }
        }
    }

    /// Queue a checkpoint for each unit whose position moved past its last
    /// item and that had no item for a checkpoint interval.
    fn checkpoints(&mut self) {
        let now = Instant::now();
        for (&unit, u) in self.units.iter_mut() {
            if !u.hold.is_active() || now < u.quiet_since + self.checkpoint_interval {
                continue;
            }
            // A filtered unit ahead of the reader that the reader has since
            // passed got none of its events meanwhile: it follows again.
            if let (Layout::Filtered, false, Some(read_at)) =
                (self.layout, u.following, &self.read_at)
            {
                if matches!(
                    compare(read_at, &u.position),
                    Some(Ordering::Greater | Ordering::Equal)
                ) {
                    u.following = true;
                }
            }
            let at = u.at(&self.read_at).clone();
            if compare(&at, &u.last) != Some(Ordering::Greater) {
                continue;
            }
            let following = u.following;
            let seq = u.queued(&at, following);
            let commit = Commit::new(u.hold.clone(), seq, at);
            self.pending.push(GroupItem::Checkpoint { unit, commit });
        }
    }
}

/// The order of two vouched positions of one stream: `beginning()` is
/// before every other position; `None` when they cannot be ordered.
fn compare(a: &StreamCursor, b: &StreamCursor) -> Option<Ordering> {
    match (a.is_beginning(), b.is_beginning()) {
        (true, true) => Some(Ordering::Equal),
        (true, false) => Some(Ordering::Less),
        (false, true) => Some(Ordering::Greater),
        (false, false) => a.position_cmp(b),
    }
}

/// Whether `at` lies after `position`; positions that cannot be ordered
/// count as after, so an item is delivered twice rather than skipped.
fn is_after(at: &StreamCursor, position: &StreamCursor) -> bool {
    !matches!(
        compare(at, position),
        Some(Ordering::Less | Ordering::Equal)
    )
}

/// `cursor` as a position of `unit`: itself for filtered units, its entry
/// of the unit's partition for partitioned ones (`None` when it names
/// none).
fn project(
    layout: Layout,
    family: crate::event::Family,
    cursor: &StreamCursor,
    unit: u32,
) -> Option<StreamCursor> {
    match layout {
        Layout::Filtered => Some(cursor.clone()),
        Layout::Partitioned(count) => {
            match decode_valkey_partitioned(cursor, family, count, Some(&[unit as u16])).ok()? {
                CursorStart::After(one) => Some(encode_valkey_partitioned(family, &one)),
                _ => None,
            }
        }
    }
}
