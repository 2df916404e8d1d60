//! The partitioned Valkey cursor (format `0x04`): one stream entry id per
//! partition a subscription follows.
//!
//! A family split into P partitions is P independent streams. A
//! subscription over several of them resumes each exactly after its own
//! last event, so its cursor carries one position per followed partition.
//!
//! # Layout
//!
//! ```text
//! 0x04 family varint(P) set varint(base) { varint(ms - base) varint(seq) }… [witnesses]
//!
//! set = 0x00                                    every partition 0..P
//!     | 0x01 varint(k) varint(p1) { varint(p(i) - p(i-1) - 1) }…
//!                                               k listed partitions, ascending
//!     | 0x02                                    every partition, with witnesses
//!     | 0x03 bitmap(P)                          listed partitions, with witnesses
//!
//! witnesses (forms 0x02 and 0x03 only) = bitmap(k) { u32 BE }…
//! ```
//!
//! A position may carry the witness of the entry it names (a 32-bit digest
//! of the entry's fields, see the Valkey backend): then the set is in form
//! `0x02` or `0x03`, and after the positions come a bitmap over the `k`
//! followed partitions (bit `i % 8` of byte `i / 8` set when the `i`-th
//! followed partition has a witness) and each present witness, big-endian,
//! in partition order. `bitmap(P)` is the same bitmap over all P
//! partitions, naming the followed ones. Without any witness the cursor is
//! in form `0x00` or `0x01`, as before witnesses existed.
//!
//! Varints are unsigned LEB128. `base` is the smallest `ms` among the
//! positions; then, partition by partition in ascending order, the entry
//! id's `ms` as a delta from `base` and its `seq`. Entry ids that Valkey
//! generates put every partition within a few bytes of the others, so a
//! position costs about 5 bytes, 9 with its witness (a partition still at
//! `0-0` costs one, and lengthens the others' deltas to 6–7). Without
//! witnesses, with every `ms` below 2^48 (the year 10889) and every `seq`
//! below 2^28, a cursor following all of P = 256 partitions takes at most
//! 2,822 bytes (3,763 characters of text), and one following any subset of
//! them at most 3,068 bytes (4,091 characters). With a witness in every
//! partition, ids within 2^35 ms (about a year) of each other and every
//! `seq` below 2^14, at most 2,855 bytes (3,807 characters) over all
//! P = 256 partitions, and under 3,900 characters for any subset.
//! Whatever the ids and witnesses, a cursor stays within 6,189 bytes
//! (8,252 characters): within the text limit of
//! [`StreamCursor`]'s `FromStr` ([`MAX_CURSOR_TEXT`](crate::cursor::MAX_CURSOR_TEXT)),
//! so every cursor this module encodes can be parsed back.
//!
//! # Invariants
//!
//! - A [`PartitionedPosition`] has 2 ≤ P ≤ [`MAX_PARTITIONS`] and follows a
//!   non-empty set of distinct partitions below P, with one entry id each.
//! - The encoding is canonical (the full set as `0x00`, `base` the smallest
//!   `ms`, shortest varints, nothing trailing) and decoding accepts only
//!   canonical bytes: equal positions have equal cursors, byte for byte.
//! - Decoding never panics: any malformed input is an `InvalidCursor` that
//!   says what is wrong.
//!
//! # Order
//!
//! Partitions are independent streams, so these positions are partially
//! ordered ([`PartialOrd`], and `StreamCursor::position_cmp` on the
//! cursors): one is before another when it is at or before it in every
//! partition, and neither is when each is ahead in some partition, or when
//! they differ in P or in the partitions they follow. Their bytes do not
//! sort by position.

use std::cmp::Ordering;

use super::varint;
use super::{
    in_message, CursorStart, StreamCursor, ValkeyPosition, BEGINNING_BYTE, VALKEY_BYTE,
    VALKEY_PARTITIONED_BYTE,
};
use crate::error::EngineError;
use crate::event::Family;

/// The most partitions a family can be split into.
pub const MAX_PARTITIONS: u16 = 256;

const SET_ALL: u8 = 0x00;
const SET_LISTED: u8 = 0x01;
const SET_ALL_WITNESSED: u8 = 0x02;
const SET_LISTED_WITNESSED: u8 = 0x03;

/// How many partition numbers an error message lists before abbreviating.
const LISTED_IN_ERRORS: usize = 8;

/// One entry id per followed partition of a family split into P partitions:
/// the position of a partitioned Valkey cursor.
///
/// ```
/// use ff_core::event::Family;
/// use ff_core::cursor::codec::{
///     decode_valkey_partitioned, encode_valkey_partitioned, CursorStart, PartitionedPosition,
///     ValkeyPosition,
/// };
///
/// let at = |ms, seq| ValkeyPosition { ms, seq };
/// let mut position = PartitionedPosition::all_at(4, at(0, 0)).unwrap();
/// position.set_position(2, at(1_700_000_000_000, 5)).unwrap();
/// let cursor = encode_valkey_partitioned(Family::Completion, &position);
/// let back = decode_valkey_partitioned(&cursor, Family::Completion, 4, None).unwrap();
/// assert_eq!(back, CursorStart::After(position.clone()));
/// // A subscription that follows only partition 2 resumes from its entry.
/// let only = decode_valkey_partitioned(&cursor, Family::Completion, 4, Some(&[2])).unwrap();
/// let CursorStart::After(only) = only else { unreachable!() };
/// assert_eq!(only.iter().collect::<Vec<_>>(), [(2, at(1_700_000_000_000, 5))]);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PartitionedPosition {
    count: u16,
    /// Ascending by partition, distinct, each below `count`, never empty.
    entries: Vec<(u16, ValkeyPosition)>,
    /// The witness of each entry's position, in the order of `entries`.
    witnesses: Vec<Option<u32>>,
}

