//! A throwaway Valkey Cluster — by default three primaries with one replica
//! each — built from the same `valkey-server` binary as [`ValkeyServer`](super::ValkeyServer)
//! (super::ValkeyServer), and the faults cluster tests inject: kill a
//! primary and wait for its replica's promotion, stop a node (`SIGSTOP`: a
//! black hole whose kernel still accepts connections) and let it go on,
//! restart a node, migrate a slot.
//!
//! The cluster is formed the way an operator would by hand: every node
//! starts with `cluster-enabled yes` on a free client port and a free bus
//! port (`cluster-port`, so both stay below the kernel's ephemeral range),
//! gets its own config epoch, the primaries take even shares of the 16384
//! slots (`CLUSTER ADDSLOTSRANGE`), node 0 `CLUSTER MEET`s the others, and
//! each replica `CLUSTER REPLICATE`s its primary. Node indexes are stable:
//! primaries are `0..primaries` at start, and the replicas of primary `p`
//! follow, but roles change with failovers — ask [`ValkeyCluster::topology`].
//!
//! Invariant: [`start`](ValkeyCluster::start), every fault helper and
//! [`wait_until_stable`](ValkeyCluster::wait_until_stable) return only once
//! the cluster is *stable*: every running node reports `cluster_state:ok`
//! with all slots served, sees every other running node healthy (a stopped
//! node counts as not running), and agrees
//! with the others on who serves each slot and who replicates whom; every
//! slot's owner is running, no slot is mid-migration, and every running
//! replica's link to its primary is up. Waits have a deadline
//! (`FF_TEST_START_TIMEOUT_SECS`, default 60 s) and poll with back-off,
//! never a fixed sleep.
//!
//! Processes are cleaned up like single servers (see [`super`]): one
//! watchdog per cluster kills every node and removes the directory when the
//! test process ends, however it ends.

mod node;
mod session;
mod shared;
mod topology;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use node::ClusterNode;
pub use session::Session;
pub use shared::{
    external_valkey_cluster, shared_valkey_cluster, shared_valkey_cluster_url,
    skip_if_external_valkey_cluster, VALKEY_CLUSTER_URL_ENV,
};
use topology::{info_field, parse_nodes, NodeLine};
pub use topology::{Topology, SLOTS};

use super::tls_ca::{self, ServerCert, TlsFiles};
use super::valkey::{tls_binary, valkey_binary};
use super::{make_temp_dir, shell_quote, start_timeout, Backoff, SupportError, Watchdog};
use crate::support::Reply;

/// How a test cluster is built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterOptions {
    /// Primaries, each serving an even share of the slots (default 3).
    pub primaries: usize,
    /// Replicas per primary (default 1).
    pub replicas_per_primary: usize,
    /// `appendonly yes` + `appendfsync always` on every node, so what a
    /// node acknowledged survives its `kill -9` (default `false`).
    pub durable: bool,
    /// `cluster-node-timeout`: how long a silent node takes to be declared
    /// failed, hence how soon a replica takes over (default 15 s, Valkey's
    /// own default, so a loaded machine never fails a node over by accident).
    pub node_timeout: Duration,
    /// Every node also listens with TLS (`tls-port`, certificates from a
    /// throwaway CA valid for `127.0.0.1`; the cluster bus and replication
    /// over TLS too), served by a TLS-capable binary
    /// (`FF_VALKEY_TLS_SERVER`, or `redis-server` on `PATH`); the plaintext
    /// ports stay for administration (default `false`).
    pub tls: bool,
    /// Run Redis 7 (`redis-server`, found as for [`Self::tls`]) instead of
    /// Valkey: its demoted primaries answer blocked commands with
    /// `-UNBLOCKED` where Valkey 8+ answers `-MOVED` (default `false`).
    pub redis7: bool,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            primaries: 3,
            replicas_per_primary: 1,
            durable: false,
            node_timeout: Duration::from_secs(15),
            tls: false,
            redis7: false,
        }
    }
}

impl ClusterOptions {
    /// For fault tests: durable nodes (`appendfsync always`) and a 3 s node
    /// timeout, so a killed primary's replica takes over within seconds.
    pub fn for_faults() -> Self {
        ClusterOptions {
            durable: true,
            node_timeout: Duration::from_secs(3),
            ..Self::default()
        }
    }

