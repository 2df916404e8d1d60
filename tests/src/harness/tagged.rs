//! Events told apart by a tag `n`: publish them by name and read the
//! names back, for tests that compare what a cursor resumes to.

use ff_core::backend::{DeliveryItem, EventPublisher, StreamBackend};
use ff_core::engine_error::EngineError;
use ff_core::filter::SubscriptionFilter;
use ff_core::stream_events::{CompletionOutcome, EventMeta, Family, NewEvent};
use ff_core::stream_subscribe::StreamCursor;
use ff_core::testkit::support::{next_item, Sub, ITEM_DEADLINE};
use ff_core::types::ExecutionId;

/// Publish one completion per name, tagged `n = name`, one at a time;
/// their cursors in order. Panics when a publish fails.
pub async fn publish_named(publisher: &dyn EventPublisher, names: &[&str]) -> Vec<StreamCursor> {
    let mut out = Vec::new();
    for n in names {
        out.push(
            publisher
                .publish(
                    NewEvent::completion(ExecutionId::new(1), CompletionOutcome::Success),
                    EventMeta::new().with_tag("n", *n),
                )
                .await
                .expect("publish"),
        );
    }
    out
}

/// Subscribe to `family` from `from` and collect the events' `n` tags
/// until `CaughtUp` (each item within the suite's item deadline).
pub async fn read_names_from(
    backend: &dyn StreamBackend,
    family: Family,
    from: &StreamCursor,
) -> Result<Vec<String>, EngineError> {
    let mut sub = Sub::new(
        backend
            .subscribe_family(family, from.clone(), &SubscriptionFilter::default())
            .await?,
    );
    let mut out = Vec::new();
    loop {
        match next_item(&mut sub, ITEM_DEADLINE, "events until CaughtUp").await {
            DeliveryItem::Event { meta, .. } => out.push(meta.tags["n"].clone()),
            DeliveryItem::CaughtUp { .. } => return Ok(out),
            _ => {}
        }
    }
}
