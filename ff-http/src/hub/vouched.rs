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
//! Once vouched, positions of the one history compare by their bytes, and
//! the window rules in [`crate::hub`] do exactly that.

use std::time::Duration;

use ff_core::backend::StreamBackend;
use ff_core::engine_error::EngineError;
use ff_core::stream_events::Family;
use ff_core::stream_subscribe::StreamCursor;

use super::{at_or_before, HubItem, StartError};

/// A position the backend or a hub vouched for (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Vouched(StreamCursor);

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
            Ok(Ok(resolved)) => Ok(Self(resolved)),
        }
    }

    /// `beginning()`, valid on every backend.
    pub fn beginning() -> Self {
        Self(StreamCursor::beginning())
    }

    /// A position a hub reached: delivered by its backend subscription.
    pub(crate) fn reached_by_hub(position: StreamCursor) -> Self {
        Self(position)
    }

    /// A position taken as vouched for, to test the window rules alone.
    #[cfg(test)]
    pub(crate) fn assumed(position: StreamCursor) -> Self {
        Self(position)
    }

    /// The cursor.
    pub fn cursor(&self) -> &StreamCursor {
        &self.0
    }

    /// Where a client at this position is once `item` has passed it, or
    /// `None` when the client has seen it. The two positions are merged
    /// ([`StreamCursor::position_join`]): for a partitioned family the
    /// client may be ahead of the hub in some partitions (it joined from
    /// another order of the same events), so an item is new exactly when
    /// it moves the merged position.
    pub fn advanced_by(&self, item: &HubItem) -> Option<Self> {
        let seen = &self.0;
        match seen.position_join(&item.cursor) {
            Some(next) if &next == seen => None,
            Some(next) => Some(Self(next)),
            None if at_or_before(&item.cursor, seen) => None,
            None => Some(Self(item.cursor.clone())),
        }
    }
}
