//! [`Merger`]: the followed partitions' entries, read by their own
//! readers, merged into one delivery order with one position per
//! partition.
//!
//! Invariants:
//! - each partition's entries are yielded in its stream's order, each
//!   once; across partitions the next entry is the smallest (entry id,
//!   partition) among the partitions' buffered heads, and an entry is
//!   taken only while every other partition has a buffered head or was
//!   read to its end by its last read — so a catch-up yields entry-id
//!   order, and live entries come as they are read;
//! - the position of a partition is the last of its entries taken (or
//!   where the subscription started it), so the cursor of an item resumes
//!   every partition exactly after what was yielded from it; a position
//!   carries the witness of the entry it names when it names one that was
//!   read (or the cursor started at carried it);
//! - `CaughtUp` is yielded once, after every entry each partition had when
//!   the subscription started (its target) and before any later one.

use std::collections::VecDeque;

use ff_core::backend::DeliveryItem;
use ff_core::engine_error::EngineError;
use ff_core::stream_events::{EventMeta, NewEvent};
use ff_core::stream_subscribe::{
    encode_valkey_partitioned, PartitionedPosition, StreamCursor, ValkeyPosition,
};
use ff_core::types::TimestampMs;

use crate::expiry::Expired;
use crate::partition::{Followed, Positions};

/// What an entry of a page holds for the consumer.
pub(crate) enum Decoded {
    /// An event the filter admits.
    Event(NewEvent, EventMeta),
    /// An entry that could not be decoded.
    Corrupt(String),
    /// An event the filter rejects: it only moves the position.
    Skipped,
}

/// One entry read from a partition.
pub(crate) struct Pending {
    pub(crate) id: ValkeyPosition,
    /// The entry's [witness](crate::witness).
    pub(crate) witness: u32,
    pub(crate) decoded: Decoded,
}

/// One partition's share of the merge.
struct Lane {
    /// Yielded up to here; `None` until the first read of a subscription
    /// from the beginning.
    position: Option<ValkeyPosition>,
    /// The witness of the entry at `position`, when known.
    witness: Option<u32>,
    /// `CaughtUp` is due once past here; `None` when not awaited.
    target: Option<ValkeyPosition>,
    queue: VecDeque<Pending>,
    /// Its last read reached the end of the stream.
    at_end: bool,
}

impl Lane {
    /// Whether every entry it had at subscribe time was taken.
    fn reached_target(&self) -> bool {
        match self.target {
            None => true,
            Some(target) => {
                self.position.is_some_and(|p| p >= target)
                    || self.queue.front().is_some_and(|e| e.id > target)
                    || (self.queue.is_empty() && self.at_end && self.position.is_some())
            }
        }
    }
}

/// Why the merge stopped.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Blocked {
    /// Partition (index into the followed list) must be read before
    /// anything else can be taken.
    NeedsRead,
    /// Nothing is buffered and every partition is at its end.
    Idle,
}

/// See the module docs.
pub(crate) struct Merger {
    followed: Followed,
    lanes: Vec<Lane>,
    /// `CaughtUp` not yielded yet.
    awaiting_caught_up: bool,
    /// Entries taken so far (positions move only by taking entries).
    taken: u64,
    /// `taken` when the last item was yielded (or the subscription started
    /// at known positions); `None` before any.
    yielded_at: Option<u64>,
    /// With several partitions, the positions as a cursor position, kept
    /// up to date entry by entry once every lane's is known (so yielding
    /// an item encodes it without rebuilding it).
    composite: Option<PartitionedPosition>,
}

impl Merger {
    /// A merger over `followed`, starting each partition at `positions`
    /// (`None`: from the beginning, resolved by its first read) with the
    /// `CaughtUp` targets `targets` (`None` for a subscription from the
    /// tail, whose `CaughtUp` was yielded at once).
    pub(crate) fn new(
        followed: Followed,
        positions: Vec<Option<ValkeyPosition>>,
        targets: Option<Vec<ValkeyPosition>>,
    ) -> Self {
        let awaiting_caught_up = targets.is_some();
        let targets = targets.map_or_else(
            || vec![None; positions.len()],
            |t| t.into_iter().map(Some).collect(),
        );
        let lanes = positions
            .into_iter()
            .zip(targets)
            .map(|(position, target)| Lane {
                position,
                witness: None,
                target,
                queue: VecDeque::new(),
                at_end: false,
            })
            .collect();
        let mut merger = Self {
            followed,
            lanes,
            awaiting_caught_up,
            taken: 0,
            yielded_at: None,
            composite: None,
        };
        if merger.positions().is_some() {
            merger.yielded_at = Some(0);
        }
        merger.build_composite();
        merger
    }

