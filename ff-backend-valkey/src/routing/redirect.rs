//! What a server's refusal means for routing: an error reply that names
//! another node (`MOVED`, `ASK`), a cluster that cannot serve the slot
//! yet (`TRYAGAIN`, `CLUSTERDOWN`, `LOADING`, `MASTERDOWN`, `READONLY`), or
//! a primary demoted while a blocking command waited on it (`UNBLOCKED`,
//! `REDIRECT`: a planned failover, `REPLICAOF`, a managed service's
//! maintenance).
//!
//! Invariant: every reply classified here is one the server sends *instead
//! of* running the command (or, for a transaction, after discarding it;
//! for a blocking command — `XREAD BLOCK`, `WAIT` — instead of completing
//! it, which changes nothing on the server), so sending the same request
//! again elsewhere or later never applies it twice.

use std::fmt;
use std::sync::Arc;

/// A node's address: host (name or IP, without brackets) and port.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct NodeAddr {
    pub(crate) host: Arc<str>,
    pub(crate) port: u16,
}

impl NodeAddr {
    pub(crate) fn new(host: &str, port: u16) -> Self {
        Self {
            host: Arc::from(host.trim_start_matches('[').trim_end_matches(']')),
            port,
        }
    }

    /// Parse `host:port` (`[v6]:port` or `v6:port`); an empty host is
    /// `default_host` (a server that does not know its own address answers
    /// `MOVED 1234 :6380`).
    pub(crate) fn parse(text: &str, default_host: &str) -> Option<Self> {
        let (host, port) = text.rsplit_once(':')?;
        let port = port.parse::<u16>().ok().filter(|p| *p != 0)?;
        let host = if host.is_empty() { default_host } else { host };
        Some(Self::new(host, port))
    }
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// A refusal that routing handles.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Redirect {
    /// The slot now lives on `to`: update the slot map and resend there.
    Moved { slot: u16, to: NodeAddr },
    /// The slot is migrating and the key may be on `to`: resend there once,
    /// preceded by `ASKING`.
    Ask { slot: u16, to: NodeAddr },
    /// Retry later on the same node: the cluster (or node) cannot serve the
    /// slot right now. `refresh`: the topology may have changed (a failover
    /// in progress, a demoted primary).
    Wait { refresh: bool },
}

/// Whether the error reply `text` (`CODE detail…`) is a demoted primary
/// ending a blocking command: `UNBLOCKED` (Redis 7 / Valkey 7.2, and
/// Valkey 8+ standalone) or `REDIRECT` (Valkey 8+ to a client with
/// `CLIENT CAPA redirect`). A cluster node answers `MOVED` instead.
pub(crate) fn is_demotion(text: &str) -> bool {
    let code = text.split_whitespace().next().unwrap_or("");
    code == "UNBLOCKED" || code == "REDIRECT"
}

impl Redirect {
    /// Classify the error reply `code detail` received from `from`.
    pub(crate) fn classify(code: &str, detail: &str, from: &NodeAddr) -> Option<Self> {
        let mut words = detail.split_whitespace();
        match code {
            "MOVED" | "ASK" => {
                let slot = words.next()?.parse::<u16>().ok()?;
                let to = NodeAddr::parse(words.next()?, &from.host)?;
                Some(if code == "MOVED" {
                    Redirect::Moved { slot, to }
                } else {
                    Redirect::Ask { slot, to }
                })
            }
            "TRYAGAIN" | "LOADING" | "BUSY" => Some(Redirect::Wait { refresh: false }),
            // A demoted primary: the new one is found by a topology refresh
            // (cluster) or is reached at the same address (standalone:
            // `REDIRECT`'s node is not followed, the URL's server is).
            "CLUSTERDOWN" | "MASTERDOWN" | "READONLY" | "UNBLOCKED" | "REDIRECT" => {
                Some(Redirect::Wait { refresh: true })
            }
            _ => None,
        }
    }

    /// Classify a whole error reply line (`CODE detail…`).
    pub(crate) fn classify_line(text: &str, from: &NodeAddr) -> Option<Self> {
        let (code, detail) = text.split_once(' ').unwrap_or((text, ""));
        Self::classify(code, detail, from)
    }

    /// Classify a client error (a server error reply it carries).
    pub(crate) fn classify_error(e: &redis::RedisError, from: &NodeAddr) -> Option<Self> {
        Self::classify(e.code()?, e.detail().unwrap_or(""), from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn here() -> NodeAddr {
        NodeAddr::new("10.0.0.1", 7000)
    }

    #[test]
    fn moved_and_ask_name_the_slot_and_the_node() {
        assert_eq!(
            Redirect::classify_line("MOVED 3999 127.0.0.1:6381", &here()),
            Some(Redirect::Moved {
                slot: 3999,
                to: NodeAddr::new("127.0.0.1", 6381)
            })
        );
        assert_eq!(
            Redirect::classify_line("ASK 12 cache-2.example:7001", &here()),
            Some(Redirect::Ask {
                slot: 12,
                to: NodeAddr::new("cache-2.example", 7001)
            })
        );
        assert_eq!(
            Redirect::classify("MOVED", "5 :7002", &here()),
            Some(Redirect::Moved {
                slot: 5,
                to: NodeAddr::new("10.0.0.1", 7002)
            }),
            "an unknown endpoint means the node we asked"
        );
        assert_eq!(
            Redirect::classify("MOVED", "5 ::1:7002", &here()),
            Some(Redirect::Moved {
                slot: 5,
                to: NodeAddr::new("::1", 7002)
            })
        );
        assert_eq!(NodeAddr::new("::1", 7002).to_string(), "[::1]:7002");
    }

    #[test]
    fn transient_states_wait_and_others_are_not_routing() {
        for (line, refresh) in [
            (
                "TRYAGAIN Multiple keys request during rehashing of slot",
                false,
            ),
            ("LOADING Valkey is loading the dataset in memory", false),
            ("CLUSTERDOWN The cluster is down", true),
            ("CLUSTERDOWN Hash slot not served", true),
            (
                "READONLY You can't write against a read only replica.",
                true,
            ),
            ("MASTERDOWN Link with MASTER is down", true),
            (
                "UNBLOCKED force unblock from blocking operation, instance state changed (master -> replica?)",
                true,
            ),
            ("REDIRECT 127.0.0.1:6380", true),
        ] {
            assert_eq!(
                Redirect::classify_line(line, &here()),
                Some(Redirect::Wait { refresh }),
                "{line}"
            );
        }
        for line in [
            "ERR unknown command",
            "WRONGTYPE Operation against a key",
            "MOVED x 1.2.3.4:5",
            "MOVED 5 nowhere",
            "MOVED 5 h:0",
            "NOPERM no",
        ] {
            assert_eq!(Redirect::classify_line(line, &here()), None, "{line}");
        }
    }

    #[test]
    fn a_demoted_primary_ending_a_blocking_command_is_recognised() {
        assert!(is_demotion(
            "UNBLOCKED force unblock from blocking operation, instance state changed (master -> replica?)"
        ));
        assert!(is_demotion("REDIRECT 127.0.0.1:7001"));
        assert!(!is_demotion(
            "READONLY You can't write against a read only replica."
        ));
        assert!(!is_demotion("ERR UNBLOCKED"));
    }
}
