//! [`Reader`]: one partition's stream, read with paired reads (`XRANGE` +
//! `XINFO STREAM` of the stream's one key, see [`super::read`]) on the
//! backend's shared read connection to the node serving it
//! ([`super::node_conn`]), always exactly one in flight — followed, only
//! for a position at the trimmed edge, by `GET` of the trim record before
//! anything else is sent:
//!
//! - catching up, the next page is requested before the current one is
//!   decoded and handed over, so the server works meanwhile;
//! - at the end of the stream, it waits on the stream's shared
//!   [wake-up](super::wakeup) for an id past its position (or a new
//!   wake-up connection, or the safety-net poll), then reads again.
//!   Interest is registered before each read (the wake-up's state is
//!   taken then), so nothing appended after the read is missed.
//!
//! Following the cluster: `MOVED` sends it to the slot's new owner at
//! once; `ASK` to the named node, every request preceded by `ASKING`,
//! until the next reconnect; `TRYAGAIN`, `CLUSTERDOWN`, `LOADING`, a lost
//! or refused connection are an outage: it reconnects with backoff
//! (refreshing the topology first when a failover may be under way) and
//! goes on exactly after the last entry it read. A read after a wait goes
//! to the slot's owner as the topology names it now. An outage ends only
//! when a session proved itself — its reads moved the position forward,
//! or it kept working for a while after a successful read (see
//! [`super::session`]). A server whose replies break the protocol (ids
//! out of order, more than was asked) has its connection replaced; if it
//! keeps doing so, the reader fails with a terminal `Backend` error.
//!
//! A dead node: a wait for a reply that lasts longer than the ping
//! interval has the router check the node
//! ([`crate::routing::Router::node_alive`]); a node that does not answer
//! within the ping timeout ends the session as a lost connection (and the
//! shared read connection to it is replaced), so a stopped or black-holed
//! node is left within seconds and its slots followed to the replica the
//! cluster promotes.
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

use std::sync::Arc;

use ff_core::engine_error::EngineError;
use ff_core::filter::SubscriptionFilter;
use ff_core::stream_events::Family;
use ff_core::stream_subscribe::ValkeyPosition;
use tokio::sync::watch;

use crate::cursor_codec::WitnessedPosition;

use super::conn::ConnError;
use super::merge::{Decoded, Pending};
use super::node_conn::{self, NodeConn, Replies, Request};
use super::read::{
    push_page_request, push_record_request, read_page, read_record, Page, PageAsk, PageError,
    PageKeys,
};
use super::session::{unless_dead, End, Of, Outage, Stop};
use super::wakeup::{Wake, WakeUp};
use crate::entry;
use crate::error::{unexpected, InContext, BACKEND};
use crate::expiry::{self, Expired};
use crate::id;
use crate::inner::Inner;
use crate::limits::{self, MAX_ENTRY_BYTES};
use crate::routing::{NodeAddr, Redirect};
use crate::stream_info::StreamState;
use crate::witness;

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

