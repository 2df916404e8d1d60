//! # ff-core: the contract of typed, resumable event streams
//!
//! A service records a typed event for each state change — a lease is
//! acquired, an execution completes, a signal is delivered, a tag is
//! attached — and consumers subscribe to those events by family, persist
//! each event's opaque [`StreamCursor`], and resume after a crash exactly
//! after the last event they handled.
//!
//! This crate holds the contract only; it does no network I/O. Backends
//! (`ff-backend-memory`, `ff-backend-valkey`, `ff-backend-postgres`)
//! implement its traits; the `ffstream` crate opens any of them from a URL
//! as one handle.
//!
//! A consumer needs only the names at the crate root. It subscribes,
//! handles each event, persists the event's cursor, and on restart resumes
//! from the stored cursor:
//!
//! ```
//! use futures::StreamExt;
//! use ff_core::{CursorStore, EngineError, StreamBackend, StreamCursor, SubscriptionFilter};
//!
//! async fn run(store: &(impl StreamBackend + CursorStore)) -> Result<(), EngineError> {
//!     // Resume exactly after the last handled event (the beginning on a first run).
//!     let start = store.load("scheduler").await?.unwrap_or_else(StreamCursor::beginning);
//!     let mut events = store.subscribe_completion(start, &SubscriptionFilter::new()).await?;
//!     while let Some(event) = events.next().await {
//!         let event = event?;
//!         println!("{} finished: {:?}", event.execution_id, event.outcome);
//!         store.store("scheduler", &event.cursor).await?;
//!     }
//!     Ok(())
//! }
//! ```
//!
//! A filtered consumer that persists positions reads the delivery stream
//! ([`StreamBackend::subscribe_family`]), whose [`DeliveryItem::Checkpoint`]s
//! keep its position moving across events the filter left out.
//!
//! ## Modules
//!
//! - [`types`] — ids ([`ExecutionId`], ...).
//! - [`event`] — the four families, their kinds, drafts for publishing,
//!   JSON, and the shared record decoder.
//! - [`cursor`] — the cursor; [`cursor::codec`] builds and reads its bytes
//!   (for backend authors).
//! - [`filter`] — [`SubscriptionFilter`].
//! - [`error`] — [`EngineError`].
//! - [`redact`] — one URL redactor, so no credential reaches a message.
//! - [`backend`] — [`StreamBackend`], [`EventPublisher`], [`CursorStore`]
//!   and the delivery stream.
//! - [`group`] — consumer groups: units, fenced leases, the member driver.
//! - `testkit` (feature `testkit`): the conformance suite every backend runs.
//!
//! [`stream_events`], [`stream_subscribe`] and [`engine_error`] are the
//! same modules under the paths of the original design, so code written
//! against those paths keeps compiling.

pub mod backend;
pub mod cursor;
pub mod error;
pub mod event;
pub mod filter;
pub mod group;
pub mod redact;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod types;

pub use backend::{
    CursorStore, DeliveryItem, DeliveryStream, EventPublisher, StreamBackend, StreamBounds,
};
pub use cursor::StreamCursor;
pub use error::EngineError;
pub use event::{
    CompletionEvent, CompletionOutcome, CompletionSubscription, EventKind, EventMeta, Family,
    InstanceTagEvent, InstanceTagSubscription, LeaseHistoryEvent, LeaseHistorySubscription,
    NewEvent, SignalDeliveryEffect, SignalDeliveryEvent, SignalDeliverySubscription, StreamEvent,
};
pub use filter::SubscriptionFilter;
pub use types::{ExecutionId, LeaseId, SignalId, TimestampMs, WaitpointId, WorkerInstanceId};

/// [`event`] under its original-design path, `ff_core::stream_events`.
pub mod stream_events {
    pub use crate::event::*;
}

/// [`cursor`] and [`cursor::codec`] under their original-design path,
/// `ff_core::stream_subscribe`. The codec of a built-in backend's own
/// format is in that backend's crate (`cursor_codec`).
pub mod stream_subscribe {
    pub use crate::cursor::codec::*;
    pub use crate::cursor::*;
}

/// [`error`] under its original-design path, `ff_core::engine_error`.
pub mod engine_error {
    pub use crate::error::*;
}
