//! The positions a client may be placed at on a shared reader.
//!
//! Invariant: a hub admits a client only at a [`Vouched`] position — one
//! the backend resolved for it ([`Vouched::resolve`], which applies
//! exactly the proof a subscription applies: retention, the history the
//! cursor belongs to, the rewind of a Postgres publish cursor), or one a
//! hub yielded (its position, its items' cursors merged into the client's
//! own vouched position). A cursor a client brings is never admitted
//! because its bytes sort inside a hub's window: a cursor of a history the
//! server lost sorts among the new history's positions, and a publish
//! cursor the backend rewinds sorts after events the backend includes.
//!
//! A position a hub yielded is vouched *by that hub* ([`Vouched::by`]),
//! and only for it: each hub reads one history (its backend subscription
//! proves its history whenever it reconnects), but two hubs may read two
//! histories around a lossy failover — a catch-up hub still reading the
//! old primary, the live hub the promoted copy — and a position of the
//! lost history sorts, by its bytes, among the new history's. So bytes
//! compare only positions of one hub: a hub admits a position another hub
//! vouched only when it has itself seen that very position (see
//! [`crate::hub`]'s window rules), and a position no hub of the new
//! history yielded is judged by the backend again (a catch-up hub that
//! subscribes from it), which answers `CursorExpired` for a lost one. A
//! position the backend resolved was judged against the store itself, and
//! is compared by its bytes on every hub.

use std::time::Duration;

use ff_core::backend::StreamBackend;
use ff_core::engine_error::EngineError;
use ff_core::stream_events::Family;
use ff_core::stream_subscribe::StreamCursor;

use super::{at_or_before, HubId, HubItem, StartError};

/// A position the backend or a hub vouched for (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Vouched {
    cursor: StreamCursor,
    /// The hub that vouched for it; `None` for the backend.
    by: Option<HubId>,
}

impl Vouched {
    /// Ask the backend where a subscription from `cursor` would start
    /// (one call, bounded by `wait`): `CursorExpired`/`InvalidCursor` for
    /// a cursor it refuses.
    pub async fn resolve(
        backend: &dyn StreamBackend,
        family: Family,
        cursor: StreamCursor,
        wait: Duration,
    ) -> Result<Self, StartError> {
        match tokio::time::timeout(wait, backend.resolve_cursor(family, cursor)).await {
            Err(_) => Err(StartError::Timeout),
            Ok(Err(e)) => Err(StartError::Engine(e)),
            Ok(Ok(resolved)) if resolved.is_tail() => {
                Err(StartError::Engine(EngineError::Backend {
                    backend: backend.backend_name(),
                    detail: "resolve_cursor answered the empty cursor, not a position".into(),
                }))
            }
            Ok(Ok(resolved)) => Ok(Self::by_backend(resolved)),
        }
    }

    fn by_backend(cursor: StreamCursor) -> Self {
        Self { cursor, by: None }
    }

    /// `beginning()`, valid on every backend.
    pub fn beginning() -> Self {
        Self::by_backend(StreamCursor::beginning())
    }

    /// A position the hub `by` reached: delivered by its backend
    /// subscription.
    pub(crate) fn reached_by_hub(by: HubId, position: StreamCursor) -> Self {
        Self {
            cursor: position,
            by: Some(by),
        }
    }

    /// A position taken as vouched for by the backend, to test the window
    /// rules alone.
    #[cfg(test)]
    pub(crate) fn assumed(position: StreamCursor) -> Self {
        Self::by_backend(position)
    }

    /// The cursor.
    pub fn cursor(&self) -> &StreamCursor {
        &self.cursor
    }

    /// The hub that vouched for it; `None` when the backend did.
    pub(crate) fn by(&self) -> Option<HubId> {
        self.by
    }

    /// The same position once the hub `hub` has admitted it: a position a
    /// hub vouched is now vouched by `hub` too (it has seen it), one the
    /// backend vouched stays the backend's.
    pub(crate) fn admitted_by(self, hub: HubId) -> Self {
        match self.by {
            Some(_) => Self {
                by: Some(hub),
                ..self
            },
            None => self,
        }
    }

    /// Where a client at this position is once `item` has passed it, or
    /// `None` when the client has seen it. The two positions are merged
    /// ([`StreamCursor::position_join`]): for a partitioned family the
    /// client may be ahead of the hub in some partitions (it joined from
    /// another order of the same events), so an item is new exactly when
    /// it moves the merged position. The merged position is vouched by the
    /// item's hub, which admitted the client's.
    pub fn advanced_by(&self, item: &HubItem) -> Option<Self> {
        let seen = &self.cursor;
        let next = match seen.position_join(&item.cursor) {
            Some(next) if &next == seen => return None,
            Some(next) => next,
            None if at_or_before(&item.cursor, seen) => return None,
            None => item.cursor.clone(),
        };
        Some(Self::reached_by_hub(item.hub, next))
    }
}
