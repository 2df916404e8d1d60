//! [`Reader`]: one partition's stream, read on a connection of its own to
//! the node serving it, always with exactly one paired read (`XRANGE` +
//! `XINFO STREAM` of the stream's one key, see [`super::read`]) in flight
//! — followed, only for a position at the trimmed edge, by `GET` of the
//! trim record before anything else is sent:
//!
//! - catching up, the next page is requested before the current one is
//!   decoded and handed over, so the server works meanwhile;
//! - at the end of the stream, it sends `XREAD BLOCK` (the wake-up) with
//!   the next paired read queued right behind it, so a new entry costs one
//!   round trip. The wake-up's own entries are ignored: entries come only
//!   from paired reads, whose expiry is judged on the state they saw.
//!
//! Following the cluster: `MOVED` sends it to the slot's new owner at
//! once; `ASK` to the named node, every request preceded by `ASKING`,
//! until the next reconnect; `TRYAGAIN`, `CLUSTERDOWN`, `LOADING`, a lost
//! or refused connection are an outage: it reconnects with backoff
//! (refreshing the topology first when a failover may be under way) and
//! goes on exactly after the last entry it read. An outage ends only when
//! a new connection proved itself — its reads moved the position forward,
//! a live wait completed, or it kept working for [`PROVEN_AFTER`] after a
//! successful read — so a server that answers one read and then fails at
//! once does not reset the backoff. A server whose replies break the
//! protocol (ids out of order, more than was asked) is reconnected to; if
//! it keeps doing so, the reader fails with a terminal `Backend` error.
//!
//! A dead node: a wait for any reply (the wake-up's included) that lasts
//! longer than the ping interval has the router check the node
//! ([`crate::routing::Router::node_alive`]: a `PING` on the backend's
//! shared connection, since a connection blocked in `XREAD BLOCK` runs
//! nothing else); a node that does not answer within the ping timeout ends
//! the session as a lost connection, so a stopped or black-holed node is
//! left within seconds and its slots followed to the replica the cluster
//! promotes. TCP keepalive on the socket notices a dropped path the same
//! way. On a cluster, a slot whose owner just failed is not reconnected to
//! until a topology refresh names another owner or a ping finds the node
//! back; on a standalone server, the reconnect gets only the ping timeout
//! to set up.
//!
//! Invariant: the position only moves forward, over entries handed to the
//! merge, and every read is judged before its entries are handed over —
//! expired (trimmed past, or beyond the stream's newest id), or a history
//! that forked: the entry at the position, fetched in the same
//! transaction, is gone or is another entry than the one the position's
//! [witness](crate::witness) names, or the stream's `entries-added` grew
//! by more or less than the entries read since the last read that reached
//! its end (a failover that lost acknowledged entries while new ones took
//! their place).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ff_core::backend::Backoff;
use ff_core::engine_error::EngineError;
use ff_core::filter::SubscriptionFilter;
use ff_core::stream_events::Family;
use ff_core::stream_subscribe::{ValkeyPosition, WitnessedPosition};
use tokio::time::Instant;

use super::conn::{Conn, ConnError};
use super::merge::{Decoded, Pending};
use super::read::{
    push_page_request, push_record_request, read_page, read_record, Page, PageAsk, PageError,
    PageKeys,
};
use super::wakeup;
use crate::entry;
use crate::error::{server_error, unexpected, InContext, BACKEND};
use crate::expiry::{self, Expired};
use crate::id;
use crate::inner::Inner;
use crate::limits::{self, MAX_ENTRY_BYTES};
use crate::routing::{redirect, NodeAddr, Redirect};
use crate::stream_info::StreamState;
use crate::witness;

/// A connection that failed at least this long (or the policy's longest
/// backoff, if longer) after a successful read had recovered: its failure
/// starts a new outage.
const PROVEN_AFTER: Duration = Duration::from_secs(5);

/// Consecutive sessions ended by a protocol error, without progress,
/// after which the reader fails with a terminal error.
const MAX_PROTOCOL_ERRORS: u32 = 3;

