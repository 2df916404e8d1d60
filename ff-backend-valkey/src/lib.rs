//! # ff-backend-valkey: durable ff event streams on Valkey
//!
//! Each family is one Valkey stream, `{prefix}{family}` (`ff:completion`,
//! ...), or — split into P partitions ([`ValkeyConfig::partitions`]) — P
//! streams `{prefix}{fp:n}:{family}`, an event going to the partition of
//! its execution id's `{fp:N}`. The URL names a standalone server or any
//! node of a Valkey Cluster: every request goes to the node serving its
//! keys' slot, following `MOVED`, `ASK`, resharding and failover (module
//! `routing`). Producers append with `XADD` (single events, `MULTI`/`EXEC`
//! batches — all-or-none per partition — or inside their own transaction
//! with [`ValkeyBackend::append_cmd`]). A subscription reads each partition
//! it follows on a connection of its own, which nothing else shares: it
//! catches up with batched `XRANGE` reads, each paired with `XINFO STREAM`
//! in one transaction so expiry is judged on exactly the state the read
//! saw, with the next read already requested while a page is decoded; once
//! caught up it waits with `XREAD BLOCK`, used only as a wake-up, with the
//! next paired read queued right behind it. The partitions' pages are
//! merged into one stream whose cursor holds one position per partition.
//! Lost connections are re-established with capped, jittered exponential
//! backoff and the stream goes on exactly after the last position it
//! reached; a node that stops answering is noticed within seconds (TCP
//! keepalive, and a ping while a subscription waits on it).
//!
//! ```no_run
//! # async fn demo() -> Result<(), ff_core::engine_error::EngineError> {
//! use ff_backend_valkey::{ValkeyBackend, ValkeyConfig};
//! use ff_core::backend::{EventPublisher, StreamBackend};
//! use ff_core::filter::SubscriptionFilter;
//! use ff_core::stream_events::{CompletionOutcome, EventMeta, NewEvent};
//! use ff_core::stream_subscribe::StreamCursor;
//! use ff_core::types::ExecutionId;
//! use futures::StreamExt;
//!
//! let backend = ValkeyBackend::connect("valkey://127.0.0.1:6379", ValkeyConfig::default()).await?;
//! let exec = ExecutionId::new(0);
//! backend
//!     .publish(NewEvent::completion(exec, CompletionOutcome::Success), EventMeta::new())
//!     .await?;
//! let mut sub = backend
//!     .subscribe_completion(StreamCursor::beginning(), &SubscriptionFilter::default())
//!     .await?;
//! let event = sub.next().await.expect("an event")?;
//! // Persist `event.cursor`; subscribing from it later yields only newer events.
//! # let _ = event; Ok(()) }
//! ```
//!
//! `valkeys://` / `rediss://` URLs connect every one of those connections
//! over TLS (rustls; the system roots, or `ca_cert=`, `client_cert=`,
//! `client_key=` PEM paths in the query). Replies are untrusted input: a
//! read is checked against what it asked (at most `COUNT` entries, ids only
//! moving forward, at most [`MAX_ENTRY_BYTES`] per entry asked), so a buggy
//! or hostile server can neither reorder, repeat nor flood a subscription.
//!
//! ## Wire format
//!
//! Any client can produce entries ff decodes. Key: `{prefix}{family}` with
//! the default prefix `ff:` and the families `lease-history`, `completion`,
//! `signal-delivery`, `instance-tags`. Entry id: assigned by the server
//! (`XADD key * …`); it is the event's position, and its milliseconds are
//! the event's `at`. Fields (absent optional fields are omitted; unknown
//! fields are ignored):
//!
//! | field | families | value |
//! |---|---|---|
//! | `v` | all | schema version, `1` (absent means 1; higher is `Corrupt`) |
//! | `type` | lease-history, instance-tags | the kind: `acquired`, `renewed`, `expired`, `reclaimed`, `revoked` / `attached`, `cleared` |
//! | `execution_id` | all | `{fp:N}:<uuid>` |
//! | `lease_id` | lease-history (`acquired`, `renewed`, `expired`, `revoked`) | UUID, optional |
//! | `worker_instance_id` | lease-history (`acquired`, `renewed`) | text, optional |
//! | `prev_owner` | lease-history (`expired`) | text, optional |
//! | `new_lease_id`, `new_owner` | lease-history (`reclaimed`) | UUID / text, optional |
//! | `revoked_by` | lease-history (`revoked`) | text |
//! | `outcome` | completion | `success`, `failure`, `cancelled`, or any other text |
//! | `signal_id` | signal-delivery | UUID |
//! | `waitpoint_id` | signal-delivery | UUID, optional |
//! | `source_identity` | signal-delivery | text, optional |
//! | `effect` | signal-delivery | `satisfied`, `buffered`, `deduped`, or any other text |
//! | `tag` | instance-tags | text |
//! | `namespace` | all (metadata) | text, optional |
//! | `tags` | all (metadata) | JSON object of strings, optional |
//!
//! ```text
//! valkey-cli XADD ff:completion '*' v 1 \
//!     execution_id '{fp:3}:6f1c0a4e-2b7d-4c53-9a3e-8f0e5d2c1b7a' \
//!     outcome success namespace billing tags '{"region":"eu"}'
//! ```
//!
//! Cursors are ff's Valkey format (`0x01`, family, entry-id ms, entry-id
//! seq, and the witness of the entry: a 32-bit digest of its
//! fields, by which a resume or a page read tells the entry from another
//! one given the same id after a lossy failover — `CursorExpired`, never a
//! silent skip). Other keys: `{prefix}cursors`, a hash of consumer name → cursor
//! text, written by the [`CursorStore`]; `{prefix}{family}:trimmed`, the
//! record of ff's last trim of that stream; `{prefix}layout`, the
//! prefix's layout (`layout=1 partitions=P`), written by the first backend
//! to use the prefix and checked by every backend that connects: one
//! configured with another P is refused, naming both. Retention trims with the script
//! in `retention.lua`, which records the last removed id (in the stream's
//! `max-deleted-entry-id` and in the trim record, with the stream's removal
//! count `entries-added − length`). Trims by other clients (`XTRIM`,
//! `XADD … MAXLEN|MINID`) are detected by that count: a position they may
//! have skipped is `CursorExpired`, never a silent gap. Requires Valkey
//! 7.2+ or Redis 7.0+.
//!
//! ## Performance
//!
//! Measured with `ff bench` on a 2-core machine beside raw `redis`-crate
//! loops in the same run: catch-up about 4x a raw `XREAD COUNT 1000` loop
//! (about 400,000 vs 100,000 events/s), publish on par with raw pipelined
//! `XADD`, live latency one server-side round trip above a raw
//! `XREAD BLOCK`, and memory flat in the backlog size. What decided it:
//!
//! - subscriptions read with a lean RESP2 reader (`resp.rs`)
//!   that tokenises a reply in place; the general-purpose client spent
//!   most of a catch-up parsing into a value tree and allocating it;
//! - the subscription's connection is driven by its own task, so a reply
//!   reaches the decoder without a hand-off;
//! - reads of 1000 entries, the next one in flight during decoding;
//! - the paired read queued behind the wake-up saves a round trip per
//!   live event.
//!
//! ## Where to look next
//!
//! [`ValkeyConfig`] (prefix, partitions, retention, batch size, intervals,
//! reconnect policy, client name, replica acknowledgements),
//! [`ValkeyBackend`] (the `ff_core::backend` traits, subset subscriptions
//! and the producer helpers), and the conformance suite in
//! `ff_core::testkit`, which this backend passes against a real server and
//! a real cluster, with one partition and with six.