impl PartitionedPosition {
    /// A position over `count` partitions with the given entry id per
    /// followed partition (in any order). Refused: a `count` outside
    /// 2..=[`MAX_PARTITIONS`], no partition, a partition at or above
    /// `count`, a partition given twice.
    pub fn new(
        count: u16,
        positions: impl IntoIterator<Item = (u16, ValkeyPosition)>,
    ) -> Result<Self, EngineError> {
        check_count(count).map_err(EngineError::validation)?;
        let mut entries: Vec<(u16, ValkeyPosition)> = positions.into_iter().collect();
        entries.sort_unstable_by_key(|&(p, _)| p);
        if entries.is_empty() {
            return Err(EngineError::validation(
                "a partitioned position follows at least one partition",
            ));
        }
        if let Some(&(p, _)) = entries.iter().find(|&&(p, _)| p >= count) {
            return Err(EngineError::validation(format!(
                "partition {p} does not exist in a family of {count} partitions (0 to {})",
                count - 1
            )));
        }
        if let Some(pair) = entries.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(EngineError::validation(format!(
                "partition {} is given twice",
                pair[0].0
            )));
        }
        let witnesses = vec![None; entries.len()];
        Ok(Self {
            count,
            entries,
            witnesses,
        })
    }

    /// Every one of `count` partitions at the same entry id (`0-0`: before
    /// anything).
    pub fn all_at(count: u16, position: ValkeyPosition) -> Result<Self, EngineError> {
        Self::new(count, (0..count).map(|p| (p, position)))
    }

    /// P, the number of partitions the family is split into.
    pub fn count(&self) -> u16 {
        self.count
    }

    /// How many partitions this position follows.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Always `false`: a position follows at least one partition.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether it follows all P partitions.
    pub fn follows_all(&self) -> bool {
        self.entries.len() == usize::from(self.count)
    }

    /// The followed partitions, ascending.
    pub fn partitions(&self) -> impl Iterator<Item = u16> + '_ {
        self.entries.iter().map(|&(p, _)| p)
    }

    /// Each followed partition with its entry id, ascending by partition.
    pub fn iter(&self) -> impl Iterator<Item = (u16, ValkeyPosition)> + '_ {
        self.entries.iter().copied()
    }

    /// The entry id of `partition`; `None` when it is not followed.
    pub fn position(&self, partition: u16) -> Option<ValkeyPosition> {
        self.index_of(partition).map(|i| self.entries[i].1)
    }

    /// The witness of `partition`'s position: a digest of the entry it
    /// names, when it carries one.
    pub fn witness(&self, partition: u16) -> Option<u32> {
        self.index_of(partition).and_then(|i| self.witnesses[i])
    }

    /// Sets the entry id of a followed `partition` (after an event of that
    /// partition was yielded), without a witness; a partition it does not
    /// follow is refused.
    pub fn set_position(
        &mut self,
        partition: u16,
        position: ValkeyPosition,
    ) -> Result<(), EngineError> {
        self.set_witnessed(partition, position, None)
    }

    /// Sets the entry id of a followed `partition` and the witness of the
    /// entry it names (`None` when it names none); a partition it does not
    /// follow is refused.
    pub fn set_witnessed(
        &mut self,
        partition: u16,
        position: ValkeyPosition,
        witness: Option<u32>,
    ) -> Result<(), EngineError> {
        match self.index_of(partition) {
            Some(i) => {
                self.entries[i].1 = position;
                self.witnesses[i] = witness;
                Ok(())
            }
            None => Err(EngineError::validation(format!(
                "partition {partition} is not one this position follows ({})",
                partition_list(self.partitions())
            ))),
        }
    }

    /// The same positions for `partitions` only (ascending or not); an
    /// `InvalidCursor` naming what is missing when it does not follow them all.
    pub fn restrict_to(&self, partitions: &[u16]) -> Result<Self, EngineError> {
        let mut missing: Vec<u16> = partitions
            .iter()
            .copied()
            .filter(|&p| self.index_of(p).is_none())
            .collect();
        if !missing.is_empty() {
            missing.sort_unstable();
            missing.dedup();
            return Err(EngineError::invalid_cursor(format!(
                "it follows partitions {} of {}, but not {}",
                partition_list(self.partitions()),
                self.count,
                partition_list(missing.iter().copied()),
            )));
        }
        let mut wanted = partitions.to_vec();
        wanted.sort_unstable();
        wanted.dedup();
        let mut narrowed = Self::new(
            self.count,
            wanted
                .iter()
                .map(|&p| (p, self.position(p).expect("checked above"))),
        )?;
        narrowed.witnesses = wanted.iter().map(|&p| self.witness(p)).collect();
        Ok(narrowed)
    }

    fn index_of(&self, partition: u16) -> Option<usize> {
        self.entries
            .binary_search_by_key(&partition, |&(p, _)| p)
            .ok()
    }

    /// The canonical bytes of this position in a cursor of `family`.
    fn encode(&self, family: Family) -> Vec<u8> {
        let base = self.entries.iter().map(|(_, id)| id.ms).min().unwrap_or(0);
        let mut out = Vec::with_capacity(16 + self.entries.len() * 8);
        out.push(VALKEY_PARTITIONED_BYTE);
        out.push(family.cursor_byte());
        varint::put(&mut out, u64::from(self.count));
        let witnessed = self.witnesses.iter().any(Option::is_some);
        if witnessed {
            if self.follows_all() {
                out.push(SET_ALL_WITNESSED);
            } else {
                out.push(SET_LISTED_WITNESSED);
                out.extend(bitmap(
                    usize::from(self.count),
                    self.partitions().map(usize::from),
                ));
            }
        } else if self.follows_all() {
            out.push(SET_ALL);
        } else {
            out.push(SET_LISTED);
            varint::put(&mut out, self.entries.len() as u64);
            let mut previous: Option<u16> = None;
            for p in self.partitions() {
                let gap = match previous {
                    None => u64::from(p),
                    Some(q) => u64::from(p - q - 1),
                };
                varint::put(&mut out, gap);
                previous = Some(p);
            }
        }
        varint::put(&mut out, base);
        for (_, id) in self.iter() {
            varint::put(&mut out, id.ms - base);
            varint::put(&mut out, id.seq);
        }
        if witnessed {
            let present = self
                .witnesses
                .iter()
                .enumerate()
                .filter(|(_, w)| w.is_some());
            out.extend(bitmap(self.len(), present.map(|(i, _)| i)));
            for w in self.witnesses.iter().flatten() {
                out.extend_from_slice(&w.to_be_bytes());
            }
        }
        out
    }

    /// Parses the bytes after the family byte; the error says what is wrong.
    fn parse(mut rest: &[u8]) -> Result<Self, String> {
        let input = &mut rest;
        let count = number(input, "partition count")?;
        let count = u16::try_from(count)
            .ok()
            .filter(|&c| check_count(c).is_ok())
            .ok_or_else(|| {
                format!("names {count} partitions; a partitioned family has 2 to {MAX_PARTITIONS}")
            })?;
        let mut witnessed = false;
        let partitions: Vec<u16> = match input.split_first() {
            None => return Err("ends before its partition set".into()),
            Some((&SET_ALL, rest)) => {
                *input = rest;
                (0..count).collect()
            }
            Some((&SET_ALL_WITNESSED, rest)) => {
                *input = rest;
                witnessed = true;
                (0..count).collect()
            }
            Some((&SET_LISTED_WITNESSED, rest)) => {
                *input = rest;
                witnessed = true;
                let listed = take_bitmap(input, usize::from(count), "partition set")?;
                if listed.is_empty() || listed.len() >= usize::from(count) {
                    return Err(format!(
                        "lists {} of its {count} partitions; a listed set has 1 to {}",
                        listed.len(),
                        count - 1
                    ));
                }
                listed.into_iter().map(|p| p as u16).collect()
            }
            Some((&SET_LISTED, rest)) => {
                *input = rest;
                let k = number(input, "number of partitions")?;
                if k == 0 || k >= u64::from(count) {
                    return Err(format!(
                        "lists {k} of its {count} partitions; a listed set has 1 to {}",
                        count - 1
                    ));
                }
                let mut listed = Vec::with_capacity(k as usize);
                let mut next = 0u64;
                for _ in 0..k {
                    let gap = number(input, "partition set")?;
                    let p = next.saturating_add(gap);
                    if p >= u64::from(count) {
                        return Err(format!(
                            "lists a partition beyond the {count} it has (corrupted?)"
                        ));
                    }
                    listed.push(p as u16);
                    next = p + 1;
                }
                listed
            }
            Some((other, _)) => return Err(format!("has unknown partition-set form {other}")),
        };
        let base = number(input, "base")?;
        let mut entries = Vec::with_capacity(partitions.len());
        for p in partitions {
            let delta = number(input, "positions")?;
            let seq = number(input, "positions")?;
            let ms = base
                .checked_add(delta)
                .ok_or("has an entry id beyond 64 bits")?;
            entries.push((p, ValkeyPosition { ms, seq }));
        }
        let mut witnesses = vec![None; entries.len()];
        if witnessed {
            let present = take_bitmap(input, entries.len(), "witness bitmap")?;
            if present.is_empty() {
                return Err("is not in canonical form (a witnessed form without a witness)".into());
            }
            for i in present {
                let (w, rest) = input
                    .split_first_chunk::<4>()
                    .ok_or("ends inside a witness")?;
                witnesses[i] = Some(u32::from_be_bytes(*w));
                *input = rest;
            }
        }
        if !input.is_empty() {
            return Err(format!("has {} bytes after its last position", input.len()));
        }
        if entries.iter().all(|(_, id)| id.ms != base) {
            return Err("is not in canonical form (its base is not its smallest time)".into());
        }
        Ok(Self {
            count,
            entries,
            witnesses,
        })
    }

    /// Whether the two positions name the same entry id in some partition
    /// with different witnesses: different histories, not comparable.
    fn witnesses_conflict(&self, other: &Self) -> bool {
        self.iter()
            .zip(other.iter())
            .zip(self.witnesses.iter().zip(&other.witnesses))
            .any(|(((_, a), (_, b)), (x, y))| a == b && x.is_some() && y.is_some() && x != y)
    }
}

