//! The HTTP/1.1 server behind [`Gateway::serve`](crate::Gateway::serve):
//! an accept loop that admits connections under a cap
//! ([`admission`]), and one task per connection that serves the router with
//! hyper and closes the connection when its deadline passes ([`phase`]).
//!
//! Invariant: every accepted socket is either served in a slot, answered
//! `503` and closed (over TLS, after a handshake bounded in time), or
//! closed at once when even the rejections in progress are at their bound;
//! a served connection buffers at most [`WRITE_BUFFER`] bytes of response
//! before it stops asking the response body for more (plus the one chunk
//! it took last), so a client that stops reading holds little memory;
//! a served connection ends when its client leaves, when it idles past its
//! deadline or accepts no bytes for the write-stall timeout, when it is evicted while it holds nothing authorised (idle,
//! or reading an unauthenticated body), or at shutdown (after its
//! in-flight response ends).

mod admission;
mod phase;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tower::ServiceExt;

use crate::config::GatewayConfig;
use crate::tls::TlsConfig;
use admission::{Admission, Admit, Slot};
pub(crate) use phase::UnauthenticatedRead;
use phase::{ConnPhase, RequestGuard, Timeouts, Watched};

/// Marks a request that arrived over TLS terminated by this server (a
/// request extension).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ServedOverTls;

/// The connection a request arrived on (a request extension set by
/// [`Gateway::serve`](crate::Gateway::serve)).
#[derive(Clone, Debug)]
pub(crate) struct ServedConnection(Arc<ConnPhase>);

impl ServedConnection {
    /// Let the connection be evicted while the guard lives, as the request
    /// reads a body no token has authorised yet.
    pub fn unauthenticated_read(&self) -> UnauthenticatedRead {
        self.0.unauthenticated_read()
    }
}

/// Bytes of response a connection buffers before it waits for the client
/// to take them (hyper's `max_buf_size`, which also bounds a request
/// head). With [`crate::client::MAX_CHUNK`], a client that stops reading
/// holds at most about 48 KiB of buffered response (more only for one
/// message larger than a chunk).
pub(crate) const WRITE_BUFFER: usize = 32 * 1024;

/// How long the accept loop pauses after an accept error (e.g. out of file
/// descriptors), so it does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// Longest TLS handshake granted to a connection that is only to be told
/// `503` (shorter still when the header-read timeout is).
const REJECT_HANDSHAKE: Duration = Duration::from_secs(3);

/// The connection-level settings, taken from [`GatewayConfig`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct ServerSettings {
    pub timeouts: Timeouts,
    pub max_connections: usize,
    pub retry_after: Duration,
}

impl ServerSettings {
    pub fn from_config(config: &GatewayConfig) -> Self {
        Self {
            timeouts: Timeouts {
                header_read: config.header_read_timeout,
                idle: config.idle_timeout,
                write_stall: config.write_stall_timeout,
            },
            max_connections: config.max_connections,
            retry_after: config.retry_after,
        }
    }
}

/// Serve `router` on `listener` until `signal` completes; then stop
/// accepting, let `on_stop` end long responses, and wait for every
/// connection to finish.
pub(crate) async fn serve<F>(
    listener: TcpListener,
    router: Router,
    settings: ServerSettings,
    tls: Option<TlsConfig>,
    signal: F,
    on_stop: impl FnOnce(),
) -> std::io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let admission = Admission::new(settings.max_connections);
    let acceptor = tls.map(|t| t.acceptor());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut signal = std::pin::pin!(signal);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = signal.as_mut() => break,
        };
        let tcp = match accepted {
            Ok((tcp, _peer)) => tcp,
            Err(e) => {
                tracing::warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
        let phase = ConnPhase::accepted();
        let start = Start {
            router: router.clone(),
            acceptor: acceptor.clone(),
            timeouts: settings.timeouts,
            stop: stop_rx.clone(),
        };
        match admission.admit(&phase) {
            Admit::Now(slot) => {
                tokio::spawn(start.run(tcp, phase, slot));
            }
            Admit::AfterEviction(side) => {
                let admission = admission.clone();
                tokio::spawn(async move {
                    match admission.slot_after_eviction(&phase).await {
                        Some(slot) => {
                            drop(side);
                            start.run(tcp, phase, slot).await
                        }
                        None => {
                            turn_away(tcp, start.acceptor, admission.max(), &settings).await;
                            drop(side);
                        }
                    }
                });
            }
            Admit::Reject(side) => {
                let (acceptor, max) = (acceptor.clone(), admission.max());
                tokio::spawn(async move {
                    turn_away(tcp, acceptor, max, &settings).await;
                    drop(side);
                });
            }
            Admit::Drop => drop(tcp),
        }
    }
    drop(listener);
    drop(stop_rx);
    on_stop();
    stop_tx.send_replace(true);
    stop_tx.closed().await;
    Ok(())
}

