//! What a producer publishes: a [`NewEvent`] (an event without cursor and
//! time, which the backend assigns) and its [`EventMeta`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::cursor::StreamCursor;
use crate::event::record::Field;
use crate::event::{
    CompletionEvent, CompletionOutcome, EventKind, Family, InstanceTagEvent, InstanceTagKind,
    LeaseHistoryEvent, LeaseHistoryKind, SignalDeliveryEffect, SignalDeliveryEvent, StreamEvent,
};
use crate::types::{ExecutionId, LeaseId, SignalId, TimestampMs, WaitpointId, WorkerInstanceId};

/// An event to publish: one variant per event shape of every family. The
/// backend assigns its cursor and time when it is appended.
///
/// ```
/// use ff_core::event::{CompletionOutcome, Family, NewEvent};
/// use ff_core::types::ExecutionId;
/// let draft = NewEvent::completion(ExecutionId::new(3), CompletionOutcome::Success);
/// assert_eq!(draft.family(), Family::Completion);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NewEvent {
    /// LeaseHistory `Acquired`.
    LeaseAcquired {
        /// The leased execution.
        execution_id: ExecutionId,
        /// The new lease.
        lease_id: Option<LeaseId>,
        /// The worker now holding it.
        worker_instance_id: Option<WorkerInstanceId>,
    },
    /// LeaseHistory `Renewed`.
    LeaseRenewed {
        /// The leased execution.
        execution_id: ExecutionId,
        /// The renewed lease.
        lease_id: Option<LeaseId>,
        /// The worker holding it.
        worker_instance_id: Option<WorkerInstanceId>,
    },
    /// LeaseHistory `Expired`.
    LeaseExpired {
        /// The leased execution.
        execution_id: ExecutionId,
        /// The expired lease.
        lease_id: Option<LeaseId>,
        /// The worker that held it.
        prev_owner: Option<WorkerInstanceId>,
    },
    /// LeaseHistory `Reclaimed`.
    LeaseReclaimed {
        /// The leased execution.
        execution_id: ExecutionId,
        /// The lease issued to the new owner.
        new_lease_id: Option<LeaseId>,
        /// The new owner.
        new_owner: Option<WorkerInstanceId>,
    },
    /// LeaseHistory `Revoked`.
    LeaseRevoked {
        /// The leased execution.
        execution_id: ExecutionId,
        /// The revoked lease.
        lease_id: Option<LeaseId>,
        /// Who revoked it.
        revoked_by: String,
    },
    /// A Completion event.
    Completion {
        /// The execution that completed.
        execution_id: ExecutionId,
        /// How it completed.
        outcome: CompletionOutcome,
    },
    /// A SignalDelivery event.
    SignalDelivery {
        /// The receiving execution.
        execution_id: ExecutionId,
        /// The delivered signal.
        signal_id: SignalId,
        /// The waitpoint it was delivered to, if any.
        waitpoint_id: Option<WaitpointId>,
        /// Who sent it, if known.
        source_identity: Option<String>,
        /// What delivering it did.
        effect: SignalDeliveryEffect,
    },
    /// InstanceTags `Attached`.
    TagAttached {
        /// The tagged execution.
        execution_id: ExecutionId,
        /// The tag.
        tag: String,
    },
    /// InstanceTags `Cleared`.
    TagCleared {
        /// The execution.
        execution_id: ExecutionId,
        /// The tag.
        tag: String,
    },
}

impl NewEvent {
    /// A Completion draft.
    pub fn completion(execution_id: ExecutionId, outcome: CompletionOutcome) -> Self {
        Self::Completion {
            execution_id,
            outcome,
        }
    }

    /// A SignalDelivery draft.
    pub fn signal_delivery(
        execution_id: ExecutionId,
        signal_id: SignalId,
        waitpoint_id: Option<WaitpointId>,
        source_identity: Option<String>,
        effect: SignalDeliveryEffect,
    ) -> Self {
        Self::SignalDelivery {
            execution_id,
            signal_id,
            waitpoint_id,
            source_identity,
            effect,
        }
    }

    /// An InstanceTags `Attached` draft.
    pub fn tag_attached(execution_id: ExecutionId, tag: impl Into<String>) -> Self {
        Self::TagAttached {
            execution_id,
            tag: tag.into(),
        }
    }

    /// An InstanceTags `Cleared` draft.
    pub fn tag_cleared(execution_id: ExecutionId, tag: impl Into<String>) -> Self {
        Self::TagCleared {
            execution_id,
            tag: tag.into(),
        }
    }

