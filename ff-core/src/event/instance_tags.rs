//! The InstanceTags family: tags attached to and cleared from executions.

use crate::cursor::StreamCursor;
use crate::event::EventMeta;
use crate::event::InstanceTagKind;
use crate::types::{ExecutionId, TimestampMs};

/// A tag change on an execution.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum InstanceTagEvent {
    /// `tag` was attached.
    Attached {
        /// Resume position of this event.
        cursor: StreamCursor,
        /// The tagged execution.
        execution_id: ExecutionId,
        /// The tag.
        tag: String,
        /// When the backend recorded the event.
        at: TimestampMs,
        /// The producer's metadata (namespace, tags), filled in by typed
        /// subscriptions (see [`EventMeta`]).
        meta: EventMeta,
    },
    /// `tag` was cleared.
    Cleared {
        /// Resume position of this event.
        cursor: StreamCursor,
        /// The execution.
        execution_id: ExecutionId,
        /// The tag.
        tag: String,
        /// When the backend recorded the event.
        at: TimestampMs,
        /// The producer's metadata (namespace, tags), filled in by typed
        /// subscriptions (see [`EventMeta`]).
        meta: EventMeta,
    },
}

impl InstanceTagEvent {
    /// Build an `Attached` event (for backend crates).
    pub fn attached(
        cursor: StreamCursor,
        execution_id: ExecutionId,
        tag: String,
        at: TimestampMs,
    ) -> Self {
        Self::Attached {
            cursor,
            execution_id,
            tag,
            at,
            meta: EventMeta::new(),
        }
    }

    /// Build a `Cleared` event.
    pub fn cleared(
        cursor: StreamCursor,
        execution_id: ExecutionId,
        tag: String,
        at: TimestampMs,
    ) -> Self {
        Self::Cleared {
            cursor,
            execution_id,
            tag,
            at,
            meta: EventMeta::new(),
        }
    }

    /// The producer's metadata (namespace, tags). Typed subscriptions fill
    /// it in; inside a [`DeliveryItem::Event`](crate::backend::DeliveryItem)
    /// it is empty and the item's own `meta` holds it.
    pub fn meta(&self) -> &EventMeta {
        match self {
            Self::Attached { meta, .. } | Self::Cleared { meta, .. } => meta,
        }
    }

    /// The event with `meta` as its metadata.
    pub fn with_meta(mut self, new: EventMeta) -> Self {
        match &mut self {
            Self::Attached { meta, .. } | Self::Cleared { meta, .. } => *meta = new,
        }
        self
    }

    /// Resume position of this event.
    pub fn cursor(&self) -> &StreamCursor {
        match self {
            Self::Attached { cursor, .. } | Self::Cleared { cursor, .. } => cursor,
        }
    }

    /// The execution.
    pub fn execution_id(&self) -> &ExecutionId {
        match self {
            Self::Attached { execution_id, .. } | Self::Cleared { execution_id, .. } => {
                execution_id
            }
        }
    }

    /// When the backend recorded the event.
    pub fn at(&self) -> TimestampMs {
        match self {
            Self::Attached { at, .. } | Self::Cleared { at, .. } => *at,
        }
    }

    /// The tag.
    pub fn tag(&self) -> &str {
        match self {
            Self::Attached { tag, .. } | Self::Cleared { tag, .. } => tag,
        }
    }

    /// The event's kind (its variant).
    pub fn kind(&self) -> InstanceTagKind {
        match self {
            Self::Attached { .. } => InstanceTagKind::Attached,
            Self::Cleared { .. } => InstanceTagKind::Cleared,
        }
    }
}