    fn node_count(&self) -> usize {
        self.primaries * (1 + self.replicas_per_primary)
    }
}

/// A running Valkey Cluster; see the module docs. Dropping it kills every
/// node and removes its directory.
pub struct ValkeyCluster {
    binary: PathBuf,
    dir: PathBuf,
    options: ClusterOptions,
    nodes: Vec<ClusterNode>,
    ids: Vec<String>,
    /// Nodes stopped with `SIGSTOP` and not continued since.
    stopped: BTreeSet<usize>,
    tls_files: Option<TlsFiles>,
    // Declared last: dropped (disarmed) after `Drop::drop` cleaned up.
    watchdog: Option<Watchdog>,
}

impl ValkeyCluster {
    /// Starts three primaries with one replica each and waits until the
    /// cluster is stable.
    pub fn start() -> Result<Self, SupportError> {
        Self::start_with(ClusterOptions::default())
    }

    /// Starts a cluster as `options` say and waits until it is stable.
    pub fn start_with(options: ClusterOptions) -> Result<Self, SupportError> {
        if options.primaries == 0 {
            return Err(SupportError::Cluster(
                "a cluster needs at least one primary".into(),
            ));
        }
        let binary = if options.tls || options.redis7 {
            tls_binary()?
        } else {
            valkey_binary()?
        };
        let dir = make_temp_dir("valkey-cluster")?;
        let watchdog = match Watchdog::spawn(&format!(
            "for pid in $line; do\n\
             case $pid in ''|*[!0-9]*) ;; *) kill -9 \"$pid\" ;; esac 2>/dev/null\n\
             done\n\
             rm -rf {}",
            shell_quote(dir.as_os_str())
        )) {
            Ok(w) => w,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        let mut cluster = ValkeyCluster {
            binary,
            dir,
            options,
            nodes: Vec::new(),
            ids: Vec::new(),
            stopped: BTreeSet::new(),
            tls_files: None,
            watchdog: Some(watchdog),
        };
        if cluster.options.tls {
            cluster.tls_files = Some(tls_ca::make(&cluster.dir, ServerCert::Valid)?);
        }
        for index in 0..cluster.options.node_count() {
            let node = ClusterNode::start(
                &cluster.binary,
                &cluster.dir,
                index,
                &cluster.options,
                cluster.tls_files.as_ref(),
            );
            cluster.nodes.push(node?);
            cluster.tell_watchdog();
        }
        cluster.form()?;
        Ok(cluster)
    }

    /// `redis://127.0.0.1:PORT` of the first running node: one URL from
    /// which a cluster client discovers the rest.
    pub fn url(&self) -> String {
        let node = (0..self.nodes.len())
            .find(|&n| self.answers(n))
            .unwrap_or(0);
        self.node_url(node)
    }

    /// `valkeys://127.0.0.1:TLS_PORT?ca_cert=CA` of the first running node
    /// of a cluster started with [`ClusterOptions::tls`].
    pub fn tls_url(&self) -> Option<String> {
        let files = self.tls_files.as_ref()?;
        let node = (0..self.nodes.len())
            .find(|&n| self.answers(n))
            .unwrap_or(0);
        Some(format!(
            "valkeys://127.0.0.1:{}?ca_cert={}",
            self.nodes[node].tls_port()?,
            files.ca.display()
        ))
    }

    /// The certificate files of a TLS cluster.
    pub fn tls_files(&self) -> Option<&TlsFiles> {
        self.tls_files.as_ref()
    }

    /// `redis://127.0.0.1:PORT` of node `node`.
    pub fn node_url(&self, node: usize) -> String {
        format!("redis://127.0.0.1:{}", self.nodes[node].port())
    }

    /// How many nodes the cluster has (running or not).
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// The client port of node `node`.
    pub fn port(&self, node: usize) -> u16 {
        self.nodes[node].port()
    }

    /// The cluster node id of node `node` (its 40-character name).
    pub fn node_id(&self, node: usize) -> &str {
        &self.ids[node]
    }

    /// Whether node `node` was started and not killed since.
    pub fn is_running(&self, node: usize) -> bool {
        self.nodes[node].is_running()
    }

    /// The process id of node `node` while it runs (to signal it).
    pub fn pid(&self, node: usize) -> Option<u32> {
        self.nodes[node].pid()
    }

    /// The cluster's directory (one `node-N` directory per node).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Sends one command to node `node` over a fresh connection (a `-ERR`,
    /// `-MOVED` or `-ASK` reply is [`Reply::Error`], not an `Err`).
    pub fn command(&self, node: usize, args: &[&str]) -> Result<Reply, SupportError> {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.nodes[node].command(&args)
    }

    /// A connection to node `node` that several commands can share.
    pub fn session(&self, node: usize) -> Result<Session, SupportError> {
        Session::connect(self.nodes[node].port())
    }

    /// The hash slot of `key`, as the cluster computes it (`CLUSTER
    /// KEYSLOT`, which honours `{hash tags}`).
    pub fn key_slot(&self, key: &str) -> Result<u16, SupportError> {
        let node = self.any_running()?;
        match self.command(node, &["CLUSTER", "KEYSLOT", key])? {
            Reply::Integer(slot) if (0..i64::from(SLOTS)).contains(&slot) => Ok(slot as u16),
            other => Err(unexpected("CLUSTER KEYSLOT", &other)),
        }
    }

    /// Who serves which slots and who replicates whom, as the first running
    /// node sees it.
    pub fn topology(&self) -> Result<Topology, SupportError> {
        let node = self.any_running()?;
        let view = self.view(node)?;
        Topology::from_view(&view, |port| self.index_of_port(port)).map_err(SupportError::Cluster)
    }

    /// The node index of the primary serving `key`'s slot.
    pub fn owner_of_key(&self, key: &str) -> Result<usize, SupportError> {
        let slot = self.key_slot(key)?;
        self.topology()?
            .owner_of_slot(slot)
            .ok_or_else(|| SupportError::Cluster(format!("no node serves slot {slot}")))
    }

    /// Kills node `node` with SIGKILL and waits until its process is gone;
    /// the cluster notices only after its node timeout.
    pub fn kill_node(&mut self, node: usize) -> Result<(), SupportError> {
        self.nodes[node].kill()?;
        self.tell_watchdog();
        Ok(())
    }

    /// Stops node `node` with `SIGSTOP`: its process answers nothing while
    /// its kernel still accepts connections and acknowledges bytes (a
    /// black-holed node, unlike a killed one, is never refused). The
    /// cluster notices after its node timeout. Call
    /// [`ValkeyCluster::continue_node`] before the end of the test.
    pub fn stop_node(&mut self, node: usize) -> Result<(), SupportError> {
        self.signal(node, "-STOP")?;
        self.stopped.insert(node);
        Ok(())
    }

    /// Lets a node stopped by [`ValkeyCluster::stop_node`] go on
    /// (`SIGCONT`); it does not wait for the cluster to be stable.
    pub fn continue_node(&mut self, node: usize) -> Result<(), SupportError> {
        self.signal(node, "-CONT")?;
        self.stopped.remove(&node);
        Ok(())
    }

    fn signal(&self, node: usize, signal: &str) -> Result<(), SupportError> {
        let pid = self.nodes[node]
            .pid()
            .ok_or_else(|| SupportError::Cluster(format!("node {node} is not running")))?;
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .map_err(|e| SupportError::io(format!("kill {signal} {pid}"), e))?;
        if !status.success() {
            return Err(SupportError::Cluster(format!(
                "kill {signal} {pid} (node {node}) failed: {status}"
            )));
        }
        Ok(())
    }

    /// Whether node `node` runs and is not stopped: it answers.
    fn answers(&self, node: usize) -> bool {
        self.nodes[node].is_running() && !self.stopped.contains(&node)
    }

    /// Kills primary `primary` with SIGKILL and waits until one of its
    /// replicas has taken over its slots and the cluster is stable again;
    /// returns the promoted replica's node index.
    pub fn kill_primary_and_wait_for_failover(
        &mut self,
        primary: usize,
    ) -> Result<usize, SupportError> {
        let before = self.topology()?;
        let replicas = before.replicas_of(primary);
        if !before.primaries().contains(&primary) || replicas.is_empty() {
            return Err(SupportError::Cluster(format!(
                "node {primary} is not a primary with a replica ({before:?})"
            )));
        }
        self.kill_node(primary)?;
        self.wait_for_promotion(primary, &replicas)
    }

    /// Waits until one of `replicas` serves every slot `primary` served and
    /// the cluster is stable; returns it.
    pub fn wait_for_promotion(
        &mut self,
        primary: usize,
        replicas: &[usize],
    ) -> Result<usize, SupportError> {
        self.wait_until_stable()?;
        let after = self.topology()?;
        let promoted = after.primaries().into_iter().find(|p| replicas.contains(p));
        match promoted {
            Some(p) if !after.primaries().contains(&primary) => Ok(p),
            _ => Err(SupportError::Cluster(format!(
                "none of the replicas {replicas:?} of node {primary} took over: {after:?}"
            ))),
        }
    }

    /// A planned failover of primary `primary`: `CLUSTER FAILOVER` (or
    /// `CLUSTER FAILOVER FORCE`, which does not wait for the primary's
    /// agreement) on its first replica; waits until that replica serves
    /// the slots, the old primary replicates it and the cluster is stable.
    /// Returns the promoted replica.
    pub fn planned_failover(&mut self, primary: usize, force: bool) -> Result<usize, SupportError> {
        let before = self.topology()?;
        let replica = match before.replicas_of(primary).first() {
            Some(&r) if before.primaries().contains(&primary) => r,
            _ => {
                return Err(SupportError::Cluster(format!(
                    "node {primary} is not a primary with a replica ({before:?})"
                )))
            }
        };
        let mut args = vec!["CLUSTER", "FAILOVER"];
        if force {
            args.push("FORCE");
        }
        expect_ok(self.command(replica, &args)?, "CLUSTER FAILOVER")?;
        self.wait_for("the replica to take over", |c| {
            let topology = c.topology()?;
            Ok((!(topology.primaries().contains(&replica)
                && topology.replicas_of(replica).contains(&primary)))
            .then(|| format!("after CLUSTER FAILOVER: {topology:?}")))
        })?;
        self.wait_until_stable()?;
        Ok(replica)
    }

    /// Starts a killed node again on its ports and directory (it keeps its
    /// identity and, when durable, its data) and waits until the cluster is
    /// stable; a former primary whose slots were taken over rejoins as a
    /// replica of its successor.
    pub fn restart_node(&mut self, node: usize) -> Result<(), SupportError> {
        if self.nodes[node].is_running() {
            return Err(SupportError::Cluster(format!(
                "node {node} is running; kill it first"
            )));
        }
        self.nodes[node].launch(&self.binary)?;
        self.tell_watchdog();
        self.wait_until_stable()
    }

    /// Moves `slot` and its keys to primary `to` (`CLUSTER SETSLOT …
    /// IMPORTING/MIGRATING`, `MIGRATE` in batches, `SETSLOT … NODE`) and
    /// waits until the cluster is stable.
    pub fn migrate_slot(&mut self, slot: u16, to: usize) -> Result<(), SupportError> {
        let mut migration = self.begin_slot_migration(slot, to)?;
        while migration.move_keys(100)? > 0 {}
        migration.finish()
    }

    /// Starts moving `slot` to primary `to`; the keys move with
    /// [`SlotMigration::move_keys`] and ownership with
    /// [`SlotMigration::finish`]. In between, the source answers `-ASK`
    /// for keys that already moved.
    pub fn begin_slot_migration(
        &mut self,
        slot: u16,
        to: usize,
    ) -> Result<SlotMigration<'_>, SupportError> {
        let from = self
            .topology()?
            .owner_of_slot(slot)
            .ok_or_else(|| SupportError::Cluster(format!("no node serves slot {slot}")))?;
        if from == to {
            return Err(SupportError::Cluster(format!(
                "node {to} already serves slot {slot}"
            )));
        }
        let slot_text = slot.to_string();
        let (to_id, from_id) = (self.ids[to].clone(), self.ids[from].clone());
        expect_ok(
            self.command(
                to,
                &["CLUSTER", "SETSLOT", &slot_text, "IMPORTING", &from_id],
            )?,
            "CLUSTER SETSLOT IMPORTING",
        )?;
        expect_ok(
            self.command(
                from,
                &["CLUSTER", "SETSLOT", &slot_text, "MIGRATING", &to_id],
            )?,
            "CLUSTER SETSLOT MIGRATING",
        )?;
        Ok(SlotMigration {
            cluster: self,
            slot,
            from,
            to,
        })
    }

