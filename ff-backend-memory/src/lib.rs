//! # ff-backend-memory: the embedded, in-process ff backend
//!
//! Each family is a bounded log in memory. Subscribers catch up from the
//! retained log in batches, then wait on a wake-up channel (no polling);
//! a cursor whose successor was evicted yields `CursorExpired`. Every
//! instance draws a random epoch that goes into its cursors, so a cursor
//! from another instance (another process, a restart) is `CursorExpired`,
//! never a silent restart from zero.
//!
//! Use it for tests, single-process applications and `ff demo`; pick
//! `ff-backend-valkey` or `ff-backend-postgres` for durable streams.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), ff_core::engine_error::EngineError> {
//! use ff_backend_memory::MemoryBackend;
//! use ff_core::backend::{EventPublisher, StreamBackend};
//! use ff_core::filter::SubscriptionFilter;
//! use ff_core::stream_events::{CompletionOutcome, EventMeta, NewEvent};
//! use ff_core::stream_subscribe::StreamCursor;
//! use ff_core::types::ExecutionId;
//! use futures::StreamExt;
//!
//! let backend = MemoryBackend::new();
//! let exec = ExecutionId::new(0);
//! backend
//!     .publish(NewEvent::completion(exec, CompletionOutcome::Success), EventMeta::new())
//!     .await?;
//! let mut sub = backend
//!     .subscribe_completion(StreamCursor::beginning(), &SubscriptionFilter::default())
//!     .await?;
//! let event = sub.next().await.expect("one event")?;
//! assert_eq!(event.execution_id, exec);
//! // Persist `event.cursor`; subscribing from it later yields only newer events.
//! # Ok(()) }
//! ```

mod config;
pub mod cursor_codec;
mod cursor_store;
mod group_store;
mod log;
mod subscription;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use ff_core::backend::{
    validate_new_event, CursorStore, DeliveryStream, EventPublisher, StreamBackend, StreamBounds,
};
use ff_core::cursor::codec::CursorStart;
use ff_core::cursor::StreamCursor;
use ff_core::engine_error::EngineError;
use ff_core::filter::SubscriptionFilter;
use ff_core::group::GroupStore;
use ff_core::stream_events::{EventMeta, Family, NewEvent};
use ff_core::types::TimestampMs;

#[allow(deprecated)]
pub use config::DEFAULT_BATCH_SIZE;
pub use config::{
    MemoryBackendBuilder, DEFAULT_CHECKPOINT_INTERVAL, DEFAULT_READ_BATCH, DEFAULT_RETENTION,
    DEFAULT_RETENTION_BYTES,
};
pub use cursor_store::MemoryCursorStore;
pub use group_store::MemoryGroupStore;

use cursor_codec::{decode_memory, encode_memory};
use log::{FamilyLog, RecordBody, Retention};
use subscription::Subscription;

/// State shared by the backend handle and its subscriptions.
#[derive(Debug)]
pub(crate) struct Shared {
    epoch: u64,
    config: MemoryBackendBuilder,
    logs: [FamilyLog; 4],
    open_subscriptions: AtomicUsize,
    cursors: MemoryCursorStore,
    groups: Arc<MemoryGroupStore>,
}

impl Shared {
    fn log(&self, family: Family) -> &FamilyLog {
        &self.logs[family.index()]
    }
}

/// The in-memory backend. Cheap to clone: clones share the same logs.
#[derive(Clone, Debug)]
pub struct MemoryBackend {
    shared: Arc<Shared>,
}

impl Default for MemoryBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryBackend {
    /// A backend with default settings.
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// Configure a backend.
    pub fn builder() -> MemoryBackendBuilder {
        MemoryBackendBuilder::default()
    }

    fn from_builder(config: MemoryBackendBuilder) -> Self {
        Self {
            shared: Arc::new(Shared {
                epoch: rand::random(),
                config,
                logs: [
                    FamilyLog::new(),
                    FamilyLog::new(),
                    FamilyLog::new(),
                    FamilyLog::new(),
                ],
                open_subscriptions: AtomicUsize::new(0),
                cursors: MemoryCursorStore::new(),
                groups: Arc::new(MemoryGroupStore::new()),
            }),
        }
    }

    /// This instance's random epoch (part of every cursor it issues).
    pub fn epoch(&self) -> u64 {
        self.shared.epoch
    }