mod bounds;
mod config;
mod connection;
mod cursor_store;
mod entry;
mod error;
mod expiry;
mod group_wake;
mod groups;
mod id;
mod inner;
mod keys;
mod layout;
mod limits;
mod partition;
mod publish;
mod resp;
#[cfg(test)]
mod resp_properties;
mod retention;
mod routing;
mod stream_info;
mod subscribe;
mod tls;
mod transport;
mod trim_record;
mod url;
mod witness;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use ff_core::backend::{
    validate_new_event, CursorStore, DeliveryStream, EventPublisher, StreamBackend, StreamBounds,
};
use ff_core::engine_error::EngineError;
use ff_core::filter::SubscriptionFilter;
use ff_core::stream_events::{EventMeta, Family, NewEvent};
use ff_core::stream_subscribe::{encode_valkey, CursorStart, StreamCursor};
use ff_core::types::{ExecutionId, TimestampMs};
use redis::Value;

pub use config::{
    Retention, ValkeyConfig, DEFAULT_CHECKPOINT_INTERVAL, DEFAULT_CLIENT_NAME, DEFAULT_KEY_PREFIX,
    DEFAULT_READ_BATCH, DEFAULT_SAFETY_NET_POLL, MAX_READ_BATCH,
};
pub use groups::ValkeyGroupStore;
pub use limits::MAX_ENTRY_BYTES;
/// The client crate, re-exported: [`ValkeyBackend::append_cmd`] returns its
/// [`Cmd`](redis::Cmd) for callers' own pipelines.
pub use redis;
pub use routing::slot::{key_slot, SLOTS};

