//! [`Subscription`]: the consumer's end of a subscription — batches from
//! the pump task, handed out item by item. Dropping it stops the task at
//! once (which closes its blocking connection).

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::pump::{Batch, Item};

/// A delivery stream fed by a pump task.
pub(crate) struct Subscription {
    rx: mpsc::Receiver<Batch>,
    current: std::vec::IntoIter<Item>,
    task: JoinHandle<()>,
}

impl Subscription {
    pub(crate) fn new(rx: mpsc::Receiver<Batch>, task: JoinHandle<()>) -> Self {
        Self {
            rx,
            current: Vec::new().into_iter(),
            task,
        }
    }
}

impl Stream for Subscription {
    type Item = Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item>> {
        loop {
            if let Some(item) = self.current.next() {
                return Poll::Ready(Some(item));
            }
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(batch)) => self.current = batch.into_iter(),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.task.abort();
    }
}
