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
//! - a connection that cannot be opened: the topology is refreshed (a
//!   failover may be under way) and the request resent after a pause;
//! - a reply that is not valid RESP (a server, or something in between,
//!   garbling replies): an idempotent request is resent on a new
//!   connection, at most [`MAX_INVALID_REPLIES`] times; the error then
//!   names the invalid reply, not the connection failures that follow it.
//!
//! Refreshes run on a task of their own, one at a time: a request whose
//! caller stops polling it never holds up another's. A transaction whose
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

use redis::{Cmd, ErrorKind, Pipeline, RedisError, RedisResult, Value};
use tokio::time::Instant;

use super::acks::AckedConnection;
use super::redirect::{NodeAddr, Redirect};
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
/// Topology refreshes are at most this frequent (each asks one node).
const MIN_REFRESH_INTERVAL: Duration = Duration::from_millis(100);

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
    /// The URL's server: TLS, credentials and database for every node.
    seed: Endpoint,
    seed_addr: NodeAddr,
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
    this: Weak<Router>,
}

impl Router {
    /// Connect to `seed` and learn whether it is a standalone server or a
    /// node of a cluster (`CLUSTER SHARDS`, refused by a server with
    /// cluster support disabled); a cluster's topology is read at once.
    /// Every connection is named `name` (`CLIENT SETNAME`).
    pub(crate) async fn discover(
        seed: Endpoint,
        name: String,
        connect_timeout: Duration,
        command_timeout: Duration,
    ) -> RedisResult<Arc<Self>> {
        let seed_addr = NodeAddr::new(&seed.host, seed.port);
        let router = Arc::new_cyclic(|this| Router {
            topology: RwLock::new(Topology::standalone(seed_addr.clone())),
            seed,
            seed_addr: seed_addr.clone(),
            name,
            connect_timeout,
            command_timeout,
            connections: Mutex::new(HashMap::new()),
            acked: Mutex::new(HashMap::new()),
            redirected: Mutex::new(HashMap::new()),
            refreshing: tokio::sync::Mutex::new(None),
            refresh_scheduled: AtomicBool::new(false),
            this: this.clone(),
        });
        let conn = router.connection(&seed_addr);
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
                let topology = router.parse_shards(&shards, &seed_addr)?;
                *router.topology.write().unwrap_or_else(|e| e.into_inner()) = topology;
            }
        }
        Ok(router)
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

    /// The URL's own server.
    pub(crate) fn seed(&self) -> &NodeAddr {
        &self.seed_addr
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
        let mut pause = FIRST_PAUSE;
        let mut redirects = 0;
        let mut asking: Option<NodeAddr> = None;
        let mut invalid = InvalidReplies::default();
        loop {
            let (addr, ask) = match asking.take() {
                Some(addr) => (addr, true),
                None => match self.owner(slot) {
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
                Err(SendError::Connect(_)) => Some(Redirect::Wait { refresh: true }),
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
        pause: &mut Duration,
        deadline: Instant,
        last: RedisError,
    ) -> RedisResult<()> {
        if Instant::now() + *pause > deadline {
            return Err(last);
        }
        tokio::time::sleep(*pause).await;
        *pause = (*pause * 2).min(MAX_PAUSE);
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
        });
    }

    /// Ask the known nodes, one after another, for the topology and adopt
    /// the first answer; at most one refresh per [`MIN_REFRESH_INTERVAL`],
    /// and concurrent callers share one. A standalone server has nothing
    /// to refresh.
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
        if !candidates.contains(&self.seed_addr) {
            candidates.push(self.seed_addr.clone());
        }
        for addr in candidates {
            let conn = self.connection(&addr);
            let reply = match conn.command(redis::cmd("CLUSTER").arg("SHARDS")).await {
                Ok(reply @ Value::Array(_)) => reply,
                Ok(_) | Err(_) => continue,
            };
            match self.parse_shards(&reply, &addr) {
                Ok(topology) if topology.slots_served() > 0 => {
                    let known = topology.all_nodes();
                    *self.topology.write().unwrap_or_else(|e| e.into_inner()) = topology;
                    self.connections
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .retain(|a, _| known.contains(a) || *a == self.seed_addr);
                    self.acked
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .retain(|a, _| known.contains(a));
                    break;
                }
                Ok(_) => continue,
                Err(e) => {
                    tracing::debug!(node = %addr, error = %e, "ff valkey: ignoring a topology reply");
                }
            }
        }
        *last = Some(Instant::now());
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
