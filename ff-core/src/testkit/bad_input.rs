//! Semantic 8: malformed, foreign and other-instance cursors are refused
//! at subscribe time (and by `resolve_cursor`); undecodable stored records are reported as
//! `Corrupt` and the stream goes on.

use futures::StreamExt;

use crate::backend::DeliveryItem;
use crate::cursor::codec::{MEMORY_BYTE, POSTGRES_BYTE, VALKEY_BYTE};
use crate::cursor::StreamCursor;
use crate::error::EngineError;
use crate::event::{CompletionKind, EventKind, Family, LeaseHistoryKind};
use crate::filter::SubscriptionFilter;
use crate::testkit::harness::{hook, Capability, EventOrder};
use crate::testkit::support::*;
use crate::testkit::Harness;

/// A built-in format byte other than `ours`.
fn foreign_format(ours: u8) -> u8 {
    [VALKEY_BYTE, POSTGRES_BYTE, MEMORY_BYTE]
        .into_iter()
        .find(|b| *b != ours)
        .expect("another format")
}

/// Guarantee 8: malformed cursors, cursors of another backend's format or
/// another family, and filters naming another family's kinds fail at
/// subscribe time with `InvalidCursor` / `Validation`.
pub async fn bad_cursors_are_rejected_at_subscribe<H: Harness>(h: &H) {
    let run = run_label("badcursor");
    let publisher = h.publisher();
    let backend = h.backend();
    for family in Family::ALL.iter().copied() {
        let before = publish_batch(&*publisher, &drafts(family, 2, &run)).await;
        let good = before[0].as_bytes().to_vec();
        let other_family = Family::ALL.iter().copied().find(|f| *f != family).unwrap();
        let mut foreign = good.clone();
        foreign[0] = foreign_format(good[0]);
        let mut unknown = good.clone();
        unknown[0] = 0x7f;
        let mut long = good.clone();
        long.push(1);
        let mut family_byte = good.clone();
        family_byte[1] = 0x09;
        let bad: Vec<(&str, StreamCursor, Family)> = vec![
            (
                "a garbage cursor",
                StreamCursor::new(vec![0xff, 0x00, 0x13]),
                family,
            ),
            (
                "a cursor in another backend's format",
                StreamCursor::new(foreign),
                family,
            ),
            (
                "a cursor of an unknown format version",
                StreamCursor::new(unknown),
                family,
            ),
            (
                "a truncated cursor",
                StreamCursor::new(good[..good.len() - 1].to_vec()),
                family,
            ),
            ("an over-long cursor", StreamCursor::new(long), family),
            ("another family's cursor", before[0].clone(), other_family),
            (
                "a cursor with an unknown family byte",
                StreamCursor::new(family_byte),
                family,
            ),
            (
                "a cursor beginning with junk",
                StreamCursor::new(vec![0, 1, 2]),
                family,
            ),
        ];
        for (what, cursor, fam) in bad {
            match backend
                .subscribe_family(fam, cursor.clone(), &Default::default())
                .await
            {
                Err(EngineError::InvalidCursor { .. }) => {}
                Err(e) => panic!("{fam}: {what} ({cursor:?}) gave `{e}`, expected InvalidCursor"),
                Ok(_) => panic!(
                    "{fam}: {what} ({cursor:?}) was accepted; expected InvalidCursor at subscribe"
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
    }
}

/// Cursors (`docs/design.md`): a cursor another instance of the backend handed out (for
/// an event this store never held) is refused — `InvalidCursor` at
/// subscribe or `CursorExpired` — never taken as a position here: no
/// event is delivered from it and it never waits endlessly.
pub async fn cursors_of_another_instance_are_refused<H: Harness>(h: &H) {
    let run = run_label("foreign");
    let publisher = h.publisher();
    for family in Family::ALL.iter().copied() {
        publish_batch(&*publisher, &drafts(family, 3, &run)).await;
        let foreign = hook(
            Capability::ForeignCursor,
            "make another instance's cursor",
            h.foreign_cursor(family).await,
        );
        let what = format!("{family}: a cursor of another instance ({foreign:?})");
        expect_refused(h, family, &foreign, true, &what).await;
        match h.backend().resolve_cursor(family, foreign.clone()).await {
            Err(EngineError::InvalidCursor { .. } | EngineError::CursorExpired { .. }) => {}
            other => panic!("{what}: resolve_cursor gave {other:?}, expected it refused"),
        }
    }
}

/// Guarantee 8: an undecodable stored record yields one `Corrupt` item with
/// its cursor, and the stream goes on; resuming from that cursor skips
/// it; the typed API reports it as a non-terminal error.
pub async fn corrupt_entries_are_flagged_and_the_stream_goes_on<H: Harness>(h: &H) {
    let run = run_label("corrupt");
    let publisher = h.publisher();
    let backend = h.backend();
    let order = h.event_order();
    for family in Family::ALL.iter().copied() {
        let drafts = drafts(family, 4, &run);
        let before = publish_batch(&*publisher, &drafts[..2]).await;
        let corrupt = inject_corrupt(h, family).await;
        publish_batch(&*publisher, &drafts[2..]).await;
        if order != EventOrder::Total {
            corrupt_among_partitions(h, family, &drafts, &run).await;
            continue;
        }
        for (filtered, filter) in [
            (false, SubscriptionFilter::default()),
            (true, SubscriptionFilter::new().with_tag("run", run.clone())),
        ] {
            let what = format!(
                "{family}: {} subscription over a corrupt record",
                if filtered { "a filtered" } else { "a" }
            );
            let mut sub = subscribe(h, family, before[1].clone(), &filter).await;
            match next_item(&mut sub, ITEM_DEADLINE, "the Corrupt item").await {
                DeliveryItem::Corrupt { cursor, detail } => {
                    assert_eq!(
                        cursor, corrupt,
                        "{what}: Corrupt must carry the bad record's cursor"
                    );
                    assert!(
                        !detail.is_empty(),
                        "{what}: Corrupt must say what was wrong"
                    );
                }
                other => panic!("{what}: expected Corrupt, got {other:?}"),
            }
            let (rest, _) = until_caught_up(&mut sub, "events after a corrupt record").await;
            assert_delivered(&rest, &drafts[2..], &format!("{what}, after Corrupt"));
        }
        let mut resumed = subscribe(h, family, corrupt.clone(), &Default::default()).await;
        let (rest, _) = until_caught_up(&mut resumed, "resume from a Corrupt cursor").await;
        assert_delivered(
            &rest,
            &drafts[2..],
            &format!("{family}: resumed from a Corrupt item's cursor"),
        );
    }
    // The typed API surfaces Corrupt as a non-terminal error.
    let drafts = drafts(Family::Completion, 1, &run);
    let corrupt = inject_corrupt(h, Family::Completion).await;
    publish_batch(&*publisher, &drafts).await;
    let mut typed = backend
        .subscribe_completion(StreamCursor::beginning(), &Default::default())
        .await
        .expect("typed subscribe");
    let mut saw_corrupt = false;
    loop {
        let item = tokio::time::timeout(ITEM_DEADLINE, typed.next())
            .await
            .expect("completion: a typed item within the deadline")
            .expect("completion: the typed stream ended after a corrupt record");
        match item {
            Err(EngineError::Corrupt { cursor, .. })
                if cursor == corrupt || order != EventOrder::Total =>
            {
                saw_corrupt = true
            }
            Err(EngineError::Corrupt { .. }) => {}
            Err(e) => panic!("completion: typed stream: unexpected error {e}"),
            Ok(e) if e.execution_id == *drafts[0].0.execution_id() => break,
            Ok(_) => {}
        }
    }
    assert!(
        saw_corrupt,
        "completion: the typed subscription must report the corrupt record and go on"
    );
}

/// The corrupt-record scenario under a per-partition order, where the
/// record's cursor is the subscription's own: from the beginning (with and
/// without a filter) the record comes as one `Corrupt` among `drafts`;
/// resuming from the item before it yields it again with the same cursor,
/// and resuming from its cursor yields exactly what followed it.
async fn corrupt_among_partitions<H: Harness>(
    h: &H,
    family: Family,
    drafts: &[(crate::event::NewEvent, crate::event::EventMeta)],
    run: &str,
) {
    let order = h.event_order();
    for (filtered, filter) in [
        (false, SubscriptionFilter::default()),
        (
            true,
            SubscriptionFilter::new().with_tag("run", run.to_owned()),
        ),
    ] {
        let what = format!(
            "{family}: {} subscription over a corrupt record",
            if filtered { "a filtered" } else { "a" }
        );
        let mut sub = subscribe(h, family, StreamCursor::beginning(), &filter).await;
        let mut items = Vec::new();
        loop {
            match next_item(&mut sub, ITEM_DEADLINE, "the backlog with a corrupt record").await {
                DeliveryItem::CaughtUp { .. } => break,
                DeliveryItem::Checkpoint { .. } => {}
                item => items.push(item),
            }
        }
        let corrupt_at: Vec<usize> = items
            .iter()
            .enumerate()
            .filter(|(_, i)| matches!(i, DeliveryItem::Corrupt { .. }))
            .map(|(n, _)| n)
            .collect();
        assert_eq!(
            corrupt_at.len(),
            1,
            "{what}: one Corrupt item, got {items:?}"
        );
        let at = corrupt_at[0];
        let DeliveryItem::Corrupt { cursor, detail } = &items[at] else {
            unreachable!()
        };
        assert!(
            !detail.is_empty(),
            "{what}: Corrupt must say what was wrong"
        );
        let events = |items: &[DeliveryItem]| -> Vec<_> {
            items
                .iter()
                .filter_map(|i| match i {
                    DeliveryItem::Event { event, meta } => Some((event.clone(), meta.clone())),
                    _ => None,
                })
                .collect()
        };
        assert_delivered_in(order, &events(&items), drafts, &what);
        let start = if at == 0 {
            StreamCursor::beginning()
        } else {
            items[at - 1].cursor().clone()
        };
        let mut again = subscribe(h, family, start, &filter).await;
        match next_item(&mut again, ITEM_DEADLINE, "the Corrupt item again").await {
            DeliveryItem::Corrupt { cursor: again, .. } => assert_eq!(
                &again, cursor,
                "{what}: resumed just before it, the record comes with the same cursor"
            ),
            other => panic!("{what}: resumed just before the corrupt record, got {other:?}"),
        }
        let mut resumed = subscribe(h, family, cursor.clone(), &filter).await;
        let (rest, _) = until_caught_up(&mut resumed, "resume from a Corrupt cursor").await;
        let after: Vec<_> = events(&items[at + 1..])
            .into_iter()
            .map(|(e, m)| (e.to_new_event(), m))
            .collect();
        assert_delivered_in(
            order,
            &rest,
            &after,
            &format!("{what}, resumed from the Corrupt item's cursor"),
        );
    }
}
