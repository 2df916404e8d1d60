//! The Valkey Cluster harness: a backend split into P partitions under a
//! fresh key prefix and client name on the shared test cluster, with fault
//! hooks that act on the node serving each key (raw records) or on every
//! node (severing and counting the backend's connections).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ff_backend_valkey::cursor_codec::{decode_valkey, encode_valkey};
use ff_backend_valkey::redis::{self, aio::MultiplexedConnection, Value};
use ff_backend_valkey::{EntryOf, EntryWitness, ValkeyBackend, ValkeyConfig};
use ff_core::backend::{EventPublisher, StreamBackend};
use ff_core::engine_error::EngineError;
use ff_core::stream_events::record::Field;
use ff_core::stream_events::Family;
use ff_core::stream_subscribe::{
    decode_valkey_partitioned, encode_valkey_partitioned, CursorStart, PartitionedPosition,
    StreamCursor, ValkeyPosition,
};
use ff_core::testkit::{EventOrder, Harness};
use ff_core::types::ExecutionId;
use tokio::sync::Mutex;

use super::valkey::{CHECKPOINT_INTERVAL, READ_BATCH, SAFETY_NET_POLL};
use crate::support;

/// The shared test cluster's URL (started on first use).
pub async fn cluster_url() -> String {
    tokio::task::spawn_blocking(support::shared_valkey_cluster_url)
        .await
        .expect("support thread")
        .expect("a Valkey Cluster for the suite")
}

/// A backend over P partitions on a cluster, plus admin connections to
/// its nodes (unnamed, so `kill_connections` spares them).
pub struct ValkeyClusterHarness {
    /// The backend under test.
    pub backend: ValkeyBackend,
    url: String,
    config: ValkeyConfig,
    admins: Mutex<HashMap<String, MultiplexedConnection>>,
}

impl ValkeyClusterHarness {
    /// A backend with `partitions` partitions on the shared cluster.
    pub async fn new(partitions: u16) -> Self {
        Self::on(&cluster_url().await, partitions).await
    }

    /// A backend with `partitions` partitions on the cluster `url` names.
    pub async fn on(url: &str, partitions: u16) -> Self {
        let name = support::unique_name("fftest");
        let config = ValkeyConfig::default()
            .with_key_prefix(format!("{name}:"))
            .with_client_name(name)
            .with_partitions(partitions)
            .with_checkpoint_interval(CHECKPOINT_INTERVAL)
            .with_safety_net_poll(SAFETY_NET_POLL)
            .with_read_batch(READ_BATCH);
        let backend = ValkeyBackend::connect(url, config.clone())
            .await
            .expect("connect the backend");
        assert!(backend.is_cluster(), "{url} is not a Valkey Cluster");
        Self {
            backend,
            url: url.to_owned(),
            config,
            admins: Mutex::new(HashMap::new()),
        }
    }

    /// An admin connection to `node` (`host:port`).
    async fn admin(&self, node: &str) -> Result<MultiplexedConnection, EngineError> {
        let mut admins = self.admins.lock().await;
        if let Some(conn) = admins.get(node) {
            return Ok(conn.clone());
        }
        let conn = redis::Client::open(format!("redis://{node}"))
            .map_err(harness_error)?
            .get_multiplexed_async_connection()
            .await
            .map_err(harness_error)?;
        admins.insert(node.to_owned(), conn.clone());
        Ok(conn)
    }

    async fn run(&self, node: &str, cmd: &redis::Cmd) -> Result<Value, EngineError> {
        let mut conn = self.admin(node).await?;
        conn.send_packed_command(cmd)
            .await
            .and_then(Value::extract_error)
            .map_err(harness_error)
    }

    /// `(node, id, name)` of the backend's connections on every node (its
    /// client name, or that name with a `:` suffix).
    async fn own_clients(&self) -> Result<Vec<(String, String, String)>, EngineError> {
        let ours = self.backend.client_name().to_owned();
        let prefix = format!("{ours}:");
        let mut clients = Vec::new();
        for node in self.backend.nodes() {
            let list = match self.run(&node, redis::cmd("CLIENT").arg("LIST")).await? {
                Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
                Value::VerbatimString { text, .. } => text,
                other => panic!("CLIENT LIST returned {other:?}"),
            };
            for line in list.lines() {
                let field = |key: &str| {
                    line.split(' ')
                        .find_map(|kv| kv.strip_prefix(key))
                        .unwrap_or("")
                        .to_owned()
                };
                let name = field("name=");
                if name == ours || name.starts_with(&prefix) {
                    clients.push((node.clone(), field("id="), name));
                }
            }
        }
        Ok(clients)
    }

    /// The per-partition positions of a cursor of this backend's format.
    fn positions(&self, family: Family, cursor: &StreamCursor) -> Vec<ValkeyPosition> {
        let p = self.backend.partitions();
        let start = if p == 1 {
            decode_valkey(cursor, family).map(|s| match s {
                CursorStart::After(p) => CursorStart::After(vec![p]),
                CursorStart::Tail => CursorStart::Tail,
                CursorStart::Beginning => CursorStart::Beginning,
            })
        } else {
            decode_valkey_partitioned(cursor, family, p, None).map(|s| match s {
                CursorStart::After(position) => {
                    CursorStart::After(position.iter().map(|(_, p)| p).collect())
                }
                CursorStart::Tail => CursorStart::Tail,
                CursorStart::Beginning => CursorStart::Beginning,
            })
        };
        match start {
            Ok(CursorStart::After(positions)) => positions,
            other => panic!("not a positioned cursor: {other:?}"),
        }
    }