/// Consecutive redirects without a successful read after which a redirect
/// counts as a failure (with backoff): the nodes disagree.
const MAX_REDIRECTS: u32 = 16;

/// What one call to [`Reader::next`] produced.
pub(crate) enum Output {
    /// A page of entries, oldest first.
    Page {
        entries: Vec<Pending>,
        /// The read reached the end of the stream.
        at_end: bool,
        /// Where the partition starts, when the subscription did not know
        /// yet (from the beginning): just before the first entry read, or
        /// the stream's newest id when there was none.
        start: ValkeyPosition,
    },
    /// Reading after `after` would miss entries (see the module docs).
    Expired {
        after: ValkeyPosition,
        expired: Expired,
    },
    /// A terminal error.
    Failed(EngineError),
    /// Reconnection gave up.
    GaveUp,
}

/// Why a session (a run of reads on one connection) ended.
enum Stop {
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
}

/// A run of failed sessions: the backoff, and how many of them ended in a
/// protocol error. Ends only when a session proves itself.
#[derive(Default)]
struct Outage {
    backoff: Option<Backoff>,
    protocol_errors: u32,
}

/// One connection and what it is for.
struct Session {
    conn: Conn,
    node: NodeAddr,
    /// Every request goes with `ASKING` (the slot is migrating to `node`).
    asking: bool,
    /// The position when the session started.
    started_at: Option<ValkeyPosition>,
}

/// `entries-added` at the last read that reached the stream's end, and
/// the entries read since.
#[derive(Clone, Copy)]
struct Anchor {
    added: u64,
    read_since: u64,
}

/// One followed partition's reader; see the module docs.
pub(crate) struct Reader {
    inner: Arc<Inner>,
    family: Family,
    partition: u16,
    keys: PageKeys,
    slot: u16,
    count: usize,
    filter: SubscriptionFilter,
    /// Entries up to here were read; `None` before the first read of a
    /// subscription from the beginning.
    read: Option<ValkeyPosition>,
    /// The witness of the entry at `read`, when known: each read checks
    /// that entry is still there.
    witness: Option<u32>,
    session: Option<Session>,
    /// The paired read written and not yet read.
    in_flight: Option<PageAsk>,
    /// The last read reached the end: the next one waits for a wake-up.
    at_end: bool,
    /// Where an `ASK` sent the next session.
    ask_to: Option<NodeAddr>,
    redirects: u32,
    outage: Outage,
    /// When the current session's first read succeeded.
    read_ok_at: Option<Instant>,
    anchor: Option<Anchor>,
}

impl Reader {
    /// A reader of `family`'s partition `partition`, `count` entries per
    /// read, starting after `start` (with the witness of its entry, when
    /// known; from the beginning when `None`). `state`: the stream as the
    /// subscribe call saw it, when the start is its newest id (then the
    /// history check starts at once).
    pub(crate) fn new(
        inner: Arc<Inner>,
        family: Family,
        partition: u16,
        count: usize,
        filter: SubscriptionFilter,
        start: Option<WitnessedPosition>,
        state: Option<&StreamState>,
    ) -> Self {
        let read = start.map(|s| s.at);
        let witness = start.and_then(|s| s.witness);
        let keys = PageKeys {
            stream: inner.keys.stream(family, partition).to_owned(),
            record: inner.keys.trim_record(family, partition).to_owned(),
        };
        let anchor = state
            .filter(|s| Some(s.last_generated) == read)
            .and_then(|s| s.entries_added)
            .map(|added| Anchor {
                added,
                read_since: 0,
            });
        Self {
            slot: inner.keys.slot(family, partition),
            inner,
            family,
            partition,
            keys,
            count,
            filter,
            read,
            witness,
            session: None,
            in_flight: None,
            at_end: false,
            ask_to: None,
            redirects: 0,
            outage: Outage::default(),
            read_ok_at: None,
            anchor,
        }
    }

