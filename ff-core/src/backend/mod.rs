//! The traits a backend implements and consumers call: [`StreamBackend`]
//! (subscribe), [`EventPublisher`] (append) and [`CursorStore`] (persist a
//! consumer's position), plus the delivery stream they are built on.
//!
//! A backend implements one family-generic method,
//! [`StreamBackend::subscribe_family`]; the four typed methods consumers
//! call (`subscribe_completion`, ...) are provided on top of it, so no
//! backend can lack a family. [`StreamBackend::resolve_cursor`] answers,
//! without subscribing, what that method would make of a cursor: only a
//! backend judges a cursor, and layers that share subscriptions ask it.

mod delivery;
mod reconnect;
mod trace;
mod typed;

use std::sync::Arc;

use async_trait::async_trait;

pub use delivery::{DeliveryItem, DeliveryStream};
pub use reconnect::{Backoff, ReconnectPolicy, DEFAULT_JITTER_PERCENT};
pub use trace::subscription_span;
pub use typed::typed_subscription;

use crate::cursor::StreamCursor;
use crate::error::EngineError;
use crate::event::{
    CompletionOutcome, CompletionSubscription, EventMeta, Family, InstanceTagSubscription,
    LeaseHistorySubscription, NewEvent, SignalDeliveryEffect, SignalDeliverySubscription,
};
use crate::filter::SubscriptionFilter;
use crate::group::GroupStore;
use crate::types::TimestampMs;

/// What a family's stream currently retains.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamBounds {
    /// Subscribing from this cursor yields the oldest retained event first.
    pub oldest: StreamCursor,
    /// The newest event's cursor (subscribing from it yields only later
    /// events); equal to `oldest` when nothing is retained.
    pub head: StreamCursor,
    /// How many events are retained, where the backend knows cheaply.
    pub retained: Option<u64>,
}

impl StreamBounds {
    /// Bounds from their parts.
    pub fn new(oldest: StreamCursor, head: StreamCursor, retained: Option<u64>) -> Self {
        Self {
            oldest,
            head,
            retained,
        }
    }
}

/// A source of typed, resumable event streams.
///
/// ```no_run
/// # async fn demo(backend: &dyn ff_core::backend::StreamBackend) -> Result<(), ff_core::error::EngineError> {
/// use futures::StreamExt;
/// use ff_core::filter::SubscriptionFilter;
/// use ff_core::cursor::StreamCursor;
/// let mut sub = backend
///     .subscribe_completion(StreamCursor::beginning(), &SubscriptionFilter::default())
///     .await?;
/// while let Some(event) = sub.next().await {
///     let event = event?;
///     println!("{} {:?} at {}", event.execution_id, event.outcome, event.cursor);
/// }
/// # Ok(()) }
/// ```
#[async_trait]
pub trait StreamBackend: Send + Sync {
    /// Short backend name (`memory`, `valkey`, `postgres`).
    fn backend_name(&self) -> &'static str;

    /// Subscribe to one family's delivery stream, exactly after `cursor`
    /// (tail when empty, everything retained for `beginning()`).
    /// Malformed or foreign cursors fail here with `InvalidCursor`; a bad
    /// filter with `Validation`.
    async fn subscribe_family(
        &self,
        family: Family,
        cursor: StreamCursor,
        filter: &SubscriptionFilter,
    ) -> Result<DeliveryStream, EngineError>;

    /// Judge `cursor` as an unfiltered [`subscribe_family`] from it would,
    /// without opening a subscription, and answer the position that
    /// subscription would start exactly after: the resolved tail for the
    /// empty cursor, `beginning()` for `beginning()`, and for a position
    /// the one the backend resumes after — the cursor itself, or an
    /// earlier one where the backend deliberately includes more (a
    /// Postgres cursor at or after the oldest open transaction is rewound
    /// to the tail start; a partitioned Valkey cursor per partition).
    /// Refuses exactly what subscribing refuses: `CursorExpired` (retention,
    /// a history the cursor does not belong to) or `InvalidCursor`.
    ///
    /// Only a backend can judge a cursor: a layer that places readers on a
    /// shared subscription (the HTTP gateway) asks here, and never admits
    /// a cursor because its bytes sort inside what it has read.
    ///
    /// [`subscribe_family`]: StreamBackend::subscribe_family
    async fn resolve_cursor(
        &self,
        family: Family,
        cursor: StreamCursor,
    ) -> Result<StreamCursor, EngineError>;

