//! [`AnyBackend`]: one handle over whichever backend a URL named.
//!
//! Every trait method forwards to the backend it wraps, the provided ones
//! too, so a backend that overrides one (Postgres's single `publish`, the
//! groups a backend keeps) behaves through the handle exactly as it does
//! alone.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use ff_core::backend::{CursorStore, DeliveryStream, EventPublisher, StreamBackend, StreamBounds};
use ff_core::group::GroupStore;
use ff_core::{
    CompletionSubscription, EngineError, EventMeta, Family, InstanceTagSubscription,
    LeaseHistorySubscription, NewEvent, SignalDeliverySubscription, StreamCursor,
    SubscriptionFilter, TimestampMs,
};

#[cfg(not(any(feature = "memory", feature = "valkey", feature = "postgres")))]
compile_error!("ffstream needs at least one backend feature: memory, valkey or postgres");

/// One backend, chosen at run time, that subscribes ([`StreamBackend`]),
/// publishes ([`EventPublisher`]) and stores consumer positions
/// ([`CursorStore`]).
///
/// Open one with [`connect`](crate::connect), or wrap a backend you
/// configured yourself with `AnyBackend::from`. Clones share the
/// backend's connections. Where a layer wants trait objects, one
/// `Arc<AnyBackend>` serves as all three:
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), ffstream::EngineError> {
/// use std::sync::Arc;
/// use ffstream::{CursorStore, EventPublisher, StreamBackend};
///
/// let backend = Arc::new(ffstream::connect("memory:").await?);
/// let subscribe: Arc<dyn StreamBackend> = backend.clone();
/// let publish: Arc<dyn EventPublisher> = backend.clone();
/// let positions: Arc<dyn CursorStore> = backend;
/// # let _ = (subscribe, publish, positions);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct AnyBackend {
    inner: Inner,
    label: String,
}

/// The backends compiled in.
#[derive(Clone)]
enum Inner {
    #[cfg(feature = "memory")]
    Memory(ff_backend_memory::MemoryBackend),
    #[cfg(feature = "valkey")]
    Valkey(ff_backend_valkey::ValkeyBackend),
    #[cfg(feature = "postgres")]
    Postgres(ff_backend_postgres::PostgresBackend),
}

/// Evaluate `$body` with `$b` bound to the wrapped backend.
macro_rules! each {
    ($self:expr, $b:ident => $body:expr) => {
        match &$self.inner {
            #[cfg(feature = "memory")]
            Inner::Memory($b) => $body,
            #[cfg(feature = "valkey")]
            Inner::Valkey($b) => $body,
            #[cfg(feature = "postgres")]
            Inner::Postgres($b) => $body,
        }
    };
}

impl AnyBackend {
    /// The URL it was opened from with any password hidden, or the
    /// backend's name when it was built from a backend value: safe to
    /// print and log.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// How many partitions each family is split into: events keep publish
    /// order within a partition. 1 except for a partitioned Valkey backend.
    pub fn partitions(&self) -> u16 {
        match &self.inner {
            #[cfg(feature = "valkey")]
            Inner::Valkey(b) => b.partitions(),
            // Unreachable when Valkey is the only backend compiled in.
            #[allow(unreachable_patterns)]
            _ => 1,
        }
    }

    /// Send what the backend still owes other processes (Postgres sends
    /// the wake-ups of this process's publishes) and close it. Call before
    /// the process exits; other backends have nothing to send.
    pub async fn close(&self) {
        #[cfg(feature = "postgres")]
        if let Inner::Postgres(b) = &self.inner {
            b.close().await;
        }
    }

