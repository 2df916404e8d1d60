//! The InstanceTags family: tags attached to and cleared from executions.

use crate::stream_events::InstanceTagKind;
use crate::stream_subscribe::StreamCursor;
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
        }
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
