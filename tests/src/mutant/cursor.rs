//! The mutant backend's cursor: third-party format `0x80`, laid out like
//! the built-in ones — `0x80` ++ family ++ store epoch (u64 BE) ++
//! sequence (u64 BE) — through ff-core's `encode_positioned` /
//! `decode_positioned`, so positions compare by bytes within a family.

use ff_core::engine_error::EngineError;
use ff_core::stream_events::Family;
use ff_core::stream_subscribe::{decode_positioned, encode_positioned, CursorStart, StreamCursor};

use super::store::Store;
use super::Mutation;

/// Byte 0 of the mutant backend's cursors.
pub(crate) const FORMAT: u8 = 0x80;

/// The cursor of position `seq` of `family`.
pub(crate) fn encode(store: &Store, family: Family, seq: u64) -> StreamCursor {
    let seq = if store.has(Mutation::LittleEndianPositions) {
        seq.swap_bytes()
    } else {
        seq
    };
    encode_positioned(FORMAT, family, store.epoch, seq)
}

/// Where `cursor` says to start in `family`: `InvalidCursor` when it is
/// malformed or of another backend or family, `CursorExpired` when another
/// store issued it.
pub(crate) fn decode(
    store: &Store,
    family: Family,
    cursor: &StreamCursor,
) -> Result<CursorStart<u64>, EngineError> {
    let mut bytes = cursor.as_bytes().to_vec();
    if store.has(Mutation::AcceptsAnotherFamilysCursor) && bytes.len() > 1 && bytes[0] == FORMAT {
        bytes[1] = family.cursor_byte();
    }
    let (epoch, seq) = match decode_positioned(&StreamCursor::new(bytes), FORMAT, family)? {
        CursorStart::Tail => return Ok(CursorStart::Tail),
        CursorStart::Beginning => return Ok(CursorStart::Beginning),
        CursorStart::After(position) => position,
    };
    let seq = if store.has(Mutation::LittleEndianPositions) {
        seq.swap_bytes()
    } else {
        seq
    };
    if epoch != store.epoch && !store.has(Mutation::AcceptsAnotherInstancesCursor) {
        return Err(EngineError::CursorExpired {
            cursor: cursor.clone(),
            oldest: None,
            detail: "the cursor was issued by another store, whose history this one does not hold"
                .into(),
        });
    }
    Ok(CursorStart::After(seq))
}
