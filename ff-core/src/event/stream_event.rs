//! [`StreamEvent`]: an event of any family, and [`FamilyEvent`], the link
//! from each family's type to its [`Family`].

use crate::cursor::StreamCursor;
use crate::event::{
    CompletionEvent, EventKind, EventMeta, Family, InstanceTagEvent, LeaseHistoryEvent, NewEvent,
    SignalDeliveryEvent,
};
use crate::types::{ExecutionId, TimestampMs};

/// An event of any of the four families.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StreamEvent {
    /// A lease-history event.
    LeaseHistory(LeaseHistoryEvent),
    /// A completion event.
    Completion(CompletionEvent),
    /// A signal-delivery event.
    SignalDelivery(SignalDeliveryEvent),
    /// An instance-tags event.
    InstanceTags(InstanceTagEvent),
}

impl StreamEvent {
    /// The event's family.
    pub fn family(&self) -> Family {
        match self {
            Self::LeaseHistory(_) => Family::LeaseHistory,
            Self::Completion(_) => Family::Completion,
            Self::SignalDelivery(_) => Family::SignalDelivery,
            Self::InstanceTags(_) => Family::InstanceTags,
        }
    }

    /// The event's kind (`acquired`, `success`, ...).
    pub fn kind(&self) -> EventKind {
        match self {
            Self::LeaseHistory(e) => EventKind::LeaseHistory(e.kind()),
            Self::Completion(e) => EventKind::Completion(e.kind()),
            Self::SignalDelivery(e) => EventKind::SignalDelivery(e.kind()),
            Self::InstanceTags(e) => EventKind::InstanceTags(e.kind()),
        }
    }

    /// Resume position of this event.
    pub fn cursor(&self) -> &StreamCursor {
        match self {
            Self::LeaseHistory(e) => e.cursor(),
            Self::Completion(e) => e.cursor(),
            Self::SignalDelivery(e) => e.cursor(),
            Self::InstanceTags(e) => e.cursor(),
        }
    }

    /// The execution the event is about.
    pub fn execution_id(&self) -> &ExecutionId {
        match self {
            Self::LeaseHistory(e) => e.execution_id(),
            Self::Completion(e) => e.execution_id(),
            Self::SignalDelivery(e) => e.execution_id(),
            Self::InstanceTags(e) => e.execution_id(),
        }
    }

    /// When the backend recorded the event.
    pub fn at(&self) -> TimestampMs {
        match self {
            Self::LeaseHistory(e) => e.at(),
            Self::Completion(e) => e.at(),
            Self::SignalDelivery(e) => e.at(),
            Self::InstanceTags(e) => e.at(),
        }
    }

    /// The producer's metadata (see [`CompletionEvent::meta`]).
    pub fn meta(&self) -> &EventMeta {
        match self {
            Self::LeaseHistory(e) => e.meta(),
            Self::Completion(e) => e.meta(),
            Self::SignalDelivery(e) => e.meta(),
            Self::InstanceTags(e) => e.meta(),
        }
    }

    /// The event with `meta` as its metadata.
    pub fn with_meta(self, meta: EventMeta) -> Self {
        match self {
            Self::LeaseHistory(e) => Self::LeaseHistory(e.with_meta(meta)),
            Self::Completion(e) => Self::Completion(e.with_meta(meta)),
            Self::SignalDelivery(e) => Self::SignalDelivery(e.with_meta(meta)),
            Self::InstanceTags(e) => Self::InstanceTags(e.with_meta(meta)),
        }
    }

    /// The event's content without its cursor and time, as a producer wrote it.
    pub fn to_new_event(&self) -> NewEvent {
        match self {
            Self::LeaseHistory(e) => match e.clone() {
                LeaseHistoryEvent::Acquired {
                    execution_id,
                    lease_id,
                    worker_instance_id,
                    ..
                } => NewEvent::LeaseAcquired {
                    execution_id,
                    lease_id,
                    worker_instance_id,
                },
                LeaseHistoryEvent::Renewed {
                    execution_id,
                    lease_id,
                    worker_instance_id,
                    ..
                } => NewEvent::LeaseRenewed {
                    execution_id,
                    lease_id,
                    worker_instance_id,
                },
                LeaseHistoryEvent::Expired {
                    execution_id,
                    lease_id,
                    prev_owner,
                    ..
                } => NewEvent::LeaseExpired {
                    execution_id,
                    lease_id,
                    prev_owner,
                },
                LeaseHistoryEvent::Reclaimed {
                    execution_id,
                    new_lease_id,
                    new_owner,
                    ..
                } => NewEvent::LeaseReclaimed {
                    execution_id,
                    new_lease_id,
                    new_owner,
                },
                LeaseHistoryEvent::Revoked {
                    execution_id,
                    lease_id,
                    revoked_by,
                    ..
                } => NewEvent::LeaseRevoked {
                    execution_id,
                    lease_id,
                    revoked_by,
                },
            },
            Self::Completion(e) => NewEvent::Completion {
                execution_id: e.execution_id,
                outcome: e.outcome.clone(),
            },
            Self::SignalDelivery(e) => NewEvent::SignalDelivery {
                execution_id: e.execution_id,
                signal_id: e.signal_id,
                waitpoint_id: e.waitpoint_id,
                source_identity: e.source_identity.clone(),
                effect: e.effect.clone(),
            },
            Self::InstanceTags(e) => match e.clone() {
                InstanceTagEvent::Attached {
                    execution_id, tag, ..
                } => NewEvent::TagAttached { execution_id, tag },
                InstanceTagEvent::Cleared {
                    execution_id, tag, ..
                } => NewEvent::TagCleared { execution_id, tag },
            },
        }
    }
}

/// A family's event type: links it to its [`Family`] and lets generic code
/// narrow a [`StreamEvent`] to it.
pub trait FamilyEvent: Clone + Send + Sync + std::fmt::Debug + 'static {
    /// The family this type belongs to.
    const FAMILY: Family;

    /// `Some` when `event` is of this family.
    fn from_stream_event(event: StreamEvent) -> Option<Self>;

    /// Resume position of this event.
    fn event_cursor(&self) -> &StreamCursor;

    /// The producer's metadata.
    fn event_meta(&self) -> &EventMeta;
}

macro_rules! family_event {
    ($ty:ty, $variant:ident) => {
        impl FamilyEvent for $ty {
            const FAMILY: Family = Family::$variant;

            fn from_stream_event(event: StreamEvent) -> Option<Self> {
                match event {
                    StreamEvent::$variant(e) => Some(e),
                    _ => None,
                }
            }

            fn event_cursor(&self) -> &StreamCursor {
                self.cursor()
            }

            fn event_meta(&self) -> &EventMeta {
                self.meta()
            }
        }

        impl From<$ty> for StreamEvent {
            fn from(e: $ty) -> Self {
                StreamEvent::$variant(e)
            }
        }
    };
}

family_event!(LeaseHistoryEvent, LeaseHistory);
family_event!(CompletionEvent, Completion);
family_event!(SignalDeliveryEvent, SignalDelivery);
family_event!(InstanceTagEvent, InstanceTags);
