//! # ff-http: resumable Server-Sent Events for ff streams
//!
//! An axum [`Router`](axum::Router) that serves every event family of an ff
//! backend as Server-Sent Events, so browsers and any SSE client consume
//! with the same cursors as the Rust API, plus a live viewer page and an
//! HTTP publish endpoint. Mount it in your own app or run it with
//! `ff serve`.
//!
//! ```no_run
//! use std::sync::Arc;
//! use ff_backend_memory::MemoryBackend;
//! use ff_http::{load_tokens_from_file, Auth, Gateway, GatewayConfig};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let backend = MemoryBackend::new();
//! let tokens = load_tokens_from_file("/etc/ff/tokens")?;
//! let gateway = Gateway::new(
//!     Arc::new(backend.clone()),
//!     Some(Arc::new(backend)), // enables POST; `None` for a read-only gateway
//!     GatewayConfig::new(Auth::tokens(tokens)),
//! );
//! let listener = ff_http::bind("127.0.0.1:8080".parse()?)?;
//! gateway
//!     .serve(listener, async {
//!         let _ = tokio::signal::ctrl_c().await;
//!     })
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! To mount it in an existing app instead, nest [`Gateway::router`]
//! (e.g. `Router::new().nest("/events", gateway.router())`), set
//! `TCP_NODELAY` on accepted connections, and call [`Gateway::shutdown`]
//! when your server shuts down gracefully (see [`Gateway::serve`]).
//! `examples/serve.rs` runs a demo; `examples/sse_load.rs` is a fan-out
//! load check.
//!
//! # Endpoints
//!
//! | route | answer |
//! |---|---|
//! | `GET /v1/streams/{family}` | `text/event-stream` (see below) |
//! | `POST /v1/streams/{family}` | publish one event object or an array; `{"cursors": [...]}` |
//! | `POST /v1/session` | `{"token": "..."}` as `application/json` from the gateway's own origin → HttpOnly `ff_token` cookie holding a read-only session value, never the token (viewer sign-in); `DELETE` removes it |
//! | `GET /` | the live viewer page (`/viewer.js` its script) |
//! | `GET /healthz` | `{"status":"ok","backend":...}`, no token needed |
//! | `GET /v1/status` | per family: followed live, latest position, delivery lag, clients (read token) |
//! | `GET /metrics` | Prometheus text (clients, events sent, backend subscriptions, backend lag) |
//!
//! `family` is `lease-history`, `completion`, `signal-delivery` or
//! `instance-tags`.
//!
//! # The stream
//!
//! Each event is one message: `id:` the event's cursor, `event:` its kind
//! (`acquired`, `success`, ...), `data:` its JSON on one line (the shape
//! `ff tail` prints, with `cursor`, `at`, `namespace` and `tags`).
//!
//! - Start: the `Last-Event-ID` header (a reconnecting `EventSource` sends
//!   it), else `?cursor=CURSOR`, else `?from=tail|beginning` (default
//!   `tail`). Resuming with any `id` the stream sent yields exactly the
//!   events after it.
//! - A cursor a client brings is judged by the backend
//!   ([`StreamBackend::resolve_cursor`](ff_core::backend::StreamBackend::resolve_cursor))
//!   before the client joins a shared reader, never by how its bytes sort.
//! - Positions: every position the stream tells a client is an `id:`
//!   line, and besides events it sends `event: ff-position` messages whose
//!   `data:` is `{"cursor": CURSOR, "reason": REASON}` (`cursor` equals the
//!   message's `id:`, so `EventSource`'s own resume follows them, and page
//!   code reads them, which it cannot do with an id-only message). Reasons:
//!   `start` — on connect, at once, the resolved start position, so a
//!   client that sees no event still resumes without a gap; `checkpoint` —
//!   see filters below; `caught-up` — the backlog has been sent
//!   (everything the gateway's live subscription had delivered when the
//!   client joined it, or, with no live subscription open, everything
//!   committed before the client's catch-up reader started), events now
//!   arrive as published; `behind` — the client fell behind the
//!   live subscription (it read too slowly, or its reader ended) and catches
//!   up again.
//! - Filters: `?kinds=a,b`, `?execution_id=`, `?namespace=`,
//!   `?tag=key:value`; unknown parameters are rejected. While a filter
//!   admits nothing, `checkpoint` position messages keep the client's
//!   `Last-Event-ID` moving.
//! - `: keep-alive` comments every [`GatewayConfig::keep_alive`].
//! - After the stream started, problems arrive as `event: ff-error` with a
//!   JSON `data:` (`error`, `detail`, `cursor`, and `oldest` for an expired
//!   cursor): a corrupt entry (`"corrupt"`, with its `id:`; the stream goes
//!   on) or a terminal backend error (the stream then ends).
//!
//! # Errors before the stream
//!
//! JSON bodies `{"error", "detail", "parameter"?, "cursor"?, "oldest"?}`:
//! 404 unknown family or route; 400 malformed or foreign cursor
//! (`parameter` is `Last-Event-ID` or `cursor`) or bad filter value
//! (`parameter` names it); 401 (with `WWW-Authenticate: Bearer`) without a
//! valid token; 403 a read-only token publishing; 410 expired cursor (with
//! `oldest`); 413 oversized publish; 503 (with `Retry-After`) backend
//! unreachable, too many clients, or shutting down. No error carries a
//! credential.
//!
//! # Authentication
//!
//! See [`Auth`] and the [`auth`] module for the token file format. Browsers
//! cannot send an `Authorization` header with `EventSource`, so reads also
//! accept `?access_token=` and the session cookie; those never authorise
//! `POST`.
//!
//! # Fan-out
//!
//! Caught-up clients of a family share one backend subscription (a hub
//! task that encodes each event once and broadcasts it on a bounded
//! channel; each client applies its own filter). Clients that start behind
//! share a bounded number of catch-up hubs (at most
//! [`GatewayConfig::max_family_subscriptions`] backend subscriptions per
//! family in all), which hand them over to the live hub without gap or
//! duplicate; a client that resumes within the hub's replay buffer (a
//! reconnect after a blip) joins at once. A client too slow for the
//! broadcast buffer is placed again from its position (or is closed, per
//! [`SlowClientPolicy`]), so memory per client stays bounded. A client
//! joins a shared reader only at a position the backend vouched for, under
//! the reader's lock: it replays the events the reader kept after that
//! position, then reads the reader's broadcast from where the replay ends,
//! so the hand-over skips and repeats nothing. The HTTP guide
//! (`docs/http.md` in the repository) describes the fan-out in full.
//!
//! Where next: [`GatewayConfig`] for every knob, [`Gateway`] for shutdown
//! and metrics.

pub mod auth;
mod body;
mod catchup;
mod client;
mod config;
mod cors;
mod encode;
mod errors;
mod fanout;
mod gateway;
mod hub;
mod listen;
mod metrics;
mod params;
mod routes;
mod server;
mod session;
mod tls;
mod viewer;

pub use auth::{
    load_tokens_from_env, load_tokens_from_file, parse_tokens, Auth, Token, TokenError,
};
pub use config::{GatewayConfig, SlowClientPolicy};
pub use encode::{ERROR_EVENT, POSITION_EVENT};
pub use gateway::{router, Gateway};
pub use listen::{bind, LISTEN_BACKLOG};
pub use metrics::MetricsSnapshot;
pub use tls::{TlsConfig, TlsError};