/// `ceil(len / 8)` bytes with bit `i % 8` of byte `i / 8` set for each
/// `i` in `set` (each below `len`).
fn bitmap(len: usize, set: impl Iterator<Item = usize>) -> Vec<u8> {
    let mut bytes = vec![0u8; len.div_ceil(8)];
    for i in set {
        bytes[i / 8] |= 1 << (i % 8);
    }
    bytes
}

/// Reads a [`bitmap`] over `len` items: the set ones, ascending. Bits at
/// or beyond `len` must be clear (canonical form).
fn take_bitmap(input: &mut &[u8], len: usize, what: &str) -> Result<Vec<usize>, String> {
    let n = len.div_ceil(8);
    if input.len() < n {
        return Err(format!("ends inside its {what}"));
    }
    let (bytes, rest) = input.split_at(n);
    *input = rest;
    let mut set = Vec::new();
    for (byte_index, &byte) in bytes.iter().enumerate() {
        for bit in 0..8 {
            if byte & (1 << bit) != 0 {
                let i = byte_index * 8 + bit;
                if i >= len {
                    return Err(format!("has bits beyond its {len} items in its {what}"));
                }
                set.push(i);
            }
        }
    }
    Ok(set)
}

impl PartialOrd for PartitionedPosition {
    /// `Some` only for positions over the same P and partition set where one
    /// is at or before the other in every partition, and no partition is at
    /// the same entry id with two different witnesses. Witnesses do not
    /// order positions: one missing is no difference.
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        if self.count != other.count
            || !self.partitions().eq(other.partitions())
            || self.witnesses_conflict(other)
        {
            return None;
        }
        let (mut before, mut after) = (false, false);
        for ((_, a), (_, b)) in self.iter().zip(other.iter()) {
            match a.cmp(&b) {
                Ordering::Less => before = true,
                Ordering::Greater => after = true,
                Ordering::Equal => {}
            }
        }
        match (before, after) {
            (false, false) => Some(Ordering::Equal),
            (true, false) => Some(Ordering::Less),
            (false, true) => Some(Ordering::Greater),
            (true, true) => None,
        }
    }
}

/// Reads one varint; the error names `what` was being read.
fn number(input: &mut &[u8], what: &str) -> Result<u64, String> {
    varint::take(input).map_err(|e| format!("{} at its {what}", e.describe()))
}

fn check_count(count: u16) -> Result<(), String> {
    if (2..=MAX_PARTITIONS).contains(&count) {
        Ok(())
    } else {
        Err(format!(
            "a partitioned family has 2 to {MAX_PARTITIONS} partitions, not {count}"
        ))
    }
}

/// `0, 1, 2` — or the first few and how many in all.
fn partition_list(partitions: impl Iterator<Item = u16>) -> String {
    let all: Vec<u16> = partitions.collect();
    let shown: Vec<String> = all
        .iter()
        .take(LISTED_IN_ERRORS)
        .map(u16::to_string)
        .collect();
    if all.len() > LISTED_IN_ERRORS {
        format!("{}, … ({} in all)", shown.join(", "), all.len())
    } else {
        shown.join(", ")
    }
}

