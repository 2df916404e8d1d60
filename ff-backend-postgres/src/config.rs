//! [`PostgresConfig`]: where the outbox lives and how subscriptions behave.

use std::time::Duration;

use ff_core::backend::ReconnectPolicy;
use ff_core::engine_error::EngineError;

/// Longest accepted schema name. Notification channels are
/// `<schema>.<table>` and Postgres caps channel names at 63 bytes.
pub const MAX_SCHEMA_LEN: usize = 40;

/// Longest accepted application name; subscriptions append `-sub`, and
/// Postgres caps `application_name` at 63 bytes.
pub const MAX_APPLICATION_NAME_LEN: usize = 56;

/// Configuration of a [`PostgresBackend`](crate::PostgresBackend).
///
/// ```
/// use std::time::Duration;
/// use ff_backend_postgres::PostgresConfig;
/// let config = PostgresConfig::default()
///     .with_schema("billing_events")
///     .with_checkpoint_interval(Duration::from_millis(200));
/// assert!(config.validate().is_ok());
/// assert!(PostgresConfig::default().with_schema("Drop Table").validate().is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PostgresConfig {
    /// Schema holding the outbox tables, horizons and consumer cursors:
    /// lower-case letters, digits and `_`, starting with a letter or `_`,
    /// at most [`MAX_SCHEMA_LEN`] bytes. Default `ff`.
    pub schema: String,
    /// Rows read per catch-up query (and the unit of buffering). Default 1000.
    pub read_batch: usize,
    /// How long a subscription may go without yielding before it yields a
    /// `Checkpoint` for rows it scanned but filtered out. Default 1 s.
    pub checkpoint_interval: Duration,
    /// Re-read this often even without a wake-up, in case a notification
    /// was missed. Default 30 s.
    pub safety_net_poll: Duration,
    /// Longest pause between re-reads while committed rows wait behind an
    /// older open transaction (which sends no wake-up when it ends). The
    /// pause starts at 1 ms and doubles up to this. Default 50 ms.
    pub held_back_poll: Duration,
    /// On servers that allow prepared transactions
    /// (`max_prepared_transactions > 0`), re-read at least this often: a
    /// producer that uses two-phase commit cannot `NOTIFY` (see `docs/postgres.md`),
    /// and nothing else tells a subscriber when `COMMIT PREPARED` makes its
    /// events visible. Ignored on servers that allow none. Default 1 s.
    pub prepared_poll: Duration,
    /// Log a warning when a subscription has been held back by an open
    /// transaction for longer than this (and again each such period).
    /// Default 10 s.
    pub held_back_warning: Duration,
    /// How subscriptions re-establish a lost connection.
    pub reconnect: ReconnectPolicy,
    /// `application_name` of the backend's pooled connections; subscription
    /// connections use this with `-sub` appended. Lets operators (and test
    /// harnesses) find and terminate them. Default `ff`.
    pub application_name: String,
    /// Apply pending migrations in [`connect`](crate::PostgresBackend::connect).
    /// Default `true`.
    pub migrate_on_connect: bool,
    /// Pooled connections for publishing, cursor storage and queries (each
    /// subscription has its own connection besides). Default 8.
    pub pool_size: u32,
    /// How long to wait for a connection to be established (and, for a
    /// subscription, to `LISTEN`). Default 10 s.
    pub connect_timeout: Duration,
    /// Longest a subscription's read may take; past it the connection is
    /// taken for dead and the subscription reconnects. Default 10 s.
    pub read_timeout: Duration,
    /// Longest a publish or query on the pool may take; past it the
    /// connection is closed and the call fails with `Transport` (a publish
    /// may or may not have been applied). Default 30 s.
    pub query_timeout: Duration,
    /// Longest a subscription waits on its connection without a round
    /// trip to the server: a server that stopped answering (a network
    /// partition, a moved virtual IP) is noticed within this plus
    /// `read_timeout`. Default 5 s.
    pub liveness_interval: Duration,
    /// Idle time after which the server probes each of ff's connections
    /// with TCP keepalives (3 probes, a third of this apart), and the
    /// server's `tcp_user_timeout`; the server then drops connections of
    /// clients that vanished, releasing their `LISTEN` slots. `None` keeps
    /// the server's settings. Default 10 s.
    pub server_keepalive: Option<Duration>,
    /// Longest [`prune_partitions_older_than`] waits for the table lock it
    /// needs to remove a range; while it waits, the family's readers and
    /// writers queue behind it. On timeout it removes nothing and the next
    /// run retries. Default 5 s.
    ///
    /// [`prune_partitions_older_than`]: crate::PostgresBackend::prune_partitions_older_than
    pub prune_lock_timeout: Duration,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        Self {
            schema: "ff".to_owned(),
            read_batch: 1000,
            checkpoint_interval: Duration::from_secs(1),
            safety_net_poll: Duration::from_secs(30),
            held_back_poll: Duration::from_millis(50),
            prepared_poll: Duration::from_secs(1),
            held_back_warning: Duration::from_secs(10),
            reconnect: ReconnectPolicy::default(),
            application_name: "ff".to_owned(),
            migrate_on_connect: true,
            pool_size: 8,
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(10),
            query_timeout: Duration::from_secs(30),
            liveness_interval: Duration::from_secs(5),
            server_keepalive: Some(Duration::from_secs(10)),
            prune_lock_timeout: Duration::from_secs(5),
        }
    }
}

