//! Helpers the suite functions share: drafting events, publishing, and
//! reading a delivery stream with deadlines instead of sleeps.

use std::time::Duration;

use futures::StreamExt;
use tokio::time::{timeout_at, Instant};

use crate::backend::{DeliveryItem, DeliveryStream, EventPublisher};
use crate::cursor::StreamCursor;
use crate::error::EngineError;
use crate::event::record::Field;
use crate::event::{EventMeta, Family, NewEvent, StreamEvent};
use crate::filter::SubscriptionFilter;
use crate::testkit::harness::{hook, Capability, EventOrder};
use crate::testkit::Harness;
use crate::types::ExecutionId;

/// How long any single expected item may take to arrive.
pub const ITEM_DEADLINE: Duration = Duration::from_secs(10);
/// The bound on live delivery latency (guarantee 4 in `docs/design.md`).
pub const LIVE_DEADLINE: Duration = Duration::from_secs(5);

/// `n` drafts of `family` cycling through its shapes, each with a fresh
/// execution id and `("run", run)`, `("n", i)` tags, so delivered events
/// can be matched to what was published.
pub fn drafts(family: Family, n: usize, run: &str) -> Vec<(NewEvent, EventMeta)> {
    let shapes: Vec<NewEvent> = crate::event::sample_drafts()
        .into_iter()
        .filter(|d| d.family() == family)
        .collect();
    (0..n)
        .map(|i| {
            let mut draft = shapes[i % shapes.len()].clone();
            set_execution_id(&mut draft, ExecutionId::new((i % 7) as u16));
            let meta = EventMeta::new()
                .with_tag("run", run)
                .with_tag("n", i.to_string());
            (draft, meta)
        })
        .collect()
}

/// Replace a draft's execution id.
pub fn set_execution_id(draft: &mut NewEvent, id: ExecutionId) {
    match draft {
        NewEvent::LeaseAcquired { execution_id, .. }
        | NewEvent::LeaseRenewed { execution_id, .. }
        | NewEvent::LeaseExpired { execution_id, .. }
        | NewEvent::LeaseReclaimed { execution_id, .. }
        | NewEvent::LeaseRevoked { execution_id, .. }
        | NewEvent::Completion { execution_id, .. }
        | NewEvent::SignalDelivery { execution_id, .. }
        | NewEvent::TagAttached { execution_id, .. }
        | NewEvent::TagCleared { execution_id, .. } => *execution_id = id,
    }
}

/// Publish each draft on its own, retrying transport errors (a publish that
/// failed on a killed connection was not applied), and return the cursors.
pub async fn publish_each(
    publisher: &dyn EventPublisher,
    drafts: &[(NewEvent, EventMeta)],
) -> Vec<StreamCursor> {
    let mut cursors = Vec::with_capacity(drafts.len());
    for (draft, meta) in drafts {
        cursors.push(publish_retrying(publisher, draft.clone(), meta.clone()).await);
    }
    cursors
}