use inner::Inner;
use partition::Followed;
use routing::Retry;
use url::ServerUrl;

/// The Valkey backend: [`StreamBackend`], [`EventPublisher`] and
/// [`CursorStore`] over one server. Cheap to clone (clones share
/// connections).
#[derive(Clone)]
pub struct ValkeyBackend {
    inner: Arc<Inner>,
}

impl fmt::Debug for ValkeyBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ValkeyBackend")
            .field("url", &self.inner.url.redacted())
            .field("config", &self.inner.config)
            .finish()
    }
}

impl ValkeyBackend {
    /// Connect to `url` — `valkey://[user:password@]host[:port][/db]` or
    /// `redis://…`; `valkeys://…` or `rediss://…` for TLS, verified against
    /// the system's CA certificates or the query parameters `ca_cert=PATH`
    /// (a private CA), `client_cert=PATH` and `client_key=PATH` (mutual
    /// TLS), all PEM files; `partitions=P` splits each family into P
    /// partitions (see [`ValkeyConfig::partitions`]) — with `config`.
    ///
    /// The URL may name a standalone server or any node of a Valkey
    /// Cluster: ff asks (`CLUSTER SHARDS`) and, on a cluster, sends each
    /// request to the node serving its keys, following the cluster through
    /// resharding and failover. It may name several seed nodes —
    /// `valkey://a:6379,b:6379` and/or repeated `?node=host:port` — with
    /// the same credentials, database and TLS settings: the first that
    /// answers is used, so the backend starts while a node is down, and all
    /// of them are asked for the topology when no known node answers.
    ///
    /// Fails with `Validation` for a bad URL, certificate file or
    /// configuration (the password never appears in the message) and with
    /// `Transport` when the server cannot be reached or the TLS handshake
    /// fails (the message says why: an untrusted or expired certificate, a
    /// wrong host name, a plaintext server behind a TLS URL or the reverse).
    pub async fn connect(url: &str, config: ValkeyConfig) -> Result<Self, EngineError> {
        let url = ServerUrl::parse(url)?;
        let config = match url.partitions() {
            Some(p) if config.partitions != 1 && config.partitions != p => {
                return Err(EngineError::validation(format!(
                    "backend URL {} asks for partitions={p}, but the configuration says {}; set one of them",
                    url.redacted(),
                    config.partitions
                )))
            }
            Some(p) => config.with_partitions(p),
            None => config,
        };
        config.validate()?;
        let inner = Inner::connect(url, config).await?;
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// The configuration in use (with the URL's `partitions=` applied).
    pub fn config(&self) -> &ValkeyConfig {
        &self.inner.config
    }

    /// The server URL with any password replaced by `***`.
    pub fn url(&self) -> &str {
        self.inner.url.redacted()
    }

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

    /// Subscribe to `family`'s partitions `partitions` only (numbers below
    /// [`ValkeyBackend::partitions`]), exactly after `cursor`: consumers
    /// that split the work each follow their share. The cursors it yields
    /// name those partitions only (resume it, or a subscription following
    /// a subset of them, from them); a cursor of a subscription that
    /// followed more partitions is narrowed to these. With an
    /// `execution_id` filter only that execution's partition is read (it
    /// must be one of `partitions`).
    pub async fn subscribe_partitions(
        &self,
        family: Family,
        partitions: &[u16],
        cursor: StreamCursor,
        filter: &SubscriptionFilter,
    ) -> Result<DeliveryStream, EngineError> {
        subscribe::subscribe_partitions(&self.inner, family, partitions, cursor, filter).await
    }

    /// The hash the [`CursorStore`] writes: `{prefix}cursors`.
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

    /// A new connection to the URL's server — the same address, TLS
    /// settings, credentials and database — for the caller's own commands.
    /// It is named `{client_name}:app` in `CLIENT LIST`. On a cluster it
    /// reaches that one node: use [`ValkeyBackend::connection_for_key`] for
    /// commands on keys.
    pub async fn connection(&self) -> Result<redis::aio::MultiplexedConnection, EngineError> {
        let seed = self.inner.router.seed().clone();
        self.open_app_connection(&seed).await
    }

    /// A new connection to the node serving `key`'s hash slot now (the
    /// server itself when it is not a cluster), named `{client_name}:app`,
    /// for a `MULTI`/`EXEC` around [`ValkeyBackend::append_cmd`] beside
    /// your own keys in the same slot. It does not follow redirects: after
    /// a resharding or failover, `MOVED` errors mean "ask again".
    pub async fn connection_for_key(
        &self,
        key: &str,
    ) -> Result<redis::aio::MultiplexedConnection, EngineError> {
        let slot = key_slot(key.as_bytes());
        let node = match self.inner.router.owner(slot) {
            Some(node) => node,
            None => {
                self.inner.router.refresh().await;
                self.inner.router.owner(slot).ok_or_else(|| {
                    EngineError::transport(
                        error::BACKEND,
                        error::InContext::new(
                            format!("connecting to the node serving {key:?}"),
                            std::io::Error::other(format!(
                                "no node of {} serves slot {slot} right now",
                                self.inner.url.redacted()
                            )),
                        ),
                    )
                })?
            }
        };
        self.open_app_connection(&node).await
    }

    /// A new connection to `node` (`host:port`, as [`ValkeyBackend::nodes`]
    /// lists it) with the backend's TLS settings and credentials, named
    /// `{client_name}:app`: for commands about that node itself (`INFO`,
    /// `CLIENT LIST`).
    pub async fn connection_to_node(
        &self,
        node: &str,
    ) -> Result<redis::aio::MultiplexedConnection, EngineError> {
        let addr = routing::NodeAddr::parse(node, "")
            .filter(|a| !a.host.is_empty())
            .ok_or_else(|| {
                EngineError::validation(format!(
                    "{:?} is not a node address (host:port)",
                    node.chars().take(80).collect::<String>()
                ))
            })?;
        self.open_app_connection(&addr).await
    }

    async fn open_app_connection(
        &self,
        node: &routing::NodeAddr,
    ) -> Result<redis::aio::MultiplexedConnection, EngineError> {
        let name = format!("{}:app", self.inner.config.client_name);
        connection::open(
            &self.inner.router.endpoint(node),
            &name,
            self.inner.config.connect_timeout,
            self.inner.config.command_timeout,
        )
        .await
        .map_err(|e| self.inner.fail(e, format!("connecting to {node}")))
    }

    /// The `XADD` that appends `event`, for a caller's own `MULTI`/`EXEC`
    /// or script, so a state change and its event commit together. It goes
    /// to the event's partition, whose stream key carries the hash tag
    /// `{fp:n}` on a cluster or with several partitions: with P equal to
    /// the engine's partition count that is the slot of the execution's
    /// own keys. Its reply is the entry id;
    /// [`ValkeyBackend::cursor_of_entry`] turns it into the event's cursor.
    /// Validates like a publish. Retention is not applied by this command:
    /// add [`ValkeyBackend::retention_cmd`] now and then, or call
    /// [`ValkeyBackend::apply_retention`].
    ///
    /// ```no_run
    /// # async fn demo(backend: ff_backend_valkey::ValkeyBackend) -> Result<(), Box<dyn std::error::Error>> {
    /// use ff_backend_valkey::redis;
    /// use ff_core::stream_events::{CompletionOutcome, EventMeta, NewEvent};
    /// use ff_core::types::ExecutionId;
    ///
    /// let exec = ExecutionId::new(3);
    /// let event = NewEvent::completion(exec, CompletionOutcome::Success);
    /// let app_key = format!("app:{{fp:3}}:executions");
    /// let mut conn = backend.connection_for_key(&app_key).await?;
    /// let (entry_id,): (String,) = redis::pipe()
    ///     .atomic()
    ///     .hset(&app_key, exec.to_string(), "done")
    ///     .ignore()
    ///     .add_command(backend.append_cmd(&event, &EventMeta::new())?)
    ///     .query_async(&mut conn)
    ///     .await?;
    /// let cursor = backend.cursor_of_entry(&event, &EventMeta::new(), &entry_id)?;
    /// # let _ = cursor; Ok(()) }
    /// ```
    pub fn append_cmd(
        &self,
        event: &NewEvent,
        meta: &EventMeta,
    ) -> Result<redis::Cmd, EngineError> {
        validate_new_event(event, meta)?;
        let partition = self.partition_of(event.execution_id());
        publish::xadd(
            self.inner.keys.stream(event.family(), partition),
            event,
            meta,
        )
    }

    /// The cursor of `event` with `meta`, appended with
    /// [`ValkeyBackend::append_cmd`] under entry id `entry_id` (`ms-seq`,
    /// as `XADD` replies): the cursor publish would have returned, with
    /// the entry's witness.
    pub fn cursor_of_entry(
        &self,
        event: &NewEvent,
        meta: &EventMeta,
        entry_id: &str,
    ) -> Result<StreamCursor, EngineError> {
        let witness = publish::xadd_witness(&self.append_cmd(event, meta)?);
        let partition = self.partition_of(event.execution_id());
        self.cursor_of(event.family(), partition, entry_id, Some(witness))
    }

    /// The cursor of the entry `entry_id` (`ms-seq`) of `family`'s
    /// partition `partition`, without the entry's witness: the entry's
    /// position in its partition — with several partitions a cursor
    /// following that one partition, which resumes a subscription of it
    /// (or one filtered on an execution of it) exactly after the entry. It
    /// resumes exactly, but cannot tell that entry from another given the
    /// same id after a lossy failover: prefer
    /// [`ValkeyBackend::raw_entry_cursor`] when the fields are known.
    pub fn entry_cursor(
        &self,
        family: Family,
        partition: u16,
        entry_id: &str,
    ) -> Result<StreamCursor, EngineError> {
        self.cursor_of(family, partition, entry_id, None)
    }

    /// The cursor of the entry `entry_id` (`ms-seq`) of `family`'s
    /// partition `partition` that another client appended with `fields`
    /// (names and values, in the order written): the cursor subscriptions
    /// deliver for it, with the entry's witness.
    pub fn raw_entry_cursor<N: AsRef<[u8]>, V: AsRef<[u8]>>(
        &self,
        family: Family,
        partition: u16,
        entry_id: &str,
        fields: &[(N, V)],
    ) -> Result<StreamCursor, EngineError> {
        let witness = witness::digest(fields.iter().flat_map(|(n, v)| [n.as_ref(), v.as_ref()]));
        self.cursor_of(family, partition, entry_id, Some(witness))
    }

    fn cursor_of(
        &self,
        family: Family,
        partition: u16,
        entry_id: &str,
        witness: Option<u32>,
    ) -> Result<StreamCursor, EngineError> {
        if partition >= self.partitions() {
            return Err(EngineError::validation(format!(
                "partition {partition} does not exist: each family has {} partition(s)",
                self.partitions()
            )));
        }
        let at = parse_entry_id(entry_id)?;
        Ok(partition::event_cursor(
            family,
            self.partitions(),
            partition,
            at,
            witness,
        ))
    }

    /// The cursor of the `family` entry with id `entry_id` (`ms-seq`, as
    /// `XADD` replies) when each family is one stream (P = 1), without the
    /// entry's witness (see [`ValkeyBackend::entry_cursor`]); with several
    /// partitions the cursor depends on the event's partition: use
    /// [`ValkeyBackend::cursor_of_entry`].
    pub fn cursor_from_entry_id(
        &self,
        family: Family,
        entry_id: &str,
    ) -> Result<StreamCursor, EngineError> {
        if self.partitions() > 1 {
            return Err(EngineError::validation(format!(
                "with partitions={} an entry id alone does not make a cursor; use cursor_of_entry(event, meta, entry_id)",
                self.partitions()
            )));
        }
        let at = parse_entry_id(entry_id)?;
        Ok(encode_valkey(family, at.ms, at.seq))
    }

    /// The command that trims `family`'s stream (its partition 0) to its
    /// configured retention (`None` when it keeps everything); its reply is
    /// the number of entries removed. Publishes run it themselves about
    /// every 100 ms per stream. With several partitions, use
    /// [`ValkeyBackend::partition_retention_cmd`] for each.
    pub fn retention_cmd(&self, family: Family) -> Option<redis::Cmd> {
        self.partition_retention_cmd(family, 0)
    }

    /// [`ValkeyBackend::retention_cmd`] for `family`'s partition `partition`.
    pub fn partition_retention_cmd(&self, family: Family, partition: u16) -> Option<redis::Cmd> {
        retention::retention_cmd(
            self.inner.keys.stream(family, partition),
            self.inner.keys.trim_record(family, partition),
            self.inner.config.retention(family),
        )
    }

    /// Trim every partition of `family` to its configured retention now;
    /// returns the number of entries removed.
    pub async fn apply_retention(&self, family: Family) -> Result<u64, EngineError> {
        let mut removed = 0;
        for partition in 0..self.partitions() {
            if let Some(cmd) = self.partition_retention_cmd(family, partition) {
                removed += self.run_trim(family, partition, cmd).await?;
            }
        }
        Ok(removed)
    }

    /// Remove, in every partition of `family`, the entries before
    /// `first_kept`'s position there; the entry at that position (with one
    /// partition: the event at `first_kept`) becomes the oldest retained,
    /// and cursors before it then yield `CursorExpired`. Returns the number
    /// of entries removed.
    pub async fn trim_before(
        &self,
        family: Family,
        first_kept: &StreamCursor,
    ) -> Result<u64, EngineError> {
        let followed = Followed::all(family, self.partitions());
        let CursorStart::After(positions) = followed.decode(first_kept)? else {
            return Err(EngineError::validation(
                "trim_before needs the cursor of an event, not tail or beginning",
            ));
        };
        let mut removed = 0;
        for (&partition, &p) in followed.partitions().iter().zip(&positions) {
            if p == id::ZERO {
                continue;
            }
            let cmd = retention::trim_before_cmd(
                self.inner.keys.stream(family, partition),
                self.inner.keys.trim_record(family, partition),
                p,
            );
            removed += self.run_trim(family, partition, cmd).await?;
        }
        Ok(removed)
    }

    async fn run_trim(
        &self,
        family: Family,
        partition: u16,
        cmd: redis::Cmd,
    ) -> Result<u64, EngineError> {
        let context = format!("trimming {}", self.inner.describe(family, partition));
        // Trimming again to the same bound removes nothing more: safe to resend.
        match self
            .inner
            .router
            .command(
                self.inner.keys.slot(family, partition),
                &cmd,
                Retry::Idempotent,
            )
            .await
            .map_err(|e| self.inner.fail(e, &context))?
        {
            Value::Int(n) => Ok(u64::try_from(n).unwrap_or(0)),
            Value::ServerError(e) => Err(self.inner.fail(e.into(), &context)),
            other => Err(error::unexpected(
                &context,
                format!("the trim script returned {other:?}"),
            )),
        }
    }
}

/// Parse an `XADD` reply id, or say it is not one.
fn parse_entry_id(
    entry_id: &str,
) -> Result<ff_core::stream_subscribe::ValkeyPosition, EngineError> {
    id::parse(entry_id.as_bytes()).ok_or_else(|| {
        EngineError::validation(format!(
            "{:?} is not a stream entry id (ms-seq)",
            entry_id.chars().take(40).collect::<String>()
        ))
    })
}

#[async_trait]
impl StreamBackend for ValkeyBackend {
    fn backend_name(&self) -> &'static str {
        error::BACKEND
    }

