//! [`ValkeyConfig`] and [`Retention`]: key prefix, partitions, retention
//! per family, read batch size, checkpoint and safety-net intervals,
//! reconnection, dead-node detection (TCP keepalive, node pings), and the
//! client name the backend's connections carry.

use std::time::Duration;

use ff_core::backend::ReconnectPolicy;
use ff_core::engine_error::EngineError;
use ff_core::stream_events::Family;
use ff_core::stream_subscribe::MAX_PARTITIONS;

/// Default key prefix.
pub const DEFAULT_KEY_PREFIX: &str = "ff:";
/// Default entries per catch-up read (chosen by measurement with `ff bench`).
pub const DEFAULT_READ_BATCH: usize = 1000;
/// Default checkpoint interval.
pub const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);
/// Default safety-net poll: the `XREAD BLOCK` timeout after which a
/// subscription re-reads even without a wake-up.
pub const DEFAULT_SAFETY_NET_POLL: Duration = Duration::from_secs(30);
/// Default client name of the backend's connections.
pub const DEFAULT_CLIENT_NAME: &str = "ff";
/// Default idle time after which TCP keepalive probes a silent connection
/// (then every second, three times): a dropped network path is noticed
/// in about 5 s.
pub const DEFAULT_TCP_KEEPALIVE: Duration = Duration::from_secs(2);
/// Default ping interval: a node a subscription has waited on this long
/// without a reply is pinged (at most once per interval, however many
/// subscriptions wait on it).
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(2);
/// Default ping timeout: a node that does not answer a ping (or a topology
/// probe) this fast is dead to ff until it answers again. With the default
/// interval, a stopped or black-holed node is noticed within 5 s.
pub const DEFAULT_PING_TIMEOUT: Duration = Duration::from_secs(3);

/// Largest accepted read batch.
pub const MAX_READ_BATCH: usize = 100_000;
const MAX_PREFIX_LEN: usize = 256;
const MAX_CLIENT_NAME_LEN: usize = 64;

/// How much of a family's stream the publisher keeps. Trimming is exact at
/// the entry level and records the last removed entry id in the stream's
/// `max-deleted-entry-id`, so a subscriber can always tell an expired
/// cursor from one whose next event is still retained.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Retention {
    /// Keep everything (the default).
    #[default]
    None,
    /// Keep about this many newest entries (like `MAXLEN ~`): the stream is
    /// trimmed back to exactly `n` once it has grown a little past it.
    MaxLen(u64),
    /// Keep entries younger than this (like `MINID ~` with an id computed
    /// from the server's clock), trimming once the oldest is a little older.
    MinAge(Duration),
}

