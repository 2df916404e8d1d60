//! A stream's wake-up, shared by every subscription of a backend that
//! follows the stream: one task and one connection, to the node serving
//! the stream's slot, block in `XREAD BLOCK … COUNT 1` after the newest id
//! known, and publish each id it returns in a [`Wake`] that the
//! subscriptions watch. Its entries are never delivered: subscriptions
//! read entries with their own paired reads, whose expiry is judged on the
//! state they saw.
//!
//! Invariants:
//! - *No lost wake-up.* A subscription takes its [`Wake`] snapshot before
//!   a read and, once the read reached the end at position `p`, reports
//!   `p` ([`WakeUp::waiting_after`]) and waits for `newest` to pass
//!   `p` and the snapshot's; `newest` only grows, the task always blocks
//!   after the current `newest`, so an entry appended after any
//!   subscription's position moves `newest` past it. Positions are ids
//!   the stream reached, so raising `newest` to one wakes only
//!   subscriptions that have something to read there (or read once and
//!   find nothing: never a loop, since each waits past what woke it).
//! - *Distrust the server.* An id at or before the one the wait asked
//!   after is a protocol error: the connection is replaced (and, if it
//!   goes on, the stream fails), never a wake-up.
//! - *Every session reads.* Each connection after the first (a failover
//!   followed, a redirect, a lost connection) moves `epoch`, so every
//!   subscription reads again, as a new subscription would.
//! - *Never waits on a consumer.* The task only publishes a value; a slow
//!   subscription never holds up another.
//! - *Dropped with its last subscription.* The task and its socket end
//!   when the last [`WakeUp`] handle is dropped, also while blocked.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use ff_core::backend::subscription_span;
use ff_core::engine_error::EngineError;
use ff_core::stream_events::Family;
use ff_core::stream_subscribe::ValkeyPosition;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::conn::{Conn, ConnError};
use super::session::{self, End, Of, Outage, Stop};
use crate::id;
use crate::inner::Inner;
use crate::limits;
use crate::resp::Token;
use crate::routing::Redirect;

/// Consecutive redirects without a completed wait after which a redirect
/// counts as a failure (with backoff): the nodes disagree.
const MAX_REDIRECTS: u32 = 16;

/// What a stream's wake-up tells its subscriptions.
#[derive(Clone, Debug, Default)]
pub(crate) struct Wake {
    /// The newest id the stream is known to have reached.
    pub(crate) newest: Option<ValkeyPosition>,
    /// Moves with every new connection after the first: read again.
    pub(crate) epoch: u64,
    /// The wake-up ended: so does every subscription waiting on it.
    pub(crate) end: Option<End>,
}

/// One stream's wake-up; see the module docs.
pub(crate) struct WakeUp {
    family: Family,
    partition: u16,
    state: Arc<watch::Sender<Wake>>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for WakeUp {
    fn drop(&mut self) {
        if let Some(task) = self.task.get_mut().unwrap_or_else(|e| e.into_inner()) {
            task.abort();
        }
    }
}

impl WakeUp {
    /// The wake-up's state, to wait on.
    pub(crate) fn watch(&self) -> watch::Receiver<Wake> {
        self.state.subscribe()
    }

    /// A subscription read the stream up to `at` and waits for more:
    /// `newest` is at least `at` from now on, and the task runs.
    pub(crate) fn waiting_after(&self, inner: &Arc<Inner>, at: ValkeyPosition) {
        self.state.send_if_modified(|w| {
            let raised = w.newest < Some(at);
            if raised {
                w.newest = Some(at);
            }
            raised
        });
        let mut task = self.task.lock().unwrap_or_else(|e| e.into_inner());
        if task.is_none() {
            // Logged like the subscriptions it serves: its lost
            // connection is theirs.
            let span = subscription_span(crate::error::BACKEND, self.family);
            *task = Some(tokio::spawn(
                run(
                    inner.clone(),
                    self.state.clone(),
                    self.family,
                    self.partition,
                )
                .instrument(span),
            ));
        }
    }

