//! Partitions: which partition an event goes to, and the cursors that
//! name positions in one or several partitions.
//!
//! With P = 1 a position is one entry id and its cursor the single-stream
//! format (`0x01`); with P > 1 a subscription's position is one entry id
//! per partition it follows and its cursor the partitioned format (`0x04`).
//! [`Followed`] is that choice, made once per subscription: everything that
//! yields or reads a cursor goes through it, so no other module tells the
//! formats apart.
//!
//! A position that names an entry the backend wrote or read carries that
//! entry's [witness](crate::witness): `0x01` cursors of 22 bytes, `0x04`
//! cursors with witnesses (18-byte `0x01` cursors and `0x04` cursors
//! without them, from older builds, still decode, without witnesses).
//!
//! Invariants: a cursor [`Followed::encode_witnessed`] makes, decoded by
//! [`Followed::decode_witnessed`] of the same family, P and partitions,
//! gives back the same positions and witnesses; and every position a cursor holds was read from
//! its partition's stream (or is its start), never made up for another
//! partition — so a position beyond a stream's newest id always means the
//! stream lost history.

use ff_core::cursor::codec::{
    decode_valkey_partitioned, encode_valkey_partitioned, CursorStart, PartitionedPosition,
    ValkeyPosition,
};
use ff_core::cursor::StreamCursor;
use ff_core::engine_error::EngineError;
use ff_core::stream_events::Family;
use ff_core::types::ExecutionId;

use crate::cursor_codec::{decode_valkey_witnessed, encode_valkey_witnessed, WitnessedPosition};

/// The partition of an event of execution `execution` when families are
/// split into `partitions`: the `N` of its `{fp:N}` modulo P.
pub(crate) fn partition_of(execution: &ExecutionId, partitions: u16) -> u16 {
    execution.partition() % partitions.max(1)
}

/// The cursor publish returns for the entry `at` of `family`'s partition
/// `partition`, whose witness is `witness` (when known): the entry's
/// position in its own partition (with P > 1, a cursor following that one
/// partition: it resumes a subscription of that partition, or one filtered
/// on an execution of it, exactly after the event).
pub(crate) fn event_cursor(
    family: Family,
    partitions: u16,
    partition: u16,
    at: ValkeyPosition,
    witness: Option<u32>,
) -> StreamCursor {
    if partitions <= 1 {
        return encode_valkey_witnessed(family, WitnessedPosition { at, witness });
    }
    let mut position =
        PartitionedPosition::new(partitions, [(partition, at)]).expect("a partition below P");
    position
        .set_witnessed(partition, at, witness)
        .expect("the followed partition");
    encode_valkey_partitioned(family, &position)
}

/// One position per followed partition, and the witness each carries.
pub(crate) type Positions = (Vec<ValkeyPosition>, Vec<Option<u32>>);

/// The partitions a subscription (or a `bounds` answer) covers, and the
/// cursor format that goes with them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Followed {
    family: Family,
    /// P, the family's partition count.
    count: u16,
    /// Ascending, distinct, each below `count`, never empty.
    partitions: Vec<u16>,
}

impl Followed {
    /// Every partition of `family` split into `count`.
    pub(crate) fn all(family: Family, count: u16) -> Self {
        Self {
            family,
            count,
            partitions: (0..count.max(1)).collect(),
        }
    }

    /// The partitions in `wanted` (any order, duplicates allowed), or a
    /// `Validation` error naming one that does not exist or an empty list.
    pub(crate) fn some(family: Family, count: u16, wanted: &[u16]) -> Result<Self, EngineError> {
        let mut partitions = wanted.to_vec();
        partitions.sort_unstable();
        partitions.dedup();
        if partitions.is_empty() {
            return Err(EngineError::validation(
                "a subscription follows at least one partition",
            ));
        }
        if let Some(p) = partitions.iter().find(|&&p| p >= count.max(1)) {
            return Err(EngineError::validation(format!(
                "partition {p} does not exist: each family has {} partition{} (0 to {})",
                count.max(1),
                if count > 1 { "s" } else { "" },
                count.max(1) - 1
            )));
        }
        Ok(Self {
            family,
            count,
            partitions,
        })
    }

    /// The family.
    pub(crate) fn family(&self) -> Family {
        self.family
    }

    /// P, the family's partition count.
    pub(crate) fn count(&self) -> u16 {
        self.count
    }

    /// The followed partitions, ascending.
    pub(crate) fn partitions(&self) -> &[u16] {
        &self.partitions
    }

    /// The cursor of `positions` (one per followed partition, in order),
    /// none carrying a witness.
    pub(crate) fn encode(&self, positions: &[ValkeyPosition]) -> StreamCursor {
        self.encode_witnessed(positions, &vec![None; positions.len()])
    }

    /// The cursor of `positions` with their `witnesses` (one each per
    /// followed partition, in order).
    pub(crate) fn encode_witnessed(
        &self,
        positions: &[ValkeyPosition],
        witnesses: &[Option<u32>],
    ) -> StreamCursor {
        debug_assert_eq!(positions.len(), self.partitions.len());
        debug_assert_eq!(witnesses.len(), self.partitions.len());
        if self.count <= 1 {
            let position = WitnessedPosition {
                at: positions[0],
                witness: witnesses[0],
            };
            return encode_valkey_witnessed(self.family, position);
        }
        let mut position = PartitionedPosition::new(
            self.count,
            self.partitions
                .iter()
                .copied()
                .zip(positions.iter().copied()),
        )
        .expect("followed partitions are valid");
        for ((&partition, &at), &witness) in self.partitions.iter().zip(positions).zip(witnesses) {
            position
                .set_witnessed(partition, at, witness)
                .expect("a followed partition");
        }
        encode_valkey_partitioned(self.family, &position)
    }

