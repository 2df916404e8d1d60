//! The task behind one subscription. It owns one connection and keeps
//! exactly one paired read (`XRANGE` + `XINFO STREAM`, see [`super::read`])
//! in flight:
//!
//! - catching up, the next page is requested before the current one is
//!   decoded and handed over, so the server works meanwhile;
//! - caught up, it sends `XREAD BLOCK` (the wake-up) with the next paired
//!   read queued right behind it; the server runs that read the moment the
//!   wake-up returns, so a new event costs one round trip. The wake-up's
//!   own entries are ignored: events come only from paired reads, whose
//!   expiry is judged on the state they saw.
//!
//! It yields `CaughtUp` once and `Checkpoint`s while a filter admits
//! nothing, and after a lost connection reconnects with backoff, resuming
//! exactly after the last position it reached. An outage ends only when a
//! new connection proved itself — its reads moved the position forward, a
//! live wait completed, or it kept working for [`PROVEN_AFTER`] after a
//! successful read — so a server that answers one read and then fails at
//! once does not reset the backoff. A server whose replies break the
//! protocol (ids out of order, more than was asked) is reconnected to; if
//! it keeps doing so, the stream ends with a terminal `Backend` error.

use std::sync::Arc;
use std::time::Duration;

use ff_core::backend::{Backoff, DeliveryItem};
use ff_core::engine_error::EngineError;
use ff_core::filter::SubscriptionFilter;
use ff_core::stream_events::Family;
use ff_core::stream_subscribe::{encode_valkey, StreamCursor, ValkeyPosition};
use ff_core::types::TimestampMs;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::conn::{Conn, ConnError};
use super::read::{push_page_request, read_page, Page, PageAsk, PageError, PageKeys};
use super::wakeup;
use crate::entry;
use crate::error::{server_error, unexpected, InContext, BACKEND};
use crate::expiry;
use crate::inner::Inner;
use crate::limits::MAX_ENTRY_BYTES;

/// One item of a delivery stream.
pub(crate) type Item = Result<DeliveryItem, EngineError>;
/// Items handed to the consumer together (at most a read batch and two
/// markers).
pub(crate) type Batch = Vec<Item>;

/// Where a subscription starts, resolved at subscribe time.
pub(crate) enum Start {
    /// After `position`, the stream's newest id at subscribe time.
    Tail(ValkeyPosition),
    /// From the oldest retained entry; caught up once past `head`.
    Beginning { head: ValkeyPosition },
    /// Exactly after `position` (given as `cursor`); caught up once past `head`.
    After {
        position: ValkeyPosition,
        cursor: StreamCursor,
        head: ValkeyPosition,
    },
}

/// A connection that failed at least this long (or the policy's longest
/// backoff, if longer) after a successful read had recovered: its failure
/// starts a new outage.
const PROVEN_AFTER: Duration = Duration::from_secs(5);

/// Consecutive sessions ended by a protocol error, without progress,
/// after which the stream ends with a terminal error.
const MAX_PROTOCOL_ERRORS: u32 = 3;

/// Why a session (a run of reads on one connection) ended.
enum Stop {
    /// The consumer dropped its end.
    Closed,
    /// The connection failed; reconnect and go on. `protocol`: how the
    /// server broke the protocol, if that was the failure.
    Lost {
        error: EngineError,
        protocol: Option<String>,
    },
    /// Yield this error and end.
    Fatal(EngineError),
}

/// A run of failed sessions: the backoff, and how many of them ended in a
/// protocol error. Ends only when a session proves itself.
#[derive(Default)]
struct Outage {
    backoff: Option<Backoff>,
    protocol_errors: u32,
}

/// The last item handed to the consumer.
struct Sent {
    cursor: StreamCursor,
    position: Option<ValkeyPosition>,
    at: Instant,
}

/// The state of one subscription.
pub(crate) struct Pump {
    inner: Arc<Inner>,
    family: Family,
    keys: PageKeys,
    filter: SubscriptionFilter,
    tx: mpsc::Sender<Batch>,
    /// Every entry up to here has been scanned; `None` before the first
    /// read of a subscription from the beginning.
    position: Option<ValkeyPosition>,
    /// `CaughtUp` is due once `position` reaches this; `None` once sent.
    target: Option<ValkeyPosition>,
    sent: Sent,
    initial: Option<Batch>,
    /// What the paired read in flight asked for.
    asked: PageAsk,
    /// When the current session's first read succeeded.
    read_ok_at: Option<Instant>,
}

