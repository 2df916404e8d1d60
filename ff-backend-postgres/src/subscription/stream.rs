//! The consumer's end of a subscription: a `Stream` over the batches its
//! task sends through a bounded channel.
//!
//! Items travel in batches (one per read) to keep per-item channel costs
//! out of catch-up; the channel holds at most [`CHANNEL_BATCHES`] batches,
//! so a slow consumer holds the task back instead of growing memory.
//! Rows travel undecoded and are decoded as the consumer takes them: the
//! task goes straight on to the next read while the consumer's task
//! decodes, so reading and decoding overlap. Dropping the stream closes
//! the channel, which ends the task.
//!
//! A filtered read also returns the rows the decoder rejects (see
//! `well_formed`), so decoded events are checked against the filter here
//! once more: the shared Rust filter has the last word on what is
//! delivered.

use std::pin::Pin;
use std::task::{Context, Poll};

use ff_core::backend::DeliveryItem;
use ff_core::engine_error::EngineError;
use ff_core::filter::SubscriptionFilter;
use ff_core::stream_events::Family;
use futures::Stream;
use sqlx::postgres::PgRow;
use tokio::sync::mpsc;

use crate::decode::RowView;

/// One item of a delivery stream.
pub(crate) type Item = Result<DeliveryItem, EngineError>;

/// What the task sends: an outbox row still to decode, or a ready item.
pub(crate) enum Pending {
    /// An outbox row (its columns start at the read's header length).
    Row(PgRow),
    /// A marker or an error.
    Ready(Item),
}

/// Batches the task may send ahead of the consumer (read-ahead).
pub(crate) const CHANNEL_BATCHES: usize = 2;

/// A delivery stream fed by a subscription task.
pub(crate) struct SubscriptionStream {
    rx: mpsc::Receiver<Vec<Pending>>,
    current: std::vec::IntoIter<Pending>,
    family: Family,
    /// Column where a row's outbox columns start.
    base: usize,
    /// The subscription's filter, unless it admits everything.
    filter: Option<SubscriptionFilter>,
    /// The cluster's system identifier, which event cursors carry.
    system: u64,
}

impl SubscriptionStream {
    /// A stream of `family` reading from `rx`; rows' outbox columns start
    /// at column `base`; events that `filter` rejects are skipped; cursors
    /// name the cluster `system`.
    pub fn new(
        rx: mpsc::Receiver<Vec<Pending>>,
        family: Family,
        base: usize,
        filter: &SubscriptionFilter,
        system: u64,
    ) -> Self {
        Self {
            rx,
            current: Vec::new().into_iter(),
            family,
            base,
            filter: (!filter.is_empty()).then(|| filter.clone()),
            system,
        }
    }

    /// The item `pending` stands for; `None` for an event the filter rejects.
    fn resolve(&self, pending: Pending) -> Option<Item> {
        let item = match pending {
            Pending::Ready(item) => return Some(item),
            Pending::Row(row) => RowView::new(&row, self.base, self.family)
                .decode(self.system)
                .map(|(_, item)| item),
        };
        match (&item, &self.filter) {
            (Ok(DeliveryItem::Event { event, meta }), Some(filter))
                if !filter.matches(event, meta) =>
            {
                None
            }
            _ => Some(item),
        }
    }
}

impl Stream for SubscriptionStream {
    type Item = Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item>> {
        loop {
            if let Some(pending) = self.current.next() {
                match self.resolve(pending) {
                    Some(item) => return Poll::Ready(Some(item)),
                    None => continue,
                }
            }
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(batch)) => self.current = batch.into_iter(),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
