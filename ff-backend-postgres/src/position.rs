//! Outbox positions: `(xid, id)` pairs and their cursors.
//!
//! A row's position is its writing transaction's `xid8` and its row id.
//! Positions order by `(xid, id)`; subscriptions read them in that order.
//!
//! Every position ff hands out names something that survives a crash of
//! the server: a committed row (its commit was flushed before anyone could
//! see it), the retention horizon (a committed record of a deleted row), or
//! the origin. A position derived from a snapshot's `xmin` could name a
//! transaction whose rollback was never flushed, whose id a restarted
//! server hands out again. Besides those, *frontier* positions
//! `(xid, AFTER_EVERY_ID)` ("after every row of transaction `xid` or
//! earlier") are used internally to compare how far a read could see; they
//! are never encoded into a cursor.
//!
//! A position also carries its row's `at` (ms), the fingerprint that lets
//! a server prove a cursor's row is the one it holds (see `history`). It
//! takes no part in comparisons: `(xid, id)` alone names a place.

use std::cmp::Ordering;
use std::hash::{Hash, Hasher};

use ff_core::engine_error::EngineError;
use ff_core::stream_events::Family;
use ff_core::stream_subscribe::{CursorStart, StreamCursor};

use crate::cursor_codec::{
    decode_postgres_any, encode_postgres_history, PostgresCursor, PostgresHistoryPosition,
};

/// The largest row id; `(xid, AFTER_EVERY_ID)` sorts after every row of `xid`.
pub(crate) const AFTER_EVERY_ID: i64 = i64::MAX;

/// A position in one family's outbox table.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Pos {
    /// The writing transaction's `xid8`.
    pub xid: u64,
    /// The row id (`bigint`), or [`AFTER_EVERY_ID`] for a frontier.
    pub id: i64,
    /// The row's `at` (ms since the epoch); 0 where no row is named.
    pub at: i64,
}

impl PartialEq for Pos {
    fn eq(&self, other: &Self) -> bool {
        (self.xid, self.id) == (other.xid, other.id)
    }
}

impl Eq for Pos {}

impl PartialOrd for Pos {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Pos {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.xid, self.id).cmp(&(other.xid, other.id))
    }
}

impl Hash for Pos {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (self.xid, self.id).hash(state);
    }
}

impl Pos {
    /// The position before every row: what `beginning()` reads after.
    pub const ORIGIN: Pos = Pos {
        xid: 0,
        id: i64::MIN,
        at: 0,
    };

    /// A row position from the `bigint` columns a query returned.
    pub fn row(xid: i64, id: i64, at: i64) -> Self {
        Pos {
            xid: xid.max(0) as u64,
            id,
            at,
        }
    }

    /// "After every row of transactions older than `xmin`": how far a
    /// snapshot with this `xmin` can read without gaps. Internal only:
    /// never encoded into a cursor.
    pub fn frontier(xmin: u64) -> Self {
        Pos {
            xid: xmin.saturating_sub(1),
            id: AFTER_EVERY_ID,
            at: 0,
        }
    }

    /// The cursor (format `0x05`) for this position in `family` of the
    /// cluster whose system identifier is `system`.
    pub fn cursor(self, family: Family, system: u64) -> StreamCursor {
        encode_postgres_history(
            family,
            PostgresHistoryPosition::new(
                system,
                self.xid,
                self.id.max(0) as u64,
                self.at.max(0) as u64,
            ),
        )
    }

    /// Whether this position can be checked against a server's rows: a
    /// row's (or the horizon's) position with its `at`, or the origin.
    /// Positions decoded from `0x02` cursors carry no `at`.
    pub fn provable(self) -> bool {
        self.xid == 0 || self.at != 0
    }

    /// `xid` as the text Postgres parses into `xid8`.
    pub fn xid_text(self) -> String {
        self.xid.to_string()
    }
}

/// A decoded cursor's position, with the system identifier of the cluster
/// it was read from (`None` for `0x02` cursors, which do not say).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Given {
    /// The position.
    pub pos: Pos,
    /// The cluster's system identifier.
    pub system: Option<u64>,
}

/// Decode a cursor given to this backend for `family`. Ids beyond
/// `bigint` range (which no row has) clamp to [`AFTER_EVERY_ID`], which
/// reads identically.
pub(crate) fn decode(
    cursor: &StreamCursor,
    family: Family,
) -> Result<CursorStart<Given>, EngineError> {
    let id = |id: u64| i64::try_from(id).unwrap_or(AFTER_EVERY_ID);
    Ok(match decode_postgres_any(cursor, family)? {
        CursorStart::Tail => CursorStart::Tail,
        CursorStart::Beginning => CursorStart::Beginning,
        CursorStart::After(PostgresCursor::History(p)) => CursorStart::After(Given {
            pos: Pos {
                xid: p.xid,
                id: id(p.id),
                at: i64::try_from(p.at).unwrap_or(i64::MAX),
            },
            system: Some(p.system),
        }),
        CursorStart::After(PostgresCursor::Plain(p)) => CursorStart::After(Given {
            pos: Pos {
                xid: p.xid,
                id: id(p.id),
                at: 0,
            },
            system: None,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cursor_codec::encode_postgres;
    use ff_core::cursor::codec::{encode_positioned, MEMORY_BYTE};

    const SYSTEM: u64 = 7_000_000_000_000_000_001;

    #[test]
    fn cursors_round_trip_with_their_system_and_frontiers_sort_after_rows() {
        let f = Family::Completion;
        let row = Pos::row(41, 7, 1_700_000_000_000);
        let given = decode(&row.cursor(f, SYSTEM), f).unwrap();
        assert_eq!(
            given,
            CursorStart::After(Given {
                pos: row,
                system: Some(SYSTEM)
            })
        );
        let CursorStart::After(g) = given else {
            unreachable!()
        };
        assert_eq!(g.pos.at, row.at);
        assert!(g.pos.provable() && Pos::ORIGIN.provable());
        let frontier = Pos::frontier(42);
        assert_eq!(frontier.xid, 41);
        assert!(row < frontier);
        assert!(frontier < Pos::row(42, 1, 0));
        assert_eq!(
            row.cursor(f, SYSTEM)
                .position_cmp(&Pos::row(41, 8, 1).cursor(f, SYSTEM)),
            Some(std::cmp::Ordering::Less)
        );
    }

    #[test]
    fn plain_cursors_stay_readable_without_system_or_proof() {
        let f = Family::InstanceTags;
        let CursorStart::After(g) = decode(&encode_postgres(f, 5, u64::MAX), f).unwrap() else {
            panic!("a position");
        };
        assert_eq!(g.system, None);
        assert_eq!((g.pos.xid, g.pos.id), (5, AFTER_EVERY_ID));
        assert!(!g.pos.provable());
    }

    #[test]
    fn foreign_cursors_are_invalid() {
        let c = encode_positioned(MEMORY_BYTE, Family::Completion, 1, 1);
        assert!(matches!(
            decode(&c, Family::Completion),
            Err(EngineError::InvalidCursor { .. })
        ));
    }
}
