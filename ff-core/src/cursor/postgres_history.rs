//! The Postgres cursor that carries its history (`0x05`).
//!
//! Layout: `0x05` ++ family ++ system identifier (u64 BE) ++ xid8 (u64 BE)
//! ++ row id (u64 BE) ++ the row's `at` in ms (u64 BE): 34 bytes.
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
//! ([`StreamCursor::position_cmp`]). `0x02` cursors stay readable.

use crate::cursor::{
    decode_postgres, CursorStart, PostgresPosition, StreamCursor, POSITIONED_LEN, POSTGRES_BYTE,
};
use crate::error::EngineError;
use crate::event::Family;

/// Byte 0 of Postgres cursors that carry their history.
pub const POSTGRES_HISTORY_BYTE: u8 = 0x05;
/// Length of a `0x05` cursor.
pub const POSTGRES_HISTORY_LEN: usize = 34;

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

/// The lengths of Postgres cursors, with their formats, for messages.
pub(crate) fn accepted_lengths() -> String {
    format!(
        "{POSITIONED_LEN} bytes (format 0x{POSTGRES_BYTE:02x}) or {POSTGRES_HISTORY_LEN} bytes \
         (format 0x{POSTGRES_HISTORY_BYTE:02x}, with its history)"
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
        return Err(EngineError::invalid_cursor(format!(
            "cursor {cursor} is {} bytes long; cursors of the Postgres backend are {} \
             (truncated or corrupted?)",
            b.len(),
            accepted_lengths()
        )));
    }
    match Family::from_cursor_byte(b[1]) {
        Some(f) if f == family => {}
        Some(f) => {
            return Err(EngineError::invalid_cursor(format!(
                "cursor {cursor} belongs to the {f} stream, not {family}"
            )))
        }
        None => {
            return Err(EngineError::invalid_cursor(format!(
                "cursor {cursor} names unknown family byte {}",
                b[1]
            )))
        }
    }
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
    use super::*;
    use crate::cursor::encode_postgres;
    use std::cmp::Ordering;

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
        for wrong in [
            StreamCursor::new(c.bytes().slice(..33)),
            StreamCursor::new(c.bytes().slice(..18)),
            StreamCursor::new(plain.bytes().slice(..17)),
            StreamCursor::new(long_plain),
        ] {
            match decode_postgres_any(&wrong, f) {
                Err(EngineError::InvalidCursor { detail }) => assert!(
                    detail.contains("18 bytes (format 0x02) or 34 bytes (format 0x05"),
                    "{detail}"
                ),
                other => panic!("expected InvalidCursor, got {other:?}"),
            }
        }
        assert!(matches!(
            decode_postgres_any(&c, Family::InstanceTags),
            Err(EngineError::InvalidCursor { .. })
        ));
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
