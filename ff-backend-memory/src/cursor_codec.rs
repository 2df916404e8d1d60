//! The memory backend's cursor format (`0x03`): family ++ instance epoch
//! (u64 BE) ++ sequence (u64 BE), 18 bytes.
//!
//! Public for tests and tools that build or read this backend's cursors (a
//! cursor beyond the head, another instance's cursor); a consumer never
//! needs it. Invariant: positions of one instance and family compare by
//! their bytes, and a cursor of another backend, family or length is an
//! `InvalidCursor` naming what is wrong.

use ff_core::cursor::codec::{decode_positioned, encode_positioned, CursorStart, MEMORY_BYTE};
use ff_core::cursor::StreamCursor;
use ff_core::error::EngineError;
use ff_core::event::Family;

/// A memory-backend position: (instance epoch, sequence).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MemoryPosition {
    /// Random per backend instance.
    pub epoch: u64,
    /// Sequence within the family's log (first event is 1).
    pub seq: u64,
}

/// Encode a memory-backend cursor.
pub fn encode_memory(family: Family, epoch: u64, seq: u64) -> StreamCursor {
    encode_positioned(MEMORY_BYTE, family, epoch, seq)
}

/// Decode a cursor given to the memory backend.
pub fn decode_memory(
    cursor: &StreamCursor,
    family: Family,
) -> Result<CursorStart<MemoryPosition>, EngineError> {
    Ok(match decode_positioned(cursor, MEMORY_BYTE, family)? {
        CursorStart::Tail => CursorStart::Tail,
        CursorStart::Beginning => CursorStart::Beginning,
        CursorStart::After((epoch, seq)) => CursorStart::After(MemoryPosition { epoch, seq }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_invalid(r: Result<CursorStart<MemoryPosition>, EngineError>, needle: &str) {
        match r {
            Err(EngineError::InvalidCursor { detail }) => {
                assert!(detail.contains(needle), "{detail:?} lacks {needle:?}")
            }
            other => panic!("expected InvalidCursor, got {other:?}"),
        }
    }

    #[test]
    fn memory_cursors_round_trip_for_every_family() {
        for f in Family::ALL.iter().copied() {
            let m = encode_memory(f, 9, 0);
            assert_eq!(
                decode_memory(&m, f).unwrap(),
                CursorStart::After(MemoryPosition { epoch: 9, seq: 0 })
            );
            assert_eq!(m.family(), Some(f));
            assert_eq!(m.to_string().parse::<StreamCursor>().unwrap(), m);
            assert_eq!(m.as_bytes().len(), 18);
        }
        assert_eq!(
            encode_memory(Family::Completion, 42, 7).to_string(),
            "AwIAAAAAAAAAKgAAAAAAAAAH"
        );
    }

    #[test]
    fn foreign_family_length_and_version_are_invalid() {
        let f = Family::Completion;
        let valkey = StreamCursor::new([&[0x01, 2][..], &[0; 16]].concat());
        assert_invalid(decode_memory(&valkey, f), "Valkey");
        let good = encode_memory(f, 1, 1);
        assert_invalid(
            decode_memory(&StreamCursor::new(good.bytes().slice(..17)), f),
            "17 bytes",
        );
        let mut long = good.as_bytes().to_vec();
        long.push(0);
        assert_invalid(decode_memory(&StreamCursor::new(long), f), "19 bytes");
        let mut unknown_version = good.as_bytes().to_vec();
        unknown_version[0] = 0x7f;
        assert_invalid(
            decode_memory(&StreamCursor::new(unknown_version), f),
            "0x7f",
        );
        assert_invalid(
            decode_memory(&encode_memory(Family::LeaseHistory, 1, 1), f),
            "lease-history",
        );
    }
}