/// The node reads go to, and on which connection.
struct Session {
    conn: Arc<NodeConn>,
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
    /// The paired read sent and not yet answered.
    in_flight: Option<(PageAsk, Replies)>,
    /// The last read reached the end: the next one waits for a wake-up.
    at_end: bool,
    /// Where an `ASK` sent the next session.
    ask_to: Option<NodeAddr>,
    redirects: u32,
    outage: Outage,
    anchor: Option<Anchor>,
    /// The stream's wake-up, and its state when the last read was sent.
    wake: Arc<WakeUp>,
    woken: watch::Receiver<Wake>,
    seen: Wake,
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
        let wake = inner.subscriptions.wakeups.get(family, partition);
        let mut woken = wake.watch();
        let seen = woken.borrow_and_update().clone();
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
            anchor,
            wake,
            woken,
            seen,
        }
    }

    /// Read the next page (waiting for a wake-up when the last read
    /// reached the end), reconnecting as needed. Owns itself while it
    /// runs, so any number of readers can be driven at once.
    pub(crate) async fn next(mut self) -> (Self, Output) {
        let output = self.step().await;
        (self, output)
    }

    fn of(&self) -> Of<'_> {
        Of {
            inner: &self.inner,
            family: self.family,
            partition: self.partition,
        }
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
                Stop::GaveUp => return Output::GaveUp,
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
                            self.of().context(),
                            std::io::Error::other(format!(
                                "{} redirects in a row (last: {redirect:?})",
                                self.redirects
                            )),
                        ),
                    );
                    self.redirects = 0;
                    self.ask_to = None;
                    if let Some(end) = self.back_off(error, None, true).await {
                        return end;
                    }
                }
                Stop::Lost {
                    error,
                    protocol,
                    refresh,
                } => {
                    self.ask_to = None;
                    if let Some(end) = self.back_off(error, protocol, refresh).await {
                        return end;
                    }
                }
            }
        }
    }

    async fn back_off(
        &mut self,
        error: EngineError,
        protocol: Option<String>,
        refresh: bool,
    ) -> Option<Output> {
        let of = Of {
            inner: &self.inner,
            family: self.family,
            partition: self.partition,
        };
        self.outage
            .back_off(of, error, protocol, refresh)
            .await
            .map(ended)
    }

    /// Make sure reads go to the slot's node now: a session on a
    /// connection that failed, or on a node that no longer owns the slot,
    /// is replaced.
    async fn ensure_session(&mut self) -> Result<(), Stop> {
        if let Some(session) = &self.session {
            let owner_now = session.asking
                || self.inner.router.owner(self.slot).as_ref() == Some(&session.node);
            if owner_now && !session.conn.is_broken() {
                return Ok(());
            }
            self.session = None;
        }
        let (node, asking, connect_timeout) = self.of().target(self.slot, self.ask_to.as_ref())?;
        let router = &self.inner.router;
        let conn = self
            .inner
            .subscriptions
            .conns
            .get(
                &node,
                &router.endpoint(&node),
                &self.inner.subscription_read_client_name(),
                connect_timeout,
            )
            .await
            .map_err(|e| self.of().failed(e, &node))?;
        self.session = Some(Session {
            conn,
            node,
            asking,
            started_at: self.read,
        });
        Ok(())
    }

    /// Send the paired read of the next page.
    fn ask_page(&mut self) {
        let ask = PageAsk {
            after: self.read,
            count: self.count,
            witness: self.witness,
        };
        let session = self.session.as_ref().expect("a session");
        let mut request = Request::default();
        if session.asking {
            request.push(&[b"ASKING"], limits::SMALL_REPLY);
        }
        push_page_request(&mut request, &self.keys, ask);
        self.in_flight = Some((ask, session.conn.send(request)));
    }

    /// The replies of a request on the session's connection, within the
    /// command timeout, unless the node is found dead first; `ASKING`'s
    /// reply is checked and left out.
    async fn exchange<T>(
        &self,
        replies: Replies,
        then: impl FnOnce(Vec<super::conn::Reply>) -> Result<T, PageError>,
    ) -> Result<T, Stop> {
        let session = self.session.as_ref().expect("a session");
        let asking = session.asking;
        let timeout = self.inner.config.command_timeout;
        let read = async {
            let mut replies = node_conn::replies(replies, timeout).await?;
            if asking && !replies.is_empty() {
                replies.remove(0).check()?;
            }
            then(replies)
        };
        match unless_dead(&self.inner, &session.node, read).await {
            Ok(value) => Ok(value),
            Err(PageError::Conn(e)) => {
                if !matches!(e, ConnError::Server(_)) {
                    // Stuck, broken or breaking the protocol: no reader
                    // sends on it again.
                    session.conn.discard();
                }
                Err(self.of().failed(e, &session.node))
            }
            Err(PageError::Reply(why)) => Err(Stop::Fatal(unexpected(&self.of().context(), why))),
        }
    }

    /// One page: wait for a wake-up when at the end, make sure of the
    /// session, send the read unless one is in flight, read and judge it.
    async fn attempt(&mut self) -> Result<Output, Stop> {
        if self.in_flight.is_none() {
            if self.at_end {
                self.wait_live().await?;
            } else {
                self.seen = self.woken.borrow_and_update().clone();
            }
            self.ensure_session().await?;
            self.ask_page();
        }
        let (ask, replies) = self.in_flight.take().expect("a read in flight");
        let mut page = self
            .exchange(replies, |replies| read_page(replies, ask))
            .await?;
        self.outage.worked();
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
            // is decoded and merged.
            self.read = page.last_id();
            self.witness = page.last_witness();
            self.ask_page();
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
            let of = Of {
                inner: &self.inner,
                family: self.family,
                partition: self.partition,
            };
            self.outage.recovered(of);
        }
        Ok(output)
    }

    /// The trim record, read on the session's connection.
    async fn read_record(&mut self) -> Result<Option<Vec<u8>>, Stop> {
        let session = self.session.as_ref().expect("a session");
        let mut request = Request::default();
        if session.asking {
            request.push(&[b"ASKING"], limits::SMALL_REPLY);
        }
        push_record_request(&mut request, &self.keys);
        let replies = session.conn.send(request);
        self.exchange(replies, |mut replies| match replies.pop() {
            Some(reply) => read_record(reply),
            None => Err(PageError::Conn(ConnError::Protocol(
                "no reply to GET of the trim record".into(),
            ))),
        })
        .await
    }

    /// At the end: wait until the stream's wake-up reports an id past the
    /// position and past what woke the last read, a new wake-up
    /// connection, or the safety-net poll. The wake-up's state is taken
    /// before the read that follows is sent.
    async fn wait_live(&mut self) -> Result<(), Stop> {
        let after = self.read.expect("a position after the first read");
        let threshold = Some(after).max(self.seen.newest);
        let epoch = self.seen.epoch;
        self.wake.waiting_after(&self.inner, after);
        let woke = self
            .woken
            .wait_for(|w| w.end.is_some() || w.epoch != epoch || w.newest > threshold);
        let end = match tokio::time::timeout(self.inner.config.safety_net_poll, woke).await {
            Ok(Ok(wake)) => wake.end.clone(),
            // The safety-net poll: read anyway.
            Ok(Err(_)) | Err(_) => None,
        };
        match end {
            Some(End::Failed(e)) => return Err(Stop::Fatal(e)),
            Some(End::GaveUp) => return Err(Stop::GaveUp),
            None => {}
        }
        self.seen = self.woken.borrow_and_update().clone();
        Ok(())
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
            let raw = raw.map_err(|why| Stop::Fatal(unexpected(&self.of().context(), why)))?;
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

/// A reader's output for the end of its stream.
fn ended(end: End) -> Output {
    match end {
        End::Failed(e) => Output::Failed(e),
        End::GaveUp => Output::GaveUp,
    }
}