/// Configuration of a [`ValkeyBackend`](crate::ValkeyBackend).
///
/// ```
/// use std::time::Duration;
/// use ff_backend_valkey::{Retention, ValkeyConfig};
/// use ff_core::stream_events::Family;
///
/// let config = ValkeyConfig::default()
///     .with_key_prefix("billing:ff:")
///     .with_retention(Family::LeaseHistory, Retention::MaxLen(1_000_000))
///     .with_retention(Family::Completion, Retention::MinAge(Duration::from_secs(7 * 86_400)))
///     .with_checkpoint_interval(Duration::from_millis(500))
///     .with_client_name("billing-ff");
/// assert!(config.validate().is_ok());
/// assert_eq!(config.retention(Family::SignalDelivery), Retention::None);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ValkeyConfig {
    /// Prefix of every key the backend uses (`{prefix}{family}`,
    /// `{prefix}{fp:n}:{family}`, `{prefix}cursors`). Non-empty, without
    /// whitespace or control characters; with more than one partition,
    /// without `{` or `}`.
    pub key_prefix: String,
    /// P: how many partitions (streams) each family is split into, 1 to
    /// 256 (default 1). An event goes to partition `N mod P` of its
    /// execution id `{fp:N}:…`. With P = 1 cursors are single-stream
    /// (`0x01`); with P > 1 they hold one position per partition (`0x04`).
    /// A URL's `?partitions=P` sets it too.
    pub partitions: u16,
    /// Entries per catch-up read.
    pub read_batch: usize,
    /// How long a subscription may scan filtered-out entries without
    /// yielding before it yields a `Checkpoint`.
    pub checkpoint_interval: Duration,
    /// Longest `XREAD BLOCK` wait; a subscription re-reads after it even
    /// without a wake-up (a safety net, not the delivery path).
    pub safety_net_poll: Duration,
    /// How subscriptions re-establish lost connections.
    pub reconnect: ReconnectPolicy,
    /// `CLIENT SETNAME` of the backend's connections; the subscriptions'
    /// wake-up connections are named `{client_name}:sub`, their read
    /// connections `{client_name}:read`.
    pub client_name: String,
    /// Longest wait for a TCP connection and handshake.
    pub connect_timeout: Duration,
    /// Longest wait for the reply to an ordinary command.
    pub command_timeout: Duration,
    /// TCP keepalive on every connection: idle time before the first probe
    /// (probes then go every second, three of them); `None` turns it off.
    /// It notices a dropped network path; a node whose process stopped
    /// still has its kernel answer them, which the pings below notice.
    pub tcp_keepalive: Option<Duration>,
    /// While a subscription waits for a reply (its `XREAD BLOCK` wake-up
    /// included) longer than this, the node is pinged on the backend's
    /// shared connection to it; one ping per node per interval.
    pub ping_interval: Duration,
    /// A node that does not answer a ping or a topology probe within this
    /// is dead: its subscriptions reconnect (to the slot's new owner once
    /// the cluster failed over) and topology probes ask it last.
    pub ping_timeout: Duration,
    /// Replicas that must acknowledge each publish (`WAIT`) before it
    /// succeeds, and how long to wait for them; `None` (the default): a
    /// publish succeeds once the primary stored it. Replication is
    /// asynchronous, so a publish acknowledged only by its primary can be
    /// lost when that primary fails over.
    pub replica_acks: Option<(u16, Duration)>,
    retention: [Retention; 4],
}

impl Default for ValkeyConfig {
    fn default() -> Self {
        Self {
            key_prefix: DEFAULT_KEY_PREFIX.to_owned(),
            partitions: 1,
            read_batch: DEFAULT_READ_BATCH,
            checkpoint_interval: DEFAULT_CHECKPOINT_INTERVAL,
            safety_net_poll: DEFAULT_SAFETY_NET_POLL,
            reconnect: ReconnectPolicy::default(),
            client_name: DEFAULT_CLIENT_NAME.to_owned(),
            connect_timeout: Duration::from_secs(5),
            command_timeout: Duration::from_secs(30),
            tcp_keepalive: Some(DEFAULT_TCP_KEEPALIVE),
            ping_interval: DEFAULT_PING_INTERVAL,
            ping_timeout: DEFAULT_PING_TIMEOUT,
            replica_acks: None,
            retention: [Retention::None; 4],
        }
    }
}

impl ValkeyConfig {
    /// The default configuration (prefix `ff:`, keep everything).
    pub fn new() -> Self {
        Self::default()
    }

    /// Set the key prefix.
    pub fn with_key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// Split each family into `partitions` partitions (1 to 256).
    pub fn with_partitions(mut self, partitions: u16) -> Self {
        self.partitions = partitions;
        self
    }

    /// Set `family`'s retention.
    pub fn with_retention(mut self, family: Family, retention: Retention) -> Self {
        self.retention[family.index()] = retention;
        self
    }

    /// Set every family's retention.
    pub fn with_retention_for_all(mut self, retention: Retention) -> Self {
        self.retention = [retention; 4];
        self
    }

    /// `family`'s retention.
    pub fn retention(&self, family: Family) -> Retention {
        self.retention[family.index()]
    }

