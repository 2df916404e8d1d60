//! [`GatewayConfig`]: authentication, timings, limits and CORS.

use std::time::Duration;

use crate::auth::Auth;

/// What a slow SSE client that fell out of the shared fan-out buffer gets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum SlowClientPolicy {
    /// Keep the connection: the client catches up from its last position
    /// (from the hub's replay buffer, or on a backend subscription of its
    /// own, which is backpressured) and rejoins the shared subscription.
    #[default]
    CatchUp,
    /// Close the connection after an `ff-error` message (`"lagged"`); the
    /// client resumes with `Last-Event-ID`.
    Disconnect,
}

/// Gateway configuration. Start from [`GatewayConfig::new`] with an explicit
/// [`Auth`] choice and adjust with the `with_*` methods.
///
/// ```
/// use std::time::Duration;
/// use ff_http::{Auth, GatewayConfig, Token};
/// let config = GatewayConfig::new(Auth::tokens(vec![
///     Token::read_write("s3cret-write-token-0123456789").unwrap(),
/// ]))
/// .with_keep_alive(Duration::from_secs(10))
/// .with_cors_allowed_origins(["https://dashboard.example.com"]);
/// assert_eq!(config.keep_alive, Duration::from_secs(10));
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct GatewayConfig {
    /// Who may read and publish.
    pub auth: Auth,
    /// Interval of `: keep-alive` comments on an otherwise quiet stream
    /// (default 15 s), so proxies and load balancers keep it open.
    pub keep_alive: Duration,
    /// How long a filtered client on the shared subscription may go without
    /// a message while events are filtered out before it gets a
    /// checkpoint message (default 1 s). Clients on their own backend
    /// subscription get the backend's checkpoints.
    pub checkpoint_interval: Duration,
    /// Origins allowed to call the gateway from a browser on another origin
    /// (`https://host:port`, or `*` for any). Empty (default): no CORS
    /// headers, so only same-origin pages can read responses.
    pub cors_allowed_origins: Vec<String>,
    /// Concurrent SSE clients accepted; more get 503 (default 10,000).
    pub max_clients: usize,
    /// Capacity of each family's shared broadcast channel in events
    /// (default 2,048). A client further behind than this lags; see
    /// [`GatewayConfig::slow_client`].
    pub hub_capacity: usize,
    /// Events each family's shared subscription keeps for replay (default
    /// 1,024): a client resuming within them (a reconnect after a blip)
    /// joins the shared subscription without a backend subscription of its
    /// own.
    pub hub_replay: usize,
    /// How long a family's shared backend subscription stays open after its
    /// last client left (default 10 s), so reconnecting clients find it.
    pub hub_linger: Duration,
    /// Backend subscriptions the gateway holds per family, at most (default
    /// 8, at least 2): the shared live one, and shared catch-up readers for
    /// clients that start behind it. Clients beyond what the readers can
    /// take wait for one (a reconnect storm is served in one pass), so
    /// this bounds the backend connections a storm can cost. It also
    /// bounds how many connecting clients' cursors the backend resolves at
    /// once; the others wait their turn.
    pub max_family_subscriptions: usize,
    /// What a client that lags behind the shared subscription gets.
    pub slow_client: SlowClientPolicy,
    /// How long resolving a client's cursor, subscribing (and the first
    /// read, which detects an expired cursor) or publishing may take before
    /// the request fails with 503 (default 10 s).
    pub backend_timeout: Duration,
    /// Largest accepted `POST` body in bytes (default 1 MiB); larger ones
    /// get 413, as soon as the `Content-Length` (or a chunked body's
    /// running size) passes it.
    pub max_body_bytes: usize,
    /// How long reading a whole `POST` body may take (default 30 s); a
    /// slower one gets 408 and the connection is closed. The viewer's
    /// sign-in (`POST /v1/session`, unauthenticated until its body is
    /// read) gets the shorter [`GatewayConfig::session_body_timeout`].
    pub body_read_timeout: Duration,
    /// How long a connection may take to send a complete request head
    /// (default 10 s): from accept for a new connection, from the first
    /// byte for a kept-alive one. Slower connections are closed.
    /// Applies to [`Gateway::serve`](crate::Gateway::serve).
    pub header_read_timeout: Duration,
    /// How long a kept-alive connection may wait for its next request
    /// (default 30 s) before it is closed. Applies to
    /// [`Gateway::serve`](crate::Gateway::serve).
    pub idle_timeout: Duration,
    /// How long a connection may accept no bytes of a response it is sent
    /// (default 30 s) before it is closed: a client that stops reading an
    /// SSE stream (a paused browser tab) then reconnects with
    /// `Last-Event-ID` and resumes where it stopped, instead of holding a
    /// connection and its buffers forever. Applies to
    /// [`Gateway::serve`](crate::Gateway::serve).
    pub write_stall_timeout: Duration,
    /// Connections served at once (default 16,384). At the cap the
    /// connection idle the longest is closed to admit the newcomer; when
    /// every connection has a request in flight the newcomer gets 503.
    /// Keep it below the process's open-file limit (`ff serve` derives it
    /// from the limit). Applies to [`Gateway::serve`](crate::Gateway::serve).
    pub max_connections: usize,
    /// Most events in one `POST` (default 10,000).
    pub max_batch_events: usize,
    /// `Retry-After` sent with 503 answers (default 5 s).
    pub retry_after: Duration,
    /// Add `Secure` to the session cookie (default `false`, so a plain-HTTP
    /// viewer works). [`Gateway::serve_tls`](crate::Gateway::serve_tls)
    /// marks it `Secure` regardless; set this when a proxy terminates TLS.
    pub secure_cookie: bool,
    /// Trust the `X-Forwarded-Proto` header (default `false`): when a
    /// request says `https`, the session cookie is marked `Secure`. Enable
    /// only behind a proxy that sets (or strips) the header itself, since
    /// clients can send anything.
    pub trust_forwarded_proto: bool,
}

