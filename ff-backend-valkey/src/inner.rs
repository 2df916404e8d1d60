//! [`Inner`]: what a backend handle and its subscriptions share.

use ff_core::stream_events::Family;
use redis::Client;

use crate::config::ValkeyConfig;
use crate::connection::SharedConnection;
use crate::keys::Keys;
use crate::retention::RetentionClock;
use crate::url::ServerUrl;

/// The state behind every clone of a [`ValkeyBackend`](crate::ValkeyBackend).
pub(crate) struct Inner {
    pub(crate) url: ServerUrl,
    pub(crate) client: Client,
    pub(crate) config: ValkeyConfig,
    pub(crate) keys: Keys,
    pub(crate) conn: SharedConnection,
    pub(crate) retention: RetentionClock,
}

impl Inner {
    /// Build from a checked URL and a validated configuration (no I/O).
    pub(crate) fn new(url: ServerUrl, config: ValkeyConfig) -> Result<Self, redis::RedisError> {
        let client = Client::open(url.client_url())?;
        let conn = SharedConnection::new(
            client.clone(),
            config.client_name.clone(),
            config.connect_timeout,
            config.command_timeout,
        );
        Ok(Self {
            url,
            client,
            keys: Keys::new(&config.key_prefix),
            config,
            conn,
            retention: RetentionClock::new(),
        })
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
