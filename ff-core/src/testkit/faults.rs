//! Semantics 5–8 and 10: reconnection, backpressure, retention, bad input,
//! and releasing a dropped subscription.

use std::time::Duration;

use futures::StreamExt;
use tokio::time::Instant;

use crate::backend::DeliveryItem;
use crate::engine_error::EngineError;
use crate::filter::SubscriptionFilter;
use crate::stream_events::{CompletionKind, EventKind, Family, LeaseHistoryKind};
use crate::stream_subscribe::{StreamCursor, MEMORY_BYTE, POSTGRES_BYTE, VALKEY_BYTE};
use crate::testkit::support::*;
use crate::testkit::Harness;

/// §3.7.5: a lost connection is re-established and the stream continues
/// exactly after the last yielded event — or, before any event, after the
/// position resolved at subscribe — invisibly to the consumer.
pub async fn reconnect_continues_exactly_after_the_last_event<H: Harness>(h: &H) {
    let run = run_label("reconnect");
    let publisher = h.publisher();
    for family in Family::ALL.iter().copied() {
        let drafts = drafts(family, 24, &run);
        publish_batch(&*publisher, &drafts[..10]).await;
        let mut mid = subscribe(h, family, StreamCursor::beginning(), &Default::default()).await;
        let first = take_events(&mut mid, 5, "events before the connection loss").await;
        let mut tail = subscribe(h, family, StreamCursor::empty(), &Default::default()).await;
        let item = next_item(&mut tail, ITEM_DEADLINE, "CaughtUp").await;
        assert!(
            matches!(item, DeliveryItem::CaughtUp { .. }),
            "got {item:?}"
        );
        if !h.kill_connections().await.expect("kill_connections") {
            eprintln!("SKIPPED reconnect test: this backend holds no connections");
            return;
        }
        publish_each(&*publisher, &drafts[10..24]).await;
        let rest = take_events(&mut mid, 19, "events after the connection loss").await;
        let mut all = first;
        all.extend(rest);
        assert_delivered(&all, &drafts, &format!("{family} across a reconnect"));
        let live = take_events(&mut tail, 14, "tail events after the connection loss").await;
        assert_delivered(
            &live,
            &drafts[10..],
            &format!("{family} tail across a reconnect"),
        );
    }
}

/// §3.7.6: a consumer that stops reading while a large backlog builds up
/// still receives everything exactly once, in order. (Memory use is
/// measured by `ff bench`; a stream must not read the backlog ahead.)
pub async fn slow_consumer_receives_a_large_backlog_exactly_once<H: Harness>(h: &H) {
    let run = run_label("backlog");
    let publisher = h.publisher();
    let family = Family::Completion;
    let drafts = drafts(family, 5000, &run);
    let mut sub = subscribe(h, family, StreamCursor::empty(), &Default::default()).await;
    let item = next_item(&mut sub, ITEM_DEADLINE, "CaughtUp").await;
    assert!(
        matches!(item, DeliveryItem::CaughtUp { .. }),
        "got {item:?}"
    );
    for chunk in drafts.chunks(500) {
        publish_batch(&*publisher, chunk).await;
    }
    let mut got = Vec::with_capacity(drafts.len());
    while got.len() < drafts.len() {
        let batch = take_events(&mut sub, 250.min(drafts.len() - got.len()), "backlog").await;
        got.extend(batch);
        tokio::time::sleep(Duration::from_millis(5)).await; // a slow consumer
    }
    assert_delivered(&got, &drafts, "a 5000-event backlog read slowly");
}

