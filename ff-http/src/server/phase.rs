//! What one HTTP connection is doing, and when it must be closed.
//!
//! Invariant: a connection with no request in flight always has a deadline,
//! and is closed when it passes:
//! - a fresh connection must deliver its first complete request head within
//!   the header-read timeout of being accepted (silent or trickling alike);
//! - after a response, the next request's first byte must arrive within the
//!   idle keep-alive timeout, and its complete head within the header-read
//!   timeout of that first byte.
//!
//! A connection with a request in flight (a publish being read, an SSE
//! stream being written) has a deadline only while its writes are blocked:
//! a connection that accepts no bytes for the write-stall timeout is
//! closed (an SSE client then resumes with `Last-Event-ID`). Request bodies
//! have their own read timeout, and a stream ends when its client leaves.
//!
//! Only a connection that holds nothing anyone has proven a right to may be
//! evicted to admit another: one without a request in flight, or one whose
//! request is still reading the body of an unauthenticated request (see
//! [`ConnPhase::unauthenticated_read`]); it is then evictable since the
//! read began.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

/// The timeouts a connection's deadline is made of.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timeouts {
    pub header_read: Duration,
    pub idle: Duration,
    pub write_stall: Duration,
}

#[derive(Debug)]
struct Waiting {
    /// When the connection started waiting for a request (accept, or the
    /// end of the previous response).
    since: Instant,
    /// When the first byte of the next request head arrived.
    head_started: Option<Instant>,
    /// Requests begun on this connection.
    served: u64,
    /// Since when a write has been waiting for the peer to accept bytes.
    write_blocked: Option<Instant>,
}

/// The shared state of one connection: its requests in flight, how long
/// it has waited, and whether it was asked to close.
#[derive(Debug)]
pub(crate) struct ConnPhase {
    in_flight: AtomicUsize,
    /// Requests in flight that are reading an unauthenticated body.
    unauthenticated_reads: AtomicUsize,
    waiting: Mutex<Waiting>,
    evicted: AtomicBool,
    /// Set while `waiting.write_blocked` is (read without the lock).
    blocked: AtomicBool,
    /// Wakes the connection's task to recompute its deadline.
    pub changed: Notify,
}

impl ConnPhase {
    /// A connection accepted now.
    pub fn accepted() -> Arc<Self> {
        Arc::new(Self {
            in_flight: AtomicUsize::new(0),
            unauthenticated_reads: AtomicUsize::new(0),
            waiting: Mutex::new(Waiting {
                since: Instant::now(),
                head_started: None,
                served: 0,
                write_blocked: None,
            }),
            evicted: AtomicBool::new(false),
            blocked: AtomicBool::new(false),
            changed: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `true` while no request is in flight.
    pub fn is_idle(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
    }

    /// `true` while every request in flight is only reading an
    /// unauthenticated body (or none is in flight).
    fn holds_nothing_authorised(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) <= self.unauthenticated_reads.load(Ordering::Acquire)
    }

    /// Since when the connection may be evicted (for eviction order):
    /// since it became idle, or since its unauthenticated body read began;
    /// `None` while it serves an authorised or bodiless request.
    pub fn evictable_since(&self) -> Option<Instant> {
        self.holds_nothing_authorised().then(|| self.lock().since)
    }

    /// Mark the current request as reading an unauthenticated body until
    /// the guard is dropped: meanwhile the connection may be evicted to
    /// admit another, so unauthenticated clients can never hold every slot.
    pub fn unauthenticated_read(self: &Arc<Self>) -> UnauthenticatedRead {
        self.lock().since = Instant::now();
        self.unauthenticated_reads.fetch_add(1, Ordering::AcqRel);
        self.changed.notify_one();
        UnauthenticatedRead(self.clone())
    }

    /// A request head was parsed: the connection is busy until the guard
    /// (carried by the response body) is dropped.
    pub fn begin_request(self: &Arc<Self>) -> RequestGuard {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        {
            let mut w = self.lock();
            w.served += 1;
            w.head_started = None;
        }
        self.changed.notify_one();
        RequestGuard(self.clone())
    }

    fn end_request(&self) {
        let mut w = self.lock();
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            w.since = Instant::now();
            w.head_started = None;
        }
        drop(w);
        self.changed.notify_one();
    }

    /// Bytes arrived; if the connection was idle, a request head started.
    fn bytes_arrived(&self) {
        if !self.is_idle() {
            return;
        }
        let mut w = self.lock();
        if w.head_started.is_none() {
            w.head_started = Some(Instant::now());
            drop(w);
            self.changed.notify_one();
        }
    }

    /// A write found the peer accepting no bytes.
    fn write_blocked(&self) {
        if self.blocked.load(Ordering::Acquire) {
            return;
        }
        let mut w = self.lock();
        if w.write_blocked.is_none() {
            w.write_blocked = Some(Instant::now());
            self.blocked.store(true, Ordering::Release);
            drop(w);
            self.changed.notify_one();
        }
    }

    /// The peer accepted bytes.
    fn wrote(&self) {
        if self.blocked.load(Ordering::Acquire) {
            self.lock().write_blocked = None;
            self.blocked.store(false, Ordering::Release);
            self.changed.notify_one();
        }
    }

    /// When the connection must be closed: when it is idle, or when its
    /// writes have been blocked.
    pub fn deadline(&self, t: &Timeouts) -> Option<Instant> {
        let w = self.lock();
        let stalled = w.write_blocked.map(|since| since + t.write_stall);
        if !self.is_idle() {
            return stalled;
        }
        let idle = match (w.served, w.head_started) {
            (0, _) => w.since + t.header_read,
            (_, Some(started)) => started + t.header_read,
            (_, None) => w.since + t.idle,
        };
        Some(stalled.map_or(idle, |s| s.min(idle)))
    }

    /// Ask an idle connection to close (to admit another).
    pub fn evict(&self) {
        self.evicted.store(true, Ordering::Release);
        self.changed.notify_one();
    }

    /// `true` when eviction was asked and the connection still holds
    /// nothing authorised (it is idle or reading an unauthenticated body).
    pub fn should_close_for_eviction(&self) -> bool {
        self.evicted.load(Ordering::Acquire) && self.holds_nothing_authorised()
    }

    /// `true` when eviction was asked (idle or not).
    pub fn eviction_asked(&self) -> bool {
        self.evicted.load(Ordering::Acquire)
    }
}

/// Marks one request in flight until dropped.
#[derive(Debug)]
pub(crate) struct RequestGuard(Arc<ConnPhase>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.end_request();
    }
}

