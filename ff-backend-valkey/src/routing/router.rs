//! [`Router`]: sends a command or a transaction to the node serving its
//! slot, over one multiplexed connection per node, and follows the
//! cluster's answers until the request is served or its deadline passes.
//!
//! - `MOVED`: the slot map is corrected at once (a full refresh follows in
//!   the background) and the request goes to the new owner;
//! - `ASK`: the request goes to the named node once, preceded by `ASKING`
//!   in the same write on the same connection;
//! - `TRYAGAIN`, `LOADING`, `CLUSTERDOWN`, `MASTERDOWN`, `READONLY`: it is
//!   resent after a growing pause (the topology refreshed meanwhile for the
//!   last three; on a standalone server, a demoted one, over a new
//!   connection, which a moved address leads to the new primary), until the
//!   deadline;
//! - a slot whose node just stopped answering (see [`super::health`]): the
//!   request is not sent; it waits, as for `CLUSTERDOWN`, until a refresh
//!   names another owner or a ping finds the node back;
//! - a connection that cannot be opened: the topology is refreshed (a
//!   failover may be under way) and the request resent after a pause; one
//!   that breaks or times out mid-request has the topology refreshed too
//!   (the request itself is resent only as the invariant below allows);
//! - a reply that is not valid RESP (a server, or something in between,
//!   garbling replies): an idempotent request is resent on a new
//!   connection, at most [`MAX_INVALID_REPLIES`] times; the error then
//!   names the invalid reply, not the connection failures that follow it.
//!
//! Pauses between attempts grow exponentially with jitter
//! ([`ff_core::backend::Backoff`]), so the many requests a failover
//! interrupts do not return in lockstep.
//!
//! Refreshes run on a task of their own, one at a time: a request whose
//! caller stops polling it never holds up another's. A refresh asks up to
//! [`PROBE_FANOUT`] nodes at once, each bounded by the ping timeout, nodes
//! that just failed ([`super::health`]) last, and adopts the first answer
//! that serves every slot (else the best one); when no known node answers,
//! it asks the URL's seed nodes. While a node serving slots is suspect,
//! refreshes repeat every [`DEGRADED_REFRESH_INTERVAL`], and each adopted
//! change is announced ([`Router::topology_changes`]). A transaction whose
//! writes must reach replicas goes on the node's connection for
//! acknowledged writes instead ([`super::acks`]), so its `WAIT` never
//! blocks the shared one.
//!
//! Invariant: a request is resent only when the server certainly did not
//! apply it — it refused it (the replies above: a transaction refused
//! while queueing is discarded whole, `EXECABORT`), or no connection was
//! open to send it on — or when the caller declared it safe to repeat
//! ([`Retry::Idempotent`]). A write whose connection failed after it was
//! sent is ambiguous and is reported, never silently repeated.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use ff_core::backend::{Backoff, ReconnectPolicy};
use futures::stream::{FuturesUnordered, StreamExt};
use redis::{Cmd, ErrorKind, Pipeline, RedisError, RedisResult, Value};
use tokio::time::Instant;

use super::acks::AckedConnection;
use super::health::Health;
use super::redirect::{NodeAddr, Redirect};
use super::slot::SLOTS;
use super::topology::Topology;
use crate::connection::{SendError, SharedConnection};
use crate::transport::Endpoint;

/// Most `MOVED`/`ASK` hops one request follows between two waits (a loop
/// means the cluster disagrees with itself; the deadline ends waits, this
/// ends ping-pong).
const MAX_REDIRECTS: u32 = 16;
/// First pause before resending a request the cluster cannot serve yet.
const FIRST_PAUSE: Duration = Duration::from_millis(5);
/// Longest pause between two attempts.
const MAX_PAUSE: Duration = Duration::from_millis(250);
/// Invalid replies one request meets before it fails naming them.
const MAX_INVALID_REPLIES: u32 = 3;
/// Topology refreshes are at most this frequent.
const MIN_REFRESH_INTERVAL: Duration = Duration::from_millis(100);
/// Nodes one topology refresh asks at once.
pub(crate) const PROBE_FANOUT: usize = 3;
/// Once one node of a wave answered, how much longer the others may take
/// to give a better answer (one that serves more slots).
const PROBE_GRACE: Duration = Duration::from_millis(100);
/// While a node serving slots is suspect, the topology is refreshed this
/// often, so the replica the cluster promotes is found soon after.
const DEGRADED_REFRESH_INTERVAL: Duration = Duration::from_millis(250);