    fn ended(&self) -> bool {
        self.state.borrow().end.is_some()
    }
}

/// One backend's wake-ups, one per followed stream while a subscription
/// follows it.
#[derive(Default)]
pub(crate) struct WakeUps {
    streams: Mutex<HashMap<(Family, u16), Weak<WakeUp>>>,
}

impl WakeUps {
    /// The wake-up of `family`'s partition `partition` (a new one when
    /// none runs, or the last one ended).
    pub(crate) fn get(&self, family: Family, partition: u16) -> Arc<WakeUp> {
        let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(wake) = streams
            .get(&(family, partition))
            .and_then(Weak::upgrade)
            .filter(|w| !w.ended())
        {
            return wake;
        }
        streams.retain(|_, w| w.strong_count() > 0);
        let wake = Arc::new(WakeUp {
            family,
            partition,
            state: Arc::new(watch::channel(Wake::default()).0),
            task: Mutex::new(None),
        });
        streams.insert((family, partition), Arc::downgrade(&wake));
        wake
    }
}

/// The task: sessions, one after another, until the stream ends.
async fn run(inner: Arc<Inner>, state: Arc<watch::Sender<Wake>>, family: Family, partition: u16) {
    let of = Of {
        inner: &inner,
        family,
        partition,
    };
    let slot = inner.keys.slot(family, partition);
    let key = inner.keys.stream(family, partition).to_owned();
    let mut outage = Outage::default();
    let mut ask_to = None;
    let mut redirects = 0u32;
    let mut sessions = 0u64;
    loop {
        let stop = session(
            of,
            &state,
            &key,
            slot,
            ask_to.take(),
            &mut outage,
            &mut sessions,
            &mut redirects,
        )
        .await;
        let end = match stop {
            Stop::Redirect(redirect) if redirects < MAX_REDIRECTS => {
                redirects += 1;
                match redirect {
                    Redirect::Moved { slot, to } => inner.router.moved(slot, &to),
                    Redirect::Ask { to, .. } => ask_to = Some(to),
                    Redirect::Wait { .. } => {}
                }
                continue;
            }
            Stop::Redirect(redirect) => {
                let error = ff_core::engine_error::EngineError::transport(
                    crate::error::BACKEND,
                    crate::error::InContext::new(
                        of.context(),
                        std::io::Error::other(format!(
                            "{redirects} redirects in a row (last: {redirect:?})"
                        )),
                    ),
                );
                redirects = 0;
                outage.back_off(of, error, None, true).await
            }
            Stop::Lost {
                error,
                protocol,
                refresh,
            } => outage.back_off(of, error, protocol, refresh).await,
            Stop::Fatal(e) => Some(End::Failed(e)),
            Stop::GaveUp => Some(End::GaveUp),
            // Only a reader judges positions; a wait never stops so.
            Stop::Expired { .. } => Some(End::Failed(EngineError::Backend {
                backend: crate::error::BACKEND,
                detail: format!(
                    "{}: internal error: a stream's wake-up stopped on an expired position, which only a read judges; please report it",
                    of.context()
                ),
            })),
        };
        if let Some(end) = end {
            state.send_modify(|w| w.end = Some(end));
            return;
        }
    }
}

/// One connection: waits, one after another, until one fails or is
/// redirected.
#[allow(clippy::too_many_arguments)]
async fn session(
    of: Of<'_>,
    state: &watch::Sender<Wake>,
    key: &str,
    slot: u16,
    ask_to: Option<crate::routing::NodeAddr>,
    outage: &mut Outage,
    sessions: &mut u64,
    redirects: &mut u32,
) -> Stop {
    let inner = of.inner;
    let router = &inner.router;
    let (node, asking, connect_timeout) = match of.target(slot, ask_to.as_ref()) {
        Ok(target) => target,
        Err(stop) => return stop,
    };
    let mut conn = match Conn::open(
        &router.endpoint(&node),
        &inner.subscription_client_name(),
        connect_timeout,
    )
    .await
    {
        Ok(conn) => conn,
        Err(e) => return of.failed(e, &node),
    };
    *sessions += 1;
    if *sessions > 1 {
        state.send_modify(|w| w.epoch += 1);
    }
    tracing::debug!(family = %of.family, partition = of.partition, %node, sessions = *sessions, "ff valkey wake-up: connected");
    let block = inner.config.safety_net_poll;
    let limit = block + inner.config.command_timeout;
    loop {
        let after = state
            .borrow()
            .newest
            .expect("the wake-up starts once a subscription waits after a position");
        let mut redirected = router.redirects_of(slot);
        redirected.mark_unchanged();
        if asking {
            conn.push(&[b"ASKING"]);
        }
        push_wait(&mut conn, key, after, block);
        if let Err(e) = conn.flush().await {
            return lost(of, e, &node);
        }
        let woke = async {
            if asking {
                conn.read(limits::SMALL_REPLY).await?.check()?;
            }
            read_wait(&mut conn, after, limit).await
        };
        // A wait parked on a slot's old node learns nothing when the
        // stream's key migrates away (the server keeps it blocked until
        // the slot's ownership changes): a redirect of any request of
        // this backend for the slot, elsewhere, ends it.
        let elsewhere = async {
            loop {
                if redirected.changed().await.is_err() {
                    return std::future::pending().await;
                }
                if redirected.borrow_and_update().as_ref() != Some(&node) {
                    return;
                }
            }
        };
        let woke = tokio::select! {
            woke = session::unless_dead(inner, &node, woke) => woke,
            () = elsewhere => return Stop::Redirect(Redirect::Wait { refresh: false }),
        };
        match woke {
            Ok(id) => {
                outage.worked();
                *redirects = 0;
                let raised = id.is_some_and(|id| {
                    state.send_if_modified(|w| {
                        let raised = w.newest < Some(id);
                        if raised {
                            w.newest = Some(id);
                        }
                        raised
                    })
                });
                // Only progress proves the session: a server that answers
                // once and then fails must not reset the backoff.
                if raised {
                    outage.recovered(of);
                }
            }
            Err(e) => {
                tracing::debug!(family = %of.family, partition = of.partition, %node, error = %e, "ff valkey wake-up: the wait failed");
                return lost(of, e, &node);
            }
        }
    }
}

/// [`Of::failed`]; a node that failed or was demoted also has its shared
/// read connection replaced, so the subscriptions' next reads follow.
fn lost(of: Of<'_>, e: ConnError, node: &crate::routing::NodeAddr) -> Stop {
    let stop = of.failed(e, node);
    if matches!(stop, Stop::Lost { refresh: true, .. }) {
        of.inner.subscriptions.conns.discard(node);
    }
    stop
}

/// Queue a wait of at most `block` for an entry of `key` after `after`.
fn push_wait(conn: &mut Conn, key: &str, after: ValkeyPosition, block: Duration) {
    let ms = u64::try_from(block.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
        .to_string();
    let after = id::format(after);
    let args: [&[u8]; 8] = [
        b"XREAD",
        b"COUNT",
        b"1",
        b"BLOCK",
        ms.as_bytes(),
        b"STREAMS",
        key.as_bytes(),
        after.as_bytes(),
    ];
    conn.push(&args);
}

/// Read the reply (within `limit`) of the wait for an entry after
/// `after`: the id of the entry that woke it, `None` when it timed out.
async fn read_wait(
    conn: &mut Conn,
    after: ValkeyPosition,
    limit: Duration,
) -> Result<Option<ValkeyPosition>, ConnError> {
    let reply = tokio::time::timeout(limit, conn.read(limits::entries_reply(1)))
        .await
        .map_err(|_| ConnError::Timeout(limit))??
        .check()?;
    let t = &reply.tokens;
    if matches!(t.first(), Some(Token::Nil)) {
        return Ok(None);
    }
    // [[key, [[id, fields]]]]: one stream, at least one entry.
    let id = match t.get(..6) {
        Some(
            [Token::Array(1), Token::Array(2), Token::Bulk(_), Token::Array(n), Token::Array(2), Token::Bulk(id)],
        ) if *n >= 1 => id::parse(reply.bytes(id)),
        _ => None,
    };
    match id {
        Some(id) if id > after => Ok(Some(id)),
        Some(id) => Err(ConnError::Protocol(format!(
            "XREAD for entries after {} returned entry {}, which does not follow it (positions only move forward)",
            id::format(after),
            id::format(id)
        ))),
        None => Err(ConnError::Protocol(format!(
            "XREAD returned {:?}, not one stream's entries",
            t.first()
        ))),
    }
}
