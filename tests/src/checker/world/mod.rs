//! Worlds: a backend on real servers (or in process), the ways to publish
//! into it, the faults it can suffer, and a direct read of what it stores.

mod memory;
mod postgres;
mod valkey;
mod valkey_cluster;

use std::sync::Arc;

use async_trait::async_trait;
use ff_core::backend::{CursorStore, DeliveryStream, EventPublisher, StreamBackend};
use ff_core::engine_error::EngineError;
use ff_core::filter::SubscriptionFilter;
use ff_core::stream_events::{EventMeta, Family, NewEvent};
use ff_core::stream_subscribe::StreamCursor;
use rand::rngs::StdRng;

use std::sync::atomic::{AtomicU64, Ordering};

use ff_core::stream_events::CompletionOutcome;
use ff_core::types::ExecutionId;

use super::history::{DeliveryPath, PosKey, PublishPath, Recorder, CK_TAG};
use super::plan::Draft;
use super::truth::StoreState;

pub use memory::MemoryWorld;
pub use postgres::PostgresWorld;
pub use valkey::ValkeyWorld;
pub use valkey_cluster::ValkeyClusterWorld;

/// Which world a run uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WorldKind {
    /// The embedded backend, with the gateway.
    Memory,
    /// A Valkey primary with a replica, behind a proxy.
    Valkey,
    /// A Postgres server with a standby, behind a proxy.
    Postgres,
    /// A Valkey Cluster of three primaries with a replica each.
    ValkeyCluster,
}

impl WorldKind {
    /// Every world, in the order `--world all` runs them.
    pub const ALL: [WorldKind; 4] = [
        WorldKind::Memory,
        WorldKind::Valkey,
        WorldKind::Postgres,
        WorldKind::ValkeyCluster,
    ];

    /// Its name on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            WorldKind::Memory => "memory",
            WorldKind::Valkey => "valkey",
            WorldKind::Postgres => "postgres",
            WorldKind::ValkeyCluster => "valkey-cluster",
        }
    }

    /// Parse a name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// A fault the nemesis injects (and heals before it returns).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// `kill -9` of the server, then a restart on the same data.
    KillRestart,
    /// SIGSTOP of the server for this many ms (a black hole), then SIGCONT.
    Pause(u64),
    /// A replica that missed the tail, with a clock behind, is promoted
    /// (Valkey): new entries may reuse ids consumers already hold.
    LossyFailover,
    /// A standby stops replaying, the primary goes on, then the standby is
    /// promoted and takes over (Postgres).
    PromoteLaggingCopy,
    /// A transaction with an older id stays open for this many ms while
    /// others publish, then commits an event of its own (Postgres).
    OldTransaction(u64),
    /// Retention removes the older half of a family.
    Prune,
    /// Time-range pruning at an isolation level (`read committed`,
    /// `repeatable read`, `serializable`) while a writer commits into a
    /// range being removed (Postgres).
    PrunePartitions(&'static str),
    /// A publisher and a subscriber configured with different partition
    /// counts (Valkey).
    SettingMismatch,
    /// The gateway is shut down and started again on the same port.
    GatewayRestart,
    /// `CLUSTER FAILOVER` on a replica: it catches up, then the roles swap
    /// (Valkey Cluster).
    PlannedFailover,
    /// `CLUSTER FAILOVER FORCE` or `TAKEOVER`: the replica takes over
    /// without waiting for the primary, and may miss its tail.
    ForcedFailover,
    /// A slot moves to another primary and stays `MIGRATING`/`IMPORTING`
    /// for a while with some of its keys moved (Valkey Cluster).
    SlotMigration,
}

/// What a fault may use: the history, fresh event numbers for the events
/// it publishes itself, and the run's executions.
pub struct FaultCtx<'a> {
    /// The history.
    pub rec: &'a Recorder,
    /// The next event number for a fault's own events.
    pub next_ck: &'a AtomicU64,
    /// The run's executions.
    pub executions: &'a [ExecutionId],
    /// Where a fault hands out a publish cursor for a consumer to start
    /// from (under [`HANDED_BY_FAULT`](crate::checker::consumer::HANDED_BY_FAULT)).
    pub handed: &'a tokio::sync::watch::Sender<crate::checker::consumer::Handed>,
    /// The consumers' operation queues, for faults that move clients.
    pub consumers: &'a [tokio::sync::mpsc::UnboundedSender<crate::checker::plan::ConsumerOp>],
}

impl FaultCtx<'_> {
    /// Send every other consumer away for `d` (they come back from their
    /// own positions); the rest stay.
    pub fn send_half_away(&self, d: std::time::Duration) {
        for c in self.consumers.iter().step_by(2) {
            let _ = c.send(crate::checker::plan::ConsumerOp::Away(d));
        }
    }
}