    /// Waits until the cluster is stable (see the module docs), or fails
    /// with the last reason it was not, and every node's log tail.
    pub fn wait_until_stable(&self) -> Result<(), SupportError> {
        let timeout = start_timeout();
        let deadline = Instant::now() + timeout;
        let mut backoff = Backoff::new();
        loop {
            let reason = match self.unstable_because() {
                Ok(None) => return Ok(()),
                Ok(Some(reason)) => reason,
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                return Err(SupportError::Cluster(format!(
                    "not stable after {timeout:?}: {reason}\n{}",
                    self.log_tails()
                )));
            }
            backoff.pause();
        }
    }

    /// Sets epochs and slots, meets the nodes, attaches the replicas and
    /// waits until the cluster is stable.
    fn form(&mut self) -> Result<(), SupportError> {
        let primaries = self.options.primaries;
        for node in 0..self.nodes.len() {
            let id = match self.command(node, &["CLUSTER", "MYID"])? {
                Reply::Bulk(Some(id)) => String::from_utf8_lossy(&id).into_owned(),
                other => return Err(unexpected("CLUSTER MYID", &other)),
            };
            self.ids.push(id);
            let epoch = (node + 1).to_string();
            expect_ok(
                self.command(node, &["CLUSTER", "SET-CONFIG-EPOCH", &epoch])?,
                "CLUSTER SET-CONFIG-EPOCH",
            )?;
        }
        for p in 0..primaries {
            let lo = p * SLOTS as usize / primaries;
            let hi = (p + 1) * SLOTS as usize / primaries - 1;
            expect_ok(
                self.command(
                    p,
                    &["CLUSTER", "ADDSLOTSRANGE", &lo.to_string(), &hi.to_string()],
                )?,
                "CLUSTER ADDSLOTSRANGE",
            )?;
        }
        for node in 1..self.nodes.len() {
            let (port, bus) = (self.nodes[node].port(), self.nodes[node].bus_port());
            expect_ok(
                self.command(
                    0,
                    &[
                        "CLUSTER",
                        "MEET",
                        "127.0.0.1",
                        &port.to_string(),
                        &bus.to_string(),
                    ],
                )?,
                "CLUSTER MEET",
            )?;
        }
        self.wait_for("every node to know every other", |c| {
            c.all_nodes_known()
                .map(|missing| missing.map(|m| m.to_string()))
        })?;
        for node in primaries..self.nodes.len() {
            let primary = (node - primaries) / self.options.replicas_per_primary;
            let id = self.ids[primary].clone();
            expect_ok(
                self.command(node, &["CLUSTER", "REPLICATE", &id])?,
                "CLUSTER REPLICATE",
            )?;
        }
        self.wait_until_stable()
    }

