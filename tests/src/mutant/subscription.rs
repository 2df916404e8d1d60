//! One subscription of the mutant backend: reads its family's log in
//! batches after its position over a simulated connection, yields events
//! and markers, waits for a wake-up (its own process's or the store's
//! cross-process one) or a 30 s poll, and reconnects exactly where it
//! stood when its connection is severed.
//!
//! `scanned` is the last position read (delivered or filtered out) and
//! `reported` the last position handed to the consumer; items wait in
//! `ready` (at most one batch) until the consumer asks.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use ff_core::backend::{DeliveryItem, DeliveryStream};
use ff_core::engine_error::EngineError;
use ff_core::filter::SubscriptionFilter;
use ff_core::stream_events::record::{decode_new_event, Field};
use ff_core::stream_events::{EventMeta, Family, NewEvent};
use futures::stream;
use tokio::sync::watch;
use tokio::time::Instant;

use super::cursor;
use super::store::{Body, Read, Record, Store};
use super::text::admits_text;
use super::Mutation;

/// Records read per batch.
pub(crate) const BATCH: usize = 10;
/// How often a subscription polls without a wake-up.
pub(crate) const SAFETY_NET_POLL: Duration = Duration::from_secs(30);
/// How long filtered-out reads go unreported before a `Checkpoint`.
pub(crate) const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(100);

/// Counts a subscription as open and holds its connection until dropped.
struct Open {
    store: Arc<Store>,
    connection: u64,
}

