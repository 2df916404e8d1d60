//! [`MutantBackend`]: the trait glue over the [`Store`] — subscribe,
//! bounds, `cursor_at`, publish — as one "process" of the backend.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use ff_core::backend::{
    validate_new_event, DeliveryStream, EventPublisher, StreamBackend, StreamBounds,
};
use ff_core::engine_error::EngineError;
use ff_core::filter::SubscriptionFilter;
use ff_core::group::GroupStore;
use ff_core::stream_events::record::Field;
use ff_core::stream_events::{EventMeta, Family, NewEvent};
use ff_core::stream_subscribe::{CursorStart, StreamCursor};
use ff_core::types::TimestampMs;
use tokio::sync::watch;

use super::cursor;
use super::store::{Body, Store};
use super::subscription::{Start, Subscription};
use super::Mutation;

/// One process's handle on a mutant store: its own in-process wake-up
/// channel and publishing connection; clones share both.
#[derive(Clone, Debug)]
pub struct MutantBackend {
    pub(crate) store: Arc<Store>,
    local: Arc<watch::Sender<u64>>,
    publishing_connection: Arc<Mutex<Option<u64>>>,
}

impl MutantBackend {
    /// A fresh store with `mutation` switched on, and this process on it.
    pub fn new(mutation: Option<Mutation>) -> Self {
        Self::on(Arc::new(Store::new(mutation)))
    }

    fn on(store: Arc<Store>) -> Self {
        Self {
            store,
            local: Arc::new(watch::channel(0).0),
            publishing_connection: Arc::new(Mutex::new(None)),
        }
    }

    /// Another process on the same store: shares nothing in-process.
    pub fn another_process(&self) -> Self {
        Self::on(self.store.clone())
    }

    /// Append records and wake this process's subscribers; the store wakes
    /// everyone else.
    pub(crate) fn append(&self, records: Vec<(Family, Body)>) -> Vec<StreamCursor> {
        self.ensure_connected();
        let appended = self.store.append_all(records);
        self.local.send_modify(|n| *n = n.wrapping_add(1));
        appended
            .into_iter()
            .map(|(family, seq)| cursor::encode(&self.store, family, seq))
            .collect()
    }

    /// The publishing connection's id, once this process has published.
    pub(crate) fn publishing_connection(&self) -> Option<u64> {
        *self.publishing_connection.lock().expect("lock")
    }

    /// Whether this process's publishing connection was opened and has
    /// since been severed.
    fn publishing_connection_severed(&self) -> bool {
        self.publishing_connection()
            .is_some_and(|id| !self.store.is_live(id))
    }

    /// Reconnect the publishing connection if it was severed.
    fn ensure_connected(&self) {
        let mut conn = self.publishing_connection.lock().expect("lock");
        if !conn.is_some_and(|id| self.store.is_live(id)) {
            *conn = Some(self.store.connect());
        }
    }

    /// Where a subscription from `cursor` starts: the decoded cursor, the
    /// position it resumes after, and the head at the time.
    fn start_of(
        &self,
        family: Family,
        cursor: StreamCursor,
    ) -> Result<(CursorStart<u64>, u64, u64), EngineError> {
        let start = match cursor::decode(&self.store, family, &cursor) {
            Err(EngineError::CursorExpired { detail, .. }) => {
                return Err(self.expired(family, cursor, &detail))
            }
            other => other?,
        };
        let (head, oldest, expired) = self.store.with_log(family, |log| {
            let expired = match start {
                CursorStart::After(seq) => log.is_expired(seq),
                _ => false,
            };
            (log.head(), log.oldest_position(), expired)
        });
        let after = match start {
            CursorStart::Tail if self.store.has(Mutation::TailIncludesTheLastEvent) => {
                head.saturating_sub(1)
            }
            CursorStart::Tail => head,
            CursorStart::Beginning => oldest,
            CursorStart::After(seq) if seq > head && self.store.has(Mutation::BeyondHeadWaits) => {
                seq
            }
            CursorStart::After(seq)
                if seq < oldest && self.store.has(Mutation::ExpiredCursorsRestart) =>
            {
                oldest
            }
            CursorStart::After(_) if expired => {
                return Err(self.expired(
                    family,
                    cursor,
                    "behind the retained history or beyond its head",
                ))
            }
            CursorStart::After(seq) => seq,
        };
        Ok((start, after, head))
    }

    fn expired(&self, family: Family, cursor: StreamCursor, why: &str) -> EngineError {
        let oldest = self.store.with_log(family, |log| log.oldest_position());
        EngineError::CursorExpired {
            cursor,
            oldest: Some(cursor::encode(&self.store, family, oldest)),
            detail: why.into(),
        }
    }
}