    /// `Some(reason)` while some running node does not yet see all nodes
    /// as healthy.
    fn all_nodes_known(&self) -> Result<Option<String>, SupportError> {
        for node in 0..self.nodes.len() {
            let view = self.view(node)?;
            if view.len() != self.nodes.len() || view.iter().any(NodeLine::is_troubled) {
                return Ok(Some(format!(
                    "node {node} knows {} of {} nodes so far",
                    view.iter().filter(|l| !l.is_troubled()).count(),
                    self.nodes.len()
                )));
            }
        }
        Ok(None)
    }

    /// `None` when the cluster is stable (module docs), else why not.
    fn unstable_because(&self) -> Result<Option<String>, SupportError> {
        let running: Vec<usize> = (0..self.nodes.len()).filter(|&n| self.answers(n)).collect();
        let mut agreed: Option<(usize, Topology)> = None;
        for &node in &running {
            let info = text_reply(self.command(node, &["CLUSTER", "INFO"])?, "CLUSTER INFO")?;
            let state = info_field(&info, "cluster_state");
            let slots_ok = info_field(&info, "cluster_slots_ok");
            if state != Some("ok") || slots_ok != Some("16384") {
                return Ok(Some(format!(
                    "node {node} reports cluster_state {state:?} with {slots_ok:?} slots ok"
                )));
            }
            let view = self.view(node)?;
            for &other in &running {
                let port = self.nodes[other].port();
                match view.iter().find(|l| l.port == port) {
                    Some(line) if line.is_troubled() => {
                        return Ok(Some(format!(
                            "node {node} sees node {other} as {}",
                            line.flags.join(",")
                        )))
                    }
                    Some(_) => {}
                    None => return Ok(Some(format!("node {node} does not know node {other}"))),
                }
            }
            if let Some(line) = view.iter().find(|l| l.migrating) {
                return Ok(Some(format!(
                    "node {node} sees slots of port {} mid-migration",
                    line.port
                )));
            }
            let mut topology = Topology::from_view(&view, |port| self.index_of_port(port))
                .map_err(SupportError::Cluster)?;
            topology.replicas.retain(|r, _| running.contains(r));
            if topology.slots_covered() != SLOTS {
                return Ok(Some(format!(
                    "node {node} sees {} of {SLOTS} slots served",
                    topology.slots_covered()
                )));
            }
            if let Some(dead) = topology
                .primaries()
                .into_iter()
                .find(|p| !running.contains(p))
            {
                return Ok(Some(format!(
                    "node {node} sees stopped node {dead} serving slots"
                )));
            }
            match &agreed {
                None => agreed = Some((node, topology)),
                Some((first, seen)) if *seen != topology => {
                    return Ok(Some(format!(
                        "node {first} sees {seen:?} but node {node} sees {topology:?}"
                    )))
                }
                Some(_) => {}
            }
        }
        let Some((_, topology)) = agreed else {
            return Ok(Some("no node is running".into()));
        };
        for (&replica, &primary) in &topology.replicas {
            let info = text_reply(
                self.command(replica, &["INFO", "replication"])?,
                "INFO replication",
            )?;
            let link = info_field(&info, "master_link_status");
            let port = info_field(&info, "master_port").and_then(|p| p.parse::<u16>().ok());
            if link != Some("up") || port != Some(self.nodes[primary].port()) {
                return Ok(Some(format!(
                    "replica {replica}'s link to node {primary} is {link:?} (to port {port:?})"
                )));
            }
        }
        Ok(None)
    }

