//! [`Inner`]: what a backend handle and its subscriptions share.

use ff_core::engine_error::EngineError;
use ff_core::stream_events::Family;

use crate::config::ValkeyConfig;
use crate::connection::SharedConnection;
use crate::keys::Keys;
use crate::retention::RetentionClock;
use crate::transport::Endpoint;
use crate::url::ServerUrl;

/// The state behind every clone of a [`ValkeyBackend`](crate::ValkeyBackend).
pub(crate) struct Inner {
    pub(crate) url: ServerUrl,
    /// Where every connection (shared and per subscription) goes.
    pub(crate) endpoint: Endpoint,
    pub(crate) config: ValkeyConfig,
    pub(crate) keys: Keys,
    pub(crate) conn: SharedConnection,
    pub(crate) retention: RetentionClock,
}

impl Inner {
    /// Build from a checked URL, its endpoint and a validated
    /// configuration (no network I/O).
    pub(crate) fn new(url: ServerUrl, endpoint: Endpoint, config: ValkeyConfig) -> Self {
        let conn = SharedConnection::new(
            endpoint.clone(),
            config.client_name.clone(),
            config.connect_timeout,
            config.command_timeout,
        );
        Self {
            url,
            endpoint,
            keys: Keys::new(&config.key_prefix),
            config,
            conn,
            retention: RetentionClock::new(),
        }
    }

    /// The account connections authenticate as: the URL's user name, or
    /// `default`.
    pub(crate) fn account(&self) -> &str {
        self.endpoint.redis.username.as_deref().unwrap_or("default")
    }

    /// [`to_engine`](crate::error::to_engine) for this backend's account.
    pub(crate) fn fail(&self, e: redis::RedisError, context: impl Into<String>) -> EngineError {
        crate::error::to_engine(e, self.account(), context)
    }

    /// The client name of each subscription's own connection.
    pub(crate) fn subscription_client_name(&self) -> String {
        format!("{}:sub", self.config.client_name)
    }

    /// "`key` on `url`" for error messages (the URL redacted).
    pub(crate) fn describe(&self, family: Family) -> String {
        format!("{} on {}", self.keys.stream(family), self.url.redacted())
    }
}
