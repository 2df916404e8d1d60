//! Semantics 1–4: order, exactly-after resume, tail, live delivery; plus
//! `CaughtUp` once and the typed per-family subscriptions.

use futures::StreamExt;

use crate::backend::DeliveryItem;
use crate::cursor::StreamCursor;
use crate::event::{EventMeta, Family, FamilyEvent, StreamEvent};
use crate::filter::SubscriptionFilter;
use crate::testkit::harness::{hook, Capability, EventOrder};
use crate::testkit::support::*;
use crate::testkit::Harness;
use crate::types::ExecutionId;

/// Guarantee 1: one total order per family, consistent with the cursors, equal
/// to publish order, and the cursors publish returned are the delivered
/// ones. Under a per-partition order: publish order within each partition,
/// the delivered cursors increasing, and publish's cursors increasing
/// within each partition.
pub async fn order_is_total_and_matches_cursors<H: Harness>(h: &H) {
    let run = run_label("order");
    let publisher = h.publisher();
    let order = h.event_order();
    for family in Family::ALL.iter().copied() {
        let drafts = drafts(family, 30, &run);
        let mut cursors = publish_each(&*publisher, &drafts[..10]).await;
        cursors.extend(publish_batch(&*publisher, &drafts[10..]).await);
        let mut sub = subscribe(h, family, StreamCursor::beginning(), &Default::default()).await;
        let (events, _) = until_caught_up(&mut sub, "the published backlog").await;
        assert_delivered_in(order, &events, &drafts, &format!("{family} from beginning"));
        let delivered: Vec<&StreamCursor> = events.iter().map(|(e, _)| e.cursor()).collect();
        match order {
            EventOrder::Total => assert_eq!(
                delivered,
                cursors.iter().collect::<Vec<_>>(),
                "{family}: delivered cursors differ from the cursors publish returned"
            ),
            _ => assert_publish_cursors_increase(
                order,
                &cursors,
                &drafts,
                &format!("{family}: the cursors publish returned"),
            ),
        }
        assert_increasing(&delivered, &format!("{family} delivery order"));
        for (event, _) in &events {
            assert_eq!(
                event.family(),
                family,
                "an event of the wrong family arrived"
            );
        }
    }
}

/// "Cursors" (`docs/design.md`): positions compare by their bytes, so a consumer (or the suite)
/// can order cursors without decoding them — also past the byte
/// boundaries at 256 and 65,536 events, within one large batch and across
/// separate publishes, for every family.
pub async fn cursors_compare_by_bytes_past_256_and_65536_events<H: Harness>(h: &H) {
    let run = run_label("byteorder");
    let publisher = h.publisher();
    let order = h.event_order();
    for family in Family::ALL.iter().copied() {
        // Completion crosses 65,536 within one batch; every family crosses
        // 256 within a batch and again across single publishes.
        let batch = if family == Family::Completion {
            66_000
        } else {
            300
        };
        let all = drafts(family, batch + 270, &run);
        let mut cursors = Vec::with_capacity(all.len());
        cursors.extend(publish_batch(&*publisher, &all[..batch]).await);
        cursors.extend(publish_each(&*publisher, &all[batch..]).await);
        let what = format!(
            "{family}: cursors publish returned for {} events",
            all.len()
        );
        assert_publish_cursors_increase(order, &cursors, &all, &what);
        let mut sub = subscribe(h, family, StreamCursor::beginning(), &Default::default()).await;
        let (events, _) = until_caught_up(&mut sub, "a backlog of tens of thousands").await;
        assert_delivered_in(
            order,
            &events,
            &all,
            &format!("{family} from beginning, byte order"),
        );
        let delivered: Vec<StreamCursor> = events
            .into_iter()
            .map(|(e, _)| e.cursor().clone())
            .collect();
        if order == EventOrder::Total {
            assert!(
                delivered == cursors,
                "{family}: the delivered cursors differ from the cursors publish returned \
                 (first at position {:?})",
                delivered.iter().zip(&cursors).position(|(a, b)| a != b)
            );
        } else {
            assert_increasing(&delivered, &format!("{family}: delivered cursors"));
        }
    }
}