    /// Read the next page (waiting for a wake-up when the last read
    /// reached the end), reconnecting as needed. Owns itself while it
    /// runs, so any number of readers can be driven at once.
    pub(crate) async fn next(mut self) -> (Self, Output) {
        let output = self.step().await;
        (self, output)
    }

    fn context(&self) -> String {
        format!(
            "reading {}",
            self.inner.describe(self.family, self.partition)
        )
    }

    async fn step(&mut self) -> Output {
        loop {
            let stop = match self.attempt().await {
                Ok(output) => return output,
                Err(stop) => stop,
            };
            // A new session reads before it waits, as a new subscription does.
            self.session = None;
            self.in_flight = None;
            self.at_end = false;
            match stop {
                Stop::Fatal(e) => return Output::Failed(e),
                Stop::Expired { after, expired } => return Output::Expired { after, expired },
                Stop::Redirect(redirect) if self.redirects < MAX_REDIRECTS => {
                    self.redirects += 1;
                    match redirect {
                        Redirect::Moved { slot, to } => {
                            self.inner.router.moved(slot, &to);
                            self.ask_to = None;
                        }
                        Redirect::Ask { to, .. } => self.ask_to = Some(to),
                        Redirect::Wait { .. } => {}
                    }
                }
                Stop::Redirect(redirect) => {
                    let error = EngineError::transport(
                        BACKEND,
                        InContext::new(
                            self.context(),
                            std::io::Error::other(format!(
                                "{} redirects in a row (last: {redirect:?})",
                                self.redirects
                            )),
                        ),
                    );
                    self.redirects = 0;
                    self.ask_to = None;
                    if let Some(output) = self.back_off(error, None, true).await {
                        return output;
                    }
                }
                Stop::Lost {
                    error,
                    protocol,
                    refresh,
                } => {
                    self.ask_to = None;
                    if let Some(output) = self.back_off(error, protocol, refresh).await {
                        return output;
                    }
                }
            }
        }
    }

