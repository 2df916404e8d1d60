//! Waking subscribers after ff's own commits.
//!
//! ff's pooled connections set `ff.defer_notify = on`, so the outbox
//! trigger does not `NOTIFY` inside their transactions (a pending `NOTIFY`
//! holds a cluster-wide lock from commit through the WAL flush, which
//! serialises concurrent committers). Instead, after a publish commits,
//! the family is marked dirty and one background task sends
//! `pg_notify('<schema>.<table>', '')` for every dirty family, outside any
//! writing transaction.
//!
//! A notification is a transaction of its own, and under a steady stream
//! of commits one per commit cost publishers about a tenth of their
//! throughput. So notifications coalesce:
//! - one notification statement is in flight at a time; commits meanwhile
//!   join the next one;
//! - before sending, the task waits while other publishes are in flight
//!   (their commits usually follow within a round trip), for a few rounds
//!   of them, so one notification covers them all. An idle publisher's
//!   commit is notified at once, as nothing else is in flight, and no
//!   wait for others lasts longer than about [`MAX_COALESCE`]. (A fixed
//!   minimum interval between notifications was measured too: tokio's
//!   millisecond timer made it add 1–2 ms to cross-process latency even
//!   at moderate rates, where nothing needs coalescing.)
//!
//! Subscriptions of the same backend instance are also woken directly, in
//! process, without waiting for the notification's round trip through the
//! server; subscribers elsewhere rely on the `NOTIFY`.
//!
//! The invariant: a publish that committed on the server is notified, even
//! when its caller never saw the commit. A publish that ends without its
//! result (cancelled, timed out, failed) hands its connection to a task
//! that waits until the server has finished the statement (a `Sync` round
//! trip on it), then marks its families — a spurious wake-up is harmless,
//! a missing one is not. [`Notifier::flush`] (from `close`) and dropping
//! the last handle send whatever is pending before the task ends, each
//! bounded by the pool's timeouts.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ff_core::engine_error::EngineError;
use ff_core::stream_events::Family;
use sqlx::Connection;
use tokio::sync::{watch, Mutex, Notify};

use crate::pool::{with_conn, ConnPool, PooledConn};
use crate::schema::SchemaNames;

/// One notification per channel. A `NOTIFY` gives its transaction an id,
/// so its commit would wait for a WAL flush like a publish's and compete
/// with publishers for the disk; a notification needs no durability, so
/// its transaction commits asynchronously (`synchronous_commit = off` for
/// that transaction only).
const NOTIFY: &str = "SELECT set_config('synchronous_commit', 'off', true), pg_notify(c, '') \
                      FROM unnest($1::text[]) AS c";

/// Shared state between publishers, settling tasks and the notifier task.
struct Shared {
    pool: Arc<ConnPool>,
    names: SchemaNames,
    /// Per family (by [`Family::index`]): a counter bumped after each commit.
    local: Vec<watch::Sender<u64>>,
    /// One bit per family (by cursor byte) with a commit not yet notified.
    dirty: AtomicU8,
    /// Held while taking `dirty` and sending it, so a flush that takes it
    /// next knows every earlier send is done.
    sending: Mutex<()>,
    /// Publishes that ended without their result whose statements the
    /// server may still be running; signalled on `settled` as each ends.
    settling: AtomicU64,
    settled: Notify,
    wake: Notify,
    stopped: AtomicBool,
    /// Publishes between taking a pooled connection and finishing
    /// (including any waiting on a lock in the server).
    in_flight: AtomicU64,
    /// Publishes finished (committed or failed) since the start.
    finished: AtomicU64,
    /// The `finished` count the notifier waits for; `u64::MAX` while it
    /// waits for none. Publishes signal `finish` only on reaching it, so
    /// a busy publisher does not wake the notifier at every commit.
    wake_at: AtomicU64,
    /// Signalled when a publish finishes at or past `wake_at`, or is the
    /// last in flight while the notifier waits, and when the notifier
    /// stops.
    finish: Notify,
}

impl Shared {
    fn new(pool: Arc<ConnPool>, names: SchemaNames) -> Self {
        Self {
            pool,
            names,
            local: Family::ALL.iter().map(|_| watch::channel(0).0).collect(),
            dirty: AtomicU8::new(0),
            sending: Mutex::new(()),
            settling: AtomicU64::new(0),
            settled: Notify::new(),
            wake: Notify::new(),
            stopped: AtomicBool::new(false),
            in_flight: AtomicU64::new(0),
            finished: AtomicU64::new(0),
            wake_at: AtomicU64::new(u64::MAX),
            finish: Notify::new(),
        }
    }
}