/// Guarantee 2: subscribing from any yielded cursor yields exactly the events
/// after it, including events appended while nobody was subscribed.
pub async fn resume_from_any_cursor_yields_exactly_the_rest<H: Harness>(h: &H) {
    let run = run_label("resume");
    let publisher = h.publisher();
    let order = h.event_order();
    for family in Family::ALL.iter().copied() {
        let drafts = drafts(family, 17, &run);
        let (first, later) = drafts.split_at(12);
        publish_batch(&*publisher, first).await;
        let mut sub = subscribe(h, family, StreamCursor::beginning(), &Default::default()).await;
        let (events, caught_up) = until_caught_up(&mut sub, "the first 12 events").await;
        drop(sub);
        assert_delivered_in(order, &events, first, &format!("{family} initial read"));
        for (i, (event, _)) in events.iter().enumerate() {
            let mut sub = subscribe(h, family, event.cursor().clone(), &Default::default()).await;
            let (rest, _) = until_caught_up(&mut sub, "the rest after a resume").await;
            // Exactly what the first subscription yielded after event i.
            let expected: Vec<_> = match order {
                EventOrder::Total => first[i + 1..].to_vec(),
                _ => events[i + 1..]
                    .iter()
                    .map(|(e, m)| (e.to_new_event(), m.clone()))
                    .collect(),
            };
            assert_delivered_in(
                order,
                &rest,
                &expected,
                &format!("{family} resumed after event {i}"),
            );
        }
        // Appended while nobody was subscribed.
        publish_each(&*publisher, later).await;
        for start in [events.last().unwrap().0.cursor().clone(), caught_up] {
            let mut sub = subscribe(h, family, start, &Default::default()).await;
            let (rest, _) = until_caught_up(&mut sub, "events appended while away").await;
            assert_delivered_in(
                order,
                &rest,
                later,
                &format!("{family} resumed after a gap"),
            );
        }
    }
}

/// Guarantee 3: a tail subscription yields every event committed after the
/// subscribe call and none before; `beginning()` replays everything.
pub async fn tail_yields_only_later_events<H: Harness>(h: &H) {
    let run = run_label("tail");
    let publisher = h.publisher();
    let order = h.event_order();
    for family in Family::ALL.iter().copied() {
        let drafts = drafts(family, 10, &run);
        let (before, after) = drafts.split_at(5);
        publish_each(&*publisher, before).await;
        let mut sub = subscribe(h, family, StreamCursor::empty(), &Default::default()).await;
        // Published after subscribe returned but before the first read: the
        // tail was resolved at subscribe, so these must all arrive.
        publish_each(&*publisher, after).await;
        let first = next_item(&mut sub, ITEM_DEADLINE, "CaughtUp of a tail subscription").await;
        let DeliveryItem::CaughtUp { cursor: resolved } = first else {
            panic!("{family}: a tail subscription must start with CaughtUp, got {first:?}");
        };
        assert!(
            !resolved.is_tail(),
            "{family}: CaughtUp must carry the resolved position, not the empty cursor"
        );
        let got = take_events(&mut sub, 5, "events published after subscribing").await;
        assert_delivered_in(order, &got, after, &format!("{family} tail"));
        let mut again = subscribe(h, family, resolved, &Default::default()).await;
        let (from_resolved, _) =
            until_caught_up(&mut again, "events after the resolved tail").await;
        assert_delivered_in(
            order,
            &from_resolved,
            after,
            &format!("{family} from resolved tail"),
        );
        let mut all = subscribe(h, family, StreamCursor::beginning(), &Default::default()).await;
        let (everything, _) = until_caught_up(&mut all, "everything from beginning").await;
        assert_delivered_in(order, &everything, &drafts, &format!("{family} beginning"));
    }
}

/// Guarantee 4: a tailing subscriber receives each new event within 5 s, by
/// wake-up rather than the (≥ 30 s) safety-net poll.
pub async fn live_events_arrive_promptly<H: Harness>(h: &H) {
    assert_wakeups_not_polling(h);
    let run = run_label("live");
    let publisher = h.publisher();
    for family in Family::ALL.iter().copied() {
        expect_live(
            h,
            family,
            &*publisher,
            &drafts(family, 4, &run),
            "the same process",
        )
        .await;
    }
}