    /// The memory backend, for its own methods.
    #[cfg(feature = "memory")]
    pub fn as_memory(&self) -> Option<&ff_backend_memory::MemoryBackend> {
        match &self.inner {
            Inner::Memory(b) => Some(b),
            // Unreachable when it is the only backend compiled in.
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }

    /// The Valkey backend, for its native paths (its `append_cmd` for a
    /// caller's own `MULTI`/script, raw connections, retention).
    #[cfg(feature = "valkey")]
    pub fn as_valkey(&self) -> Option<&ff_backend_valkey::ValkeyBackend> {
        match &self.inner {
            Inner::Valkey(b) => Some(b),
            // Unreachable when it is the only backend compiled in.
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }

    /// The Postgres backend, for its native paths (publishing and storing
    /// cursors inside the caller's transaction, retention).
    #[cfg(feature = "postgres")]
    pub fn as_postgres(&self) -> Option<&ff_backend_postgres::PostgresBackend> {
        match &self.inner {
            Inner::Postgres(b) => Some(b),
            // Unreachable when it is the only backend compiled in.
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }

    /// The same backend with `label` shown for it.
    pub(crate) fn with_label(mut self, label: String) -> Self {
        self.label = label;
        self
    }
}

impl fmt::Debug for AnyBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AnyBackend")
            .field("backend", &self.backend_name())
            .field("label", &self.label)
            .finish()
    }
}

#[cfg(feature = "memory")]
impl From<ff_backend_memory::MemoryBackend> for AnyBackend {
    fn from(backend: ff_backend_memory::MemoryBackend) -> Self {
        Self {
            inner: Inner::Memory(backend),
            label: "memory:".to_owned(),
        }
    }
}

#[cfg(feature = "valkey")]
impl From<ff_backend_valkey::ValkeyBackend> for AnyBackend {
    fn from(backend: ff_backend_valkey::ValkeyBackend) -> Self {
        Self {
            inner: Inner::Valkey(backend),
            label: "valkey".to_owned(),
        }
    }
}

#[cfg(feature = "postgres")]
impl From<ff_backend_postgres::PostgresBackend> for AnyBackend {
    fn from(backend: ff_backend_postgres::PostgresBackend) -> Self {
        Self {
            inner: Inner::Postgres(backend),
            label: "postgres".to_owned(),
        }
    }
}

#[async_trait]
impl StreamBackend for AnyBackend {
    fn backend_name(&self) -> &'static str {
        each!(self, b => StreamBackend::backend_name(b))
    }

    async fn subscribe_family(
        &self,
        family: Family,
        cursor: StreamCursor,
        filter: &SubscriptionFilter,
    ) -> Result<DeliveryStream, EngineError> {
        each!(self, b => StreamBackend::subscribe_family(b, family, cursor, filter).await)
    }

    async fn resolve_cursor(
        &self,
        family: Family,
        cursor: StreamCursor,
    ) -> Result<StreamCursor, EngineError> {
        each!(self, b => StreamBackend::resolve_cursor(b, family, cursor).await)
    }

    async fn bounds(&self, family: Family) -> Result<StreamBounds, EngineError> {
        each!(self, b => StreamBackend::bounds(b, family).await)
    }

    async fn cursor_at(
        &self,
        family: Family,
        at: TimestampMs,
    ) -> Result<StreamCursor, EngineError> {
        each!(self, b => StreamBackend::cursor_at(b, family, at).await)
    }

    fn group_store(&self) -> Result<Arc<dyn GroupStore>, EngineError> {
        each!(self, b => StreamBackend::group_store(b))
    }

    async fn subscribe_lease_history(
        &self,
        cursor: StreamCursor,
        filter: &SubscriptionFilter,
    ) -> Result<LeaseHistorySubscription, EngineError> {
        each!(self, b => StreamBackend::subscribe_lease_history(b, cursor, filter).await)
    }

    async fn subscribe_completion(
        &self,
        cursor: StreamCursor,
        filter: &SubscriptionFilter,
    ) -> Result<CompletionSubscription, EngineError> {
        each!(self, b => StreamBackend::subscribe_completion(b, cursor, filter).await)
    }

    async fn subscribe_signal_delivery(
        &self,
        cursor: StreamCursor,
        filter: &SubscriptionFilter,
    ) -> Result<SignalDeliverySubscription, EngineError> {
        each!(self, b => StreamBackend::subscribe_signal_delivery(b, cursor, filter).await)
    }

    async fn subscribe_instance_tags(
        &self,
        cursor: StreamCursor,
        filter: &SubscriptionFilter,
    ) -> Result<InstanceTagSubscription, EngineError> {
        each!(self, b => StreamBackend::subscribe_instance_tags(b, cursor, filter).await)
    }
}

#[async_trait]
impl EventPublisher for AnyBackend {
    async fn publish_batch(
        &self,
        events: Vec<(NewEvent, EventMeta)>,
    ) -> Result<Vec<StreamCursor>, EngineError> {
        each!(self, b => EventPublisher::publish_batch(b, events).await)
    }

    async fn publish(&self, event: NewEvent, meta: EventMeta) -> Result<StreamCursor, EngineError> {
        each!(self, b => EventPublisher::publish(b, event, meta).await)
    }
}

#[async_trait]
impl CursorStore for AnyBackend {
    async fn load(&self, name: &str) -> Result<Option<StreamCursor>, EngineError> {
        each!(self, b => CursorStore::load(b, name).await)
    }

    async fn store(&self, name: &str, cursor: &StreamCursor) -> Result<(), EngineError> {
        each!(self, b => CursorStore::store(b, name, cursor).await)
    }
}
