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
use ff_core::stream_subscribe::{decode_postgres, encode_postgres, CursorStart, StreamCursor};

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

    /// The cursor for this position in `family`.
    pub fn cursor(self, family: Family) -> StreamCursor {
        encode_postgres(family, self.xid, self.id.max(0) as u64)
    }

    /// `xid` as the text Postgres parses into `xid8`.
    pub fn xid_text(self) -> String {
        self.xid.to_string()
    }
}

/// Decode a cursor given to this backend for `family`. Ids beyond
/// `bigint` range (which no row has) clamp to [`AFTER_EVERY_ID`], which
/// reads identically.
pub(crate) fn decode(
    cursor: &StreamCursor,
    family: Family,
) -> Result<CursorStart<Pos>, EngineError> {
    Ok(match decode_postgres(cursor, family)? {
        CursorStart::Tail => CursorStart::Tail,
        CursorStart::Beginning => CursorStart::Beginning,
        CursorStart::After(p) => CursorStart::After(Pos {
            xid: p.xid,
            id: i64::try_from(p.id).unwrap_or(AFTER_EVERY_ID),
            at: 0,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_frontiers_sort_after_rows() {
        let f = Family::Completion;
        let row = Pos::row(41, 7, 1_700_000_000_000);
        assert_eq!(decode(&row.cursor(f), f).unwrap(), CursorStart::After(row));
        let frontier = Pos::frontier(42);
        assert_eq!(frontier.xid, 41);
        assert!(row < frontier);
        assert!(frontier < Pos::row(42, 1, 0));
        assert_eq!(
            decode(&frontier.cursor(f), f).unwrap(),
            CursorStart::After(frontier)
        );
        assert!(row.cursor(f).position_cmp(&frontier.cursor(f)) == Some(std::cmp::Ordering::Less));
    }

    #[test]
    fn ids_beyond_bigint_clamp_to_after_every_id() {
        let f = Family::InstanceTags;
        let c = encode_postgres(f, 5, u64::MAX);
        assert_eq!(
            decode(&c, f).unwrap(),
            CursorStart::After(Pos {
                xid: 5,
                id: AFTER_EVERY_ID,
                at: 0,
            })
        );
    }

    #[test]
    fn foreign_cursors_are_invalid() {
        let c = ff_core::stream_subscribe::encode_memory(Family::Completion, 1, 1);
        assert!(matches!(
            decode(&c, Family::Completion),
            Err(EngineError::InvalidCursor { .. })
        ));
    }
}
