//! Building and reading cursor bytes: for backend authors, not consumers.
//!
//! A consumer never needs this module: it persists, prints and compares
//! [`StreamCursor`]s as they are. A backend turns its positions into
//! cursors and back with the helpers here, and each built-in backend keeps
//! the codec of its own format in its crate (`cursor_codec` in
//! `ff-backend-memory`, `ff-backend-valkey` and `ff-backend-postgres`).
//! What stays here is what more than one crate needs: the registry of
//! format bytes (so any backend can name the issuer of a foreign cursor),
//! the 18-byte layout of two `u64`s ([`encode_positioned`],
//! [`decode_positioned`]) a third-party backend may use, and the
//! partitioned Valkey cursor ([`PartitionedPosition`]), which consumer
//! groups split by partition and `StreamCursor::position_cmp` orders.
//!
//! Invariant: every decoder here accepts the tail and beginning cursors,
//! and answers anything of another backend, family, length or version with
//! an `InvalidCursor` naming what is wrong, never a panic.
//!
//! | byte 0 | issued by |
//! |---|---|
//! | (empty) | any: the tail |
//! | [`BEGINNING_BYTE`] `0x00` | any: the beginning |
//! | [`VALKEY_BYTE`] `0x01` | Valkey, one stream per family |
//! | [`POSTGRES_BYTE`] `0x02` | Postgres, without its history |
//! | [`MEMORY_BYTE`] `0x03` | memory |
//! | [`VALKEY_PARTITIONED_BYTE`] `0x04` | Valkey, a family split into partitions |
//! | [`POSTGRES_HISTORY_BYTE`] `0x05` | Postgres, with its history |
//! | `0x80`–`0xFE` | third-party backends (`0xFF` reserved) |
//!
//! The layouts are given byte by byte in `docs/design.md` ("Cursors").

use crate::error::EngineError;
use crate::event::Family;

use super::StreamCursor;

mod partitioned;
mod varint;

pub(crate) use partitioned::{
    compare_cursors as compare_partitioned, join_cursors as join_partitioned,
};
pub use partitioned::{
    decode_valkey_partitioned, encode_valkey_partitioned, PartitionedPosition, MAX_PARTITIONS,
};

/// Byte 0 of the beginning cursor.
pub const BEGINNING_BYTE: u8 = 0x00;
/// Byte 0 of Valkey single-stream cursors.
pub const VALKEY_BYTE: u8 = 0x01;
/// Byte 0 of Postgres cursors without their history.
pub const POSTGRES_BYTE: u8 = 0x02;
/// Byte 0 of memory-backend cursors.
pub const MEMORY_BYTE: u8 = 0x03;
/// Byte 0 of partitioned Valkey cursors.
pub const VALKEY_PARTITIONED_BYTE: u8 = 0x04;
/// Byte 0 of Postgres cursors that carry their history.
pub const POSTGRES_HISTORY_BYTE: u8 = 0x05;
/// Length of a cursor in the layout of two `u64`s ([`encode_positioned`]).
pub const POSITIONED_LEN: usize = 18;

/// Where a decoded cursor says to start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CursorStart<P> {
    /// After everything committed at subscribe time.
    Tail,
    /// From the oldest retained event.
    Beginning,
    /// Exactly after position `P`.
    After(P),
}

/// A Valkey stream entry id `ms-seq`: a position within one stream, and
/// within one partition of a [`PartitionedPosition`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ValkeyPosition {
    /// Milliseconds part.
    pub ms: u64,
    /// Sequence part.
    pub seq: u64,
}

/// Who issues cursors whose byte 0 is `byte`.
fn issuer(byte: u8) -> String {
    match byte {
        VALKEY_BYTE => "the Valkey backend".into(),
        POSTGRES_BYTE | POSTGRES_HISTORY_BYTE => "the Postgres backend".into(),
        MEMORY_BYTE => "the memory backend".into(),
        VALKEY_PARTITIONED_BYTE => "the Valkey backend with partitioned families".into(),
        0x80..=0xFE => format!("a third-party backend (format 0x{byte:02x})"),
        _ => format!("no known backend (unknown format 0x{byte:02x})"),
    }
}

/// Encode a cursor in the layout of two `u64`s: `format` ++ family ++
/// `hi` (u64 BE) ++ `lo` (u64 BE), [`POSITIONED_LEN`] bytes, which compare
/// by position as bytes.
pub fn encode_positioned(format: u8, family: Family, hi: u64, lo: u64) -> StreamCursor {
    let mut b = Vec::with_capacity(POSITIONED_LEN);
    b.push(format);
    b.push(family.cursor_byte());
    b.extend_from_slice(&hi.to_be_bytes());
    b.extend_from_slice(&lo.to_be_bytes());
    StreamCursor::new(b)
}

/// Decode a cursor of [`encode_positioned`]'s layout for `family` whose
/// byte 0 is `format`: tail and beginning are accepted for every backend;
/// anything else of the wrong backend, family, length or version is
/// `InvalidCursor`.
pub fn decode_positioned(
    cursor: &StreamCursor,
    format: u8,
    family: Family,
) -> Result<CursorStart<(u64, u64)>, EngineError> {
    let b = cursor.as_bytes();
    if b.is_empty() {
        return Ok(CursorStart::Tail);
    }
    if b[0] == BEGINNING_BYTE {
        if b.len() == 1 {
            return Ok(CursorStart::Beginning);
        }
        return Err(EngineError::invalid_cursor(format!(
            "cursor {cursor} starts like the beginning cursor but has {} extra bytes",
            b.len() - 1
        )));
    }
    if b[0] != format {
        return Err(wrong_backend(cursor, b[0], format));
    }
    if b.len() != POSITIONED_LEN {
        return Err(invalid_length(
            cursor,
            format,
            &format!("{POSITIONED_LEN} bytes"),
        ));
    }
    expect_family(cursor, family)?;
    let hi = u64::from_be_bytes(b[2..10].try_into().expect("8 bytes"));
    let lo = u64::from_be_bytes(b[10..18].try_into().expect("8 bytes"));
    Ok(CursorStart::After((hi, lo)))
}

