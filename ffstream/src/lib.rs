//! # ffstream: typed, resumable event streams over Valkey, Postgres or memory
//!
//! A service records a typed event for each state change (a lease is
//! acquired, an execution completes, a signal is delivered, a tag is
//! attached); consumers subscribe to a family, persist each event's
//! cursor, and after a crash or deploy resume exactly after the last
//! event they handled: nothing skipped, nothing repeated.
//!
//! [`connect`] opens the backend a URL names (`memory:`, `valkey://…`,
//! `postgres://…`) as one [`AnyBackend`] that subscribes, publishes and
//! stores cursors. Everything a consumer names is at this crate's root.
//!
//! ## Consume, persist, resume
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), ffstream::EngineError> {
//! use futures::StreamExt;
//! use ffstream::{
//!     CompletionOutcome, CursorStore, EventMeta, EventPublisher, ExecutionId, NewEvent,
//!     StreamBackend, StreamCursor, SubscriptionFilter,
//! };
//!
//! let backend = ffstream::connect("memory:").await?;
//! let mut published = Vec::new();
//! for _ in 0..3 {
//!     let draft = NewEvent::completion(ExecutionId::new(0), CompletionOutcome::Success);
//!     published.push(backend.publish(draft, EventMeta::new()).await?);
//! }
//!
//! // Start from the stored position, or from the beginning on a first run.
//! let start = backend.load("scheduler").await?.unwrap_or_else(StreamCursor::beginning);
//! let mut events = backend.subscribe_completion(start, &SubscriptionFilter::new()).await?;
//! for _ in 0..2 {
//!     let event = events.next().await.expect("a published event")?;
//!     // ... act on the event, then persist its cursor.
//!     backend.store("scheduler", &event.cursor).await?;
//! }
//! drop(events); // a crash, a deploy
//!
//! // Resume: exactly the events after the stored cursor.
//! let start = backend.load("scheduler").await?.expect("stored above");
//! let mut events = backend.subscribe_completion(start, &SubscriptionFilter::new()).await?;
//! let next = events.next().await.expect("the third event")?;
//! assert_eq!(next.cursor, published[2]);
//! # Ok(()) }
//! ```
//!
//! A `memory:` backend lives as long as the process, and so do its
//! cursors; with `valkey://` or `postgres://` the same code resumes across
//! restarts.
//!
//! ## A filtered consumer that persists checkpoints
//!
//! The typed subscriptions yield events only. A consumer whose filter
//! leaves most events out reads the delivery stream instead: its
//! [`DeliveryItem::Checkpoint`]s carry the position past the events it
//! skipped, so the stored cursor keeps moving (and stays inside
//! retention) while nothing matches. Every item's cursor resumes exactly
//! after that item.
//!
//! ```
//! use futures::StreamExt;
//! use ffstream::{
//!     AnyBackend, CursorStore, DeliveryItem, EngineError, Family, StreamBackend, StreamCursor,
//!     SubscriptionFilter,
//! };
//!
//! async fn forward_billing(backend: &AnyBackend) -> Result<(), EngineError> {
//!     let filter = SubscriptionFilter::new().with_namespace("billing");
//!     let start = backend.load("billing").await?.unwrap_or_else(StreamCursor::beginning);
//!     let mut items = backend.subscribe_family(Family::Completion, start, &filter).await?;
//!     while let Some(item) = items.next().await {
//!         let item = item?;
//!         match &item {
//!             DeliveryItem::Event { event, meta } => println!("{event:?} {meta:?}"),
//!             DeliveryItem::Corrupt { detail, .. } => eprintln!("skipped a bad entry: {detail}"),
//!             _ => {} // CaughtUp, Checkpoint: nothing to act on, a position to keep.
//!         }
//!         backend.store("billing", item.cursor()).await?;
//!     }
//!     Ok(())
//! }
//! ```
//!
//! ## Features
//!
//! | feature | backend | URL schemes |
//! |---|---|---|
//! | `memory` (default) | in-process (`memory` module) | `memory:` |
//! | `valkey` | Valkey streams (`valkey` module) | `valkey://`, `valkeys://`, `redis://`, `rediss://` |
//! | `postgres` | Postgres outbox rows (`postgres` module) | `postgres://`, `postgresql://` |
//! | `testkit` | the conformance suite a new backend runs (`testkit` module) | |
//!
//! ## Where to look next
//!
//! The root re-exports `ff-core`, the contract: [`event`] (the four
//! families), [`cursor`], [`filter`], [`error`], [`backend`] (the traits
//! and the delivery stream), [`group`] (consumer groups). Each backend's
//! own configuration and native paths (publishing inside a Postgres
//! transaction, a Valkey `MULTI`) are in its module, reached from a
//! handle through `AnyBackend::as_postgres` and its siblings.

mod any;
mod connect;

pub use any::AnyBackend;
pub use connect::connect;
pub use ff_core::*;

#[cfg(feature = "memory")]
pub use ff_backend_memory as memory;
#[cfg(feature = "postgres")]
pub use ff_backend_postgres as postgres;
#[cfg(feature = "valkey")]
pub use ff_backend_valkey as valkey;