    /// Groups over a family split into P > 1 partitions would need U = P
    /// units to keep a unit's order: not offered yet (`Unavailable`).
    fn group_store(&self) -> Result<Arc<dyn ff_core::group::GroupStore>, EngineError> {
        if self.inner.keys.partitions() > 1 {
            return Err(EngineError::unavailable(
                "consumer groups on a family split into partitions (partitions > 1)",
            ));
        }
        Ok(Arc::new(ValkeyGroupStore::new(self.inner.clone())))
    }

    async fn subscribe_family(
        &self,
        family: Family,
        cursor: StreamCursor,
        filter: &SubscriptionFilter,
    ) -> Result<DeliveryStream, EngineError> {
        subscribe::subscribe(&self.inner, family, cursor, filter).await
    }

    async fn resolve_cursor(
        &self,
        family: Family,
        cursor: StreamCursor,
    ) -> Result<StreamCursor, EngineError> {
        subscribe::resolve(&self.inner, family, cursor).await
    }

    async fn bounds(&self, family: Family) -> Result<StreamBounds, EngineError> {
        bounds::bounds(&self.inner, family).await
    }

    async fn cursor_at(
        &self,
        family: Family,
        at: TimestampMs,
    ) -> Result<StreamCursor, EngineError> {
        bounds::cursor_at(&self.inner, family, at).await
    }
}

#[async_trait]
impl EventPublisher for ValkeyBackend {
    async fn publish_batch(
        &self,
        events: Vec<(NewEvent, EventMeta)>,
    ) -> Result<Vec<StreamCursor>, EngineError> {
        publish::publish_batch(&self.inner, events).await
    }
}

#[async_trait]
impl CursorStore for ValkeyBackend {
    async fn load(&self, name: &str) -> Result<Option<StreamCursor>, EngineError> {
        cursor_store::load(&self.inner, name).await
    }

    async fn store(&self, name: &str, cursor: &StreamCursor) -> Result<(), EngineError> {
        cursor_store::store(&self.inner, name, cursor).await
    }
}
