//! Whether a hub has seen a partitioned position, partition by partition.
//!
//! Invariant: [`each_partition`] holds only when, for every partition the
//! position follows, the hub saw that very entry (its id, and its witness
//! where both carry one) in that partition within its window. A merged
//! position of two hubs reading the same history in two interleavings
//! passes; one that names, in any partition, an entry the hub never
//! yielded (a lost history's) does not, whatever its bytes.

use ff_core::stream_events::Family;
use ff_core::stream_subscribe::{
    decode_valkey_partitioned, CursorStart, PartitionedPosition, StreamCursor, ValkeyPosition,
};

/// `true` when every partition of the `0x04` cursor `p` names an entry
/// found in the same partition of one of `seen` (the hub's positions,
/// latest first, down to its window's base).
pub(super) fn each_partition<'a>(
    family: Family,
    p: &StreamCursor,
    seen: impl Iterator<Item = &'a StreamCursor>,
) -> bool {
    let Some(p) = decode(family, p) else {
        return false;
    };
    let mut open: Vec<(u16, ValkeyPosition, Option<u32>)> = p
        .iter()
        .map(|(partition, at)| (partition, at, p.witness(partition)))
        .collect();
    for s in seen {
        let Some(s) = decode(family, s) else {
            continue;
        };
        if s.count() != p.count() {
            return false;
        }
        let mut passed = false;
        open.retain(|&(partition, at, witness)| match s.position(partition) {
            Some(there) if there == at => {
                let conflict = matches!(
                    (witness, s.witness(partition)),
                    (Some(a), Some(b)) if a != b
                );
                passed |= conflict;
                conflict
            }
            Some(there) if there < at => {
                passed = true;
                true
            }
            Some(_) => true,
            None => {
                passed = true;
                true
            }
        });
        if open.is_empty() {
            return true;
        }
        // The hub is already before `p` in some partition (or saw another
        // entry at its id): it never saw that partition's entry.
        if passed {
            return false;
        }
    }
    false
}

/// The position a `0x04` cursor names, with the partition count it
/// carries (`None`: not a readable partitioned position).
fn decode(family: Family, cursor: &StreamCursor) -> Option<PartitionedPosition> {
    let count = partition_count(cursor.as_bytes())?;
    match decode_valkey_partitioned(cursor, family, count, None).ok()? {
        CursorStart::After(position) => Some(position),
        _ => None,
    }
}

/// The partition count `P` of a `0x04` cursor: the unsigned LEB128 varint
/// after its format and family bytes.
fn partition_count(bytes: &[u8]) -> Option<u16> {
    let mut value: u64 = 0;
    for (i, &byte) in bytes.get(2..)?.iter().take(3).enumerate() {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return u16::try_from(value).ok();
        }
    }
    None
}
