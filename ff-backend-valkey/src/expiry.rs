//! Judging whether a position is still inside the stream's history, on the
//! [`StreamState`] read in the same transaction as the entries after it.
//!
//! Trimming (`XTRIM`, `XADD MAXLEN`) only moves the stream's first entry;
//! the server records nothing about what it removed. ff's own trimming
//! (see [`crate::retention`]) therefore writes the largest removed id into
//! the stream's `max-deleted-entry-id` (with `XSETID`), which makes the
//! judgement exact: a position `c` before the first retained entry `F` has
//! lost events exactly when an entry after `c` was removed, i.e. when
//! `max-deleted-entry-id > c`. A position equal to `max-deleted-entry-id`
//! (the consumer read the last removed entry) or just before `F` lost
//! nothing. Any other position before `F` is reported expired even if
//! `max-deleted-entry-id` is lower: that only happens after a trim that
//! did not record its horizon, and a false alarm beats a silent gap.

use ff_core::engine_error::EngineError;
use ff_core::stream_events::Family;
use ff_core::stream_subscribe::{encode_valkey, ValkeyPosition};

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

/// The `CursorExpired` error for position `c` of `family`.
pub(crate) fn to_error(family: Family, c: ValkeyPosition, expired: Expired) -> EngineError {
    EngineError::CursorExpired {
        cursor: encode_valkey(family, c.ms, c.seq),
        oldest: Some(encode_valkey(family, expired.oldest.ms, expired.oldest.seq)),
        detail: format!("{family}: {}", expired.detail),
    }
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
        // `c` is the last entry ff's trim removed: its successor is `first`.
        Some(_) if c == state.max_deleted => Ok(()),
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

    fn p(ms: u64, seq: u64) -> ValkeyPosition {
        ValkeyPosition { ms, seq }
    }

    /// Entries 1..=10 (`n-0`) were added; those before `first` trimmed,
    /// with `max_deleted` recorded.
    fn trimmed(first: u64, max_deleted: u64) -> StreamState {
        StreamState {
            last_generated: p(10, 0),
            max_deleted: p(max_deleted, 0),
            first: Some(p(first, 0)),
            last: Some(p(10, 0)),
            length: 11 - first,
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
        assert_eq!(judge(p(5, u64::MAX), &s), Ok(()));
    }

    #[test]
    fn an_emptied_stream_expires_everything_before_its_last_id() {
        let s = StreamState {
            last_generated: p(10, 0),
            max_deleted: p(10, 0),
            first: None,
            last: None,
            length: 0,
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
