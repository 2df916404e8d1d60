//! The record of one run: every publish attempt and every consumer
//! segment, with the times the oracle needs. Everything is written
//! through one [`Recorder`], so the oracle judges a single history.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ff_core::stream_events::Family;
use ff_core::stream_subscribe::StreamCursor;
use ff_core::types::ExecutionId;

/// A published event's number within its run (its `ck` metadata tag).
pub type Ck = u64;

/// The metadata tag that carries an event's [`Ck`].
pub const CK_TAG: &str = "ck";

/// A stored position, comparable within one stream (Valkey `(ms, seq)`,
/// Postgres `(xid, id)`, memory `(epoch, seq)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PosKey(pub u64, pub u64);

/// How an event was published.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PublishPath {
    /// `EventPublisher::publish`.
    Single,
    /// `EventPublisher::publish_batch` (this event is one of several).
    Batch,
    /// Inside the caller's own transaction (Postgres `append`).
    InTransaction,
    /// Plain SQL `INSERT` or a raw `XADD`, as the README documents.
    Raw,
    /// A backend instance made for one publish and dropped right after.
    ShortLived,
}

/// One publish attempt of one event.
#[derive(Clone, Debug)]
pub struct Published {
    /// The event's number.
    pub ck: Ck,
    /// Its family.
    pub family: Family,
    /// Its partition (the execution's `{fp:N}` modulo the world's count).
    pub partition: u16,
    /// Its execution.
    pub execution: ExecutionId,
    /// Its namespace metadata.
    pub namespace: Option<String>,
    /// The path it took.
    pub path: PublishPath,
    /// When the call (for a transaction: its `COMMIT`) began.
    pub started: Duration,
    /// When the call returned success.
    pub acked: Option<Duration>,
    /// When the call returned, successfully or not.
    pub finished: Duration,
    /// The cursor the publish returned.
    pub cursor: Option<StreamCursor>,
    /// The stored position, where the path reports it.
    pub pos: Option<PosKey>,
    /// The error the call returned (the event may still be stored).
    pub error: Option<String>,
}

/// How a consumer reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryPath {
    /// The typed per-family subscription.
    Typed,
    /// The delivery stream, resuming from checkpoints too.
    Delivery,
    /// The delivery stream, persisting every position in the cursor store
    /// and resuming from what the store loads.
    Store,
    /// SSE through the gateway, resuming with `Last-Event-ID`.
    Sse,
    /// A Valkey subscription over a subset of the partitions.
    Partitions,
}

/// What a consumer admits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FilterSpec {
    /// Everything.
    All,
    /// One namespace.
    Namespace(String),
    /// One execution.
    Execution(ExecutionId),
}

impl FilterSpec {
    /// Whether the published event passes.
    pub fn admits(&self, p: &Published) -> bool {
        match self {
            FilterSpec::All => true,
            FilterSpec::Namespace(ns) => p.namespace.as_deref() == Some(ns.as_str()),
            FilterSpec::Execution(e) => &p.execution == e,
        }
    }
}

/// Where a consumer begins the first time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FirstStart {
    /// The tail.
    Tail,
    /// Everything retained.
    Beginning,
    /// Exactly after a publish's own cursor.
    PublishCursor(Ck),
}

/// One consumer.
#[derive(Clone, Debug)]
pub struct ConsumerSpec {
    /// Its index.
    pub id: usize,
    /// The family it reads.
    pub family: Family,
    /// How it reads.
    pub path: DeliveryPath,
    /// What it admits.
    pub filter: FilterSpec,
    /// The partitions it follows (`None`: all).
    pub partitions: Option<Vec<u16>>,
    /// Where it begins.
    pub first: FirstStart,
}

/// How a segment began.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SegmentStart {
    /// The consumer's first start.
    First(FirstStart),
    /// From the consumer's own last position.
    Resume,
    /// From a position the cursor store gave back that is not the
    /// consumer's latest (the store lost writes): right after this event,
    /// or somewhere unknown (`None`, e.g. a checkpoint).
    Restored(Option<Ck>),
    /// From `beginning()`, after its position expired.
    AfterExpiry,
}

/// How a segment ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SegmentEnd {
    /// Still reading.
    Open,
    /// Stopped by the checker (to resume, or at the end of the run).
    Stopped,
    /// `CursorExpired`, at subscribe or mid-stream.
    Expired(String),
    /// Any other error (the consumer resumes from its position).
    Failed(String),
    /// A terminal error mid-stream that the subscription should have
    /// recovered from by itself: neither `CursorExpired` nor the
    /// `StreamDisconnected` a reconnect policy gives up with.
    Broken(String),
}

/// One event a consumer received.
#[derive(Clone, Debug)]
pub struct Received {
    /// The event.
    pub ck: Ck,
    /// When it arrived.
    pub at: Duration,
}

/// One subscription of a consumer, from its start to its end.
#[derive(Clone, Debug)]
pub struct Segment {
    /// How it began.
    pub start: SegmentStart,
    /// The cursor it subscribed from (text; empty for the tail).
    pub from: String,
    /// When the subscribe call began.
    pub called: Duration,
    /// When it returned (SSE: when the connect message arrived).
    pub returned: Option<Duration>,
    /// When it reported being caught up.
    pub caught_up: Option<Duration>,
    /// The events, in order.
    pub events: Vec<Received>,
    /// How it ended.
    pub end: SegmentEnd,
}

