//! What a partition's [reader](super::reader) and its stream's
//! [wake-up](super::wakeup) share about following the node that serves a
//! slot: which node to use next, what a failed exchange means
//! ([`Stop`]), and the run of failures between two working sessions
//! ([`Outage`]) with its jittered backoff.
//!
//! Invariant: an outage ends only when a session proved itself (see
//! [`Outage::recovered`]), so a server that answers once and then fails at
//! once does not reset the backoff; a session that broke the protocol
//! [`MAX_PROTOCOL_ERRORS`] times in a row ends in a terminal error.

use std::future::Future;
use std::time::Duration;

use ff_core::backend::Backoff;
use ff_core::engine_error::EngineError;
use ff_core::stream_events::Family;
use ff_core::stream_subscribe::ValkeyPosition;
use tokio::time::Instant;

use super::conn::ConnError;
use crate::error::{server_error, InContext, BACKEND};
use crate::expiry::Expired;
use crate::inner::Inner;
use crate::routing::{redirect, NodeAddr, Redirect};

/// A connection that failed at least this long (or the policy's longest
/// backoff, if longer) after a successful exchange had recovered: its
/// failure starts a new outage.
const PROVEN_AFTER: Duration = Duration::from_secs(5);

/// Consecutive sessions ended by a protocol error, without progress,
/// after which the stream fails with a terminal error.
pub(crate) const MAX_PROTOCOL_ERRORS: u32 = 3;

/// Why a session (a run of exchanges on one connection) ended.
pub(crate) enum Stop {
    /// Go to another node at once.
    Redirect(Redirect),
    /// The connection failed or the cluster cannot serve the slot yet:
    /// reconnect with backoff. `protocol`: how the server broke the
    /// protocol, if that was the failure; `refresh`: the topology may have
    /// changed.
    Lost {
        error: EngineError,
        protocol: Option<String>,
        refresh: bool,
    },
    /// The position cannot be read after.
    Expired {
        after: ValkeyPosition,
        expired: Expired,
    },
    /// A terminal error.
    Fatal(EngineError),
    /// The stream's wake-up gave up reconnecting.
    GaveUp,
}

/// How an outage ended the stream.
#[derive(Clone, Debug)]
pub(crate) enum End {
    /// A terminal error.
    Failed(EngineError),
    /// Reconnection gave up.
    GaveUp,
}

/// The stream a session serves, for messages and traces.
#[derive(Clone, Copy)]
pub(crate) struct Of<'a> {
    pub(crate) inner: &'a Inner,
    pub(crate) family: Family,
    pub(crate) partition: u16,
}

impl Of<'_> {
    /// "reading `key` on `url`".
    pub(crate) fn context(&self) -> String {
        format!(
            "reading {}",
            self.inner.describe(self.family, self.partition)
        )
    }

    fn lost(&self, why: String, refresh: bool) -> Stop {
        Stop::Lost {
            error: EngineError::transport(
                BACKEND,
                InContext::new(self.context(), std::io::Error::other(why)),
            ),
            protocol: None,
            refresh,
        }
    }

    /// The node to open a session on for `slot` (`ask_to` when an `ASK`
    /// named one: then every request goes with `ASKING`), and the connect
    /// timeout to give it.
    pub(crate) fn target(
        &self,
        slot: u16,
        ask_to: Option<&NodeAddr>,
    ) -> Result<(NodeAddr, bool, Duration), Stop> {
        let router = &self.inner.router;
        let (node, asking) = match ask_to {
            Some(node) => (node.clone(), true),
            None => match router.owner(slot) {
                Some(node) => (node, false),
                None => {
                    return Err(self.lost(
                        format!("no node serves slot {slot} (is the cluster failing over?)"),
                        true,
                    ))
                }
            },
        };
        if router.is_cluster() && !asking && router.is_suspect(&node) {
            // Wait for the cluster to fail the node over (the refresh
            // that follows each retry finds its successor), unless the
            // ping sent meanwhile finds it back.
            router.ping_soon(&node);
            return Err(self.lost(
                format!("{node}, which serves slot {slot}, answered no ping lately (is the cluster failing it over?)"),
                true,
            ));
        }
        let connect_timeout = if router.is_suspect(&node) {
            self.inner.config.connect_timeout.min(router.ping_timeout())
        } else {
            self.inner.config.connect_timeout
        };
        Ok((node, asking, connect_timeout))
    }

    /// A failed exchange on `node`: a redirect, an outage, or the end.
    pub(crate) fn failed(&self, e: ConnError, node: &NodeAddr) -> Stop {
        if let ConnError::Server(text) = &e {
            if redirect::is_demotion(text) {
                tracing::info!(
                    family = %self.family,
                    partition = self.partition,
                    %node,
                    reply = %text,
                    cluster = self.inner.router.is_cluster(),
                    "ff valkey subscription: the node was demoted to a replica (failover, REPLICAOF) while this subscription waited on it; reconnecting to the partition's primary (on a standalone server, to the same address)"
                );
            }
            match Redirect::classify_line(text, node) {
                Some(Redirect::Wait { refresh }) => {
                    return Stop::Lost {
                        error: EngineError::transport(BACKEND, InContext::new(self.context(), e)),
                        protocol: None,
                        refresh,
                    }
                }
                Some(redirect) => return Stop::Redirect(redirect),
                None => {}
            }
        }
        if e.is_transient() {
            Stop::Lost {
                protocol: match &e {
                    ConnError::Protocol(why) => Some(why.clone()),
                    _ => None,
                },
                refresh: matches!(e, ConnError::Io(_)),
                error: EngineError::transport(BACKEND, InContext::new(self.context(), e)),
            }
        } else if let ConnError::Server(text) = &e {
            Stop::Fatal(server_error(text, self.inner.account(), &self.context()))
        } else {
            Stop::Fatal(EngineError::Backend {
                backend: BACKEND,
                detail: format!("{}: {e}", self.context()),
            })
        }
    }
}

