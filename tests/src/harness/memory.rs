//! The memory harness: a fresh in-process backend per test, with small
//! batches so batch boundaries are exercised.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ff_backend_memory::cursor_codec::{decode_memory, encode_memory};
use ff_backend_memory::MemoryBackend;
use ff_core::backend::{EventPublisher, StreamBackend};
use ff_core::engine_error::EngineError;
use ff_core::stream_events::record::Field;
use ff_core::stream_events::{EventMeta, Family};
use ff_core::stream_subscribe::{CursorStart, StreamCursor};
use ff_core::testkit::support::{drafts, publish_batch};
use ff_core::testkit::Harness;
use ffstream::AnyBackend;

/// Records a memory subscription copies out per read.
const BATCH: usize = 7;

/// A fresh memory backend per test.
pub struct MemoryHarness {
    /// The backend under test.
    pub backend: MemoryBackend,
    /// Whether the suite reaches the backend through an
    /// `ffstream::AnyBackend` handle rather than directly.
    through_ffstream: bool,
}

fn build() -> MemoryBackend {
    MemoryBackend::builder()
        .checkpoint_interval(Duration::from_millis(100))
        .read_batch(BATCH)
        .build()
}

/// A fresh backend with a 100 ms checkpoint interval and tiny batches.
pub async fn harness() -> MemoryHarness {
    MemoryHarness {
        backend: build(),
        through_ffstream: false,
    }
}

/// [`harness`], with the suite subscribing and publishing through
/// `ffstream`'s one handle: proves the handle forwards every method.
pub async fn harness_through_ffstream() -> MemoryHarness {
    MemoryHarness {
        backend: build(),
        through_ffstream: true,
    }
}

/// Split a raw record's metadata fields off into an [`EventMeta`].
fn split_meta(
    fields: &[(Field, String)],
) -> Result<(Vec<(String, String)>, EventMeta), EngineError> {
    let mut meta = EventMeta::new();
    let mut rest = Vec::new();
    for (field, value) in fields {
        match field {
            Field::Namespace => meta.namespace = Some(value.clone()),
            Field::Tags => {
                meta.tags =
                    serde_json::from_str::<BTreeMap<String, String>>(value).map_err(|e| {
                        EngineError::validation(format!(
                            "the memory harness stores tags as strings: {e}"
                        ))
                    })?
            }
            other => rest.push((other.name().to_owned(), value.clone())),
        }
    }
    Ok((rest, meta))
}

#[async_trait]
impl Harness for MemoryHarness {
    fn backend(&self) -> Arc<dyn StreamBackend> {
        match self.through_ffstream {
            true => Arc::new(AnyBackend::from(self.backend.clone())),
            false => Arc::new(self.backend.clone()),
        }
    }

    fn publisher(&self) -> Arc<dyn EventPublisher> {
        match self.through_ffstream {
            true => Arc::new(AnyBackend::from(self.backend.clone())),
            false => Arc::new(self.backend.clone()),
        }
    }

    fn checkpoint_interval(&self) -> Duration {
        self.backend.checkpoint_interval()
    }

    fn safety_net_poll(&self) -> Option<Duration> {
        None
    }

    /// One batch waits in the subscription's queue; nothing is read ahead.
    fn read_ahead_limit(&self) -> usize {
        BATCH
    }

    fn read_batch(&self) -> usize {
        BATCH
    }

    async fn expire_before(
        &self,
        family: Family,
        cursor: &StreamCursor,
    ) -> Result<(), EngineError> {
        self.backend.prune_before(family, cursor).map(|_| ())
    }

    async fn inject_raw(
        &self,
        family: Family,
        fields: &[(Field, String)],
    ) -> Result<StreamCursor, EngineError> {
        let (fields, meta) = split_meta(fields)?;
        Ok(self.backend.append_raw_record(family, fields, meta))
    }

    async fn kill_connections(&self) -> Result<(), EngineError> {
        Err(EngineError::unavailable(
            "kill_connections (in-process backend)",
        ))
    }

    async fn connection_ids(&self) -> Result<Vec<String>, EngineError> {
        Err(EngineError::unavailable(
            "connection_ids (in-process backend)",
        ))
    }

    async fn cursor_beyond_head(&self, family: Family) -> Result<StreamCursor, EngineError> {
        let head = self.backend.bounds(family).await?.head;
        match decode_memory(&head, family)? {
            CursorStart::After(p) => Ok(encode_memory(family, p.epoch, p.seq + 1000)),
            _ => unreachable!("bounds returns positioned cursors"),
        }
    }

    /// A cursor of another instance, as another process would hand out.
    async fn foreign_cursor(&self, family: Family) -> Result<StreamCursor, EngineError> {
        let other = build();
        let cursors = publish_batch(&other, &drafts(family, 2, "foreign")).await;
        Ok(cursors[0].clone())
    }

    async fn independent_publisher(&self) -> Result<Arc<dyn EventPublisher>, EngineError> {
        Err(EngineError::unavailable(
            "independent_publisher (the store lives in this process)",
        ))
    }

    async fn open_subscriptions(&self) -> Result<usize, EngineError> {
        Ok(self.backend.open_subscriptions())
    }
}