impl FaultCtx<'_> {
    /// A fresh event of `family` (with its `ck` tag) for a fault to publish.
    pub fn draft(&self, family: Family) -> Draft {
        let ck = self.next_ck.fetch_add(1, Ordering::Relaxed);
        let execution = self.executions[ck as usize % self.executions.len()];
        let event = match family {
            Family::Completion => NewEvent::completion(execution, CompletionOutcome::Success),
            _ => NewEvent::tag_attached(execution, "fault"),
        };
        Draft {
            ck,
            event,
            meta: EventMeta::new().with_tag(CK_TAG, ck.to_string()),
        }
    }
}

/// What one event's publish returned.
pub type PublishResult = Result<(Option<StreamCursor>, Option<PosKey>), String>;

/// A backend under test and its servers.
#[async_trait]
pub trait World: Send + Sync {
    /// Its kind.
    fn kind(&self) -> WorldKind;
    /// Partitions per family.
    fn partitions(&self) -> u16;
    /// Whether tails and publish cursors resume exactly (not Postgres).
    fn exact(&self) -> bool;
    /// How events can be published here.
    fn publish_paths(&self) -> Vec<PublishPath>;
    /// How events can be read here.
    fn delivery_paths(&self) -> Vec<DeliveryPath>;
    /// The faults this world can suffer.
    fn faults(&self) -> Vec<Fault>;
    /// The routine operations run on it (planned failover, slot
    /// migration), drawn apart from the faults so a new one keeps every
    /// seed's earlier schedule.
    fn operations(&self) -> Vec<Fault> {
        Vec::new()
    }
    /// A backend to read from (a fresh instance where the backend allows).
    async fn reader(&self) -> Result<Arc<dyn StreamBackend>, EngineError>;
    /// The cursor store consumers persist positions in.
    fn store(&self) -> Arc<dyn CursorStore>;
    /// Publish `events` through `path`; one result per event.
    async fn publish(
        &self,
        path: PublishPath,
        events: Vec<(NewEvent, EventMeta)>,
    ) -> Vec<PublishResult>;
    /// Subscribe to some partitions only (Valkey).
    async fn subscribe_partitions(
        &self,
        family: Family,
        partitions: &[u16],
        cursor: StreamCursor,
        filter: &SubscriptionFilter,
    ) -> Result<DeliveryStream, EngineError> {
        let _ = (family, partitions, cursor, filter);
        Err(EngineError::Unavailable {
            op: "subscribe_partitions".into(),
        })
    }
    /// Inject `fault`, record its window, heal it.
    async fn inject(
        &self,
        fault: &Fault,
        rng: &mut StdRng,
        ctx: &FaultCtx<'_>,
    ) -> Result<(), String>;
    /// The stored position a publish cursor names.
    fn position(&self, family: Family, cursor: &StreamCursor) -> Option<PosKey>;
    /// What the store holds now, read directly.
    async fn state(&self, rec: &Recorder) -> Result<StoreState, String>;
}

/// Run blocking test-support work (starting, killing servers) on this
/// worker without stalling the runtime.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// A loopback address.
fn addr(port: u16) -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], port))
}

/// Publish `events` one call each; one result per event.
async fn publish_each(
    publisher: &dyn EventPublisher,
    events: Vec<(NewEvent, EventMeta)>,
) -> Vec<PublishResult> {
    let mut out = Vec::with_capacity(events.len());
    for (event, meta) in events {
        out.push(
            publisher
                .publish(event, meta)
                .await
                .map(|c| (Some(c), None))
                .map_err(|e| e.to_string()),
        );
    }
    out
}

/// Publish `events` as one all-or-none batch; one result per event.
async fn publish_all(
    publisher: &dyn EventPublisher,
    events: Vec<(NewEvent, EventMeta)>,
) -> Vec<PublishResult> {
    let n = events.len();
    match publisher.publish_batch(events).await {
        Ok(cursors) => cursors.into_iter().map(|c| Ok((Some(c), None))).collect(),
        Err(e) => (0..n).map(|_| Err(e.to_string())).collect(),
    }
}

/// Start a world of `kind`, its settings drawn from `rng`.
pub async fn start(kind: WorldKind, rng: &mut StdRng) -> Result<Arc<dyn World>, String> {
    Ok(match kind {
        WorldKind::Memory => Arc::new(MemoryWorld::start(rng)),
        WorldKind::Valkey => Arc::new(ValkeyWorld::start(rng).await?),
        WorldKind::Postgres => Arc::new(PostgresWorld::start(rng).await?),
        WorldKind::ValkeyCluster => Arc::new(ValkeyClusterWorld::start(rng).await?),
    })
}

/// The `ck` of an event's metadata.
pub fn ck_of(meta: &EventMeta) -> Option<u64> {
    meta.tags.get(super::history::CK_TAG)?.parse().ok()
}