    fn wait_for(
        &mut self,
        what: &str,
        mut pending: impl FnMut(&Self) -> Result<Option<String>, SupportError>,
    ) -> Result<(), SupportError> {
        let timeout = start_timeout();
        let deadline = Instant::now() + timeout;
        let mut backoff = Backoff::new();
        loop {
            let reason = match pending(self) {
                Ok(None) => return Ok(()),
                Ok(Some(reason)) => reason,
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                return Err(SupportError::Cluster(format!(
                    "gave up waiting after {timeout:?} for {what}: {reason}\n{}",
                    self.log_tails()
                )));
            }
            backoff.pause();
        }
    }

    fn view(&self, node: usize) -> Result<Vec<NodeLine>, SupportError> {
        let text = text_reply(self.command(node, &["CLUSTER", "NODES"])?, "CLUSTER NODES")?;
        parse_nodes(&text).map_err(SupportError::Protocol)
    }

    fn index_of_port(&self, port: u16) -> Option<usize> {
        self.nodes.iter().position(|n| n.port() == port)
    }

    fn any_running(&self) -> Result<usize, SupportError> {
        (0..self.nodes.len())
            .find(|&n| self.answers(n))
            .ok_or_else(|| SupportError::Cluster("no node is running".into()))
    }

    fn tell_watchdog(&mut self) {
        let pids: Vec<String> = self
            .nodes
            .iter()
            .filter_map(|n| n.pid().map(|p| p.to_string()))
            .collect();
        if let Some(w) = self.watchdog.as_mut() {
            w.tell(&pids.join(" "));
        }
    }

