//! [`Inner`]: what a backend handle and its subscriptions share.

use std::sync::Arc;

use ff_core::engine_error::EngineError;
use ff_core::stream_events::Family;

use crate::config::ValkeyConfig;
use crate::keys::Keys;
use crate::retention::RetentionClock;
use crate::routing::Router;
use crate::transport::Endpoint;
use crate::url::ServerUrl;

/// The state behind every clone of a [`ValkeyBackend`](crate::ValkeyBackend).
pub(crate) struct Inner {
    pub(crate) url: ServerUrl,
    /// The URL's server: TLS settings, credentials and database of every
    /// connection, to any node.
    pub(crate) endpoint: Endpoint,
    pub(crate) config: ValkeyConfig,
    pub(crate) keys: Keys,
    /// Where each slot is served, and the per-node shared connections.
    pub(crate) router: Arc<Router>,
    pub(crate) retention: RetentionClock,
    /// The subscriptions' shared read connections and wake-ups.
    pub(crate) subscriptions: crate::subscribe::Shared,
}

impl Inner {
    /// Connect to `url`'s server, learn whether it is a cluster, lay the
    /// keys out for it and check them against the prefix's layout record
    /// (see [`crate::layout`]). The configuration is already validated, with the
    /// URL's `partitions=` applied.
    pub(crate) async fn connect(url: ServerUrl, config: ValkeyConfig) -> Result<Self, EngineError> {
        let mut seeds = url.endpoints()?;
        for seed in &mut seeds {
            seed.keepalive = config.tcp_keepalive;
        }
        let endpoint = seeds[0].clone();
        let account = endpoint.account();
        let router = Router::discover(
            seeds,
            config.client_name.clone(),
            (config.connect_timeout, config.command_timeout),
            (config.ping_interval, config.ping_timeout),
        )
        .await
        .map_err(|e| {
            if endpoint.redis.db != 0 && e.to_string().contains("DB index is out of range") {
                return EngineError::validation(format!(
                    "backend URL {} names database {}, which the server does not have (a Valkey Cluster has only database 0): remove /{} from the URL",
                    url.redacted(),
                    endpoint.redis.db,
                    endpoint.redis.db
                ));
            }
            crate::error::to_engine(e, account, format!("connecting to {}", url.redacted()))
        })?;
        if router.is_cluster() && endpoint.redis.db != 0 {
            return Err(EngineError::validation(format!(
                "backend URL {} names database {}, but a Valkey Cluster has only database 0: remove /{} from the URL",
                url.redacted(),
                endpoint.redis.db,
                endpoint.redis.db
            )));
        }
        let keys = Keys::new(&config.key_prefix, config.partitions, router.is_cluster())?;
        crate::layout::check(
            &router,
            &crate::layout::Checked {
                prefix: &config.key_prefix,
                partitions: config.partitions,
                url: url.redacted(),
                account,
            },
        )
        .await?;
        Ok(Self {
            retention: RetentionClock::new(config.partitions),
            url,
            endpoint,
            keys,
            config,
            router,
            subscriptions: crate::subscribe::Shared::default(),
        })
    }

    /// The account connections authenticate as: the URL's user name, or
    /// `default`.
    pub(crate) fn account(&self) -> &str {
        self.endpoint.account()
    }

    /// [`to_engine`](crate::error::to_engine) for this backend's account.
    pub(crate) fn fail(&self, e: redis::RedisError, context: impl Into<String>) -> EngineError {
        crate::error::to_engine(e, self.account(), context)
    }

    /// The client name of the subscriptions' wake-up connections (one
    /// per followed stream) and of consumer groups' wake-ups.
    pub(crate) fn subscription_client_name(&self) -> String {
        format!("{}:sub", self.config.client_name)
    }

    /// The client name of the subscriptions' read connections (one per
    /// node).
    pub(crate) fn subscription_read_client_name(&self) -> String {
        format!("{}:read", self.config.client_name)
    }

    /// "`key` on `url`" for error messages (the URL redacted).
    pub(crate) fn describe(&self, family: Family, partition: u16) -> String {
        format!(
            "{} on {}",
            self.keys.stream(family, partition),
            self.url.redacted()
        )
    }
}
