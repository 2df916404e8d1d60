//! The Postgres backend's cursor formats: `0x05`, which carries the
//! history it was read from, and the older `0x02`, still read.
//!
//! `0x02` ++ family ++ xid8 (u64 BE) ++ row id (u64 BE): 18 bytes.
//! `0x05` ++ family ++ system identifier (u64 BE) ++ xid8 (u64 BE) ++ row
//! id (u64 BE) ++ the row's `at` in ms (u64 BE): 34 bytes.
//!
//! Public for tests and tools that build or read this backend's cursors; a
//! consumer never needs it.
//!
//! Transaction ids and row ids are handed out again by a database whose
//! history diverged from the one a cursor was read in (a copy promoted
//! before it received everything, a restore), so `(xid, id)` alone cannot
//! tell a server whether a cursor belongs to it. The system identifier
//! (`pg_control_system()`, shared by physical copies, new for every
//! `initdb`) names the cluster lineage; the row's `at` is a fingerprint
//! with which the server proves it holds the very row the cursor names.
//! Within one history the system identifier is constant and `(xid, id)`
//! is unique, so cursors still compare by byte order
//! (`StreamCursor::position_cmp`). Invariant: a cursor of another backend,
//! family or length is an `InvalidCursor` naming what is wrong, and the
//! message for a wrong length names both formats.

use ff_core::cursor::codec::{
    decode_positioned, encode_positioned, expect_family, invalid_length, CursorStart,
    POSITIONED_LEN, POSTGRES_BYTE, POSTGRES_HISTORY_BYTE,
};
use ff_core::cursor::StreamCursor;
use ff_core::error::EngineError;
use ff_core::event::Family;

/// Length of a `0x05` cursor.
pub const POSTGRES_HISTORY_LEN: usize = 34;

/// A Postgres outbox position: (transaction id, row id).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PostgresPosition {
    /// The writing transaction's xid8.
    pub xid: u64,
    /// The row id.
    pub id: u64,
}

/// A Postgres outbox position with the history it was read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct PostgresHistoryPosition {
    /// The database system identifier of the cluster it was read from.
    pub system: u64,
    /// The writing transaction's xid8.
    pub xid: u64,
    /// The row id.
    pub id: u64,
    /// The row's `at` (ms since the Unix epoch); 0 when the position names
    /// no row (the origin).
    pub at: u64,
}

impl PostgresHistoryPosition {
    /// A position of row `(xid, id)` recorded at `at` in cluster `system`.
    pub fn new(system: u64, xid: u64, id: u64, at: u64) -> Self {
        Self {
            system,
            xid,
            id,
            at,
        }
    }
}

/// A Postgres cursor of either format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PostgresCursor {
    /// `0x02`: a position without its history.
    Plain(PostgresPosition),
    /// `0x05`: a position with its history.
    History(PostgresHistoryPosition),
}

/// Encode a `0x02` Postgres cursor for row `(xid, id)`.
pub fn encode_postgres(family: Family, xid: u64, id: u64) -> StreamCursor {
    encode_positioned(POSTGRES_BYTE, family, xid, id)
}

/// Decode a `0x02` cursor given to the Postgres backend.
pub fn decode_postgres(
    cursor: &StreamCursor,
    family: Family,
) -> Result<CursorStart<PostgresPosition>, EngineError> {
    let b = cursor.as_bytes();
    if b.first() == Some(&POSTGRES_BYTE) && b.len() != POSITIONED_LEN {
        return Err(wrong_length(cursor));
    }
    Ok(match decode_positioned(cursor, POSTGRES_BYTE, family)? {
        CursorStart::Tail => CursorStart::Tail,
        CursorStart::Beginning => CursorStart::Beginning,
        CursorStart::After((xid, id)) => CursorStart::After(PostgresPosition { xid, id }),
    })
}

/// Encode a `0x05` Postgres cursor.
pub fn encode_postgres_history(family: Family, p: PostgresHistoryPosition) -> StreamCursor {
    let mut b = Vec::with_capacity(POSTGRES_HISTORY_LEN);
    b.push(POSTGRES_HISTORY_BYTE);
    b.push(family.cursor_byte());
    for n in [p.system, p.xid, p.id, p.at] {
        b.extend_from_slice(&n.to_be_bytes());
    }
    StreamCursor::new(b)
}

/// The error for a Postgres cursor of neither length, naming both formats.
fn wrong_length(cursor: &StreamCursor) -> EngineError {
    invalid_length(
        cursor,
        POSTGRES_BYTE,
        &format!(
            "{POSITIONED_LEN} bytes (format 0x{POSTGRES_BYTE:02x}) or {POSTGRES_HISTORY_LEN} \
             bytes (format 0x{POSTGRES_HISTORY_BYTE:02x}, with its history)"
        ),
    )
}

