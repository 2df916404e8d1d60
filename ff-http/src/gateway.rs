//! [`Gateway`]: the shared state behind the router, its shutdown switch and
//! its metrics; [`router`] for the common case.

use std::sync::Arc;

use std::future::Future;

use axum::Router;
use ff_core::backend::{EventPublisher, StreamBackend};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::config::GatewayConfig;
use crate::fanout::{HubSettings, Hubs};
use crate::metrics::{Metrics, MetricsSnapshot};
use crate::routes;
use crate::server::{self, ServerSettings};
use crate::tls::TlsConfig;

/// Everything a request handler needs.
pub(crate) struct GatewayState {
    pub backend: Arc<dyn StreamBackend>,
    pub publisher: Option<Arc<dyn EventPublisher>>,
    pub config: GatewayConfig,
    pub hubs: Arc<Hubs>,
    pub metrics: Arc<Metrics>,
    pub shutdown: watch::Sender<bool>,
    /// Backend resolves of connecting clients' cursors in flight at once
    /// (as many as one family's backend subscriptions): a reconnect storm
    /// queues here, fairly, instead of for the backend's connections.
    pub resolving: Semaphore,
}

/// An SSE gateway over one backend: build it, then either
/// [`Gateway::serve`] it on a listener, or mount [`Gateway::router`] in
/// your app and call [`Gateway::shutdown`] before a graceful server
/// shutdown (open SSE responses never end by themselves).
///
/// ```no_run
/// # async fn demo(backend: std::sync::Arc<dyn ff_core::backend::StreamBackend>) -> std::io::Result<()> {
/// use ff_http::{Auth, Gateway, GatewayConfig};
/// let gateway = Gateway::new(backend, None, GatewayConfig::new(Auth::NoAuth));
/// let app = axum::Router::new().nest("/events", gateway.router());
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
/// let stop = gateway.clone();
/// axum::serve(listener, app)
///     .with_graceful_shutdown(async move {
///         let _ = tokio::signal::ctrl_c().await;
///         stop.shutdown();
///     })
///     .await
/// # }
/// ```
#[derive(Clone)]
pub struct Gateway {
    state: Arc<GatewayState>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("backend", &self.state.backend.backend_name())
            .field("publisher", &self.state.publisher.is_some())
            .field("config", &self.state.config)
            .finish()
    }
}

impl Gateway {
    /// A gateway reading from `backend` and, when `publisher` is given,
    /// accepting `POST` to append events. Needs no runtime until it serves.
    pub fn new(
        backend: Arc<dyn StreamBackend>,
        publisher: Option<Arc<dyn EventPublisher>>,
        config: GatewayConfig,
    ) -> Self {
        let metrics = Arc::new(Metrics::default());
        let (shutdown, shutdown_rx) = watch::channel(false);
        let hubs = Arc::new(Hubs::new(
            backend.clone(),
            metrics.clone(),
            HubSettings {
                capacity: config.hub_capacity.max(16),
                keep: config.hub_replay,
                linger: config.hub_linger,
                timeout: config.backend_timeout,
                per_family: config.max_family_subscriptions,
            },
            shutdown_rx,
        ));
        Self {
            state: Arc::new(GatewayState {
                backend,
                publisher,
                resolving: Semaphore::new(config.max_family_subscriptions.max(1)),
                config,
                hubs,
                metrics,
                shutdown,
            }),
        }
    }

    /// The routes (see the crate documentation), with the gateway's state
    /// applied: merge or nest it into your own `Router`.
    pub fn router(&self) -> Router {
        routes::router(self.state.clone())
    }

    /// End every open SSE response and shared subscription, and answer new
    /// stream requests with 503. Clients reconnect (elsewhere) with
    /// `Last-Event-ID`.
    pub fn shutdown(&self) {
        self.state.shutdown.send_replace(true);
    }

    /// Current metrics.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.state.metrics.snapshot()
    }

    /// Serve [`Gateway::router`] on `listener` until `signal` completes,
    /// then [`Gateway::shutdown`] and finish gracefully.
    ///
    /// This server guards itself against slow and idle clients: a request
    /// head must arrive within [`GatewayConfig::header_read_timeout`], a
    /// kept-alive connection may idle for [`GatewayConfig::idle_timeout`],
    /// and at most [`GatewayConfig::max_connections`] are served at once
    /// (the longest-idle one is closed to admit a newcomer). Accepted
    /// connections get `TCP_NODELAY`: SSE messages are small writes, and
    /// with Nagle's algorithm each would wait for the client's delayed ACK.
    /// If you serve the router yourself, configure the same in your server.
    /// Bind `listener` with [`bind`](crate::bind), whose accept queue
    /// holds a reconnect storm.
    ///
    /// ```no_run
    /// # async fn demo(gateway: ff_http::Gateway) -> std::io::Result<()> {
    /// let listener = ff_http::bind("127.0.0.1:8080".parse().unwrap())?;
    /// gateway
    ///     .serve(listener, async {
    ///         let _ = tokio::signal::ctrl_c().await;
    ///     })
    ///     .await
    /// # }
    /// ```
    pub async fn serve<F>(&self, listener: TcpListener, signal: F) -> std::io::Result<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.serve_with(listener, None, signal).await
    }

    /// [`Gateway::serve`] over HTTPS: every connection completes a TLS
    /// handshake (within [`GatewayConfig::header_read_timeout`]) before
    /// HTTP, and the session cookie is marked `Secure`.
    ///
    /// ```no_run
    /// # async fn demo(gateway: ff_http::Gateway) -> Result<(), Box<dyn std::error::Error>> {
    /// let tls = ff_http::TlsConfig::from_pem_files("/etc/ff/cert.pem", "/etc/ff/key.pem")?;
    /// let listener = ff_http::bind("0.0.0.0:8443".parse()?)?;
    /// gateway
    ///     .serve_tls(listener, tls, async {
    ///         let _ = tokio::signal::ctrl_c().await;
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn serve_tls<F>(
        &self,
        listener: TcpListener,
        tls: TlsConfig,
        signal: F,
    ) -> std::io::Result<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.serve_with(listener, Some(tls), signal).await
    }

    async fn serve_with<F>(
        &self,
        listener: TcpListener,
        tls: Option<TlsConfig>,
        signal: F,
    ) -> std::io::Result<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let stop = self.clone();
        server::serve(
            listener,
            self.router(),
            ServerSettings::from_config(&self.state.config),
            tls,
            signal,
            move || stop.shutdown(),
        )
        .await
    }
}

/// The gateway's routes over `backend` (and `publisher` for `POST`), in one
/// call. Use [`Gateway`] when you need a graceful shutdown or metrics.
pub fn router(
    backend: Arc<dyn StreamBackend>,
    publisher: Option<Arc<dyn EventPublisher>>,
    config: GatewayConfig,
) -> Router {
    Gateway::new(backend, publisher, config).router()
}