    /// A LeaseHistory `Acquired` draft.
    pub fn lease_acquired(
        execution_id: ExecutionId,
        lease_id: Option<LeaseId>,
        worker_instance_id: Option<WorkerInstanceId>,
    ) -> Self {
        Self::LeaseAcquired {
            execution_id,
            lease_id,
            worker_instance_id,
        }
    }

    /// A LeaseHistory `Renewed` draft.
    pub fn lease_renewed(
        execution_id: ExecutionId,
        lease_id: Option<LeaseId>,
        worker_instance_id: Option<WorkerInstanceId>,
    ) -> Self {
        Self::LeaseRenewed {
            execution_id,
            lease_id,
            worker_instance_id,
        }
    }

    /// A LeaseHistory `Expired` draft.
    pub fn lease_expired(
        execution_id: ExecutionId,
        lease_id: Option<LeaseId>,
        prev_owner: Option<WorkerInstanceId>,
    ) -> Self {
        Self::LeaseExpired {
            execution_id,
            lease_id,
            prev_owner,
        }
    }

    /// A LeaseHistory `Reclaimed` draft.
    pub fn lease_reclaimed(
        execution_id: ExecutionId,
        new_lease_id: Option<LeaseId>,
        new_owner: Option<WorkerInstanceId>,
    ) -> Self {
        Self::LeaseReclaimed {
            execution_id,
            new_lease_id,
            new_owner,
        }
    }

    /// A LeaseHistory `Revoked` draft.
    pub fn lease_revoked(
        execution_id: ExecutionId,
        lease_id: Option<LeaseId>,
        revoked_by: impl Into<String>,
    ) -> Self {
        Self::LeaseRevoked {
            execution_id,
            lease_id,
            revoked_by: revoked_by.into(),
        }
    }

    /// The family the event belongs to.
    pub fn family(&self) -> Family {
        self.kind().family()
    }

    /// The event's kind.
    pub fn kind(&self) -> EventKind {
        match self {
            Self::LeaseAcquired { .. } => EventKind::LeaseHistory(LeaseHistoryKind::Acquired),
            Self::LeaseRenewed { .. } => EventKind::LeaseHistory(LeaseHistoryKind::Renewed),
            Self::LeaseExpired { .. } => EventKind::LeaseHistory(LeaseHistoryKind::Expired),
            Self::LeaseReclaimed { .. } => EventKind::LeaseHistory(LeaseHistoryKind::Reclaimed),
            Self::LeaseRevoked { .. } => EventKind::LeaseHistory(LeaseHistoryKind::Revoked),
            Self::Completion { outcome, .. } => EventKind::Completion(outcome.kind()),
            Self::SignalDelivery { effect, .. } => EventKind::SignalDelivery(effect.kind()),
            Self::TagAttached { .. } => EventKind::InstanceTags(InstanceTagKind::Attached),
            Self::TagCleared { .. } => EventKind::InstanceTags(InstanceTagKind::Cleared),
        }
    }

    /// The execution the event is about.
    pub fn execution_id(&self) -> &ExecutionId {
        match self {
            Self::LeaseAcquired { execution_id, .. }
            | Self::LeaseRenewed { execution_id, .. }
            | Self::LeaseExpired { execution_id, .. }
            | Self::LeaseReclaimed { execution_id, .. }
            | Self::LeaseRevoked { execution_id, .. }
            | Self::Completion { execution_id, .. }
            | Self::SignalDelivery { execution_id, .. }
            | Self::TagAttached { execution_id, .. }
            | Self::TagCleared { execution_id, .. } => execution_id,
        }
    }

