//! The Valkey harness: a backend under a fresh key prefix and client name
//! on the shared test server — plaintext, or the TLS one — with fault hooks
//! over an admin connection (on the server's plaintext port).

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
use ff_core::stream_subscribe::{CursorStart, StreamCursor};
use ff_core::testkit::Harness;

use crate::support;

/// The checkpoint interval harness backends use.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(200);
/// The safety-net poll harness backends use.
pub const SAFETY_NET_POLL: Duration = Duration::from_secs(30);
/// Entries a harness subscription reads per page: small, so backlogs span
/// many reads.
pub const READ_BATCH: usize = 50;

/// The shared test server's URL (started on first use).
pub async fn server_url() -> String {
    tokio::task::spawn_blocking(support::shared_valkey_url)
        .await
        .expect("support thread")
        .expect("a Valkey server for the suite")
}

/// The shared TLS test server's URLs: (TLS, plaintext).
pub async fn tls_server_urls() -> (String, String) {
    tokio::task::spawn_blocking(support::shared_valkey_tls_urls)
        .await
        .expect("support thread")
        .expect("a TLS Valkey server for the suite (redis-server with TLS)")
}

/// A new backend on `backend`'s server, key prefix and client name, after
/// dropping `backend` (the cursor-store suite's reopen step). The test
/// servers take no password, so the redacted URL is the URL.
pub async fn reopen(backend: ValkeyBackend) -> ValkeyBackend {
    let (url, config) = (backend.url().to_owned(), backend.config().clone());
    drop(backend);
    ValkeyBackend::connect(&url, config)
        .await
        .expect("reconnect the backend to its key prefix")
}

/// A backend under a fresh prefix and client name, plus an admin connection
/// (named differently, so `kill_connections` spares it) for the hooks.
pub struct ValkeyHarness {
    /// The backend under test.
    pub backend: ValkeyBackend,
    admin: MultiplexedConnection,
    url: String,
    config: ValkeyConfig,
}

impl ValkeyHarness {
    /// A backend on the shared server under a fresh prefix and client name.
    pub async fn new() -> Self {
        let url = server_url().await;
        Self::on(&url, &url).await
    }

    /// A backend on the shared TLS server (over TLS, with the test CA).
    pub async fn new_tls() -> Self {
        let (tls, plain) = tls_server_urls().await;
        Self::on(&tls, &plain).await
    }

    /// A backend connected to `url`, with hooks over `admin_url` (the same
    /// server).
    pub async fn on(url: &str, admin_url: &str) -> Self {
        let name = support::unique_name("fftest");
        let config = ValkeyConfig::default()
            .with_key_prefix(format!("{name}:"))
            .with_client_name(name)
            .with_checkpoint_interval(CHECKPOINT_INTERVAL)
            .with_safety_net_poll(SAFETY_NET_POLL)
            .with_read_batch(READ_BATCH);
        let backend = ValkeyBackend::connect(url, config.clone())
            .await
            .expect("connect the backend");
        let admin = redis::Client::open(admin_url)
            .expect("admin client")
            .get_multiplexed_async_connection()
            .await
            .expect("admin connection");
        Self {
            backend,
            admin,
            url: url.to_owned(),
            config,
        }
    }

    async fn admin(&self, cmd: &redis::Cmd) -> Result<Value, EngineError> {
        let mut conn = self.admin.clone();
        conn.send_packed_command(cmd)
            .await
            .and_then(Value::extract_error)
            .map_err(|e| EngineError::Backend {
                backend: "valkey-harness",
                detail: e.to_string(),
            })
    }

    /// `(id, name)` of the backend's own connections (its client name, or
    /// that name with a `:` suffix).
    async fn own_clients(&self) -> Result<Vec<(String, String)>, EngineError> {
        let ours = self.backend.client_name().to_owned();
        let prefix = format!("{ours}:");
        Ok(self
            .clients()
            .await?
            .into_iter()
            .filter(|(_, name)| *name == ours || name.starts_with(&prefix))
            .collect())
    }

    /// `(id, name)` of every client connection.
    async fn clients(&self) -> Result<Vec<(String, String)>, EngineError> {
        let list = match self.admin(redis::cmd("CLIENT").arg("LIST")).await? {
            Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
            Value::VerbatimString { text, .. } => text,
            other => panic!("CLIENT LIST returned {other:?}"),
        };
        Ok(list
            .lines()
            .map(|line| {
                let field = |key: &str| {
                    line.split(' ')
                        .find_map(|kv| kv.strip_prefix(key))
                        .unwrap_or("")
                        .to_owned()
                };
                (field("id="), field("name="))
            })
            .collect())
    }
}

fn position(family: Family, cursor: &StreamCursor) -> (u64, u64) {
    match decode_valkey(cursor, family) {
        Ok(CursorStart::After(p)) => (p.ms, p.seq),
        other => panic!("not a positioned cursor: {other:?}"),
    }
}

#[async_trait]
impl Harness for ValkeyHarness {
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

    /// The batch being consumed, one in the channel, one being decoded and
    /// one page in flight.
    fn read_ahead_limit(&self) -> usize {
        4 * READ_BATCH
    }

    fn read_batch(&self) -> usize {
        READ_BATCH
    }

    async fn expire_before(
        &self,
        family: Family,
        cursor: &StreamCursor,
    ) -> Result<(), EngineError> {
        self.backend.prune_before(family, cursor).await.map(drop)
    }

    async fn inject_raw(
        &self,
        family: Family,
        fields: &[(Field, String)],
    ) -> Result<StreamCursor, EngineError> {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(self.backend.stream_key(family)).arg("*");
        for (field, value) in fields {
            cmd.arg(field.name()).arg(value);
        }
        if fields.is_empty() {
            cmd.arg("v").arg("1");
        }
        let reply = self.admin(&cmd).await?;
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
                partition: 0,
                witness: Some(EntryWitness::of_fields(&written)),
            },
        )
    }

    async fn kill_connections(&self) -> Result<(), EngineError> {
        for (id, _) in self.own_clients().await? {
            // A connection may close by itself meanwhile: ignore errors.
            let _ = self
                .admin(redis::cmd("CLIENT").arg("KILL").arg("ID").arg(id))
                .await;
        }
        Ok(())
    }

    async fn connection_ids(&self) -> Result<Vec<String>, EngineError> {
        Ok(self
            .own_clients()
            .await?
            .into_iter()
            .map(|(id, _)| id)
            .collect())
    }

    async fn cursor_beyond_head(&self, family: Family) -> Result<StreamCursor, EngineError> {
        let head = self.backend.bounds(family).await?.head;
        let (ms, _) = position(family, &head);
        Ok(encode_valkey(family, ms + 86_400_000, 0))
    }

    /// Valkey cannot tell another stream's cursor from one of its own:
    /// the `0x01` format is an entry id and nothing else, and stream ids
    /// carry no identity of the stream. Another key prefix's or server's
    /// cursor is refused only when it lies beyond this stream's head
    /// (`cursor_beyond_head`) or behind its trimmed history; an older one
    /// reads as a position here. So the capability is absent (declared in
    /// the Valkey conformance files) and docs/valkey.md says so.
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
            .clients()
            .await?
            .iter()
            .filter(|(_, n)| *n == name)
            .count())
    }
}
