//! The Valkey backend's single-stream cursor format (`0x01`): family ++
//! entry-id ms (u64 BE) ++ entry-id seq (u64 BE) [++ the entry's witness
//! (u32 BE)], 18 bytes, or 22 with the witness.
//!
//! Public for tests and tools that build or read this backend's cursors; a
//! consumer never needs it. The partitioned format (`0x04`) is in
//! `ff_core::cursor::codec`, since consumer groups split it by partition.
//!
//! Invariant: an 18-byte cursor and the 22-byte one of the same entry id
//! name the same position (the witness orders nothing, it only tells the
//! entry from another one given the same id later), and a cursor of
//! another backend, family or length is an `InvalidCursor` naming what is
//! wrong.

use ff_core::cursor::codec::{
    decode_positioned, encode_positioned, invalid_length, CursorStart, ValkeyPosition,
    POSITIONED_LEN, VALKEY_BYTE,
};
use ff_core::cursor::StreamCursor;
use ff_core::error::EngineError;
use ff_core::event::Family;

/// Length of a single-stream cursor whose position carries the witness of
/// the entry it names: the 18 bytes and a `u32`.
pub const VALKEY_WITNESSED_LEN: usize = 22;

/// A Valkey entry id and, when the position names an entry it read or
/// wrote, that entry's witness: a digest of its fields, which tells the
/// entry from another one given the same id later (a lossy failover).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WitnessedPosition {
    /// The entry id.
    pub at: ValkeyPosition,
    /// The entry's witness; `None` for positions that name no entry
    /// (before the first, an empty stream's newest id) or cursors that
    /// carry none.
    pub witness: Option<u32>,
}

/// Encode a Valkey cursor for entry id `ms-seq`.
pub fn encode_valkey(family: Family, ms: u64, seq: u64) -> StreamCursor {
    encode_positioned(VALKEY_BYTE, family, ms, seq)
}

/// Encode a Valkey cursor for `position`: 22 bytes with its witness, the
/// 18 of [`encode_valkey`] without.
pub fn encode_valkey_witnessed(family: Family, position: WitnessedPosition) -> StreamCursor {
    let at = position.at;
    let cursor = encode_valkey(family, at.ms, at.seq);
    match position.witness {
        None => cursor,
        Some(w) => {
            let mut b = Vec::with_capacity(VALKEY_WITNESSED_LEN);
            b.extend_from_slice(cursor.as_bytes());
            b.extend_from_slice(&w.to_be_bytes());
            StreamCursor::new(b)
        }
    }
}

/// Decode a cursor given to the Valkey backend (with or without a witness,
/// which this drops).
pub fn decode_valkey(
    cursor: &StreamCursor,
    family: Family,
) -> Result<CursorStart<ValkeyPosition>, EngineError> {
    Ok(match decode_valkey_witnessed(cursor, family)? {
        CursorStart::Tail => CursorStart::Tail,
        CursorStart::Beginning => CursorStart::Beginning,
        CursorStart::After(p) => CursorStart::After(p.at),
    })
}

/// Decode a cursor given to the Valkey backend with the witness it carries:
/// 18 bytes (none) or 22.
pub fn decode_valkey_witnessed(
    cursor: &StreamCursor,
    family: Family,
) -> Result<CursorStart<WitnessedPosition>, EngineError> {
    let b = cursor.as_bytes();
    let (positioned, witness) = match b {
        [VALKEY_BYTE, ..] if b.len() == VALKEY_WITNESSED_LEN => {
            let (head, w) = b.split_at(POSITIONED_LEN);
            let w = u32::from_be_bytes(w.try_into().expect("4 bytes"));
            (
                StreamCursor::new(cursor.bytes().slice(..head.len())),
                Some(w),
            )
        }
        [VALKEY_BYTE, ..] if b.len() != POSITIONED_LEN => {
            return Err(invalid_length(
                cursor,
                VALKEY_BYTE,
                &format!("{POSITIONED_LEN} or {VALKEY_WITNESSED_LEN} bytes"),
            ))
        }
        _ => (cursor.clone(), None),
    };
    Ok(match decode_positioned(&positioned, VALKEY_BYTE, family)? {
        CursorStart::Tail => CursorStart::Tail,
        CursorStart::Beginning => CursorStart::Beginning,
        CursorStart::After((ms, seq)) => CursorStart::After(WitnessedPosition {
            at: ValkeyPosition { ms, seq },
            witness,
        }),
    })
}

