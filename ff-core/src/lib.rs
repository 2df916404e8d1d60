//! # ff-core: the contract of typed, resumable event streams
//!
//! A service records a typed event for each state change — a lease is
//! acquired, an execution completes, a signal is delivered, a tag is
//! attached — and consumers subscribe to those events by family, persist
//! each event's opaque [`StreamCursor`](stream_subscribe::StreamCursor), and
//! resume after a crash exactly after the last event they handled.
//!
//! This crate holds the contract only; it does no network I/O. Backends
//! (`ff-backend-memory`, `ff-backend-valkey`, `ff-backend-postgres`)
//! implement its traits.
//!
//! - [`types`] — ids ([`ExecutionId`](types::ExecutionId), ...).
//! - [`stream_events`] — the four families, their kinds, drafts for
//!   publishing, JSON, and the shared record decoder.
//! - [`stream_subscribe`] — the cursor and its per-backend codecs.
//! - [`filter`] — [`SubscriptionFilter`](filter::SubscriptionFilter).
//! - [`engine_error`] — [`EngineError`](engine_error::EngineError).
//! - [`redact`] — one URL redactor, so no credential reaches a message.
//! - [`backend`] — [`StreamBackend`](backend::StreamBackend),
//!   [`EventPublisher`](backend::EventPublisher),
//!   [`CursorStore`](backend::CursorStore) and the delivery stream.
//! - [`group`] — consumer groups: units, fenced leases, the member driver.
//! - `testkit` (feature `testkit`): the conformance suite every backend runs.
//!
//! ```
//! use ff_core::stream_events::{CompletionOutcome, EventMeta, NewEvent};
//! use ff_core::stream_subscribe::{decode_memory, encode_memory, CursorStart};
//! use ff_core::stream_events::Family;
//! use ff_core::types::{ExecutionId, TimestampMs};
//!
//! // A producer drafts an event; the backend assigns its cursor and time.
//! let draft = NewEvent::completion(ExecutionId::new(0), CompletionOutcome::Success);
//! let cursor = encode_memory(Family::Completion, 1, 1);
//! let event = draft.into_event(cursor.clone(), TimestampMs::now());
//! assert_eq!(event.cursor(), &cursor);
//! // Cursors travel as text and are checked against backend and family.
//! let text = cursor.to_string();
//! let back = text.parse().unwrap();
//! assert!(matches!(decode_memory(&back, Family::Completion), Ok(CursorStart::After(_))));
//! assert!(decode_memory(&back, Family::LeaseHistory).is_err());
//! ```

pub mod backend;
pub mod engine_error;
pub mod filter;
pub mod group;
pub mod redact;
pub mod stream_events;
pub mod stream_subscribe;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod types;
