//! [`StreamBackend::resolve_cursor`](crate::backend::StreamBackend::resolve_cursor)
//! answers what a subscription from the same cursor would: the same
//! refusals, and a position from which subscribing yields exactly what
//! subscribing from the cursor itself yields.

use crate::cursor::StreamCursor;
use crate::error::EngineError;
use crate::event::Family;
use crate::testkit::harness::EventOrder;
use crate::testkit::support::*;
use crate::testkit::Harness;

/// Resolve `cursor`, or panic naming `what`.
async fn resolved<H: Harness>(
    h: &H,
    family: Family,
    cursor: &StreamCursor,
    what: &str,
) -> StreamCursor {
    h.backend()
        .resolve_cursor(family, cursor.clone())
        .await
        .unwrap_or_else(|e| panic!("{family}: resolving {what} ({cursor:?}) failed: {e}"))
}

/// Resolve `cursor` and expect `CursorExpired` with an `oldest`.
async fn resolves_expired<H: Harness>(h: &H, family: Family, cursor: &StreamCursor, what: &str) {
    match h.backend().resolve_cursor(family, cursor.clone()).await {
        Err(EngineError::CursorExpired { oldest, .. }) => assert!(
            oldest.is_some(),
            "{family}: resolving {what}: CursorExpired must name the oldest retained position"
        ),
        other => panic!(
            "{family}: resolving {what} ({cursor:?}) gave {other:?}; a subscription from it is CursorExpired, so resolving must be too"
        ),
    }
}

/// "Only a backend judges a cursor" (`docs/design.md`): `resolve_cursor` applies exactly
/// the proof a subscription applies. A cursor a subscription yielded
/// resolves to itself, `beginning()` stays `beginning()`, the empty
/// cursor resolves to a position from which a subscription yields exactly
/// the events published after the call, an expired cursor (behind
/// retention or beyond the head) is `CursorExpired`, and a malformed or
/// another family's cursor is `InvalidCursor`.
pub async fn resolve_cursor_matches_subscription<H: Harness>(h: &H) {
    let run = run_label("resolve");
    let publisher = h.publisher();
    let backend = h.backend();
    let order = h.event_order();
    for family in Family::ALL.iter().copied() {
        let drafts = match order {
            EventOrder::Total => drafts(family, 15, &run),
            _ => drafts_of_one_partition(family, 15, &run),
        };
        publish_batch(&*publisher, &drafts[..10]).await;
        let mut sub = subscribe(h, family, StreamCursor::beginning(), &Default::default()).await;
        let (events, caught_up) = until_caught_up(&mut sub, "ten events").await;
        assert_delivered_in(
            order,
            &events,
            &drafts[..10],
            &format!("{family}: ten events"),
        );
        let cursors: Vec<StreamCursor> = events.iter().map(|(e, _)| e.cursor().clone()).collect();
        for (what, cursor) in cursors
            .iter()
            .map(|c| ("a yielded cursor", c))
            .chain([("the CaughtUp cursor", &caught_up)])
        {
            assert_eq!(
                &resolved(h, family, cursor, what).await,
                cursor,
                "{family}: {what} must resolve to itself"
            );
        }
        assert_eq!(
            resolved(h, family, &StreamCursor::beginning(), "beginning()").await,
            StreamCursor::beginning(),
            "{family}: beginning() must resolve to beginning()"
        );

        let tail = resolved(h, family, &StreamCursor::empty(), "the tail").await;
        assert!(
            !tail.is_tail(),
            "{family}: the tail must resolve to a position, not the empty cursor"
        );
        publish_batch(&*publisher, &drafts[10..]).await;
        let mut from_tail = subscribe(h, family, tail, &Default::default()).await;
        let (later, _) = until_caught_up(&mut from_tail, "events after the resolved tail").await;
        assert_delivered_in(
            order,
            &later,
            &drafts[10..],
            &format!("{family}: from the resolved tail"),
        );

        h.expire_before(family, &cursors[5])
            .await
            .expect("expire_before");
        for stale in &cursors[..4] {
            resolves_expired(h, family, stale, "a cursor behind retention").await;
        }
        assert_eq!(
            &resolved(
                h,
                family,
                &cursors[4],
                "the cursor just before the oldest retained event"
            )
            .await,
            &cursors[4],
            "{family}: the cursor just before the oldest retained event is still a position"
        );
        let beyond = h
            .cursor_beyond_head(family)
            .await
            .expect("cursor_beyond_head");
        resolves_expired(h, family, &beyond, "a cursor beyond the head").await;

        let other_family = Family::ALL.iter().copied().find(|f| *f != family).unwrap();
        let good = cursors[9].as_bytes();
        for (what, cursor, fam) in [
            (
                "a garbage cursor",
                StreamCursor::new(vec![0xff, 0x00, 0x13]),
                family,
            ),
            ("another family's cursor", cursors[9].clone(), other_family),
            (
                "a truncated cursor",
                StreamCursor::new(good[..good.len() - 1].to_vec()),
                family,
            ),
        ] {
            match backend.resolve_cursor(fam, cursor.clone()).await {
                Err(EngineError::InvalidCursor { .. }) => {}
                other => panic!(
                    "{fam}: resolving {what} ({cursor:?}) gave {other:?}, expected InvalidCursor"
                ),
            }
        }
    }
}