/// Answer `503` to a connection that found no room and close it; over TLS
/// after the handshake, which must complete within [`REJECT_HANDSHAKE`]
/// (or the header-read timeout, if shorter).
async fn turn_away(
    tcp: TcpStream,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    max: usize,
    settings: &ServerSettings,
) {
    let Some(acceptor) = acceptor else {
        return admission::reject(tcp, max, settings.retry_after).await;
    };
    let limit = settings.timeouts.header_read.min(REJECT_HANDSHAKE);
    match tokio::time::timeout(limit, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => admission::reject(tls, max, settings.retry_after).await,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake of a turned-away connection failed")
        }
        Err(_) => tracing::debug!("TLS handshake of a turned-away connection timed out"),
    }
}

/// What a connection task needs.
struct Start {
    router: Router,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    timeouts: Timeouts,
    stop: watch::Receiver<bool>,
}

impl Start {
    /// Complete the TLS handshake if any (within the header-read timeout,
    /// and abandoned if evicted meanwhile), then serve the connection.
    async fn run(self, tcp: TcpStream, phase: Arc<ConnPhase>, slot: Slot) {
        let Some(acceptor) = self.acceptor.clone() else {
            return self.serve(tcp, false, phase, slot).await;
        };
        let evicted = async {
            while !phase.should_close_for_eviction() {
                phase.changed.notified().await;
            }
        };
        let handshake = tokio::select! {
            h = tokio::time::timeout(self.timeouts.header_read, acceptor.accept(tcp)) => h,
            () = evicted => return,
        };
        match handshake {
            Ok(Ok(tls)) => self.serve(tls, true, phase, slot).await,
            Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
            Err(_) => tracing::debug!("TLS handshake timed out"),
        }
    }

    /// Serve one connection until it ends or its deadline passes.
    async fn serve<I>(self, io: I, over_tls: bool, phase: Arc<ConnPhase>, slot: Slot)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Self {
            router,
            timeouts,
            mut stop,
            ..
        } = self;
        let service_phase = phase.clone();
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let guard = service_phase.begin_request();
            let router = router.clone();
            let mut req = req.map(Body::new);
            req.extensions_mut()
                .insert(ServedConnection(service_phase.clone()));
            if over_tls {
                req.extensions_mut().insert(ServedOverTls);
            }
            async move {
                let response = router
                    .oneshot(req)
                    .await
                    .unwrap_or_else(|never: Infallible| match never {});
                Ok::<_, Infallible>(track(response, guard))
            }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .max_buf_size(WRITE_BUFFER)
            .serve_connection(TokioIo::new(Watched::new(io, phase.clone())), service);
        let mut conn = std::pin::pin!(conn);
        let mut stopping = false;
        loop {
            if phase.should_close_for_eviction() {
                tracing::debug!("closing an idle connection to admit another");
                break;
            }
            let deadline = phase.deadline(&timeouts);
            let changed = phase.changed.notified();
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                    break;
                }
                () = changed => {}
                () = sleep_until(deadline) => {
                    if phase.deadline(&timeouts).is_some_and(|d| d <= tokio::time::Instant::now()) {
                        tracing::debug!("closing a connection that sent no complete request, or accepted no bytes, in time");
                        break;
                    }
                }
                _ = stop.wait_for(|s| *s), if !stopping => {
                    stopping = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
        drop(slot);
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Keep the request counted in flight until its response body is dropped.
fn track(response: Response, guard: RequestGuard) -> Response {
    response.map(|body| {
        Body::new(TrackedBody {
            inner: body,
            _guard: guard,
        })
    })
}

/// A response body carrying its request's [`RequestGuard`].
struct TrackedBody {
    inner: Body,
    _guard: RequestGuard,
}

impl http_body::Body for TrackedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