/// Encode a partitioned Valkey cursor for `position` on `family`.
pub fn encode_valkey_partitioned(family: Family, position: &PartitionedPosition) -> StreamCursor {
    StreamCursor::new(position.encode(family))
}

/// Decodes a `0x04` cursor of any family; `Err` says what is wrong with it.
pub(super) fn parse_cursor(bytes: &[u8]) -> Result<(Family, PartitionedPosition), String> {
    match bytes {
        [VALKEY_PARTITIONED_BYTE, family, rest @ ..] => {
            let family = Family::from_cursor_byte(*family)
                .ok_or_else(|| format!("names unknown family byte {family}"))?;
            Ok((family, PartitionedPosition::parse(rest)?))
        }
        [VALKEY_PARTITIONED_BYTE] => Err("ends after its format byte".into()),
        _ => Err("is not a partitioned Valkey cursor".into()),
    }
}

/// The partial order of two `0x04` cursors (see the module docs).
pub(crate) fn compare_cursors(a: &[u8], b: &[u8]) -> Option<Ordering> {
    let (family_a, a) = parse_cursor(a).ok()?;
    let (family_b, b) = parse_cursor(b).ok()?;
    if family_a != family_b {
        return None;
    }
    a.partial_cmp(&b)
}

/// The componentwise later of two `0x04` cursors over the same family, P
/// and partition set; `None` otherwise.
pub(crate) fn join_cursors(a: &[u8], b: &[u8]) -> Option<StreamCursor> {
    let (family, a) = parse_cursor(a).ok()?;
    let (family_b, b) = parse_cursor(b).ok()?;
    if family != family_b
        || a.count != b.count
        || !a.partitions().eq(b.partitions())
        || a.witnesses_conflict(&b)
    {
        return None;
    }
    let mut joined = a.clone();
    for (i, ((p, x), (_, y))) in a.iter().zip(b.iter()).enumerate() {
        let witness = match x.cmp(&y) {
            Ordering::Less => b.witnesses[i],
            Ordering::Greater => a.witnesses[i],
            Ordering::Equal => a.witnesses[i].or(b.witnesses[i]),
        };
        joined
            .set_witnessed(p, x.max(y), witness)
            .expect("a followed partition");
    }
    Some(encode_valkey_partitioned(family, &joined))
}

/// The partition count a cursor names, when it is a readable `0x04` cursor.
pub(super) fn partition_count(cursor: &StreamCursor) -> Option<u16> {
    parse_cursor(cursor.as_bytes()).ok().map(|(_, p)| p.count)
}

