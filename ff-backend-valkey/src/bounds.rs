//! What a family's stream retains (`bounds`) and where to start for a
//! point in time (`cursor_at`).

use ff_core::backend::StreamBounds;
use ff_core::engine_error::EngineError;
use ff_core::stream_events::Family;
use ff_core::stream_subscribe::{encode_valkey, StreamCursor, ValkeyPosition};
use ff_core::types::TimestampMs;
use redis::Value;

use crate::error::unexpected;
use crate::expiry;
use crate::id;
use crate::inner::Inner;
use crate::stream_info::{parse_state, stream_state};

fn cursor(family: Family, p: ValkeyPosition) -> StreamCursor {
    encode_valkey(family, p.ms, p.seq)
}

/// The oldest resumable position and the newest entry.
pub(crate) async fn bounds(inner: &Inner, family: Family) -> Result<StreamBounds, EngineError> {
    let context = format!("reading the bounds of {}", inner.describe(family));
    let state = stream_state(inner, family, &context).await?;
    Ok(StreamBounds::new(
        cursor(family, expiry::oldest(&state)),
        cursor(family, state.last.unwrap_or(state.last_generated)),
        Some(state.length),
    ))
}

/// Just before the first entry recorded at or after `at`; the newest id
/// when there is none yet.
pub(crate) async fn cursor_at(
    inner: &Inner,
    family: Family,
    at: TimestampMs,
) -> Result<StreamCursor, EngineError> {
    let key = inner.keys.stream(family);
    let context = format!("finding time {} in {}", at.0, inner.describe(family));
    let ms = u64::try_from(at.0).unwrap_or(0);
    let mut pipe = redis::pipe();
    pipe.atomic()
        .cmd("XRANGE")
        .arg(key)
        .arg(format!("{ms}-0"))
        .arg("+")
        .arg("COUNT")
        .arg(1)
        .cmd("XINFO")
        .arg("STREAM")
        .arg(key);
    let reply = inner
        .conn
        .transaction(&pipe)
        .await
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
        return Ok(cursor(family, id::before(p)));
    }
    // Only the newest id is needed here: no trim record was read.
    let state = parse_state(info, &Value::Nil, inner.account(), &context)?;
    Ok(cursor(family, state.last_generated))
}