/// A run of failed sessions: the backoff, and how many of them ended in a
/// protocol error. Ends only when a session proves itself.
#[derive(Default)]
pub(crate) struct Outage {
    backoff: Option<Backoff>,
    protocol_errors: u32,
    /// When the current session's first exchange succeeded.
    worked_at: Option<Instant>,
}

impl Outage {
    /// The current session's exchange succeeded.
    pub(crate) fn worked(&mut self) {
        self.worked_at.get_or_insert_with(Instant::now);
    }

    /// The session proved the connection works: the outage is over.
    pub(crate) fn recovered(&mut self, of: Of<'_>) {
        if self.backoff.take().is_some() {
            tracing::info!(family = %of.family, partition = of.partition, "ff valkey subscription reconnected");
        }
        self.protocol_errors = 0;
    }

    /// After a lost session: count it, wait, refresh the topology when
    /// asked; `Some` when the stream must end.
    pub(crate) async fn back_off(
        &mut self,
        of: Of<'_>,
        error: EngineError,
        protocol: Option<String>,
        refresh: bool,
    ) -> Option<End> {
        let inner = of.inner;
        let proven_after = PROVEN_AFTER.max(inner.config.reconnect.max_backoff);
        if self
            .worked_at
            .take()
            .is_some_and(|t| t.elapsed() >= proven_after)
        {
            self.recovered(of);
        }
        let policy = &inner.config.reconnect;
        if let Some(why) = protocol {
            self.protocol_errors += 1;
            if self.protocol_errors >= MAX_PROTOCOL_ERRORS {
                tracing::warn!(family = %of.family, partition = of.partition, %error, "ff valkey subscription: the server keeps breaking the protocol; giving up");
                return Some(End::Failed(EngineError::Backend {
                    backend: BACKEND,
                    detail: format!(
                        "{}: the server sent invalid replies {} times in a row (last: {why}); is this a Valkey/Redis 7+ server, or is something in between altering replies?",
                        of.context(),
                        self.protocol_errors,
                    ),
                }));
            }
        }
        let backoff = self.backoff.get_or_insert_with(|| {
            tracing::warn!(family = %of.family, partition = of.partition, %error, "ff valkey subscription lost its connection; reconnecting");
            policy.start()
        });
        let Some(delay) = backoff.next_delay() else {
            tracing::warn!(
                family = %of.family,
                partition = of.partition,
                attempts = backoff.attempts(),
                %error,
                "ff valkey subscription gave up reconnecting"
            );
            return Some(End::GaveUp);
        };
        tracing::debug!(family = %of.family, partition = of.partition, ?delay, %error, "ff valkey subscription retrying");
        let mut changes = inner.router.topology_changes();
        if refresh {
            // On a task of its own: this stream may not be polled again
            // for a while (its consumer reads slowly), and must not hold
            // up the refreshes other subscriptions wait for.
            inner.router.schedule_refresh();
        }
        // A new topology (the promoted replica found) is worth a try at
        // once; otherwise the jittered delay.
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = changes.changed() => {}
        }
        None
    }
}

/// `exchange`, unless `node` is found dead first (a wait for a reply that
/// lasts longer than the ping interval has the router ping the node): then
/// a lost connection naming the unanswered ping.
pub(crate) async fn unless_dead<T, E: From<ConnError>>(
    inner: &Inner,
    node: &NodeAddr,
    exchange: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    tokio::select! {
        result = exchange => result,
        () = inner.router.until_dead(node) => {
            let timeout = inner.router.ping_timeout();
            tracing::debug!(%node, ?timeout, "ff valkey subscription: the node stopped answering; reconnecting");
            Err(E::from(ConnError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("{node} answered no PING within {timeout:?} (stopped, overloaded or cut off)"),
            ))))
        }
    }
}