/// §3.7.7: a cursor older than what is retained, or beyond the head,
/// yields `CursorExpired` with the oldest retained position; a cursor
/// whose next event is still retained is not expired.
pub async fn expired_cursors_are_reported_never_skipped<H: Harness>(h: &H) {
    let run = run_label("retention");
    let publisher = h.publisher();
    for family in Family::ALL.iter().copied() {
        let drafts = drafts(family, 20, &run);
        let cursors = publish_batch(&*publisher, &drafts[..10]).await;
        h.expire_before(family, &cursors[5])
            .await
            .expect("expire_before");
        for stale in &cursors[..4] {
            let oldest = expect_expired(h, family, stale).await.unwrap_or_else(|| {
                panic!("{family}: CursorExpired must name the oldest retained position")
            });
            let mut sub = subscribe(h, family, oldest, &Default::default()).await;
            let (rest, _) = until_caught_up(&mut sub, "events from the oldest position").await;
            assert_delivered(
                &rest,
                &drafts[5..10],
                &format!("{family} from CursorExpired.oldest"),
            );
        }
        // The event after cursors[4] is cursors[5], still retained.
        let mut sub = subscribe(h, family, cursors[4].clone(), &Default::default()).await;
        let (rest, _) = until_caught_up(&mut sub, "events after the last unexpired cursor").await;
        assert_delivered(
            &rest,
            &drafts[5..10],
            &format!("{family} from the boundary"),
        );
        let mut sub = subscribe(h, family, StreamCursor::beginning(), &Default::default()).await;
        let (rest, _) = until_caught_up(&mut sub, "beginning after expiry").await;
        assert_delivered(
            &rest,
            &drafts[5..10],
            &format!("{family} beginning after expiry"),
        );
        let beyond = h
            .cursor_beyond_head(family)
            .await
            .expect("cursor_beyond_head");
        expect_expired(h, family, &beyond).await;

        // A trim while a subscriber is mid-stream is never a silent gap.
        let backlog = super::support::drafts(family, 2500, &run);
        let later = publish_batch(&*publisher, &backlog).await;
        let mut sub = subscribe(h, family, cursors[9].clone(), &Default::default()).await;
        let first = take_events(&mut sub, 1, "the first event before a trim").await;
        assert_delivered(&first, &backlog[..1], "first event before trim");
        h.expire_before(family, &later[2490])
            .await
            .expect("expire_before");
        let mut delivered = first;
        let mut expired = false;
        loop {
            match sub.next_raw(ITEM_DEADLINE).await {
                None => panic!("{family}: stream neither delivered nor expired after a trim"),
                Some(Some(Ok(DeliveryItem::Event { event, meta }))) => {
                    delivered.push((event, meta))
                }
                Some(Some(Ok(DeliveryItem::CaughtUp { .. })))
                    if delivered.len() == backlog.len() =>
                {
                    break
                }
                Some(Some(Ok(_))) => {}
                Some(Some(Err(EngineError::CursorExpired { .. }))) => {
                    expired = true;
                    break;
                }
                Some(other) => panic!("{family}: unexpected {other:?} after a trim"),
            }
        }
        let n = delivered.len();
        assert_delivered(
            &delivered,
            &backlog[..n],
            &format!("{family} contiguous before a trim"),
        );
        assert!(
            expired || n == backlog.len(),
            "{family}: {n} of {} events delivered without CursorExpired",
            backlog.len()
        );
    }
}

fn foreign_format(ours: u8) -> u8 {
    [VALKEY_BYTE, POSTGRES_BYTE, MEMORY_BYTE]
        .into_iter()
        .find(|b| *b != ours)
        .expect("another format")
}

