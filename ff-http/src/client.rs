//! One SSE client: where its messages come from (a shared catch-up hub
//! while it is behind, the family's live hub once caught up), its filter,
//! its resume position, and the timers for keep-alive and checkpoint
//! messages.
//!
//! Every position the client is told travels in an `id:` line; besides
//! events, the start position, checkpoints and the changes between behind
//! and caught up are `ff-position` messages. A client is told it is caught
//! up once it has been sent everything the live subscription had delivered
//! (see `is_caught_up`), and told it is behind when it must be placed again
//! (it lagged, or its hub ended).
//!
//! The client is the response body itself (a stream polled by the HTTP
//! connection), not a task: when the connection closes, the body is
//! dropped and with it the client's broadcast receiver, so nothing
//! outlives a disconnected client. A slow connection stops polling the
//! body; the client then lags its hub (and is placed again from its
//! position) instead of buffering.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ff_core::engine_error::EngineError;
use ff_core::filter::SubscriptionFilter;
use ff_core::stream_events::Family;
use futures::Stream;
use serde_json::json;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::time::{Instant, Sleep};

use crate::config::SlowClientPolicy;
use crate::encode::{self, PositionReason};
use crate::errors::{self, ApiError};
use crate::fanout::{self, Unplaced, WhenQueued};
use crate::gateway::GatewayState;
use crate::hub::vouched::Vouched;
use crate::hub::{at_or_before, Hub, HubBody, HubItem, HubMsg, HubReceiver, Joined, StartError};
use crate::metrics::Metrics;
use crate::params::{Start, StreamParams};

/// Coalesce ready messages into one chunk up to about this many bytes (a
/// single larger message is one chunk of its own). With the connection's
/// write buffer ([`crate::server`]) it bounds what a client that stops
/// reading holds.
pub(crate) const MAX_CHUNK: usize = 16 * 1024;

/// Counts a connected client until dropped.
pub(crate) struct ClientGuard(Arc<Metrics>);

impl ClientGuard {
    /// Admit one more client, unless `max` are connected.
    pub fn admit(metrics: &Arc<Metrics>, max: usize) -> Option<Self> {
        let now = metrics.clients_connected.fetch_add(1, Ordering::Relaxed) + 1;
        if now > max {
            metrics.clients_connected.fetch_sub(1, Ordering::Relaxed);
            Metrics::add(&metrics.clients_rejected, 1);
            return None;
        }
        Metrics::add(&metrics.clients_total, 1);
        Some(Self(metrics.clone()))
    }
}

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.0.clients_connected.fetch_sub(1, Ordering::Relaxed);
    }
}

enum Source {
    /// A shared subscription: the family's live hub or a catch-up hub.
    Hub {
        hub: Arc<Hub>,
        rx: HubReceiver,
        replay: VecDeque<Arc<HubItem>>,
        /// The hub has sent, before what is left to read, everything it
        /// catches up with.
        settled: bool,
    },
    /// Waiting for a place on a catch-up hub.
    Queued(Pin<Box<dyn Future<Output = Placed> + Send>>),
    Done,
}

/// The outcome of waiting for a place.
type Placed = Result<(Arc<Hub>, Joined), Unplaced>;

enum Wake {
    Shutdown,
    KeepAlive,
    Checkpoint,
    Hub(Result<HubMsg, RecvError>),
    Replay(Arc<HubItem>),
    Placed(Placed),
}

/// One connected SSE client.
pub(crate) struct Client {
    state: Arc<GatewayState>,
    family: Family,
    filter: SubscriptionFilter,
    admits_all: bool,
    /// The position the client has been told (its `Last-Event-ID`):
    /// resolved by the backend at connect, then moved only by hub items.
    pos: Vouched,
    source: Source,
    out: Vec<u8>,
    /// The latest position passed over by the filter and not yet told.
    skipped: Option<Vouched>,
    /// When the pending checkpoint is due (armed while `skipped` is set).
    checkpoint_at: Option<Instant>,
    checkpoint_timer: Pin<Box<Sleep>>,
    /// Whether the client was last told it is caught up.
    caught_up: bool,
    /// When the last chunk was handed to the connection.
    last_sent: Instant,
    /// Fires at the latest `last_sent + keep_alive`; re-armed lazily, so a
    /// busy stream does not touch the timer for every message.
    keep_alive_timer: Pin<Box<Sleep>>,
    /// Completes on gateway shutdown (registered once per client).
    shutdown: Pin<Box<dyn Future<Output = ()> + Send>>,
    finished: bool,
    _guard: ClientGuard,
}

