//! Judging whether a position is still inside the stream's history, on the
//! [`StreamState`] read in the same transaction as the entries after it.
//!
//! Trimming (`XTRIM`, `XADD MAXLEN`) only moves the stream's first entry
//! and grows its removal count (`entries-added − length`); the server
//! records nothing about *which* entries it removed. ff's own trimming (see
//! [`crate::retention`]) therefore writes the largest removed id into the
//! stream's `max-deleted-entry-id` (with `XSETID`) and into a
//! [`TrimRecord`](crate::trim_record::TrimRecord) together with the removal
//! count it left. A position `c` before the first retained entry `F` has
//! lost nothing when `c` is just before `F`, or when `c` is the last entry
//! ff's trim removed *and* the removal count has not grown since (so no
//! other client trimmed after it; on a stream never trimmed, `0-0` counts
//! as that entry when nothing was ever removed). Any other position before
//! `F` is expired: that includes a position equal to a stale
//! `max-deleted-entry-id` after a plain trim by another client, and a
//! false alarm beats a silent gap.

use ff_core::stream_subscribe::ValkeyPosition;

use crate::id;
use crate::stream_info::StreamState;

/// Why a position is no longer readable, and where to resume instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Expired {
    /// Resuming after this position yields the oldest retained entry.
    pub(crate) oldest: ValkeyPosition,
    /// What happened.
    pub(crate) detail: String,
}

/// The position that resumes at the oldest retained entry: just before the
/// first entry, or the last generated id when nothing is retained.
pub(crate) fn oldest(state: &StreamState) -> ValkeyPosition {
    state.first.map_or(state.last_generated, id::before)
}