impl PostgresConfig {
    /// The default configuration.
    pub fn new() -> Self {
        Self::default()
    }

    /// Use `schema` for every table and function.
    pub fn with_schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// Read `rows` rows per catch-up query.
    pub fn with_read_batch(mut self, rows: usize) -> Self {
        self.read_batch = rows;
        self
    }

    /// The former name of [`with_read_batch`](Self::with_read_batch).
    #[deprecated(note = "renamed with_read_batch, as in the other backends")]
    pub fn with_batch_size(self, rows: usize) -> Self {
        self.with_read_batch(rows)
    }

    /// Set the checkpoint interval.
    pub fn with_checkpoint_interval(mut self, interval: Duration) -> Self {
        self.checkpoint_interval = interval;
        self
    }

    /// Set the safety-net poll interval.
    pub fn with_safety_net_poll(mut self, interval: Duration) -> Self {
        self.safety_net_poll = interval;
        self
    }

    /// Set the longest re-read pause while rows are held back.
    pub fn with_held_back_poll(mut self, interval: Duration) -> Self {
        self.held_back_poll = interval;
        self
    }

    /// Set the longest pause between re-reads on servers that allow
    /// prepared transactions.
    pub fn with_prepared_poll(mut self, interval: Duration) -> Self {
        self.prepared_poll = interval;
        self
    }

    /// Set the held-back warning threshold.
    pub fn with_held_back_warning(mut self, threshold: Duration) -> Self {
        self.held_back_warning = threshold;
        self
    }

    /// Set the reconnect policy.
    pub fn with_reconnect(mut self, policy: ReconnectPolicy) -> Self {
        self.reconnect = policy;
        self
    }

    /// Set the connections' `application_name`.
    pub fn with_application_name(mut self, name: impl Into<String>) -> Self {
        self.application_name = name.into();
        self
    }

    /// Whether `connect` applies pending migrations.
    pub fn with_migrate_on_connect(mut self, migrate: bool) -> Self {
        self.migrate_on_connect = migrate;
        self
    }

    /// Set the pool size.
    pub fn with_pool_size(mut self, size: u32) -> Self {
        self.pool_size = size;
        self
    }

    /// Set the connect timeout.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Set the subscription read timeout.
    pub fn with_read_timeout(mut self, timeout: Duration) -> Self {
        self.read_timeout = timeout;
        self
    }

    /// Set the pooled query timeout.
    pub fn with_query_timeout(mut self, timeout: Duration) -> Self {
        self.query_timeout = timeout;
        self
    }

    /// Set the longest wait without a round trip.
    pub fn with_liveness_interval(mut self, interval: Duration) -> Self {
        self.liveness_interval = interval;
        self
    }

    /// Set the longest wait of a time-range prune for its table lock.
    pub fn with_prune_lock_timeout(mut self, timeout: Duration) -> Self {
        self.prune_lock_timeout = timeout;
        self
    }

    /// Set (or, with `None`, leave to the server) the server-side TCP
    /// keepalive idle time.
    pub fn with_server_keepalive(mut self, idle: Option<Duration>) -> Self {
        self.server_keepalive = idle;
        self
    }

    /// The server settings that make the server notice a vanished client:
    /// `(name, value)` startup options.
    pub(crate) fn keepalive_options(&self) -> Vec<(&'static str, String)> {
        let Some(idle) = self.server_keepalive else {
            return Vec::new();
        };
        let idle_s = idle.as_secs().max(1);
        let interval_s = (idle_s / 3).max(1);
        let user_timeout_ms = (idle_s + 3 * interval_s) * 1000;
        vec![
            ("tcp_keepalives_idle", idle_s.to_string()),
            ("tcp_keepalives_interval", interval_s.to_string()),
            ("tcp_keepalives_count", "3".to_owned()),
            ("tcp_user_timeout", user_timeout_ms.to_string()),
        ]
    }

