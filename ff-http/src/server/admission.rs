//! Admission of accepted connections under a cap.
//!
//! Invariant: at most `max_connections` connections are served at once
//! (each holds a permit for its whole life). When the cap is reached, the
//! connection that has been evictable longest — a silent or trickling
//! client, an idle keep-alive, or one still sending the body of an
//! unauthenticated request — is evicted to make room, so sockets that
//! prove no right can never lock out a client with a real request. When
//! every connection serves an authorised request, the newcomer gets a
//! prompt `503` (over TLS after a handshake bounded in time). Connections
//! waiting for an evicted one's permit, and rejections being answered, are
//! bounded too, so a flood costs a bounded number of file descriptors.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::phase::ConnPhase;

/// Connections that may wait at once for an evicted connection's permit,
/// and rejections that may be in progress at once.
const SIDE_SLOTS: usize = 64;
/// How long a newcomer waits for an evicted connection to release its slot.
const EVICTION_WAIT: Duration = Duration::from_secs(1);
/// How long a rejected connection's request is drained after the 503, so
/// the client reads the answer instead of a reset.
const REJECT_LINGER: Duration = Duration::from_millis(200);

/// A served connection's slot: its permit and its registry entry, both
/// released when dropped.
pub(crate) struct Slot {
    _permit: OwnedSemaphorePermit,
    id: u64,
    registry: Arc<Admission>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.registry.live().remove(&self.id);
    }
}

/// What to do with an accepted connection.
pub(crate) enum Admit {
    /// Serve it in this slot.
    Now(Slot),
    /// An idle connection was asked to close; wait for its slot.
    AfterEviction(OwnedSemaphorePermit),
    /// No room: answer 503 and close.
    Reject(OwnedSemaphorePermit),
    /// Not even room to answer: close at once.
    Drop,
}

/// The cap and the registry of served connections.
pub(crate) struct Admission {
    max: usize,
    permits: Arc<Semaphore>,
    side: Arc<Semaphore>,
    live: Mutex<HashMap<u64, Arc<ConnPhase>>>,
    next_id: AtomicU64,
}

impl Admission {
    pub fn new(max_connections: usize) -> Arc<Self> {
        let max = max_connections.max(1);
        Arc::new(Self {
            max,
            permits: Arc::new(Semaphore::new(max)),
            side: Arc::new(Semaphore::new(SIDE_SLOTS)),
            live: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
        })
    }

    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<ConnPhase>>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cap.
    pub fn max(&self) -> usize {
        self.max
    }

    fn slot(self: &Arc<Self>, permit: OwnedSemaphorePermit, phase: &Arc<ConnPhase>) -> Slot {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.live().insert(id, phase.clone());
        Slot {
            _permit: permit,
            id,
            registry: self.clone(),
        }
    }

    /// Decide about a connection just accepted, whose phase is `phase`.
    pub fn admit(self: &Arc<Self>, phase: &Arc<ConnPhase>) -> Admit {
        if let Ok(permit) = self.permits.clone().try_acquire_owned() {
            return Admit::Now(self.slot(permit, phase));
        }
        let Ok(side) = self.side.clone().try_acquire_owned() else {
            return Admit::Drop;
        };
        if self.evict_longest_idle() {
            Admit::AfterEviction(side)
        } else {
            Admit::Reject(side)
        }
    }

    /// Wait (briefly) for a slot freed by an eviction.
    pub async fn slot_after_eviction(self: &Arc<Self>, phase: &Arc<ConnPhase>) -> Option<Slot> {
        let permit = tokio::time::timeout(EVICTION_WAIT, self.permits.clone().acquire_owned())
            .await
            .ok()?
            .ok()?;
        Some(self.slot(permit, phase))
    }

    /// Ask the connection evictable the longest to close; `false` if none is.
    fn evict_longest_idle(&self) -> bool {
        let live = self.live();
        let oldest = live
            .values()
            .filter(|p| !p.eviction_asked())
            .filter_map(|p| Some((p.evictable_since()?, p)))
            .min_by_key(|(since, _)| *since);
        match oldest {
            Some((_, phase)) => {
                phase.evict();
                true
            }
            None => false,
        }
    }
}

/// Answer `503` on a connection that found no room, and close.
pub(crate) async fn reject<S>(mut tcp: S, max: usize, retry_after: Duration)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let body = format!(
        "{{\"error\":\"too_many_connections\",\"detail\":\"the server holds its maximum of {max} connections, all busy; retry later\"}}"
    );
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncache-control: no-store\r\nretry-after: {}\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        retry_after.as_secs().max(1),
        body.len()
    );
    let answer = async {
        tcp.write_all(head.as_bytes()).await?;
        tcp.write_all(body.as_bytes()).await?;
        tcp.shutdown().await?;
        let mut sink = [0u8; 4096];
        while tcp.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    };
    let _ = tokio::time::timeout(REJECT_LINGER, answer).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn at_the_cap_the_longest_idle_connection_is_evicted_and_busy_ones_never() {
        let admission = Admission::new(2);
        let older = ConnPhase::accepted();
        let Admit::Now(_a) = admission.admit(&older) else {
            panic!("first connection must be admitted");
        };
        let busy = ConnPhase::accepted();
        let Admit::Now(_b) = admission.admit(&busy) else {
            panic!("second connection must be admitted");
        };
        let _request = busy.begin_request();
        let third = ConnPhase::accepted();
        assert!(matches!(admission.admit(&third), Admit::AfterEviction(_)));
        assert!(older.should_close_for_eviction());
        assert!(!busy.eviction_asked());
        // The evicted one still holds its slot and the other is busy.
        assert!(matches!(admission.admit(&third), Admit::Reject(_)));
    }
}