    /// The same merger with the lanes' starting positions carrying
    /// `witnesses` (one per lane).
    pub(crate) fn with_witnesses(mut self, witnesses: &[Option<u32>]) -> Self {
        for (lane, &witness) in self.lanes.iter_mut().zip(witnesses) {
            lane.witness = witness;
        }
        self.composite = None;
        self.build_composite();
        self
    }

    /// Build the composite position once every lane's is known.
    fn build_composite(&mut self) {
        if self.composite.is_some() || self.followed.count() <= 1 {
            return;
        }
        if let Some(positions) = self.positions() {
            let mut composite = PartitionedPosition::new(
                self.followed.count(),
                self.followed.partitions().iter().copied().zip(positions),
            )
            .expect("followed partitions are valid");
            for (&partition, lane) in self.followed.partitions().iter().zip(&self.lanes) {
                if let Some(at) = lane.position.filter(|_| lane.witness.is_some()) {
                    composite
                        .set_witnessed(partition, at, lane.witness)
                        .expect("a followed partition");
                }
            }
            self.composite = Some(composite);
        }
    }

    /// How many partitions are followed.
    pub(crate) fn len(&self) -> usize {
        self.lanes.len()
    }

    /// Whether lane `lane` has nothing buffered (its reader should read).
    pub(crate) fn wants_read(&self, lane: usize) -> bool {
        self.lanes[lane].queue.is_empty()
    }

    /// Buffer a page read from lane `lane`. `at_end`: the read reached
    /// the stream's end. `start`: for a lane whose position is not known
    /// yet, where it starts (just before the first entry read, or the
    /// stream's newest id when there was none).
    pub(crate) fn push(
        &mut self,
        lane: usize,
        entries: Vec<Pending>,
        at_end: bool,
        start: ValkeyPosition,
    ) {
        let l = &mut self.lanes[lane];
        debug_assert!(l.queue.is_empty());
        l.position.get_or_insert(start);
        l.queue.extend(entries);
        l.at_end = at_end;
        self.build_composite();
    }

    /// Every position, once each is known.
    pub(crate) fn positions(&self) -> Option<Vec<ValkeyPosition>> {
        self.lanes.iter().map(|l| l.position).collect()
    }

    /// The cursor of the current positions, once each is known.
    pub(crate) fn cursor(&self) -> Option<StreamCursor> {
        match &self.composite {
            Some(position) => Some(encode_valkey_partitioned(self.followed.family(), position)),
            None => self.positions().map(|p| {
                let witnesses: Vec<Option<u32>> = self.lanes.iter().map(|l| l.witness).collect();
                self.followed.encode_witnessed(&p, &witnesses)
            }),
        }
    }

    /// Whether the positions moved past the last item yielded (a filter
    /// rejected what was read since).
    pub(crate) fn moved_past_yielded(&self) -> bool {
        self.yielded_at != Some(self.taken) && self.lanes.iter().all(|l| l.position.is_some())
    }

    /// A `Checkpoint` at the current positions, when they moved past the
    /// last item yielded.
    pub(crate) fn checkpoint(&mut self) -> Option<DeliveryItem> {
        if !self.moved_past_yielded() {
            return None;
        }
        self.yielded_at = Some(self.taken);
        Some(DeliveryItem::Checkpoint {
            cursor: self.cursor()?,
        })
    }