impl GatewayConfig {
    /// Defaults with the given authentication.
    pub fn new(auth: Auth) -> Self {
        Self {
            auth,
            keep_alive: Duration::from_secs(15),
            checkpoint_interval: Duration::from_secs(1),
            cors_allowed_origins: Vec::new(),
            max_clients: 10_000,
            hub_capacity: 2_048,
            hub_replay: 1_024,
            hub_linger: Duration::from_secs(10),
            max_family_subscriptions: 8,
            slow_client: SlowClientPolicy::CatchUp,
            backend_timeout: Duration::from_secs(10),
            max_body_bytes: 1024 * 1024,
            body_read_timeout: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            write_stall_timeout: Duration::from_secs(30),
            max_connections: 16_384,
            max_batch_events: 10_000,
            retry_after: Duration::from_secs(5),
            secure_cookie: false,
            trust_forwarded_proto: false,
        }
    }

    /// How long the unauthenticated sign-in body (`POST /v1/session`) may
    /// take to arrive: the shorter of
    /// [`GatewayConfig::header_read_timeout`] and
    /// [`GatewayConfig::body_read_timeout`], since it is as small as a head
    /// and proves no right until it is read.
    pub fn session_body_timeout(&self) -> Duration {
        self.header_read_timeout.min(self.body_read_timeout)
    }

    /// Set [`GatewayConfig::keep_alive`].
    pub fn with_keep_alive(mut self, interval: Duration) -> Self {
        self.keep_alive = interval;
        self
    }

    /// Set [`GatewayConfig::checkpoint_interval`].
    pub fn with_checkpoint_interval(mut self, interval: Duration) -> Self {
        self.checkpoint_interval = interval;
        self
    }

    /// Set [`GatewayConfig::cors_allowed_origins`].
    pub fn with_cors_allowed_origins<I, S>(mut self, origins: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.cors_allowed_origins = origins.into_iter().map(Into::into).collect();
        self
    }

    /// Set [`GatewayConfig::max_clients`].
    pub fn with_max_clients(mut self, max: usize) -> Self {
        self.max_clients = max;
        self
    }

    /// Set [`GatewayConfig::hub_capacity`] (at least 16).
    pub fn with_hub_capacity(mut self, events: usize) -> Self {
        self.hub_capacity = events.max(16);
        self
    }

    /// Set [`GatewayConfig::hub_replay`].
    pub fn with_hub_replay(mut self, events: usize) -> Self {
        self.hub_replay = events;
        self
    }

    /// Set [`GatewayConfig::hub_linger`].
    pub fn with_hub_linger(mut self, linger: Duration) -> Self {
        self.hub_linger = linger;
        self
    }

    /// Set [`GatewayConfig::max_family_subscriptions`] (at least 2).
    pub fn with_max_family_subscriptions(mut self, max: usize) -> Self {
        self.max_family_subscriptions = max.max(2);
        self
    }

    /// Set [`GatewayConfig::slow_client`].
    pub fn with_slow_client(mut self, policy: SlowClientPolicy) -> Self {
        self.slow_client = policy;
        self
    }

    /// Set [`GatewayConfig::backend_timeout`].
    pub fn with_backend_timeout(mut self, timeout: Duration) -> Self {
        self.backend_timeout = timeout;
        self
    }

    /// Set [`GatewayConfig::max_body_bytes`].
    pub fn with_max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }

    /// Set [`GatewayConfig::body_read_timeout`].
    pub fn with_body_read_timeout(mut self, timeout: Duration) -> Self {
        self.body_read_timeout = timeout;
        self
    }

    /// Set [`GatewayConfig::header_read_timeout`].
    pub fn with_header_read_timeout(mut self, timeout: Duration) -> Self {
        self.header_read_timeout = timeout;
        self
    }

    /// Set [`GatewayConfig::idle_timeout`].
    pub fn with_idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Set [`GatewayConfig::write_stall_timeout`].
    pub fn with_write_stall_timeout(mut self, timeout: Duration) -> Self {
        self.write_stall_timeout = timeout;
        self
    }

    /// Set [`GatewayConfig::max_connections`] (at least 1).
    pub fn with_max_connections(mut self, max: usize) -> Self {
        self.max_connections = max.max(1);
        self
    }

    /// Set [`GatewayConfig::max_batch_events`].
    pub fn with_max_batch_events(mut self, events: usize) -> Self {
        self.max_batch_events = events.max(1);
        self
    }

    /// Set [`GatewayConfig::retry_after`].
    pub fn with_retry_after(mut self, after: Duration) -> Self {
        self.retry_after = after;
        self
    }

    /// Set [`GatewayConfig::secure_cookie`].
    pub fn with_secure_cookie(mut self, secure: bool) -> Self {
        self.secure_cookie = secure;
        self
    }

    /// Set [`GatewayConfig::trust_forwarded_proto`].
    pub fn with_trust_forwarded_proto(mut self, trust: bool) -> Self {
        self.trust_forwarded_proto = trust;
        self
    }
}