    fn log_tails(&self) -> String {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, n)| format!("--- node {i} log (tail) ---\n{}", n.log_tail(1500)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for ValkeyCluster {
    fn drop(&mut self) {
        for node in std::mem::take(&mut self.stopped) {
            let _ = self.signal(node, "-CONT");
        }
        // Each node kills its process and releases its ports.
        self.nodes.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
        // `watchdog` is dropped (disarmed) after this.
    }
}

/// A slot on its way from one primary to another; see
/// [`ValkeyCluster::begin_slot_migration`].
pub struct SlotMigration<'a> {
    cluster: &'a mut ValkeyCluster,
    slot: u16,
    from: usize,
    to: usize,
}

impl SlotMigration<'_> {
    /// The primary the slot leaves.
    pub fn from(&self) -> usize {
        self.from
    }

    /// The primary the slot goes to.
    pub fn to(&self) -> usize {
        self.to
    }

    /// The cluster, for commands while the slot is in flight.
    pub fn cluster(&mut self) -> &mut ValkeyCluster {
        self.cluster
    }

    /// Moves up to `max` of the slot's remaining keys with `MIGRATE`;
    /// returns how many moved (0 when none is left).
    pub fn move_keys(&mut self, max: usize) -> Result<usize, SupportError> {
        let (slot, max_text) = (self.slot.to_string(), max.to_string());
        let keys = match self
            .cluster
            .command(self.from, &["CLUSTER", "GETKEYSINSLOT", &slot, &max_text])?
        {
            Reply::Array(Some(keys)) => keys,
            other => return Err(unexpected("CLUSTER GETKEYSINSLOT", &other)),
        };
        let mut keys: Vec<Vec<u8>> = keys
            .into_iter()
            .map(|k| match k {
                Reply::Bulk(Some(key)) => Ok(key),
                other => Err(unexpected("CLUSTER GETKEYSINSLOT", &other)),
            })
            .collect::<Result<_, _>>()?;
        if keys.is_empty() {
            return Ok(0);
        }
        let moved = keys.len();
        let port = self.cluster.nodes[self.to].port().to_string();
        let mut args: Vec<Vec<u8>> = ["MIGRATE", "127.0.0.1", &port, "", "0", "10000", "KEYS"]
            .iter()
            .map(|a| a.as_bytes().to_vec())
            .collect();
        args.append(&mut keys);
        let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        expect_ok(self.cluster.nodes[self.from].command(&args)?, "MIGRATE")?;
        Ok(moved)
    }

