//! [`Harness`]: what a backend author hands the conformance suite.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::backend::{EventPublisher, StreamBackend};
use crate::cursor::StreamCursor;
use crate::error::EngineError;
use crate::event::record::Field;
use crate::event::Family;

/// A backend under test, its publisher, and the fault hooks the suite uses
/// to test retention, corruption, reconnection and foreign cursors
/// deterministically, not by timing.
///
/// Build one per test, isolated from other tests (a fresh memory instance,
/// a unique Valkey key prefix, a unique Postgres schema). Configure the
/// backend with:
/// - a short checkpoint interval (≤ 1 s; 100–200 ms keeps the suite fast);
/// - any safety-net poll of at least 30 s, so the live tests prove wake-ups
///   rather than polling;
/// - a small read batch (tens of events), so the suite's backlogs span many
///   reads and a trim can land in the middle of one.
///
/// A hook the backend genuinely cannot provide returns
/// [`EngineError::Unavailable`]; the tests that need it then fail unless the
/// suite macro is told the capability is absent (see
/// [`conformance_suite!`](crate::conformance_suite)), in which case the test
/// runner reports them as ignored. A hook that returns `Ok` must have acted:
/// the suite checks that it did.
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

    /// How the backend orders each family's events; [`EventOrder::Total`]
    /// unless the backend splits families into partitions.
    fn event_order(&self) -> EventOrder {
        EventOrder::Total
    }

    /// The most events one subscription reads ahead of a consumer that has
    /// stopped reading: what it buffers (e.g. the read batch × the batches
    /// its channel holds, plus the batch in flight). The suite checks that
    /// a stalled subscription never holds more, so the bound is what keeps
    /// memory O(batch) under any backlog (guarantee 6). Keep it well below 1,000.
    fn read_ahead_limit(&self) -> usize;

    /// The most events one read of a subscription fetches (the read batch
    /// or page size the backend was built with; for a backend that reads
    /// each partition on its own, one partition's read). The suite sweeps
    /// backlogs of one less, exactly and one more than this and than
    /// [`read_ahead_limit`](Self::read_ahead_limit), where `CaughtUp`
    /// bugs at a full read hide.
    fn read_batch(&self) -> usize;

    /// Make every event of `family` strictly before the event at `cursor`
    /// unretained, the way the backend's own retention would (trim, prune,
    /// evict). The event at `cursor` stays, as the oldest retained.
    async fn expire_before(&self, family: Family, cursor: &StreamCursor)
        -> Result<(), EngineError>;

    /// Append one record to `family`'s stream the way a producer outside ff
    /// would write it — `fields` by their wire names ([`Field::name`]), the
    /// metadata as [`Field::Namespace`] and [`Field::Tags`] (a JSON object
    /// text) — without validating anything, and return its cursor. The
    /// suite stores undecodable records (`Corrupt`), non-canonical ones
    /// (upper-case UUIDs) and records of other schema versions
    /// ([`Field::SchemaVersion`], `v`: a higher number, `0`, a word)
    /// through it. Capability `raw_records`.
    ///
    /// Store each value as the store's own producers would: a store with
    /// typed columns may re-encode the tags object (JSON whitespace and key
    /// order are not kept), but every key and value stays byte for byte —
    /// no case folding, trimming or Unicode normalisation. When the
    /// store's types cannot hold a value at all (a word in an integer `v`
    /// column), answer [`EngineError::Validation`] naming it: no producer
    /// can write such a record, and the suite skips that case. Never
    /// answer `Validation` for a value the store would accept from another
    /// producer.
    async fn inject_raw(
        &self,
        family: Family,
        fields: &[(Field, String)],
    ) -> Result<StreamCursor, EngineError>;

    /// Sever every server connection the backend holds — the publisher's
    /// and every subscription's, wake-up listeners included — (Valkey
    /// `CLIENT KILL` by client name, Postgres `pg_terminate_backend` by
    /// `application_name`). Capability `reconnect`, with
    /// [`connection_ids`](Self::connection_ids).
    async fn kill_connections(&self) -> Result<(), EngineError>;

    /// The server-side identities of the connections the backend holds now
    /// (Valkey client ids, Postgres backend pids), the publisher's
    /// included: the suite proves with them that a reconnect really
    /// replaced every connection, and checks that the list is not empty
    /// after a publish while no subscription is open. Capability
    /// `reconnect`.
    async fn connection_ids(&self) -> Result<Vec<String>, EngineError>;

    /// A cursor of `family` in this backend's format that lies beyond the
    /// store's head, as if the store had been restored from an older backup.
    async fn cursor_beyond_head(&self, family: Family) -> Result<StreamCursor, EngineError>;

    /// A cursor of `family` that another instance of this backend handed
    /// out (another process's memory backend, another key prefix or
    /// server, another database) for an event this instance never stored.
    /// The suite expects `InvalidCursor` or `CursorExpired` for it — never
    /// events, never an endless wait. Capability `foreign_cursor`.
    async fn foreign_cursor(&self, family: Family) -> Result<StreamCursor, EngineError>;

    /// A publisher on the same store that shares nothing in-process with
    /// [`backend`](Self::backend) (its own client, pool and wake-up
    /// channels), as another process's would: live delivery from it proves
    /// the cross-process wake-up path. Capability `cross_process`.
    async fn independent_publisher(&self) -> Result<Arc<dyn EventPublisher>, EngineError>;

    /// How many subscriptions (or their dedicated connections) the backend
    /// holds open right now; used to prove that dropping releases them.
    async fn open_subscriptions(&self) -> Result<usize, EngineError>;
}

