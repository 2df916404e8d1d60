//! Wake-ups of a consumer group: a connection of its own blocks in
//! `XREAD` on the group's wake-up stream, served by the node that owns the
//! group's slot.
//!
//! Invariant: no change is missed silently. The stream's last id is read
//! before [`watch`] returns, so every change after it is seen; a lost
//! connection is replaced (the slot's owner looked up again, as after a
//! failover) and yields a wake-up of its own, since the member re-reads
//! the group on every wake-up. The task ends when the stream is dropped.

use std::sync::Arc;
use std::time::Duration;

use ff_core::engine_error::EngineError;
use ff_core::group::GroupWake;
use redis::aio::MultiplexedConnection;
use redis::Value;
use tokio::sync::mpsc;

use crate::inner::Inner;

/// How long one `XREAD` blocks.
const BLOCK: Duration = Duration::from_secs(10);
/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

async fn connect(inner: &Inner, slot: u16) -> Result<MultiplexedConnection, redis::RedisError> {
    let addr = inner
        .router
        .owner(slot)
        .unwrap_or_else(|| inner.router.seed().clone());
    crate::connection::open(
        &inner.router.endpoint(&addr),
        &inner.subscription_client_name(),
        inner.config.connect_timeout,
        BLOCK + inner.config.command_timeout,
    )
    .await
}

/// The id of the newest entry in an `XREAD`/`XREVRANGE` reply, if any.
fn last_id(reply: &Value) -> Option<String> {
    fn walk(v: &Value, found: &mut Option<String>) {
        if let Value::Array(items) = v {
            if let [Value::BulkString(id), Value::Array(_)] = items.as_slice() {
                if id.contains(&b'-') {
                    *found = String::from_utf8(id.clone()).ok();
                    return;
                }
            }
            for item in items {
                walk(item, found);
            }
        } else if let Value::Map(pairs) = v {
            for (_, item) in pairs {
                walk(item, found);
            }
        }
    }
    let mut found = None;
    walk(reply, &mut found);
    found
}

/// Wake-ups from the stream `key` in `slot`.
pub(crate) async fn watch(
    inner: Arc<Inner>,
    key: String,
    slot: u16,
) -> Result<GroupWake, EngineError> {
    let context = format!(
        "watching consumer group wake-ups on {}",
        inner.url.redacted()
    );
    let mut conn = connect(&inner, slot)
        .await
        .map_err(|e| inner.fail(e, &context))?;
    let newest = conn
        .send_packed_command(
            redis::cmd("XREVRANGE")
                .arg(&key)
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(1),
        )
        .await
        .map_err(|e| inner.fail(e, &context))?;
    let mut after = last_id(&newest).unwrap_or_else(|| "0-0".to_owned());
    let (tx, rx) = mpsc::channel::<()>(1);
    tokio::spawn(async move {
        let mut conn = Some(conn);
        let mut backoff = Duration::from_millis(100);
        loop {
            let mut c = match conn.take() {
                Some(c) => c,
                None => {
                    tokio::select! {
                        () = tx.closed() => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    inner.router.schedule_refresh();
                    match connect(&inner, slot).await {
                        Ok(c) => {
                            backoff = Duration::from_millis(100);
                            let _ = tx.try_send(());
                            c
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "group wake-up connection could not reconnect");
                            continue;
                        }
                    }
                }
            };
            let read = redis::cmd("XREAD")
                .arg("BLOCK")
                .arg(BLOCK.as_millis() as u64)
                .arg("STREAMS")
                .arg(&key)
                .arg(&after)
                .clone();
            let reply = tokio::select! {
                () = tx.closed() => return,
                reply = c.send_packed_command(&read) => reply,
            };
            match reply {
                Ok(Value::Nil) => conn = Some(c),
                Ok(reply @ (Value::Array(_) | Value::Map(_))) => {
                    if let Some(id) = last_id(&reply) {
                        after = id;
                    }
                    let _ = tx.try_send(());
                    conn = Some(c);
                }
                Ok(_) | Err(_) => {}
            }
        }
    });
    Ok(Box::pin(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await?;
        Some(((), rx))
    })))
}
