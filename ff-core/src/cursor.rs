//! [`StreamCursor`]: an opaque, backend-versioned resume position.
//!
//! Byte 0 names the backend and format version, byte 1 the family, the rest
//! the position, so a cursor can never be misread by another backend or used
//! on another family's stream. The text form is unpadded base64url.
//!
//! | byte 0 | backend | layout |
//! |---|---|---|
//! | (empty) | any | tail: "after everything committed at subscribe time" |
//! | `0x00` | any | beginning: everything still retained |
//! | `0x01` | Valkey | family ++ entry-id ms (u64 BE) ++ entry-id seq (u64 BE) [++ the entry's witness (u32 BE)] |
//! | `0x02` | Postgres | family ++ xid8 (u64 BE) ++ row id (u64 BE) |
//! | `0x03` | memory | family ++ instance epoch (u64 BE) ++ sequence (u64 BE) |
//! | `0x04` | Valkey, partitioned | family ++ partition count ++ one entry id per followed partition ([`partitioned`](self#partitioned-cursors)) |
//! | `0x05` | Postgres | family ++ system identifier ++ xid8 ++ row id ++ row `at` (u64 BE each); see [`encode_postgres_history`] |
//! | `0x80`–`0xFE` | third-party backends | theirs (`0xFF` reserved) |
//!
//! # Partitioned cursors
//!
//! A family split into partitions has one position per partition, so its
//! cursors ([`PartitionedPosition`], [`encode_valkey_partitioned`],
//! [`decode_valkey_partitioned`]) are ordered partially: `position_cmp`
//! answers only when one cursor is at or before the other in every
//! partition, and their bytes do not sort by position. Every other format
//! compares by its bytes.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::EngineError;
use crate::event::Family;

mod partitioned;
mod postgres_history;
mod varint;

pub use partitioned::{
    decode_valkey_partitioned, encode_valkey_partitioned, PartitionedPosition, MAX_PARTITIONS,
    VALKEY_PARTITIONED_BYTE,
};
pub use postgres_history::{
    decode_postgres_any, encode_postgres_history, PostgresCursor, PostgresHistoryPosition,
    POSTGRES_HISTORY_BYTE, POSTGRES_HISTORY_LEN,
};

/// Byte 0 of the beginning cursor.
pub const BEGINNING_BYTE: u8 = 0x00;
/// Byte 0 of Valkey single-stream cursors.
pub const VALKEY_BYTE: u8 = 0x01;
/// Byte 0 of Postgres cursors.
pub const POSTGRES_BYTE: u8 = 0x02;
/// Byte 0 of memory-backend cursors.
pub const MEMORY_BYTE: u8 = 0x03;
/// Length of every built-in positioned cursor of two `u64`s.
pub const POSITIONED_LEN: usize = 18;
/// Length of a Valkey single-stream cursor (`0x01`) whose position carries
/// the witness of the entry it names: the 18 bytes and a `u32`.
pub const VALKEY_WITNESSED_LEN: usize = 22;
/// The longest cursor text `FromStr` accepts: room for any partitioned
/// cursor (witnesses included), while a megabyte of junk is refused before
/// it is decoded.
pub const MAX_CURSOR_TEXT: usize = 9216;

/// An opaque resume position. Subscribing with a cursor an event carried
/// yields exactly the events after that event.
///
/// ```
/// use ff_core::cursor::StreamCursor;
/// let c: StreamCursor = "AwIAAAAAAAAAKgAAAAAAAAAH".parse().unwrap();
/// assert_eq!(c.to_string(), "AwIAAAAAAAAAKgAAAAAAAAAH");
/// assert!(StreamCursor::empty().is_tail());
/// ```
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct StreamCursor(Bytes);

impl StreamCursor {
    /// A cursor from raw bytes (no validation: backends validate at subscribe).
    pub fn new(bytes: impl Into<Bytes>) -> Self {
        Self(bytes.into())
    }