    /// `application_name` of subscription connections: the configured name
    /// with `-sub` appended.
    pub fn subscription_application_name(&self) -> String {
        format!("{}-sub", self.application_name)
    }

    /// Check every setting; the error names the offending one.
    pub fn validate(&self) -> Result<(), EngineError> {
        validate_schema_name(&self.schema)?;
        let name = &self.application_name;
        if name.is_empty()
            || name.len() > MAX_APPLICATION_NAME_LEN
            || !name.bytes().all(|b| (0x20..0x7f).contains(&b))
        {
            return Err(EngineError::validation(format!(
                "application_name {:?} must be 1..={MAX_APPLICATION_NAME_LEN} printable ASCII characters",
                name.chars().take(80).collect::<String>()
            )));
        }
        if !(1..=100_000).contains(&self.read_batch) {
            return Err(EngineError::validation(format!(
                "read_batch must be 1..=100000, got {}",
                self.read_batch
            )));
        }
        if self.pool_size == 0 {
            return Err(EngineError::validation("pool_size must be at least 1"));
        }
        for (what, d) in [
            ("checkpoint_interval", self.checkpoint_interval),
            ("safety_net_poll", self.safety_net_poll),
            ("held_back_poll", self.held_back_poll),
            ("prepared_poll", self.prepared_poll),
            ("held_back_warning", self.held_back_warning),
            ("connect_timeout", self.connect_timeout),
            ("read_timeout", self.read_timeout),
            ("query_timeout", self.query_timeout),
            ("liveness_interval", self.liveness_interval),
            ("prune_lock_timeout", self.prune_lock_timeout),
        ] {
            if d.is_zero() {
                return Err(EngineError::validation(format!(
                    "{what} must be greater than zero"
                )));
            }
        }
        Ok(())
    }
}

/// Check that `schema` is a plain lower-case identifier that can be
/// written into SQL unquoted: `[a-z_][a-z0-9_]*`, at most
/// [`MAX_SCHEMA_LEN`] bytes, not starting with `pg_` (reserved).
pub fn validate_schema_name(schema: &str) -> Result<(), EngineError> {
    let mut bytes = schema.bytes();
    let first_ok = matches!(bytes.next(), Some(b'a'..=b'z' | b'_'));
    let rest_ok = bytes.all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_'));
    if !first_ok || !rest_ok || schema.len() > MAX_SCHEMA_LEN || schema.starts_with("pg_") {
        return Err(EngineError::validation(format!(
            "schema name {:?} must be 1..={MAX_SCHEMA_LEN} characters of [a-z0-9_], start with a letter or `_`, and not start with `pg_`",
            schema.chars().take(80).collect::<String>()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_plain_identifiers() {
        for good in ["ff", "_x", "events_2", &"a".repeat(MAX_SCHEMA_LEN)] {
            assert!(validate_schema_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "2x",
            "Ff",
            "a-b",
            "a;drop",
            "a b",
            "pg_catalog",
            "\"q\"",
            &"a".repeat(MAX_SCHEMA_LEN + 1),
        ] {
            assert!(
                matches!(
                    validate_schema_name(bad),
                    Err(EngineError::Validation { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn server_keepalive_becomes_startup_options() {
        let opts = PostgresConfig::default()
            .with_server_keepalive(Some(Duration::from_secs(9)))
            .keepalive_options();
        let get = |k: &str| opts.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("tcp_keepalives_idle"), Some("9"));
        assert_eq!(get("tcp_keepalives_interval"), Some("3"));
        assert_eq!(get("tcp_keepalives_count"), Some("3"));
        assert_eq!(get("tcp_user_timeout"), Some("18000"));
        assert!(PostgresConfig::default()
            .with_server_keepalive(None)
            .keepalive_options()
            .is_empty());
    }

    #[test]
    fn defaults_are_valid_and_bad_settings_are_named() {
        assert!(PostgresConfig::default().validate().is_ok());
        let err = PostgresConfig::default()
            .with_read_batch(0)
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("read_batch"), "{err}");
        let err = PostgresConfig::default()
            .with_application_name("x".repeat(60))
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("application_name"), "{err}");
        let err = PostgresConfig::default()
            .with_checkpoint_interval(Duration::ZERO)
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("checkpoint_interval"), "{err}");
        assert_eq!(
            PostgresConfig::default().subscription_application_name(),
            "ff-sub"
        );
    }
}