    /// Where `cursor` starts each followed partition (positions in the
    /// order of [`Followed::partitions`]). `InvalidCursor`, saying which,
    /// for a cursor of another format, family or P, or one that does not
    /// cover the followed partitions; a cursor covering more is narrowed.
    pub(crate) fn decode(
        &self,
        cursor: &StreamCursor,
    ) -> Result<CursorStart<Vec<ValkeyPosition>>, EngineError> {
        Ok(match self.decode_witnessed(cursor)? {
            CursorStart::Tail => CursorStart::Tail,
            CursorStart::Beginning => CursorStart::Beginning,
            CursorStart::After((positions, _)) => CursorStart::After(positions),
        })
    }

    /// [`Followed::decode`], with the witness each position carries.
    pub(crate) fn decode_witnessed(
        &self,
        cursor: &StreamCursor,
    ) -> Result<CursorStart<Positions>, EngineError> {
        if self.count <= 1 {
            return Ok(match decode_valkey_witnessed(cursor, self.family)? {
                CursorStart::Tail => CursorStart::Tail,
                CursorStart::Beginning => CursorStart::Beginning,
                CursorStart::After(p) => CursorStart::After((vec![p.at], vec![p.witness])),
            });
        }
        Ok(
            match decode_valkey_partitioned(
                cursor,
                self.family,
                self.count,
                Some(&self.partitions),
            )? {
                CursorStart::Tail => CursorStart::Tail,
                CursorStart::Beginning => CursorStart::Beginning,
                CursorStart::After(position) => CursorStart::After((
                    position.iter().map(|(_, p)| p).collect(),
                    position.partitions().map(|n| position.witness(n)).collect(),
                )),
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cursor_codec::encode_valkey;

    fn at(ms: u64, seq: u64) -> ValkeyPosition {
        ValkeyPosition { ms, seq }
    }

    #[test]
    fn events_go_to_their_execution_partition_modulo_p() {
        let exec = ExecutionId::new(13);
        assert_eq!(partition_of(&exec, 1), 0);
        assert_eq!(partition_of(&exec, 6), 1);
        assert_eq!(partition_of(&exec, 256), 13);
    }

    #[test]
    fn cursors_round_trip_in_both_formats() {
        let f = Family::Completion;
        let one = Followed::all(f, 1);
        let c = one.encode(&[at(5, 1)]);
        assert_eq!(c, encode_valkey(f, 5, 1));
        assert_eq!(one.decode(&c).unwrap(), CursorStart::After(vec![at(5, 1)]));
        let six = Followed::all(f, 6);
        let positions: Vec<_> = (0..6).map(|n| at(100 + n, n)).collect();
        let c = six.encode(&positions);
        assert_eq!(
            six.decode(&c).unwrap(),
            CursorStart::After(positions.clone())
        );
        assert!(matches!(
            one.decode(&c),
            Err(EngineError::InvalidCursor { .. })
        ));
        let witnesses: Vec<_> = (0..6).map(|n| (n % 2 == 0).then_some(n)).collect();
        let c = six.encode_witnessed(&positions, &witnesses);
        assert_eq!(
            six.decode_witnessed(&c).unwrap(),
            CursorStart::After((positions.clone(), witnesses))
        );
        let c = one.encode_witnessed(&[at(5, 1)], &[Some(3)]);
        assert_eq!(c.as_bytes().len(), 22);
        assert_eq!(
            one.decode_witnessed(&c).unwrap(),
            CursorStart::After((vec![at(5, 1)], vec![Some(3)]))
        );
        assert_eq!(one.decode(&c).unwrap(), CursorStart::After(vec![at(5, 1)]));
    }

    #[test]
    fn an_events_cursor_follows_its_own_partition() {
        let f = Family::LeaseHistory;
        assert_eq!(
            event_cursor(f, 1, 0, at(7, 2), None),
            encode_valkey(f, 7, 2)
        );
        let c = event_cursor(f, 4, 2, at(7, 2), None);
        let own = Followed::some(f, 4, &[2]).unwrap();
        assert_eq!(own.decode(&c).unwrap(), CursorStart::After(vec![at(7, 2)]));
        assert!(
            matches!(
                Followed::all(f, 4).decode(&c),
                Err(EngineError::InvalidCursor { .. })
            ),
            "a subscription over every partition cannot start from it"
        );
        let later = event_cursor(f, 4, 2, at(7, 3), Some(5));
        assert_eq!(c.position_cmp(&later), Some(std::cmp::Ordering::Less));
        assert_eq!(c.position_cmp(&event_cursor(f, 4, 1, at(9, 0), None)), None);
        assert_eq!(
            own.decode_witnessed(&later).unwrap(),
            CursorStart::After((vec![at(7, 3)], vec![Some(5)]))
        );
    }
}
