//! The SignalDelivery family: a signal reached an execution.

use crate::cursor::StreamCursor;
use crate::event::EventMeta;
use crate::event::SignalDeliveryKind;
use crate::types::{ExecutionId, SignalId, TimestampMs, WaitpointId};

/// What delivering a signal did. Unknown wire strings become `Other(s)`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SignalDeliveryEffect {
    /// The signal satisfied a waitpoint.
    Satisfied,
    /// The signal was buffered for a later waitpoint.
    Buffered,
    /// The signal was a duplicate and was dropped.
    Deduped,
    /// An effect this version does not know, with its raw wire string.
    Other(String),
}

impl SignalDeliveryEffect {
    /// Map a wire string to an effect; unknown strings become `Other(s)`.
    pub fn from_wire(s: &str) -> Self {
        match s {
            "satisfied" => Self::Satisfied,
            "buffered" => Self::Buffered,
            "deduped" => Self::Deduped,
            other => Self::Other(other.to_owned()),
        }
    }

    /// The wire string (the raw string for `Other`).
    pub fn as_wire(&self) -> &str {
        match self {
            Self::Satisfied => "satisfied",
            Self::Buffered => "buffered",
            Self::Deduped => "deduped",
            Self::Other(s) => s,
        }
    }

    /// The kind: `Other(_)` is always [`SignalDeliveryKind::Other`].
    pub fn kind(&self) -> SignalDeliveryKind {
        match self {
            Self::Satisfied => SignalDeliveryKind::Satisfied,
            Self::Buffered => SignalDeliveryKind::Buffered,
            Self::Deduped => SignalDeliveryKind::Deduped,
            Self::Other(_) => SignalDeliveryKind::Other,
        }
    }
}

/// A signal was delivered to an execution.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SignalDeliveryEvent {
    /// Resume position: subscribing from it yields exactly the later events.
    pub cursor: StreamCursor,
    /// The receiving execution.
    pub execution_id: ExecutionId,
    /// The delivered signal.
    pub signal_id: SignalId,
    /// The waitpoint it was delivered to; `None` when the producer gave none.
    pub waitpoint_id: Option<WaitpointId>,
    /// Who sent it; `None` when the producer gave none.
    pub source_identity: Option<String>,
    /// What delivering it did.
    pub effect: SignalDeliveryEffect,
    /// When the backend recorded the event.
    pub at: TimestampMs,
    /// The producer's metadata (namespace, tags). Typed subscriptions fill
    /// it in; inside a [`DeliveryItem::Event`](crate::backend::DeliveryItem)
    /// it is empty and the item's own `meta` holds it.
    pub meta: EventMeta,
}

impl SignalDeliveryEvent {
    /// Build a signal-delivery event (for backend crates).
    pub fn new(
        cursor: StreamCursor,
        execution_id: ExecutionId,
        signal_id: SignalId,
        waitpoint_id: Option<WaitpointId>,
        source_identity: Option<String>,
        effect: SignalDeliveryEffect,
        at: TimestampMs,
    ) -> Self {
        Self {
            cursor,
            execution_id,
            signal_id,
            waitpoint_id,
            source_identity,
            effect,
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

    /// The receiving execution.
    pub fn execution_id(&self) -> &ExecutionId {
        &self.execution_id
    }

    /// When the backend recorded the event.
    pub fn at(&self) -> TimestampMs {
        self.at
    }

    /// The event's kind (its effect's kind).
    pub fn kind(&self) -> SignalDeliveryKind {
        self.effect.kind()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_effects_survive_as_other() {
        for known in ["satisfied", "buffered", "deduped"] {
            assert_eq!(SignalDeliveryEffect::from_wire(known).as_wire(), known);
        }
        let other = SignalDeliveryEffect::from_wire("rerouted");
        assert_eq!(other, SignalDeliveryEffect::Other("rerouted".into()));
        assert_eq!(other.as_wire(), "rerouted");
        assert_eq!(other.kind(), SignalDeliveryKind::Other);
    }
}
