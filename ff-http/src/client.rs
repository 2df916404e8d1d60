//! One SSE client: where its messages come from (its own backend
//! subscription while catching up, the family's shared hub once caught
//! up), its filter, its resume position, and the timers for keep-alive and
//! checkpoint messages.
//!
//! The client is the response body itself (a stream polled by the HTTP
//! connection), not a task: when the connection closes, the body is
//! dropped and with it the client's broadcast receiver or backend
//! subscription, so nothing outlives a disconnected client. A slow
//! connection stops polling the body; the client then lags the hub (and
//! catches up from its position) instead of buffering.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ff_core::backend::{DeliveryItem, DeliveryStream};
use ff_core::engine_error::EngineError;
use ff_core::filter::SubscriptionFilter;
use ff_core::stream_events::Family;
use ff_core::stream_subscribe::StreamCursor;
use futures::{FutureExt, Stream, StreamExt};
use serde_json::json;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::time::{Instant, Sleep};

use crate::config::SlowClientPolicy;
use crate::encode;
use crate::errors::{self, ApiError};
use crate::fanout::{at_or_before, Hub, HubBody, HubItem, HubMsg, JoinRefused, Joined, StartError};
use crate::gateway::GatewayState;
use crate::metrics::{Metrics, SubscriptionGauge, SubscriptionKind};
use crate::params::{Start, StreamParams};

/// Coalesce ready messages into one chunk up to about this many bytes.
const MAX_CHUNK: usize = 64 * 1024;
/// How long opening a stream waits for the first item of a catch-up
/// subscription (which reports an expired cursor as a 410).
const FIRST_ITEM_WAIT: Duration = Duration::from_secs(2);

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
    /// The client's own backend subscription (catching up).
    Own {
        stream: DeliveryStream,
        caught_up: bool,
        hub_requested: bool,
        _gauge: SubscriptionGauge,
    },
    /// The family's shared subscription.
    Hub {
        hub: Arc<Hub>,
        rx: broadcast::Receiver<HubMsg>,
        replay: VecDeque<Arc<HubItem>>,
    },
    Done,
}

enum Wake {
    Shutdown,
    KeepAlive,
    Checkpoint,
    Own(Option<Result<DeliveryItem, EngineError>>),
    Hub(Result<HubMsg, RecvError>),
    Replay(Arc<HubItem>),
}