/// How a backend orders a family's events: what the suite expects of the
/// delivery order and of the cursors publish returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EventOrder {
    /// One total order, equal to publish order; an event is delivered with
    /// the cursor publish returned for it.
    Total,
    /// The family is split into `partitions` partitions: an event goes to
    /// partition `N mod partitions` of its execution id `{fp:N}`. Each
    /// partition keeps publish order; a subscription interleaves the
    /// partitions in an order of its own, and its cursors (one position
    /// per partition) resume exactly after what it yielded from each. The
    /// cursor publish returns names the event's position in its partition
    /// only, so the suite starts subscriptions from cursors a subscription
    /// (or `bounds`) gave, and trims with them.
    PerPartition {
        /// How many partitions each family has (at least 2).
        partitions: u16,
    },
}

impl EventOrder {
    /// A per-partition order over `partitions` partitions.
    pub fn per_partition(partitions: u16) -> Self {
        Self::PerPartition { partitions }
    }

    /// The partition an event of `execution` goes to (0 under a total order).
    pub fn partition_of(self, execution: &crate::types::ExecutionId) -> u16 {
        match self {
            Self::Total => 0,
            Self::PerPartition { partitions } => execution.partition() % partitions.max(1),
        }
    }
}

/// An optional ability of a harness, named in
/// [`conformance_suite!`](crate::conformance_suite)'s `absent:` list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Capability {
    /// `kill_connections` and `connection_ids`: the backend holds server
    /// connections the suite can sever.
    Reconnect,
    /// `foreign_cursor`: another instance's cursors can be made.
    ForeignCursor,
    /// `independent_publisher`: another process can publish to the store.
    CrossProcess,
    /// `inject_raw`: records can be stored as an outside producer writes
    /// them, undecodable ones included.
    RawRecords,
}

impl Capability {
    /// The name used in the macro's `absent:` list.
    pub fn name(self) -> &'static str {
        match self {
            Self::Reconnect => "reconnect",
            Self::ForeignCursor => "foreign_cursor",
            Self::CrossProcess => "cross_process",
            Self::RawRecords => "raw_records",
        }
    }
}

/// Lower-case capability names for the suite macro's `absent:` list (so a
/// misspelt name is a compile error).
#[doc(hidden)]
#[allow(non_upper_case_globals)]
pub mod capability {
    use super::Capability;
    /// See [`Capability::Reconnect`].
    pub const reconnect: Capability = Capability::Reconnect;
    /// See [`Capability::ForeignCursor`].
    pub const foreign_cursor: Capability = Capability::ForeignCursor;
    /// See [`Capability::CrossProcess`].
    pub const cross_process: Capability = Capability::CrossProcess;
    /// See [`Capability::RawRecords`].
    pub const raw_records: Capability = Capability::RawRecords;
}

/// Unwrap a hook's result: `Unavailable` means the harness lacks the
/// capability although the suite was not told it is absent.
pub(crate) fn hook<T>(capability: Capability, what: &str, result: Result<T, EngineError>) -> T {
    match result {
        Ok(v) => v,
        Err(EngineError::Unavailable { .. }) => panic!(
            "the harness cannot {what} (Unavailable): if the backend genuinely lacks this, \
             declare it in the suite macro — `conformance_suite!(harness, absent: [{}])` — and \
             the test is reported as ignored",
            capability.name()
        ),
        Err(e) => panic!("harness hook failed to {what}: {e}"),
    }
}

/// For a test whose capability was declared absent (and is run anyway with
/// `--ignored`): check that the harness really lacks it.
pub async fn capability_is_absent<H: Harness>(h: &H, capability: Capability) {
    let family = Family::Completion;
    let unavailable = match capability {
        Capability::Reconnect => {
            matches!(
                h.kill_connections().await,
                Err(EngineError::Unavailable { .. })
            ) && matches!(
                h.connection_ids().await,
                Err(EngineError::Unavailable { .. })
            )
        }
        Capability::ForeignCursor => matches!(
            h.foreign_cursor(family).await,
            Err(EngineError::Unavailable { .. })
        ),
        Capability::CrossProcess => matches!(
            h.independent_publisher().await,
            Err(EngineError::Unavailable { .. })
        ),
        Capability::RawRecords => matches!(
            h.inject_raw(family, &[]).await,
            Err(EngineError::Unavailable { .. })
        ),
    };
    assert!(
        unavailable,
        "capability `{}` is declared absent, but the harness's hooks for it work: remove it from `absent:`",
        capability.name()
    );
}