/// `Ok` when reading exactly after `c` misses nothing.
pub(crate) fn judge(c: ValkeyPosition, state: &StreamState) -> Result<(), Expired> {
    let expired = |detail: String| {
        Err(Expired {
            oldest: oldest(state),
            detail,
        })
    };
    if c > state.last_generated {
        return expired(format!(
            "position {} lies beyond the stream's newest id {} (was the server restored, failed over or flushed?); resume from the oldest retained event",
            id::format(c),
            id::format(state.last_generated)
        ));
    }
    match state.first {
        Some(first) if c >= first || c == id::before(first) => Ok(()),
        // `c` is the last entry removed, and the counters prove it.
        Some(_) if state.removals_end_at(c) => Ok(()),
        Some(first) => expired(format!(
            "events after position {} were trimmed away (oldest retained entry is {})",
            id::format(c),
            id::format(first)
        )),
        None if c == state.last_generated => Ok(()),
        None => expired(format!(
            "every event after position {} was trimmed away (the stream is empty up to {})",
            id::format(c),
            id::format(state.last_generated)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trim_record::TrimRecord;

    fn p(ms: u64, seq: u64) -> ValkeyPosition {
        ValkeyPosition { ms, seq }
    }

    /// Entries 1..=10 (`n-0`) were added; those before `first` trimmed,
    /// ff's trim having removed those up to `max_deleted` (0: none).
    fn trimmed(first: u64, max_deleted: u64) -> StreamState {
        StreamState {
            last_generated: p(10, 0),
            max_deleted: p(max_deleted, 0),
            first: Some(p(first, 0)),
            last: Some(p(10, 0)),
            last_witness: None,
            length: 11 - first,
            entries_added: Some(10),
            trim_record: Some(if max_deleted == 0 {
                TrimRecord::NONE
            } else {
                TrimRecord {
                    through: p(max_deleted, 0),
                    removed: max_deleted,
                }
            }),
            record_read: true,
        }
    }

    #[test]
    fn untrimmed_positions_are_fine_and_beyond_the_head_is_expired() {
        let s = trimmed(1, 0);
        for c in [id::ZERO, p(1, 0), p(5, 0), p(10, 0), p(0, u64::MAX)] {
            assert_eq!(judge(c, &s), Ok(()), "{c:?}");
        }
        let e = judge(p(10, 1), &s).unwrap_err();
        assert!(e.detail.contains("beyond"), "{}", e.detail);
        assert_eq!(
            e.oldest,
            p(0, u64::MAX),
            "oldest resumes at the first entry"
        );
    }

    #[test]
    fn the_last_removed_entry_and_just_before_the_first_are_not_expired() {
        let s = trimmed(6, 5);
        assert_eq!(judge(p(5, 0), &s), Ok(()), "read up to the last removed");
        assert_eq!(judge(p(5, u64::MAX), &s), Ok(()), "just before the first");
        assert_eq!(judge(p(6, 0), &s), Ok(()));
        for c in [id::ZERO, p(1, 0), p(4, 0), p(4, u64::MAX)] {
            let e = judge(c, &s).unwrap_err();
            assert!(e.detail.contains("trimmed"), "{}", e.detail);
            assert_eq!(e.oldest, p(5, u64::MAX));
        }
    }

    #[test]
    fn an_unrecorded_trim_is_reported_rather_than_skipped() {
        // Trimmed to 6 by a plain XTRIM: nothing recorded.
        let s = trimmed(6, 0);
        assert!(judge(p(3, 0), &s).is_err());
        assert!(judge(p(5, 0), &s).is_err(), "cannot prove nothing was lost");
        assert!(
            judge(id::ZERO, &s).is_err(),
            "0-0 equals the stale max-deleted-entry-id, but 5 entries are gone"
        );
        assert_eq!(judge(p(5, u64::MAX), &s), Ok(()));
    }

    #[test]
    fn a_plain_trim_after_ffs_own_expires_the_recorded_position() {
        // ff trimmed through 3 (recorded); another client then trimmed 4
        // and 5 away: max-deleted-entry-id still says 3.
        let s = StreamState {
            first: Some(p(6, 0)),
            length: 5,
            ..trimmed(4, 3)
        };
        let e = judge(p(3, 0), &s).unwrap_err();
        assert!(e.detail.contains("trimmed"), "{}", e.detail);
        assert_eq!(e.oldest, p(5, u64::MAX));
        assert_eq!(
            judge(p(3, 0), &trimmed(4, 3)),
            Ok(()),
            "before the plain trim"
        );
    }

    #[test]
    fn without_counters_or_with_a_foreign_record_nothing_is_proven() {
        let s = trimmed(6, 5);
        assert_eq!(judge(p(5, 0), &s), Ok(()));
        let no_counters = StreamState {
            entries_added: None,
            ..s
        };
        assert!(judge(p(5, 0), &no_counters).is_err());
        let garbage_record = StreamState {
            trim_record: None,
            ..s
        };
        assert!(judge(p(5, 0), &garbage_record).is_err());
        let unread = StreamState {
            trim_record: None,
            record_read: false,
            ..s
        };
        assert!(unread.needs_record(p(5, 0)), "the trimmed edge needs it");
        assert!(!unread.needs_record(p(6, 0)) && !unread.needs_record(p(4, 0)));
        assert!(
            judge(p(5, 0), &unread).is_err(),
            "judged without it: a false alarm, never a gap"
        );
    }

    #[test]
    fn zero_on_a_stream_that_never_lost_an_entry_is_fine() {
        let s = StreamState {
            entries_added: Some(10),
            length: 10,
            ..trimmed(1, 0)
        };
        assert_eq!(judge(id::ZERO, &s), Ok(()));
    }

    #[test]
    fn an_emptied_stream_expires_everything_before_its_last_id() {
        let s = StreamState {
            last_generated: p(10, 0),
            max_deleted: p(10, 0),
            first: None,
            last: None,
            last_witness: None,
            length: 0,
            entries_added: Some(10),
            trim_record: Some(TrimRecord {
                through: p(10, 0),
                removed: 10,
            }),
            record_read: true,
        };
        assert_eq!(judge(p(10, 0), &s), Ok(()));
        let e = judge(p(9, 0), &s).unwrap_err();
        assert_eq!(e.oldest, p(10, 0));
        assert_eq!(judge(id::ZERO, &StreamState::ABSENT), Ok(()));
        assert!(
            judge(p(1, 0), &StreamState::ABSENT).is_err(),
            "a flushed stream resets history"
        );
    }
}
