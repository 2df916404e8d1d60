//! The LeaseHistory family: the life of a lease on an execution.

use crate::cursor::StreamCursor;
use crate::event::EventMeta;
use crate::event::LeaseHistoryKind;
use crate::types::{ExecutionId, LeaseId, TimestampMs, WorkerInstanceId};

/// A change in an execution's lease. `Option` fields are `None` only when the
/// producer did not supply them.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LeaseHistoryEvent {
    /// A worker acquired the lease.
    Acquired {
        /// Resume position of this event.
        cursor: StreamCursor,
        /// The leased execution.
        execution_id: ExecutionId,
        /// The new lease.
        lease_id: Option<LeaseId>,
        /// The worker now holding it.
        worker_instance_id: Option<WorkerInstanceId>,
        /// When the backend recorded the event.
        at: TimestampMs,
        /// The producer's metadata (namespace, tags), filled in by typed
        /// subscriptions (see [`EventMeta`]).
        meta: EventMeta,
    },
    /// The holder renewed the lease.
    Renewed {
        /// Resume position of this event.
        cursor: StreamCursor,
        /// The leased execution.
        execution_id: ExecutionId,
        /// The renewed lease.
        lease_id: Option<LeaseId>,
        /// The worker holding it.
        worker_instance_id: Option<WorkerInstanceId>,
        /// When the backend recorded the event.
        at: TimestampMs,
        /// The producer's metadata (namespace, tags), filled in by typed
        /// subscriptions (see [`EventMeta`]).
        meta: EventMeta,
    },
    /// The lease ran out without renewal.
    Expired {
        /// Resume position of this event.
        cursor: StreamCursor,
        /// The leased execution.
        execution_id: ExecutionId,
        /// The expired lease.
        lease_id: Option<LeaseId>,
        /// The worker that held it.
        prev_owner: Option<WorkerInstanceId>,
        /// When the backend recorded the event.
        at: TimestampMs,
        /// The producer's metadata (namespace, tags), filled in by typed
        /// subscriptions (see [`EventMeta`]).
        meta: EventMeta,
    },
    /// Another worker took over an expired lease.
    Reclaimed {
        /// Resume position of this event.
        cursor: StreamCursor,
        /// The leased execution.
        execution_id: ExecutionId,
        /// The lease issued to the new owner.
        new_lease_id: Option<LeaseId>,
        /// The worker now holding it.
        new_owner: Option<WorkerInstanceId>,
        /// When the backend recorded the event.
        at: TimestampMs,
        /// The producer's metadata (namespace, tags), filled in by typed
        /// subscriptions (see [`EventMeta`]).
        meta: EventMeta,
    },
    /// The lease was revoked.
    Revoked {
        /// Resume position of this event.
        cursor: StreamCursor,
        /// The leased execution.
        execution_id: ExecutionId,
        /// The revoked lease.
        lease_id: Option<LeaseId>,
        /// Who revoked it, as the producer named them.
        revoked_by: String,
        /// When the backend recorded the event.
        at: TimestampMs,
        /// The producer's metadata (namespace, tags), filled in by typed
        /// subscriptions (see [`EventMeta`]).
        meta: EventMeta,
    },
}

impl LeaseHistoryEvent {
    /// Build an `Acquired` event (for backend crates).
    pub fn acquired(
        cursor: StreamCursor,
        execution_id: ExecutionId,
        lease_id: Option<LeaseId>,
        worker_instance_id: Option<WorkerInstanceId>,
        at: TimestampMs,
    ) -> Self {
        Self::Acquired {
            cursor,
            execution_id,
            lease_id,
            worker_instance_id,
            at,
            meta: EventMeta::new(),
        }
    }

    /// Build a `Renewed` event.
    pub fn renewed(
        cursor: StreamCursor,
        execution_id: ExecutionId,
        lease_id: Option<LeaseId>,
        worker_instance_id: Option<WorkerInstanceId>,
        at: TimestampMs,
    ) -> Self {
        Self::Renewed {
            cursor,
            execution_id,
            lease_id,
            worker_instance_id,
            at,
            meta: EventMeta::new(),
        }
    }

