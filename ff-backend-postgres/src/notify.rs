//! Waking subscribers after ff's own commits.
//!
//! ff's pooled connections set `ff.defer_notify = on`, so the outbox
//! trigger does not `NOTIFY` inside their transactions (a pending `NOTIFY`
//! holds a cluster-wide lock from commit through the WAL flush, which
//! serialises concurrent committers). Instead, after a publish commits,
//! the family is marked dirty and one background task sends
//! `pg_notify('<schema>.<table>', '')` for every dirty family, outside any
//! writing transaction. One notification statement is in flight at a
//! time; commits meanwhile coalesce into the next one, so a busy publisher
//! costs the server at most one notification per round trip. (A minimum
//! interval between them was measured too: tokio's millisecond timer made
//! it add 1–2 ms to cross-process latency at moderate rates.)
//!
//! Subscriptions of the same backend instance are also woken directly, in
//! process, without waiting for the notification's round trip through the
//! server; subscribers elsewhere rely on the `NOTIFY`.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ff_core::stream_events::Family;
use tokio::sync::{watch, Notify};

use crate::pool::{with_conn, ConnPool};
use crate::schema::SchemaNames;

/// One notification per channel. A `NOTIFY` gives its transaction an id,
/// so its commit would wait for a WAL flush like a publish's and compete
/// with publishers for the disk; a notification needs no durability, so
/// its transaction commits asynchronously (`synchronous_commit = off` for
/// that transaction only).
const NOTIFY: &str = "SELECT set_config('synchronous_commit', 'off', true), pg_notify(c, '') \
                      FROM unnest($1::text[]) AS c";

/// Shared state between publishers and the notifier task.
#[derive(Debug, Default)]
struct Shared {
    /// One bit per family (by cursor byte) with a commit not yet notified.
    dirty: AtomicU8,
    wake: Notify,
    stopped: AtomicBool,
}

/// Handle publishers use to request a wake-up; dropping the last handle
/// stops the task.
#[derive(Debug)]
pub(crate) struct Notifier {
    shared: Arc<Shared>,
    /// Per family (by cursor byte − 1): a counter bumped after each commit.
    local: Vec<watch::Sender<u64>>,
}

fn bit(family: Family) -> u8 {
    1 << family.cursor_byte()
}

impl Notifier {
    /// Start the notifier task on `pool` for the channels in `names`.
    pub fn spawn(pool: Arc<ConnPool>, names: SchemaNames) -> Self {
        let shared = Arc::new(Shared::default());
        tokio::spawn(run(shared.clone(), pool, names));
        let local = Family::ALL.iter().map(|_| watch::channel(0).0).collect();
        Self { shared, local }
    }

    fn local(&self, family: Family) -> &watch::Sender<u64> {
        &self.local[usize::from(family.cursor_byte()) - 1]
    }

    /// `family` has new committed rows: wake its subscribers, here and
    /// (by `NOTIFY`) everywhere.
    pub fn committed(&self, family: Family) {
        self.local(family).send_modify(|n| *n = n.wrapping_add(1));
        self.shared.dirty.fetch_or(bit(family), Ordering::AcqRel);
        self.shared.wake.notify_one();
    }

    /// In-process wake-ups for a subscription of `family`.
    pub fn local_wakeups(&self, family: Family) -> watch::Receiver<u64> {
        self.local(family).subscribe()
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::Release);
        self.shared.wake.notify_one();
    }
}

async fn run(shared: Arc<Shared>, pool: Arc<ConnPool>, names: SchemaNames) {
    let mut retry = Duration::from_millis(10);
    loop {
        shared.wake.notified().await;
        loop {
            if shared.stopped.load(Ordering::Acquire) {
                return;
            }
            let dirty = shared.dirty.swap(0, Ordering::AcqRel);
            if dirty == 0 {
                break;
            }
            let channels: Vec<String> = Family::ALL
                .iter()
                .filter(|f| dirty & bit(**f) != 0)
                .map(|f| names.channel(*f))
                .collect();
            let sent: Result<_, ff_core::engine_error::EngineError> = async {
                with_conn!(pool, |conn| {
                    sqlx::query(NOTIFY)
                        .bind(&channels)
                        .execute(conn)
                        .await
                        .map_err(crate::error::map_sqlx)
                })
            }
            .await;
            match sent {
                Ok(_) => retry = Duration::from_millis(10),
                Err(e) => {
                    // Subscribers still find the rows by their safety-net
                    // poll; keep trying so they do not have to wait for it.
                    tracing::debug!(error = %e, "ff: post-commit notification failed; retrying");
                    shared.dirty.fetch_or(dirty, Ordering::AcqRel);
                    tokio::time::sleep(retry).await;
                    retry = (retry * 2).min(Duration::from_secs(1));
                }
            }
        }
    }
}