    /// Take items into `out` until `max` were added or nothing more can
    /// be taken; why it stopped.
    pub(crate) fn take(&mut self, out: &mut Vec<DeliveryItem>, max: usize) -> Option<Blocked> {
        let mut added = 0;
        loop {
            if self.awaiting_caught_up && self.lanes.iter().all(Lane::reached_target) {
                self.awaiting_caught_up = false;
                let cursor = self.cursor().expect("every lane has a position");
                out.push(DeliveryItem::CaughtUp { cursor });
                self.yielded_at = Some(self.taken);
                added += 1;
            }
            if added >= max {
                return None;
            }
            if self.lanes.iter().any(|l| l.queue.is_empty() && !l.at_end) {
                return Some(Blocked::NeedsRead);
            }
            let awaiting = self.awaiting_caught_up;
            let next = self
                .lanes
                .iter()
                .enumerate()
                .filter_map(|(i, l)| {
                    let head = l.queue.front()?;
                    // Before CaughtUp, only entries from before the subscribe call.
                    let eligible = !awaiting || l.target.is_none_or(|t| head.id <= t);
                    eligible.then_some((head.id, i))
                })
                .min();
            let Some((_, lane)) = next else {
                return Some(if self.lanes.iter().all(|l| l.queue.is_empty()) {
                    Blocked::Idle
                } else {
                    Blocked::NeedsRead
                });
            };
            let entry = self.lanes[lane].queue.pop_front().expect("a head");
            self.lanes[lane].position = Some(entry.id);
            self.lanes[lane].witness = Some(entry.witness);
            if let Some(position) = self.composite.as_mut() {
                let partition = self.followed.partitions()[lane];
                position
                    .set_witnessed(partition, entry.id, Some(entry.witness))
                    .expect("a followed partition");
            }
            self.taken += 1;
            let item = match entry.decoded {
                Decoded::Skipped => continue,
                Decoded::Event(draft, meta) => {
                    let at = TimestampMs(i64::try_from(entry.id.ms).unwrap_or(i64::MAX));
                    let cursor = self.cursor().expect("every lane has a position");
                    DeliveryItem::Event {
                        event: draft.into_event(cursor, at),
                        meta,
                    }
                }
                Decoded::Corrupt(detail) => DeliveryItem::Corrupt {
                    cursor: self.cursor().expect("every lane has a position"),
                    detail,
                },
            };
            out.push(item);
            self.yielded_at = Some(self.taken);
            added += 1;
        }
    }

    /// The followed partitions.
    pub(crate) fn followed(&self) -> &Followed {
        &self.followed
    }

    /// Each lane's position (`None` until its first read of a subscription
    /// from the beginning).
    pub(crate) fn lane_positions(&self) -> Vec<Option<ValkeyPosition>> {
        self.lanes.iter().map(|l| l.position).collect()
    }

    /// The witness of each lane's position, when known.
    pub(crate) fn lane_witnesses(&self) -> Vec<Option<u32>> {
        self.lanes.iter().map(|l| l.witness).collect()
    }

    /// The `CursorExpired` error for lane `lane` found expired at its read
    /// after `at`: the cursor is the current positions (or, before they
    /// are all known, `sent`), and `oldest` the positions (with their
    /// witnesses) that resume every lane at what it still retains, when
    /// known.
    pub(crate) fn expired(
        &self,
        lane: usize,
        at: ValkeyPosition,
        expired: Expired,
        sent: &StreamCursor,
        oldest: Option<Positions>,
    ) -> EngineError {
        let positions: Option<Vec<ValkeyPosition>> = self
            .lanes
            .iter()
            .enumerate()
            .map(|(i, l)| if i == lane { Some(at) } else { l.position })
            .collect();
        EngineError::CursorExpired {
            cursor: positions.map_or_else(|| sent.clone(), |p| self.followed.encode(&p)),
            oldest: oldest.map(|(p, w)| self.followed.encode_witnessed(&p, &w)),
            detail: lane_detail(&self.followed, lane, &expired.detail),
        }
    }
}

