//! The subscription task: read, yield, wait for a wake-up, repeat —
//! reconnecting when the connection is lost.
//!
//! State is a scan position: every row at or before it has been read (and
//! yielded, unless filtered out). Each read returns rows after it from
//! transactions older than the snapshot's `xmin`, so nothing can later
//! commit behind it. After a short read the task waits for a notification,
//! a held-back re-read, a due checkpoint, or the safety-net poll.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ff_core::backend::DeliveryItem;
use ff_core::engine_error::EngineError;
use ff_core::stream_events::Family;
use ff_core::stream_subscribe::StreamCursor;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::error::{is_connection_error, map_sqlx};
use crate::history;
use crate::inner::Inner;
use crate::position::Pos;
use crate::resolve::expiry;
use crate::resolve::Resolved;
use crate::sql::SqlFilter;
use crate::subscription::connection::{timed_out, within, SubConnection, Wake};
use crate::subscription::reader::{read_batch, Batch, ReadError};
use crate::subscription::stream::Pending;
use sqlx::postgres::PgRow;

/// First pause between re-reads while rows are held back.
const HELD_BACK_FIRST_PAUSE: Duration = Duration::from_millis(1);

/// Where a subscription starts.
pub(crate) struct Start {
    /// Scan position; `None` reads from the oldest retained row.
    pub scan: Option<Pos>,
    /// The cursor a `StreamDisconnected` carries before anything is yielded.
    pub yielded: StreamCursor,
    /// Whether `CaughtUp` is already among `initial`.
    pub caught_up: bool,
    /// The newest row committed at subscribe time, when it lies after the
    /// start: `CaughtUp` comes once the stream has passed it.
    pub target: Option<Pos>,
    /// Items to yield first.
    pub initial: Vec<Pending>,
}

/// A running subscription.
pub(crate) struct Driver {
    inner: Arc<Inner>,
    family: Family,
    channel: String,
    sql: String,
    filter: SqlFilter,
    tx: mpsc::Sender<Vec<Pending>>,
    conn: Option<SubConnection>,
    /// Wake-ups from publishes through this backend instance.
    local: watch::Receiver<u64>,
    scan: Option<Pos>,
    /// The last cursor yielded (or the resolved start).
    yielded: StreamCursor,
    yielded_pos: Option<Pos>,
    yielded_at: Instant,
    caught_up: bool,
    target: Option<Pos>,
    held_since: Option<Instant>,
    next_held_warning: Option<Instant>,
    held_pause: Duration,
    /// A notification arrived while a batch waited for the consumer.
    woken_while_delivering: bool,
    /// The system identifier of the cluster the subscription reads; every
    /// reconnection must reach the same history (see `history`).
    system: u64,
    /// The server allows prepared transactions: wait no longer than
    /// `prepared_poll` between reads, as their commits wake no one.
    two_phase: bool,
}

/// What to do after a step.
enum Next {
    Continue,
    Stop,
}

/// Await `fut` unless the consumer drops the stream first.
async fn or_closed<T, F: Future<Output = T>>(tx: &mpsc::Sender<Vec<Pending>>, fut: F) -> Option<T> {
    tokio::select! {
        biased;
        _ = tx.closed() => None,
        out = fut => Some(out),
    }
}