/// Decode a cursor given to the Postgres backend, in either format.
pub fn decode_postgres_any(
    cursor: &StreamCursor,
    family: Family,
) -> Result<CursorStart<PostgresCursor>, EngineError> {
    let b = cursor.as_bytes();
    if b.first() != Some(&POSTGRES_HISTORY_BYTE) {
        return Ok(match decode_postgres(cursor, family)? {
            CursorStart::Tail => CursorStart::Tail,
            CursorStart::Beginning => CursorStart::Beginning,
            CursorStart::After(p) => CursorStart::After(PostgresCursor::Plain(p)),
        });
    }
    if b.len() != POSTGRES_HISTORY_LEN {
        return Err(wrong_length(cursor));
    }
    expect_family(cursor, family)?;
    let word = |i: usize| {
        let start = 2 + 8 * i;
        u64::from_be_bytes(b[start..start + 8].try_into().expect("8 bytes"))
    };
    Ok(CursorStart::After(PostgresCursor::History(
        PostgresHistoryPosition::new(word(0), word(1), word(2), word(3)),
    )))
}

#[cfg(test)]
mod tests {
    use std::cmp::Ordering;

    use ff_core::cursor::codec::VALKEY_BYTE;

    use super::*;

    #[test]
    fn plain_cursors_round_trip_for_every_family() {
        for f in Family::ALL.iter().copied() {
            let p = encode_postgres(f, 77, u64::MAX);
            assert_eq!(
                decode_postgres(&p, f).unwrap(),
                CursorStart::After(PostgresPosition {
                    xid: 77,
                    id: u64::MAX
                })
            );
            assert_eq!(p.family(), Some(f));
            assert_eq!(p.as_bytes().len(), POSITIONED_LEN);
        }
        assert_eq!(
            decode_postgres(&StreamCursor::beginning(), Family::Completion).unwrap(),
            CursorStart::Beginning
        );
    }

    #[test]
    fn history_cursors_round_trip_and_plain_ones_stay_readable() {
        for f in Family::ALL.iter().copied() {
            let p = PostgresHistoryPosition::new(u64::MAX - 3, 77, 9, 1_700_000_000_123);
            let c = encode_postgres_history(f, p);
            assert_eq!(c.as_bytes().len(), POSTGRES_HISTORY_LEN);
            assert_eq!(c.family(), Some(f));
            assert_eq!(
                decode_postgres_any(&c, f).unwrap(),
                CursorStart::After(PostgresCursor::History(p))
            );
            assert_eq!(c.to_string().parse::<StreamCursor>().unwrap(), c);
            let plain = encode_postgres(f, 5, 6);
            assert_eq!(
                decode_postgres_any(&plain, f).unwrap(),
                CursorStart::After(PostgresCursor::Plain(PostgresPosition { xid: 5, id: 6 }))
            );
        }
        assert_eq!(
            decode_postgres_any(&StreamCursor::empty(), Family::Completion).unwrap(),
            CursorStart::Tail
        );
    }

    #[test]
    fn wrong_length_or_family_is_invalid() {
        let f = Family::Completion;
        let c = encode_postgres_history(f, PostgresHistoryPosition::new(1, 2, 3, 4));
        let plain = encode_postgres(f, 2, 3);
        let mut long_plain = plain.as_bytes().to_vec();
        long_plain.extend_from_slice(&[0; 16]);
        let long_plain = StreamCursor::new(long_plain);
        let short_plain = StreamCursor::new(plain.bytes().slice(..17));
        let names_both_formats = |r: Result<(), EngineError>| match r {
            Err(EngineError::InvalidCursor { detail }) => assert!(
                detail.contains("18 bytes (format 0x02) or 34 bytes (format 0x05"),
                "{detail}"
            ),
            other => panic!("expected InvalidCursor, got {other:?}"),
        };
        for wrong in [
            StreamCursor::new(c.bytes().slice(..33)),
            StreamCursor::new(c.bytes().slice(..18)),
            short_plain.clone(),
            long_plain.clone(),
        ] {
            names_both_formats(decode_postgres_any(&wrong, f).map(|_| ()));
        }
        for wrong in [short_plain, long_plain] {
            names_both_formats(decode_postgres(&wrong, f).map(|_| ()));
        }
        assert!(matches!(
            decode_postgres_any(&c, Family::InstanceTags),
            Err(EngineError::InvalidCursor { .. })
        ));
        let valkey = encode_positioned(VALKEY_BYTE, f, 1, 1);
        match decode_postgres_any(&valkey, f) {
            Err(EngineError::InvalidCursor { detail }) => assert!(detail.contains("Valkey")),
            other => panic!("expected InvalidCursor, got {other:?}"),
        }
    }

    #[test]
    fn positions_of_one_history_compare_by_bytes() {
        let f = Family::LeaseHistory;
        let at = |xid, id| {
            encode_postgres_history(f, PostgresHistoryPosition::new(42, xid, id, 1_000 + id))
        };
        assert_eq!(at(5, 300).position_cmp(&at(6, 1)), Some(Ordering::Less));
        assert_eq!(
            at(6, 70_000).position_cmp(&at(6, 256)),
            Some(Ordering::Greater)
        );
    }
}