    /// The tail cursor: start after everything already committed.
    pub fn empty() -> Self {
        Self(Bytes::new())
    }

    /// The beginning cursor: replay everything still retained.
    pub fn beginning() -> Self {
        Self(Bytes::from_static(&[BEGINNING_BYTE]))
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The raw bytes as a [`Bytes`] sharing this cursor's buffer (no copy).
    pub fn bytes(&self) -> Bytes {
        self.0.clone()
    }

    /// The raw bytes, consuming the cursor (no copy).
    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    /// `true` for the tail (empty) cursor.
    pub fn is_tail(&self) -> bool {
        self.0.is_empty()
    }

    /// `true` for the beginning cursor.
    pub fn is_beginning(&self) -> bool {
        self.0.as_ref() == [BEGINNING_BYTE]
    }

    /// Byte 0 (backend and format), if any.
    pub fn format_byte(&self) -> Option<u8> {
        self.0.first().copied()
    }

    /// The family a positioned cursor names in byte 1, built-in and
    /// third-party formats (`0x80`–`0xFE`) alike; `None` for the tail and
    /// beginning cursors, the reserved `0xFF`, and unknown family bytes.
    pub fn family(&self) -> Option<Family> {
        match self.0.as_ref() {
            [BEGINNING_BYTE, ..] | [0xFF, ..] => None,
            [_, fam, ..] => Family::from_cursor_byte(*fam),
            _ => None,
        }
    }

    /// Compare two positions of the same format and family: by byte order,
    /// except partitioned cursors (`0x04`), which are partially ordered —
    /// `Some` only when they follow the same partitions of the same count
    /// and one is at or before the other in every partition. `None` when
    /// they are not comparable (different backend or family, either is
    /// tail/beginning, or a partitioned cursor does not decode).
    pub fn position_cmp(&self, other: &StreamCursor) -> Option<Ordering> {
        let (a, b) = (self.as_bytes(), other.as_bytes());
        if a.len() < 2 || b.len() < 2 || a[..2] != b[..2] || a[0] == BEGINNING_BYTE {
            return None;
        }
        if a[0] == VALKEY_PARTITIONED_BYTE {
            return partitioned::compare_cursors(a, b);
        }
        if a[0] == VALKEY_BYTE && a.len() >= POSITIONED_LEN && b.len() >= POSITIONED_LEN {
            return valkey_cmp(a, b);
        }
        Some(a[2..].cmp(&b[2..]))
    }

    /// The least position at or after both `self` and `other`: the later of
    /// the two for byte-ordered formats, and for partitioned cursors
    /// (`0x04`) the later entry of each partition. `None` when they are
    /// not comparable in the sense of [`position_cmp`](Self::position_cmp)'s
    /// formats (different backend, family or partition set; tail or
    /// beginning).
    ///
    /// A consumer that merges what it has seen from two orders of the same
    /// events (a fan-out joining a shared subscription at its own position)
    /// resumes from the join without repeating or skipping any event.
    ///
    /// ```
    /// use ff_core::event::Family;
    /// use ff_core::cursor::{encode_valkey, StreamCursor};
    ///
    /// let a = encode_valkey(Family::Completion, 5, 0);
    /// let b = encode_valkey(Family::Completion, 7, 1);
    /// assert_eq!(a.position_join(&b), Some(b.clone()));
    /// assert_eq!(a.position_join(&StreamCursor::beginning()), None);
    /// ```
    pub fn position_join(&self, other: &StreamCursor) -> Option<StreamCursor> {
        let (a, b) = (self.as_bytes(), other.as_bytes());
        if a.len() < 2 || b.len() < 2 || a[..2] != b[..2] || a[0] == BEGINNING_BYTE {
            return None;
        }
        if a[0] == VALKEY_PARTITIONED_BYTE {
            return partitioned::join_cursors(a, b);
        }
        if a[0] == VALKEY_BYTE && a.len() >= POSITIONED_LEN && b.len() >= POSITIONED_LEN {
            // At the same entry, the one that carries its witness.
            return Some(match valkey_cmp(a, b)? {
                Ordering::Less => other,
                Ordering::Greater => self,
                Ordering::Equal if b.len() > a.len() => other,
                Ordering::Equal => self,
            })
            .cloned();
        }
        Some(if a[2..] >= b[2..] { self } else { other }.clone())
    }
}

/// Two Valkey single-stream cursors (at least 18 bytes each) by entry id:
/// the witness orders nothing, but the same id with two different
/// witnesses names entries of different histories (`None`).
fn valkey_cmp(a: &[u8], b: &[u8]) -> Option<Ordering> {
    match a[2..POSITIONED_LEN].cmp(&b[2..POSITIONED_LEN]) {
        Ordering::Equal => {
            let (x, y) = (&a[POSITIONED_LEN..], &b[POSITIONED_LEN..]);
            (x.is_empty() || y.is_empty() || x == y).then_some(Ordering::Equal)
        }
        order => Some(order),
    }
}

impl fmt::Display for StreamCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&URL_SAFE_NO_PAD.encode(&self.0))
    }
}