    /// Hands the slot to its new owner (`CLUSTER SETSLOT … NODE` on the
    /// target, the source, then every other primary) once no key is left
    /// to move, and waits until the cluster is stable.
    pub fn finish(self) -> Result<(), SupportError> {
        let slot = self.slot.to_string();
        let left = match self
            .cluster
            .command(self.from, &["CLUSTER", "COUNTKEYSINSLOT", &slot])?
        {
            Reply::Integer(n) => n,
            other => return Err(unexpected("CLUSTER COUNTKEYSINSLOT", &other)),
        };
        if left != 0 {
            return Err(SupportError::Cluster(format!(
                "slot {slot} still has {left} keys on node {}: move them first",
                self.from
            )));
        }
        let to_id = self.cluster.ids[self.to].clone();
        let others: Vec<usize> = self
            .cluster
            .topology()?
            .primaries()
            .into_iter()
            .filter(|&p| p != self.to && p != self.from)
            .collect();
        for node in [self.to, self.from].into_iter().chain(others) {
            expect_ok(
                self.cluster
                    .command(node, &["CLUSTER", "SETSLOT", &slot, "NODE", &to_id])?,
                "CLUSTER SETSLOT NODE",
            )?;
        }
        self.cluster.wait_until_stable()
    }
}

fn unexpected(command: &str, reply: &Reply) -> SupportError {
    SupportError::Protocol(format!("{command} answered {reply:?}"))
}

fn expect_ok(reply: Reply, command: &str) -> Result<(), SupportError> {
    match reply {
        Reply::Simple(s) if s == "OK" => Ok(()),
        other => Err(unexpected(command, &other)),
    }
}

fn text_reply(reply: Reply, command: &str) -> Result<String, SupportError> {
    match reply {
        Reply::Bulk(Some(text)) => Ok(String::from_utf8_lossy(&text).into_owned()),
        other => Err(unexpected(command, &other)),
    }
}

#[cfg(test)]
mod tests;