impl Drop for Open {
    fn drop(&mut self) {
        if self.store.has(Mutation::DropLeaksTheSubscription) {
            return;
        }
        self.store.disconnect(self.connection);
        self.store
            .open_subscriptions
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Where a subscription starts.
pub(crate) struct Start {
    /// Position resolved at subscribe time (tail start or cursor).
    pub after: u64,
    /// Head at subscribe time: `CaughtUp` once scanned.
    pub head: u64,
    /// Resolve the tail at the first read instead (a mutation).
    pub resolve_late: bool,
}

pub(crate) struct Subscription {
    store: Arc<Store>,
    family: Family,
    filter: SubscriptionFilter,
    resolved: u64,
    scanned: u64,
    reported: u64,
    caught_up_at: Option<u64>,
    caught_up_twice: bool,
    resolve_late: bool,
    read_once: bool,
    last_yield: Instant,
    ready: VecDeque<(u64, DeliveryItem)>,
    local: watch::Receiver<u64>,
    remote: watch::Receiver<u64>,
    done: bool,
    open: Open,
}

impl Subscription {
    pub fn start(
        store: Arc<Store>,
        local: watch::Receiver<u64>,
        family: Family,
        filter: SubscriptionFilter,
        start: Start,
    ) -> DeliveryStream {
        store
            .open_subscriptions
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let connection = store.connect();
        let mut filter = filter;
        if store.has(Mutation::FilterIgnoresNamespace) {
            filter.namespace = None;
        }
        if store.has(Mutation::FilterHonoursFirstKindOnly) {
            if let Some(kinds) = &mut filter.kinds {
                kinds.truncate(1);
            }
        }
        let sub = Subscription {
            remote: store.notifications(),
            store: store.clone(),
            family,
            filter,
            resolved: start.after,
            scanned: start.after,
            reported: start.after,
            caught_up_at: Some(start.head),
            caught_up_twice: false,
            resolve_late: start.resolve_late,
            read_once: false,
            last_yield: Instant::now(),
            ready: VecDeque::new(),
            local,
            done: false,
            open: Open { store, connection },
        };
        Box::pin(stream::unfold(sub, |mut sub| async move {
            let item = sub.next_item().await?;
            Some((item, sub))
        }))
    }

    fn has(&self, m: Mutation) -> bool {
        self.store.has(m)
    }

    fn cursor(&self, seq: u64) -> ff_core::stream_subscribe::StreamCursor {
        cursor::encode(&self.store, self.family, seq)
    }

    async fn next_item(&mut self) -> Option<Result<DeliveryItem, EngineError>> {
        if self.done {
            return None;
        }
        if self.resolve_late {
            self.resolve_late = false;
            let head = self.store.with_log(self.family, |log| log.head());
            (self.resolved, self.scanned, self.reported) = (head, head, head);
            self.caught_up_at = Some(head);
        }
        loop {
            if let Some((seq, item)) = self.ready.pop_front() {
                self.reported = seq;
                self.last_yield = Instant::now();
                if matches!(item, DeliveryItem::Corrupt { .. })
                    && self.has(Mutation::CorruptIsTerminal)
                {
                    self.done = true;
                    let DeliveryItem::Corrupt { cursor, detail } = item else {
                        unreachable!()
                    };
                    return Some(Err(EngineError::Corrupt { cursor, detail }));
                }
                return Some(Ok(item));
            }
            if !self.store.is_live(self.open.connection) {
                self.reconnect();
            }
            self.local.borrow_and_update();
            self.remote.borrow_and_update();
            let read = match self.read_batch() {
                Ok(read) => read,
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            };
            let due = self.last_yield + CHECKPOINT_INTERVAL;
            if self.ready.is_empty()
                && self.scanned > self.reported
                && Instant::now() >= due
                && !self.has(Mutation::NoCheckpoints)
            {
                let cursor = self.cursor(self.scanned);
                self.ready
                    .push_back((self.scanned, DeliveryItem::Checkpoint { cursor }));
            }
            if !self.ready.is_empty() || read == BATCH {
                continue;
            }
            let wait_until = if self.scanned > self.reported {
                due.min(Instant::now() + SAFETY_NET_POLL)
            } else {
                Instant::now() + SAFETY_NET_POLL
            };
            self.wait(wait_until).await;
        }
    }

    /// Wait for a wake-up or `until`.
    async fn wait(&mut self, until: Instant) {
        let deadline = tokio::time::sleep_until(until);
        if self.has(Mutation::NoWakeUp) {
            deadline.await;
            return;
        }
        let cross = !self.has(Mutation::NoCrossProcessWakeUp);
        let remote = &mut self.remote;
        tokio::select! {
            _ = deadline => {}
            _ = self.local.changed() => {}
            _ = async { if cross { let _ = remote.changed().await; } else { std::future::pending::<()>().await } } => {}
        }
    }

    /// Replace a severed connection and continue after `scanned`.
    fn reconnect(&mut self) {
        self.open.connection = self.store.connect();
        if self.has(Mutation::ReconnectRepeats) {
            self.scanned = self.resolved;
        }
        if self.has(Mutation::ReconnectSkips) {
            self.scanned = self.store.with_log(self.family, |log| log.head());
        }
    }

    fn caught_up_if_reached(&mut self) {
        if let Some(target) = self.caught_up_at {
            if self.scanned >= target && !self.has(Mutation::NeverCaughtUp) {
                self.caught_up_at = None;
                if self.has(Mutation::CaughtUpTwice) && !self.caught_up_twice {
                    // Once more, with the next event read.
                    self.caught_up_twice = true;
                    self.caught_up_at = Some(target + 1);
                }
                let cursor = self.cursor(target);
                self.ready
                    .push_back((target, DeliveryItem::CaughtUp { cursor }));
            }
        }
    }

    fn read_batch(&mut self) -> Result<usize, EngineError> {
        self.caught_up_if_reached();
        let max = if self.has(Mutation::UnboundedReadAhead) {
            usize::MAX
        } else {
            BATCH
        };
        let records = loop {
            let read =
                self.store
                    .with_log(self.family, |log| match log.read_after(self.scanned, max) {
                        Read::Expired { oldest } => Err(oldest),
                        Read::Records(r) => Ok(r),
                    });
            match read {
                Ok(records) => break records,
                Err(oldest) if self.has(Mutation::ExpiredCursorsRestart) => self.scanned = oldest,
                Err(oldest) => {
                    return Err(EngineError::CursorExpired {
                        cursor: self.cursor(self.scanned),
                        oldest: (!self.has(Mutation::ExpiredWithoutOldest))
                            .then(|| self.cursor(oldest)),
                        detail: "evicted by retention".into(),
                    })
                }
            }
        };
        let mut records = records;
        if self.has(Mutation::ReordersEvents) && records.len() >= 3 {
            records.swap(1, 2);
        }
        let first_read = !std::mem::replace(&mut self.read_once, true);
        if let (true, Some(target), Some(last)) = (first_read, self.caught_up_at, records.last()) {
            if self.has(Mutation::CaughtUpBeforeAFullFirstRead)
                && records.len() == BATCH
                && last.seq >= target
            {
                self.caught_up_at = None;
                let cursor = self.cursor(target);
                self.ready
                    .push_back((target, DeliveryItem::CaughtUp { cursor }));
            }
        }
        for (processed, record) in records.iter().enumerate() {
            if self.has(Mutation::NonNumericVersionRetriesForever) && non_numeric_version(record) {
                return Ok(processed);
            }
            self.scanned = self.scanned.max(record.seq);
            for item in self.deliver(record) {
                self.ready.push_back((record.seq, item));
            }
            self.caught_up_if_reached();
        }
        Ok(records.len())
    }

    /// The items a record yields under the filter (none, one, or — with a
    /// mutation — two).
    fn deliver(&mut self, record: &Record) -> Vec<DeliveryItem> {
        let cursor = self.cursor(record.seq);
        let (draft, meta, raw_exec) = match &record.body {
            Body::Event(draft, meta) => (draft.clone(), meta.clone(), None),
            Body::Raw(fields) => match decode_raw(self.family, &self.versions_read(fields)) {
                Ok(decoded) => decoded,
                Err(detail) => {
                    if self.has(Mutation::DropsCorruptRecords)
                        || (self.has(Mutation::FilteredSubscriptionsDropCorrupt)
                            && !self.filter.is_empty())
                    {
                        return Vec::new();
                    }
                    return vec![DeliveryItem::Corrupt { cursor, detail }];
                }
            },
        };
        if !self.admits(&draft, &meta, raw_exec.as_deref()) {
            return Vec::new();
        }
        if self.has(Mutation::SkipsAnEvent) && record.seq % 10 == 5 {
            return Vec::new();
        }
        let meta = if self.has(Mutation::DropsMetadata) {
            EventMeta::new()
        } else {
            meta
        };
        let mut items = Vec::new();
        let event = DeliveryItem::Event {
            event: draft.into_event(cursor, record.at),
            meta,
        };
        if self.has(Mutation::RepeatsAnEvent) && record.seq % 10 == 3 {
            items.push(event.clone());
        }
        items.push(event);
        items
    }

    /// The raw fields with the schema version as a mutation misreads it.
    fn versions_read(&self, fields: &[(Field, String)]) -> Vec<(Field, String)> {
        let dropped = |v: &str| {
            (self.has(Mutation::HigherVersionDecodedAnyway) && v.trim().parse::<u32>().is_ok())
                || (self.has(Mutation::VersionZeroReadAsOne) && v.trim() == "0")
        };
        fields
            .iter()
            .filter(|(f, v)| !(*f == Field::SchemaVersion && dropped(v)))
            .cloned()
            .collect()
    }

    fn admits(&self, draft: &NewEvent, meta: &EventMeta, raw_exec: Option<&str>) -> bool {
        if self.has(Mutation::FilterComparesRawText) {
            if let (Some(want), Some(text)) = (&self.filter.execution_id, raw_exec) {
                if want.to_string() != text {
                    return false;
                }
            }
        }
        let mut rest = self.filter.clone();
        (rest.namespace, rest.tag) = (None, None);
        admits_text(self.store.mutation, &self.filter, meta)
            && rest.matches_parts(draft.kind(), draft.execution_id(), meta)
    }
}

/// Whether `record` is an outside producer's with a schema version that
/// is not a number.
fn non_numeric_version(record: &Record) -> bool {
    match &record.body {
        Body::Raw(fields) => fields
            .iter()
            .any(|(f, v)| *f == Field::SchemaVersion && v.trim().parse::<u64>().is_err()),
        Body::Event(..) => false,
    }
}

/// Decode an outside producer's record: its event, its metadata, and the
/// execution id as stored.
fn decode_raw(
    family: Family,
    fields: &[(Field, String)],
) -> Result<(NewEvent, EventMeta, Option<String>), String> {
    let pairs: Vec<(&str, &str)> = fields.iter().map(|(f, v)| (f.name(), v.as_str())).collect();
    let draft = decode_new_event(family, pairs.as_slice()).map_err(|e| e.detail)?;
    let mut meta = EventMeta::new();
    let mut exec = None;
    for (field, value) in fields {
        match field {
            Field::Namespace => meta.namespace = Some(value.clone()),
            Field::Tags => {
                meta.tags = serde_json::from_str::<BTreeMap<String, String>>(value)
                    .map_err(|e| format!("field `tags`: {e}"))?
            }
            Field::ExecutionId => exec = Some(value.clone()),
            _ => {}
        }
    }
    Ok((draft, meta, exec))
}