/// Handle publishers use to request a wake-up; dropping the last handle
/// stops the task.
pub(crate) struct Notifier {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier").finish_non_exhaustive()
    }
}

fn bit(family: Family) -> u8 {
    1 << family.cursor_byte()
}

impl Shared {
    /// The families of `bits` may have new committed rows: wake their
    /// subscribers here, and mark them for the next `NOTIFY`.
    fn mark(&self, bits: u8) {
        for family in Family::ALL {
            if bits & bit(*family) != 0 {
                self.local[family.index()].send_modify(|n| *n = n.wrapping_add(1));
            }
        }
        self.dirty.fetch_or(bits, Ordering::SeqCst);
    }
}

impl Notifier {
    /// Start the notifier task on `pool` for the channels in `names`.
    pub fn spawn(pool: Arc<ConnPool>, names: SchemaNames) -> Self {
        let shared = Arc::new(Shared::new(pool, names));
        tokio::spawn(run(shared.clone()));
        Self { shared }
    }

    /// Take a pooled connection for a publish that writes rows of
    /// `families`; report its commit through the returned guard. Dropping
    /// the guard (an error, a cancelled call) reports that it ended
    /// without seeing one.
    pub async fn publishing(
        &self,
        families: impl IntoIterator<Item = Family>,
    ) -> Result<Publishing, EngineError> {
        let conn = self.shared.pool.acquire().await?;
        self.shared.in_flight.fetch_add(1, Ordering::SeqCst);
        Ok(Publishing {
            shared: self.shared.clone(),
            bits: families.into_iter().fold(0, |bits, f| bits | bit(f)),
            conn: Some(conn),
        })
    }

    /// In-process wake-ups for a subscription of `family`.
    pub fn local_wakeups(&self, family: Family) -> watch::Receiver<u64> {
        self.shared.local[family.index()].subscribe()
    }

    /// Send every pending notification now, after the statements of
    /// publishes that ended without their result have finished; bounded
    /// by the pool's timeouts.
    pub async fn flush(&self) {
        flush(&self.shared).await;
    }
}

/// A publish in flight, holding its pooled connection; see
/// [`Notifier::publishing`].
pub(crate) struct Publishing {
    shared: Arc<Shared>,
    bits: u8,
    conn: Option<PooledConn>,
}

impl Publishing {
    /// The connection to publish on.
    pub fn conn(&mut self) -> &mut sqlx::PgConnection {
        self.conn
            .as_mut()
            .expect("connection present until the publish ends")
    }

    /// The publish committed: return the connection to the pool and wake
    /// the subscribers of its families, here and (by `NOTIFY`) everywhere.
    pub fn committed(mut self) {
        if let Some(conn) = self.conn.take() {
            conn.release();
        }
        let shared = self.shared.clone();
        shared.mark(self.bits);
        // Finish after marking, so a notifier this finish ends the wait of
        // sends these families too; and before waking it, so it does not
        // wait for this very publish.
        drop(self);
        shared.wake.notify_one();
    }
}

/// Wait until the server has finished whatever `conn` last sent (a
/// statement, a `COMMIT`), at most `bound`; then mark `bits`. Whether it
/// committed is unknown, so the families are marked either way.
async fn settle(shared: Arc<Shared>, mut conn: PooledConn, bits: u8, bound: Duration) {
    let _ = tokio::time::timeout(bound, conn.ping()).await;
    drop(conn);
    shared.mark(bits);
    shared.wake.notify_one();
    shared.settling.fetch_sub(1, Ordering::SeqCst);
    shared.settled.notify_waiters();
}

impl Drop for Publishing {
    fn drop(&mut self) {
        let shared = &self.shared;
        if let Some(conn) = self.conn.take() {
            // Ended without its result: the server may still commit.
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    shared.settling.fetch_add(1, Ordering::SeqCst);
                    let bound = shared.pool.query_timeout();
                    runtime.spawn(settle(shared.clone(), conn, self.bits, bound));
                }
                Err(_) => {
                    drop(conn);
                    shared.mark(self.bits);
                    shared.wake.notify_one();
                }
            }
        }
        // Sequentially consistent with the notifier's store of `wake_at`
        // and its check of these counts: one of the two sees the other.
        let left = shared.in_flight.fetch_sub(1, Ordering::SeqCst) - 1;
        let finished = shared.finished.fetch_add(1, Ordering::SeqCst) + 1;
        let wake_at = shared.wake_at.load(Ordering::SeqCst);
        if finished >= wake_at || (left == 0 && wake_at != u64::MAX) {
            shared.finish.notify_one();
        }
    }
}

