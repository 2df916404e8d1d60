//! Consumers: one task each, reading through one delivery path, recording
//! every event it receives and every segment (subscribe to end) in the
//! history, and obeying the schedule's operations (resume, stall).

use std::sync::Arc;
use std::time::Duration;

use ff_core::backend::{DeliveryItem, StreamBackend};
use ff_core::engine_error::EngineError;
use ff_core::filter::SubscriptionFilter;
use ff_core::stream_events::Family;
use ff_core::stream_subscribe::StreamCursor;
use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::sync::{mpsc, watch};

use super::history::{
    ConsumerSpec, DeliveryPath, FilterSpec, FirstStart, Recorder, SegmentEnd, SegmentStart,
};
use super::plan::ConsumerOp;
use super::sse::{OpenError, SseConnection};
use super::world::{ck_of, World};

/// What a consumer reads: an event (with its number), a position only
/// (caught up or a checkpoint), or an error.
enum Item {
    Event(u64, StreamCursor),
    CaughtUp(StreamCursor),
    Position(StreamCursor),
    Error(EngineError),
    Nothing,
}

/// Publish cursors handed out, by key: an event number, or
/// [`HANDED_BY_FAULT`]; each with the number of the event it names.
pub type Handed = std::collections::HashMap<u64, (u64, StreamCursor)>;

/// The key of the publish cursor a fault hands out (a publish made while
/// an older transaction is open).
pub const HANDED_BY_FAULT: u64 = 0;

