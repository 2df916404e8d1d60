//! [`TrimRecord`]: what ff's own trimming proved about the removed part of
//! a stream, kept beside it in `{stream}:trimmed`.
//!
//! Invariant: when the record reads `through removed`, ff's trim script
//! removed every entry up to and including `through` (and none after it),
//! and right after that trim the stream's own counters said `removed`
//! entries had ever been removed (`entries-added − length`). Trims by other
//! clients (`XTRIM`, `XADD … MAXLEN|MINID`) leave the record alone but grow
//! `entries-added − length`; so a position equal to `through` has lost
//! nothing exactly while the counters still equal `removed`. Without a
//! record, nothing is proven removed: only a stream whose counters show no
//! removal at all makes `0-0` safe.

use ff_core::stream_subscribe::ValkeyPosition;

use crate::id;

/// The record of ff's last trim of one stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TrimRecord {
    /// The largest id the trim removed (the stream's `max-deleted-entry-id`
    /// right after it).
    pub(crate) through: ValkeyPosition,
    /// `entries-added − length` right after the trim.
    pub(crate) removed: u64,
}

impl TrimRecord {
    /// The record of a stream ff never trimmed: nothing removed through
    /// `0-0`.
    pub(crate) const NONE: TrimRecord = TrimRecord {
        through: id::ZERO,
        removed: 0,
    };

    /// Parse the stored text `ms-seq removed`; `None` for anything else.
    pub(crate) fn parse(text: &[u8]) -> Option<Self> {
        let space = text.iter().position(|b| *b == b' ')?;
        let through = id::parse(&text[..space])?;
        let removed = std::str::from_utf8(&text[space + 1..]).ok()?;
        if removed.is_empty() || !removed.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(Self {
            through,
            removed: removed.parse().ok()?,
        })
    }

    /// Whether this record proves that nothing after `through` was ever
    /// removed from a stream whose counters read `entries_added` and
    /// `length` now.
    pub(crate) fn accounts_for(&self, entries_added: Option<u64>, length: u64) -> bool {
        entries_added.and_then(|added| added.checked_sub(length)) == Some(self.removed)
    }
}

/// The key of `stream`'s trim record (same hash slot as the stream: it only
/// appends to the stream's name).
pub(crate) fn key(stream: &str) -> String {
    format!("{stream}:trimmed")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_garbage_is_none() {
        assert_eq!(
            TrimRecord::parse(b"17-3 42"),
            Some(TrimRecord {
                through: ValkeyPosition { ms: 17, seq: 3 },
                removed: 42
            })
        );
        for bad in [&b""[..], b"17-3", b"17-3 ", b"17-3 -1", b"x 1", b"17-3 1 2"] {
            assert_eq!(TrimRecord::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_record_accounts_only_for_the_removals_it_saw() {
        let r = TrimRecord {
            through: ValkeyPosition { ms: 5, seq: 0 },
            removed: 5,
        };
        assert!(r.accounts_for(Some(10), 5));
        assert!(!r.accounts_for(Some(10), 3), "two more were trimmed since");
        assert!(!r.accounts_for(None, 5), "no counters: no proof");
        assert!(TrimRecord::NONE.accounts_for(Some(4), 4));
        assert!(!TrimRecord::NONE.accounts_for(Some(10), 5));
        assert!(
            !TrimRecord::NONE.accounts_for(Some(3), 5),
            "nonsense counters"
        );
    }
}
