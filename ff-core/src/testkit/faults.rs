//! Semantics 5–7 and 10: reconnection, backpressure, retention, and
//! releasing a dropped subscription.

use std::time::Duration;

use tokio::time::Instant;

use crate::backend::DeliveryItem;
use crate::cursor::StreamCursor;
use crate::error::EngineError;
use crate::event::{EventMeta, Family, NewEvent};
use crate::testkit::harness::{hook, Capability, EventOrder};
use crate::testkit::support::*;
use crate::testkit::Harness;

/// Guarantee 5: a lost connection is re-established and the stream continues
/// exactly after the last yielded event — or, before any event, after the
/// position resolved at subscribe — invisibly to the consumer; and every
/// connection the backend held was really replaced.
pub async fn reconnect_continues_exactly_after_the_last_event<H: Harness>(h: &H) {
    let run = run_label("reconnect");
    let publisher = h.publisher();
    let order = h.event_order();
    for family in Family::ALL.iter().copied() {
        let drafts = drafts(family, 24, &run);
        publish_batch(&*publisher, &drafts[..10]).await;
        let mut mid = subscribe(h, family, StreamCursor::beginning(), &Default::default()).await;
        let first = take_events(&mut mid, 5, "events before the connection loss").await;
        let mut tail = subscribe(h, family, StreamCursor::empty(), &Default::default()).await;
        let item = next_item(&mut tail, ITEM_DEADLINE, "CaughtUp").await;
        assert!(
            matches!(item, DeliveryItem::CaughtUp { .. }),
            "{family}: a tail subscription must start with CaughtUp, got {item:?}"
        );
        let before = hook(
            Capability::Reconnect,
            "list its connections",
            h.connection_ids().await,
        );
        assert!(
            !before.is_empty(),
            "{family}: connection_ids lists no connections while two subscriptions are open"
        );
        hook(
            Capability::Reconnect,
            "kill its connections",
            h.kill_connections().await,
        );
        publish_each(&*publisher, &drafts[10..24]).await;
        let rest = take_events(&mut mid, 19, "events after the connection loss").await;
        let mut all = first;
        all.extend(rest);
        assert_delivered_in(
            order,
            &all,
            &drafts,
            &format!("{family}: a subscription 5 events in, across a reconnect"),
        );
        let live = take_events(&mut tail, 14, "tail events after the connection loss").await;
        assert_delivered_in(
            order,
            &live,
            &drafts[10..],
            &format!(
                "{family}: a tail subscription that had yielded only CaughtUp, across a reconnect"
            ),
        );
        // Server-side lists lag a close: wait for the old ids to go.
        let deadline = Instant::now() + ITEM_DEADLINE;
        loop {
            let now = hook(
                Capability::Reconnect,
                "list its connections",
                h.connection_ids().await,
            );
            let survivors: Vec<&String> = now.iter().filter(|id| before.contains(id)).collect();
            if survivors.is_empty() && !now.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{family}: after kill_connections the backend still holds connections {survivors:?} \
                 of {before:?} ({} now): the hook did not sever every connection",
                now.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Subscribe to `family` from `start`, read one event, then stop reading
/// while the subscription does whatever read-ahead it does; trim
/// everything but the newest event (of each partition, under a
/// per-partition order) and count the events the stalled subscription
/// still yields before `CursorExpired`. That is what it held.
async fn read_ahead_of_a_stalled_consumer<H: Harness>(
    h: &H,
    family: Family,
    start: StreamCursor,
    backlog: &[(NewEvent, EventMeta)],
    cursors: &[StreamCursor],
    what: &str,
) -> usize {
    let order = h.event_order();
    let mut sub = subscribe(h, family, start, &Default::default()).await;
    let mut delivered = take_events(&mut sub, 1, "the first event of a backlog").await;
    // The stall. Not a synchronisation: what follows holds for a correct
    // backend however long it lasts; the pause only gives an unbounded
    // reader the time to fetch thousands, so the check can catch it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (first_kept, retained) = match order {
        EventOrder::Total => (
            cursors.last().expect("a backlog").clone(),
            backlog[backlog.len() - 1..].to_vec(),
        ),
        // The head holds each partition's newest event.
        _ => (
            h.backend().bounds(family).await.expect("bounds").head,
            newest_of_each_partition(order, backlog),
        ),
    };
    h.expire_before(family, &first_kept)
        .await
        .expect("expire_before");
    loop {
        match sub.next_raw(ITEM_DEADLINE).await {
            None => {
                panic!("{what}: a stalled subscription neither delivered nor expired after a trim")
            }
            Some(Some(Ok(DeliveryItem::Event { event, meta }))) => delivered.push((event, meta)),
            Some(Some(Ok(DeliveryItem::Checkpoint { .. }))) => {}
            Some(Some(Err(EngineError::CursorExpired { oldest, .. }))) => {
                let oldest = oldest.unwrap_or_else(|| {
                    panic!(
                        "{what}: CursorExpired after a trim must name the oldest retained position"
                    )
                });
                let mut rest = subscribe(h, family, oldest, &Default::default()).await;
                let (from_oldest, _) =
                    until_caught_up(&mut rest, "events from CursorExpired.oldest").await;
                assert_delivered_in(
                    order,
                    &from_oldest,
                    &retained,
                    &format!("{what}: from the oldest position CursorExpired named"),
                );
                break;
            }
            Some(other) => panic!(
                "{what}: after a trim behind a stalled consumer ({} events in) expected \
                 events then CursorExpired, got {other:?}",
                delivered.len()
            ),
        }
    }
    let n = delivered.len();
    assert_prefix_in(
        order,
        &delivered,
        backlog,
        &format!("{what}: events delivered before CursorExpired"),
    );
    assert!(
        n < backlog.len(),
        "{what}: all {n} events were delivered although everything but the last was trimmed \
         after the first: the subscription read the whole backlog ahead"
    );
    n - 1
}

/// The last draft of each partition of `order`, in publish order.
fn newest_of_each_partition(
    order: EventOrder,
    drafts: &[(NewEvent, EventMeta)],
) -> Vec<(NewEvent, EventMeta)> {
    drafts
        .iter()
        .enumerate()
        .filter(|(i, (d, _))| {
            let p = order.partition_of(d.execution_id());
            !drafts[i + 1..]
                .iter()
                .any(|(later, _)| order.partition_of(later.execution_id()) == p)
        })
        .map(|(_, d)| d.clone())
        .collect()
}

/// Guarantee 6: a consumer that reads slowly while a large backlog builds up
/// receives everything exactly once, in order; and a consumer that stops
/// reading makes the subscription hold at most the harness's declared
/// read-ahead, not the backlog (memory O(batch), not O(backlog)).
pub async fn slow_consumer_receives_a_large_backlog_exactly_once<H: Harness>(h: &H) {
    let limit = h.read_ahead_limit();
    assert!(
        limit < 1000,
        "read_ahead_limit is {limit}: configure the harness's backend with a small read batch"
    );
    let run = run_label("backlog");
    let publisher = h.publisher();
    let order = h.event_order();
    let family = Family::Completion;
    let drafts = drafts(family, 5000, &run);
    let mut sub = subscribe(h, family, StreamCursor::empty(), &Default::default()).await;
    let item = next_item(&mut sub, ITEM_DEADLINE, "CaughtUp").await;
    assert!(
        matches!(item, DeliveryItem::CaughtUp { .. }),
        "got {item:?}"
    );
    let mut cursors = Vec::with_capacity(drafts.len());
    for chunk in drafts.chunks(500) {
        cursors.extend(publish_batch(&*publisher, chunk).await);
    }
    let mut got = Vec::with_capacity(drafts.len());
    while got.len() < drafts.len() {
        let batch = take_events(&mut sub, 250.min(drafts.len() - got.len()), "backlog").await;
        got.extend(batch);
        tokio::time::sleep(Duration::from_millis(5)).await; // a slow consumer
    }
    assert_delivered_in(
        order,
        &got,
        &drafts,
        "completion: a 5000-event backlog read slowly",
    );
    drop(sub);

    // After everything published so far.
    let start = match order {
        EventOrder::Total => cursors.last().expect("cursors").clone(),
        _ => h.backend().bounds(family).await.expect("bounds").head,
    };
    let more = super::support::drafts(family, 5000, &format!("{run}-stalled"));
    let mut more_cursors = Vec::with_capacity(more.len());
    for chunk in more.chunks(500) {
        more_cursors.extend(publish_batch(&*publisher, chunk).await);
    }
    let held = read_ahead_of_a_stalled_consumer(
        h,
        family,
        start,
        &more,
        &more_cursors,
        "completion: a consumer stalled at the start of a 5000-event backlog",
    )
    .await;
    assert!(
        held <= limit,
        "completion: a stalled subscription held {held} events ahead of its consumer; the harness \
         declares at most {limit} (read_ahead_limit): reads must stay bounded by the batch, not the backlog"
    );
}

/// Guarantee 7: a cursor older than what is retained, or beyond the head,
/// yields `CursorExpired` with the oldest retained position; a cursor
/// whose next event is still retained is not expired; a trim that lands
/// while a subscriber is mid-stream is `CursorExpired`, never a gap.
pub async fn expired_cursors_are_reported_never_skipped<H: Harness>(h: &H) {
    let run = run_label("retention");
    let publisher = h.publisher();
    let order = h.event_order();
    let limit = h.read_ahead_limit();
    for family in Family::ALL.iter().copied() {
        // One stream's history: under a per-partition order, one partition's
        // (followed by a subscription over all), with the cursors a
        // subscription yields.
        let (drafts, cursors) = match order {
            EventOrder::Total => {
                let drafts = drafts(family, 20, &run);
                let cursors = publish_batch(&*publisher, &drafts[..10]).await;
                (drafts, cursors)
            }
            _ => {
                let drafts = drafts_of_one_partition(family, 20, &run);
                publish_batch(&*publisher, &drafts[..10]).await;
                let mut sub =
                    subscribe(h, family, StreamCursor::beginning(), &Default::default()).await;
                let (events, _) = until_caught_up(&mut sub, "ten events").await;
                assert_delivered(&events, &drafts[..10], &format!("{family}: ten events"));
                let cursors = events.iter().map(|(e, _)| e.cursor().clone()).collect();
                (drafts, cursors)
            }
        };
        let published_at = {
            let mut sub =
                subscribe(h, family, StreamCursor::beginning(), &Default::default()).await;
            let (events, _) = until_caught_up(&mut sub, "the events before expiry").await;
            events
                .iter()
                .map(|(e, _)| e.at())
                .min()
                .expect("ten events")
        };
        h.expire_before(family, &cursors[5])
            .await
            .expect("expire_before");
        for stale in &cursors[..4] {
            let oldest = expect_expired(h, family, stale).await.unwrap_or_else(|| {
                panic!("{family}: CursorExpired must name the oldest retained position")
            });
            let mut sub = subscribe(h, family, oldest, &Default::default()).await;
            let (rest, _) = until_caught_up(&mut sub, "events from the oldest position").await;
            assert_delivered_in(
                order,
                &rest,
                &drafts[5..10],
                &format!("{family}: from CursorExpired.oldest"),
            );
        }
        // The event after cursors[4] is cursors[5], still retained.
        let mut sub = subscribe(h, family, cursors[4].clone(), &Default::default()).await;
        let (rest, _) = until_caught_up(&mut sub, "events after the last unexpired cursor").await;
        assert_delivered_in(
            order,
            &rest,
            &drafts[5..10],
            &format!("{family}: from the cursor just before the oldest retained event"),
        );
        let mut sub = subscribe(h, family, StreamCursor::beginning(), &Default::default()).await;
        let (rest, _) = until_caught_up(&mut sub, "beginning after expiry").await;
        assert_delivered_in(
            order,
            &rest,
            &drafts[5..10],
            &format!("{family}: beginning after expiry"),
        );
        // A time whose events are partly gone: the oldest retained event
        // (see `StreamBackend::cursor_at`).
        let from = h
            .backend()
            .cursor_at(family, published_at)
            .await
            .expect("cursor_at a time before the oldest retained event");
        let mut sub = subscribe(h, family, from, &Default::default()).await;
        let (rest, _) = until_caught_up(&mut sub, "events from cursor_at after expiry").await;
        assert_delivered_in(
            order,
            &rest,
            &drafts[5..10],
            &format!("{family}: cursor_at a time before the oldest retained event"),
        );
        let beyond = h
            .cursor_beyond_head(family)
            .await
            .expect("cursor_beyond_head");
        expect_expired(h, family, &beyond).await;

        // A trim while a subscriber is mid-stream is never a silent gap.
        let backlog = super::support::drafts(family, (4 * limit).max(1000), &run);
        let later = publish_batch(&*publisher, &backlog).await;
        let held = read_ahead_of_a_stalled_consumer(
            h,
            family,
            cursors[9].clone(),
            &backlog,
            &later,
            &format!("{family}: a trim while a subscriber is mid-stream"),
        )
        .await;
        assert!(
            held <= limit,
            "{family}: a stalled subscription held {held} events ahead (read_ahead_limit {limit})"
        );
    }
}

/// Guarantee 10: dropping a subscription releases its connection and task
/// promptly, also while it is blocked waiting for new events.
pub async fn dropping_a_subscription_releases_it<H: Harness>(h: &H) {
    let base = h.open_subscriptions().await.expect("open_subscriptions");
    let mut subs = Vec::new();
    for family in Family::ALL.iter().copied() {
        let mut sub = subscribe(h, family, StreamCursor::empty(), &Default::default()).await;
        let item = next_item(&mut sub, ITEM_DEADLINE, "CaughtUp").await;
        assert!(
            matches!(item, DeliveryItem::CaughtUp { .. }),
            "got {item:?}"
        );
        subs.push(sub);
    }
    let deadline = Instant::now() + ITEM_DEADLINE;
    loop {
        let open = h.open_subscriptions().await.expect("open_subscriptions");
        if open >= base + subs.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "open_subscriptions reports {open} with {} subscriptions open (base {base})",
            subs.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(subs);
    let deadline = Instant::now() + LIVE_DEADLINE;
    loop {
        let open = h.open_subscriptions().await.expect("open_subscriptions");
        if open <= base {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{open} subscriptions still open 5 s after dropping them all (base {base})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