fn assert_wakeups_not_polling<H: Harness>(h: &H) {
    if let Some(poll) = h.safety_net_poll() {
        assert!(
            poll >= std::time::Duration::from_secs(30),
            "configure the harness's safety-net poll to at least 30 s (got {poll:?}) so the live tests prove wake-ups"
        );
    }
}

/// Tail `family`, then publish each draft through `publisher` and expect
/// it within [`LIVE_DEADLINE`].
async fn expect_live<H: Harness>(
    h: &H,
    family: Family,
    publisher: &dyn crate::backend::EventPublisher,
    drafts: &[(crate::event::NewEvent, crate::event::EventMeta)],
    from: &str,
) {
    let mut sub = subscribe(h, family, StreamCursor::empty(), &Default::default()).await;
    let first = next_item(&mut sub, ITEM_DEADLINE, "CaughtUp").await;
    assert!(
        matches!(first, DeliveryItem::CaughtUp { .. }),
        "{family}: a tail subscription must start with CaughtUp, got {first:?}"
    );
    for (i, d) in drafts.iter().enumerate() {
        let what = format!("{family}: live event {i} published from {from}, within 5 s");
        // Wait for the event first and publish once the subscription has
        // had time to park in its wait: a stream that reads only when
        // polled would otherwise find the event without any wake-up. (Not
        // a synchronisation: a correct backend passes however the pause
        // falls; it only stops a missing wake-up from hiding.)
        let publish = async {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            publish_retrying(publisher, d.0.clone(), d.1.clone()).await;
        };
        let receive = async {
            loop {
                match next_item(&mut sub, LIVE_DEADLINE, &what).await {
                    DeliveryItem::Checkpoint { .. } => continue,
                    item => break item,
                }
            }
        };
        let ((), item) = tokio::join!(publish, receive);
        let DeliveryItem::Event { event, meta } = item else {
            panic!("{what}: got {item:?}");
        };
        assert_delivered(&[(event, meta)], std::slice::from_ref(d), &what);
    }
}

/// Guarantee 4 across processes: an event another process publishes (a
/// publisher sharing nothing in-process with the subscriber) reaches a
/// tailing subscriber within 5 s, by the backend's cross-process wake-up.
pub async fn live_events_from_another_process_arrive_promptly<H: Harness>(h: &H) {
    assert_wakeups_not_polling(h);
    let other = hook(
        Capability::CrossProcess,
        "give an independent publisher",
        h.independent_publisher().await,
    );
    let run = run_label("live-xproc");
    for family in Family::ALL.iter().copied() {
        expect_live(
            h,
            family,
            &*other,
            &drafts(family, 3, &run),
            "another process",
        )
        .await;
    }
}

/// The delivery stream (`docs/design.md`): `CaughtUp` comes exactly once, right after the events committed
/// before the subscribe call (not after later ones), and never again.
pub async fn caught_up_is_yielded_exactly_once<H: Harness>(h: &H) {
    let run = run_label("caughtup");
    let publisher = h.publisher();
    let order = h.event_order();
    for family in Family::ALL.iter().copied() {
        let drafts = drafts(family, 8, &run);
        publish_batch(&*publisher, &drafts[..5]).await;
        let mut sub = subscribe(h, family, StreamCursor::beginning(), &Default::default()).await;
        // Committed after subscribe returned: they come after CaughtUp.
        publish_each(&*publisher, &drafts[5..]).await;
        let (backlog, caught_up) = until_caught_up(&mut sub, "the backlog").await;
        assert_delivered_in(order, &backlog, &drafts[..5], "backlog before CaughtUp");
        assert_eq!(
            caught_up.position_cmp(backlog.last().unwrap().0.cursor()),
            Some(std::cmp::Ordering::Equal),
            "{family}: CaughtUp after a backlog must carry the last event's cursor"
        );
        let mut live = Vec::new();
        while live.len() < 3 {
            match next_item(&mut sub, ITEM_DEADLINE, "live events after CaughtUp").await {
                DeliveryItem::Event { event, meta } => live.push((event, meta)),
                DeliveryItem::Checkpoint { .. } => {}
                other => panic!(
                    "{family}: after CaughtUp only events/checkpoints may follow, got {other:?}"
                ),
            }
        }
        assert_delivered_in(order, &live, &drafts[5..], "events after CaughtUp");
    }
}

