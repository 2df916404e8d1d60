//! The four typed event families, their kinds, drafts for publishing,
//! the JSON shape, and the shared decoder for stored records.

mod completion;
mod draft;
mod family;
mod instance_tags;
mod json;
mod lease_history;
pub mod record;
mod signal_delivery;
mod stream_event;

use std::pin::Pin;

use futures::Stream;

pub use completion::{CompletionEvent, CompletionOutcome};
pub use draft::{EventMeta, NewEvent};
pub use family::{
    CompletionKind, EventKind, Family, InstanceTagKind, LeaseHistoryKind, SignalDeliveryKind,
    UnknownName,
};
pub use instance_tags::InstanceTagEvent;
pub use json::{event_from_json, event_to_json, new_event_from_json, new_event_to_json};
pub use lease_history::LeaseHistoryEvent;
pub use signal_delivery::{SignalDeliveryEffect, SignalDeliveryEvent};
pub use stream_event::{FamilyEvent, StreamEvent};

use crate::error::EngineError;

/// A typed LeaseHistory subscription.
pub type LeaseHistorySubscription =
    Pin<Box<dyn Stream<Item = Result<LeaseHistoryEvent, EngineError>> + Send>>;
/// A typed Completion subscription.
pub type CompletionSubscription =
    Pin<Box<dyn Stream<Item = Result<CompletionEvent, EngineError>> + Send>>;
/// A typed SignalDelivery subscription.
pub type SignalDeliverySubscription =
    Pin<Box<dyn Stream<Item = Result<SignalDeliveryEvent, EngineError>> + Send>>;
/// A typed InstanceTags subscription.
pub type InstanceTagSubscription =
    Pin<Box<dyn Stream<Item = Result<InstanceTagEvent, EngineError>> + Send>>;

/// One draft of every event shape (with every optional field set and, where
/// possible, one with them unset): for tests and the conformance suite.
#[doc(hidden)]
pub fn sample_drafts() -> Vec<NewEvent> {
    use crate::types::{ExecutionId, LeaseId, SignalId, WaitpointId, WorkerInstanceId};
    let exec = ExecutionId::new(3);
    let worker = || WorkerInstanceId::parse("worker-a").ok();
    vec![
        NewEvent::lease_acquired(exec, Some(LeaseId::new()), worker()),
        NewEvent::lease_acquired(exec, None, None),
        NewEvent::lease_renewed(exec, Some(LeaseId::new()), worker()),
        NewEvent::lease_expired(exec, Some(LeaseId::new()), worker()),
        NewEvent::lease_reclaimed(exec, Some(LeaseId::new()), worker()),
        NewEvent::lease_revoked(exec, Some(LeaseId::new()), "operator-7"),
        NewEvent::completion(exec, CompletionOutcome::Success),
        NewEvent::completion(exec, CompletionOutcome::Failure),
        NewEvent::completion(exec, CompletionOutcome::Cancelled),
        NewEvent::completion(exec, CompletionOutcome::Other("timed_out".into())),
        NewEvent::signal_delivery(
            exec,
            SignalId::new(),
            Some(WaitpointId::new()),
            Some("svc-a".into()),
            SignalDeliveryEffect::Satisfied,
        ),
        NewEvent::signal_delivery(
            exec,
            SignalId::new(),
            None,
            None,
            SignalDeliveryEffect::Buffered,
        ),
        NewEvent::signal_delivery(
            exec,
            SignalId::new(),
            None,
            None,
            SignalDeliveryEffect::Deduped,
        ),
        NewEvent::signal_delivery(
            exec,
            SignalId::new(),
            None,
            None,
            SignalDeliveryEffect::Other("rerouted".into()),
        ),
        NewEvent::tag_attached(exec, "hot"),
        NewEvent::tag_cleared(exec, "hot"),
    ]
}