    /// Subscriptions currently open (not yet dropped).
    pub fn open_subscriptions(&self) -> usize {
        self.shared.open_subscriptions.load(Ordering::Relaxed)
    }

    fn cursor(&self, family: Family, seq: u64) -> StreamCursor {
        encode_memory(family, self.shared.epoch, seq)
    }

    /// The sequence a cursor of this instance resumes after.
    fn sequence_of(
        &self,
        family: Family,
        cursor: &StreamCursor,
    ) -> Result<CursorStart<u64>, EngineError> {
        Ok(match decode_memory(cursor, family)? {
            CursorStart::Tail => CursorStart::Tail,
            CursorStart::Beginning => CursorStart::Beginning,
            CursorStart::After(p) if p.epoch == self.shared.epoch => CursorStart::After(p.seq),
            CursorStart::After(_) => {
                let oldest = self.shared.log(family).lock().evicted_through();
                return Err(EngineError::CursorExpired {
                    cursor: cursor.clone(),
                    oldest: Some(self.cursor(family, oldest)),
                    detail: "the cursor was issued by another memory-backend instance (another process or a restart); its events are gone".into(),
                });
            }
        })
    }

    /// Where a subscription from `cursor` starts: the decoded cursor, the
    /// sequence it resumes after, and the head it is caught up at.
    /// `CursorExpired` when the events after the cursor are gone (evicted,
    /// or beyond this instance's head).
    fn start_of(
        &self,
        family: Family,
        cursor: StreamCursor,
    ) -> Result<(CursorStart<u64>, u64, u64), EngineError> {
        let start = self.sequence_of(family, &cursor)?;
        let log = self.shared.log(family).lock();
        let head = log.head();
        let after = match start {
            CursorStart::Tail => head,
            CursorStart::Beginning => log.evicted_through(),
            CursorStart::After(seq) => {
                if seq > head {
                    return Err(EngineError::CursorExpired {
                        cursor,
                        oldest: Some(self.cursor(family, log.evicted_through())),
                        detail: format!("position {seq} is beyond this instance's head {head}"),
                    });
                }
                if seq < log.evicted_through() {
                    return Err(EngineError::CursorExpired {
                        cursor,
                        oldest: Some(self.cursor(family, log.evicted_through())),
                        detail: "the events after this position were evicted by retention".into(),
                    });
                }
                seq
            }
        };
        Ok((start, after, head))
    }

    /// Remove every event of `family` before the one at `cursor` (which
    /// stays, as the oldest retained); cursors before it then yield
    /// `CursorExpired`. Returns how many were removed. The same name and
    /// meaning as the other backends' `prune_before`.
    pub fn prune_before(
        &self,
        family: Family,
        cursor: &StreamCursor,
    ) -> Result<usize, EngineError> {
        match self.sequence_of(family, cursor)? {
            CursorStart::After(seq) => Ok(self.shared.log(family).lock().evict_before(seq)),
            _ => Err(EngineError::validation(
                "prune_before needs the cursor of an event, not tail or beginning",
            )),
        }
    }

    /// The former name of [`prune_before`](Self::prune_before).
    #[deprecated(note = "renamed prune_before, as in the other backends")]
    pub fn evict_before(
        &self,
        family: Family,
        cursor: &StreamCursor,
    ) -> Result<usize, EngineError> {
        self.prune_before(family, cursor)
    }

    /// Append a record given as wire fields (`execution_id`, `outcome`, ...),
    /// decoded at delivery exactly like a Valkey entry; an undecodable one
    /// is delivered as `Corrupt`. For bridges from other stores and tests.
    pub fn append_raw_record(
        &self,
        family: Family,
        fields: Vec<(String, String)>,
        meta: EventMeta,
    ) -> StreamCursor {
        let log = self.shared.log(family);
        let seq = log
            .lock()
            .push(meta, RecordBody::Raw(fields), self.retention());
        log.notify(seq);
        self.cursor(family, seq)
    }

    fn retention(&self) -> Retention {
        Retention {
            events: self.shared.config.retention,
            bytes: self.shared.config.retention_bytes,
        }
    }

    /// The configured checkpoint interval.
    pub fn checkpoint_interval(&self) -> std::time::Duration {
        self.shared.config.checkpoint_interval
    }
}