    /// Build an `Expired` event.
    pub fn expired(
        cursor: StreamCursor,
        execution_id: ExecutionId,
        lease_id: Option<LeaseId>,
        prev_owner: Option<WorkerInstanceId>,
        at: TimestampMs,
    ) -> Self {
        Self::Expired {
            cursor,
            execution_id,
            lease_id,
            prev_owner,
            at,
            meta: EventMeta::new(),
        }
    }

    /// Build a `Reclaimed` event.
    pub fn reclaimed(
        cursor: StreamCursor,
        execution_id: ExecutionId,
        new_lease_id: Option<LeaseId>,
        new_owner: Option<WorkerInstanceId>,
        at: TimestampMs,
    ) -> Self {
        Self::Reclaimed {
            cursor,
            execution_id,
            new_lease_id,
            new_owner,
            at,
            meta: EventMeta::new(),
        }
    }

    /// Build a `Revoked` event.
    pub fn revoked(
        cursor: StreamCursor,
        execution_id: ExecutionId,
        lease_id: Option<LeaseId>,
        revoked_by: String,
        at: TimestampMs,
    ) -> Self {
        Self::Revoked {
            cursor,
            execution_id,
            lease_id,
            revoked_by,
            at,
            meta: EventMeta::new(),
        }
    }

    /// The producer's metadata (namespace, tags). Typed subscriptions fill
    /// it in; inside a [`DeliveryItem::Event`](crate::backend::DeliveryItem)
    /// it is empty and the item's own `meta` holds it.
    pub fn meta(&self) -> &EventMeta {
        match self {
            Self::Acquired { meta, .. }
            | Self::Renewed { meta, .. }
            | Self::Expired { meta, .. }
            | Self::Reclaimed { meta, .. }
            | Self::Revoked { meta, .. } => meta,
        }
    }

    /// The event with `meta` as its metadata.
    pub fn with_meta(mut self, new: EventMeta) -> Self {
        match &mut self {
            Self::Acquired { meta, .. }
            | Self::Renewed { meta, .. }
            | Self::Expired { meta, .. }
            | Self::Reclaimed { meta, .. }
            | Self::Revoked { meta, .. } => *meta = new,
        }
        self
    }

    /// Resume position of this event.
    pub fn cursor(&self) -> &StreamCursor {
        match self {
            Self::Acquired { cursor, .. }
            | Self::Renewed { cursor, .. }
            | Self::Expired { cursor, .. }
            | Self::Reclaimed { cursor, .. }
            | Self::Revoked { cursor, .. } => cursor,
        }
    }

    /// The leased execution.
    pub fn execution_id(&self) -> &ExecutionId {
        match self {
            Self::Acquired { execution_id, .. }
            | Self::Renewed { execution_id, .. }
            | Self::Expired { execution_id, .. }
            | Self::Reclaimed { execution_id, .. }
            | Self::Revoked { execution_id, .. } => execution_id,
        }
    }

    /// When the backend recorded the event.
    pub fn at(&self) -> TimestampMs {
        match self {
            Self::Acquired { at, .. }
            | Self::Renewed { at, .. }
            | Self::Expired { at, .. }
            | Self::Reclaimed { at, .. }
            | Self::Revoked { at, .. } => *at,
        }
    }

    /// The event's kind (its variant).
    pub fn kind(&self) -> LeaseHistoryKind {
        match self {
            Self::Acquired { .. } => LeaseHistoryKind::Acquired,
            Self::Renewed { .. } => LeaseHistoryKind::Renewed,
            Self::Expired { .. } => LeaseHistoryKind::Expired,
            Self::Reclaimed { .. } => LeaseHistoryKind::Reclaimed,
            Self::Revoked { .. } => LeaseHistoryKind::Revoked,
        }
    }
}
