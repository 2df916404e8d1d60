//! The task behind one subscription: it drives one [`Reader`] per
//! followed partition (each on its own connection) and merges their pages
//! ([`Merger`]) into batches for the consumer.
//!
//! Invariants: a reader reads again only once the merge has taken
//! everything it handed over, so a subscription buffers at most a page
//! and a read-ahead page per partition plus one batch, whatever the
//! backlog; a `Checkpoint` is yielded when the merged positions moved past
//! the last item yielded and nothing was yielded for the checkpoint
//! interval; the first terminal outcome of any reader (`CursorExpired`, a
//! refused command, reconnection giving up) ends the stream, after the
//! items already merged.

use std::future::Future;
use std::pin::Pin;

use ff_core::backend::DeliveryItem;
use ff_core::engine_error::EngineError;
use ff_core::stream_subscribe::StreamCursor;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::time::Instant;

use std::sync::Arc;

use ff_core::stream_subscribe::ValkeyPosition;

use super::merge::Merger;
use super::reader::{Output, Reader};
use crate::expiry::{self, Expired};
use crate::inner::Inner;
use crate::stream_info::{ready_to_judge, stream_state_at};
use crate::witness;

/// One item of a delivery stream.
pub(crate) type Item = Result<DeliveryItem, EngineError>;
/// Items handed to the consumer together (at most a read batch and a
/// marker).
pub(crate) type Batch = Vec<Item>;

type Running = Pin<Box<dyn Future<Output = (usize, Reader, Output)> + Send>>;

/// The state of one subscription.
pub(crate) struct Pump {
    inner: Arc<Inner>,
    merger: Merger,
    /// Each lane's reader while it is not reading.
    parked: Vec<Option<Reader>>,
    tx: mpsc::Sender<Batch>,
    batch: usize,
    checkpoint_interval: std::time::Duration,
    /// The cursor of the last item handed over (or where the subscription
    /// started), and when.
    sent: StreamCursor,
    sent_at: Instant,
    initial: Option<Batch>,
}

impl Pump {
    /// A pump over `readers` (one per lane of `merger`), yielding batches
    /// of at most a read batch of items on `tx`, starting with `initial` (a tail
    /// subscription's `CaughtUp`); `start` is the cursor to resume from
    /// before any item (the one given, or resolved at subscribe).
    pub(crate) fn new(
        inner: Arc<Inner>,
        merger: Merger,
        readers: Vec<Reader>,
        tx: mpsc::Sender<Batch>,
        start: StreamCursor,
        initial: Option<Batch>,
    ) -> Self {
        debug_assert_eq!(merger.len(), readers.len());
        Self {
            batch: inner.config.read_batch,
            checkpoint_interval: inner.config.checkpoint_interval,
            inner,
            merger,
            parked: readers.into_iter().map(Some).collect(),
            tx,
            sent: start,
            sent_at: Instant::now(),
            initial,
        }
    }

    /// The `CursorExpired` error for lane `lane`, expired after `at`. The
    /// other lanes may have lost entries too: each is judged on its
    /// stream's state now (and its entry, when its position has a
    /// witness), so `oldest` resumes every lane at what it still retains
    /// (it is left out when a state cannot be read).
    async fn expired(&self, lane: usize, at: ValkeyPosition, expired: Expired) -> EngineError {
        let followed = self.merger.followed();
        let family = followed.family();
        let mut oldest = Some((
            Vec::with_capacity(followed.partitions().len()),
            Vec::with_capacity(followed.partitions().len()),
        ));
        for (i, ((&partition, position), witness)) in followed
            .partitions()
            .iter()
            .zip(self.merger.lane_positions())
            .zip(self.merger.lane_witnesses())
            .enumerate()
        {
            let resume = if i == lane {
                Some((expired.oldest, None))
            } else {
                let context = format!("reading {}", self.inner.describe(family, partition));
                let probe = position.filter(|_| witness.is_some());
                let state =
                    match stream_state_at(&self.inner, family, partition, probe, &context).await {
                        Ok((state, found)) => match position {
                            Some(p) => {
                                ready_to_judge(&self.inner, family, partition, state, p, &context)
                                    .await
                                    .ok()
                                    .map(|state| (state, found))
                            }
                            None => Some((state, found)),
                        },
                        Err(_) => None,
                    };
                state.map(|(state, found)| match position {
                    Some(p) => expiry::judge(p, &state)
                        .and_then(|()| witness::judge(p, witness, &state, found))
                        .map_or_else(|e| (e.oldest, None), |()| (p, witness)),
                    None => (expiry::oldest(&state), None),
                })
            };
            match (resume, oldest.as_mut()) {
                (Some((p, w)), Some((positions, witnesses))) => {
                    positions.push(p);
                    witnesses.push(w);
                }
                _ => oldest = None,
            }
        }
        self.merger.expired(lane, at, expired, &self.sent, oldest)
    }

    /// Run until the consumer goes away or a terminal error was yielded.
    pub(crate) async fn run(mut self) {
        if let Some(batch) = self.initial.take() {
            if self.tx.send(batch).await.is_err() {
                return;
            }
        }
        let mut reading: FuturesUnordered<Running> = FuturesUnordered::new();
        loop {
            let mut items = Vec::new();
            let blocked = self.merger.take(&mut items, self.batch);
            for lane in 0..self.parked.len() {
                if self.merger.wants_read(lane) {
                    if let Some(reader) = self.parked[lane].take() {
                        reading.push(Box::pin(async move {
                            let (reader, output) = reader.next().await;
                            (lane, reader, output)
                        }));
                    }
                }
            }
            if let Some(last) = items.last() {
                self.sent = last.cursor().clone();
                self.sent_at = Instant::now();
                if self
                    .tx
                    .send(items.into_iter().map(Ok).collect())
                    .await
                    .is_err()
                {
                    return;
                }
                if blocked.is_none() {
                    continue; // more is buffered
                }
            }
            let checkpoint_at = self
                .merger
                .moved_past_yielded()
                .then(|| self.sent_at + self.checkpoint_interval);
            let checkpoint = async {
                match checkpoint_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                next = reading.next() => {
                    let Some((lane, reader, output)) = next else {
                        // Every reader is parked with a page buffered, and
                        // the merge took nothing: cannot happen (it always
                        // takes a head then), but never spin.
                        let _ = self.tx.send(vec![Err(EngineError::Backend {
                            backend: crate::error::BACKEND,
                            detail: "the subscription's merge stalled; resubscribe from the last cursor".into(),
                        })]).await;
                        return;
                    };
                    let end = match output {
                        Output::Page { entries, at_end, start } => {
                            self.merger.push(lane, entries, at_end, start);
                            self.parked[lane] = Some(reader);
                            None
                        }
                        Output::Expired { after, expired } => {
                            Some(self.expired(lane, after, expired).await)
                        }
                        Output::Failed(e) => Some(e),
                        Output::GaveUp => Some(EngineError::StreamDisconnected {
                            cursor: self.sent.clone(),
                        }),
                    };
                    if let Some(e) = end {
                        let _ = self.tx.send(vec![Err(e)]).await;
                        return;
                    }
                }
                () = checkpoint => {
                    if let Some(item) = self.merger.checkpoint() {
                        self.sent = item.cursor().clone();
                        self.sent_at = Instant::now();
                        if self.tx.send(vec![Ok(item)]).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
    }
}