    /// Set the entries per catch-up read.
    pub fn with_read_batch(mut self, entries: usize) -> Self {
        self.read_batch = entries;
        self
    }

    /// Set the checkpoint interval.
    pub fn with_checkpoint_interval(mut self, interval: Duration) -> Self {
        self.checkpoint_interval = interval;
        self
    }

    /// Set the safety-net poll (the `XREAD BLOCK` timeout).
    pub fn with_safety_net_poll(mut self, poll: Duration) -> Self {
        self.safety_net_poll = poll;
        self
    }

    /// Set the reconnection policy.
    pub fn with_reconnect(mut self, policy: ReconnectPolicy) -> Self {
        self.reconnect = policy;
        self
    }

    /// Set the client name.
    pub fn with_client_name(mut self, name: impl Into<String>) -> Self {
        self.client_name = name.into();
        self
    }

    /// Set the connect and command timeouts.
    pub fn with_timeouts(mut self, connect: Duration, command: Duration) -> Self {
        self.connect_timeout = connect;
        self.command_timeout = command;
        self
    }

    /// Set TCP keepalive's idle time (`None`: no keepalive); see
    /// [`ValkeyConfig::tcp_keepalive`].
    pub fn with_tcp_keepalive(mut self, idle: Option<Duration>) -> Self {
        self.tcp_keepalive = idle;
        self
    }

    /// Set how often a node a subscription waits on is pinged, and how
    /// long it has to answer; see [`ValkeyConfig::ping_interval`]. A dead
    /// node is noticed within about `interval + timeout`.
    pub fn with_node_pings(mut self, interval: Duration, timeout: Duration) -> Self {
        self.ping_interval = interval;
        self.ping_timeout = timeout;
        self
    }

    /// Make every publish wait until `replicas` replicas acknowledged it,
    /// at most `timeout` (see [`ValkeyConfig::replica_acks`]).
    pub fn with_replica_acks(mut self, replicas: u16, timeout: Duration) -> Self {
        self.replica_acks = Some((replicas, timeout));
        self
    }

