//! Raw connections for the caller's own commands (`MULTI`/`EXEC` around
//! [`ValkeyBackend::append_cmd`], `INFO`, `CLIENT LIST`).
//!
//! Invariant: every connection handed out here is new, reaches the node
//! asked for with the backend's TLS settings and credentials, and is named
//! `{client_name}:app`, so it is never one of the backend's own (publish,
//! subscription) connections and `CLIENT LIST` tells it apart.

use ff_core::engine_error::EngineError;

use crate::routing::slot::key_slot;
use crate::{connection, error, routing, ValkeyBackend};

impl ValkeyBackend {
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
}
