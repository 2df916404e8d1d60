//! The Valkey harness: a backend under a fresh key prefix and client name
//! on the shared test server — plaintext, or the TLS one — with fault hooks
//! over an admin connection (on the server's plaintext port).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ff_backend_valkey::redis::{self, aio::MultiplexedConnection, Value};
use ff_backend_valkey::{ValkeyBackend, ValkeyConfig};
use ff_core::backend::{EventPublisher, StreamBackend};
use ff_core::engine_error::EngineError;
use ff_core::stream_events::Family;
use ff_core::stream_subscribe::{decode_valkey, encode_valkey, CursorStart, StreamCursor};
use ff_core::testkit::Harness;

use crate::support;

/// The checkpoint interval harness backends use.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(200);
/// The safety-net poll harness backends use.
pub const SAFETY_NET_POLL: Duration = Duration::from_secs(30);

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

/// A backend under a fresh prefix and client name, plus an admin connection
/// (named differently, so `kill_connections` spares it) for the hooks.
pub struct ValkeyHarness {
    /// The backend under test.
    pub backend: ValkeyBackend,
    admin: MultiplexedConnection,
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
            .with_safety_net_poll(SAFETY_NET_POLL);
        let backend = ValkeyBackend::connect(url, config)
            .await
            .expect("connect the backend");
        let admin = redis::Client::open(admin_url)
            .expect("admin client")
            .get_multiplexed_async_connection()
            .await
            .expect("admin connection");
        Self { backend, admin }
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

    async fn expire_before(
        &self,
        family: Family,
        cursor: &StreamCursor,
    ) -> Result<(), EngineError> {
        self.backend.trim_before(family, cursor).await.map(drop)
    }

    async fn inject_corrupt(&self, family: Family) -> Result<StreamCursor, EngineError> {
        let reply = self
            .admin(
                redis::cmd("XADD")
                    .arg(self.backend.stream_key(family))
                    .arg("*")
                    .arg("v")
                    .arg("1")
                    .arg("type")
                    .arg("attached")
                    .arg("execution_id")
                    .arg("not-an-execution-id")
                    .arg("outcome")
                    .arg("success"),
            )
            .await?;
        let Value::BulkString(id) = reply else {
            panic!("XADD returned {reply:?}");
        };
        self.backend
            .cursor_from_entry_id(family, &String::from_utf8_lossy(&id))
    }

    async fn kill_connections(&self) -> Result<bool, EngineError> {
        let ours = self.backend.client_name().to_owned();
        let prefix = format!("{ours}:");
        for (id, name) in self.clients().await? {
            if name == ours || name.starts_with(&prefix) {
                // A connection may close by itself meanwhile: ignore errors.
                let _ = self
                    .admin(redis::cmd("CLIENT").arg("KILL").arg("ID").arg(id))
                    .await;
            }
        }
        Ok(true)
    }

    async fn cursor_beyond_head(&self, family: Family) -> Result<StreamCursor, EngineError> {
        let head = self.backend.bounds(family).await?.head;
        let (ms, _) = position(family, &head);
        Ok(encode_valkey(family, ms + 86_400_000, 0))
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
