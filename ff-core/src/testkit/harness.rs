//! [`Harness`]: what a backend author hands the conformance suite.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::backend::{EventPublisher, StreamBackend};
use crate::engine_error::EngineError;
use crate::stream_events::Family;
use crate::stream_subscribe::StreamCursor;

/// A backend under test, its publisher, and the fault hooks the suite uses
/// to test retention, corruption and reconnection deterministically.
///
/// Build one per test, isolated from other tests (a fresh memory instance,
/// a unique Valkey key prefix, a unique Postgres schema). Configure the
/// backend with a short checkpoint interval (≤ 1 s; 100–200 ms keeps the
/// suite fast) and any safety-net poll of at least 30 s, so the live test
/// proves wake-ups rather than polling.
#[async_trait]
pub trait Harness: Send + Sync + 'static {
    /// The backend under test.
    fn backend(&self) -> Arc<dyn StreamBackend>;

    /// A publisher writing to the same store.
    fn publisher(&self) -> Arc<dyn EventPublisher>;

    /// The checkpoint interval the backend was built with.
    fn checkpoint_interval(&self) -> Duration;

    /// The backend's safety-net poll interval, if it polls at all.
    fn safety_net_poll(&self) -> Option<Duration>;

    /// Make every event of `family` strictly before the event at `cursor`
    /// unretained, the way the backend's own retention would (trim, prune,
    /// evict). The event at `cursor` stays, as the oldest retained.
    async fn expire_before(&self, family: Family, cursor: &StreamCursor)
        -> Result<(), EngineError>;

    /// Append one entry to `family`'s stream that the shared decoder rejects
    /// (e.g. a malformed `execution_id`); return its cursor.
    async fn inject_corrupt(&self, family: Family) -> Result<StreamCursor, EngineError>;

    /// Sever every server connection the backend holds (Valkey `CLIENT KILL`
    /// by client name, Postgres `pg_terminate_backend` by
    /// `application_name`). `Ok(false)`: the backend holds no connections,
    /// and the reconnect test reports itself skipped.
    async fn kill_connections(&self) -> Result<bool, EngineError>;

    /// A cursor of `family` in this backend's format that lies beyond the
    /// store's head, as if the store had been restored from an older backup.
    async fn cursor_beyond_head(&self, family: Family) -> Result<StreamCursor, EngineError>;

    /// How many subscriptions (or their dedicated connections) the backend
    /// holds open right now; used to prove that dropping releases them.
    async fn open_subscriptions(&self) -> Result<usize, EngineError>;
}
