//! [`CursorStore`] on Valkey: one hash, `{prefix}cursors`, mapping consumer
//! names to cursor text. `HSET` is atomic, so the last writer wins.

use ff_core::backend::validate_consumer_name;
use ff_core::engine_error::EngineError;
use ff_core::stream_subscribe::StreamCursor;
use redis::Value;

use crate::error::unexpected;
use crate::inner::Inner;
use crate::routing::slot::key_slot;
use crate::routing::Retry;

fn cursors_slot(inner: &Inner) -> u16 {
    key_slot(inner.keys.cursors().as_bytes())
}

/// The stored cursor of consumer `name`.
pub(crate) async fn load(inner: &Inner, name: &str) -> Result<Option<StreamCursor>, EngineError> {
    validate_consumer_name(name)?;
    let context = format!(
        "loading the cursor of {name:?} from {}",
        inner.url.redacted()
    );
    let reply = inner
        .router
        .command(
            cursors_slot(inner),
            redis::cmd("HGET").arg(inner.keys.cursors()).arg(name),
            Retry::Idempotent,
        )
        .await
        .map_err(|e| inner.fail(e, &context))?;
    match reply {
        Value::Nil => Ok(None),
        Value::BulkString(b) => {
            let text =
                std::str::from_utf8(&b).map_err(|_| unexpected(&context, "cursor is not UTF-8"))?;
            text.parse()
                .map(Some)
                .map_err(|e| unexpected(&context, format!("stored cursor is not a cursor ({e})")))
        }
        Value::ServerError(e) => Err(inner.fail(e.into(), &context)),
        other => Err(unexpected(&context, format!("HGET returned {other:?}"))),
    }
}

/// Store `cursor` for consumer `name`.
pub(crate) async fn store(
    inner: &Inner,
    name: &str,
    cursor: &StreamCursor,
) -> Result<(), EngineError> {
    validate_consumer_name(name)?;
    let context = format!("storing the cursor of {name:?} in {}", inner.url.redacted());
    // Writing the same value twice is harmless: safe to resend.
    let reply = inner
        .router
        .command(
            cursors_slot(inner),
            redis::cmd("HSET")
                .arg(inner.keys.cursors())
                .arg(name)
                .arg(cursor.to_string()),
            Retry::Idempotent,
        )
        .await
        .map_err(|e| inner.fail(e, &context))?;
    match reply {
        Value::ServerError(e) => Err(inner.fail(e.into(), &context)),
        _ => Ok(()),
    }
}
