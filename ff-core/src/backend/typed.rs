//! Narrowing a delivery stream to one family's typed events.

use std::pin::Pin;

use futures::{stream, Stream, StreamExt};

use crate::backend::{DeliveryItem, DeliveryStream};
use crate::error::EngineError;
use crate::event::FamilyEvent;

/// Keep only `E` events of a delivery stream, each with its metadata
/// moved into it: `Corrupt` items become non-terminal `Err(Corrupt)`,
/// markers are dropped, and the stream ends after the first terminal error.
pub fn typed_subscription<E: FamilyEvent>(
    inner: DeliveryStream,
) -> Pin<Box<dyn Stream<Item = Result<E, EngineError>> + Send>> {
    let out = stream::unfold(Some(inner), |state| async move {
        let mut inner = state?;
        loop {
            match inner.next().await? {
                Ok(DeliveryItem::Event { event, meta }) => {
                    let family = event.family();
                    match E::from_stream_event(event.with_meta(meta)) {
                        Some(e) => return Some((Ok(e), Some(inner))),
                        None => {
                            let err = EngineError::Backend {
                                backend: "subscription",
                                detail: format!(
                                    "a {family} event arrived on the {} stream",
                                    E::FAMILY
                                ),
                            };
                            return Some((Err(err), None));
                        }
                    }
                }
                Ok(DeliveryItem::Corrupt { cursor, detail }) => {
                    return Some((Err(EngineError::Corrupt { cursor, detail }), Some(inner)))
                }
                Ok(_) => continue,
                Err(e) if e.is_terminal() => return Some((Err(e), None)),
                Err(e) => return Some((Err(e), Some(inner))),
            }
        }
    });
    Box::pin(out)
}
