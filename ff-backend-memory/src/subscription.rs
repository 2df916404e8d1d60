//! One subscription: reads its family's log in batches after its
//! position, yields events, `CaughtUp`, `Checkpoint` and `Corrupt` items,
//! and waits on the log's wake-up channel when it has read everything.

use std::collections::VecDeque;
use std::sync::Arc;

use ff_core::backend::{DeliveryItem, DeliveryStream};
use ff_core::engine_error::EngineError;
use ff_core::filter::SubscriptionFilter;
use ff_core::stream_events::record::decode_new_event;
use ff_core::stream_events::Family;
use ff_core::stream_subscribe::StreamCursor;
use futures::stream;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::cursor_codec::encode_memory;
use crate::log::{Read, Record, RecordBody};
use crate::Shared;

/// Counts a subscription as open until it is dropped.
struct OpenGuard(Arc<Shared>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0
            .open_subscriptions
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

pub(crate) struct Subscription {
    shared: Arc<Shared>,
    family: Family,
    filter: SubscriptionFilter,
    /// Last sequence scanned (yielded or filtered out).
    scanned: u64,
    /// Last sequence whose position was handed to the consumer.
    reported: u64,
    /// Head at subscribe time, until `CaughtUp` has been yielded.
    caught_up_at: Option<u64>,
    last_yield: Instant,
    /// Items ready to yield, with the sequence each resumes after.
    ready: VecDeque<(u64, DeliveryItem)>,
    wake: watch::Receiver<u64>,
    done: bool,
    _open: OpenGuard,
}

impl Subscription {
    /// Start exactly after `after`; `CaughtUp` once `head_at_subscribe` is reached.
    pub fn start(
        shared: Arc<Shared>,
        family: Family,
        filter: SubscriptionFilter,
        after: u64,
        head_at_subscribe: u64,
    ) -> DeliveryStream {
        shared
            .open_subscriptions
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let wake = shared.log(family).watch();
        let sub = Subscription {
            shared: shared.clone(),
            family,
            filter,
            scanned: after,
            reported: after,
            caught_up_at: Some(head_at_subscribe),
            last_yield: Instant::now(),
            ready: VecDeque::new(),
            wake,
            done: false,
            _open: OpenGuard(shared),
        };
        Box::pin(stream::unfold(sub, |mut sub| async move {
            let item = sub.next_item().await?;
            Some((item, sub))
        }))
    }

    fn cursor(&self, seq: u64) -> StreamCursor {
        encode_memory(self.family, self.shared.epoch, seq)
    }

    async fn next_item(&mut self) -> Option<Result<DeliveryItem, EngineError>> {
        if self.done {
            return None;
        }
        loop {
            if let Some((seq, item)) = self.ready.pop_front() {
                self.reported = seq;
                self.last_yield = Instant::now();
                return Some(Ok(item));
            }
            self.wake.borrow_and_update();
            let read = match self.read_batch() {
                Ok(read) => read,
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            };
            let due = self.last_yield + self.shared.config.checkpoint_interval;
            if self.ready.is_empty() && self.scanned > self.reported && Instant::now() >= due {
                // Filtered-out records only, for a whole interval.
                let cursor = self.cursor(self.scanned);
                self.ready
                    .push_back((self.scanned, DeliveryItem::Checkpoint { cursor }));
            }
            if !self.ready.is_empty() || read == self.shared.config.read_batch {
                continue; // more may be waiting: read on before sleeping
            }
            if self.scanned > self.reported {
                if tokio::time::timeout_at(due, self.wake.changed())
                    .await
                    .is_err()
                {
                    let cursor = self.cursor(self.scanned);
                    self.ready
                        .push_back((self.scanned, DeliveryItem::Checkpoint { cursor }));
                }
            } else {
                // The sender lives as long as `shared`, which we hold.
                let _ = self.wake.changed().await;
            }
        }
    }

    /// Queue `CaughtUp` once the subscribe-time head has been scanned.
    fn caught_up_if_reached(&mut self) {
        if let Some(target) = self.caught_up_at {
            if self.scanned >= target {
                self.caught_up_at = None;
                let cursor = self.cursor(target);
                self.ready
                    .push_back((target, DeliveryItem::CaughtUp { cursor }));
            }
        }
    }

    /// Copy the next batch out under the lock, then decode and filter it,
    /// placing `CaughtUp` right after the subscribe-time head. Returns how
    /// many records were read.
    fn read_batch(&mut self) -> Result<usize, EngineError> {
        self.caught_up_if_reached();
        let batch = {
            let log = self.shared.log(self.family).lock();
            match log.read_after(self.scanned, self.shared.config.read_batch) {
                Read::Records(r) => r,
                Read::Expired { oldest } => {
                    return Err(self.expired(oldest, "evicted by the memory backend's retention"))
                }
            }
        };
        for record in &batch {
            self.scanned = record.seq;
            if let Some(item) = self.deliver(record) {
                self.ready.push_back((record.seq, item));
            }
            self.caught_up_if_reached();
        }
        Ok(batch.len())
    }

    fn expired(&self, oldest: u64, why: &str) -> EngineError {
        EngineError::CursorExpired {
            cursor: self.cursor(self.scanned),
            oldest: Some(self.cursor(oldest)),
            detail: why.to_string(),
        }
    }

    fn deliver(&self, record: &Record) -> Option<DeliveryItem> {
        let cursor = self.cursor(record.seq);
        let decoded;
        let draft = match &record.body {
            RecordBody::Event(draft) => draft,
            RecordBody::Raw(fields) => match decode_new_event(self.family, fields.as_slice()) {
                Ok(d) => {
                    decoded = d;
                    &decoded
                }
                Err(e) => {
                    return Some(DeliveryItem::Corrupt {
                        cursor,
                        detail: e.detail,
                    })
                }
            },
        };
        if !self
            .filter
            .matches_parts(draft.kind(), draft.execution_id(), &record.meta)
        {
            return None;
        }
        Some(DeliveryItem::Event {
            event: draft.clone().into_event(cursor, record.at),
            meta: record.meta.clone(),
        })
    }
}