/// Control of a running consumer.
pub struct ConsumerHandle {
    ops: mpsc::UnboundedSender<ConsumerOp>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl ConsumerHandle {
    /// Send an operation.
    pub fn send(&self, op: ConsumerOp) {
        let _ = self.ops.send(op);
    }

    /// A sender of operations, for the schedule's task.
    pub fn ops_sender(&self) -> mpsc::UnboundedSender<ConsumerOp> {
        self.ops.clone()
    }

    /// Stop the consumer and wait for it.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Where the consumer's events come from.
pub struct Sources {
    /// The world.
    pub world: Arc<dyn World>,
    /// The gateway's address, for SSE consumers.
    pub gateway: Option<std::net::SocketAddr>,
    /// Publish cursors handed out: by event number once acknowledged, and
    /// under [`HANDED_BY_FAULT`] the one a fault hands out.
    pub publish_cursors: watch::Receiver<Handed>,
}

fn filter_of(spec: &FilterSpec) -> SubscriptionFilter {
    match spec {
        FilterSpec::All => SubscriptionFilter::default(),
        FilterSpec::Namespace(ns) => SubscriptionFilter::default().with_namespace(ns.clone()),
        FilterSpec::Execution(e) => SubscriptionFilter::default().with_execution_id(*e),
    }
}

fn query_of(spec: &FilterSpec) -> String {
    match spec {
        FilterSpec::All => String::new(),
        FilterSpec::Namespace(ns) => format!("namespace={ns}"),
        FilterSpec::Execution(e) => format!(
            "execution_id={}",
            e.to_string()
                .replace('{', "%7B")
                .replace('}', "%7D")
                .replace(':', "%3A")
        ),
    }
}

/// Start consumer `spec`.
pub fn spawn(spec: ConsumerSpec, sources: Arc<Sources>, rec: Recorder) -> ConsumerHandle {
    let (ops, ops_rx) = mpsc::unbounded_channel();
    let (stop, stop_rx) = watch::channel(false);
    rec.consumer(spec.clone());
    let task = tokio::spawn(run(spec, sources, rec, ops_rx, stop_rx));
    ConsumerHandle { ops, stop, task }
}

async fn run(
    spec: ConsumerSpec,
    sources: Arc<Sources>,
    rec: Recorder,
    mut ops: mpsc::UnboundedReceiver<ConsumerOp>,
    mut stop: watch::Receiver<bool>,
) {
    let name = format!("checker-{}", spec.id);
    let store = sources.world.store();
    let mut position: Option<StreamCursor> = None;
    // Which event each received cursor names, to place a stored cursor.
    let mut named: std::collections::HashMap<StreamCursor, u64> = std::collections::HashMap::new();
    let mut stalled = stop.clone();
    let mut start = SegmentStart::First(spec.first.clone());
    let mut away = None;
    // The publish cursor a first start waited for: a segment that ends
    // before any position restarts from it, whatever key it was found by.
    let mut first_cursor: Option<StreamCursor> = None;
    loop {
        if let Some(d) = away.take() {
            tokio::select! {
                _ = tokio::time::sleep(d) => {}
                _ = async { let _ = stalled.wait_for(|s| *s).await; } => return,
            }
        }
        if *stop.borrow() {
            return;
        }
        let cursor = match &start {
            SegmentStart::First(FirstStart::Tail) => StreamCursor::empty(),
            SegmentStart::First(FirstStart::Beginning) | SegmentStart::AfterExpiry => {
                StreamCursor::beginning()
            }
            SegmentStart::First(FirstStart::PublishCursor(_)) if first_cursor.is_some() => {
                first_cursor.clone().expect("checked by the guard")
            }
            SegmentStart::First(FirstStart::PublishCursor(ck)) => {
                let mut cursors = sources.publish_cursors.clone();
                let found = tokio::select! {
                    c = async { cursors.wait_for(|m| m.contains_key(ck)).await.ok().map(|m| m[ck].clone()) } => c,
                    _ = async { let _ = stop.wait_for(|s| *s).await; } => None,
                };
                match found {
                    Some((named, c)) => {
                        if named != *ck {
                            rec.set_first(spec.id, FirstStart::PublishCursor(named));
                            start = SegmentStart::First(FirstStart::PublishCursor(named));
                        }
                        first_cursor = Some(c.clone());
                        c
                    }
                    None => return,
                }
            }
            SegmentStart::Resume if spec.path == DeliveryPath::Store => {
                match store.load(&name).await {
                    Ok(Some(c)) => {
                        if position.as_ref() != Some(&c) {
                            start = SegmentStart::Restored(named.get(&c).copied());
                        }
                        c
                    }
                    Ok(None) => position.clone().unwrap_or_else(StreamCursor::empty),
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                }
            }
            SegmentStart::Resume | SegmentStart::Restored(_) => {
                position.clone().expect("resume needs a position")
            }
        };
        rec.begin(spec.id, start.clone(), &cursor);
        let opened = open(&spec, &sources, cursor).await;
        let mut items = match opened {
            Ok(items) => items,
            Err(e) => {
                let expired = matches!(e, EngineError::CursorExpired { .. });
                rec.end(
                    spec.id,
                    if expired {
                        SegmentEnd::Expired(e.to_string())
                    } else {
                        SegmentEnd::Failed(e.to_string())
                    },
                );
                start = next_start(expired, &position, start);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        rec.subscribed(spec.id);
        let end = loop {
            tokio::select! {
                _ = async { let _ = stop.wait_for(|s| *s).await; } => break SegmentEnd::Stopped,
                op = ops.recv() => match op {
                    Some(ConsumerOp::Resume) | None => break SegmentEnd::Stopped,
                    Some(ConsumerOp::Away(d)) => {
                        away = Some(d);
                        break SegmentEnd::Stopped;
                    }
                    Some(ConsumerOp::Stall(d)) => {
                        let window = rec.fault(format!("consumer {} stalls {d:?}", spec.id), false, Some(spec.id));
                        tokio::select! {
                            _ = tokio::time::sleep(d) => {}
                            _ = async { let _ = stalled.wait_for(|s| *s).await; } => {}
                        }
                        rec.heal(window);
                    }
                },
                item = items.next() => match item {
                    None => break SegmentEnd::Failed("the stream ended".into()),
                    Some(Item::Event(ck, cursor)) => {
                        rec.received(spec.id, ck);
                        if spec.path == DeliveryPath::Store {
                            named.insert(cursor.clone(), ck);
                        }
                        position = Some(cursor);
                    }
                    Some(Item::CaughtUp(cursor)) => {
                        rec.caught_up(spec.id);
                        position = Some(cursor);
                    }
                    Some(Item::Position(cursor)) => position = Some(cursor),
                    Some(Item::Error(EngineError::Corrupt { cursor, .. })) => position = Some(cursor),
                    Some(Item::Error(e @ EngineError::CursorExpired { .. })) => {
                        break SegmentEnd::Expired(e.to_string())
                    }
                    Some(Item::Error(e @ EngineError::StreamDisconnected { .. })) => {
                        break SegmentEnd::Failed(e.to_string())
                    }
                    Some(Item::Error(e)) if e.is_terminal() => break SegmentEnd::Broken(e.to_string()),
                    Some(Item::Error(_)) | Some(Item::Nothing) => {}
                },
            }
            if spec.path == DeliveryPath::Store {
                if let Some(p) = &position {
                    let _ = store.store(&name, p).await;
                }
            }
        };
        drop(items);
        let expired = matches!(end, SegmentEnd::Expired(_));
        let stopped = end == SegmentEnd::Stopped;
        rec.end(spec.id, end);
        if *stop.borrow() {
            return;
        }
        start = next_start(expired, &position, start);
        if !stopped {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Where the next segment starts: from the beginning after an expiry,
/// else from the consumer's own position (or as before, with none yet).
fn next_start(
    expired: bool,
    position: &Option<StreamCursor>,
    before: SegmentStart,
) -> SegmentStart {
    if expired {
        SegmentStart::AfterExpiry
    } else if position.is_some() {
        SegmentStart::Resume
    } else {
        before
    }
}

async fn open(
    spec: &ConsumerSpec,
    sources: &Sources,
    cursor: StreamCursor,
) -> Result<BoxStream<'static, Item>, EngineError> {
    let filter = filter_of(&spec.filter);
    match spec.path {
        DeliveryPath::Sse => open_sse(spec, sources, cursor).await,
        DeliveryPath::Typed => {
            let backend = sources.world.reader().await?;
            typed(backend, spec.family, cursor, &filter).await
        }
        DeliveryPath::Partitions => {
            let parts = spec.partitions.clone().unwrap_or_default();
            let stream = sources
                .world
                .subscribe_partitions(spec.family, &parts, cursor, &filter)
                .await?;
            Ok(delivery(stream))
        }
        DeliveryPath::Delivery | DeliveryPath::Store => {
            let backend = sources.world.reader().await?;
            let stream = backend
                .subscribe_family(spec.family, cursor, &filter)
                .await?;
            Ok(delivery(stream))
        }
    }
}

fn delivery(stream: ff_core::backend::DeliveryStream) -> BoxStream<'static, Item> {
    stream
        .map(|item| match item {
            Ok(DeliveryItem::Event { event, meta }) => match ck_of(&meta) {
                Some(ck) => Item::Event(ck, event.cursor().clone()),
                None => Item::Position(event.cursor().clone()),
            },
            Ok(DeliveryItem::CaughtUp { cursor }) => Item::CaughtUp(cursor),
            Ok(other) => Item::Position(other.cursor().clone()),
            Err(e) => Item::Error(e),
        })
        .boxed()
}

async fn typed(
    backend: Arc<dyn StreamBackend>,
    family: Family,
    cursor: StreamCursor,
    filter: &SubscriptionFilter,
) -> Result<BoxStream<'static, Item>, EngineError> {
    fn item(meta: &ff_core::stream_events::EventMeta, cursor: &StreamCursor) -> Item {
        match ck_of(meta) {
            Some(ck) => Item::Event(ck, cursor.clone()),
            None => Item::Position(cursor.clone()),
        }
    }
    Ok(match family {
        Family::Completion => backend
            .subscribe_completion(cursor, filter)
            .await?
            .map(|r| match r {
                Ok(e) => item(e.meta(), &e.cursor),
                Err(e) => Item::Error(e),
            })
            .boxed(),
        Family::InstanceTags => backend
            .subscribe_instance_tags(cursor, filter)
            .await?
            .map(|r| match r {
                Ok(e) => item(e.meta(), e.cursor()),
                Err(e) => Item::Error(e),
            })
            .boxed(),
        Family::SignalDelivery => backend
            .subscribe_signal_delivery(cursor, filter)
            .await?
            .map(|r| match r {
                Ok(e) => item(e.meta(), &e.cursor),
                Err(e) => Item::Error(e),
            })
            .boxed(),
        _ => backend
            .subscribe_lease_history(cursor, filter)
            .await?
            .map(|r| match r {
                Ok(e) => item(e.meta(), e.cursor()),
                Err(e) => Item::Error(e),
            })
            .boxed(),
    })
}

async fn open_sse(
    spec: &ConsumerSpec,
    sources: &Sources,
    cursor: StreamCursor,
) -> Result<BoxStream<'static, Item>, EngineError> {
    let addr = sources
        .gateway
        .ok_or(EngineError::Unavailable { op: "sse".into() })?;
    let mut query = query_of(&spec.filter);
    let last = if cursor.is_tail() {
        None
    } else if cursor.is_beginning() {
        if !query.is_empty() {
            query.push('&');
        }
        query.push_str("from=beginning");
        None
    } else {
        Some(cursor.to_string())
    };
    let path = if query.is_empty() {
        format!("/v1/streams/{}", spec.family.as_str())
    } else {
        format!("/v1/streams/{}?{query}", spec.family.as_str())
    };
    let conn = match SseConnection::open(addr, &path, last.as_deref()).await {
        Ok(c) => c,
        Err(OpenError::Status(410, body)) => {
            return Err(EngineError::CursorExpired {
                cursor,
                oldest: None,
                detail: body,
            })
        }
        Err(OpenError::Status(status, body)) => {
            return Err(EngineError::Backend {
                backend: "gateway",
                detail: format!("HTTP {status}: {body}"),
            })
        }
        Err(OpenError::Io(e)) => {
            return Err(EngineError::Backend {
                backend: "gateway",
                detail: e,
            })
        }
    };
    let tail = cursor.is_tail();
    let stream = futures::stream::unfold((conn, true), move |(mut conn, first)| async move {
        let m = conn.next().await?;
        let item = sse_item(&m, first && tail);
        Some((item, (conn, false)))
    });
    Ok(stream.boxed())
}

fn sse_item(m: &super::sse::Message, connect_of_tail: bool) -> Item {
    let cursor =
        m.id.as_deref()
            .and_then(|id| id.parse::<StreamCursor>().ok());
    match (m.event.as_deref(), &m.data, cursor) {
        (Some("ff-error"), Some(data), _) => {
            let json: serde_json::Value = serde_json::from_str(data).unwrap_or_default();
            let code = json["error"].as_str().unwrap_or("unknown").to_owned();
            match code.as_str() {
                "cursor_expired" => Item::Error(EngineError::CursorExpired {
                    cursor: StreamCursor::empty(),
                    oldest: None,
                    detail: data.clone(),
                }),
                "disconnected" => Item::Error(EngineError::StreamDisconnected {
                    cursor: StreamCursor::empty(),
                }),
                _ => Item::Error(EngineError::Backend {
                    backend: "gateway",
                    detail: data.clone(),
                }),
            }
        }
        (Some("ff-position"), _, Some(cursor)) if connect_of_tail => Item::CaughtUp(cursor),
        (Some("ff-position"), _, Some(cursor)) => Item::Position(cursor),
        (_, Some(data), Some(cursor)) => {
            let json: serde_json::Value = serde_json::from_str(data).unwrap_or_default();
            match json["tags"][super::history::CK_TAG]
                .as_str()
                .and_then(|s| s.parse().ok())
            {
                Some(ck) => Item::Event(ck, cursor),
                None => Item::Position(cursor),
            }
        }
        (_, None, Some(cursor)) if connect_of_tail => Item::CaughtUp(cursor),
        (_, None, Some(cursor)) => Item::Position(cursor),
        _ => Item::Nothing,
    }
}