#[async_trait]
impl StreamBackend for MemoryBackend {
    fn backend_name(&self) -> &'static str {
        "memory"
    }

    async fn subscribe_family(
        &self,
        family: Family,
        cursor: StreamCursor,
        filter: &SubscriptionFilter,
    ) -> Result<DeliveryStream, EngineError> {
        filter.validate_for(family)?;
        let (_, after, head) = self.start_of(family, cursor)?;
        Ok(Subscription::start(
            self.shared.clone(),
            family,
            filter.clone(),
            after,
            head,
        ))
    }

    async fn resolve_cursor(
        &self,
        family: Family,
        cursor: StreamCursor,
    ) -> Result<StreamCursor, EngineError> {
        Ok(match self.start_of(family, cursor)? {
            (CursorStart::Beginning, _, _) => StreamCursor::beginning(),
            (_, after, _) => self.cursor(family, after),
        })
    }

    fn group_store(&self) -> Result<Arc<dyn GroupStore>, EngineError> {
        Ok(self.shared.groups.clone())
    }

    async fn bounds(&self, family: Family) -> Result<StreamBounds, EngineError> {
        let log = self.shared.log(family).lock();
        Ok(StreamBounds::new(
            self.cursor(family, log.evicted_through()),
            self.cursor(family, log.head()),
            Some(log.len() as u64),
        ))
    }

    async fn cursor_at(
        &self,
        family: Family,
        at: TimestampMs,
    ) -> Result<StreamCursor, EngineError> {
        let seq = self.shared.log(family).lock().position_at(at.0);
        Ok(self.cursor(family, seq))
    }
}

#[async_trait]
impl EventPublisher for MemoryBackend {
    async fn publish_batch(
        &self,
        events: Vec<(NewEvent, EventMeta)>,
    ) -> Result<Vec<StreamCursor>, EngineError> {
        for (event, meta) in &events {
            validate_new_event(event, meta)?;
        }
        // Lock every family the batch touches, in a fixed order, so the
        // whole batch becomes visible at once.
        let mut touched = [false; 4];
        for (event, _) in &events {
            touched[event.family().index()] = true;
        }
        let mut guards: Vec<_> = Family::ALL
            .iter()
            .map(|f| touched[f.index()].then(|| self.shared.log(*f).lock()))
            .collect();
        let retention = self.retention();
        let mut cursors = Vec::with_capacity(events.len());
        for (event, meta) in events {
            let family = event.family();
            let guard = guards[family.index()]
                .as_mut()
                .expect("family locked above");
            let seq = guard.push(meta, RecordBody::Event(event), retention);
            cursors.push(self.cursor(family, seq));
        }
        let heads: Vec<(Family, u64)> = Family::ALL
            .iter()
            .zip(&guards)
            .filter_map(|(f, g)| g.as_ref().map(|g| (*f, g.head())))
            .collect();
        drop(guards);
        for (family, head) in heads {
            self.shared.log(family).notify(head);
        }
        Ok(cursors)
    }
}

#[async_trait]
impl CursorStore for MemoryBackend {
    async fn load(&self, name: &str) -> Result<Option<StreamCursor>, EngineError> {
        self.shared.cursors.load(name).await
    }

    async fn store(&self, name: &str, cursor: &StreamCursor) -> Result<(), EngineError> {
        self.shared.cursors.store(name, cursor).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_cursor_from_another_instance_is_expired_not_restarted() {
        let a = MemoryBackend::new();
        let b = MemoryBackend::new();
        let exec = ff_core::types::ExecutionId::new(0);
        let cursor = a
            .publish(NewEvent::tag_attached(exec, "x"), EventMeta::new())
            .await
            .unwrap();
        let err = b
            .subscribe_family(Family::InstanceTags, cursor, &SubscriptionFilter::default())
            .await
            .err()
            .expect("foreign epoch must fail");
        assert!(
            matches!(
                err,
                EngineError::CursorExpired {
                    oldest: Some(_),
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn retention_bounds_each_family() {
        let backend = MemoryBackend::builder().retention(10).build();
        let exec = ff_core::types::ExecutionId::new(0);
        let batch: Vec<_> = (0..25)
            .map(|i| {
                (
                    NewEvent::tag_attached(exec, format!("t{i}")),
                    EventMeta::new(),
                )
            })
            .collect();
        let cursors = backend.publish_batch(batch).await.unwrap();
        let bounds = backend.bounds(Family::InstanceTags).await.unwrap();
        assert_eq!(bounds.retained, Some(10));
        assert_eq!(bounds.head, cursors[24]);
        assert_eq!(bounds.oldest, cursors[14]);
    }
}