#[async_trait]
impl StreamBackend for MutantBackend {
    fn backend_name(&self) -> &'static str {
        "mutant"
    }

    fn group_store(&self) -> Result<Arc<dyn GroupStore>, EngineError> {
        Ok(self.store.groups.clone())
    }

    async fn subscribe_family(
        &self,
        family: Family,
        cursor: StreamCursor,
        filter: &SubscriptionFilter,
    ) -> Result<DeliveryStream, EngineError> {
        filter.validate_for(family)?;
        let (start, after, head) = self.start_of(family, cursor)?;
        let resolve_late =
            matches!(start, CursorStart::Tail) && self.store.has(Mutation::TailResolvedLate);
        Ok(Subscription::start(
            self.store.clone(),
            self.local.subscribe(),
            family,
            filter.clone(),
            Start {
                after,
                head: if self.store.has(Mutation::CaughtUpBeforeTheBacklog) {
                    after
                } else {
                    head
                },
                resolve_late,
            },
        ))
    }

    async fn resolve_cursor(
        &self,
        family: Family,
        cursor: StreamCursor,
    ) -> Result<StreamCursor, EngineError> {
        if self.store.has(Mutation::ResolveSkipsTheSubscriptionsProof) {
            if let CursorStart::After(_) = cursor::decode(&self.store, family, &cursor)? {
                return Ok(cursor);
            }
        }
        Ok(match self.start_of(family, cursor)? {
            (CursorStart::Beginning, _, _) => StreamCursor::beginning(),
            (_, after, _) => cursor::encode(&self.store, family, after),
        })
    }

    async fn bounds(&self, family: Family) -> Result<StreamBounds, EngineError> {
        let (oldest, head) = self
            .store
            .with_log(family, |log| (log.oldest_position(), log.head()));
        let head = if self.store.has(Mutation::BoundsHeadIsOldest) {
            oldest + 1
        } else {
            head
        };
        Ok(StreamBounds::new(
            cursor::encode(&self.store, family, oldest),
            cursor::encode(&self.store, family, head),
            None,
        ))
    }

    async fn cursor_at(
        &self,
        family: Family,
        at: TimestampMs,
    ) -> Result<StreamCursor, EngineError> {
        let seq = self
            .store
            .with_log(family, |log| match log.first_at_or_after(at) {
                Some(seq) if self.store.has(Mutation::CursorAtSkipsOne) => seq,
                Some(seq) => seq - 1,
                None => log.head(),
            });
        Ok(cursor::encode(&self.store, family, seq))
    }
}

/// The draft as stored, with a mutation's losses applied.
fn stored(store: &Store, mut event: NewEvent) -> NewEvent {
    if store.has(Mutation::DropsAnOptionalField) {
        if let NewEvent::LeaseAcquired {
            worker_instance_id, ..
        } = &mut event
        {
            *worker_instance_id = None;
        }
    }
    event
}

#[async_trait]
impl EventPublisher for MutantBackend {
    async fn publish_batch(
        &self,
        events: Vec<(NewEvent, EventMeta)>,
    ) -> Result<Vec<StreamCursor>, EngineError> {
        if self.publishing_connection_severed() {
            if self.store.has(Mutation::PublishWaitsOnADeadConnection) {
                std::future::pending::<()>().await;
            }
            if self.store.has(Mutation::AcksAPublishOnADeadConnection) {
                self.ensure_connected();
                return Ok(events
                    .iter()
                    .map(|(event, _)| {
                        let family = event.family();
                        let head = self.store.with_log(family, |log| log.head());
                        cursor::encode(&self.store, family, head + 1)
                    })
                    .collect());
            }
        }
        if self.store.has(Mutation::BatchIsNotAtomic) {
            let mut cursors = Vec::new();
            for (event, meta) in events {
                validate_new_event(&event, &meta)?;
                let family = event.family();
                let body = Body::Event(stored(&self.store, event), meta);
                cursors.extend(self.append(vec![(family, body)]));
            }
            return Ok(cursors);
        }
        for (event, meta) in &events {
            validate_new_event(event, meta)?;
        }
        let records = events
            .into_iter()
            .map(|(event, meta)| {
                (
                    event.family(),
                    Body::Event(stored(&self.store, event), meta),
                )
            })
            .collect();
        Ok(self.append(records))
    }
}

/// Raw fields as an outside producer wrote them.
pub(crate) fn raw(fields: &[(Field, String)]) -> Body {
    Body::Raw(fields.to_vec())
}
