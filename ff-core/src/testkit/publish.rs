//! Publishing: batches are all-or-none; `bounds` and `cursor_at` agree with
//! what was published.

use crate::cursor::StreamCursor;
use crate::error::EngineError;
use crate::event::Family;
use crate::testkit::harness::EventOrder;
use crate::testkit::support::*;
use crate::testkit::Harness;
use crate::types::TimestampMs;

/// A batch with one invalid event is rejected whole: nothing of it is
/// stored, on any family.
pub async fn publish_batch_is_all_or_none<H: Harness>(h: &H) {
    let run = run_label("atomic");
    let publisher = h.publisher();
    let mut batch = Vec::new();
    for family in Family::ALL.iter().copied() {
        batch.extend(drafts(family, 2, &run));
    }
    batch[5].1.namespace = Some(String::new()); // invalid: empty namespace
    match publisher.publish_batch(batch.clone()).await {
        Err(EngineError::Validation { .. }) => {}
        other => panic!("a batch with an invalid event must fail with Validation, got {other:?}"),
    }
    batch[5].1.namespace = None;
    let marker = drafts(Family::Completion, 1, &format!("{run}-after"));
    publish_batch(&*publisher, &batch).await;
    publish_batch(&*publisher, &marker).await;
    for family in Family::ALL.iter().copied() {
        let mut sub = subscribe(h, family, StreamCursor::beginning(), &Default::default()).await;
        let (got, _) = until_caught_up(&mut sub, "events after a rejected batch").await;
        let mut expected: Vec<_> = batch
            .iter()
            .filter(|(d, _)| d.family() == family)
            .cloned()
            .collect();
        if family == Family::Completion {
            expected.extend(marker.clone());
        }
        assert_delivered_in(
            h.event_order(),
            &got,
            &expected,
            &format!("{family} after a rejected batch"),
        );
    }
}

/// `bounds` reports the newest event as head and an oldest position that
/// replays everything retained; `cursor_at` starts at the first event
/// recorded at or after a time.
pub async fn bounds_and_cursor_at_agree_with_published_events<H: Harness>(h: &H) {
    let run = run_label("bounds");
    let publisher = h.publisher();
    let backend = h.backend();
    let order = h.event_order();
    for family in Family::ALL.iter().copied() {
        let drafts = drafts(family, 6, &run);
        let cursors = publish_batch(&*publisher, &drafts).await;
        let bounds = backend.bounds(family).await.expect("bounds");
        let mut sub = subscribe(h, family, bounds.oldest.clone(), &Default::default()).await;
        let (all, caught_up) = until_caught_up(&mut sub, "events from bounds.oldest").await;
        assert_delivered_in(
            order,
            &all,
            &drafts,
            &format!("{family} from bounds.oldest"),
        );
        match order {
            EventOrder::Total => assert_eq!(
                &bounds.head,
                cursors.last().unwrap(),
                "{family}: bounds.head"
            ),
            // One position per partition: the head is where reading
            // everything ends, and nothing follows it.
            _ => {
                assert_eq!(
                    bounds.head.position_cmp(&caught_up),
                    Some(std::cmp::Ordering::Equal),
                    "{family}: bounds.head must be where reading everything from bounds.oldest ends"
                );
                let mut sub = subscribe(h, family, bounds.head.clone(), &Default::default()).await;
                let (after_head, _) = until_caught_up(&mut sub, "events after bounds.head").await;
                assert!(
                    after_head.is_empty(),
                    "{family}: {} events after bounds.head",
                    after_head.len()
                );
            }
        }

        // Under a per-partition order the delivery order is not time order.
        let first_at = all.iter().map(|(e, _)| e.at()).min().unwrap();
        let from = backend
            .cursor_at(family, first_at)
            .await
            .expect("cursor_at");
        let mut sub = subscribe(h, family, from, &Default::default()).await;
        let (got, _) = until_caught_up(&mut sub, "events from cursor_at").await;
        assert_delivered_in(
            order,
            &got,
            &drafts,
            &format!("{family} from cursor_at(first event's time)"),
        );

        // A second group recorded strictly later: cursor_at its time yields
        // exactly that group.
        let last_at = all.iter().map(|(e, _)| e.at()).max().unwrap();
        let deadline = tokio::time::Instant::now() + ITEM_DEADLINE;
        while TimestampMs::now().0 <= last_at.0 + 2 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the clock does not advance"
            );
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        let second = super::support::drafts(family, 3, &format!("{run}-second"));
        publish_batch(&*publisher, &second).await;
        let mut sub = subscribe(h, family, bounds.oldest.clone(), &Default::default()).await;
        let (everything, _) = until_caught_up(&mut sub, "both groups").await;
        let second_run = format!("{run}-second");
        let second_at = everything
            .iter()
            .filter(|(_, m)| m.tags.get("run") == Some(&second_run))
            .map(|(e, _)| e.at())
            .min()
            .expect("the second group");
        assert!(
            second_at > last_at,
            "{family}: the second group was not recorded later"
        );
        let from = backend
            .cursor_at(family, second_at)
            .await
            .expect("cursor_at");
        let mut sub = subscribe(h, family, from, &Default::default()).await;
        let (got, _) = until_caught_up(&mut sub, "events from cursor_at(second group)").await;
        assert_delivered_in(
            order,
            &got,
            &second,
            &format!("{family} from cursor_at(second group's time)"),
        );
        let all = everything;

        let future = TimestampMs(all.iter().map(|(e, _)| e.at().0).max().unwrap() + 3_600_000);
        let from = backend.cursor_at(family, future).await.expect("cursor_at");
        let mut sub = subscribe(h, family, from, &Default::default()).await;
        let (got, _) = until_caught_up(&mut sub, "events from a future time").await;
        assert!(
            got.is_empty(),
            "{family}: cursor_at(an hour ahead) yielded {} events",
            got.len()
        );
    }
}
