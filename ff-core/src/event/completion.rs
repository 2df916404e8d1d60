//! The Completion family: an execution reached a final outcome.

use crate::cursor::StreamCursor;
use crate::event::CompletionKind;
use crate::event::EventMeta;
use crate::types::{ExecutionId, TimestampMs};

/// How an execution completed. Unknown wire strings become `Other(s)`, so a
/// newer producer never crashes an older consumer.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CompletionOutcome {
    /// The execution succeeded.
    Success,
    /// The execution failed.
    Failure,
    /// The execution was cancelled.
    Cancelled,
    /// An outcome this version does not know, with its raw wire string.
    Other(String),
}

impl CompletionOutcome {
    /// Map a wire string to an outcome; unknown strings become `Other(s)`.
    pub fn from_wire(s: &str) -> Self {
        match s {
            "success" => Self::Success,
            "failure" => Self::Failure,
            "cancelled" => Self::Cancelled,
            other => Self::Other(other.to_owned()),
        }
    }

    /// The wire string (the raw string for `Other`).
    pub fn as_wire(&self) -> &str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
            Self::Cancelled => "cancelled",
            Self::Other(s) => s,
        }
    }

    /// The kind: `Other(_)` is always [`CompletionKind::Other`].
    pub fn kind(&self) -> CompletionKind {
        match self {
            Self::Success => CompletionKind::Success,
            Self::Failure => CompletionKind::Failure,
            Self::Cancelled => CompletionKind::Cancelled,
            Self::Other(_) => CompletionKind::Other,
        }
    }
}

/// An execution completed with `outcome`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CompletionEvent {
    /// Resume position: subscribing from it yields exactly the later events.
    pub cursor: StreamCursor,
    /// The execution that completed.
    pub execution_id: ExecutionId,
    /// How it completed.
    pub outcome: CompletionOutcome,
    /// When the backend recorded the event.
    pub at: TimestampMs,
    /// The producer's metadata (namespace, tags). Typed subscriptions fill
    /// it in; inside a [`DeliveryItem::Event`](crate::backend::DeliveryItem)
    /// it is empty and the item's own `meta` holds it.
    pub meta: EventMeta,
}

impl CompletionEvent {
    /// Build a completion event (for backend crates).
    pub fn new(
        cursor: StreamCursor,
        execution_id: ExecutionId,
        outcome: CompletionOutcome,
        at: TimestampMs,
    ) -> Self {
        Self {
            cursor,
            execution_id,
            outcome,
            at,
            meta: EventMeta::new(),
        }
    }

    /// The producer's metadata (namespace, tags).
    pub fn meta(&self) -> &EventMeta {
        &self.meta
    }

    /// The event with `meta` as its metadata.
    pub fn with_meta(mut self, meta: EventMeta) -> Self {
        self.meta = meta;
        self
    }

    /// Resume position of this event.
    pub fn cursor(&self) -> &StreamCursor {
        &self.cursor
    }

    /// The execution that completed.
    pub fn execution_id(&self) -> &ExecutionId {
        &self.execution_id
    }

    /// When the backend recorded the event.
    pub fn at(&self) -> TimestampMs {
        self.at
    }

    /// The event's kind (its outcome's kind).
    pub fn kind(&self) -> CompletionKind {
        self.outcome.kind()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_outcomes_survive_as_other() {
        for known in ["success", "failure", "cancelled"] {
            assert_eq!(CompletionOutcome::from_wire(known).as_wire(), known);
        }
        let other = CompletionOutcome::from_wire("timed_out");
        assert_eq!(other, CompletionOutcome::Other("timed_out".into()));
        assert_eq!(other.as_wire(), "timed_out");
        assert_eq!(other.kind(), CompletionKind::Other);
    }
}
