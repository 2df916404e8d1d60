//! The wake-up: `XREAD BLOCK … COUNT 1` after the scanned position. It only
//! says "something was appended" (or that the wait timed out); its entry is
//! not delivered, and events are read by the paired read queued behind it.
//! The entry's id is checked, though: one at or before the position is a
//! protocol error, so a server that answers every wait at once with an old
//! entry is reconnected to (and, if it goes on, refused) rather than
//! spinning the subscription through reads that find nothing new.

use std::time::Duration;

use ff_core::stream_subscribe::ValkeyPosition;

use super::conn::{Conn, ConnError};
use crate::id;
use crate::limits;
use crate::resp::Token;

/// Queue a wait of at most `block` for an entry of `key` after `after`.
pub(crate) fn push_wait(conn: &mut Conn, key: &str, after: ValkeyPosition, block: Duration) {
    let ms = u64::try_from(block.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
        .to_string();
    let after = id::format(after);
    let args: [&[u8]; 8] = [
        b"XREAD",
        b"COUNT",
        b"1",
        b"BLOCK",
        ms.as_bytes(),
        b"STREAMS",
        key.as_bytes(),
        after.as_bytes(),
    ];
    conn.push(&args);
}

/// Read the reply (within `limit`) of the wait for an entry after
/// `after`: `true` when an entry woke it, `false` when it timed out.
pub(crate) async fn read_wait(
    conn: &mut Conn,
    after: ValkeyPosition,
    limit: Duration,
) -> Result<bool, ConnError> {
    let reply = tokio::time::timeout(limit, conn.read(limits::entries_reply(1)))
        .await
        .map_err(|_| ConnError::Timeout(limit))??
        .check()?;
    let t = &reply.tokens;
    if matches!(t.first(), Some(Token::Nil)) {
        return Ok(false);
    }
    // [[key, [[id, fields]]]]: one stream, at least one entry.
    let id = match t.get(..6) {
        Some(
            [Token::Array(1), Token::Array(2), Token::Bulk(_), Token::Array(n), Token::Array(2), Token::Bulk(id)],
        ) if *n >= 1 => id::parse(reply.bytes(id)),
        _ => None,
    };
    match id {
        Some(id) if id > after => Ok(true),
        Some(id) => Err(ConnError::Protocol(format!(
            "XREAD for entries after {} returned entry {}, which does not follow it (positions only move forward)",
            id::format(after),
            id::format(id)
        ))),
        None => Err(ConnError::Protocol(format!(
            "XREAD returned {:?}, not one stream's entries",
            t.first()
        ))),
    }
}