/// Publish one draft, retrying transport errors until [`ITEM_DEADLINE`].
pub async fn publish_retrying(
    publisher: &dyn EventPublisher,
    draft: NewEvent,
    meta: EventMeta,
) -> StreamCursor {
    let deadline = Instant::now() + ITEM_DEADLINE;
    loop {
        match publisher.publish(draft.clone(), meta.clone()).await {
            Ok(c) => return c,
            Err(e @ (EngineError::Transport { .. } | EngineError::Backend { .. }))
                if Instant::now() < deadline =>
            {
                tracing::debug!("testkit: publish failed ({e}), retrying");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("publish failed: {e}"),
        }
    }
}

/// Publish all drafts as one batch.
pub async fn publish_batch(
    publisher: &dyn EventPublisher,
    drafts: &[(NewEvent, EventMeta)],
) -> Vec<StreamCursor> {
    let cursors = publisher
        .publish_batch(drafts.to_vec())
        .await
        .unwrap_or_else(|e| panic!("publish_batch of {} events failed: {e}", drafts.len()));
    assert_eq!(
        cursors.len(),
        drafts.len(),
        "publish_batch must return one cursor per event"
    );
    cursors
}

/// A delivery stream under test: it also checks that `CaughtUp` comes at
/// most once.
pub struct Sub {
    stream: DeliveryStream,
    caught_up: bool,
}

impl Sub {
    /// Wrap a delivery stream.
    pub fn new(stream: DeliveryStream) -> Self {
        Self {
            stream,
            caught_up: false,
        }
    }

    /// The next raw item, `None` after `within`.
    pub async fn next_raw(
        &mut self,
        within: Duration,
    ) -> Option<Option<Result<DeliveryItem, EngineError>>> {
        let next = timeout_at(Instant::now() + within, self.stream.next())
            .await
            .ok()?;
        if let Some(Ok(DeliveryItem::CaughtUp { .. })) = &next {
            assert!(!self.caught_up, "CaughtUp was yielded a second time");
            self.caught_up = true;
        }
        Some(next)
    }
}

/// Subscribe to `family` or panic naming why.
pub async fn subscribe<H: Harness + ?Sized>(
    h: &H,
    family: Family,
    cursor: StreamCursor,
    filter: &SubscriptionFilter,
) -> Sub {
    Sub::new(
        h.backend()
            .subscribe_family(family, cursor.clone(), filter)
            .await
            .unwrap_or_else(|e| panic!("subscribe {family} from {cursor:?} failed: {e}")),
    )
}

/// The next item, or panic after `within` / at end of stream / on error.
pub async fn next_item(stream: &mut Sub, within: Duration, what: &str) -> DeliveryItem {
    match stream.next_raw(within).await {
        None => panic!("timed out after {within:?} waiting for {what}"),
        Some(None) => panic!("stream ended while waiting for {what}"),
        Some(Some(Err(e))) => panic!("stream yielded an error while waiting for {what}: {e}"),
        Some(Some(Ok(item))) => item,
    }
}

/// Read events until `CaughtUp`; panic on `Corrupt` or errors. Returns the
/// events and the caught-up cursor.
pub async fn until_caught_up(
    stream: &mut Sub,
    what: &str,
) -> (Vec<(StreamEvent, EventMeta)>, StreamCursor) {
    let mut events: Vec<(StreamEvent, EventMeta)> = Vec::new();
    loop {
        let progress = || match events.last() {
            Some((last, meta)) => format!(
                "{what}, after {} events (the last {})",
                events.len(),
                describe(&last.to_new_event(), meta)
            ),
            None => format!("{what}, before any event"),
        };
        match next_item(stream, ITEM_DEADLINE, &progress()).await {
            DeliveryItem::Event { event, meta } => events.push((event, meta)),
            DeliveryItem::CaughtUp { cursor } => return (events, cursor),
            DeliveryItem::Checkpoint { .. } => {}
            other => panic!("unexpected {other:?} while waiting for {}", progress()),
        }
    }
}

/// Read exactly `n` events (skipping checkpoints); panic on anything else.
pub async fn take_events(stream: &mut Sub, n: usize, what: &str) -> Vec<(StreamEvent, EventMeta)> {
    let mut events = Vec::with_capacity(n);
    while events.len() < n {
        match next_item(stream, ITEM_DEADLINE, what).await {
            DeliveryItem::Event { event, meta } => events.push((event, meta)),
            DeliveryItem::Checkpoint { .. } | DeliveryItem::CaughtUp { .. } => {}
            other => panic!("unexpected {other:?} while waiting for {what}"),
        }
    }
    events
}

/// How an event is named in assertion messages: its `n` tag (its index
/// in what the test published), kind and execution id.
pub fn describe(event: &NewEvent, meta: &EventMeta) -> String {
    format!(
        "#{} ({} {})",
        meta.tags.get("n").map_or("?", |s| s),
        event.kind(),
        event.execution_id()
    )
}

/// The `n` tags of events, abbreviated after a dozen.
fn numbers(events: &[(NewEvent, EventMeta)]) -> String {
    let mut out: Vec<String> = events
        .iter()
        .take(12)
        .map(|(_, m)| m.tags.get("n").map_or("?", |s| s).to_owned())
        .collect();
    if events.len() > 12 {
        out.push(format!("… {} more", events.len() - 12));
    }
    out.join(",")
}

/// Assert delivered events equal the published drafts, in order, with
/// their metadata. The panic names `what` (say the family and scenario),
/// the counts, and the first differing event.
pub fn assert_delivered(
    delivered: &[(StreamEvent, EventMeta)],
    published: &[(NewEvent, EventMeta)],
    what: &str,
) {
    let got: Vec<(NewEvent, EventMeta)> = delivered
        .iter()
        .map(|(e, m)| (e.to_new_event(), m.clone()))
        .collect();
    if got == published {
        return;
    }
    let first = got
        .iter()
        .zip(published)
        .position(|(g, p)| g != p)
        .unwrap_or(got.len().min(published.len()));
    let at = |v: &[(NewEvent, EventMeta)]| {
        v.get(first)
            .map_or_else(|| "nothing".to_owned(), |(e, m)| describe(e, m))
    };
    let detail = match (got.get(first), published.get(first)) {
        (Some(g), Some(p)) if g.0 == p.0 => format!(
            " (same event, metadata differs: got {:?}, expected {:?})",
            g.1, p.1
        ),
        (Some(g), Some(p)) if g.1 == p.1 => format!(
            " (same metadata, fields differ: got {:?}, expected {:?})",
            g.0, p.0
        ),
        _ => String::new(),
    };
    panic!(
        "{what}: delivered {} events, expected {}; first difference at position {first}: \
         got {}, expected {}{detail}. Delivered [{}], expected [{}]",
        got.len(),
        published.len(),
        at(&got),
        at(published),
        numbers(&got),
        numbers(published),
    );
}

/// [`assert_delivered`] as `order` allows: in publish order under a total
/// order; under a per-partition order, each partition's events in publish
/// order (the partitions interleaved in any way), and nothing else.
pub fn assert_delivered_in(
    order: EventOrder,
    delivered: &[(StreamEvent, EventMeta)],
    published: &[(NewEvent, EventMeta)],
    what: &str,
) {
    let EventOrder::PerPartition { partitions } = order else {
        return assert_delivered(delivered, published, what);
    };
    for n in 0..partitions {
        let got: Vec<(StreamEvent, EventMeta)> = delivered
            .iter()
            .filter(|(e, _)| order.partition_of(e.execution_id()) == n)
            .cloned()
            .collect();
        let expected: Vec<(NewEvent, EventMeta)> = published
            .iter()
            .filter(|(d, _)| order.partition_of(d.execution_id()) == n)
            .cloned()
            .collect();
        assert_delivered(
            &got,
            &expected,
            &format!("{what} (partition {n} of {partitions})"),
        );
    }
}

/// Assert `delivered` is a prefix of `published` as `order` allows: under a
/// per-partition order, each partition's events are a prefix of that
/// partition's published events.
pub fn assert_prefix_in(
    order: EventOrder,
    delivered: &[(StreamEvent, EventMeta)],
    published: &[(NewEvent, EventMeta)],
    what: &str,
) {
    let EventOrder::PerPartition { partitions } = order else {
        let n = delivered.len().min(published.len());
        return assert_delivered(delivered, &published[..n], what);
    };
    for p in 0..partitions {
        let got: Vec<(StreamEvent, EventMeta)> = delivered
            .iter()
            .filter(|(e, _)| order.partition_of(e.execution_id()) == p)
            .cloned()
            .collect();
        let expected: Vec<(NewEvent, EventMeta)> = published
            .iter()
            .filter(|(d, _)| order.partition_of(d.execution_id()) == p)
            .take(got.len())
            .cloned()
            .collect();
        assert_delivered(
            &got,
            &expected,
            &format!("{what} (partition {p} of {partitions})"),
        );
    }
}

/// Assert the cursors publish returned for `drafts` strictly increase:
/// all of them under a total order, those of each partition under a
/// per-partition order (see [`assert_increasing`]).
pub fn assert_publish_cursors_increase(
    order: EventOrder,
    cursors: &[StreamCursor],
    drafts: &[(NewEvent, EventMeta)],
    what: &str,
) {
    let EventOrder::PerPartition { partitions } = order else {
        return assert_increasing(cursors, what);
    };
    for n in 0..partitions {
        let own: Vec<&StreamCursor> = cursors
            .iter()
            .zip(drafts)
            .filter(|(_, (d, _))| order.partition_of(d.execution_id()) == n)
            .map(|(c, _)| c)
            .collect();
        assert_increasing(&own, &format!("{what} (partition {n} of {partitions})"));
    }
}

/// `n` drafts as [`drafts`] makes them, all of one execution partition
/// (partition 0 under any partitioning): for scenarios about one stream's
/// history, such as retention, where a per-partition order has one stream
/// per partition.
pub fn drafts_of_one_partition(family: Family, n: usize, run: &str) -> Vec<(NewEvent, EventMeta)> {
    let mut drafts = drafts(family, n, run);
    for (draft, _) in &mut drafts {
        set_execution_id(draft, ExecutionId::new(0));
    }
    drafts
}

/// Assert cursors strictly increase — by [`StreamCursor::position_cmp`]
/// and by their raw bytes alike (positions compare by byte order, see "Cursors" in `docs/design.md`;
/// only the partitioned Valkey format `0x04`, one position per partition,
/// is ordered by `position_cmp` alone) — naming the first pair that does
/// not.
pub fn assert_increasing<C: std::borrow::Borrow<StreamCursor>>(cursors: &[C], what: &str) {
    const PARTITIONED: u8 = 0x04;
    for (i, pair) in cursors.windows(2).enumerate() {
        let (a, b) = (pair[0].borrow(), pair[1].borrow());
        let by_bytes = a.format_byte() == Some(PARTITIONED) || a.as_bytes() < b.as_bytes();
        assert!(
            a.position_cmp(b) == Some(std::cmp::Ordering::Less) && by_bytes,
            "{what}: cursor {i} ({a:?}) does not sort before cursor {} ({b:?}) by its bytes; \
             positions must be unsigned big-endian (or otherwise byte-comparable) within a family",
            i + 1
        );
    }
}

/// How a backend refused a cursor.
#[derive(Debug)]
pub enum Refusal {
    /// `InvalidCursor` at subscribe.
    Invalid,
    /// `CursorExpired` (at subscribe or as the first item), with its `oldest`.
    Expired(Option<StreamCursor>),
}

/// Subscribe from `cursor` and expect it refused: `CursorExpired` from the
/// subscribe call or as the stream's first item (then the stream ends), or
/// — when `invalid_ok` — `InvalidCursor` at subscribe. Never events, never
/// an endless wait.
pub async fn expect_refused<H: Harness + ?Sized>(
    h: &H,
    family: Family,
    cursor: &StreamCursor,
    invalid_ok: bool,
    what: &str,
) -> Refusal {
    let expected = if invalid_ok {
        "InvalidCursor or CursorExpired"
    } else {
        "CursorExpired"
    };
    let result = h
        .backend()
        .subscribe_family(family, cursor.clone(), &SubscriptionFilter::default())
        .await;
    let mut stream = match result {
        Err(EngineError::CursorExpired { oldest, .. }) => return Refusal::Expired(oldest),
        Err(EngineError::InvalidCursor { .. }) if invalid_ok => return Refusal::Invalid,
        Err(e) => panic!("{what}: subscribe failed with `{e}`, expected {expected}"),
        Ok(s) => s,
    };
    match timeout_at(Instant::now() + ITEM_DEADLINE, stream.next()).await {
        Err(_) => panic!(
            "{what}: was accepted and waits for events; expected {expected} (never an endless wait)"
        ),
        Ok(Some(Err(EngineError::CursorExpired { oldest, .. }))) => {
            let after = timeout_at(Instant::now() + ITEM_DEADLINE, stream.next()).await;
            assert!(
                matches!(after, Ok(None)),
                "{what}: CursorExpired is terminal, but the stream went on"
            );
            Refusal::Expired(oldest)
        }
        Ok(other) => {
            panic!("{what}: was accepted as a position: got {other:?}, expected {expected}")
        }
    }
}

/// Subscribe from `cursor` and expect `CursorExpired`, either from the
/// subscribe call or as the stream's first item; return its `oldest`.
pub async fn expect_expired<H: Harness + ?Sized>(
    h: &H,
    family: Family,
    cursor: &StreamCursor,
) -> Option<StreamCursor> {
    let what = format!("{family}: CursorExpired for cursor {cursor:?}");
    match expect_refused(h, family, cursor, false, &what).await {
        Refusal::Expired(oldest) => oldest,
        Refusal::Invalid => unreachable!("InvalidCursor was not accepted"),
    }
}

/// The fields of a `family` record that is well formed except for its
/// execution id, which the shared decoder rejects.
pub fn undecodable(family: Family) -> Vec<(Field, String)> {
    let bad = (Field::ExecutionId, "not-an-execution-id".to_owned());
    let mut fields = vec![bad];
    match family {
        Family::LeaseHistory => fields.push((Field::Type, "acquired".into())),
        Family::Completion => fields.push((Field::Outcome, "success".into())),
        Family::SignalDelivery => {
            fields.push((Field::SignalId, uuid::Uuid::new_v4().to_string()));
            fields.push((Field::Effect, "buffered".into()));
        }
        Family::InstanceTags => {
            fields.push((Field::Type, "attached".into()));
            fields.push((Field::Tag, "hot".into()));
        }
    }
    fields
}

/// Store an undecodable record of `family` through the harness.
pub async fn inject_corrupt<H: Harness + ?Sized>(h: &H, family: Family) -> StreamCursor {
    hook(
        Capability::RawRecords,
        "store a raw record",
        h.inject_raw(family, &undecodable(family)).await,
    )
}

/// A unique run label for tagging events.
pub fn run_label(test: &str) -> String {
    format!("{test}-{}", uuid::Uuid::new_v4().simple())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cursor::codec::{encode_positioned, VALKEY_BYTE};

    /// The drafts delivered in `order` (indexes into `drafts`).
    fn delivered(
        drafts: &[(NewEvent, EventMeta)],
        order: &[usize],
    ) -> Vec<(StreamEvent, EventMeta)> {
        order
            .iter()
            .enumerate()
            .map(|(n, &i)| {
                let cursor = encode_positioned(VALKEY_BYTE, Family::Completion, n as u64 + 1, 0);
                (
                    drafts[i]
                        .0
                        .clone()
                        .into_event(cursor, crate::types::TimestampMs(1)),
                    drafts[i].1.clone(),
                )
            })
            .collect()
    }

    fn fails(f: impl FnOnce() + std::panic::UnwindSafe) -> bool {
        std::panic::catch_unwind(f).is_err()
    }

    #[test]
    fn per_partition_delivery_may_interleave_partitions_but_not_reorder_one() {
        // Executions 0..7 → partitions 0,1,2,0,1,2,0 with P = 3.
        let drafts = drafts(Family::Completion, 7, "unit");
        let order = EventOrder::per_partition(3);
        let interleaved = delivered(&drafts, &[1, 0, 2, 4, 3, 6, 5]);
        assert_delivered_in(order, &interleaved, &drafts, "interleaved");
        assert!(fails(|| assert_delivered_in(
            EventOrder::Total,
            &interleaved,
            &drafts,
            "total"
        )));
        // 3 before 0: both partition 0.
        let reordered = delivered(&drafts, &[3, 1, 2, 0, 4, 5, 6]);
        assert!(fails(|| assert_delivered_in(
            order,
            &reordered,
            &drafts,
            "reordered"
        )));
        let missing = delivered(&drafts, &[0, 1, 2, 3, 4, 5]);
        assert!(fails(|| assert_delivered_in(
            order, &missing, &drafts, "missing"
        )));
        let repeated = delivered(&drafts, &[0, 1, 2, 3, 4, 5, 6, 2]);
        assert!(fails(|| assert_delivered_in(
            order, &repeated, &drafts, "repeated"
        )));
    }

    #[test]
    fn a_prefix_per_partition_is_a_prefix_of_each_partitions_events() {
        let drafts = drafts(Family::Completion, 7, "unit");
        let order = EventOrder::per_partition(3);
        assert_prefix_in(order, &delivered(&drafts, &[1, 0, 4]), &drafts, "prefix");
        assert!(fails(|| assert_prefix_in(
            order,
            &delivered(&drafts, &[3]),
            &drafts,
            "skips 0"
        )));
        assert_prefix_in(
            EventOrder::Total,
            &delivered(&drafts, &[0, 1]),
            &drafts,
            "total",
        );
        assert!(fails(|| assert_prefix_in(
            EventOrder::Total,
            &delivered(&drafts, &[1]),
            &drafts,
            "total skips 0"
        )));
    }

    #[test]
    fn drafts_of_one_partition_land_in_partition_zero_under_any_partitioning() {
        for p in [2, 3, 6, 256] {
            let order = EventOrder::per_partition(p);
            assert!(drafts_of_one_partition(Family::LeaseHistory, 9, "unit")
                .iter()
                .all(|(d, _)| order.partition_of(d.execution_id()) == 0));
        }
    }
}