/// Whether a request may be sent again after its connection failed once
/// it may have been sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Reads, and writes whose repetition is harmless.
    Idempotent,
    /// Writes: resent only when certainly not applied.
    Once,
}

/// What to send.
enum Request<'a> {
    Command(&'a Cmd),
    Transaction(&'a Transaction),
}

/// Commands to run in one `MULTI`/`EXEC`, written once into the pipeline
/// that is sent (not copied per attempt), optionally acknowledged by
/// replicas (a `WAIT`).
pub(crate) struct Transaction {
    /// The commands, as an atomic pipeline (`MULTI` and `EXEC` added when
    /// it is written; only `EXEC`'s reply is kept, a refusal while
    /// queueing becomes the error).
    pipe: Pipeline,
    wait: Option<Cmd>,
}

impl Transaction {
    /// `cmds` in one `MULTI`/`EXEC`.
    pub(crate) fn new(cmds: impl IntoIterator<Item = Cmd>) -> Self {
        let mut pipe = redis::pipe();
        pipe.atomic();
        for cmd in cmds {
            pipe.add_command(cmd);
        }
        Self { pipe, wait: None }
    }

    /// Wait for replicas to acknowledge the transaction with `wait` (a
    /// `WAIT`), shared with the acknowledged writes around it.
    pub(crate) fn acknowledged_by(mut self, wait: Cmd) -> Self {
        self.wait = Some(wait);
        self
    }

    /// The transaction spelled out, behind `ASKING` when `asking`: for the
    /// less common paths.
    fn spelled_out(&self, asking: bool) -> Pipeline {
        let mut pipe = redis::pipe();
        if asking {
            pipe.cmd("ASKING");
        }
        pipe.cmd("MULTI");
        for cmd in self.pipe.cmd_iter() {
            pipe.add_command(cmd.clone());
        }
        pipe.cmd("EXEC");
        pipe
    }
}

/// Routes requests to the node serving their slot; see the module docs.
pub(crate) struct Router {
    /// The URL's seed that answered first: TLS, credentials and database
    /// for every node.
    seed: Endpoint,
    seed_addr: NodeAddr,
    /// Every seed the URL names: asked for the topology when no known node
    /// answers.
    seeds: Vec<NodeAddr>,
    /// Which nodes answered lately and which just failed.
    health: Health,
    name: String,
    connect_timeout: Duration,
    command_timeout: Duration,
    topology: RwLock<Topology>,
    connections: Mutex<HashMap<NodeAddr, Arc<SharedConnection>>>,
    /// Each node's connection for acknowledged writes.
    acked: Mutex<HashMap<NodeAddr, Arc<AckedConnection>>>,
    /// Per slot, the node the last redirect of a request for it named.
    redirected: Mutex<HashMap<u16, tokio::sync::watch::Sender<Option<NodeAddr>>>>,
    /// Held while a refresh runs: concurrent refreshes wait for it and then
    /// find theirs done (the value: when the last one finished).
    refreshing: tokio::sync::Mutex<Option<Instant>>,
    refresh_scheduled: AtomicBool,
    /// Counts the topologies adopted that differ from the one before.
    changes: tokio::sync::watch::Sender<u64>,
    this: Weak<Router>,
}

impl Router {
    /// Connect to the first of `seeds` that answers (in order, each within
    /// the connect timeout) and learn whether it is a standalone server or
    /// a node of a cluster (`CLUSTER SHARDS`, refused by a server with
    /// cluster support disabled); a cluster's topology is read at once.
    /// Every connection is named `name` (`CLIENT SETNAME`). `Err`: the
    /// first seed's failure, when none answered.
    pub(crate) async fn discover(
        seeds: Vec<Endpoint>,
        name: String,
        timeouts: (Duration, Duration),
        health: (Duration, Duration),
    ) -> RedisResult<Arc<Self>> {
        let addrs: Vec<NodeAddr> = seeds
            .iter()
            .map(|s| NodeAddr::new(&s.host, s.port))
            .collect();
        let mut first_error = None;
        for seed in seeds {
            let addr = NodeAddr::new(&seed.host, seed.port);
            let router = Arc::new_cyclic(|this| Router {
                topology: RwLock::new(Topology::standalone(addr.clone())),
                seed,
                seed_addr: addr.clone(),
                seeds: addrs.clone(),
                health: Health::new(health.0, health.1),
                name: name.clone(),
                connect_timeout: timeouts.0,
                command_timeout: timeouts.1,
                connections: Mutex::new(HashMap::new()),
                acked: Mutex::new(HashMap::new()),
                redirected: Mutex::new(HashMap::new()),
                refreshing: tokio::sync::Mutex::new(None),
                refresh_scheduled: AtomicBool::new(false),
                changes: tokio::sync::watch::channel(0).0,
                this: this.clone(),
            });
            match router.learn_kind().await {
                Ok(()) => return Ok(router),
                Err(e) if addrs.len() > 1 => {
                    tracing::info!(seed = %addr, error = %e, "ff valkey: a seed node did not answer; trying the next one");
                    first_error.get_or_insert(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(first_error.unwrap_or_else(|| {
            RedisError::from((ErrorKind::ClientError, "the URL names no server"))
        }))
    }

    /// Ask the seed whether it is a cluster, and read its topology if so.
    async fn learn_kind(&self) -> RedisResult<()> {
        let conn = self.connection(&self.seed_addr);
        conn.ensure_open().await?;
        let reply = conn
            .command(redis::cmd("CLUSTER").arg("SHARDS"))
            .await
            .map_err(SendError::into_inner)?;
        match reply {
            Value::ServerError(e)
                if e.details()
                    .is_some_and(|d| d.contains("cluster support disabled")) => {}
            Value::ServerError(e) => return Err(e.into()),
            shards => {
                let topology = self.parse_shards(&shards, &self.seed_addr)?;
                *self.topology.write().unwrap_or_else(|e| e.into_inner()) = topology;
            }
        }
        Ok(())
    }

    fn parse_shards(&self, reply: &Value, from: &NodeAddr) -> RedisResult<Topology> {
        Topology::from_shards(reply, self.seed.tls.is_some(), from).map_err(|why| {
            RedisError::from((
                ErrorKind::ClientError,
                "unexpected CLUSTER SHARDS reply",
                why,
            ))
        })
    }

    /// Whether the server is a Valkey Cluster.
    pub(crate) fn is_cluster(&self) -> bool {
        self.read_topology().is_cluster()
    }

    /// The nodes serving slots now.
    pub(crate) fn primaries(&self) -> Vec<NodeAddr> {
        self.read_topology().primaries()
    }

    /// The node serving `slot` now, if any.
    pub(crate) fn owner(&self, slot: u16) -> Option<NodeAddr> {
        self.read_topology().owner(slot).cloned()
    }

    /// How to connect to `addr`: the seed's TLS settings (the certificate
    /// checked against `addr`'s host), credentials and database.
    pub(crate) fn endpoint(&self, addr: &NodeAddr) -> Endpoint {
        let mut endpoint = self.seed.clone();
        endpoint.host = addr.host.to_string();
        endpoint.port = addr.port;
        endpoint
    }

    /// The URL's seed the backend reached first.
    pub(crate) fn seed(&self) -> &NodeAddr {
        &self.seed_addr
    }

    /// Whether `addr` is alive: it answered within the ping interval, or
    /// answers a `PING` within the ping timeout now (one ping per node,
    /// shared by every caller). A node that does not is suspect, and its
    /// shared connection is dropped (a request stuck on it would hold up
    /// the next ones).
    pub(crate) async fn node_alive(&self, addr: &NodeAddr) -> bool {
        let timeout = self.health.timeout();
        let alive = self
            .health
            .check(addr, async {
                let conn = self.connection(addr);
                let cmd = redis::cmd("PING");
                let ping = conn.command(&cmd);
                // Any reply, a refusal (`BUSY`, `LOADING`) included, is a
                // node that runs.
                matches!(tokio::time::timeout(timeout, ping).await, Ok(Ok(_)))
            })
            .await;
        if !alive {
            self.forget(addr);
        }
        alive
    }

    /// Resolves once `addr` is found dead: checked every ping interval
    /// while polled (for a caller waiting on a reply from it).
    pub(crate) async fn until_dead(&self, addr: &NodeAddr) {
        loop {
            tokio::time::sleep(self.health.interval()).await;
            if !self.node_alive(addr).await {
                return;
            }
        }
    }

    /// Check `addr` on a task of its own (unless a ping to it is in
    /// flight): a suspect that answers is one no longer.
    pub(crate) fn ping_soon(&self, addr: &NodeAddr) {
        if self.health.is_pinging(addr) {
            return;
        }
        let (Some(router), addr) = (self.this.upgrade(), addr.clone()) else {
            return;
        };
        tokio::spawn(async move {
            router.node_alive(&addr).await;
        });
    }

    /// Whether `addr` failed lately (see [`Health::is_suspect`]).
    pub(crate) fn is_suspect(&self, addr: &NodeAddr) -> bool {
        self.health.is_suspect(addr)
    }

    /// How long a node has to answer a ping or a probe.
    pub(crate) fn ping_timeout(&self) -> Duration {
        self.health.timeout()
    }

    fn read_topology(&self) -> std::sync::RwLockReadGuard<'_, Topology> {
        self.topology.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The shared connection to `addr` (opened on first use).
    /// Drop the connections to `addr`: the next request opens new ones.
    /// Requests already sent on them finish undisturbed.
    fn forget(&self, addr: &NodeAddr) {
        self.connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(addr);
        self.acked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(addr);
    }

    fn connection(&self, addr: &NodeAddr) -> Arc<SharedConnection> {
        let mut map = self.connections.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(addr.clone())
            .or_insert_with(|| {
                Arc::new(SharedConnection::new(
                    self.endpoint(addr),
                    self.name.clone(),
                    self.connect_timeout,
                    self.command_timeout,
                ))
            })
            .clone()
    }

    /// The connection for acknowledged writes to `addr` (opened on first
    /// use).
    fn acked_connection(&self, addr: &NodeAddr) -> Arc<AckedConnection> {
        let mut map = self.acked.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(addr.clone())
            .or_insert_with(|| {
                Arc::new(AckedConnection::new(SharedConnection::new(
                    self.endpoint(addr),
                    self.name.clone(),
                    self.connect_timeout,
                    self.command_timeout,
                )))
            })
            .clone()
    }

    /// Changes whenever a request for `slot` is redirected (`MOVED`,
    /// `ASK`), to the node the redirect named: a subscription waiting on
    /// another node for that slot then reads again, since its stream may
    /// have moved (see the reader's live wait).
    pub(crate) fn redirects_of(&self, slot: u16) -> tokio::sync::watch::Receiver<Option<NodeAddr>> {
        self.redirected
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(slot)
            .or_insert_with(|| tokio::sync::watch::channel(None).0)
            .subscribe()
    }

    /// Tell what watches [`Router::redirects_of`]`(slot)` that a request
    /// for it was sent to `to`.
    fn wake_waiters(&self, slot: u16, to: &NodeAddr) {
        let map = self.redirected.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(sender) = map.get(&slot) {
            sender.send_replace(Some(to.clone()));
        }
    }

    /// Run `cmd` on the node serving `slot`: its reply (a refusal the
    /// router does not handle is `Ok(Value::ServerError)`).
    pub(crate) async fn command(&self, slot: u16, cmd: &Cmd, retry: Retry) -> RedisResult<Value> {
        self.run(slot, Request::Command(cmd), retry)
            .await
            .map(|(reply, _)| reply)
    }

    /// Run `transaction` on the node serving `slot` (every key in that
    /// slot). `Ok` is `EXEC`'s reply — one reply per command, or a refusal
    /// of the whole transaction as `Value::ServerError` — and, when it
    /// asked for replicas' acknowledgement and was applied, the reply of
    /// the `WAIT` that covers it (`Err` when it could not be read: the
    /// writes are applied, whether replicas have them is unknown); a
    /// command refused while queueing (the transaction was discarded) is
    /// `Err` carrying that refusal.
    pub(crate) async fn transaction(
        &self,
        slot: u16,
        transaction: &Transaction,
        retry: Retry,
    ) -> RedisResult<(Value, Option<RedisResult<Value>>)> {
        self.run(slot, Request::Transaction(transaction), retry)
            .await
    }

    async fn run(
        &self,
        slot: u16,
        request: Request<'_>,
        retry: Retry,
    ) -> RedisResult<(Value, Option<RedisResult<Value>>)> {
        let deadline = Instant::now() + self.command_timeout;
        let mut pause = None;
        let mut redirects = 0;
        let mut asking: Option<NodeAddr> = None;
        let mut invalid = InvalidReplies::default();
        loop {
            let (addr, ask) = match asking.take() {
                Some(addr) => (addr, true),
                None => match self.owner(slot) {
                    Some(addr) if self.is_cluster() && self.health.is_suspect(&addr) => {
                        // Not sent to a node that just stopped answering:
                        // wait for the cluster to promote its replica, or
                        // for a ping to find it back.
                        let e = RedisError::from((
                            ErrorKind::ClusterDown,
                            "the node serving the slot answers no ping",
                            format!("slot {slot} on {addr} (is the cluster failing it over?)"),
                        ));
                        self.ping_soon(&addr);
                        self.schedule_refresh();
                        self.wait(&mut pause, deadline, e).await?;
                        continue;
                    }
                    Some(addr) => (addr, false),
                    None => {
                        let e = RedisError::from((
                            ErrorKind::ClusterDown,
                            "no node serves the slot",
                            format!("slot {slot} (is the cluster failing over?)"),
                        ));
                        self.schedule_refresh();
                        self.wait(&mut pause, deadline, e).await?;
                        continue;
                    }
                },
            };
            let (outcome, then_reply) = match self.send(&addr, &request, ask).await {
                Ok((reply, then_reply)) => (Ok(reply), then_reply),
                Err(e) => (Err(e), None),
            };
            if let Err(SendError::Exchange(e)) = &outcome {
                if crate::error::breaks_connection(e) {
                    // A node that stopped answering (or a connection cut
                    // mid-request) may be a node the cluster is failing
                    // over: ask the others, and ask it last for a while.
                    if e.is_timeout() {
                        self.health.failed(&addr);
                    }
                    self.schedule_refresh();
                }
                invalid.saw(e);
                if invalid.count >= MAX_INVALID_REPLIES || retry == Retry::Once {
                    if let Some(e) = invalid.error() {
                        return Err(e);
                    }
                }
            }
            let redirect = match &outcome {
                Ok(reply) => match refusal(reply) {
                    Some((code, detail)) => Redirect::classify(code, detail, &addr),
                    None => {
                        return outcome
                            .map(|reply| (reply, then_reply))
                            .map_err(SendError::into_inner)
                    }
                },
                Err(SendError::Exchange(e)) if e.code().is_some() => {
                    Redirect::classify_error(e, &addr)
                }
                Err(SendError::Connect(_)) => {
                    self.health.failed(&addr);
                    Some(Redirect::Wait { refresh: true })
                }
                Err(SendError::Exchange(_)) if retry == Retry::Idempotent => {
                    Some(Redirect::Wait { refresh: true })
                }
                Err(SendError::Exchange(_)) => None,
            };
            match redirect {
                None => {
                    return outcome
                        .map(|reply| (reply, then_reply))
                        .map_err(SendError::into_inner)
                }
                Some(Redirect::Moved { slot: moved, to }) => {
                    redirects += 1;
                    self.wake_waiters(moved, &to);
                    self.moved(moved, &to);
                }
                Some(Redirect::Ask { slot: asked, to }) => {
                    redirects += 1;
                    self.wake_waiters(asked, &to);
                    asking = Some(to);
                }
                Some(Redirect::Wait { refresh }) => {
                    redirects = 0;
                    if refresh && !self.is_cluster() {
                        // A standalone server that stopped being primary:
                        // the address may lead to the new one now (a moved
                        // virtual IP, DNS name or proxy), which only a new
                        // connection reaches.
                        self.forget(&addr);
                    } else if refresh {
                        self.schedule_refresh();
                    }
                    let e = match outcome {
                        Ok(reply) => reply.extract_error().err().unwrap_or_else(|| {
                            RedisError::from((ErrorKind::ClusterDown, "the cluster refused"))
                        }),
                        Err(e) => e.into_inner(),
                    };
                    self.wait(&mut pause, deadline, invalid.error().unwrap_or(e))
                        .await?;
                    continue;
                }
            }
            if redirects > MAX_REDIRECTS {
                return Err(RedisError::from((
                    ErrorKind::ClientError,
                    "too many cluster redirects",
                    format!("slot {slot}: the nodes keep redirecting to each other"),
                )));
            }
        }
    }

    /// Pause before the next attempt, or give up with `last` when the
    /// deadline would pass.
    async fn wait(
        &self,
        pause: &mut Option<Backoff>,
        deadline: Instant,
        last: RedisError,
    ) -> RedisResult<()> {
        let pause = pause
            .get_or_insert_with(|| {
                ReconnectPolicy::new(None, None)
                    .with_backoff(FIRST_PAUSE, MAX_PAUSE)
                    .start()
            })
            .next_delay()
            .unwrap_or(MAX_PAUSE);
        if Instant::now() + pause > deadline {
            return Err(last);
        }
        tokio::time::sleep(pause).await;
        Ok(())
    }

    /// One attempt on `addr`.
    async fn send(
        &self,
        addr: &NodeAddr,
        request: &Request<'_>,
        asking: bool,
    ) -> Result<(Value, Option<RedisResult<Value>>), SendError> {
        if let Request::Transaction(Transaction {
            wait: Some(wait), ..
        }) = request
        {
            return self.send_acknowledged(addr, request, wait, asking).await;
        }
        let conn = self.connection(addr);
        let transaction = match request {
            Request::Command(cmd) if !asking => {
                return conn.command(cmd).await.map(|reply| (reply, None))
            }
            Request::Command(cmd) => {
                let mut pipe = redis::pipe();
                pipe.cmd("ASKING").add_command((*cmd).clone());
                let mut replies = conn.pipeline(&pipe).await?;
                let reply = replies.pop().unwrap_or(Value::Nil);
                return match replies.pop() {
                    Some(Value::ServerError(e)) => Err(SendError::Exchange(e.into())),
                    _ => Ok((reply, None)),
                };
            }
            Request::Transaction(transaction) => transaction,
        };
        if !asking {
            return conn
                .transaction(&transaction.pipe)
                .await
                .map(|reply| (reply, None));
        }
        let replies = conn.pipeline(&transaction.spelled_out(asking)).await?;
        exec_reply(replies, transaction, asking).map(|reply| (reply, None))
    }

    /// One attempt of a transaction whose writes replicas must
    /// acknowledge, on `addr`'s connection for acknowledged writes; the
    /// `WAIT` covering it is awaited only once `EXEC` applied it.
    async fn send_acknowledged(
        &self,
        addr: &NodeAddr,
        request: &Request<'_>,
        wait: &Cmd,
        asking: bool,
    ) -> Result<(Value, Option<RedisResult<Value>>), SendError> {
        let Request::Transaction(transaction) = request else {
            unreachable!("only transactions are acknowledged")
        };
        let acked = self.acked_connection(addr);
        let (replies, ticket) = acked.write(&transaction.spelled_out(asking)).await?;
        let reply = exec_reply(replies, transaction, asking)?;
        if matches!(reply, Value::ServerError(_)) {
            return Ok((reply, None));
        }
        let acks = acked
            .acknowledged(ticket, wait)
            .await
            .map_err(SendError::into_inner);
        Ok((reply, Some(acks)))
    }

    /// A `MOVED` reply: `to` serves `slot` now. Corrects that slot at once
    /// and refreshes the whole topology in the background (a resharding or
    /// failover rarely moves just one slot).
    pub(crate) fn moved(&self, slot: u16, to: &NodeAddr) {
        self.topology
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .set_owner(slot, to);
        self.schedule_refresh();
    }

    /// Refresh the topology soon, on a task of its own.
    pub(crate) fn schedule_refresh(&self) {
        if self.refresh_scheduled.swap(true, Ordering::AcqRel) {
            return;
        }
        let Some(router) = self.this.upgrade() else {
            return;
        };
        tokio::spawn(async move {
            router.refresh_scheduled.store(false, Ordering::Release);
            router.refresh().await;
            let degraded = router.is_cluster()
                && router
                    .primaries()
                    .iter()
                    .any(|node| router.health.is_suspect(node));
            if degraded {
                let router = Arc::downgrade(&router);
                tokio::time::sleep(DEGRADED_REFRESH_INTERVAL).await;
                if let Some(router) = router.upgrade() {
                    router.schedule_refresh();
                }
            }
        });
    }

    /// Changes whenever a refresh adopts a topology that differs from the
    /// one before (a failover found, a resharding): a subscription waiting
    /// to reconnect then tries at once.
    pub(crate) fn topology_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Ask the known nodes for the topology — [`PROBE_FANOUT`] at a time,
    /// each within the ping timeout, suspects last, the URL's seeds after
    /// the nodes the topology names — and adopt the first answer serving
    /// every slot, else the one serving most among the answers of the
    /// first wave that gave any (a cluster failing over serves fewer than
    /// all; the others of the wave get [`PROBE_GRACE`] after the first);
    /// at most one refresh per [`MIN_REFRESH_INTERVAL`], and concurrent
    /// callers share one. A standalone server has nothing to refresh.
    pub(crate) async fn refresh(&self) {
        if !self.is_cluster() {
            return;
        }
        let asked_at = Instant::now();
        let mut last = self.refreshing.lock().await;
        if let Some(done) = *last {
            if done >= asked_at {
                return; // one finished while this caller waited
            }
            let next = done + MIN_REFRESH_INTERVAL;
            if next > Instant::now() {
                tokio::time::sleep_until(next).await;
            }
        }
        let mut candidates = self.read_topology().all_nodes();
        for seed in &self.seeds {
            if !candidates.contains(seed) {
                candidates.push(seed.clone());
            }
        }
        let (mut order, suspects): (Vec<NodeAddr>, Vec<NodeAddr>) = candidates
            .into_iter()
            .partition(|addr| !self.health.is_suspect(addr));
        order.extend(suspects);
        let mut best: Option<Topology> = None;
        for wave in order.chunks(PROBE_FANOUT) {
            let mut probes: FuturesUnordered<_> =
                wave.iter().map(|addr| self.probe(addr)).collect();
            // Until the first answer, every probe's own bound; after it,
            // a short grace for a better one.
            let mut until: Option<Instant> = None;
            loop {
                let next = match until {
                    None => probes.next().await,
                    Some(at) => match tokio::time::timeout_at(at, probes.next()).await {
                        Ok(next) => next,
                        Err(_) => break,
                    },
                };
                let Some(answer) = next else { break };
                let Some(topology) = answer else { continue };
                until.get_or_insert_with(|| Instant::now() + PROBE_GRACE);
                if best
                    .as_ref()
                    .is_none_or(|b| topology.slots_served() > b.slots_served())
                {
                    best = Some(topology);
                }
                if best
                    .as_ref()
                    .is_some_and(|b| b.slots_served() == usize::from(SLOTS))
                {
                    break;
                }
            }
            if best.is_some() {
                break;
            }
        }
        if let Some(topology) = best {
            self.adopt(topology);
        }
        *last = Some(Instant::now());
    }

    /// One node's topology, within the ping timeout: `None` when it did
    /// not answer in time (it is then suspect and its connection dropped),
    /// or answered with no slot served or something unreadable.
    async fn probe(&self, addr: &NodeAddr) -> Option<Topology> {
        let conn = self.connection(addr);
        let mut cmd = redis::cmd("CLUSTER");
        cmd.arg("SHARDS");
        let ask = conn.command(&cmd);
        let reply = match tokio::time::timeout(self.health.timeout(), ask).await {
            Ok(Ok(reply @ Value::Array(_))) => reply,
            Ok(Ok(_)) => {
                self.health.answered(addr);
                return None;
            }
            Ok(Err(_)) | Err(_) => {
                tracing::debug!(node = %addr, "ff valkey: no topology from a node within the ping timeout");
                self.health.failed(addr);
                self.forget(addr);
                return None;
            }
        };
        self.health.answered(addr);
        match self.parse_shards(&reply, addr) {
            Ok(topology) if topology.slots_served() > 0 => Some(topology),
            Ok(_) => None,
            Err(e) => {
                tracing::debug!(node = %addr, error = %e, "ff valkey: ignoring a topology reply");
                None
            }
        }
    }

    /// Route by `topology` from now on, dropping connections to nodes it
    /// no longer names (the seeds' are kept).
    fn adopt(&self, topology: Topology) {
        let known = topology.all_nodes();
        let changed = {
            let mut current = self.topology.write().unwrap_or_else(|e| e.into_inner());
            let changed = *current != topology;
            *current = topology;
            changed
        };
        if changed {
            self.changes.send_modify(|n| *n += 1);
        }
        self.connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|a, _| known.contains(a) || self.seeds.contains(a));
        self.acked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|a, _| known.contains(a));
    }
}

/// The replies of one request that were not valid RESP.
#[derive(Default)]
struct InvalidReplies {
    count: u32,
    last: Option<String>,
}

impl InvalidReplies {
    /// Count `e` if the client could not parse a reply (or the connection
    /// broke before any reply on it could be read, see
    /// [`SharedConnection`]).
    fn saw(&mut self, e: &RedisError) {
        if e.kind() == ErrorKind::ParseError {
            self.count += 1;
            let text = e.detail().map_or_else(|| e.to_string(), str::to_owned);
            self.last = Some(text.split_whitespace().collect::<Vec<_>>().join(" "));
        }
    }

    /// The error naming them, once there was one.
    fn error(&self) -> Option<RedisError> {
        let last = self.last.as_ref()?;
        Some(
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "no valid reply from the server ({} attempt(s) in a row, last: {last}); is this a Valkey/Redis 7+ server, or is something in between altering replies?",
                    self.count
                ),
            )
            .into(),
        )
    }
}

/// `EXEC`'s reply among the `replies` of `transaction` spelled out:
/// `Err` with the first refusal among `ASKING`, `MULTI` and the `QUEUED`s
/// (why the transaction was discarded).
fn exec_reply(
    mut replies: Vec<Value>,
    transaction: &Transaction,
    asking: bool,
) -> Result<Value, SendError> {
    for reply in replies
        .iter()
        .take(usize::from(asking) + 1 + transaction.pipe.len())
    {
        if let Value::ServerError(e) = reply {
            return Err(SendError::Exchange(e.clone().into()));
        }
    }
    Ok(replies.pop().unwrap_or(Value::Nil))
}

/// The code and detail of an error reply.
fn refusal(reply: &Value) -> Option<(&str, &str)> {
    match reply {
        Value::ServerError(e) => Some((e.code(), e.details().unwrap_or(""))),
        _ => None,
    }
}
