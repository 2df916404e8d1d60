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
//! Catch-up is faster than a raw `XREAD COUNT 1000` loop, publishing on
//! par with raw pipelined `XADD`, live latency one server-side round trip
//! above a raw `XREAD BLOCK`, and memory flat in the backlog size; `ff
//! bench` measures each beside a raw-client baseline, and the README's
//! benchmark section gives the figures. What decided it:
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

mod app_connection;
mod bounds;
mod config;
mod connection;
pub mod cursor_codec;
mod cursor_store;
mod entry;
mod error;
mod expiry;
mod group_wake;
mod groups;
mod id;
mod inner;
mod introspect;
mod keys;
mod layout;
mod limits;
mod partition;
mod producer;
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
mod trim;
mod trim_record;
mod url;
mod witness;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use ff_core::backend::{CursorStore, DeliveryStream, EventPublisher, StreamBackend, StreamBounds};
use ff_core::engine_error::EngineError;
use ff_core::filter::SubscriptionFilter;
use ff_core::stream_events::{EventMeta, Family, NewEvent};
use ff_core::stream_subscribe::StreamCursor;
use ff_core::types::TimestampMs;

pub use config::{
    Retention, ValkeyConfig, DEFAULT_CHECKPOINT_INTERVAL, DEFAULT_CLIENT_NAME, DEFAULT_KEY_PREFIX,
    DEFAULT_READ_BATCH, DEFAULT_SAFETY_NET_POLL, MAX_READ_BATCH,
};
pub use groups::ValkeyGroupStore;
pub use limits::MAX_ENTRY_BYTES;
pub use producer::{EntryOf, EntryWitness};
/// The client crate, re-exported: [`ValkeyBackend::append_cmd`] returns its
/// [`Cmd`](redis::Cmd) for callers' own pipelines.
pub use redis;
pub use routing::slot::{key_slot, SLOTS};

use inner::Inner;
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
}

#[async_trait]
impl StreamBackend for ValkeyBackend {
    fn backend_name(&self) -> &'static str {
        error::BACKEND
    }

    /// Groups over a family split into P > 1 partitions would need U = P
    /// units to keep a unit's order: not offered yet (`Unavailable`).
    fn group_store(&self) -> Result<Arc<dyn ff_core::group::GroupStore>, EngineError> {
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