    /// The event's stored fields with their wire text; an absent optional
    /// field is `(field, None)`. The schema version and metadata are not
    /// included: backends store them beside these.
    pub fn fields(&self) -> Vec<(Field, Option<String>)> {
        fn opt<T: ToString>(v: &Option<T>) -> Option<String> {
            v.as_ref().map(ToString::to_string)
        }
        let kind = Some(self.kind().as_str().to_owned());
        let exec = Some(self.execution_id().to_string());
        match self {
            Self::LeaseAcquired {
                lease_id,
                worker_instance_id,
                ..
            }
            | Self::LeaseRenewed {
                lease_id,
                worker_instance_id,
                ..
            } => vec![
                (Field::Type, kind),
                (Field::ExecutionId, exec),
                (Field::LeaseId, opt(lease_id)),
                (Field::WorkerInstanceId, opt(worker_instance_id)),
            ],
            Self::LeaseExpired {
                lease_id,
                prev_owner,
                ..
            } => vec![
                (Field::Type, kind),
                (Field::ExecutionId, exec),
                (Field::LeaseId, opt(lease_id)),
                (Field::PrevOwner, opt(prev_owner)),
            ],
            Self::LeaseReclaimed {
                new_lease_id,
                new_owner,
                ..
            } => vec![
                (Field::Type, kind),
                (Field::ExecutionId, exec),
                (Field::NewLeaseId, opt(new_lease_id)),
                (Field::NewOwner, opt(new_owner)),
            ],
            Self::LeaseRevoked {
                lease_id,
                revoked_by,
                ..
            } => vec![
                (Field::Type, kind),
                (Field::ExecutionId, exec),
                (Field::LeaseId, opt(lease_id)),
                (Field::RevokedBy, Some(revoked_by.clone())),
            ],
            Self::Completion { outcome, .. } => vec![
                (Field::ExecutionId, exec),
                (Field::Outcome, Some(outcome.as_wire().to_owned())),
            ],
            Self::SignalDelivery {
                signal_id,
                waitpoint_id,
                source_identity,
                effect,
                ..
            } => vec![
                (Field::ExecutionId, exec),
                (Field::SignalId, Some(signal_id.to_string())),
                (Field::WaitpointId, opt(waitpoint_id)),
                (Field::SourceIdentity, source_identity.clone()),
                (Field::Effect, Some(effect.as_wire().to_owned())),
            ],
            Self::TagAttached { tag, .. } | Self::TagCleared { tag, .. } => vec![
                (Field::Type, kind),
                (Field::ExecutionId, exec),
                (Field::Tag, Some(tag.clone())),
            ],
        }
    }

    /// The published event, once the backend has assigned `cursor` and `at`.
    pub fn into_event(self, cursor: StreamCursor, at: TimestampMs) -> StreamEvent {
        match self {
            Self::LeaseAcquired {
                execution_id,
                lease_id,
                worker_instance_id,
            } => {
                LeaseHistoryEvent::acquired(cursor, execution_id, lease_id, worker_instance_id, at)
                    .into()
            }
            Self::LeaseRenewed {
                execution_id,
                lease_id,
                worker_instance_id,
            } => LeaseHistoryEvent::renewed(cursor, execution_id, lease_id, worker_instance_id, at)
                .into(),
            Self::LeaseExpired {
                execution_id,
                lease_id,
                prev_owner,
            } => LeaseHistoryEvent::expired(cursor, execution_id, lease_id, prev_owner, at).into(),
            Self::LeaseReclaimed {
                execution_id,
                new_lease_id,
                new_owner,
            } => LeaseHistoryEvent::reclaimed(cursor, execution_id, new_lease_id, new_owner, at)
                .into(),
            Self::LeaseRevoked {
                execution_id,
                lease_id,
                revoked_by,
            } => LeaseHistoryEvent::revoked(cursor, execution_id, lease_id, revoked_by, at).into(),
            Self::Completion {
                execution_id,
                outcome,
            } => CompletionEvent::new(cursor, execution_id, outcome, at).into(),
            Self::SignalDelivery {
                execution_id,
                signal_id,
                waitpoint_id,
                source_identity,
                effect,
            } => SignalDeliveryEvent::new(
                cursor,
                execution_id,
                signal_id,
                waitpoint_id,
                source_identity,
                effect,
                at,
            )
            .into(),
            Self::TagAttached { execution_id, tag } => {
                InstanceTagEvent::attached(cursor, execution_id, tag, at).into()
            }
            Self::TagCleared { execution_id, tag } => {
                InstanceTagEvent::cleared(cursor, execution_id, tag, at).into()
            }
        }
    }
}

/// Metadata published with an event: what filters match besides the
/// event's own fields.
///
/// Typed events carry it (`event.meta()`): typed subscriptions move it
/// into each event. A delivery stream's
/// [`DeliveryItem::Event`](crate::backend::DeliveryItem) carries it beside
/// the event instead (the event's own is left empty there, saving a copy
/// per event).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct EventMeta {
    /// A tenant or application namespace, if the producer set one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Free-form key/value tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

impl EventMeta {
    /// Empty metadata: no namespace, no tags.
    pub fn new() -> Self {
        Self::default()
    }

    /// Set the namespace.
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// Add a tag.
    pub fn with_tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.tags.insert(key.into(), value.into());
        self
    }

    /// The tags as a compact JSON object (how backends store them).
    pub fn tags_json(&self) -> String {
        serde_json::to_string(&self.tags).unwrap_or_else(|_| "{}".to_owned())
    }

    /// Parse tags stored by [`EventMeta::tags_json`].
    pub fn parse_tags_json(s: &str) -> Result<BTreeMap<String, String>, String> {
        serde_json::from_str(s).map_err(|e| format!("tags are not a JSON object of strings: {e}"))
    }
}