/// `detail` about lane `lane`, naming its partition when there are several.
pub(crate) fn lane_detail(followed: &Followed, lane: usize, detail: &str) -> String {
    let partition = followed.partitions()[lane];
    if followed.partitions().len() > 1 || partition != 0 {
        format!("{} partition {partition}: {detail}", followed.family())
    } else {
        format!("{}: {detail}", followed.family())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ff_core::stream_events::{CompletionOutcome, Family};
    use ff_core::stream_subscribe::{decode_valkey_partitioned, CursorStart};
    use ff_core::types::ExecutionId;

    fn at(ms: u64) -> ValkeyPosition {
        ValkeyPosition { ms, seq: 0 }
    }

    fn event(ms: u64, n: u16) -> Pending {
        Pending {
            id: at(ms),
            witness: 0,
            decoded: Decoded::Event(
                NewEvent::completion(ExecutionId::new(n), CompletionOutcome::Success),
                EventMeta::new(),
            ),
        }
    }

    fn ms_of(items: &[DeliveryItem]) -> Vec<Option<i64>> {
        items
            .iter()
            .map(|i| match i {
                DeliveryItem::Event { event, .. } => Some(event.at().0),
                _ => None,
            })
            .collect()
    }

    fn followed(n: u16) -> Followed {
        Followed::all(Family::Completion, n)
    }

    #[test]
    fn a_catch_up_merges_by_entry_id_and_waits_for_lanes_still_reading() {
        let mut m = Merger::new(followed(2), vec![None, None], Some(vec![at(9), at(9)]));
        let mut out = Vec::new();
        m.push(0, vec![event(1, 0), event(4, 0)], false, at(0));
        assert_eq!(m.take(&mut out, 100), Some(Blocked::NeedsRead));
        assert!(out.is_empty(), "lane 1 has not been read");
        m.push(1, vec![event(2, 1), event(3, 1)], true, at(0));
        // Lane 1 was read to its end: lane 0's 4 need not wait for it.
        assert_eq!(m.take(&mut out, 100), Some(Blocked::NeedsRead));
        assert_eq!(ms_of(&out), [Some(1), Some(2), Some(3), Some(4)]);
        assert!(m.wants_read(0), "lane 0 is still catching up");
        m.push(0, vec![event(5, 0)], true, at(0));
        out.clear();
        assert_eq!(m.take(&mut out, 100), Some(Blocked::Idle));
        assert_eq!(ms_of(&out), [Some(5), None]);
        assert!(matches!(out[1], DeliveryItem::CaughtUp { .. }));
    }

    #[test]
    fn caught_up_comes_between_the_backlog_and_later_entries() {
        let mut m = Merger::new(
            followed(2),
            vec![Some(at(0)), Some(at(0))],
            Some(vec![at(3), at(0)]),
        );
        let mut out = Vec::new();
        // Lane 1 had nothing at subscribe; its entry 2 came after.
        m.push(0, vec![event(1, 0), event(3, 0), event(4, 0)], true, at(0));
        m.push(1, vec![event(2, 1)], true, at(0));
        assert_eq!(m.take(&mut out, 100), Some(Blocked::Idle));
        assert_eq!(ms_of(&out), [Some(1), Some(3), None, Some(2), Some(4)]);
        let DeliveryItem::CaughtUp { cursor } = &out[2] else {
            panic!("CaughtUp third")
        };
        let CursorStart::After(p) =
            decode_valkey_partitioned(cursor, Family::Completion, 2, None).unwrap()
        else {
            panic!("a position")
        };
        assert_eq!(p.iter().map(|(_, p)| p).collect::<Vec<_>>(), [at(3), at(0)]);
    }

    #[test]
    fn every_item_carries_the_positions_after_it_and_skipped_entries_move_them() {
        let mut m = Merger::new(followed(2), vec![Some(at(0)), Some(at(0))], None);
        let mut out = Vec::new();
        let skipped = Pending {
            id: at(2),
            witness: 0,
            decoded: Decoded::Skipped,
        };
        m.push(0, vec![event(1, 0), skipped], true, at(0));
        m.push(1, vec![event(3, 1)], true, at(0));
        m.take(&mut out, 100);
        let cursors: Vec<Vec<ValkeyPosition>> = out
            .iter()
            .map(|i| {
                let CursorStart::After(p) =
                    decode_valkey_partitioned(i.cursor(), Family::Completion, 2, None).unwrap()
                else {
                    panic!()
                };
                p.iter().map(|(_, p)| p).collect()
            })
            .collect();
        assert_eq!(cursors, [vec![at(1), at(0)], vec![at(2), at(3)]]);
        for pair in out.windows(2) {
            assert_eq!(
                pair[0].cursor().position_cmp(pair[1].cursor()),
                Some(std::cmp::Ordering::Less)
            );
        }
    }

    #[test]
    fn one_partition_is_a_pass_through_with_single_stream_cursors() {
        let mut m = Merger::new(followed(1), vec![Some(at(0))], Some(vec![at(2)]));
        let mut out = Vec::new();
        m.push(0, vec![event(1, 0), event(2, 0), event(3, 0)], true, at(0));
        assert_eq!(m.take(&mut out, 2), None, "stops at max");
        assert_eq!(m.take(&mut out, 100), Some(Blocked::Idle));
        assert_eq!(ms_of(&out), [Some(1), Some(2), None, Some(3)]);
        assert_eq!(out[0].cursor().format_byte(), Some(0x01));
    }
}