fn start_error(e: StartError, parameter: Option<&str>, retry: Duration) -> ApiError {
    match e {
        StartError::Engine(e) => ApiError::from_engine(&e, parameter, retry),
        StartError::Timeout => ApiError::unavailable(
            "backend_unavailable",
            "the backend did not answer in time; retry later",
            retry,
        ),
        StartError::ShuttingDown => ApiError::unavailable(
            "shutting_down",
            "the gateway is shutting down; reconnect with Last-Event-ID",
            retry,
        ),
    }
}

impl Client {
    /// Resolve the start (a cursor the client brings, by the backend),
    /// place the client, and queue the `start` position message carrying the
    /// resolved start position. Errors here are answered as HTTP statuses.
    pub async fn open(
        state: Arc<GatewayState>,
        family: Family,
        params: StreamParams,
        guard: ClientGuard,
    ) -> Result<Self, ApiError> {
        let retry = state.config.retry_after;
        let parameter = params.start.parameter();
        let wait = state.config.backend_timeout;
        let (pos, joined_tail) = match params.start {
            Start::Tail => loop {
                let hub = state
                    .hubs
                    .ready(family)
                    .await
                    .map_err(|e| start_error(e, None, retry))?;
                if let Ok(joined) = hub.join_tail() {
                    break (joined.position.clone(), Some((hub, joined)));
                }
            },
            Start::After { cursor, .. } => {
                let _turn = state
                    .resolving
                    .acquire()
                    .await
                    .expect("the resolve semaphore is never closed");
                let resolved = Vouched::resolve(&*state.backend, family, cursor, wait)
                    .await
                    .map_err(|e| start_error(e, Some(parameter), retry))?;
                (resolved, None)
            }
            Start::Beginning => (Vouched::beginning(), None),
        };
        let mut client = Client {
            family,
            admits_all: params.filter.is_empty(),
            filter: params.filter,
            pos,
            source: Source::Done,
            out: Vec::with_capacity(512),
            skipped: None,
            checkpoint_at: None,
            checkpoint_timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
            caught_up: false,
            last_sent: Instant::now(),
            keep_alive_timer: Box::pin(tokio::time::sleep(state.config.keep_alive)),
            shutdown: {
                let mut rx = state.shutdown.subscribe();
                Box::pin(async move {
                    let _ = rx.wait_for(|stop| *stop).await;
                })
            },
            finished: false,
            _guard: guard,
            state,
        };
        let placed = match joined_tail {
            Some(placed) => Ok(placed),
            None => {
                fanout::place(
                    &client.state.hubs,
                    family,
                    &client.pos,
                    wait,
                    WhenQueued::Return,
                )
                .await
            }
        };
        match placed {
            Ok((hub, joined)) => client.switch_to_hub(hub, joined),
            Err(Unplaced::Queued) => client.queue(),
            Err(Unplaced::Start(e)) => return Err(start_error(e, Some(parameter), retry)),
        }
        encode::push_position(&mut client.out, client.pos.cursor(), PositionReason::Start);
        client.note_caught_up();
        Ok(client)
    }

    /// Wait, inside the stream, for a place on a catch-up hub.
    fn queue(&mut self) {
        let (hubs, family, pos) = (self.state.hubs.clone(), self.family, self.pos.clone());
        let wait = self.state.config.backend_timeout;
        self.source = Source::Queued(Box::pin(async move {
            fanout::place(&hubs, family, &pos, wait, WhenQueued::Wait).await
        }));
    }

    /// The client as a response body stream.
    pub fn into_body_stream(self) -> impl Stream<Item = Result<Bytes, Infallible>> + Send {
        futures::stream::unfold(self, |mut client| async move {
            let chunk = client.next_chunk().await?;
            Some((Ok(chunk), client))
        })
    }

    /// Read `hub` from now on, at the position it admitted (now vouched
    /// by it). Events passed over and not yet told are replayed and
    /// filtered again from there.
    fn switch_to_hub(&mut self, hub: Arc<Hub>, joined: Joined) {
        Metrics::add(&self.state.metrics.shared_joins, 1);
        self.pos = joined.at;
        self.skipped = None;
        self.checkpoint_at = None;
        self.source = Source::Hub {
            hub,
            rx: joined.rx,
            replay: joined.replay,
            settled: joined.settled,
        };
    }