/// A window in which a fault was active (wake-up bounds do not apply).
#[derive(Clone, Debug)]
pub struct FaultWindow {
    /// What it was.
    pub what: String,
    /// When it began.
    pub from: Duration,
    /// When it was healed (`None`: until the end of the run).
    pub until: Option<Duration>,
    /// Whether it may lose acknowledged writes (a lossy failover).
    pub lossy: bool,
    /// The consumer it concerns alone, if any (a stalled client).
    pub consumer: Option<usize>,
}

/// The whole record.
#[derive(Debug, Default)]
pub struct History {
    /// Publishes by event number.
    pub published: BTreeMap<Ck, Published>,
    /// Consumers and their segments.
    pub consumers: Vec<(ConsumerSpec, Vec<Segment>)>,
    /// Faults injected.
    pub faults: Vec<FaultWindow>,
    /// Notes of what the nemesis did, in order, for the report.
    pub log: Vec<(Duration, String)>,
}

/// Shared writer of a [`History`]; cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    origin: Instant,
    history: Arc<Mutex<History>>,
}

impl fmt::Debug for Recorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recorder").finish_non_exhaustive()
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    /// A new, empty history whose clock starts now.
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
            history: Arc::new(Mutex::new(History::default())),
        }
    }

    /// Time since the run began.
    pub fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    /// The history, locked.
    pub fn lock(&self) -> MutexGuard<'_, History> {
        self.history.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Note what happened, for the report.
    pub fn note(&self, what: impl Into<String>) {
        let at = self.now();
        self.log(at, what.into());
    }

    /// Append to the run's log; with `FF_CHECKER_LIVE` set, print it too
    /// (for a run that hangs before its report).
    fn log(&self, at: Duration, line: String) {
        static LIVE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        if *LIVE.get_or_init(|| std::env::var_os("FF_CHECKER_LIVE").is_some()) {
            eprintln!("{:>10.3}s  {line}", at.as_secs_f64());
        }
        self.lock().log.push((at, line));
    }

    /// Open a fault window; returns its index for [`Recorder::heal`].
    pub fn fault(&self, what: impl Into<String>, lossy: bool, consumer: Option<usize>) -> usize {
        let what = what.into();
        let from = self.now();
        self.log(from, format!("fault: {what}"));
        let mut h = self.lock();
        h.faults.push(FaultWindow {
            what,
            from,
            until: None,
            lossy,
            consumer,
        });
        h.faults.len() - 1
    }

    /// Close a fault window.
    pub fn heal(&self, index: usize) {
        let now = self.now();
        let what = {
            let mut h = self.lock();
            let Some(w) = h.faults.get_mut(index) else {
                return;
            };
            w.until = Some(now);
            w.what.clone()
        };
        self.log(now, format!("healed: {what}"));
    }

    /// Register a consumer.
    pub fn consumer(&self, spec: ConsumerSpec) {
        let mut h = self.lock();
        debug_assert_eq!(h.consumers.len(), spec.id);
        h.consumers.push((spec, Vec::new()));
    }

    /// Name the publish whose cursor consumer `id` starts from, once known.
    pub fn set_first(&self, id: usize, first: FirstStart) {
        self.lock().consumers[id].0.first = first;
    }

    /// Begin a segment of consumer `id` from `from`.
    pub fn begin(&self, id: usize, start: SegmentStart, from: &StreamCursor) {
        let called = self.now();
        self.lock().consumers[id].1.push(Segment {
            start,
            from: from.to_string(),
            called,
            returned: None,
            caught_up: None,
            events: Vec::new(),
            end: SegmentEnd::Open,
        });
    }

    fn with_segment(&self, id: usize, f: impl FnOnce(&mut Segment, Duration)) {
        let now = self.now();
        let mut h = self.lock();
        if let Some(seg) = h.consumers[id].1.last_mut() {
            f(seg, now);
        }
    }

    /// The open segment's subscribe call returned.
    pub fn subscribed(&self, id: usize) {
        self.with_segment(id, |s, now| {
            s.returned.get_or_insert(now);
        });
    }

    /// The open segment is caught up.
    pub fn caught_up(&self, id: usize) {
        self.with_segment(id, |s, now| {
            s.caught_up.get_or_insert(now);
        });
    }

    /// The open segment received an event.
    pub fn received(&self, id: usize, ck: Ck) {
        self.with_segment(id, |s, at| s.events.push(Received { ck, at }));
    }

    /// The open segment ended.
    pub fn end(&self, id: usize, end: SegmentEnd) {
        self.with_segment(id, |s, _| {
            if s.end == SegmentEnd::Open {
                s.end = end;
            }
        });
    }

    /// How many events consumer `id` has received in all.
    pub fn received_count(&self, id: usize) -> usize {
        self.lock().consumers[id]
            .1
            .iter()
            .map(|s| s.events.len())
            .sum()
    }
}