#[cfg(test)]
mod tests {
    use std::fmt;

    use ff_core::cursor::codec::{
        encode_positioned, encode_valkey_partitioned, PartitionedPosition, MEMORY_BYTE,
        POSTGRES_BYTE,
    };

    use super::*;

    fn assert_invalid(r: Result<impl fmt::Debug, EngineError>, needle: &str) {
        match r {
            Err(EngineError::InvalidCursor { detail }) => {
                assert!(detail.contains(needle), "{detail:?} lacks {needle:?}")
            }
            other => panic!("expected InvalidCursor, got {other:?}"),
        }
    }

    #[test]
    fn valkey_cursors_round_trip_for_every_family() {
        for f in Family::ALL.iter().copied() {
            let v = encode_valkey(f, 1_700_000_000_000, 3);
            assert_eq!(
                decode_valkey(&v, f).unwrap(),
                CursorStart::After(ValkeyPosition {
                    ms: 1_700_000_000_000,
                    seq: 3
                })
            );
            assert_eq!(v.family(), Some(f));
            assert_eq!(v.to_string().parse::<StreamCursor>().unwrap(), v);
            assert_eq!(v.as_bytes().len(), POSITIONED_LEN);
        }
        assert_eq!(
            decode_valkey(&StreamCursor::empty(), Family::Completion).unwrap(),
            CursorStart::Tail
        );
        assert_eq!(
            decode_valkey(&StreamCursor::beginning(), Family::Completion).unwrap(),
            CursorStart::Beginning
        );
    }

    #[test]
    fn foreign_backend_and_family_are_invalid() {
        let f = Family::Completion;
        let postgres = encode_positioned(POSTGRES_BYTE, f, 1, 1);
        assert_invalid(decode_valkey(&postgres, f), "Postgres");
        assert_invalid(
            decode_valkey(&encode_valkey(Family::LeaseHistory, 1, 1), f),
            "lease-history",
        );
        let partitioned = encode_valkey_partitioned(
            f,
            &PartitionedPosition::all_at(8, ValkeyPosition { ms: 1, seq: 1 }).unwrap(),
        );
        assert_invalid(
            decode_valkey(&partitioned, f),
            "partitioned Valkey cursor (partitions=8)",
        );
    }

    #[test]
    fn valkey_cursors_carry_a_witness_and_old_ones_still_decode() {
        let f = Family::Completion;
        let at = ValkeyPosition { ms: 1000, seq: 5 };
        let old = encode_valkey(f, 1000, 5);
        let witnessed = encode_valkey_witnessed(
            f,
            WitnessedPosition {
                at,
                witness: Some(0x0102_0304),
            },
        );
        assert_eq!(old.as_bytes().len(), POSITIONED_LEN);
        assert_eq!(witnessed.as_bytes().len(), VALKEY_WITNESSED_LEN);
        assert_eq!(&witnessed.as_bytes()[..POSITIONED_LEN], old.as_bytes());
        assert_eq!(
            decode_valkey_witnessed(&old, f).unwrap(),
            CursorStart::After(WitnessedPosition { at, witness: None })
        );
        assert_eq!(
            decode_valkey_witnessed(&witnessed, f).unwrap(),
            CursorStart::After(WitnessedPosition {
                at,
                witness: Some(0x0102_0304)
            })
        );
        assert_eq!(
            decode_valkey(&witnessed, f).unwrap(),
            CursorStart::After(at)
        );
        assert_eq!(
            encode_valkey_witnessed(f, WitnessedPosition { at, witness: None }),
            old
        );
        assert_invalid(
            decode_valkey(&StreamCursor::new(witnessed.bytes().slice(..20)), f),
            "18 or 22 bytes",
        );
        assert_invalid(
            decode_valkey(&StreamCursor::new(witnessed.bytes().slice(..17)), f),
            "18 or 22 bytes",
        );
        assert_invalid(
            decode_valkey(&witnessed, Family::LeaseHistory),
            "completion stream, not lease-history",
        );
        let as_memory = ff_core::cursor::codec::decode_positioned(&witnessed, MEMORY_BYTE, f);
        assert_invalid(as_memory, "Valkey");
    }
}