/// §3.7.8: malformed or foreign cursors fail at subscribe time with
/// `InvalidCursor`; an undecodable entry yields one `Corrupt` and the
/// stream continues.
pub async fn bad_input_is_rejected_and_corrupt_entries_are_flagged<H: Harness>(h: &H) {
    let run = run_label("badinput");
    let publisher = h.publisher();
    let backend = h.backend();
    for family in Family::ALL.iter().copied() {
        let drafts = drafts(family, 4, &run);
        let before = publish_batch(&*publisher, &drafts[..2]).await;
        let good = before[0].as_bytes().to_vec();
        let other_family = Family::ALL.iter().copied().find(|f| *f != family).unwrap();
        let mut foreign = good.clone();
        foreign[0] = foreign_format(good[0]);
        let mut unknown = good.clone();
        unknown[0] = 0x7f;
        let mut long = good.clone();
        long.push(1);
        let bad: Vec<(&str, StreamCursor, Family)> = vec![
            ("garbage", StreamCursor::new(vec![0xff, 0x00, 0x13]), family),
            ("foreign backend", StreamCursor::new(foreign), family),
            ("unknown version", StreamCursor::new(unknown), family),
            (
                "truncated",
                StreamCursor::new(good[..good.len() - 1].to_vec()),
                family,
            ),
            ("over-long", StreamCursor::new(long), family),
            ("other family", before[0].clone(), other_family),
            (
                "beginning with junk",
                StreamCursor::new(vec![0, 1, 2]),
                family,
            ),
        ];
        for (what, cursor, fam) in bad {
            match backend
                .subscribe_family(fam, cursor, &Default::default())
                .await
            {
                Err(EngineError::InvalidCursor { .. }) => {}
                Err(e) => panic!("{family}: {what} cursor gave {e}, expected InvalidCursor"),
                Ok(_) => panic!(
                    "{family}: {what} cursor was accepted; expected InvalidCursor at subscribe"
                ),
            }
        }
        let wrong_kind = match family {
            Family::LeaseHistory => EventKind::Completion(CompletionKind::Success),
            _ => EventKind::LeaseHistory(LeaseHistoryKind::Acquired),
        };
        let filter = SubscriptionFilter::new().with_kinds([wrong_kind]);
        assert!(
            matches!(
                backend
                    .subscribe_family(family, StreamCursor::empty(), &filter)
                    .await,
                Err(EngineError::Validation { .. })
            ),
            "{family}: a filter kind of another family must be a Validation error"
        );

        let corrupt = h.inject_corrupt(family).await.expect("inject_corrupt");
        publish_batch(&*publisher, &drafts[2..]).await;
        let mut sub = subscribe(h, family, before[1].clone(), &Default::default()).await;
        match next_item(&mut sub, ITEM_DEADLINE, "the Corrupt item").await {
            DeliveryItem::Corrupt { cursor, detail } => {
                assert_eq!(
                    cursor, corrupt,
                    "{family}: Corrupt must carry the bad entry's cursor"
                );
                assert!(!detail.is_empty(), "Corrupt must say what was wrong");
            }
            other => panic!("{family}: expected Corrupt, got {other:?}"),
        }
        let (rest, _) = until_caught_up(&mut sub, "events after a corrupt entry").await;
        assert_delivered(&rest, &drafts[2..], &format!("{family} after Corrupt"));
        let mut resumed = subscribe(h, family, corrupt.clone(), &Default::default()).await;
        let (rest, _) = until_caught_up(&mut resumed, "resume from a Corrupt cursor").await;
        assert_delivered(
            &rest,
            &drafts[2..],
            &format!("{family} resumed from Corrupt"),
        );
    }
    // The typed API surfaces Corrupt as a non-terminal error.
    let drafts = drafts(Family::Completion, 1, &run);
    let corrupt = h
        .inject_corrupt(Family::Completion)
        .await
        .expect("inject_corrupt");
    publish_batch(&*publisher, &drafts).await;
    let before_corrupt = corrupt.clone();
    let mut typed = backend
        .subscribe_completion(StreamCursor::beginning(), &Default::default())
        .await
        .expect("typed subscribe");
    let mut saw_corrupt = false;
    loop {
        let item = tokio::time::timeout(ITEM_DEADLINE, typed.next())
            .await
            .expect("typed item")
            .expect("typed stream ended");
        match item {
            Err(EngineError::Corrupt { cursor, .. }) if cursor == before_corrupt => {
                saw_corrupt = true
            }
            Err(EngineError::Corrupt { .. }) => {}
            Err(e) => panic!("typed stream: unexpected error {e}"),
            Ok(e) if e.execution_id == *drafts[0].0.execution_id() => break,
            Ok(_) => {}
        }
    }
    assert!(
        saw_corrupt,
        "the typed subscription must report the corrupt entry and go on"
    );
}

/// §3.7.10: dropping a subscription releases its connection and task
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
