//! The wake-up: `XREAD BLOCK … COUNT 1` after the scanned position. It only
//! says "something was appended" (or that the wait timed out); its entry is
//! ignored, and events are read by the paired read queued behind it.

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

/// Read the wait's reply (within `limit`): `true` when an entry woke it,
/// `false` when it timed out.
pub(crate) async fn read_wait(conn: &mut Conn, limit: Duration) -> Result<bool, ConnError> {
    let reply = tokio::time::timeout(limit, conn.read(limits::entries_reply(1)))
        .await
        .map_err(|_| ConnError::Timeout(limit))??
        .check()?;
    Ok(!matches!(reply.tokens.first(), Some(Token::Nil)))
}
