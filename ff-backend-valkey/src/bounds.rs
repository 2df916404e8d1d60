//! What a family retains (`bounds`) and where to start for a point in
//! time (`cursor_at`) — per partition, combined into one cursor over all
//! of them (the single-stream cursor when there is one partition). A
//! position naming a retained entry carries its witness, as the cursors
//! publish returns and subscriptions yield do.

use ff_core::backend::StreamBounds;
use ff_core::engine_error::EngineError;
use ff_core::stream_events::Family;
use ff_core::stream_subscribe::{StreamCursor, ValkeyPosition};
use ff_core::types::TimestampMs;
use futures::future::try_join_all;
use redis::Value;

use crate::error::unexpected;
use crate::expiry;
use crate::id;
use crate::inner::Inner;
use crate::partition::Followed;
use crate::routing::{Retry, Transaction};
use crate::stream_info::{parse_state, stream_state};

/// The oldest resumable position and the newest entry of every partition.
pub(crate) async fn bounds(inner: &Inner, family: Family) -> Result<StreamBounds, EngineError> {
    let followed = Followed::all(family, inner.keys.partitions());
    let states = try_join_all(followed.partitions().iter().map(|&n| async move {
        let context = format!("reading the bounds of {}", inner.describe(family, n));
        stream_state(inner, family, n, &context).await
    }))
    .await?;
    let oldest: Vec<ValkeyPosition> = states.iter().map(expiry::oldest).collect();
    let head: Vec<ValkeyPosition> = states
        .iter()
        .map(|s| s.last.unwrap_or(s.last_generated))
        .collect();
    let head_witnesses: Vec<Option<u32>> = states
        .iter()
        .map(|s| s.last_witness.filter(|_| s.last.is_some()))
        .collect();
    Ok(StreamBounds::new(
        followed.encode(&oldest),
        followed.encode_witnessed(&head, &head_witnesses),
        Some(states.iter().map(|s| s.length).sum()),
    ))
}

/// In every partition, just before the first entry recorded at or after
/// `at`, or its newest id when there is none yet.
pub(crate) async fn cursor_at(
    inner: &Inner,
    family: Family,
    at: TimestampMs,
) -> Result<StreamCursor, EngineError> {
    let followed = Followed::all(family, inner.keys.partitions());
    let ms = u64::try_from(at.0).unwrap_or(0);
    let (positions, witnesses): (Vec<ValkeyPosition>, Vec<Option<u32>>) = try_join_all(
        followed
            .partitions()
            .iter()
            .map(|&n| position_at(inner, family, n, ms)),
    )
    .await?
    .into_iter()
    .unzip();
    Ok(followed.encode_witnessed(&positions, &witnesses))
}

/// In one partition: the position, and the witness of the entry it names
/// when it names one (the newest).
async fn position_at(
    inner: &Inner,
    family: Family,
    partition: u16,
    ms: u64,
) -> Result<(ValkeyPosition, Option<u32>), EngineError> {
    let key = inner.keys.stream(family, partition);
    let context = format!("finding time {ms} in {}", inner.describe(family, partition));
    let mut range = redis::cmd("XRANGE");
    range
        .arg(key)
        .arg(format!("{ms}-0"))
        .arg("+")
        .arg("COUNT")
        .arg(1);
    let mut info = redis::cmd("XINFO");
    info.arg("STREAM").arg(key);
    let reply = inner
        .router
        .transaction(
            inner.keys.slot(family, partition),
            &Transaction::new([range, info]),
            Retry::Idempotent,
        )
        .await
        .map(|(reply, _)| reply)
        .map_err(|e| inner.fail(e, &context))?;
    let Value::Array(parts) = reply else {
        return Err(unexpected(&context, format!("EXEC returned {reply:?}")));
    };
    let [Value::Array(found), info] = parts.as_slice() else {
        return Err(unexpected(&context, format!("EXEC returned {parts:?}")));
    };
    if let Some(first) = found.first() {
        let p = match first {
            Value::Array(parts) => match parts.first() {
                Some(Value::BulkString(b)) => id::parse(b),
                _ => None,
            },
            _ => None,
        }
        .ok_or_else(|| unexpected(&context, format!("XRANGE returned {first:?}")))?;
        return Ok((id::before(p), None));
    }
    // Only the newest id is needed here: no trim record is read.
    let state = parse_state(info, inner.account(), &context)?;
    let witness = state
        .last_witness
        .filter(|_| state.last == Some(state.last_generated));
    Ok((state.last_generated, witness))
}
