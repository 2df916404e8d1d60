//! Subscribing: resolve where to start (once, at subscribe time), then hand
//! the work to a [`pump`] task feeding a bounded channel.
//!
//! - [`conn`]: the subscription's own connection (lean RESP2), which no
//!   other subscription or command shares;
//! - [`read`]: reads paired with `XINFO STREAM` in one transaction;
//! - [`wakeup`]: the `XREAD BLOCK` wake-up;
//! - [`pump`]: catch-up with read-ahead, live waits, markers, reconnection;
//! - [`subscription`]: the consumer's end.

mod conn;
mod pump;
mod read;
mod subscription;
mod wakeup;

use std::sync::Arc;

use ff_core::backend::DeliveryStream;
use ff_core::engine_error::EngineError;
use ff_core::filter::SubscriptionFilter;
use ff_core::stream_events::Family;
use ff_core::stream_subscribe::{decode_valkey, CursorStart, StreamCursor};
use tokio::sync::mpsc;

use crate::expiry;
use crate::inner::Inner;
use crate::stream_info;
use pump::{Pump, Start};
use subscription::Subscription;

/// Batches buffered between the pump and the consumer. With one more
/// being decoded and one page in flight, a subscription holds at most
/// about four read batches, whatever the backlog.
const CHANNEL_BATCHES: usize = 1;

/// Subscribe to `family` exactly after `cursor`.
pub(crate) async fn subscribe(
    inner: &Arc<Inner>,
    family: Family,
    cursor: StreamCursor,
    filter: &SubscriptionFilter,
) -> Result<DeliveryStream, EngineError> {
    filter.validate_for(family)?;
    let start = decode_valkey(&cursor, family)?;
    let context = format!("subscribing to {}", inner.describe(family, 0));
    let state = stream_info::stream_state(inner, family, 0, &context).await?;
    let start = match start {
        CursorStart::Tail => Start::Tail(state.last_generated),
        CursorStart::Beginning => Start::Beginning {
            head: state.last_generated,
        },
        CursorStart::After(position) => {
            expiry::judge(position, &state).map_err(|e| expiry::to_error(family, position, e))?;
            Start::After {
                position,
                cursor,
                head: state.last_generated,
            }
        }
    };
    let (tx, rx) = mpsc::channel(CHANNEL_BATCHES);
    let pump = Pump::new(inner.clone(), family, filter.clone(), start, tx);
    let task = tokio::spawn(pump.run());
    Ok(Box::pin(Subscription::new(rx, task)))
}