/// Marks one unauthenticated body read until dropped.
#[derive(Debug)]
pub(crate) struct UnauthenticatedRead(Arc<ConnPhase>);

impl Drop for UnauthenticatedRead {
    fn drop(&mut self) {
        self.0.unauthenticated_reads.fetch_sub(1, Ordering::AcqRel);
        self.0.changed.notify_one();
    }
}

/// A connection's byte stream, telling its [`ConnPhase`] when the bytes of
/// a new request head start to arrive and whether the peer accepts what is
/// written.
#[derive(Debug)]
pub(crate) struct Watched<S> {
    io: S,
    phase: Arc<ConnPhase>,
}

impl<S> Watched<S> {
    pub fn new(io: S, phase: Arc<ConnPhase>) -> Self {
        Self { io, phase }
    }

    /// Tell the phase whether the peer accepts bytes.
    fn note_write(&self, polled: &Poll<io::Result<usize>>) {
        match polled {
            Poll::Pending => self.phase.write_blocked(),
            Poll::Ready(Ok(n)) if *n > 0 => self.phase.wrote(),
            Poll::Ready(_) => {}
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.phase.bytes_arrived();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        self.note_write(&polled);
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.note_write(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timeouts = Timeouts {
        header_read: Duration::from_secs(10),
        idle: Duration::from_secs(30),
        write_stall: Duration::from_secs(20),
    };

    #[tokio::test(start_paused = true)]
    async fn a_fresh_connection_must_send_its_head_within_the_header_timeout() {
        let phase = ConnPhase::accepted();
        let accepted = Instant::now();
        assert_eq!(phase.deadline(&T), Some(accepted + T.header_read));
        phase.bytes_arrived();
        assert_eq!(phase.deadline(&T), Some(accepted + T.header_read));
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_flight_has_no_deadline_and_its_end_starts_the_idle_wait() {
        let phase = ConnPhase::accepted();
        let guard = phase.begin_request();
        assert_eq!(phase.deadline(&T), None);
        assert!(phase.evictable_since().is_none());
        tokio::time::advance(Duration::from_secs(100)).await;
        drop(guard);
        let ended = Instant::now();
        assert_eq!(phase.deadline(&T), Some(ended + T.idle));
        tokio::time::advance(Duration::from_secs(3)).await;
        phase.bytes_arrived();
        assert_eq!(
            phase.deadline(&T),
            Some(ended + Duration::from_secs(3) + T.header_read)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_response_whose_writes_stay_blocked_has_a_deadline_until_bytes_move() {
        let phase = ConnPhase::accepted();
        let _guard = phase.begin_request();
        assert_eq!(phase.deadline(&T), None);
        phase.write_blocked();
        let blocked = Instant::now();
        tokio::time::advance(Duration::from_secs(5)).await;
        phase.write_blocked();
        assert_eq!(phase.deadline(&T), Some(blocked + T.write_stall));
        phase.wrote();
        assert_eq!(phase.deadline(&T), None);
    }

    #[tokio::test(start_paused = true)]
    async fn eviction_closes_only_an_idle_connection() {
        let phase = ConnPhase::accepted();
        let guard = phase.begin_request();
        phase.evict();
        assert!(!phase.should_close_for_eviction());
        drop(guard);
        assert!(phase.should_close_for_eviction());
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_reading_an_unauthenticated_body_may_be_evicted_only_meanwhile() {
        let phase = ConnPhase::accepted();
        let guard = phase.begin_request();
        phase.evict();
        assert!(!phase.should_close_for_eviction());
        tokio::time::advance(Duration::from_secs(2)).await;
        let reading = phase.unauthenticated_read();
        assert_eq!(phase.evictable_since(), Some(Instant::now()));
        assert!(phase.should_close_for_eviction());
        drop(reading);
        assert!(phase.evictable_since().is_none());
        assert!(!phase.should_close_for_eviction());
        drop(guard);
        assert!(phase.should_close_for_eviction());
    }
}