    /// A cursor of this backend's format with these per-partition positions.
    fn cursor(&self, family: Family, positions: &[ValkeyPosition]) -> StreamCursor {
        let p = self.backend.partitions();
        if p == 1 {
            return encode_valkey(family, positions[0].ms, positions[0].seq);
        }
        encode_valkey_partitioned(
            family,
            &PartitionedPosition::new(p, (0..p).zip(positions.iter().copied()))
                .expect("a position per partition"),
        )
    }
}

fn harness_error(e: redis::RedisError) -> EngineError {
    EngineError::Backend {
        backend: "valkey-cluster-harness",
        detail: e.to_string(),
    }
}

#[async_trait]
impl Harness for ValkeyClusterHarness {
    fn backend(&self) -> Arc<dyn StreamBackend> {
        Arc::new(self.backend.clone())
    }

    fn publisher(&self) -> Arc<dyn EventPublisher> {
        Arc::new(self.backend.clone())
    }

    fn checkpoint_interval(&self) -> Duration {
        CHECKPOINT_INTERVAL
    }

    fn safety_net_poll(&self) -> Option<Duration> {
        Some(SAFETY_NET_POLL)
    }

    fn event_order(&self) -> EventOrder {
        match self.backend.partitions() {
            1 => EventOrder::Total,
            p => EventOrder::per_partition(p),
        }
    }

    /// The batch being consumed, one in the channel and one being merged,
    /// plus a page and a read-ahead page per partition.
    fn read_ahead_limit(&self) -> usize {
        let p = usize::from(self.backend.partitions());
        3 * READ_BATCH + 2 * p * self.read_batch()
    }

    /// One partition's read.
    fn read_batch(&self) -> usize {
        let p = usize::from(self.backend.partitions());
        (8 * READ_BATCH / p).clamp(16, READ_BATCH)
    }

    async fn expire_before(
        &self,
        family: Family,
        cursor: &StreamCursor,
    ) -> Result<(), EngineError> {
        self.backend.prune_before(family, cursor).await.map(drop)
    }

    /// Appends to the partition of the record's execution id (partition 0
    /// when it has none that parses).
    async fn inject_raw(
        &self,
        family: Family,
        fields: &[(Field, String)],
    ) -> Result<StreamCursor, EngineError> {
        let execution = fields
            .iter()
            .find(|(f, _)| *f == Field::ExecutionId)
            .and_then(|(_, v)| ExecutionId::parse(v).ok());
        let partition = execution.map_or(0, |e| self.backend.partition_of(&e));
        let key = self
            .backend
            .partition_stream_key(family, partition)
            .to_owned();
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&key).arg("*");
        for (field, value) in fields {
            cmd.arg(field.name()).arg(value);
        }
        if fields.is_empty() {
            cmd.arg("v").arg("1");
        }
        let node = self
            .backend
            .node_for_key(&key)
            .expect("a node serves the stream");
        let reply = self.run(&node, &cmd).await?;
        let Value::BulkString(id) = reply else {
            panic!("XADD returned {reply:?}");
        };
        let written: Vec<(&str, &str)> = if fields.is_empty() {
            vec![("v", "1")]
        } else {
            fields.iter().map(|(f, v)| (f.name(), v.as_str())).collect()
        };
        self.backend.entry_id_cursor(
            &String::from_utf8_lossy(&id),
            EntryOf::Stored {
                family,
                partition,
                witness: Some(EntryWitness::of_fields(&written)),
            },
        )
    }

    async fn kill_connections(&self) -> Result<(), EngineError> {
        for (node, id, _) in self.own_clients().await? {
            // A connection may close by itself meanwhile: ignore errors.
            let _ = self
                .run(&node, redis::cmd("CLIENT").arg("KILL").arg("ID").arg(id))
                .await;
        }
        Ok(())
    }

    async fn connection_ids(&self) -> Result<Vec<String>, EngineError> {
        Ok(self
            .own_clients()
            .await?
            .into_iter()
            .map(|(node, id, _)| format!("{node}/{id}"))
            .collect())
    }

    async fn cursor_beyond_head(&self, family: Family) -> Result<StreamCursor, EngineError> {
        let head = self.backend.bounds(family).await?.head;
        let beyond: Vec<ValkeyPosition> = self
            .positions(family, &head)
            .into_iter()
            .map(|p| ValkeyPosition {
                ms: p.ms + 86_400_000,
                seq: 0,
            })
            .collect();
        Ok(self.cursor(family, &beyond))
    }

    /// Valkey cursors carry no stream identity (see the standalone
    /// harness): the capability is absent, declared in the cluster
    /// conformance file.
    async fn foreign_cursor(&self, _family: Family) -> Result<StreamCursor, EngineError> {
        Err(EngineError::unavailable(
            "foreign_cursor (Valkey cursors carry no stream identity)",
        ))
    }

    async fn independent_publisher(&self) -> Result<Arc<dyn EventPublisher>, EngineError> {
        let other = ValkeyBackend::connect(&self.url, self.config.clone()).await?;
        Ok(Arc::new(other))
    }

    async fn open_subscriptions(&self) -> Result<usize, EngineError> {
        let name = self.backend.subscription_client_name();
        Ok(self
            .own_clients()
            .await?
            .iter()
            .filter(|(_, _, n)| *n == name)
            .count())
    }
}