impl Pump {
    pub(crate) fn new(
        inner: Arc<Inner>,
        family: Family,
        filter: SubscriptionFilter,
        start: Start,
        tx: mpsc::Sender<Batch>,
    ) -> Self {
        let keys = PageKeys {
            stream: inner.keys.stream(family, 0).to_owned(),
            record: inner.keys.trim_record(family, 0).to_owned(),
        };
        let now = Instant::now();
        let (position, target, sent, initial) = match start {
            Start::Tail(p) => {
                let cursor = encode_valkey(family, p.ms, p.seq);
                let caught_up = vec![Ok(DeliveryItem::CaughtUp {
                    cursor: cursor.clone(),
                })];
                let sent = Sent {
                    cursor,
                    position: Some(p),
                    at: now,
                };
                (Some(p), None, sent, Some(caught_up))
            }
            Start::Beginning { head } => {
                let sent = Sent {
                    cursor: StreamCursor::beginning(),
                    position: None,
                    at: now,
                };
                (None, Some(head), sent, None)
            }
            Start::After {
                position,
                cursor,
                head,
            } => {
                let sent = Sent {
                    cursor,
                    position: Some(position),
                    at: now,
                };
                (Some(position), Some(head), sent, None)
            }
        };
        Self {
            inner,
            family,
            keys,
            filter,
            tx,
            position,
            target,
            sent,
            initial,
            asked: PageAsk {
                after: position,
                count: 0,
            },
            read_ok_at: None,
        }
    }

    fn cursor(&self, p: ValkeyPosition) -> StreamCursor {
        encode_valkey(self.family, p.ms, p.seq)
    }

    fn context(&self) -> String {
        format!("reading {}", self.inner.describe(self.family, 0))
    }