    /// The next chunk of messages; `None` ends the response.
    async fn next_chunk(&mut self) -> Option<Bytes> {
        loop {
            if !self.out.is_empty() {
                self.last_sent = Instant::now();
                let mut chunk = std::mem::take(&mut self.out);
                // The chunk may wait in the write buffer: keep no more
                // memory than its bytes.
                chunk.shrink_to_fit();
                return Some(Bytes::from(chunk));
            }
            if self.finished {
                return None;
            }
            let wake = self.wait().await;
            self.handle(wake).await;
            self.note_caught_up();
            while !self.finished && self.out.len() < MAX_CHUNK {
                match self.ready_now() {
                    Some(wake) => {
                        self.handle(wake).await;
                        self.note_caught_up();
                    }
                    None => break,
                }
            }
        }
    }

    /// Wait for the next thing to do.
    async fn wait(&mut self) -> Wake {
        let Self {
            source,
            shutdown,
            checkpoint_at,
            checkpoint_timer,
            keep_alive_timer,
            ..
        } = self;
        if let Source::Hub { replay, .. } = source {
            if let Some(item) = replay.pop_front() {
                return Wake::Replay(item);
            }
        }
        let checkpoint_armed = checkpoint_at.is_some();
        let next = async {
            match source {
                Source::Hub { rx, .. } => Wake::Hub(rx.recv().await),
                Source::Queued(placing) => Wake::Placed(placing.as_mut().await),
                Source::Done => futures::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = shutdown.as_mut() => Wake::Shutdown,
            wake = next => wake,
            _ = checkpoint_timer.as_mut(), if checkpoint_armed => Wake::Checkpoint,
            _ = keep_alive_timer.as_mut() => Wake::KeepAlive,
        }
    }

    /// Something to do without waiting, if any.
    fn ready_now(&mut self) -> Option<Wake> {
        match &mut self.source {
            Source::Hub { replay, rx, .. } => {
                if let Some(item) = replay.pop_front() {
                    return Some(Wake::Replay(item));
                }
                match rx.try_recv() {
                    Ok(msg) => Some(Wake::Hub(Ok(msg))),
                    Err(TryRecvError::Empty) => None,
                    Err(TryRecvError::Lagged(n)) => Some(Wake::Hub(Err(RecvError::Lagged(n)))),
                    Err(TryRecvError::Closed) => Some(Wake::Hub(Err(RecvError::Closed))),
                }
            }
            Source::Queued(_) | Source::Done => None,
        }
    }

    async fn handle(&mut self, wake: Wake) {
        match wake {
            Wake::Shutdown => self.finish(),
            Wake::KeepAlive => {
                let interval = self.state.config.keep_alive;
                let due = self.last_sent + interval;
                let now = Instant::now();
                if now >= due {
                    self.out.extend_from_slice(encode::KEEP_ALIVE);
                    self.keep_alive_timer.as_mut().reset(now + interval);
                } else {
                    self.keep_alive_timer.as_mut().reset(due);
                }
            }
            Wake::Checkpoint => {
                self.checkpoint_at = None;
                if let Some(cursor) = self.skipped.take() {
                    encode::push_position(
                        &mut self.out,
                        cursor.cursor(),
                        PositionReason::Checkpoint,
                    );
                    Metrics::add(&self.state.metrics.checkpoints_sent, 1);
                    self.pos = cursor;
                }
            }
            Wake::Replay(item) | Wake::Hub(Ok(HubMsg::Item(item))) => {
                self.on_hub_item(&item);
                self.try_handover();
            }
            Wake::Hub(Ok(HubMsg::HandedOver)) => {
                // Handed to a catch-up hub ahead, the client has not
                // caught up yet: that hub says so when it has.
                if matches!(&self.source, Source::Hub { hub, .. } if hub.is_handed_to_live()) {
                    self.settle();
                }
                self.try_handover();
            }
            Wake::Hub(Ok(HubMsg::BacklogRead)) => self.settle(),
            Wake::Placed(Ok((hub, joined))) => self.switch_to_hub(hub, joined),
            Wake::Placed(Err(unplaced)) => self.unplaced(unplaced),
            Wake::Hub(Ok(HubMsg::Failed(e))) => self.fail(&e),
            Wake::Hub(Err(RecvError::Lagged(_))) => self.on_lagged().await,
            Wake::Hub(Err(RecvError::Closed)) => self.on_closed().await,
        }
    }

    /// Whether the client has been sent everything the gateway had to
    /// catch up with: it reads a settled hub (see [`Joined::settled`]) with
    /// nothing left to replay. A catch-up hub that read its backend
    /// subscription's backlog stays live on its own while no live hub is
    /// open.
    fn is_caught_up(&self) -> bool {
        matches!(&self.source, Source::Hub { settled: true, replay, .. } if replay.is_empty())
    }

    /// Tell the client once it has caught up, with the position it has
    /// reached (passed-over events included).
    fn note_caught_up(&mut self) {
        if self.finished || self.caught_up || !self.is_caught_up() {
            return;
        }
        self.caught_up = true;
        if let Some(cursor) = self.skipped.take() {
            self.pos = cursor;
            self.checkpoint_at = None;
        }
        encode::push_position(&mut self.out, self.pos.cursor(), PositionReason::CaughtUp);
    }

    /// The hub says it has sent everything it catches up with.
    fn settle(&mut self) {
        if let Source::Hub { settled, .. } = &mut self.source {
            *settled = true;
        }
    }

    fn finish(&mut self) {
        self.finished = true;
        self.source = Source::Done;
    }

    /// Send a terminal `ff-error` message and end.
    fn fail(&mut self, err: &EngineError) {
        encode::push_error(
            &mut self.out,
            None,
            &errors::stream_error_json(err, self.pos.cursor()),
        );
        Metrics::add(&self.state.metrics.errors_sent, 1);
        self.finish();
    }

    fn sent_position(&mut self, cursor: Vouched) {
        self.pos = cursor;
        self.skipped = None;
        self.checkpoint_at = None;
    }

    /// Pass one hub item on, unless the client has seen it (see
    /// [`Vouched::advanced_by`]): what the client is told is its merged
    /// position, not the hub's.
    fn on_hub_item(&mut self, item: &HubItem) {
        let seen = self.skipped.as_ref().unwrap_or(&self.pos);
        let Some(next) = seen.advanced_by(item) else {
            return;
        };
        let own = next.cursor() == &item.cursor;
        match &item.body {
            HubBody::Event { event, meta, frame } => {
                if self.admits_all || self.filter.matches(event, meta) {
                    if own {
                        self.out.extend_from_slice(frame);
                    } else {
                        encode::push_event_at(&mut self.out, event, meta, next.cursor());
                    }
                    Metrics::add(&self.state.metrics.events_sent, 1);
                    self.sent_position(next);
                } else {
                    self.skipped = Some(next);
                    if self.checkpoint_at.is_none() {
                        let at = Instant::now() + self.state.config.checkpoint_interval;
                        self.checkpoint_at = Some(at);
                        self.checkpoint_timer.as_mut().reset(at);
                    }
                }
            }
            HubBody::Corrupt { frame, detail } => {
                if own {
                    self.out.extend_from_slice(frame);
                } else {
                    encode::push_error(
                        &mut self.out,
                        Some(next.cursor()),
                        &errors::corrupt_json(next.cursor(), detail),
                    );
                }
                Metrics::add(&self.state.metrics.errors_sent, 1);
                self.sent_position(next);
            }
        }
    }

    /// On a catch-up hub that was handed over, move at the client's own
    /// position to the live hub once inside its window, or else to the
    /// catch-up hub it was handed over to, once inside that hub's window
    /// and not ahead of it (the client would wait for it to catch up).
    fn try_handover(&mut self) {
        let Source::Hub { hub, replay, .. } = &self.source else {
            return;
        };
        if !hub.is_handed_over() || !replay.is_empty() {
            return;
        }
        if let Some(live) = self.state.hubs.existing(self.family) {
            if let Ok(joined) = live.join_after(&self.pos) {
                return self.switch_to_hub(live, joined);
            }
        }
        let Some(ahead) = hub.successor() else {
            return;
        };
        let behind_it = ahead
            .window()
            .is_some_and(|(_, position)| at_or_before(self.pos.cursor(), &position));
        if behind_it {
            if let Ok(joined) = ahead.join_after(&self.pos) {
                self.switch_to_hub(ahead, joined);
            }
        }
    }

    /// The hub ended without an error (it went idle or the gateway is
    /// shutting down): be placed again, or end.
    async fn on_closed(&mut self) {
        if *self.state.shutdown.borrow() {
            return self.finish();
        }
        self.replace().await;
    }

    /// The client fell behind its hub's broadcast buffer.
    async fn on_lagged(&mut self) {
        Metrics::add(&self.state.metrics.lagged, 1);
        if self.state.config.slow_client == SlowClientPolicy::Disconnect {
            encode::push_error(
                &mut self.out,
                None,
                &json!({
                    "error": "lagged",
                    "cursor": self.pos.cursor().to_string(),
                    "detail": "the client fell too far behind; reconnect with Last-Event-ID to resume",
                }),
            );
            Metrics::add(&self.state.metrics.errors_sent, 1);
            return self.finish();
        }
        self.replace().await;
    }

    /// Place the client again exactly after its last told position (events
    /// passed over since then are filtered out again on the way).
    async fn replace(&mut self) {
        let previous = std::mem::replace(&mut self.source, Source::Done);
        self.skipped = None;
        self.checkpoint_at = None;
        if std::mem::take(&mut self.caught_up) {
            encode::push_position(&mut self.out, self.pos.cursor(), PositionReason::Behind);
        }
        if let Source::Hub { hub, .. } = previous {
            if !hub.is_held_back() {
                if let Ok(joined) = hub.join_after(&self.pos) {
                    return self.switch_to_hub(hub, joined);
                }
            }
        }
        self.queue();
    }

    /// No place could be found: tell the client why, and end.
    fn unplaced(&mut self, unplaced: Unplaced) {
        let e = match unplaced {
            Unplaced::Start(e) => e,
            Unplaced::Queued => StartError::Timeout,
        };
        let e = start_error(e, Some("Last-Event-ID"), self.state.config.retry_after);
        let mut json = e.body();
        if json.get("cursor").is_none() {
            json["cursor"] = self.pos.cursor().to_string().into();
        }
        encode::push_error(&mut self.out, None, &json);
        Metrics::add(&self.state.metrics.errors_sent, 1);
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use ff_backend_memory::MemoryBackend;
    use ff_core::backend::{EventPublisher, StreamBackend};
    use ff_core::engine_error::EngineError;
    use ff_core::stream_events::{CompletionOutcome, EventMeta, Family, NewEvent};
    use ff_core::stream_subscribe::StreamCursor;
    use ff_core::types::ExecutionId;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use crate::{Auth, Gateway, GatewayConfig};

    const WAIT: Duration = Duration::from_secs(10);

    fn get(last_event_id: Option<&StreamCursor>) -> Request<Body> {
        let mut request = Request::get("/v1/streams/completion");
        if let Some(cursor) = last_event_id {
            request = request.header("Last-Event-ID", cursor.to_string());
        }
        request.body(Body::empty()).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cursor_the_backend_refuses_is_refused_though_it_sorts_inside_the_live_window() {
        let backend = MemoryBackend::builder().retention(5).build();
        let gateway = Gateway::new(
            Arc::new(backend.clone()),
            None,
            GatewayConfig::new(Auth::NoAuth),
        );
        // A tail client keeps the live hub reading.
        let tail = gateway.router().oneshot(get(None)).await.unwrap();
        assert_eq!(tail.status(), StatusCode::OK);
        let mut tail = tail.into_body();
        // One at a time, each read by the hub before the next: the hub
        // keeps all twenty, the backend retains the last five.
        let mut c = Vec::new();
        let mut seen = String::new();
        for _ in 0..20 {
            let event = NewEvent::completion(ExecutionId::new(0), CompletionOutcome::Success);
            let cursor = backend.publish(event, EventMeta::new()).await.unwrap();
            let id = format!("id: {cursor}\n");
            while !seen.contains(&id) {
                let frame = tokio::time::timeout(WAIT, tail.frame())
                    .await
                    .expect("the live hub delivers the event")
                    .unwrap_or_else(|| panic!("the stream ended after {seen}"))
                    .unwrap();
                if let Ok(data) = frame.into_data() {
                    seen.push_str(&String::from_utf8_lossy(&data));
                }
            }
            c.push(cursor);
        }
        // Evicted by retention, yet inside the live hub's window.
        assert!(matches!(
            backend
                .subscribe_family(Family::Completion, c[2].clone(), &Default::default())
                .await,
            Err(EngineError::CursorExpired { .. })
        ));
        let refused = gateway.router().oneshot(get(Some(&c[2]))).await.unwrap();
        assert_eq!(refused.status(), StatusCode::GONE);
        let body = refused.into_body().collect().await.unwrap().to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["error"], "cursor_expired", "{json}");
    }
}