impl fmt::Debug for StreamCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_tail() {
            f.write_str("StreamCursor(tail)")
        } else if self.is_beginning() {
            f.write_str("StreamCursor(beginning)")
        } else {
            write!(f, "StreamCursor({self})")
        }
    }
}

impl FromStr for StreamCursor {
    type Err = EngineError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() > MAX_CURSOR_TEXT {
            return Err(EngineError::invalid_cursor(format!(
                "cursor text is {} characters long; cursors are base64url strings of at most \
                 {MAX_CURSOR_TEXT}",
                s.len()
            )));
        }
        URL_SAFE_NO_PAD
            .decode(s)
            .map(|b| Self(Bytes::from(b)))
            .map_err(|_| {
                EngineError::invalid_cursor(format!(
                    "{} is not unpadded base64url; pass a cursor exactly as ff printed it",
                    crate::error::excerpt(s)
                ))
            })
    }
}

impl Serialize for StreamCursor {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for StreamCursor {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

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

/// Decode any built-in 18-byte cursor for `family` whose byte 0 is `format`:
/// tail and beginning are accepted for every backend; anything else of the
/// wrong backend, family, length or version is `InvalidCursor`.
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
        let lengths = match format {
            VALKEY_BYTE => format!("{POSITIONED_LEN} or {VALKEY_WITNESSED_LEN} bytes"),
            POSTGRES_BYTE => postgres_history::accepted_lengths(),
            _ => format!("{POSITIONED_LEN} bytes"),
        };
        return Err(EngineError::invalid_cursor(format!(
            "cursor {cursor} is {} bytes long; cursors of {} are {lengths} (truncated or corrupted?)",
            b.len(),
            issuer(format),
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
    let hi = u64::from_be_bytes(b[2..10].try_into().expect("8 bytes"));
    let lo = u64::from_be_bytes(b[10..18].try_into().expect("8 bytes"));
    Ok(CursorStart::After((hi, lo)))
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

/// Encode a built-in 18-byte cursor.
pub fn encode_positioned(format: u8, family: Family, hi: u64, lo: u64) -> StreamCursor {
    let mut b = Vec::with_capacity(POSITIONED_LEN);
    b.push(format);
    b.push(family.cursor_byte());
    b.extend_from_slice(&hi.to_be_bytes());
    b.extend_from_slice(&lo.to_be_bytes());
    StreamCursor(Bytes::from(b))
}

/// A Valkey stream entry id `ms-seq`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ValkeyPosition {
    /// Milliseconds part.
    pub ms: u64,
    /// Sequence part.
    pub seq: u64,
}

/// A Postgres outbox position: (transaction id, row id).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PostgresPosition {
    /// The writing transaction's xid8.
    pub xid: u64,
    /// The row id.
    pub id: u64,
}

/// A memory-backend position: (instance epoch, sequence).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MemoryPosition {
    /// Random per backend instance.
    pub epoch: u64,
    /// Sequence within the family's log (first event is 1).
    pub seq: u64,
}

/// A Valkey entry id and, when the position names an entry it read or
/// wrote, that entry's witness: a digest of its fields, which tells the
/// entry from another one given the same id later (a lossy failover).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WitnessedPosition {
    /// The entry id.
    pub at: ValkeyPosition,
    /// The entry's witness; `None` for positions that name no entry
    /// (before the first, an empty stream's newest id) or cursors that
    /// carry none.
    pub witness: Option<u32>,
}

/// Encode a Valkey cursor for entry id `ms-seq`.
pub fn encode_valkey(family: Family, ms: u64, seq: u64) -> StreamCursor {
    encode_positioned(VALKEY_BYTE, family, ms, seq)
}

/// Encode a Valkey cursor for `position`: 22 bytes with its witness, the
/// 18 of [`encode_valkey`] without.
pub fn encode_valkey_witnessed(family: Family, position: WitnessedPosition) -> StreamCursor {
    let at = position.at;
    let cursor = encode_valkey(family, at.ms, at.seq);
    match position.witness {
        None => cursor,
        Some(w) => {
            let mut b = Vec::with_capacity(VALKEY_WITNESSED_LEN);
            b.extend_from_slice(cursor.as_bytes());
            b.extend_from_slice(&w.to_be_bytes());
            StreamCursor(Bytes::from(b))
        }
    }
}

/// Decode a cursor given to the Valkey backend (with or without a witness,
/// which this drops).
pub fn decode_valkey(
    cursor: &StreamCursor,
    family: Family,
) -> Result<CursorStart<ValkeyPosition>, EngineError> {
    Ok(match decode_valkey_witnessed(cursor, family)? {
        CursorStart::Tail => CursorStart::Tail,
        CursorStart::Beginning => CursorStart::Beginning,
        CursorStart::After(p) => CursorStart::After(p.at),
    })
}

/// Decode a cursor given to the Valkey backend with the witness it carries:
/// 18 bytes (none) or 22.
pub fn decode_valkey_witnessed(
    cursor: &StreamCursor,
    family: Family,
) -> Result<CursorStart<WitnessedPosition>, EngineError> {
    let b = cursor.as_bytes();
    let (positioned, witness) = match b {
        [VALKEY_BYTE, ..] if b.len() == VALKEY_WITNESSED_LEN => {
            let (head, w) = b.split_at(POSITIONED_LEN);
            let w = u32::from_be_bytes(w.try_into().expect("4 bytes"));
            (StreamCursor(cursor.0.slice(..head.len())), Some(w))
        }
        _ => (cursor.clone(), None),
    };
    Ok(match decode_positioned(&positioned, VALKEY_BYTE, family)? {
        CursorStart::Tail => CursorStart::Tail,
        CursorStart::Beginning => CursorStart::Beginning,
        CursorStart::After((ms, seq)) => CursorStart::After(WitnessedPosition {
            at: ValkeyPosition { ms, seq },
            witness,
        }),
    })
}

/// Encode a Postgres cursor for row `(xid, id)`.
pub fn encode_postgres(family: Family, xid: u64, id: u64) -> StreamCursor {
    encode_positioned(POSTGRES_BYTE, family, xid, id)
}

/// Decode a cursor given to the Postgres backend.
pub fn decode_postgres(
    cursor: &StreamCursor,
    family: Family,
) -> Result<CursorStart<PostgresPosition>, EngineError> {
    Ok(match decode_positioned(cursor, POSTGRES_BYTE, family)? {
        CursorStart::Tail => CursorStart::Tail,
        CursorStart::Beginning => CursorStart::Beginning,
        CursorStart::After((xid, id)) => CursorStart::After(PostgresPosition { xid, id }),
    })
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

    fn assert_invalid(r: Result<impl fmt::Debug, EngineError>, needle: &str) {
        match r {
            Err(EngineError::InvalidCursor { detail }) => {
                assert!(detail.contains(needle), "{detail:?} lacks {needle:?}")
            }
            other => panic!("expected InvalidCursor, got {other:?}"),
        }
    }

    #[test]
    fn every_codec_round_trips_for_every_family() {
        for f in Family::ALL.iter().copied() {
            let v = encode_valkey(f, 1_700_000_000_000, 3);
            assert_eq!(
                decode_valkey(&v, f).unwrap(),
                CursorStart::After(ValkeyPosition {
                    ms: 1_700_000_000_000,
                    seq: 3
                })
            );
            let p = encode_postgres(f, 77, u64::MAX);
            assert_eq!(
                decode_postgres(&p, f).unwrap(),
                CursorStart::After(PostgresPosition {
                    xid: 77,
                    id: u64::MAX
                })
            );
            let m = encode_memory(f, 9, 0);
            assert_eq!(
                decode_memory(&m, f).unwrap(),
                CursorStart::After(MemoryPosition { epoch: 9, seq: 0 })
            );
            for c in [v, p, m] {
                assert_eq!(c.family(), Some(f));
                assert_eq!(c.to_string().parse::<StreamCursor>().unwrap(), c);
                assert_eq!(c.as_bytes().len(), POSITIONED_LEN);
            }
        }
    }

    #[test]
    fn tail_and_beginning_decode_on_every_backend() {
        let f = Family::Completion;
        assert_eq!(
            decode_valkey(&StreamCursor::empty(), f).unwrap(),
            CursorStart::Tail
        );
        assert_eq!(
            decode_postgres(&StreamCursor::beginning(), f).unwrap(),
            CursorStart::Beginning
        );
        assert_eq!(StreamCursor::empty().to_string(), "");
        assert_eq!("".parse::<StreamCursor>().unwrap(), StreamCursor::empty());
        assert_eq!(StreamCursor::beginning().to_string(), "AA");
    }

    #[test]
    fn foreign_backend_family_length_and_version_are_invalid() {
        let f = Family::Completion;
        assert_invalid(decode_valkey(&encode_postgres(f, 1, 1), f), "Postgres");
        assert_invalid(decode_memory(&encode_valkey(f, 1, 1), f), "Valkey");
        assert_invalid(
            decode_valkey(&encode_valkey(Family::LeaseHistory, 1, 1), f),
            "lease-history",
        );
        let good = encode_memory(f, 1, 1);
        let truncated = StreamCursor::new(good.bytes().slice(..17));
        assert_invalid(decode_memory(&truncated, f), "17 bytes");
        let mut long = good.as_bytes().to_vec();
        long.push(0);
        assert_invalid(decode_memory(&StreamCursor::new(long), f), "19 bytes");
        let mut unknown_version = good.as_bytes().to_vec();
        unknown_version[0] = 0x7f;
        assert_invalid(
            decode_memory(&StreamCursor::new(unknown_version), f),
            "0x7f",
        );
        let mut bad_family = good.as_bytes().to_vec();
        bad_family[1] = 9;
        assert_invalid(decode_memory(&StreamCursor::new(bad_family), f), "family");
        assert_invalid(
            decode_memory(&StreamCursor::new(vec![0u8, 1]), f),
            "beginning",
        );
        assert_invalid("not base64!".parse::<StreamCursor>(), "base64url");
        let too_long = "A".repeat(MAX_CURSOR_TEXT + 4);
        assert_invalid(too_long.parse::<StreamCursor>(), "9220");
        let longest = "A".repeat(MAX_CURSOR_TEXT);
        assert_eq!(
            longest.parse::<StreamCursor>().unwrap().as_bytes().len(),
            6912
        );
    }

    #[test]
    fn positions_compare_by_byte_order_within_one_stream() {
        let f = Family::SignalDelivery;
        let a = encode_valkey(f, 5, u64::MAX);
        let b = encode_valkey(f, 6, 0);
        assert_eq!(a.position_cmp(&b), Some(Ordering::Less));
        assert_eq!(b.position_cmp(&a), Some(Ordering::Greater));
        assert_eq!(a.position_cmp(&a), Some(Ordering::Equal));
        assert_eq!(a.position_cmp(&encode_postgres(f, 5, 0)), None);
        assert_eq!(
            a.position_cmp(&encode_valkey(Family::Completion, 5, 0)),
            None
        );
        assert_eq!(StreamCursor::beginning().position_cmp(&a), None);
    }

    #[test]
    fn valkey_cursors_carry_a_witness_and_old_ones_still_decode() {
        let f = Family::Completion;
        let at = ValkeyPosition { ms: 1000, seq: 5 };
        let old = encode_valkey(f, 1000, 5);
        let witnessed = encode_valkey_witnessed(
            f,
            WitnessedPosition {
                at,
                witness: Some(0x0102_0304),
            },
        );
        assert_eq!(old.as_bytes().len(), POSITIONED_LEN);
        assert_eq!(witnessed.as_bytes().len(), VALKEY_WITNESSED_LEN);
        assert_eq!(&witnessed.as_bytes()[..POSITIONED_LEN], old.as_bytes());
        assert_eq!(
            decode_valkey_witnessed(&old, f).unwrap(),
            CursorStart::After(WitnessedPosition { at, witness: None })
        );
        assert_eq!(
            decode_valkey_witnessed(&witnessed, f).unwrap(),
            CursorStart::After(WitnessedPosition {
                at,
                witness: Some(0x0102_0304)
            })
        );
        assert_eq!(
            decode_valkey(&witnessed, f).unwrap(),
            CursorStart::After(at)
        );
        assert_eq!(
            encode_valkey_witnessed(f, WitnessedPosition { at, witness: None }),
            old
        );
        assert_invalid(
            decode_valkey(&StreamCursor::new(witnessed.bytes().slice(..20)), f),
            "18 or 22 bytes",
        );
        assert_invalid(
            decode_valkey(&witnessed, Family::LeaseHistory),
            "completion stream, not lease-history",
        );
        assert_invalid(
            decode_memory(&StreamCursor::new(witnessed.bytes()), f),
            "Valkey",
        );

        // The witness orders nothing; at one id, two witnesses are two
        // histories.
        let other = encode_valkey_witnessed(
            f,
            WitnessedPosition {
                at,
                witness: Some(9),
            },
        );
        let later = encode_valkey(f, 1000, 6);
        let earlier = encode_valkey_witnessed(
            f,
            WitnessedPosition {
                at: ValkeyPosition { ms: 1000, seq: 4 },
                witness: Some(u32::MAX),
            },
        );
        assert_eq!(old.position_cmp(&witnessed), Some(Ordering::Equal));
        assert_eq!(witnessed.position_cmp(&old), Some(Ordering::Equal));
        assert_eq!(witnessed.position_cmp(&witnessed), Some(Ordering::Equal));
        assert_eq!(witnessed.position_cmp(&other), None);
        assert_eq!(witnessed.position_cmp(&later), Some(Ordering::Less));
        assert_eq!(earlier.position_cmp(&old), Some(Ordering::Less));
        assert_eq!(old.position_join(&witnessed), Some(witnessed.clone()));
        assert_eq!(witnessed.position_join(&later), Some(later.clone()));
        assert_eq!(witnessed.position_join(&other), None);
    }

    #[test]
    fn cursor_serde_is_its_text() {
        let c = encode_memory(Family::InstanceTags, 3, 4);
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(json, format!("\"{c}\""));
        assert_eq!(serde_json::from_str::<StreamCursor>(&json).unwrap(), c);
    }
}