    /// A failed exchange: transient failures are a lost connection, others
    /// end the stream.
    fn failed(&self, e: ConnError) -> Stop {
        if e.is_transient() {
            Stop::Lost {
                protocol: match &e {
                    ConnError::Protocol(why) => Some(why.clone()),
                    _ => None,
                },
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

    /// Run until the consumer goes away or a terminal error was yielded.
    pub(crate) async fn run(mut self) {
        if let Some(batch) = self.initial.take() {
            if self.tx.send(batch).await.is_err() {
                return;
            }
        }
        let mut outage = Outage::default();
        loop {
            let (error, protocol) = match self.session(&mut outage).await {
                Stop::Closed => return,
                Stop::Fatal(e) => {
                    let _ = self.tx.send(vec![Err(e)]).await;
                    return;
                }
                Stop::Lost { error, protocol } => (error, protocol),
            };
            let policy = &self.inner.config.reconnect;
            if self
                .read_ok_at
                .take()
                .is_some_and(|t| t.elapsed() >= PROVEN_AFTER.max(policy.max_backoff))
            {
                self.recovered(&mut outage);
            }
            if let Some(why) = protocol {
                outage.protocol_errors += 1;
                if outage.protocol_errors >= MAX_PROTOCOL_ERRORS {
                    tracing::warn!(family = %self.family, %error, "ff valkey subscription: the server keeps breaking the protocol; giving up");
                    let e = EngineError::Backend {
                        backend: BACKEND,
                        detail: format!(
                            "{}: the server sent invalid replies {} times in a row (last: {why}); is this a Valkey/Redis 7+ server, or is something in between altering replies? Resume from cursor {}",
                            self.context(),
                            outage.protocol_errors,
                            self.sent.cursor
                        ),
                    };
                    let _ = self.tx.send(vec![Err(e)]).await;
                    return;
                }
            }
            let backoff = outage.backoff.get_or_insert_with(|| {
                tracing::warn!(family = %self.family, %error, "ff valkey subscription lost its connection; reconnecting");
                self.inner.config.reconnect.start()
            });
            let Some(delay) = backoff.next_delay() else {
                tracing::warn!(
                    family = %self.family,
                    attempts = backoff.attempts(),
                    %error,
                    "ff valkey subscription gave up reconnecting"
                );
                let cursor = self.sent.cursor.clone();
                let _ = self
                    .tx
                    .send(vec![Err(EngineError::StreamDisconnected { cursor })])
                    .await;
                return;
            };
            tracing::debug!(family = %self.family, ?delay, %error, "ff valkey subscription retrying");
            tokio::time::sleep(delay).await;
        }
    }

    /// The session proved the connection works: the outage is over.
    fn recovered(&self, outage: &mut Outage) {
        if outage.backoff.take().is_some() {
            tracing::info!(family = %self.family, "ff valkey subscription reconnected");
        }
        outage.protocol_errors = 0;
    }

    /// Queue (not send) the paired read of the next page after `after`.
    fn ask_page(&mut self, conn: &mut Conn, after: Option<ValkeyPosition>) {
        self.asked = PageAsk {
            after,
            count: self.inner.config.read_batch,
        };
        push_page_request(conn, &self.keys, self.asked);
    }

    /// Open a connection and read on it until something stops it.
    async fn session(&mut self, outage: &mut Outage) -> Stop {
        let slot = self.inner.keys.slot(self.family, 0);
        let node = self
            .inner
            .router
            .owner(slot)
            .unwrap_or_else(|| self.inner.router.seed().clone());
        let mut conn = match Conn::open(
            &self.inner.router.endpoint(&node),
            &self.inner.subscription_client_name(),
            self.inner.config.connect_timeout,
        )
        .await
        {
            Ok(conn) => conn,
            Err(e) => return self.failed(e),
        };
        self.ask_page(&mut conn, self.position);
        if let Err(e) = conn.flush().await {
            return self.failed(e);
        }
        let started_at = self.position;
        loop {
            if let Err(stop) = self.catch_up(&mut conn, outage, started_at).await {
                return stop;
            }
            if let Err(stop) = self.wait_live(&mut conn, outage).await {
                return stop;
            }
        }
    }

    /// With a page request in flight, read pages until one comes back
    /// short (the end of the stream as that read saw it).
    async fn catch_up(
        &mut self,
        conn: &mut Conn,
        outage: &mut Outage,
        started_at: Option<ValkeyPosition>,
    ) -> Result<(), Stop> {
        let batch_size = self.inner.config.read_batch;
        let timeout = self.inner.config.command_timeout;
        loop {
            let page = match read_page(conn, self.asked, timeout).await {
                Ok(page) => page,
                Err(PageError::Conn(e)) => return Err(self.failed(e)),
                Err(PageError::Reply(why)) => {
                    return Err(Stop::Fatal(unexpected(&self.context(), why)))
                }
            };
            self.read_ok_at.get_or_insert_with(Instant::now);
            if let Some(c) = self.position {
                expiry::judge(c, &page.state)
                    .map_err(|e| Stop::Fatal(expiry::to_error(self.family, c, e)))?;
            }
            let full = page.len() >= batch_size;
            if full {
                self.ask_page(conn, page.last_id());
                conn.flush().await.map_err(|e| self.failed(e))?;
            }
            let batch = self.process(page, full)?;
            if self.position > started_at {
                self.recovered(outage);
            }
            if !batch.is_empty() && self.tx.send(batch).await.is_err() {
                return Err(Stop::Closed);
            }
            if !full {
                return Ok(());
            }
        }
    }

    /// Turn a page into items: events that pass the filter and `Corrupt` for
    /// undecodable entries, with `CaughtUp` right after the last entry
    /// committed before the subscribe call, or a due `Checkpoint` at the end.
    fn process(&mut self, page: Page, full: bool) -> Result<Batch, Stop> {
        let mut batch = Vec::with_capacity(page.len() + 1);
        let mut last_item = None;
        for raw in page.entries() {
            let raw = raw.map_err(|why| Stop::Fatal(unexpected(&self.context(), why)))?;
            let id = raw.id;
            if let Some(target) = self.target.filter(|t| id > *t) {
                // Everything committed before the subscribe call is behind.
                let at = self.position.unwrap_or(target);
                batch.push(Ok(DeliveryItem::CaughtUp {
                    cursor: self.cursor(at),
                }));
                self.target = None;
                last_item = Some(at);
            }
            self.position = Some(id);
            let decoded = if raw.size > MAX_ENTRY_BYTES {
                Err(format!(
                    "entry of {} bytes is larger than the {MAX_ENTRY_BYTES} bytes ff reads",
                    raw.size
                ))
            } else {
                entry::decode(self.family, &raw.fields)
            };
            match decoded {
                Ok((draft, meta)) => {
                    if self
                        .filter
                        .matches_parts(draft.kind(), draft.execution_id(), &meta)
                    {
                        let at = TimestampMs(i64::try_from(id.ms).unwrap_or(i64::MAX));
                        let event = draft.into_event(self.cursor(id), at);
                        batch.push(Ok(DeliveryItem::Event { event, meta }));
                        last_item = Some(id);
                    }
                }
                Err(detail) => {
                    tracing::debug!(family = %self.family, id = %crate::id::format(id), %detail, "ff valkey: corrupt stream entry");
                    batch.push(Ok(DeliveryItem::Corrupt {
                        cursor: self.cursor(id),
                        detail,
                    }));
                    last_item = Some(id);
                }
            }
        }
        let position = *self.position.get_or_insert(page.state.last_generated);
        if let Some(target) = self.target {
            // Caught up at the target itself, or at the end of the stream
            // (the target's entry may be gone).
            if !full || position >= target {
                batch.push(Ok(DeliveryItem::CaughtUp {
                    cursor: self.cursor(position),
                }));
                self.target = None;
                last_item = Some(position);
            }
        }
        if last_item.is_none() && self.checkpoint_due(position) == Some(Duration::ZERO) {
            batch.push(Ok(DeliveryItem::Checkpoint {
                cursor: self.cursor(position),
            }));
            last_item = Some(position);
        }
        if let (Some(p), Some(Ok(item))) = (last_item, batch.last()) {
            self.sent = Sent {
                cursor: item.cursor().clone(),
                position: Some(p),
                at: Instant::now(),
            };
        }
        Ok(batch)
    }

    /// `Some(wait)` when the scanned position is past the last item yielded:
    /// a checkpoint is due after `wait` (zero: now).
    fn checkpoint_due(&self, position: ValkeyPosition) -> Option<Duration> {
        (Some(position) > self.sent.position).then(|| {
            self.inner
                .config
                .checkpoint_interval
                .saturating_sub(self.sent.at.elapsed())
        })
    }

    async fn send_checkpoint(&mut self, position: ValkeyPosition) -> Result<(), Stop> {
        let cursor = self.cursor(position);
        self.sent = Sent {
            cursor: cursor.clone(),
            position: Some(position),
            at: Instant::now(),
        };
        self.tx
            .send(vec![Ok(DeliveryItem::Checkpoint { cursor })])
            .await
            .map_err(|_| Stop::Closed)
    }

    /// Caught up: block until an entry after the scanned position exists,
    /// the safety-net poll passes, or a checkpoint falls due — with the
    /// next paired read queued behind the wait, so it is in flight after.
    async fn wait_live(&mut self, conn: &mut Conn, outage: &mut Outage) -> Result<(), Stop> {
        let position = self
            .position
            .expect("a position is known after the first read");
        if self.checkpoint_due(position) == Some(Duration::ZERO) {
            self.send_checkpoint(position).await?;
        }
        let block = match self.checkpoint_due(position) {
            Some(wait) => wait.min(self.inner.config.safety_net_poll),
            None => self.inner.config.safety_net_poll,
        };
        wakeup::push_wait(conn, &self.keys.stream, position, block);
        self.ask_page(conn, Some(position));
        conn.flush().await.map_err(|e| self.failed(e))?;
        let woke = wakeup::read_wait(conn, block + self.inner.config.command_timeout)
            .await
            .map_err(|e| self.failed(e))?;
        self.recovered(outage);
        if !woke && self.checkpoint_due(position) == Some(Duration::ZERO) {
            self.send_checkpoint(position).await?;
        }
        Ok(())
    }
}