/// The error for a cursor of `format` whose length is none of `lengths`
/// (e.g. `"18 or 22 bytes"`), for formats of more than one length.
pub fn invalid_length(cursor: &StreamCursor, format: u8, lengths: &str) -> EngineError {
    EngineError::invalid_cursor(format!(
        "cursor {cursor} is {} bytes long; cursors of {} are {lengths} (truncated or corrupted?)",
        cursor.as_bytes().len(),
        issuer(format),
    ))
}

/// `Ok` when byte 1 of a positioned `cursor` names `family`; otherwise the
/// `InvalidCursor` naming the family it belongs to, or its unknown byte.
pub fn expect_family(cursor: &StreamCursor, family: Family) -> Result<(), EngineError> {
    let byte = cursor.as_bytes().get(1).copied().unwrap_or(0);
    match Family::from_cursor_byte(byte) {
        Some(f) if f == family => Ok(()),
        Some(f) => Err(EngineError::invalid_cursor(format!(
            "cursor {cursor} belongs to the {f} stream, not {family}"
        ))),
        None => Err(EngineError::invalid_cursor(format!(
            "cursor {cursor} names unknown family byte {byte}"
        ))),
    }
}

/// A cursor as an error message shows it: its text, abbreviated and quoted
/// when it is long (a partitioned cursor can be kilobytes).
fn in_message(cursor: &StreamCursor) -> String {
    let text = cursor.to_string();
    if text.len() <= 48 {
        text
    } else {
        crate::error::excerpt(&text)
    }
}

/// The error for a cursor whose byte 0 is `found` given to the backend of
/// format `expected`.
fn wrong_backend(cursor: &StreamCursor, found: u8, expected: u8) -> EngineError {
    let shown = in_message(cursor);
    if found == VALKEY_PARTITIONED_BYTE && expected == VALKEY_BYTE {
        let count = partitioned::partition_count(cursor)
            .map_or_else(|| "partitions=P".to_string(), |p| format!("partitions={p}"));
        return EngineError::invalid_cursor(format!(
            "cursor {shown} is a partitioned Valkey cursor ({count}), but this backend keeps \
             each family in one stream (partitions=1): connect with {count} to use it, or start \
             from the tail or the beginning"
        ));
    }
    EngineError::invalid_cursor(format!(
        "cursor {shown} was issued by {}, but this is {}: use a cursor this backend issued, or \
         start from the tail or the beginning",
        issuer(found),
        issuer(expected),
    ))
}

#[cfg(test)]
mod tests {
    use std::fmt;

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
    fn positioned_cursors_round_trip_for_every_family() {
        for f in Family::ALL.iter().copied() {
            let c = encode_positioned(0x80, f, 1_700_000_000_000, u64::MAX);
            assert_eq!(c.as_bytes().len(), POSITIONED_LEN);
            assert_eq!(c.family(), Some(f));
            assert_eq!(
                decode_positioned(&c, 0x80, f).unwrap(),
                CursorStart::After((1_700_000_000_000, u64::MAX))
            );
            assert_eq!(c.to_string().parse::<StreamCursor>().unwrap(), c);
        }
    }

    #[test]
    fn tail_and_beginning_decode_for_every_format() {
        let f = Family::Completion;
        for format in [VALKEY_BYTE, POSTGRES_BYTE, MEMORY_BYTE, 0x80] {
            assert_eq!(
                decode_positioned(&StreamCursor::empty(), format, f).unwrap(),
                CursorStart::Tail
            );
            assert_eq!(
                decode_positioned(&StreamCursor::beginning(), format, f).unwrap(),
                CursorStart::Beginning
            );
        }
    }

    #[test]
    fn foreign_backend_family_length_and_version_are_invalid() {
        let f = Family::Completion;
        let decode = |c: &StreamCursor| decode_positioned(c, MEMORY_BYTE, f);
        assert_invalid(
            decode(&encode_positioned(POSTGRES_BYTE, f, 1, 1)),
            "Postgres",
        );
        assert_invalid(decode(&encode_positioned(VALKEY_BYTE, f, 1, 1)), "Valkey");
        assert_invalid(
            decode(&encode_positioned(0x81, f, 1, 1)),
            "third-party backend (format 0x81)",
        );
        assert_invalid(
            decode(&encode_positioned(MEMORY_BYTE, Family::LeaseHistory, 1, 1)),
            "lease-history",
        );
        let good = encode_positioned(MEMORY_BYTE, f, 1, 1);
        assert_invalid(
            decode(&StreamCursor::new(good.bytes().slice(..17))),
            "17 bytes",
        );
        let mut long = good.as_bytes().to_vec();
        long.push(0);
        assert_invalid(decode(&StreamCursor::new(long)), "19 bytes");
        let mut unknown_version = good.as_bytes().to_vec();
        unknown_version[0] = 0x7f;
        assert_invalid(decode(&StreamCursor::new(unknown_version)), "0x7f");
        let mut bad_family = good.as_bytes().to_vec();
        bad_family[1] = 9;
        assert_invalid(decode(&StreamCursor::new(bad_family)), "family");
        assert_invalid(decode(&StreamCursor::new(vec![0u8, 1])), "beginning");
    }
}
