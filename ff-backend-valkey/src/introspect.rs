//! Introspection: what a [`ValkeyBackend`] is connected to and where it
//! keeps each family — nodes, partitions, key names and client names.
//!
//! Invariant: these answers come from the backend's own configuration and
//! router; none sends a command, so they are cheap and never fail.

use ff_core::stream_events::Family;
use ff_core::types::ExecutionId;

use crate::routing::slot::key_slot;
use crate::{partition, ValkeyBackend};

impl ValkeyBackend {
    /// Whether the URL reached a Valkey Cluster (rather than one server).
    pub fn is_cluster(&self) -> bool {
        self.inner.router.is_cluster()
    }

    /// The nodes serving data now (`host:port`): the cluster's primaries,
    /// or the one server.
    pub fn nodes(&self) -> Vec<String> {
        self.inner
            .router
            .primaries()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    /// The node (`host:port`) serving `key`'s hash slot now, as far as this
    /// backend knows (`None` while no node serves it, e.g. mid-failover).
    pub fn node_for_key(&self, key: &str) -> Option<String> {
        self.inner
            .router
            .owner(key_slot(key.as_bytes()))
            .map(|n| n.to_string())
    }

    /// P: how many partitions each family is split into.
    pub fn partitions(&self) -> u16 {
        self.inner.keys.partitions()
    }

    /// The partition events of `execution` go to: its `{fp:N}` modulo P.
    pub fn partition_of(&self, execution: &ExecutionId) -> u16 {
        partition::partition_of(execution, self.partitions())
    }

    /// The stream key of `family` (its partition 0 when it has several):
    /// `{prefix}{family}`, e.g. `ff:completion`, or
    /// `{prefix}{fp:0}:{family}` (see [`ValkeyBackend::partition_stream_key`]).
    pub fn stream_key(&self, family: Family) -> &str {
        self.inner.keys.stream(family, 0)
    }

    /// The stream key of `family`'s partition `partition` (below
    /// [`ValkeyBackend::partitions`]): `{prefix}{fp:n}:{family}` on a
    /// cluster or with several partitions, else `{prefix}{family}`.
    ///
    /// # Panics
    ///
    /// When `partition` is not below [`ValkeyBackend::partitions`].
    pub fn partition_stream_key(&self, family: Family, partition: u16) -> &str {
        assert!(
            partition < self.partitions(),
            "partition {partition} of {}",
            self.partitions()
        );
        self.inner.keys.stream(family, partition)
    }

    /// The hash the [`CursorStore`](ff_core::backend::CursorStore) writes: `{prefix}cursors`.
    pub fn cursors_key(&self) -> &str {
        self.inner.keys.cursors()
    }

    /// The client name of the backend's shared connections (`CLIENT LIST`
    /// on each node).
    pub fn client_name(&self) -> &str {
        &self.inner.config.client_name
    }

    /// The client name of the subscriptions' wake-up connections, one per
    /// followed stream (family × partition): `{client_name}:sub`. Their
    /// read connections, one per node, are named `{client_name}:read`.
    pub fn subscription_client_name(&self) -> String {
        self.inner.subscription_client_name()
    }
}