/// How many publishes per publish in flight a notification waits for.
/// Four single-event publishers' throughput, as a share of theirs with no
/// notifications at all, measured: 0.90× notifying at once, 0.94× after
/// one round, 0.97× after three.
const COALESCE_ROUNDS: u64 = 3;

/// The longest one coalescing wait lasts (tokio's millisecond timer can
/// stretch it to about 3 ms): a long batch, or a publish stuck on a lock,
/// must not hold back the wake-up for another's commit. A commit made
/// while a notification is being sent waits for that send, then for one
/// such wait.
const MAX_COALESCE: Duration = Duration::from_millis(2);

/// Wait until [`COALESCE_ROUNDS`] times as many publishes as are on the
/// wire now have finished, so that their commits share the next
/// notification; at most [`MAX_COALESCE`], and no longer than until none
/// is in flight.
async fn await_in_flight(shared: &Shared) {
    let waiting = shared.in_flight.load(Ordering::SeqCst);
    if waiting == 0 {
        return;
    }
    let target = shared.finished.load(Ordering::SeqCst) + waiting * COALESCE_ROUNDS;
    shared.wake_at.store(target, Ordering::SeqCst);
    let _ = tokio::time::timeout(MAX_COALESCE, finished_up_to(shared, target)).await;
    shared.wake_at.store(u64::MAX, Ordering::SeqCst);
}

/// Until `target` publishes have finished, none is in flight, or the
/// notifier stops. (`finish` keeps a signal sent between the check and
/// the wait, so none is lost; a stale one only costs another check.)
async fn finished_up_to(shared: &Shared, target: u64) {
    while shared.finished.load(Ordering::SeqCst) < target
        && shared.in_flight.load(Ordering::SeqCst) != 0
        && !shared.stopped.load(Ordering::Acquire)
    {
        shared.finish.notified().await;
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::Release);
        self.shared.wake.notify_one();
        self.shared.finish.notify_one();
    }
}

/// Take the dirty families and notify them; on failure they stay dirty.
async fn send_dirty(shared: &Shared) -> Result<(), EngineError> {
    let _sending = shared.sending.lock().await;
    let dirty = shared.dirty.swap(0, Ordering::AcqRel);
    if dirty == 0 {
        return Ok(());
    }
    let channels: Vec<String> = Family::ALL
        .iter()
        .filter(|f| dirty & bit(**f) != 0)
        .map(|f| shared.names.channel(*f))
        .collect();
    let sent: Result<_, EngineError> = async {
        with_conn!(shared.pool, |conn| {
            sqlx::query(NOTIFY)
                .bind(&channels)
                .execute(conn)
                .await
                .map_err(crate::error::map_sqlx)
        })
    }
    .await;
    if sent.is_err() {
        shared.dirty.fetch_or(dirty, Ordering::AcqRel);
    }
    sent.map(drop)
}

/// Wait for publishes that ended without their result to settle (each is
/// bounded), then send what is pending.
async fn flush(shared: &Shared) {
    loop {
        let settled = shared.settled.notified();
        tokio::pin!(settled);
        settled.as_mut().enable();
        if shared.settling.load(Ordering::SeqCst) == 0 {
            break;
        }
        settled.await;
    }
    if let Err(e) = send_dirty(shared).await {
        tracing::warn!(error = %e, "ff: could not send pending notifications; subscribers elsewhere find the events by their safety-net poll");
    }
}

async fn run(shared: Arc<Shared>) {
    let mut retry = Duration::from_millis(10);
    'running: loop {
        shared.wake.notified().await;
        loop {
            if shared.stopped.load(Ordering::Acquire) {
                break 'running;
            }
            // Nothing to send (the usual case right after a send): wait
            // for the next commit's wake-up rather than for publishes.
            if shared.dirty.load(Ordering::SeqCst) == 0 {
                break;
            }
            await_in_flight(&shared).await;
            if shared.stopped.load(Ordering::Acquire) {
                break 'running;
            }
            match send_dirty(&shared).await {
                Ok(()) => retry = Duration::from_millis(10),
                Err(e) => {
                    // Subscribers still find the rows by their safety-net
                    // poll; keep trying so they do not have to wait for it.
                    tracing::debug!(error = %e, "ff: post-commit notification failed; retrying");
                    tokio::time::sleep(retry).await;
                    retry = (retry * 2).min(Duration::from_secs(1));
                }
            }
        }
    }
    // The last handle is gone: what was committed is still notified.
    flush(&shared).await;
}
