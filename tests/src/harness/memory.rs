//! The memory harness: a fresh in-process backend per test, with small
//! batches so batch boundaries are exercised.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ff_backend_memory::MemoryBackend;
use ff_core::backend::{EventPublisher, StreamBackend};
use ff_core::engine_error::EngineError;
use ff_core::stream_events::{EventMeta, Family};
use ff_core::stream_subscribe::{decode_memory, encode_memory, CursorStart, StreamCursor};
use ff_core::testkit::Harness;

/// A fresh memory backend per test.
pub struct MemoryHarness {
    /// The backend under test.
    pub backend: MemoryBackend,
}

/// A fresh backend with a 100 ms checkpoint interval and tiny batches.
pub async fn harness() -> MemoryHarness {
    MemoryHarness {
        backend: MemoryBackend::builder()
            .checkpoint_interval(Duration::from_millis(100))
            .batch_size(7)
            .build(),
    }
}

#[async_trait]
impl Harness for MemoryHarness {
    fn backend(&self) -> Arc<dyn StreamBackend> {
        Arc::new(self.backend.clone())
    }

    fn publisher(&self) -> Arc<dyn EventPublisher> {
        Arc::new(self.backend.clone())
    }

    fn checkpoint_interval(&self) -> Duration {
        self.backend.checkpoint_interval()
    }

    fn safety_net_poll(&self) -> Option<Duration> {
        None
    }

    async fn expire_before(
        &self,
        family: Family,
        cursor: &StreamCursor,
    ) -> Result<(), EngineError> {
        self.backend.evict_before(family, cursor).map(|_| ())
    }

    async fn inject_corrupt(&self, family: Family) -> Result<StreamCursor, EngineError> {
        let fields = vec![
            ("execution_id".to_owned(), "not-an-execution-id".to_owned()),
            ("type".to_owned(), "acquired".to_owned()),
        ];
        Ok(self
            .backend
            .append_raw_record(family, fields, EventMeta::new()))
    }

    async fn kill_connections(&self) -> Result<bool, EngineError> {
        Ok(false)
    }

    async fn cursor_beyond_head(&self, family: Family) -> Result<StreamCursor, EngineError> {
        let head = self.backend.bounds(family).await?.head;
        match decode_memory(&head, family)? {
            CursorStart::After(p) => Ok(encode_memory(family, p.epoch, p.seq + 1000)),
            _ => unreachable!("bounds returns positioned cursors"),
        }
    }

    async fn open_subscriptions(&self) -> Result<usize, EngineError> {
        Ok(self.backend.open_subscriptions())
    }
}