impl Driver {
    /// A driver for `family` reading with `sql`, on `conn`, from `start`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        inner: Arc<Inner>,
        family: Family,
        sql: String,
        filter: SqlFilter,
        conn: SubConnection,
        start: &Start,
        system: u64,
        tx: mpsc::Sender<Vec<Pending>>,
    ) -> Self {
        let channel = inner.names.channel(family);
        let local = inner.notifier.local_wakeups(family);
        Self {
            inner,
            family,
            channel,
            sql,
            filter,
            tx,
            conn: Some(conn),
            local,
            scan: start.scan,
            yielded: start.yielded.clone(),
            yielded_pos: start.scan,
            yielded_at: Instant::now(),
            caught_up: start.caught_up,
            target: start.target,
            held_since: None,
            next_held_warning: None,
            held_pause: HELD_BACK_FIRST_PAUSE,
            woken_while_delivering: false,
            system,
            two_phase: false,
        }
    }

    /// Whether the server allows prepared transactions (see `two_phase`).
    pub fn with_two_phase(mut self, two_phase: bool) -> Self {
        self.two_phase = two_phase;
        self
    }

    /// Run until the consumer goes away or a terminal error is yielded,
    /// then release the connection.
    pub async fn run(mut self, initial: Vec<Pending>) {
        if initial.is_empty() || self.deliver(initial).await {
            while let Next::Continue = self.step().await {}
        }
        if let Some(conn) = self.conn.take() {
            conn.close().await;
        }
        tracing::debug!(family = %self.family, "ff: postgres subscription ended");
    }

    /// One read, its items, and the wait that follows a short read.
    async fn step(&mut self) -> Next {
        let Some(conn) = self.conn.as_mut() else {
            return self.reconnect().await;
        };
        let config = &self.inner.config;
        let batch_size = config.read_batch;
        conn.drain_notifications();
        self.local.borrow_and_update();
        let after = self.scan.unwrap_or(Pos::ORIGIN);
        let read = within(
            config.read_timeout,
            "reading the outbox",
            read_batch(
                conn.executor(),
                &self.sql,
                self.family,
                &self.filter,
                after,
                batch_size,
            ),
        );
        let mut batch = match or_closed(&self.tx, read).await {
            None => return Next::Stop,
            Some(Ok(batch)) => batch,
            Some(Err(ReadError::Sql(e))) if is_connection_error(&e) => return self.lost(e).await,
            Some(Err(ReadError::Sql(e))) => return self.fail(map_sqlx(e)).await,
            Some(Err(ReadError::Engine(e))) => return self.fail(e).await,
        };
        if let Some(scan) = self.scan {
            if let Some(detail) = expiry(scan, batch.xmax, batch.horizon) {
                let oldest = batch.horizon.map_or_else(StreamCursor::beginning, |h| {
                    h.cursor(self.family, self.system)
                });
                let err = EngineError::CursorExpired {
                    cursor: self.yielded.clone(),
                    oldest: Some(oldest),
                    detail,
                };
                return self.fail(err).await;
            }
        }
        let full = batch.items.len() >= batch_size;
        let now = Instant::now();
        let items = std::mem::take(&mut batch.items);
        let mut out = self.take_items(items, now);
        if !full {
            self.reached_frontier(&batch, now, &mut out);
        }
        if out.is_empty() {
            if let Some(checkpoint) = self.checkpoint(now) {
                out.push(checkpoint);
            }
        }
        if !out.is_empty() && !self.deliver(out).await {
            return Next::Stop;
        }
        if full || std::mem::take(&mut self.woken_while_delivering) {
            return Next::Continue;
        }
        // Waiting no longer than the liveness interval makes the next read
        // the round trip that proves the server still answers.
        let timeout = self
            .wait_timeout(&batch, now)
            .min(self.inner.config.liveness_interval);
        let Some(conn) = self.conn.as_mut() else {
            return Next::Continue;
        };
        let local = &mut self.local;
        let wake = async {
            tokio::select! {
                woke = conn.wait(timeout) => woke,
                changed = local.changed() => match changed {
                    Ok(()) => Ok(Wake::Notified),
                    // The backend is gone; only the connection can wake us.
                    Err(_) => conn.wait(timeout).await,
                },
            }
        };
        match or_closed(&self.tx, wake).await {
            None => Next::Stop,
            Some(Ok(_)) => Next::Continue,
            Some(Err(e)) if is_connection_error(&e) => self.lost(e).await,
            Some(Err(e)) => self.fail(map_sqlx(e)).await,
        }
    }

    /// Hand `out` to the consumer; `false` when the consumer is gone.
    ///
    /// While the consumer is slow to take it, keep reading the connection:
    /// a listener that is not read stops the server's notification queue
    /// from advancing past it, and when that cluster-wide queue is full
    /// every producer's `COMMIT` fails. The notifications read meanwhile
    /// are only wake-ups; one is remembered so the next step reads again
    /// at once instead of waiting.
    async fn deliver(&mut self, out: Vec<Pending>) -> bool {
        let Some(conn) = self.conn.as_mut() else {
            return self.tx.send(out).await.is_ok();
        };
        let send = self.tx.send(out);
        tokio::pin!(send);
        let lost = loop {
            tokio::select! {
                biased;
                sent = &mut send => return sent.is_ok(),
                woke = conn.wait(self.inner.config.safety_net_poll) => match woke {
                    Ok(Wake::Notified) => self.woken_while_delivering = true,
                    Ok(Wake::TimedOut) => {}
                    Err(e) => break e,
                },
            }
        };
        tracing::warn!(family = %self.family, error = %lost, "ff: postgres subscription lost its connection while its consumer was busy");
        if let Some(conn) = self.conn.take() {
            conn.abandon();
        }
        send.await.is_ok()
    }

    /// Yield a batch's rows and advance the scan past them; `CaughtUp`
    /// goes before the first row newer than the subscribe-time head.
    fn take_items(&mut self, items: Vec<(Pos, PgRow)>, now: Instant) -> Vec<Pending> {
        let mut out = Vec::with_capacity(items.len() + 1);
        let mut last = None;
        for (pos, row) in items {
            if let Some(target) = self.target.filter(|t| !self.caught_up && pos > *t) {
                self.caught_up_at(target, now, &mut out);
            }
            last = Some(pos);
            out.push(Pending::Row(row));
        }
        if let Some(pos) = last {
            self.scan = Some(pos);
            self.yielded_pos = Some(pos);
            self.yielded = pos.cursor(self.family, self.system);
            self.yielded_at = now;
        }
        out
    }

    /// A short read saw every row below the snapshot's `xmin`: advance a
    /// filtered scan past the rows it skipped, and yield `CaughtUp` once
    /// the subscribe-time head lies below that frontier.
    fn reached_frontier(&mut self, batch: &Batch, now: Instant, out: &mut Vec<Pending>) {
        if let Some(scanned) = batch.scanned {
            if Some(scanned) > self.scan {
                self.scan = Some(scanned);
            }
        }
        let frontier = Pos::frontier(batch.xmin);
        if let Some(target) = self.target.filter(|t| !self.caught_up && frontier >= *t) {
            self.caught_up_at(target, now, out);
        }
        self.note_held(batch, now);
    }

    /// Yield `CaughtUp` at `target`: every row up to it has been read.
    fn caught_up_at(&mut self, target: Pos, now: Instant, out: &mut Vec<Pending>) {
        let cursor = target.cursor(self.family, self.system);
        self.caught_up = true;
        if Some(target) > self.scan {
            self.scan = Some(target);
        }
        if Some(target) > self.yielded_pos {
            self.yielded_pos = Some(target);
            self.yielded = cursor.clone();
        }
        self.yielded_at = now;
        out.push(Pending::Ready(Ok(DeliveryItem::CaughtUp { cursor })));
    }

    /// A `Checkpoint` when rows were scanned past the last yielded
    /// position and nothing was yielded for the checkpoint interval.
    fn checkpoint(&mut self, now: Instant) -> Option<Pending> {
        let scan = self.scan?;
        if Some(scan) <= self.yielded_pos
            || now.duration_since(self.yielded_at) < self.inner.config.checkpoint_interval
        {
            return None;
        }
        let cursor = scan.cursor(self.family, self.system);
        self.yielded = cursor.clone();
        self.yielded_pos = Some(scan);
        self.yielded_at = now;
        Some(Pending::Ready(Ok(DeliveryItem::Checkpoint { cursor })))
    }

    /// Track how long delivery has been held back, warning past the threshold.
    fn note_held(&mut self, batch: &Batch, now: Instant) {
        if !batch.held {
            self.held_since = None;
            self.next_held_warning = None;
            self.held_pause = HELD_BACK_FIRST_PAUSE;
            return;
        }
        let since = *self.held_since.get_or_insert(now);
        let threshold = self.inner.config.held_back_warning;
        let held_for = now.duration_since(since);
        if held_for >= threshold && self.next_held_warning.is_none_or(|t| now >= t) {
            tracing::warn!(
                family = %self.family,
                held_for_ms = held_for.as_millis() as u64,
                oldest_open_xid = batch.xmin,
                "ff: committed events are held back by an older open transaction; \
                 they are delivered when it ends (see PostgresBackend::held_back)"
            );
            self.next_held_warning = Some(now + threshold);
        }
    }

    /// How long to wait for a wake-up after a short read.
    fn wait_timeout(&mut self, batch: &Batch, now: Instant) -> Duration {
        let config = &self.inner.config;
        let mut timeout = config.safety_net_poll;
        if self.two_phase {
            timeout = timeout.min(config.prepared_poll);
        }
        if batch.held {
            timeout = timeout.min(self.held_pause);
            self.held_pause = (self.held_pause * 2).min(config.held_back_poll);
        }
        if self.scan > self.yielded_pos {
            let due = self.yielded_at + config.checkpoint_interval;
            timeout = timeout.min(due.saturating_duration_since(now));
        }
        timeout
    }

    /// Yield a terminal error and stop.
    async fn fail(&mut self, err: EngineError) -> Next {
        let _ = self
            .tx
            .send(vec![Pending::Ready(Err::<DeliveryItem, _>(err))])
            .await;
        Next::Stop
    }

    /// The connection is gone: drop it and reconnect.
    async fn lost(&mut self, e: sqlx::Error) -> Next {
        tracing::warn!(family = %self.family, error = %e, "ff: postgres subscription lost its connection; reconnecting");
        if let Some(conn) = self.conn.take() {
            conn.abandon();
        }
        self.reconnect().await
    }

    /// Whether the server `conn` reached shares the history this
    /// subscription has read (a failover may have reached a copy that
    /// lacks it): `Some(CursorExpired)` when it does not. Also whether
    /// that server allows prepared transactions.
    async fn same_history(
        &self,
        conn: &mut SubConnection,
    ) -> Result<(Option<EngineError>, bool), ReadError> {
        let limit = self.inner.config.read_timeout;
        let read = Resolved::read(conn.executor(), &self.inner.names, self.family, self.scan);
        let resolved = match tokio::time::timeout(limit, read).await {
            Err(_) => return Err(ReadError::Sql(timed_out(limit, "checking its history"))),
            Ok(Err(EngineError::Transport { source, .. })) => {
                return Err(ReadError::Sql(sqlx::Error::Io(std::io::Error::other(
                    source.to_string(),
                ))))
            }
            Ok(Err(e)) => return Err(ReadError::Engine(e)),
            Ok(Ok(resolved)) => resolved,
        };
        let detail = match self.scan {
            Some(scan) => history::unproven(scan, Some(self.system), &resolved),
            None if resolved.system != self.system => {
                history::unproven(Pos::ORIGIN, Some(self.system), &resolved)
            }
            None => None,
        };
        let expired = detail.map(|detail| EngineError::CursorExpired {
            cursor: self.yielded.clone(),
            oldest: Some(history::oldest(&resolved, self.family)),
            detail,
        });
        Ok((expired, resolved.two_phase))
    }

    /// Reconnect with the policy's backoff; yield `StreamDisconnected`
    /// when it gives up.
    async fn reconnect(&mut self) -> Next {
        let config = &self.inner.config;
        let mut backoff = config.reconnect.start();
        let started = Instant::now();
        loop {
            let Some(delay) = backoff.next_delay() else {
                tracing::warn!(
                    family = %self.family,
                    attempts = backoff.attempts(),
                    "ff: postgres subscription gave up reconnecting"
                );
                let cursor = self.yielded.clone();
                return self.fail(EngineError::StreamDisconnected { cursor }).await;
            };
            if or_closed(&self.tx, tokio::time::sleep(delay))
                .await
                .is_none()
            {
                return Next::Stop;
            }
            let remaining = config
                .reconnect
                .max_elapsed
                .map_or(config.connect_timeout, |max| {
                    max.saturating_sub(started.elapsed())
                });
            let timeout = remaining
                .min(config.connect_timeout)
                .max(Duration::from_millis(100));
            let open = SubConnection::open(&self.inner.sub_options, &self.channel, timeout);
            let mut conn = match or_closed(&self.tx, open).await {
                None => return Next::Stop,
                Some(Ok(conn)) => conn,
                Some(Err(e)) => {
                    tracing::debug!(family = %self.family, error = %e, "ff: reconnect attempt failed");
                    continue;
                }
            };
            match or_closed(&self.tx, self.same_history(&mut conn)).await {
                None => return Next::Stop,
                Some(Ok((None, two_phase))) => {
                    self.two_phase = two_phase;
                    tracing::info!(
                        family = %self.family,
                        attempts = backoff.attempts(),
                        "ff: postgres subscription reconnected"
                    );
                    self.conn = Some(conn);
                    return Next::Continue;
                }
                Some(Ok((Some(expired), _))) => {
                    conn.close().await;
                    return self.fail(expired).await;
                }
                Some(Err(ReadError::Sql(e))) if is_connection_error(&e) => {
                    tracing::debug!(family = %self.family, error = %e, "ff: reconnect attempt failed");
                    conn.abandon();
                }
                Some(Err(ReadError::Sql(e))) => return self.fail(map_sqlx(e)).await,
                Some(Err(ReadError::Engine(e))) => return self.fail(e).await,
            }
        }
    }
}