    /// After a lost session: count it, wait, refresh the topology when
    /// asked; `Some` when the reader must stop.
    async fn back_off(
        &mut self,
        error: EngineError,
        protocol: Option<String>,
        refresh: bool,
    ) -> Option<Output> {
        let proven_after = PROVEN_AFTER.max(self.inner.config.reconnect.max_backoff);
        if self
            .read_ok_at
            .take()
            .is_some_and(|t| t.elapsed() >= proven_after)
        {
            self.recovered();
        }
        let policy = &self.inner.config.reconnect;
        if let Some(why) = protocol {
            self.outage.protocol_errors += 1;
            if self.outage.protocol_errors >= MAX_PROTOCOL_ERRORS {
                tracing::warn!(family = %self.family, partition = self.partition, %error, "ff valkey subscription: the server keeps breaking the protocol; giving up");
                return Some(Output::Failed(EngineError::Backend {
                    backend: BACKEND,
                    detail: format!(
                        "{}: the server sent invalid replies {} times in a row (last: {why}); is this a Valkey/Redis 7+ server, or is something in between altering replies?",
                        self.context(),
                        self.outage.protocol_errors,
                    ),
                }));
            }
        }
        let backoff = self.outage.backoff.get_or_insert_with(|| {
            tracing::warn!(family = %self.family, partition = self.partition, %error, "ff valkey subscription lost its connection; reconnecting");
            policy.start()
        });
        let Some(delay) = backoff.next_delay() else {
            tracing::warn!(
                family = %self.family,
                partition = self.partition,
                attempts = backoff.attempts(),
                %error,
                "ff valkey subscription gave up reconnecting"
            );
            return Some(Output::GaveUp);
        };
        tracing::debug!(family = %self.family, partition = self.partition, ?delay, %error, "ff valkey subscription retrying");
        let mut changes = self.inner.router.topology_changes();
        if refresh {
            // On a task of its own: this reader may not be polled again
            // for a while (its consumer reads slowly), and must not hold
            // up the refreshes other subscriptions wait for.
            self.inner.router.schedule_refresh();
        }
        // A new topology (the promoted replica found) is worth a try at
        // once; otherwise the jittered delay.
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = changes.changed() => {}
        }
        None
    }

    /// The session proved the connection works: the outage is over.
    fn recovered(&mut self) {
        if self.outage.backoff.take().is_some() {
            tracing::info!(family = %self.family, partition = self.partition, "ff valkey subscription reconnected");
        }
        self.outage.protocol_errors = 0;
    }

    /// A failed exchange on `node`: a redirect, an outage, or the end.
    fn failed(&self, e: ConnError, node: &NodeAddr) -> Stop {
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

    /// Open a session to the slot's node (or where `ASK` sent it).
    async fn open(&mut self) -> Result<(), Stop> {
        let (node, asking) = match self.ask_to.clone() {
            Some(node) => (node, true),
            None => match self.inner.router.owner(self.slot) {
                Some(node) => (node, false),
                None => {
                    return Err(Stop::Lost {
                        error: EngineError::transport(
                            BACKEND,
                            InContext::new(
                                self.context(),
                                std::io::Error::other(format!(
                                    "no node serves slot {} (is the cluster failing over?)",
                                    self.slot
                                )),
                            ),
                        ),
                        protocol: None,
                        refresh: true,
                    })
                }
            },
        };
        let router = &self.inner.router;
        if router.is_cluster() && !asking && router.is_suspect(&node) {
            // Wait for the cluster to fail the node over (the refresh
            // that follows each retry finds its successor), unless the
            // ping sent meanwhile finds it back.
            router.ping_soon(&node);
            return Err(Stop::Lost {
                error: EngineError::transport(
                    BACKEND,
                    InContext::new(
                        self.context(),
                        std::io::Error::other(format!(
                            "{node}, which serves slot {}, answered no ping lately (is the cluster failing it over?)",
                            self.slot
                        )),
                    ),
                ),
                protocol: None,
                refresh: true,
            });
        }
        let connect_timeout = if router.is_suspect(&node) {
            self.inner.config.connect_timeout.min(router.ping_timeout())
        } else {
            self.inner.config.connect_timeout
        };
        let conn = Conn::open(
            &router.endpoint(&node),
            &self.inner.subscription_client_name(),
            connect_timeout,
        )
        .await
        .map_err(|e| self.failed(e, &node))?;
        self.session = Some(Session {
            conn,
            node,
            asking,
            started_at: self.read,
        });
        Ok(())
    }

    /// Queue (not send) the paired read of the next page.
    fn ask_page(&mut self) {
        let ask = PageAsk {
            after: self.read,
            count: self.count,
            witness: self.witness,
        };
        let session = self.session.as_mut().expect("a session");
        if session.asking {
            session.conn.push(&[b"ASKING"]);
        }
        push_page_request(&mut session.conn, &self.keys, ask);
        self.in_flight = Some(ask);
    }

    /// One page: open a session if needed, send the read (behind a
    /// wake-up when at the end) unless one is in flight, read and judge it.
    async fn attempt(&mut self) -> Result<Output, Stop> {
        if self.session.is_none() {
            self.open().await?;
        }
        if self.in_flight.is_none() {
            if self.at_end {
                self.wait_live().await?;
            } else {
                self.ask_page();
                self.flush().await?;
            }
        }
        let ask = self.in_flight.take().expect("a read in flight");
        let session = self.session.as_mut().expect("a session");
        let node = session.node.clone();
        let asking = session.asking;
        let read = read_reply(
            &mut session.conn,
            asking,
            ask,
            self.inner.config.command_timeout,
        );
        let mut page = match unless_dead(&self.inner, &node, read).await {
            Ok(page) => page,
            Err(PageError::Conn(e)) => return Err(self.failed(e, &node)),
            Err(PageError::Reply(why)) => {
                return Err(Stop::Fatal(unexpected(&self.context(), why)))
            }
        };
        self.read_ok_at.get_or_insert_with(Instant::now);
        self.redirects = 0;
        if let Some(after) = ask.after {
            if page.state.needs_record(after) {
                let record = self.read_record().await?;
                page.state = page.state.with_record(record.as_deref());
            }
            expiry::judge(after, &page.state)
                .and_then(|()| {
                    witness::judge(after, ask.witness, &page.state, page.found.flatten())
                })
                .map_err(|expired| Stop::Expired { after, expired })?;
        }
        let at_end = page.len() < ask.count;
        self.check_history(&page, at_end, ask.after)?;
        if !at_end {
            // Read ahead: the server works on the next page while this one
            // is decoded and merged. A failure to send it surfaces on the
            // next call, which reconnects.
            self.read = page.last_id();
            self.witness = page.last_witness();
            self.ask_page();
            if self.flush().await.is_err() {
                self.session = None;
                self.in_flight = None;
            }
        }
        let output = self.decode(&page, at_end, ask.after)?;
        (self.read, self.witness) = match (page.last_id(), ask.after) {
            (Some(last), _) => (Some(last), page.last_witness()),
            (None, Some(after)) => (Some(after), ask.witness),
            (None, None) => (Some(page.state.last_generated), None),
        };
        self.at_end = at_end;
        let started_at = self.session.as_ref().and_then(|s| s.started_at);
        if self.read > started_at {
            self.recovered();
        }
        Ok(output)
    }

    /// The trim record, read on the session's connection (nothing else is
    /// in flight when it is asked for).
    async fn read_record(&mut self) -> Result<Option<Vec<u8>>, Stop> {
        let timeout = self.inner.config.command_timeout;
        let session = self.session.as_mut().expect("a session");
        if session.asking {
            session.conn.push(&[b"ASKING"]);
        }
        push_record_request(&mut session.conn, &self.keys);
        self.flush().await?;
        let session = self.session.as_mut().expect("a session");
        let node = session.node.clone();
        let asking = session.asking;
        let read = async {
            if asking {
                tokio::time::timeout(timeout, session.conn.read(limits::SMALL_REPLY))
                    .await
                    .map_err(|_| ConnError::Timeout(timeout))??
                    .check()?;
            }
            read_record(&mut session.conn, timeout).await
        };
        match unless_dead(&self.inner, &node, read).await {
            Ok(record) => Ok(record),
            Err(PageError::Conn(e)) => Err(self.failed(e, &node)),
            Err(PageError::Reply(why)) => Err(Stop::Fatal(unexpected(&self.context(), why))),
        }
    }

    async fn flush(&mut self) -> Result<(), Stop> {
        let session = self.session.as_mut().expect("a session");
        let node = session.node.clone();
        match session.conn.flush().await {
            Ok(()) => Ok(()),
            Err(e) => Err(self.failed(e, &node)),
        }
    }

    /// At the end: block until an entry after the position exists or the
    /// safety-net poll passes, with the next paired read queued behind.
    ///
    /// A wait parked on a slot's old node learns nothing when the stream's
    /// key migrates away (the server keeps it blocked until the slot's
    /// ownership changes), so it also ends, and the reader reads again,
    /// as soon as any request of this backend is redirected (`ASK`,
    /// `MOVED`) for the slot.
    async fn wait_live(&mut self) -> Result<(), Stop> {
        let after = self.read.expect("a position after the first read");
        let block = self.inner.config.safety_net_poll;
        let mut redirected = self.inner.router.redirects_of(self.slot);
        redirected.mark_unchanged();
        let session = self.session.as_mut().expect("a session");
        if session.asking {
            session.conn.push(&[b"ASKING"]);
        }
        wakeup::push_wait(&mut session.conn, &self.keys.stream, after, block);
        self.ask_page();
        self.flush().await?;
        let session = self.session.as_mut().expect("a session");
        let node = session.node.clone();
        let limit = block + self.inner.config.command_timeout;
        let woke = async {
            if session.asking {
                session.conn.read(limits::SMALL_REPLY).await?.check()?;
            }
            wakeup::read_wait(&mut session.conn, after, limit).await
        };
        // A redirect to the node this wait is on changes nothing for it.
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
            woke = unless_dead(&self.inner, &node, woke) => woke,
            () = elsewhere => {
                return Err(Stop::Redirect(Redirect::Wait { refresh: false }));
            }
        };
        match woke {
            Ok(_) => {
                self.recovered();
                Ok(())
            }
            Err(e) => Err(self.failed(e, &node)),
        }
    }

    /// Check that the stream's history still contains what was read (see
    /// the module docs); moves the anchor.
    fn check_history(
        &mut self,
        page: &Page,
        at_end: bool,
        after: Option<ValkeyPosition>,
    ) -> Result<(), Stop> {
        let read = page.len() as u64;
        let Some(added) = page.state.entries_added else {
            self.anchor = None;
            return Ok(());
        };
        match (self.anchor, at_end) {
            (Some(anchor), true) if added != anchor.added + anchor.read_since + read => {
                let after = after.expect("an anchor follows a read");
                Err(Stop::Expired {
                    after,
                    expired: Expired {
                        oldest: expiry::oldest(&page.state),
                        detail: format!(
                            "the stream's history changed under position {}: {} entries were added since the last read, but {} were read (was the server failed over to a replica that had not received every entry, or restored?); resume from the oldest retained event",
                            id::format(after),
                            added.saturating_sub(anchor.added),
                            anchor.read_since + read
                        ),
                    },
                })
            }
            (_, true) => {
                self.anchor = Some(Anchor {
                    added,
                    read_since: 0,
                });
                Ok(())
            }
            (Some(anchor), false) => {
                self.anchor = Some(Anchor {
                    read_since: anchor.read_since + read,
                    ..anchor
                });
                Ok(())
            }
            (None, false) => Ok(()),
        }
    }

    /// Decode a page into the merge's entries (filtering as it goes).
    fn decode(
        &self,
        page: &Page,
        at_end: bool,
        after: Option<ValkeyPosition>,
    ) -> Result<Output, Stop> {
        let mut entries = Vec::with_capacity(page.len());
        let mut first = None;
        for raw in page.entries() {
            let raw = raw.map_err(|why| Stop::Fatal(unexpected(&self.context(), why)))?;
            first.get_or_insert(raw.id);
            let decoded = if raw.size > MAX_ENTRY_BYTES {
                Err(format!(
                    "entry of {} bytes is larger than the {MAX_ENTRY_BYTES} bytes ff reads",
                    raw.size
                ))
            } else {
                entry::decode(self.family, &raw.fields)
            };
            let decoded = match decoded {
                Ok((draft, meta)) => {
                    if self
                        .filter
                        .matches_parts(draft.kind(), draft.execution_id(), &meta)
                    {
                        Decoded::Event(draft, meta)
                    } else {
                        Decoded::Skipped
                    }
                }
                Err(detail) => {
                    tracing::debug!(family = %self.family, partition = self.partition, id = %id::format(raw.id), %detail, "ff valkey: corrupt stream entry");
                    Decoded::Corrupt(detail)
                }
            };
            entries.push(Pending {
                id: raw.id,
                witness: raw.fields.witness(),
                decoded,
            });
        }
        let start = match (after, first) {
            (Some(after), _) => after,
            (None, Some(first)) => id::before(first),
            (None, None) => page.state.last_generated,
        };
        Ok(Output::Page {
            entries,
            at_end,
            start,
        })
    }
}

/// `read`, unless `node` is found dead first (see the module docs): then
/// a lost connection naming the unanswered ping.
async fn unless_dead<T, E: From<ConnError>>(
    inner: &Inner,
    node: &NodeAddr,
    read: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    tokio::select! {
        result = read => result,
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

/// Read the replies of a paired read (after `ASKING`'s, when asking).
async fn read_reply(
    conn: &mut Conn,
    asking: bool,
    ask: PageAsk,
    timeout: Duration,
) -> Result<Page, PageError> {
    if asking {
        tokio::time::timeout(timeout, conn.read(limits::SMALL_REPLY))
            .await
            .map_err(|_| ConnError::Timeout(timeout))??
            .check()?;
    }
    read_page(conn, ask, timeout).await
}