    /// What `family`'s stream retains now.
    async fn bounds(&self, family: Family) -> Result<StreamBounds, EngineError>;

    /// A cursor from which subscribing yields `family`'s events recorded at
    /// or after `at` (for "start from an hour ago").
    ///
    /// Only retained events can be started from: when retention (a trim,
    /// a prune, an eviction) has already removed events recorded at or
    /// after `at`, the cursor starts at the oldest retained event, as
    /// subscribing from `bounds().oldest` does, and no `CursorExpired` is
    /// reported — every backend answers so. A caller that must know
    /// whether events since `at` are gone compares `at` with the time of
    /// the oldest retained event (the first one read from
    /// `bounds().oldest`).
    async fn cursor_at(&self, family: Family, at: TimestampMs)
        -> Result<StreamCursor, EngineError>;

    /// The store of this backend's consumer groups
    /// ([`group`](crate::group)); `Unavailable` where the backend keeps
    /// none.
    fn group_store(&self) -> Result<Arc<dyn GroupStore>, EngineError> {
        Err(EngineError::unavailable(format!(
            "consumer groups on the {} backend",
            self.backend_name()
        )))
    }

    /// Typed LeaseHistory events. `Corrupt` entries surface as
    /// non-terminal errors; checkpoints are dropped (a filtered consumer
    /// that persists positions should use [`StreamBackend::subscribe_family`]).
    async fn subscribe_lease_history(
        &self,
        cursor: StreamCursor,
        filter: &SubscriptionFilter,
    ) -> Result<LeaseHistorySubscription, EngineError> {
        let stream = self
            .subscribe_family(Family::LeaseHistory, cursor, filter)
            .await?;
        Ok(typed_subscription(stream))
    }

    /// Typed Completion events (see [`StreamBackend::subscribe_lease_history`]).
    async fn subscribe_completion(
        &self,
        cursor: StreamCursor,
        filter: &SubscriptionFilter,
    ) -> Result<CompletionSubscription, EngineError> {
        let stream = self
            .subscribe_family(Family::Completion, cursor, filter)
            .await?;
        Ok(typed_subscription(stream))
    }

    /// Typed SignalDelivery events (see [`StreamBackend::subscribe_lease_history`]).
    async fn subscribe_signal_delivery(
        &self,
        cursor: StreamCursor,
        filter: &SubscriptionFilter,
    ) -> Result<SignalDeliverySubscription, EngineError> {
        let stream = self
            .subscribe_family(Family::SignalDelivery, cursor, filter)
            .await?;
        Ok(typed_subscription(stream))
    }

    /// Typed InstanceTags events (see [`StreamBackend::subscribe_lease_history`]).
    async fn subscribe_instance_tags(
        &self,
        cursor: StreamCursor,
        filter: &SubscriptionFilter,
    ) -> Result<InstanceTagSubscription, EngineError> {
        let stream = self
            .subscribe_family(Family::InstanceTags, cursor, filter)
            .await?;
        Ok(typed_subscription(stream))
    }
}

/// Appends events. The backend assigns each event's cursor and time.
#[async_trait]
pub trait EventPublisher: Send + Sync {
    /// Append a batch, all-or-none (events may be of different families);
    /// returns each event's cursor in order.
    async fn publish_batch(
        &self,
        events: Vec<(NewEvent, EventMeta)>,
    ) -> Result<Vec<StreamCursor>, EngineError>;

    /// Append one event and return its cursor.
    async fn publish(&self, event: NewEvent, meta: EventMeta) -> Result<StreamCursor, EngineError> {
        let mut cursors = self.publish_batch(vec![(event, meta)]).await?;
        cursors.pop().ok_or_else(|| EngineError::Backend {
            backend: "publisher",
            detail: "publish returned no cursor".into(),
        })
    }
}

/// Persists consumers' positions by name; last writer wins.
#[async_trait]
pub trait CursorStore: Send + Sync {
    /// The stored cursor for consumer `name`, if any.
    async fn load(&self, name: &str) -> Result<Option<StreamCursor>, EngineError>;