/// One connected SSE client.
pub(crate) struct Client {
    state: Arc<GatewayState>,
    family: Family,
    filter: SubscriptionFilter,
    admits_all: bool,
    /// The position the client has been told (its `Last-Event-ID`).
    pos: StreamCursor,
    source: Source,
    out: Vec<u8>,
    /// The latest position passed over by the filter and not yet told.
    skipped: Option<StreamCursor>,
    /// When the pending checkpoint is due (armed while `skipped` is set).
    checkpoint_at: Option<Instant>,
    checkpoint_timer: Pin<Box<Sleep>>,
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

fn start_error(e: StartError, retry: Duration) -> ApiError {
    match e {
        StartError::Engine(e) => ApiError::from_engine(&e, None, retry),
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

/// Subscribe on the backend and wait briefly for the first item, so an
/// invalid or expired start position is an HTTP error, not a stream error.
async fn open_own(
    state: &GatewayState,
    family: Family,
    cursor: StreamCursor,
    filter: &SubscriptionFilter,
    parameter: &str,
) -> Result<(DeliveryStream, SubscriptionGauge), ApiError> {
    let retry = state.config.retry_after;
    let timeout = state.config.backend_timeout;
    let subscribed = tokio::time::timeout(
        timeout,
        state.backend.subscribe_family(family, cursor, filter),
    )
    .await
    .map_err(|_| {
        ApiError::unavailable(
            "backend_unavailable",
            "the backend did not answer in time; retry later",
            retry,
        )
    })?;
    let mut stream = subscribed.map_err(|e| ApiError::from_engine(&e, Some(parameter), retry))?;
    let gauge = SubscriptionGauge::new(state.metrics.clone(), SubscriptionKind::Own);
    let first = match tokio::time::timeout(FIRST_ITEM_WAIT, stream.next()).await {
        Err(_) => return Ok((stream, gauge)),
        Ok(None) => {
            return Err(ApiError::unavailable(
                "disconnected",
                "the backend ended the subscription at once; retry later",
                retry,
            ))
        }
        Ok(Some(Err(e))) if e.is_terminal() => {
            return Err(ApiError::from_engine(&e, Some(parameter), retry))
        }
        Ok(Some(first)) => first,
    };
    Ok((
        futures::stream::once(async { first }).chain(stream).boxed(),
        gauge,
    ))
}

impl Client {
    /// Resolve the start, subscribe, and queue the id-only message carrying
    /// the start position. Errors here are answered as HTTP statuses.
    pub async fn open(
        state: Arc<GatewayState>,
        family: Family,
        params: StreamParams,
        guard: ClientGuard,
    ) -> Result<Self, ApiError> {
        let retry = state.config.retry_after;
        let mut client = Client {
            family,
            admits_all: params.filter.is_empty(),
            filter: params.filter,
            pos: StreamCursor::empty(),
            source: Source::Done,
            out: Vec::with_capacity(512),
            skipped: None,
            checkpoint_at: None,
            checkpoint_timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
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
        let parameter = params.start.parameter();
        match params.start {
            Start::Tail => {
                let joined = loop {
                    let hub = client
                        .state
                        .hubs
                        .ready(family)
                        .await
                        .map_err(|e| start_error(e, retry))?;
                    if let Ok(joined) = hub.join_tail() {
                        break (hub, joined);
                    }
                };
                client.pos = joined.1.position.clone();
                client.switch_to_hub(joined.0, joined.1);
            }
            Start::After { cursor, .. } => {
                let hub = client.state.hubs.existing(family);
                let joined = hub
                    .as_ref()
                    .and_then(|hub| hub.join_after(&cursor, false).ok());
                client.pos = cursor.clone();
                match (hub, joined) {
                    (Some(hub), Some(joined)) => client.switch_to_hub(hub, joined),
                    _ => {
                        let (stream, gauge) =
                            open_own(&client.state, family, cursor, &client.filter, parameter)
                                .await?;
                        client.switch_to_own(stream, gauge);
                    }
                }
            }
            Start::Beginning => {
                let (stream, gauge) = open_own(
                    &client.state,
                    family,
                    StreamCursor::beginning(),
                    &client.filter,
                    parameter,
                )
                .await?;
                client.pos = StreamCursor::beginning();
                client.switch_to_own(stream, gauge);
            }
        }
        encode::push_id(&mut client.out, &client.pos);
        Ok(client)
    }

    /// The client as a response body stream.
    pub fn into_body_stream(self) -> impl Stream<Item = Result<Bytes, Infallible>> + Send {
        futures::stream::unfold(self, |mut client| async move {
            let chunk = client.next_chunk().await?;
            Some((Ok(chunk), client))
        })
    }

    fn switch_to_hub(&mut self, hub: Arc<Hub>, joined: Joined) {
        Metrics::add(&self.state.metrics.shared_joins, 1);
        self.source = Source::Hub {
            hub,
            rx: joined.rx,
            replay: joined.replay,
        };
    }

    fn switch_to_own(&mut self, stream: DeliveryStream, gauge: SubscriptionGauge) {
        self.source = Source::Own {
            stream,
            caught_up: false,
            hub_requested: false,
            _gauge: gauge,
        };
    }

    /// The next chunk of messages; `None` ends the response.
    async fn next_chunk(&mut self) -> Option<Bytes> {
        loop {
            if !self.out.is_empty() {
                self.last_sent = Instant::now();
                return Some(Bytes::from(std::mem::take(&mut self.out)));
            }
            if self.finished {
                return None;
            }
            let wake = self.wait().await;
            self.handle(wake).await;
            while !self.finished && self.out.len() < MAX_CHUNK {
                match self.ready_now() {
                    Some(wake) => self.handle(wake).await,
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
                Source::Own { stream, .. } => Wake::Own(stream.next().await),
                Source::Hub { rx, .. } => Wake::Hub(rx.recv().await),
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
            Source::Own { stream, .. } => stream.next().now_or_never().map(Wake::Own),
            Source::Done => None,
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
                    encode::push_id(&mut self.out, &cursor);
                    Metrics::add(&self.state.metrics.checkpoints_sent, 1);
                    self.pos = cursor;
                }
            }
            Wake::Replay(item) | Wake::Hub(Ok(HubMsg::Item(item))) => self.on_hub_item(&item),
            Wake::Hub(Ok(HubMsg::Failed(e))) => self.fail(&e),
            Wake::Hub(Err(RecvError::Lagged(_))) => self.on_lagged().await,
            Wake::Hub(Err(RecvError::Closed)) => self.finish(),
            Wake::Own(None) => {
                let e = EngineError::StreamDisconnected {
                    cursor: self.pos.clone(),
                };
                self.fail(&e);
            }
            Wake::Own(Some(Ok(item))) => self.on_own_item(item).await,
            Wake::Own(Some(Err(EngineError::Corrupt { cursor, detail }))) => {
                self.on_own_item(DeliveryItem::Corrupt { cursor, detail })
                    .await
            }
            Wake::Own(Some(Err(e))) => self.fail(&e),
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
            &errors::stream_error_json(err, &self.pos),
        );
        Metrics::add(&self.state.metrics.errors_sent, 1);
        self.finish();
    }

    fn sent_position(&mut self, cursor: StreamCursor) {
        self.pos = cursor;
        self.skipped = None;
        self.checkpoint_at = None;
    }

    fn on_hub_item(&mut self, item: &HubItem) {
        if at_or_before(&item.cursor, &self.pos) {
            return;
        }
        match &item.body {
            HubBody::Event { event, meta, frame } => {
                if self.admits_all || self.filter.matches(event, meta) {
                    self.out.extend_from_slice(frame);
                    Metrics::add(&self.state.metrics.events_sent, 1);
                    self.sent_position(item.cursor.clone());
                } else {
                    self.skipped = Some(item.cursor.clone());
                    if self.checkpoint_at.is_none() {
                        let at = Instant::now() + self.state.config.checkpoint_interval;
                        self.checkpoint_at = Some(at);
                        self.checkpoint_timer.as_mut().reset(at);
                    }
                }
            }
            HubBody::Corrupt { frame } => {
                self.out.extend_from_slice(frame);
                Metrics::add(&self.state.metrics.errors_sent, 1);
                self.sent_position(item.cursor.clone());
            }
        }
    }

    async fn on_own_item(&mut self, item: DeliveryItem) {
        let cursor = item.cursor().clone();
        let metrics = self.state.metrics.clone();
        match item {
            DeliveryItem::Event { event, meta } => {
                encode::push_event(&mut self.out, &event, &meta);
                Metrics::add(&metrics.events_sent, 1);
            }
            DeliveryItem::Corrupt { cursor, detail } => {
                encode::push_error(
                    &mut self.out,
                    Some(&cursor),
                    &errors::corrupt_json(&cursor, &detail),
                );
                Metrics::add(&metrics.errors_sent, 1);
            }
            other => {
                if let Source::Own { caught_up, .. } = &mut self.source {
                    if matches!(other, DeliveryItem::CaughtUp { .. }) {
                        *caught_up = true;
                    }
                }
                if cursor == self.pos || cursor.is_tail() {
                    return self.try_handover().await;
                }
                encode::push_id(&mut self.out, &cursor);
                Metrics::add(&metrics.checkpoints_sent, 1);
            }
        }
        self.sent_position(cursor);
        self.try_handover().await;
    }

    /// Once the own subscription has caught up, join the family's hub as
    /// soon as the client's position lies inside the hub's window.
    async fn try_handover(&mut self) {
        let Source::Own {
            caught_up: true,
            hub_requested,
            ..
        } = &mut self.source
        else {
            return;
        };
        let hub = if *hub_requested {
            self.state.hubs.existing(self.family)
        } else {
            *hub_requested = true;
            match self.state.hubs.ready(self.family).await {
                Ok(hub) => Some(hub),
                Err(_) => {
                    tracing::debug!(family = %self.family, "shared subscription unavailable; staying on the client's own");
                    None
                }
            }
        };
        let Some(hub) = hub else { return };
        if let Ok(joined) = hub.join_after(&self.pos, true) {
            self.switch_to_hub(hub, joined);
        }
    }

    /// The client fell behind the hub's broadcast buffer.
    async fn on_lagged(&mut self) {
        Metrics::add(&self.state.metrics.lagged, 1);
        if self.state.config.slow_client == SlowClientPolicy::Disconnect {
            encode::push_error(
                &mut self.out,
                None,
                &json!({
                    "error": "lagged",
                    "cursor": self.pos.to_string(),
                    "detail": "the client fell too far behind; reconnect with Last-Event-ID to resume",
                }),
            );
            Metrics::add(&self.state.metrics.errors_sent, 1);
            return self.finish();
        }
        let Source::Hub { hub, .. } = &self.source else {
            return;
        };
        let hub = hub.clone();
        self.source = Source::Done;
        // Resume from the last position told; events passed over since then
        // are filtered out again on the way.
        self.skipped = None;
        self.checkpoint_at = None;
        match hub.join_after(&self.pos, true) {
            Ok(joined) => return self.switch_to_hub(hub, joined),
            Err(JoinRefused::Gone | JoinRefused::OutOfWindow) => {}
        }
        let opened = open_own(
            &self.state,
            self.family,
            self.pos.clone(),
            &self.filter.clone(),
            "Last-Event-ID",
        )
        .await;
        match opened {
            Ok((stream, gauge)) => self.switch_to_own(stream, gauge),
            Err(e) => {
                let mut json = e.body();
                if json.get("cursor").is_none() {
                    json["cursor"] = self.pos.to_string().into();
                }
                encode::push_error(&mut self.out, None, &json);
                Metrics::add(&self.state.metrics.errors_sent, 1);
                self.finish();
            }
        }
    }
}