    /// Check every setting, naming the first bad one.
    pub fn validate(&self) -> Result<(), EngineError> {
        let p = &self.key_prefix;
        if p.is_empty()
            || p.len() > MAX_PREFIX_LEN
            || p.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(EngineError::validation(format!(
                "key prefix {:?} must be 1..={MAX_PREFIX_LEN} bytes without whitespace or control characters (e.g. \"ff:\")",
                p.chars().take(40).collect::<String>()
            )));
        }
        if !(1..=MAX_PARTITIONS).contains(&self.partitions) {
            return Err(EngineError::validation(format!(
                "partitions={} is out of range: a family has 1 to {MAX_PARTITIONS} partitions",
                self.partitions
            )));
        }
        let n = &self.client_name;
        if n.is_empty() || n.len() > MAX_CLIENT_NAME_LEN || !n.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(EngineError::validation(format!(
                "client name {:?} must be 1..={MAX_CLIENT_NAME_LEN} printable ASCII characters without spaces",
                n.chars().take(40).collect::<String>()
            )));
        }
        if !(1..=MAX_READ_BATCH).contains(&self.read_batch) {
            return Err(EngineError::validation(format!(
                "read batch {} must be 1..={MAX_READ_BATCH}",
                self.read_batch
            )));
        }
        if let Some((replicas, timeout)) = self.replica_acks {
            if replicas == 0 || timeout < Duration::from_millis(1) {
                return Err(EngineError::validation(format!(
                    "replica acknowledgements need at least 1 replica and a timeout of at least 1 ms, got {replicas} within {timeout:?}"
                )));
            }
        }
        for (what, d) in [
            ("checkpoint interval", self.checkpoint_interval),
            ("safety-net poll", self.safety_net_poll),
            ("connect timeout", self.connect_timeout),
            ("command timeout", self.command_timeout),
            ("ping interval", self.ping_interval),
            ("ping timeout", self.ping_timeout),
            (
                "TCP keepalive",
                self.tcp_keepalive.unwrap_or(Duration::from_secs(1)),
            ),
        ] {
            if d < Duration::from_millis(1) {
                return Err(EngineError::validation(format!(
                    "{what} must be at least 1 ms, got {d:?}"
                )));
            }
        }
        for family in Family::ALL.iter().copied() {
            match self.retention(family) {
                Retention::MaxLen(0) => {
                    return Err(EngineError::validation(format!(
                        "{family} retention MaxLen(0) would keep nothing; use at least 1"
                    )))
                }
                Retention::MinAge(d) if d < Duration::from_millis(1) => {
                    return Err(EngineError::validation(format!(
                        "{family} retention MinAge must be at least 1 ms, got {d:?}"
                    )))
                }
                _ => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid(config: ValkeyConfig, needle: &str) {
        match config.validate() {
            Err(EngineError::Validation { detail }) => {
                assert!(detail.contains(needle), "{detail:?} lacks {needle:?}")
            }
            other => panic!("expected Validation, got {other:?}"),
        }
    }

    #[test]
    fn defaults_are_valid() {
        let c = ValkeyConfig::default();
        assert!(c.validate().is_ok());
        assert_eq!(c.key_prefix, "ff:");
        assert_eq!(c.checkpoint_interval, Duration::from_secs(1));
        assert!(c.safety_net_poll >= Duration::from_secs(30));
        assert!(
            c.ping_interval + c.ping_timeout <= Duration::from_secs(5),
            "a dead node is noticed within 5 s by default"
        );
        assert!(c
            .tcp_keepalive
            .is_some_and(|idle| idle + Duration::from_secs(3) <= Duration::from_secs(5)));
        for f in Family::ALL.iter().copied() {
            assert_eq!(c.retention(f), Retention::None);
        }
    }

    #[test]
    fn bad_prefixes_names_and_sizes_are_rejected() {
        invalid(ValkeyConfig::default().with_key_prefix(""), "key prefix");
        invalid(ValkeyConfig::default().with_key_prefix("a b"), "key prefix");
        invalid(
            ValkeyConfig::default().with_key_prefix("a\nb"),
            "key prefix",
        );
        invalid(
            ValkeyConfig::default().with_client_name("my app"),
            "client name",
        );
        invalid(ValkeyConfig::default().with_read_batch(0), "read batch");
        invalid(ValkeyConfig::default().with_partitions(0), "partitions=0");
        invalid(
            ValkeyConfig::default().with_replica_acks(0, Duration::from_secs(1)),
            "at least 1 replica",
        );
        invalid(ValkeyConfig::default().with_partitions(257), "1 to 256");
        invalid(
            ValkeyConfig::default().with_checkpoint_interval(Duration::ZERO),
            "checkpoint interval",
        );
        invalid(
            ValkeyConfig::default().with_node_pings(Duration::ZERO, Duration::from_secs(1)),
            "ping interval",
        );
        invalid(
            ValkeyConfig::default().with_node_pings(Duration::from_secs(1), Duration::ZERO),
            "ping timeout",
        );
        invalid(
            ValkeyConfig::default().with_tcp_keepalive(Some(Duration::ZERO)),
            "TCP keepalive",
        );
        invalid(
            ValkeyConfig::default().with_retention(Family::Completion, Retention::MaxLen(0)),
            "MaxLen(0)",
        );
    }

    #[test]
    fn retention_is_per_family() {
        let c = ValkeyConfig::default()
            .with_retention_for_all(Retention::MaxLen(10))
            .with_retention(Family::InstanceTags, Retention::None);
        assert_eq!(c.retention(Family::LeaseHistory), Retention::MaxLen(10));
        assert_eq!(c.retention(Family::InstanceTags), Retention::None);
    }
}
