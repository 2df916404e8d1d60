//! [`StreamCursor`]: an opaque, backend-versioned resume position.
//!
//! A consumer treats a cursor as a token: it takes one from each event (or
//! checkpoint), persists it, prints or parses its text form, and hands it
//! back to resume exactly after that event. Two positions of one backend
//! and family can be compared ([`StreamCursor::position_cmp`]) and merged
//! ([`StreamCursor::position_join`]); nothing else about a cursor is the
//! consumer's business.
//!
//! Byte 0 names the backend and format, byte 1 the family, the rest the
//! position, so a cursor can never be misread by another backend or used
//! on another family's stream. The text form is unpadded base64url. Every
//! layout is given once, in `docs/design.md` ("Cursors"); a backend builds
//! and reads its cursors with the [`codec`] module.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::EngineError;
use crate::event::Family;

pub mod codec;

use codec::{BEGINNING_BYTE, POSITIONED_LEN, VALKEY_BYTE, VALKEY_PARTITIONED_BYTE};

/// The longest cursor text `FromStr` accepts: room for any partitioned
/// cursor (witnesses included), while a megabyte of junk is refused before
/// it is decoded. A store that keeps cursor text needs this much room.
pub const MAX_CURSOR_TEXT: usize = 9216;

/// An opaque resume position. Subscribing with a cursor an event carried
/// yields exactly the events after that event.
///
/// ```
/// use ff_core::StreamCursor;
/// let c: StreamCursor = "AwIAAAAAAAAAKgAAAAAAAAAH".parse().unwrap();
/// assert_eq!(c.to_string(), "AwIAAAAAAAAAKgAAAAAAAAAH");
/// assert!(StreamCursor::empty().is_tail());
/// ```
///
/// Its bytes are private: a consumer keeps, prints and compares cursors,
/// and only a backend's codec reads what is inside.
///
/// ```compile_fail
/// let bytes = ff_core::StreamCursor::empty().0;
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
            return codec::compare_partitioned(a, b);
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
    /// use ff_core::StreamCursor;
    ///
    /// // Two positions of one memory-backend stream, as events carried them.
    /// let a: StreamCursor = "AwIAAAAAAAAAAQAAAAAAAAAF".parse().unwrap();
    /// let b: StreamCursor = "AwIAAAAAAAAAAQAAAAAAAAAH".parse().unwrap();
    /// assert_eq!(a.position_join(&b), Some(b.clone()));
    /// assert_eq!(a.position_join(&StreamCursor::beginning()), None);
    /// ```
    pub fn position_join(&self, other: &StreamCursor) -> Option<StreamCursor> {
        let (a, b) = (self.as_bytes(), other.as_bytes());
        if a.len() < 2 || b.len() < 2 || a[..2] != b[..2] || a[0] == BEGINNING_BYTE {
            return None;
        }
        if a[0] == VALKEY_PARTITIONED_BYTE {
            return codec::join_partitioned(a, b);
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

#[cfg(test)]
mod tests {
    use super::codec::{encode_positioned, MEMORY_BYTE, POSTGRES_BYTE};
    use super::*;

    fn assert_invalid(r: Result<impl fmt::Debug, EngineError>, needle: &str) {
        match r {
            Err(EngineError::InvalidCursor { detail }) => {
                assert!(detail.contains(needle), "{detail:?} lacks {needle:?}")
            }
            other => panic!("expected InvalidCursor, got {other:?}"),
        }
    }

    /// A Valkey single-stream cursor for `ms-seq`, with `witness` appended.
    fn valkey(f: Family, ms: u64, seq: u64, witness: Option<u32>) -> StreamCursor {
        let mut b = encode_positioned(VALKEY_BYTE, f, ms, seq)
            .as_bytes()
            .to_vec();
        b.extend(witness.map(u32::to_be_bytes).into_iter().flatten());
        StreamCursor::new(b)
    }

    #[test]
    fn tail_and_beginning_have_fixed_texts() {
        assert_eq!(StreamCursor::empty().to_string(), "");
        assert_eq!("".parse::<StreamCursor>().unwrap(), StreamCursor::empty());
        assert_eq!(StreamCursor::beginning().to_string(), "AA");
        assert!(StreamCursor::beginning().is_beginning());
        assert_eq!(StreamCursor::beginning().family(), None);
        assert_eq!(format!("{:?}", StreamCursor::empty()), "StreamCursor(tail)");
    }

    #[test]
    fn text_that_is_not_a_cursor_is_invalid() {
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
        let a = valkey(f, 5, u64::MAX, None);
        let b = valkey(f, 6, 0, None);
        assert_eq!(a.position_cmp(&b), Some(Ordering::Less));
        assert_eq!(b.position_cmp(&a), Some(Ordering::Greater));
        assert_eq!(a.position_cmp(&a), Some(Ordering::Equal));
        let postgres = encode_positioned(POSTGRES_BYTE, f, 5, 0);
        assert_eq!(a.position_cmp(&postgres), None);
        assert_eq!(
            a.position_cmp(&valkey(Family::Completion, 5, 0, None)),
            None
        );
        assert_eq!(StreamCursor::beginning().position_cmp(&a), None);
        let m = |seq| encode_positioned(MEMORY_BYTE, f, 1, seq);
        assert_eq!(m(5).position_join(&m(9)), Some(m(9)));
        assert_eq!(m(9).position_join(&m(5)), Some(m(9)));
    }

    #[test]
    fn a_valkey_witness_orders_nothing_but_tells_histories_apart() {
        let f = Family::Completion;
        let old = valkey(f, 1000, 5, None);
        let witnessed = valkey(f, 1000, 5, Some(0x0102_0304));
        let other = valkey(f, 1000, 5, Some(9));
        let later = valkey(f, 1000, 6, None);
        let earlier = valkey(f, 1000, 4, Some(u32::MAX));
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
        let c = encode_positioned(MEMORY_BYTE, Family::InstanceTags, 3, 4);
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(json, format!("\"{c}\""));
        assert_eq!(serde_json::from_str::<StreamCursor>(&json).unwrap(), c);
    }

    #[test]
    fn bytes_accessors_share_the_buffer() {
        let c = encode_positioned(MEMORY_BYTE, Family::Completion, 1, 2);
        assert_eq!(c.bytes().as_ref(), c.as_bytes());
        assert_eq!(c.bytes().as_ptr(), c.as_bytes().as_ptr());
        let raw = c.as_bytes().to_vec();
        assert_eq!(c.into_bytes().as_ref(), raw.as_slice());
    }
}
