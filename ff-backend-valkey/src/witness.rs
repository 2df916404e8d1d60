//! Witnesses: a 32-bit digest of a stream entry's fields, carried by a
//! position beside the entry id it names, so that an entry given the same
//! id later (a promoted replica that missed the tail and reused ids) is
//! told from the one the position was taken at.
//!
//! Invariant: the publisher (from the fields it writes) and every reader
//! (from the fields it reads, in a page or in `XINFO STREAM`'s first and
//! last entries) compute the same witness for the same entry, because it
//! is computed from the field names and values in stored order and
//! nothing else.
//!
//! The digest: a 64-bit state `h`, starting at [`SEED`]; for each field
//! name and value in order, `h = mix(h, byte length)`, then `h = mix(h,
//! w)` for each 8-byte little-endian word `w` of the bytes (the last one
//! zero-padded), where `mix(h, w) = rotl((h ^ w) × K, 29)`; finally
//! `h ^= h >> 32; h ×= K` and the witness is the top 32 bits. A word at a
//! time keeps it a small fraction of a catch-up's cost per entry.

use ff_core::stream_subscribe::ValkeyPosition;

use crate::expiry::{self, Expired};
use crate::id;
use crate::stream_info::StreamState;

const SEED: u64 = 0x6666_7769_746e_6573;
const K: u64 = 0x9e37_79b9_7f4a_7c15;

fn mix(h: u64, w: u64) -> u64 {
    (h ^ w).wrapping_mul(K).rotate_left(29)
}

/// The witness of an entry whose field names and values, in order, are
/// `parts` (name, value, name, value, …).
pub(crate) fn digest<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> u32 {
    let mut h = SEED;
    for part in parts {
        h = mix(h, part.len() as u64);
        let mut words = part.chunks_exact(8);
        for word in words.by_ref() {
            h = mix(h, u64::from_le_bytes(word.try_into().expect("8 bytes")));
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            let mut last = [0u8; 8];
            last[..rest.len()].copy_from_slice(rest);
            h = mix(h, u64::from_le_bytes(last));
        }
    }
    h ^= h >> 32;
    (h.wrapping_mul(K) >> 32) as u32
}

/// `Ok` unless position `at`, carrying `witness`, names an entry the
/// stream should still hold (at or after its first retained entry) but
/// whose entry there is gone (`found` is `None`) or is another one (its
/// witness differs): then the stream's history changed under the
/// position. Positions without a witness, and positions the stream
/// trimmed away (judged by [`expiry::judge`]), pass.
pub(crate) fn judge(
    at: ValkeyPosition,
    witness: Option<u32>,
    state: &StreamState,
    found: Option<u32>,
) -> Result<(), Expired> {
    let Some(witness) = witness else {
        return Ok(());
    };
    if state.first.is_none_or(|first| at < first) || at > state.last_generated {
        return Ok(());
    }
    if found == Some(witness) {
        return Ok(());
    }
    let what = if found.is_some() {
        "holds a different entry"
    } else {
        "no longer holds its entry"
    };
    Err(Expired {
        oldest: expiry::oldest(state),
        detail: format!(
            "the stream's history changed under position {}: that id {what} (was the server failed over to a replica that had not received every entry, or restored?); resume from the oldest retained event",
            id::format(at)
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(ms: u64, seq: u64) -> ValkeyPosition {
        ValkeyPosition { ms, seq }
    }

    #[test]
    fn the_digest_depends_on_every_name_value_and_boundary() {
        let base = digest([&b"v"[..], b"1", b"outcome", b"success"]);
        assert_eq!(base, digest([&b"v"[..], b"1", b"outcome", b"success"]));
        for other in [
            digest([&b"v"[..], b"1", b"outcome", b"failure"]),
            digest([&b"v"[..], b"1", b"outcom", b"esuccess"]),
            digest([&b"v"[..], b"1", b"outcome", b"success", b"", b""]),
            digest([&b"v"[..], b"1", b"outcome", b"success\0"]),
            digest([&b"1"[..], b"v", b"outcome", b"success"]),
            digest(std::iter::empty()),
        ] {
            assert_ne!(base, other);
        }
        let long = vec![7u8; 1000];
        let mut changed = long.clone();
        changed[999] = 8;
        assert_ne!(digest([&long[..]]), digest([&changed[..]]));
    }

    #[test]
    fn a_retained_position_must_still_name_its_entry() {
        let state = StreamState {
            first: Some(p(1, 0)),
            last: Some(p(9, 0)),
            last_generated: p(9, 0),
            length: 9,
            entries_added: Some(9),
            ..StreamState::ABSENT
        };
        assert_eq!(judge(p(5, 0), Some(7), &state, Some(7)), Ok(()));
        assert_eq!(judge(p(5, 0), None, &state, None), Ok(()), "no witness");
        let gone = judge(p(5, 0), Some(7), &state, None).unwrap_err();
        assert!(gone.detail.contains("no longer holds"), "{}", gone.detail);
        assert_eq!(gone.oldest, id::before(p(1, 0)));
        let other = judge(p(5, 0), Some(7), &state, Some(8)).unwrap_err();
        assert!(other.detail.contains("different entry"), "{}", other.detail);
        // Trimmed away, or beyond the head: expiry's to judge.
        let trimmed = StreamState {
            first: Some(p(6, 0)),
            ..state
        };
        assert_eq!(judge(p(5, 0), Some(7), &trimmed, None), Ok(()));
        assert_eq!(judge(p(10, 0), Some(7), &state, None), Ok(()));
        assert_eq!(judge(p(5, 0), Some(7), &StreamState::ABSENT, None), Ok(()));
    }
}
