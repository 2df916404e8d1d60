//! [`MemoryBackendBuilder`]: retention, checkpoint interval, batch size.

use std::time::Duration;

use crate::MemoryBackend;

/// Default events retained per family.
pub const DEFAULT_RETENTION: usize = 1_000_000;
/// Default approximate byte budget per family.
pub const DEFAULT_RETENTION_BYTES: usize = 256 * 1024 * 1024;
/// Default checkpoint interval.
pub const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);
/// Default number of records a subscription takes per lock.
pub const DEFAULT_READ_BATCH: usize = 256;

/// The former name of [`DEFAULT_READ_BATCH`].
#[deprecated(note = "renamed DEFAULT_READ_BATCH, as in the other backends")]
pub const DEFAULT_BATCH_SIZE: usize = DEFAULT_READ_BATCH;

/// Builds a [`MemoryBackend`].
///
/// ```
/// use std::time::Duration;
/// let backend = ff_backend_memory::MemoryBackend::builder()
///     .retention(10_000)
///     .checkpoint_interval(Duration::from_millis(200))
///     .build();
/// # drop(backend);
/// ```
#[derive(Clone, Debug)]
pub struct MemoryBackendBuilder {
    pub(crate) retention: usize,
    pub(crate) retention_bytes: usize,
    pub(crate) checkpoint_interval: Duration,
    pub(crate) read_batch: usize,
}

impl Default for MemoryBackendBuilder {
    fn default() -> Self {
        Self {
            retention: DEFAULT_RETENTION,
            retention_bytes: DEFAULT_RETENTION_BYTES,
            checkpoint_interval: DEFAULT_CHECKPOINT_INTERVAL,
            read_batch: DEFAULT_READ_BATCH,
        }
    }
}

impl MemoryBackendBuilder {
    /// Keep at most `events` per family; older events are evicted and
    /// cursors pointing before them become `CursorExpired`. At least 1.
    pub fn retention(mut self, events: usize) -> Self {
        self.retention = events.max(1);
        self
    }

    /// Keep at most about `bytes` of events per family (whichever of this
    /// and [`retention`](Self::retention) is reached first evicts).
    pub fn retention_bytes(mut self, bytes: usize) -> Self {
        self.retention_bytes = bytes.max(1);
        self
    }

    /// How long a subscription may scan filtered-out events without
    /// yielding before it yields a `Checkpoint`.
    pub fn checkpoint_interval(mut self, interval: Duration) -> Self {
        self.checkpoint_interval = interval;
        self
    }

    /// Records a subscription copies out per lock acquisition (memory per
    /// subscription is O(batch)). At least 1.
    pub fn read_batch(mut self, records: usize) -> Self {
        self.read_batch = records.max(1);
        self
    }

    /// The former name of [`read_batch`](Self::read_batch).
    #[deprecated(note = "renamed read_batch, as in the other backends")]
    pub fn batch_size(self, records: usize) -> Self {
        self.read_batch(records)
    }

    /// Build the backend.
    pub fn build(self) -> MemoryBackend {
        debug_assert!(self.retention >= 1 && self.read_batch >= 1);
        MemoryBackend::from_builder(self)
    }
}
