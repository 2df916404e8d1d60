//! Valkey Cluster: three primaries with a replica each, and the operations a
//! managed service runs every week — planned and forced failover, a slot
//! migration held open under load, kill -9 of a primary — besides the
//! faults a single server suffers. Its store is read with raw `XRANGE` on
//! whichever primary serves each key.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ff_backend_valkey::{ValkeyBackend, ValkeyConfig};
use ff_core::backend::{CursorStore, DeliveryStream, StreamBackend};
use ff_core::engine_error::EngineError;
use ff_core::filter::SubscriptionFilter;
use ff_core::stream_events::{EventMeta, Family, NewEvent};
use ff_core::stream_subscribe::StreamCursor;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::Rng;
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::valkey::{
    delivery_paths, position_of, publish_mismatched, raw_xadd_args, stream_keys, xadd_id,
    xrange_cks, PUBLISH_PATHS,
};
use super::{
    blocking, publish_all, publish_each, Fault, FaultCtx, PublishResult, World, WorldKind,
};
use crate::checker::history::{DeliveryPath, PosKey, PublishPath};
use crate::checker::truth::{StoreState, StoredEvent};
use crate::support::{unique_name, ClusterOptions, Reply, ValkeyCluster};

/// How long a failover may take to show in the topology.
const FAILOVER_DEADLINE: Duration = Duration::from_secs(30);

/// The Valkey Cluster world.
pub struct ValkeyClusterWorld {
    /// Held for the whole of a fault, so raw reads and writes see the
    /// cluster between operations.
    cluster: Mutex<ValkeyCluster>,
    config: ValkeyConfig,
    publisher: Arc<ValkeyBackend>,
    removed: std::sync::Mutex<BTreeMap<Family, Vec<StoredEvent>>>,
}

/// How a replica takes over.
#[derive(Clone, Copy, Debug)]
enum Promotion {
    /// `CLUSTER FAILOVER`: the replica catches up, then the roles swap.
    Planned,
    /// `CLUSTER FAILOVER FORCE`: without waiting for the primary's offset.
    Force,
    /// `CLUSTER FAILOVER TAKEOVER`: without the other primaries' votes.
    Takeover,
}

impl ValkeyClusterWorld {
    /// Start the cluster and the publisher; the partition count and read
    /// batch drawn from `rng`.
    pub async fn start(rng: &mut StdRng) -> Result<Self, String> {
        let cluster = blocking(|| ValkeyCluster::start_with(ClusterOptions::for_faults()))
            .map_err(|e| e.to_string())?;
        let partitions = [1u16, 6][rng.random_range(0..2)];
        let config = ValkeyConfig::new()
            .with_key_prefix(format!("{}:", unique_name("ckc")))
            .with_partitions(partitions)
            .with_read_batch([2, 16, 256][rng.random_range(0..3)])
            .with_checkpoint_interval(Duration::from_millis(200))
            .with_safety_net_poll(Duration::from_secs(30));
        let publisher = ValkeyBackend::connect(&cluster.url(), config.clone())
            .await
            .map_err(|e| e.to_string())?;
        Ok(Self {
            cluster: Mutex::new(cluster),
            config,
            publisher: Arc::new(publisher),
            removed: std::sync::Mutex::new(BTreeMap::new()),
        })
    }

    async fn url(&self) -> String {
        self.cluster.lock().await.url()
    }

    /// A stream key the workload writes, chosen by `rng`.
    fn some_key(&self, rng: &mut StdRng) -> String {
        let family = [Family::Completion, Family::InstanceTags][rng.random_range(0..2)];
        let keys = stream_keys(&self.publisher, family);
        keys.choose(rng).expect("a family has a key").1.clone()
    }