    /// Store `cursor` for consumer `name`, replacing any earlier one.
    async fn store(&self, name: &str, cursor: &StreamCursor) -> Result<(), EngineError>;
}

/// Longest accepted consumer name, in bytes.
pub const MAX_CONSUMER_NAME_LEN: usize = 200;

/// Check a consumer name for a [`CursorStore`]: non-empty, at most
/// [`MAX_CONSUMER_NAME_LEN`] bytes, no control characters.
pub fn validate_consumer_name(name: &str) -> Result<(), EngineError> {
    if name.is_empty() || name.len() > MAX_CONSUMER_NAME_LEN || name.chars().any(char::is_control) {
        return Err(EngineError::validation(format!(
            "consumer name {:?} must be 1..={MAX_CONSUMER_NAME_LEN} bytes without control characters",
            name.chars().take(40).collect::<String>()
        )));
    }
    Ok(())
}

/// Longest accepted tag, namespace, metadata key/value, `revoked_by` or
/// `source_identity`, in bytes.
pub const MAX_TEXT_LEN: usize = 1024;

/// Check a draft and its metadata before appending: text fields non-empty
/// where required and bounded in length. Backends call this so a batch is
/// rejected whole before anything is written.
pub fn validate_new_event(event: &NewEvent, meta: &EventMeta) -> Result<(), EngineError> {
    fn check(what: &str, s: &str, allow_empty: bool) -> Result<(), EngineError> {
        if (!allow_empty && s.is_empty()) || s.len() > MAX_TEXT_LEN {
            return Err(EngineError::validation(format!(
                "{what} must be {}..={MAX_TEXT_LEN} bytes, got {}",
                usize::from(!allow_empty),
                s.len()
            )));
        }
        Ok(())
    }
    match event {
        NewEvent::LeaseRevoked { revoked_by, .. } => check("revoked_by", revoked_by, false)?,
        NewEvent::TagAttached { tag, .. } | NewEvent::TagCleared { tag, .. } => {
            check("tag", tag, false)?
        }
        NewEvent::SignalDelivery {
            source_identity: Some(s),
            ..
        } => check("source_identity", s, true)?,
        NewEvent::Completion { outcome, .. } => {
            check("outcome", outcome.as_wire(), false)?;
            if matches!(outcome, CompletionOutcome::Other(s) if !matches!(CompletionOutcome::from_wire(s), CompletionOutcome::Other(_)))
            {
                return Err(EngineError::validation(format!(
                    "outcome Other({:?}) shadows a known outcome; use that variant",
                    outcome.as_wire()
                )));
            }
        }
        _ => {}
    }
    if let NewEvent::SignalDelivery { effect, .. } = event {
        check("effect", effect.as_wire(), false)?;
        if matches!(effect, SignalDeliveryEffect::Other(s) if !matches!(SignalDeliveryEffect::from_wire(s), SignalDeliveryEffect::Other(_)))
        {
            return Err(EngineError::validation(format!(
                "effect Other({:?}) shadows a known effect; use that variant",
                effect.as_wire()
            )));
        }
    }
    if let Some(ns) = &meta.namespace {
        check("namespace", ns, false)?;
    }
    if meta.tags.len() > 64 {
        return Err(EngineError::validation(format!(
            "at most 64 metadata tags per event, got {}",
            meta.tags.len()
        )));
    }
    for (k, v) in &meta.tags {
        check("metadata tag key", k, false)?;
        check("metadata tag value", v, true)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::ExecutionId;

    #[test]
    fn other_may_not_shadow_a_known_wire_string() {
        let meta = EventMeta::new();
        let shadow = NewEvent::completion(
            ExecutionId::new(0),
            CompletionOutcome::Other("success".into()),
        );
        assert!(matches!(
            validate_new_event(&shadow, &meta),
            Err(EngineError::Validation { .. })
        ));
        let fine = NewEvent::completion(
            ExecutionId::new(0),
            CompletionOutcome::Other("timed_out".into()),
        );
        assert!(validate_new_event(&fine, &meta).is_ok());
        let empty_ns = EventMeta::new().with_namespace("");
        assert!(validate_new_event(&fine, &empty_ns).is_err());
    }
}
