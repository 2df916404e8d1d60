//! The delivery stream: events with their metadata, plus the positions a
//! consumer needs to resume exactly (caught-up and checkpoint markers).

use std::pin::Pin;

use futures::Stream;

use crate::cursor::StreamCursor;
use crate::error::EngineError;
use crate::event::{EventMeta, StreamEvent};

/// One item of a delivery stream. Every cursor it carries resumes
/// exactly after itself.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeliveryItem {
    /// An event that passed the filter, with its metadata.
    Event {
        /// The typed event (its own `meta()` is empty here: see `meta`).
        event: StreamEvent,
        /// Its metadata.
        meta: EventMeta,
    },
    /// Every event committed before the subscribe call returned has now been
    /// yielded. Exactly once per subscription (at once for a tail start).
    CaughtUp {
        /// The position reached.
        cursor: StreamCursor,
    },
    /// The scanned position moved past the last yielded item while nothing
    /// was yielded for the checkpoint interval (events were filtered out).
    /// Persist it to keep a filtered consumer's resume point moving.
    Checkpoint {
        /// The position reached.
        cursor: StreamCursor,
    },
    /// One stored entry could not be decoded; the stream goes on.
    Corrupt {
        /// The bad entry's position (resuming from it skips it).
        cursor: StreamCursor,
        /// What could not be decoded.
        detail: String,
    },
}

impl DeliveryItem {
    /// The event of an `Event` item with its metadata moved into it.
    pub fn into_event(self) -> Option<StreamEvent> {
        match self {
            Self::Event { event, meta } => Some(event.with_meta(meta)),
            _ => None,
        }
    }

    /// The position this item resumes from.
    pub fn cursor(&self) -> &StreamCursor {
        match self {
            Self::Event { event, .. } => event.cursor(),
            Self::CaughtUp { cursor }
            | Self::Checkpoint { cursor }
            | Self::Corrupt { cursor, .. } => cursor,
        }
    }
}

/// A family's delivery stream. It ends after yielding a terminal error.
pub type DeliveryStream = Pin<Box<dyn Stream<Item = Result<DeliveryItem, EngineError>> + Send>>;