    /// `CLUSTER FAILOVER [FORCE|TAKEOVER]` on a replica of the primary
    /// serving a stream key; returns once the replica serves its slots and
    /// the cluster is stable.
    async fn failover(
        &self,
        how: Promotion,
        rng: &mut StdRng,
        ctx: &FaultCtx<'_>,
    ) -> Result<(), String> {
        let key = self.some_key(rng);
        let cluster = self.cluster.lock().await;
        let primary = blocking(|| cluster.owner_of_key(&key)).map_err(|e| e.to_string())?;
        let replicas = blocking(|| cluster.topology())
            .map_err(|e| e.to_string())?
            .replicas_of(primary);
        let Some(&replica) = replicas.first() else {
            return Ok(());
        };
        let (what, lossy, args): (_, _, &[&str]) = match how {
            Promotion::Planned => ("planned failover", false, &["CLUSTER", "FAILOVER"]),
            Promotion::Force => ("forced failover", true, &["CLUSTER", "FAILOVER", "FORCE"]),
            Promotion::Takeover => (
                "failover by takeover",
                true,
                &["CLUSTER", "FAILOVER", "TAKEOVER"],
            ),
        };
        let window = ctx.rec.fault(
            format!("{what}: node {replica} takes over from node {primary} (serving {key})"),
            lossy,
            None,
        );
        match blocking(|| cluster.command(replica, args)).map_err(|e| e.to_string())? {
            Reply::Simple(ok) if ok == "OK" => {}
            other => return Err(format!("{args:?} answered {other:?}")),
        }
        let deadline = Instant::now() + FAILOVER_DEADLINE;
        loop {
            let topology = blocking(|| cluster.topology()).map_err(|e| e.to_string())?;
            if topology.primaries().contains(&replica) && !topology.primaries().contains(&primary) {
                break;
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "node {replica} did not take over from node {primary}: {topology:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        blocking(|| cluster.wait_until_stable()).map_err(|e| e.to_string())?;
        ctx.rec.heal(window);
        Ok(())
    }

    /// The slot of a stream key moves to another primary, held open with
    /// none, some or all of its keys moved while the workload runs.
    async fn migrate(&self, rng: &mut StdRng, ctx: &FaultCtx<'_>) -> Result<(), String> {
        let key = self.some_key(rng);
        let mut cluster = self.cluster.lock().await;
        let slot = blocking(|| cluster.key_slot(&key)).map_err(|e| e.to_string())?;
        let from = blocking(|| cluster.owner_of_key(&key)).map_err(|e| e.to_string())?;
        let others: Vec<usize> = blocking(|| cluster.topology())
            .map_err(|e| e.to_string())?
            .primaries()
            .into_iter()
            .filter(|&p| p != from)
            .collect();
        let Some(&to) = others.choose(rng) else {
            return Ok(());
        };
        let moved_first = rng.random_range(0..3);
        let hold = Duration::from_millis(rng.random_range(300..2500));
        let window = ctx.rec.fault(
            format!(
                "slot {slot} ({key}) migrates from node {from} to node {to}, \
                 held {hold:?} after moving {moved_first} key(s)"
            ),
            false,
            None,
        );
        let mut migration =
            blocking(|| cluster.begin_slot_migration(slot, to)).map_err(|e| e.to_string())?;
        if moved_first > 0 {
            blocking(|| migration.move_keys(moved_first)).map_err(|e| e.to_string())?;
        }
        tokio::time::sleep(hold).await;
        blocking(|| -> Result<(), String> {
            while migration.move_keys(100).map_err(|e| e.to_string())? > 0 {}
            migration.finish().map_err(|e| e.to_string())
        })?;
        ctx.rec.heal(window);
        Ok(())
    }

    /// `kill -9` of the primary serving a stream key; its replica takes
    /// over after the node timeout, then the old primary rejoins.
    async fn kill_primary(&self, rng: &mut StdRng, ctx: &FaultCtx<'_>) -> Result<(), String> {
        let key = self.some_key(rng);
        let mut cluster = self.cluster.lock().await;
        let primary = blocking(|| cluster.owner_of_key(&key)).map_err(|e| e.to_string())?;
        // Replication is asynchronous: the replica may miss the tail.
        let window = ctx.rec.fault(
            format!("kill -9 of node {primary} (serving {key}), its replica takes over"),
            true,
            None,
        );
        blocking(|| cluster.kill_primary_and_wait_for_failover(primary))
            .map_err(|e| e.to_string())?;
        blocking(|| cluster.restart_node(primary)).map_err(|e| e.to_string())?;
        ctx.rec.heal(window);
        Ok(())
    }

    /// SIGSTOP of the primary serving a stream key for less than the node
    /// timeout (a black hole nobody fails over), then SIGCONT.
    async fn pause(&self, ms: u64, rng: &mut StdRng, ctx: &FaultCtx<'_>) -> Result<(), String> {
        let key = self.some_key(rng);
        let cluster = self.cluster.lock().await;
        let node = blocking(|| cluster.owner_of_key(&key)).map_err(|e| e.to_string())?;
        let Some(pid) = cluster.pid(node) else {
            return Ok(());
        };
        let window = ctx.rec.fault(
            format!("SIGSTOP of node {node} (serving {key}) for {ms} ms"),
            false,
            None,
        );
        let signal = |sig: &str| {
            std::process::Command::new("kill")
                .args([sig, &pid.to_string()])
                .status()
                .map_err(|e| e.to_string())
        };
        signal("-STOP")?;
        tokio::time::sleep(Duration::from_millis(rng.random_range(ms / 4..=ms))).await;
        signal("-CONT")?;
        ctx.rec.heal(window);
        Ok(())
    }

    /// Retention removes the older half of a family, on each key's owner.
    async fn prune(&self, rng: &mut StdRng, ctx: &FaultCtx<'_>) -> Result<(), String> {
        let family = [Family::Completion, Family::InstanceTags][rng.random_range(0..2)];
        let cluster = self.cluster.lock().await;
        for (partition, key) in stream_keys(&self.publisher, family) {
            let node = blocking(|| cluster.owner_of_key(&key)).map_err(|e| e.to_string())?;
            let reply = blocking(|| cluster.command(node, &["XRANGE", &key, "-", "+"]))
                .map_err(|e| e.to_string())?;
            let entries = xrange_cks(&key, reply)?;
            if entries.len() < 4 {
                continue;
            }
            let cut = entries[entries.len() / 2].1;
            let min_id = format!("{}-{}", cut.0, cut.1);
            blocking(|| cluster.command(node, &["XTRIM", &key, "MINID", &min_id]))
                .map_err(|e| e.to_string())?;
            let gone: Vec<StoredEvent> = entries
                .iter()
                .filter(|(_, pos)| *pos < cut)
                .map(|&(ck, pos)| StoredEvent { ck, partition, pos })
                .collect();
            ctx.rec.note(format!(
                "trimmed {} entries of {key} before {min_id}",
                gone.len()
            ));
            self.removed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(family)
                .or_default()
                .extend(gone);
        }
        Ok(())
    }

    /// An `XADD` as the README documents it, sent to the key's owner.
    async fn raw_xadd(&self, event: &NewEvent, meta: &EventMeta) -> Result<PosKey, String> {
        let (key, args) = raw_xadd_args(&self.publisher, event, meta)?;
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let cluster = self.cluster.lock().await;
        let node = blocking(|| cluster.owner_of_key(&key)).map_err(|e| e.to_string())?;
        xadd_id(blocking(|| cluster.command(node, &args)).map_err(|e| e.to_string())?)
    }
}

#[async_trait]
impl World for ValkeyClusterWorld {
    fn kind(&self) -> WorldKind {
        WorldKind::ValkeyCluster
    }

    fn partitions(&self) -> u16 {
        self.publisher.partitions()
    }

    fn exact(&self) -> bool {
        true
    }

    fn publish_paths(&self) -> Vec<PublishPath> {
        PUBLISH_PATHS.to_vec()
    }

    fn delivery_paths(&self) -> Vec<DeliveryPath> {
        delivery_paths(self.partitions())
    }

    fn faults(&self) -> Vec<Fault> {
        vec![
            Fault::KillRestart,
            Fault::Pause(1500),
            Fault::SettingMismatch,
            Fault::Prune,
            Fault::GatewayRestart,
        ]
    }

    fn operations(&self) -> Vec<Fault> {
        vec![
            Fault::PlannedFailover,
            Fault::PlannedFailover,
            Fault::ForcedFailover,
            Fault::SlotMigration,
            Fault::SlotMigration,
        ]
    }

    async fn reader(&self) -> Result<Arc<dyn StreamBackend>, EngineError> {
        Ok(Arc::new(
            ValkeyBackend::connect(&self.url().await, self.config.clone()).await?,
        ))
    }

    fn store(&self) -> Arc<dyn CursorStore> {
        self.publisher.clone()
    }

    async fn publish(
        &self,
        path: PublishPath,
        events: Vec<(NewEvent, EventMeta)>,
    ) -> Vec<PublishResult> {
        match path {
            PublishPath::Raw => {
                let mut out = Vec::with_capacity(events.len());
                for (e, m) in &events {
                    out.push(self.raw_xadd(e, m).await.map(|pos| (None, Some(pos))));
                }
                out
            }
            PublishPath::Batch => publish_all(self.publisher.as_ref(), events).await,
            _ => publish_each(self.publisher.as_ref(), events).await,
        }
    }

    async fn subscribe_partitions(
        &self,
        family: Family,
        partitions: &[u16],
        cursor: StreamCursor,
        filter: &SubscriptionFilter,
    ) -> Result<DeliveryStream, EngineError> {
        let backend = ValkeyBackend::connect(&self.url().await, self.config.clone()).await?;
        backend
            .subscribe_partitions(family, partitions, cursor, filter)
            .await
    }

    async fn inject(
        &self,
        fault: &Fault,
        rng: &mut StdRng,
        ctx: &FaultCtx<'_>,
    ) -> Result<(), String> {
        match fault {
            Fault::PlannedFailover => self.failover(Promotion::Planned, rng, ctx).await,
            Fault::ForcedFailover => {
                let how = [Promotion::Force, Promotion::Takeover][rng.random_range(0..2)];
                self.failover(how, rng, ctx).await
            }
            Fault::SlotMigration => self.migrate(rng, ctx).await,
            Fault::KillRestart => self.kill_primary(rng, ctx).await,
            Fault::Pause(ms) => self.pause(*ms, rng, ctx).await,
            Fault::Prune => self.prune(rng, ctx).await,
            Fault::SettingMismatch => {
                let url = self.url().await;
                publish_mismatched(self, &url, &self.config, rng, ctx).await
            }
            other => Err(format!("the valkey cluster world cannot inject {other:?}")),
        }
    }

    fn position(&self, family: Family, cursor: &StreamCursor) -> Option<PosKey> {
        position_of(self.partitions(), family, cursor)
    }

    async fn state(&self, _rec: &crate::checker::history::Recorder) -> Result<StoreState, String> {
        let mut state = StoreState::default();
        let cluster = self.cluster.lock().await;
        for family in crate::checker::plan::FAMILIES {
            let mut stored = Vec::new();
            for (partition, key) in stream_keys(&self.publisher, family) {
                let node = blocking(|| cluster.owner_of_key(&key)).map_err(|e| e.to_string())?;
                let reply = blocking(|| cluster.command(node, &["XRANGE", &key, "-", "+"]))
                    .map_err(|e| e.to_string())?;
                for (ck, pos) in xrange_cks(&key, reply)? {
                    stored.push(StoredEvent { ck, partition, pos });
                }
            }
            state.stored.insert(family, stored);
        }
        state.removed = self
            .removed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        Ok(state)
    }
}