/// Read `n` items of a typed subscription, panicking on errors or timeout.
async fn drain_typed<T>(
    mut sub: std::pin::Pin<
        Box<dyn futures::Stream<Item = Result<T, crate::error::EngineError>> + Send>,
    >,
    n: usize,
) -> Vec<T> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let item = tokio::time::timeout(ITEM_DEADLINE, sub.next())
            .await
            .expect("typed event within the deadline")
            .expect("typed stream ended early")
            .expect("typed stream yielded an error");
        out.push(item);
    }
    out
}

/// The typed per-family methods yield that family's events with the
/// cursors publish returned and their metadata.
pub async fn typed_subscriptions_yield_each_family<H: Harness>(h: &H) {
    let run = run_label("typed");
    let backend = h.backend();
    let publisher = h.publisher();
    let order = h.event_order();
    let f = SubscriptionFilter::default();
    let mut expected = Vec::new();
    for family in Family::ALL.iter().copied() {
        let mut published = drafts(family, 6, &run);
        for (i, (_, meta)) in published.iter_mut().enumerate() {
            meta.namespace = Some(format!("typed-{i}"));
        }
        let cursors = publish_batch(&*publisher, &published).await;
        expected.push(
            cursors
                .into_iter()
                .zip(published.into_iter().map(|(d, m)| (m, *d.execution_id())))
                .map(|(c, (m, e))| (c, m, e))
                .collect::<Vec<_>>(),
        );
    }
    type Parts = (StreamCursor, EventMeta, ExecutionId);
    fn parts<E: FamilyEvent + Into<StreamEvent>>(events: Vec<E>) -> Vec<Parts> {
        events
            .into_iter()
            .map(|e| {
                let (cursor, meta) = (e.event_cursor().clone(), e.event_meta().clone());
                let event: StreamEvent = e.into();
                (cursor, meta, *event.execution_id())
            })
            .collect()
    }
    let start = StreamCursor::beginning;
    let got: [Vec<Parts>; 4] = [
        parts(
            drain_typed(
                backend.subscribe_lease_history(start(), &f).await.unwrap(),
                6,
            )
            .await,
        ),
        parts(drain_typed(backend.subscribe_completion(start(), &f).await.unwrap(), 6).await),
        parts(
            drain_typed(
                backend
                    .subscribe_signal_delivery(start(), &f)
                    .await
                    .unwrap(),
                6,
            )
            .await,
        ),
        parts(
            drain_typed(
                backend.subscribe_instance_tags(start(), &f).await.unwrap(),
                6,
            )
            .await,
        ),
    ];
    for ((family, got), want) in Family::ALL.iter().zip(got).zip(expected) {
        if order == EventOrder::Total {
            assert_eq!(
                got, want,
                "{family}: a typed subscription's events must carry the cursors publish returned and their metadata"
            );
            continue;
        }
        // Per partition: the metadata in publish order, cursors increasing.
        let partition = |p: &Parts| order.partition_of(&p.2);
        let mut got_order: Vec<&Parts> = got.iter().collect();
        got_order.sort_by_key(|p| partition(p));
        let mut want_order: Vec<&Parts> = want.iter().collect();
        want_order.sort_by_key(|p| partition(p));
        let metas = |v: &[&Parts]| {
            v.iter()
                .map(|p| (partition(p), p.1.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            metas(&got_order),
            metas(&want_order),
            "{family}: a typed subscription's events must carry their metadata, in publish order within each partition"
        );
        let cursors: Vec<&StreamCursor> = got.iter().map(|p| &p.0).collect();
        assert_increasing(&cursors, &format!("{family}: typed cursors"));
    }
}