/// Decode a cursor given to a Valkey backend that splits `family` into
/// `partitions` partitions, for a subscription that follows `follow` (all
/// partitions when `None`).
///
/// Tail and beginning pass through. A cursor that follows more partitions
/// than `follow` is narrowed to them. `InvalidCursor`, saying which: another
/// backend's or a single-stream (`0x01`) cursor, another family's, a
/// malformed one, one issued for another partition count, one that does not
/// follow every partition in `follow`.
pub fn decode_valkey_partitioned(
    cursor: &StreamCursor,
    family: Family,
    partitions: u16,
    follow: Option<&[u16]>,
) -> Result<CursorStart<PartitionedPosition>, EngineError> {
    let b = cursor.as_bytes();
    match b.first() {
        None => return Ok(CursorStart::Tail),
        Some(&BEGINNING_BYTE) => {
            // Refuses a beginning byte with anything after it.
            super::decode_positioned(cursor, VALKEY_PARTITIONED_BYTE, family)?;
            return Ok(CursorStart::Beginning);
        }
        Some(&VALKEY_PARTITIONED_BYTE) => {}
        Some(&VALKEY_BYTE) => {
            return Err(EngineError::invalid_cursor(format!(
                "cursor {cursor} is a single-stream Valkey cursor (partitions=1), but this \
                 backend splits each family into {partitions} partitions: use a cursor issued \
                 with partitions={partitions}, or start from the tail or the beginning"
            )))
        }
        Some(&other) => return Err(super::wrong_backend(cursor, other, VALKEY_PARTITIONED_BYTE)),
    }
    let (found, position) = parse_cursor(b).map_err(|what| {
        EngineError::invalid_cursor(format!(
            "partitioned Valkey cursor {} {what}: pass a cursor exactly as ff printed it",
            in_message(cursor)
        ))
    })?;
    if found != family {
        return Err(EngineError::invalid_cursor(format!(
            "cursor {} belongs to the {found} stream, not {family}",
            in_message(cursor)
        )));
    }
    if position.count != partitions {
        return Err(EngineError::invalid_cursor(format!(
            "cursor {} was issued for {} partitions, but this backend splits each family into \
             {partitions}: use a cursor issued with partitions={partitions}, or start from the \
             tail or the beginning",
            in_message(cursor),
            position.count
        )));
    }
    match follow {
        None => position.restrict_to(&(0..partitions).collect::<Vec<_>>()),
        Some(follow) => position.restrict_to(follow),
    }
    .map(CursorStart::After)
    .map_err(|e| match e {
        EngineError::InvalidCursor { detail } => EngineError::invalid_cursor(format!(
            "cursor {} does not cover this subscription's partitions: {detail}; use a cursor \
             of a subscription that followed them, or start from the tail or the beginning",
            in_message(cursor)
        )),
        other => other,
    })
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::super::{decode_positioned, encode_positioned, MEMORY_BYTE, POSTGRES_BYTE};
    use super::*;
    use crate::cursor::MAX_CURSOR_TEXT;

    fn encode_valkey(family: Family, ms: u64, seq: u64) -> StreamCursor {
        encode_positioned(VALKEY_BYTE, family, ms, seq)
    }

    fn encode_postgres(family: Family, xid: u64, id: u64) -> StreamCursor {
        encode_positioned(POSTGRES_BYTE, family, xid, id)
    }

    fn decode_valkey(
        cursor: &StreamCursor,
        family: Family,
    ) -> Result<CursorStart<(u64, u64)>, EngineError> {
        decode_positioned(cursor, VALKEY_BYTE, family)
    }

    const NOW_MS: u64 = 1_763_920_000_000;

    fn at(ms: u64, seq: u64) -> ValkeyPosition {
        ValkeyPosition { ms, seq }
    }

    fn assert_invalid<T: std::fmt::Debug>(r: Result<T, EngineError>, needles: &[&str]) {
        match r {
            Err(EngineError::InvalidCursor { detail }) => {
                for needle in needles {
                    assert!(detail.contains(needle), "{detail:?} lacks {needle:?}");
                }
            }
            other => panic!("expected InvalidCursor, got {other:?}"),
        }
    }

    /// An entry id drawn from one of the shapes real cursors take.
    fn random_id(rng: &mut impl Rng) -> ValkeyPosition {
        match rng.random_range(0..5) {
            0 => at(0, 0),
            1 => at(
                NOW_MS + rng.random_range(0..3_600_000),
                rng.random_range(0..4),
            ),
            2 => at(
                NOW_MS - rng.random_range(0..NOW_MS),
                rng.random_range(0..1 << 20),
            ),
            3 => at(rng.random(), rng.random()),
            _ => at(u64::MAX - rng.random_range(0..3), u64::MAX),
        }
    }

    fn random_position(rng: &mut impl Rng) -> PartitionedPosition {
        let count = rng.random_range(2..=MAX_PARTITIONS);
        let density = rng.random_range(0.0..1.0);
        let mut partitions: Vec<u16> = (0..count).filter(|_| rng.random_bool(density)).collect();
        if partitions.is_empty() {
            partitions.push(rng.random_range(0..count));
        }
        let mut position =
            PartitionedPosition::new(count, partitions.iter().map(|&p| (p, random_id(rng))))
                .unwrap();
        // Half of them with a witness in some partitions.
        let witnessed = rng.random_range(0.0..1.0) * f64::from(u8::from(rng.random_bool(0.5)));
        for p in partitions {
            if rng.random_bool(witnessed) {
                let at = position.position(p).unwrap();
                position.set_witnessed(p, at, Some(rng.random())).unwrap();
            }
        }
        position
    }

    fn random_family(rng: &mut impl Rng) -> Family {
        Family::ALL[rng.random_range(0..Family::ALL.len())]
    }

    /// Decoding `bytes` must not panic; when it succeeds, the bytes must be
    /// the canonical encoding of what was decoded.
    fn decode_is_total_and_canonical(bytes: &[u8]) {
        let cursor = StreamCursor::new(bytes.to_vec());
        for family in Family::ALL.iter().copied() {
            match decode_valkey_partitioned(&cursor, family, 8, None) {
                Ok(CursorStart::After(position)) => {
                    assert_eq!(encode_valkey_partitioned(family, &position), cursor)
                }
                Ok(CursorStart::Tail) => assert!(bytes.is_empty()),
                Ok(CursorStart::Beginning) => assert_eq!(bytes, [BEGINNING_BYTE]),
                Err(EngineError::InvalidCursor { detail }) => assert!(!detail.is_empty()),
                Err(other) => panic!("{bytes:?}: expected InvalidCursor, got {other:?}"),
            }
        }
        if let Ok((family, position)) = parse_cursor(bytes) {
            assert_eq!(position.encode(family), bytes);
        }
        let _ = decode_valkey(&cursor, Family::Completion);
        let _ = cursor.position_cmp(&cursor);
    }

    #[test]
    fn positions_round_trip_through_bytes_and_text() {
        let mut rng = StdRng::seed_from_u64(0x04_c0de);
        for _ in 0..2_000 {
            let family = random_family(&mut rng);
            let position = random_position(&mut rng);
            let cursor = encode_valkey_partitioned(family, &position);
            assert_eq!(cursor.format_byte(), Some(VALKEY_PARTITIONED_BYTE));
            assert_eq!(cursor.family(), Some(family));
            let text = cursor.to_string();
            assert!(text.len() <= MAX_CURSOR_TEXT, "{} characters", text.len());
            let parsed: StreamCursor = text.parse().unwrap();
            assert_eq!(parsed, cursor);
            let follow: Vec<u16> = position.partitions().collect();
            let back = decode_valkey_partitioned(&parsed, family, position.count(), Some(&follow));
            assert_eq!(back.unwrap(), CursorStart::After(position.clone()));
            assert_eq!(cursor.position_cmp(&parsed), Some(Ordering::Equal));
            if position.follows_all() {
                let all = decode_valkey_partitioned(&parsed, family, position.count(), None);
                assert_eq!(all.unwrap(), CursorStart::After(position));
            }
        }
    }

    #[test]
    fn random_bytes_never_panic_and_decode_only_canonical_cursors() {
        let mut rng = StdRng::seed_from_u64(0xf022);
        for _ in 0..20_000 {
            let len = rng.random_range(0..48);
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            // Most inputs start like a partitioned cursor, so the fuzzing
            // reaches past the format and family bytes.
            if len > 0 && rng.random_bool(0.8) {
                bytes[0] = VALKEY_PARTITIONED_BYTE;
            }
            if len > 1 && rng.random_bool(0.8) {
                bytes[1] = rng.random_range(1..=4);
            }
            if len > 2 && rng.random_bool(0.5) {
                bytes[2] = rng.random_range(0..12);
            }
            if len > 3 && rng.random_bool(0.5) {
                bytes[3] = rng.random_range(0..2);
            }
            decode_is_total_and_canonical(&bytes);
        }
    }

    #[test]
    fn damaged_cursors_never_panic_and_decode_only_canonical_cursors() {
        let mut rng = StdRng::seed_from_u64(0xda3a);
        let mut decoded = 0;
        for _ in 0..5_000 {
            let family = random_family(&mut rng);
            let mut bytes = encode_valkey_partitioned(family, &random_position(&mut rng))
                .as_bytes()
                .to_vec();
            match rng.random_range(0..4) {
                0 => bytes.truncate(rng.random_range(0..bytes.len())),
                1 => bytes.push(rng.random()),
                2 => {
                    for _ in 0..rng.random_range(1..4) {
                        let i = rng.random_range(0..bytes.len());
                        bytes[i] = rng.random();
                    }
                }
                _ => {
                    let i = rng.random_range(2..bytes.len());
                    bytes[i] ^= 1 << rng.random_range(0..8);
                }
            }
            if parse_cursor(&bytes).is_ok() {
                decoded += 1;
            }
            decode_is_total_and_canonical(&bytes);
        }
        assert!(decoded > 0, "no damaged cursor was still well-formed");
    }

    #[test]
    fn random_pairs_compare_consistently_with_equality() {
        let mut rng = StdRng::seed_from_u64(0xc0);
        for _ in 0..2_000 {
            let count = rng.random_range(2..=6);
            let partitions: Vec<u16> = (0..count).filter(|_| rng.random_bool(0.7)).collect();
            if partitions.is_empty() {
                continue;
            }
            let pick = |rng: &mut StdRng| {
                PartitionedPosition::new(
                    count,
                    partitions
                        .iter()
                        .map(|&p| (p, at(rng.random_range(0..3), rng.random_range(0..2)))),
                )
                .unwrap()
            };
            let (a, b) = (pick(&mut rng), pick(&mut rng));
            let ordering = a.partial_cmp(&b);
            assert_eq!(ordering == Some(Ordering::Equal), a == b);
            assert_eq!(b.partial_cmp(&a), ordering.map(Ordering::reverse));
            let dominated = a.iter().zip(b.iter()).all(|((_, x), (_, y))| x <= y);
            assert_eq!(ordering.is_some_and(Ordering::is_le), dominated);
            let f = Family::Completion;
            let (ca, cb) = (
                encode_valkey_partitioned(f, &a),
                encode_valkey_partitioned(f, &b),
            );
            assert_eq!(ca.position_cmp(&cb), ordering);
        }
    }

    #[test]
    fn position_cmp_is_a_partial_order_by_partition() {
        let f = Family::LeaseHistory;
        let cursor = |positions: &[(u16, ValkeyPosition)], count| {
            encode_valkey_partitioned(
                f,
                &PartitionedPosition::new(count, positions.iter().copied()).unwrap(),
            )
        };
        let base = cursor(&[(0, at(5, 0)), (1, at(7, 1))], 2);
        let ahead_in_one = cursor(&[(0, at(5, 0)), (1, at(7, 2))], 2);
        let ahead_in_both = cursor(&[(0, at(6, 0)), (1, at(8, 0))], 2);
        let mixed = cursor(&[(0, at(9, 0)), (1, at(1, 0))], 2);
        assert_eq!(base.position_cmp(&base), Some(Ordering::Equal));
        assert_eq!(base.position_cmp(&ahead_in_one), Some(Ordering::Less));
        assert_eq!(ahead_in_both.position_cmp(&base), Some(Ordering::Greater));
        assert_eq!(base.position_cmp(&mixed), None, "neither dominates");
        assert_eq!(mixed.position_cmp(&base), None);
        let other_count = cursor(&[(0, at(5, 0)), (1, at(7, 1))], 3);
        assert_eq!(base.position_cmp(&other_count), None, "different P");
        let other_set = cursor(&[(0, at(5, 0)), (2, at(7, 1))], 3);
        let subset = cursor(&[(0, at(5, 0))], 3);
        assert_eq!(other_count.position_cmp(&other_set), None, "different sets");
        assert_eq!(other_count.position_cmp(&subset), None, "different sets");
        let other_family = encode_valkey_partitioned(
            Family::Completion,
            &PartitionedPosition::new(2, [(0, at(5, 0)), (1, at(7, 1))]).unwrap(),
        );
        assert_eq!(base.position_cmp(&other_family), None);
        assert_eq!(base.position_cmp(&encode_valkey(f, 5, 0)), None);
        let garbage = StreamCursor::new(vec![VALKEY_PARTITIONED_BYTE, f.cursor_byte(), 0xff]);
        assert_eq!(base.position_cmp(&garbage), None);
        assert_eq!(garbage.position_cmp(&garbage), None);
    }

    #[test]
    fn position_join_takes_the_later_entry_of_each_partition() {
        let f = Family::Completion;
        let cursor = |positions: &[(u16, ValkeyPosition)], count| {
            encode_valkey_partitioned(
                f,
                &PartitionedPosition::new(count, positions.iter().copied()).unwrap(),
            )
        };
        let a = cursor(&[(0, at(9, 0)), (1, at(1, 0))], 2);
        let b = cursor(&[(0, at(5, 0)), (1, at(7, 2))], 2);
        let both = cursor(&[(0, at(9, 0)), (1, at(7, 2))], 2);
        assert_eq!(a.position_join(&b), Some(both.clone()));
        assert_eq!(b.position_join(&a), Some(both.clone()));
        assert_eq!(both.position_join(&a), Some(both.clone()));
        assert_eq!(a.position_join(&a), Some(a.clone()));
        let other_count = cursor(&[(0, at(9, 0)), (1, at(1, 0))], 3);
        assert_eq!(a.position_join(&other_count), None, "different P");
        let subset = cursor(&[(0, at(9, 0))], 3);
        assert_eq!(other_count.position_join(&subset), None, "different sets");
        assert_eq!(a.position_join(&encode_valkey(f, 5, 0)), None);
        assert_eq!(a.position_join(&StreamCursor::beginning()), None);
        let garbage = StreamCursor::new(vec![VALKEY_PARTITIONED_BYTE, f.cursor_byte(), 0xff]);
        assert_eq!(a.position_join(&garbage), None);
    }

    #[test]
    fn witnesses_round_trip_and_order_nothing_but_conflicts() {
        let f = Family::Completion;
        let mut a = PartitionedPosition::new(4, [(1, at(5, 0)), (3, at(7, 1))]).unwrap();
        let plain = encode_valkey_partitioned(f, &a);
        assert_eq!(plain.as_bytes()[3], SET_LISTED, "no witness: the old form");
        a.set_witnessed(3, at(7, 1), Some(0xdead_beef)).unwrap();
        let witnessed = encode_valkey_partitioned(f, &a);
        assert_eq!(witnessed.as_bytes()[3], SET_LISTED_WITNESSED);
        let CursorStart::After(back) =
            decode_valkey_partitioned(&witnessed, f, 4, Some(&[1, 3])).unwrap()
        else {
            panic!("a position")
        };
        assert_eq!(back, a);
        assert_eq!(
            (back.witness(1), back.witness(3)),
            (None, Some(0xdead_beef))
        );
        let narrowed = back.restrict_to(&[3]).unwrap();
        assert_eq!(narrowed.witness(3), Some(0xdead_beef));

        // Same ids: equal whether or not one carries the witness; a
        // different witness at the same id is another history.
        assert_eq!(plain.position_cmp(&witnessed), Some(Ordering::Equal));
        let mut other = a.clone();
        other.set_witnessed(3, at(7, 1), Some(1)).unwrap();
        let other = encode_valkey_partitioned(f, &other);
        assert_eq!(witnessed.position_cmp(&other), None);
        assert_eq!(witnessed.position_join(&other), None);
        assert_eq!(plain.position_join(&witnessed), Some(witnessed.clone()));
        let mut later = a.clone();
        later.set_witnessed(1, at(6, 0), Some(9)).unwrap();
        let later = encode_valkey_partitioned(f, &later);
        assert_eq!(witnessed.position_cmp(&later), Some(Ordering::Less));
        assert_eq!(plain.position_cmp(&later), Some(Ordering::Less));

        let all = PartitionedPosition::all_at(2, at(5, 0)).unwrap();
        let mut all_w = all.clone();
        all_w.set_witnessed(0, at(5, 0), Some(7)).unwrap();
        let c = encode_valkey_partitioned(f, &all_w);
        assert_eq!(c.as_bytes()[3], SET_ALL_WITNESSED);
        assert_eq!(
            decode_valkey_partitioned(&c, f, 2, None).unwrap(),
            CursorStart::After(all_w)
        );
        // Forms with witnesses but none present, or bits beyond the set,
        // are not canonical.
        let malformed = |b: Vec<u8>, needle: &str| {
            assert_invalid(
                decode_valkey_partitioned(&StreamCursor::new(b), f, 2, None),
                &[needle],
            )
        };
        malformed(
            vec![
                VALKEY_PARTITIONED_BYTE,
                2,
                2,
                SET_ALL_WITNESSED,
                5,
                0,
                0,
                0,
                0,
                0,
            ],
            "without a witness",
        );
        malformed(
            vec![
                VALKEY_PARTITIONED_BYTE,
                2,
                2,
                SET_ALL_WITNESSED,
                5,
                0,
                0,
                0,
                0,
                4,
            ],
            "bits beyond",
        );
        malformed(
            vec![
                VALKEY_PARTITIONED_BYTE,
                2,
                2,
                SET_ALL_WITNESSED,
                5,
                0,
                0,
                0,
                0,
                1,
                0,
                0,
            ],
            "inside a witness",
        );
        malformed(
            vec![
                VALKEY_PARTITIONED_BYTE,
                2,
                2,
                SET_LISTED_WITNESSED,
                3,
                5,
                0,
                0,
                0,
                0,
                1,
            ],
            "lists 2 of its 2",
        );
    }

    #[test]
    fn a_cursor_of_256_partitions_stays_within_its_documented_size() {
        let f = Family::SignalDelivery;
        let text_len = |position: &PartitionedPosition| {
            let cursor = encode_valkey_partitioned(f, position);
            let text = cursor.to_string();
            assert_eq!(text.parse::<StreamCursor>().unwrap(), cursor);
            (cursor.as_bytes().len(), text.len())
        };
        // Typical: every partition written within the last hour.
        let mut rng = StdRng::seed_from_u64(256);
        let typical = PartitionedPosition::new(
            256,
            (0..256).map(|p| {
                (
                    p,
                    at(
                        NOW_MS - rng.random_range(0..3_600_000),
                        rng.random_range(0..3),
                    ),
                )
            }),
        )
        .unwrap();
        let (bytes, text) = text_len(&typical);
        assert!(text <= 2_048, "typical: {bytes} bytes, {text} characters");

        // The documented bound for ids below 2^48 ms and 2^28 seq: all
        // partitions, and the worst subset (255 of them).
        let big = |p: u16| at(if p == 0 { 1 << 42 } else { (1 << 48) - 1 }, (1 << 28) - 1);
        let all = PartitionedPosition::new(256, (0..256).map(|p| (p, big(p)))).unwrap();
        assert_eq!(text_len(&all), (2_822, 3_763));
        let subset = PartitionedPosition::new(256, (0..255).map(|p| (p, big(p)))).unwrap();
        assert_eq!(text_len(&subset), (3_068, 4_091));
        assert!(text_len(&subset).1 <= 4_096);

        // With a witness in every partition, typical ids stay well within
        // 4 KiB; the documented bound: ids within 2^35 ms of each other
        // (about a year), seq below 2^14, any subset.
        let witnessed = |mut position: PartitionedPosition| {
            for p in position.partitions().collect::<Vec<_>>() {
                let id = position.position(p).unwrap();
                position.set_witnessed(p, id, Some(u32::MAX)).unwrap();
            }
            position
        };
        let (bytes, text) = text_len(&witnessed(typical));
        assert!(
            text <= 3_200,
            "typical witnessed: {bytes} bytes, {text} characters"
        );
        let year = |p: u16| {
            at(
                NOW_MS + if p == 0 { 0 } else { (1 << 35) - 1 },
                (1 << 14) - 1,
            )
        };
        let all = PartitionedPosition::new(256, (0..256).map(|p| (p, year(p)))).unwrap();
        assert_eq!(text_len(&witnessed(all)), (2_855, 3_807));
        for subset in [(0..255).collect::<Vec<u16>>(), (1..256).collect()] {
            let s =
                PartitionedPosition::new(256, subset.into_iter().map(|p| (p, year(p)))).unwrap();
            let (bytes, text) = text_len(&witnessed(s));
            assert!(
                text <= 3_900,
                "a witnessed subset: {bytes} bytes, {text} characters"
            );
        }

        // Whatever the ids: still parseable.
        let huge = |p: u16| at(if p == 0 { (1 << 63) - 1 } else { u64::MAX }, u64::MAX);
        let worst = PartitionedPosition::new(256, (1..256).map(|p| (p, huge(p - 1)))).unwrap();
        let (bytes, text) = text_len(&worst);
        assert_eq!((bytes, text), (5_362, 7_150));
        assert!(text <= MAX_CURSOR_TEXT);
        let huge_all = PartitionedPosition::new(256, (0..256).map(|p| (p, huge(p)))).unwrap();
        assert_eq!(text_len(&witnessed(huge_all)), (6_181, 8_242));
        let (bytes, text) = text_len(&witnessed(worst));
        assert_eq!((bytes, text), (6_189, 8_252));
        assert!(text <= MAX_CURSOR_TEXT);
    }

    #[test]
    fn a_cursor_narrows_to_the_partitions_a_subscription_follows() {
        let f = Family::Completion;
        let position =
            PartitionedPosition::new(8, (0..8).map(|p| (p, at(100 + u64::from(p), 0)))).unwrap();
        let cursor = encode_valkey_partitioned(f, &position);
        let CursorStart::After(narrowed) =
            decode_valkey_partitioned(&cursor, f, 8, Some(&[6, 2, 2])).unwrap()
        else {
            panic!("expected a position");
        };
        assert_eq!(
            narrowed.iter().collect::<Vec<_>>(),
            [(2, at(102, 0)), (6, at(106, 0))]
        );
        assert!(!narrowed.follows_all());
        // The narrowed cursor resumes its own subscription, not a wider one.
        let narrow_cursor = encode_valkey_partitioned(f, &narrowed);
        assert!(narrow_cursor.as_bytes().len() < cursor.as_bytes().len());
        assert_invalid(
            decode_valkey_partitioned(&narrow_cursor, f, 8, None),
            &[
                "does not cover",
                "partitions 2, 6 of 8",
                "but not 0, 1, 3, 4, 5, 7",
            ],
        );
        assert_invalid(
            decode_valkey_partitioned(&narrow_cursor, f, 8, Some(&[2, 3])),
            &["but not 3"],
        );
    }

    #[test]
    fn cursors_of_another_count_backend_family_or_shape_are_invalid_and_say_which() {
        let f = Family::InstanceTags;
        let eight = PartitionedPosition::all_at(8, at(NOW_MS, 1)).unwrap();
        let cursor = encode_valkey_partitioned(f, &eight);
        assert_invalid(
            decode_valkey_partitioned(&cursor, f, 16, None),
            &["issued for 8 partitions", "into 16", "partitions=16"],
        );
        assert_invalid(
            decode_valkey(&cursor, f),
            &["partitioned Valkey cursor (partitions=8)", "partitions=1"],
        );
        assert_invalid(
            decode_valkey_partitioned(&encode_valkey(f, 1, 2), f, 8, None),
            &["single-stream", "partitions=1", "into 8"],
        );
        assert_invalid(
            decode_valkey_partitioned(&encode_postgres(f, 1, 2), f, 8, None),
            &["Postgres", "partitioned families"],
        );
        let memory = StreamCursor::new(vec![MEMORY_BYTE, f.cursor_byte()]);
        assert_invalid(decode_valkey_partitioned(&memory, f, 8, None), &["memory"]);
        assert_invalid(
            decode_valkey_partitioned(&cursor, Family::Completion, 8, None),
            &["instance-tags stream, not completion"],
        );
        assert_invalid(
            decode_valkey_partitioned(&StreamCursor::new(vec![0u8, 0]), f, 8, None),
            &["beginning"],
        );
        assert_eq!(
            decode_valkey_partitioned(&StreamCursor::beginning(), f, 8, None).unwrap(),
            CursorStart::Beginning
        );
        assert_eq!(
            decode_valkey_partitioned(&StreamCursor::empty(), f, 8, None).unwrap(),
            CursorStart::Tail
        );

        let bytes = cursor.as_bytes();
        let malformed = |b: Vec<u8>, needle: &str| {
            assert_invalid(
                decode_valkey_partitioned(&StreamCursor::new(b), f, 8, None),
                &[needle],
            )
        };
        malformed(bytes[..bytes.len() - 1].to_vec(), "ends inside a number");
        malformed([bytes, &[0]].concat(), "1 bytes after its last position");
        malformed(vec![VALKEY_PARTITIONED_BYTE], "ends after its format byte");
        malformed(vec![VALKEY_PARTITIONED_BYTE, 9], "unknown family byte 9");
        malformed(vec![VALKEY_PARTITIONED_BYTE, 4, 1, 0], "names 1 partitions");
        malformed(
            vec![VALKEY_PARTITIONED_BYTE, 4, 0x81, 0x02],
            "names 257 partitions",
        );
        malformed(vec![VALKEY_PARTITIONED_BYTE, 4, 0x88, 0x00], "overlong");
        malformed(
            vec![VALKEY_PARTITIONED_BYTE, 4, 8],
            "ends before its partition set",
        );
        malformed(
            vec![VALKEY_PARTITIONED_BYTE, 4, 8, 7],
            "unknown partition-set form 7",
        );
        // A listed set naming every partition is the non-canonical form of
        // "all"; none and too many are refused too.
        malformed(
            vec![VALKEY_PARTITIONED_BYTE, 4, 2, 1, 2, 0, 0],
            "lists 2 of its 2",
        );
        malformed(
            vec![VALKEY_PARTITIONED_BYTE, 4, 2, 1, 0],
            "lists 0 of its 2",
        );
        malformed(
            vec![VALKEY_PARTITIONED_BYTE, 4, 4, 1, 2, 2, 1],
            "beyond the 4",
        );
        // Base 5 while every position is later: not canonical.
        malformed(
            vec![VALKEY_PARTITIONED_BYTE, 4, 2, 0, 5, 1, 0, 1, 0],
            "canonical",
        );
        // Base plus delta beyond 64 bits.
        let mut overflow = vec![VALKEY_PARTITIONED_BYTE, 4, 2, 0];
        varint::put(&mut overflow, u64::MAX);
        overflow.extend_from_slice(&[0, 0, 1, 0]);
        malformed(overflow, "beyond 64 bits");
    }

    #[test]
    fn positions_refuse_impossible_partitions() {
        let p = at(1, 1);
        let invalid = |r: Result<PartitionedPosition, EngineError>, needle: &str| match r {
            Err(EngineError::Validation { detail }) => {
                assert!(detail.contains(needle), "{detail:?} lacks {needle:?}")
            }
            other => panic!("expected Validation, got {other:?}"),
        };
        invalid(PartitionedPosition::new(1, [(0, p)]), "2 to 256");
        invalid(PartitionedPosition::new(257, [(0, p)]), "not 257");
        invalid(PartitionedPosition::new(4, []), "at least one");
        invalid(
            PartitionedPosition::new(4, [(4, p)]),
            "partition 4 does not exist",
        );
        invalid(PartitionedPosition::new(4, [(1, p), (1, p)]), "given twice");
        let mut position = PartitionedPosition::new(4, [(3, p), (1, p)]).unwrap();
        assert_eq!(position.partitions().collect::<Vec<_>>(), [1, 3]);
        assert_eq!(position.len(), 2);
        assert!(!position.is_empty());
        position.set_position(3, at(9, 9)).unwrap();
        assert_eq!(position.position(3), Some(at(9, 9)));
        assert_eq!(position.position(2), None);
        match position.set_position(2, p) {
            Err(EngineError::Validation { detail }) => assert!(detail.contains("(1, 3)")),
            other => panic!("expected Validation, got {other:?}"),
        }
    }
}
