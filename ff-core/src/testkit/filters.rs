//! Semantic 9: filters admit exactly the matching events, and checkpoints
//! keep a filtered consumer's resume position moving.

use std::time::Duration;

use crate::backend::DeliveryItem;
use crate::cursor::StreamCursor;
use crate::event::record::Field;
use crate::event::{EventMeta, Family, NewEvent};
use crate::filter::SubscriptionFilter;
use crate::testkit::harness::{hook, Capability, EventOrder};
use crate::testkit::support::*;
use crate::testkit::Harness;
use crate::types::ExecutionId;

/// Drafts whose metadata and execution ids vary so each filter criterion
/// selects a different subset.
fn varied(family: Family, run: &str, target: ExecutionId) -> Vec<(NewEvent, EventMeta)> {
    drafts(family, 24, run)
        .into_iter()
        .enumerate()
        .map(|(i, (mut draft, mut meta))| {
            if i % 3 == 0 {
                set_execution_id(&mut draft, target);
            }
            meta.namespace = Some(if i % 2 == 0 { "ns-a" } else { "ns-b" }.into());
            meta.tags
                .insert("region".into(), if i % 4 < 2 { "eu" } else { "us" }.into());
            (draft, meta)
        })
        .collect()
}

/// Subscribe from the beginning with `filter` and expect exactly the
/// `published` events it matches.
async fn expect_filtered<H: Harness>(
    h: &H,
    family: Family,
    published: &[(NewEvent, EventMeta)],
    filter: &SubscriptionFilter,
    what: &str,
) {
    let expected: Vec<(NewEvent, EventMeta)> = published
        .iter()
        .filter(|(d, m)| filter.matches_parts(d.kind(), d.execution_id(), m))
        .cloned()
        .collect();
    let mut sub = subscribe(h, family, StreamCursor::beginning(), filter).await;
    let (got, _) = until_caught_up(&mut sub, "filtered backlog").await;
    assert_delivered_in(
        h.event_order(),
        &got,
        &expected,
        &format!("{family}: filter {what} ({filter:?})"),
    );
}

/// Guarantee 9: each filter criterion — every kind of the family, `other`
/// included, alone and in pairs — and their combinations admit exactly the
/// matching events, in order.
pub async fn filters_admit_exactly_the_matching_events<H: Harness>(h: &H) {
    let run = run_label("filters");
    let publisher = h.publisher();
    for family in Family::ALL.iter().copied() {
        let target = ExecutionId::new(9);
        let published = varied(family, &run, target);
        publish_batch(&*publisher, &published).await;
        let kinds = family.kinds();
        for kind in &kinds {
            assert!(
                published.iter().any(|(d, _)| d.kind() == *kind),
                "{family}: the suite's drafts lack kind {kind}"
            );
        }
        let run_filter = || SubscriptionFilter::new().with_tag("run", run.clone());
        let mut filters = vec![
            ("namespace".to_owned(), run_filter().with_namespace("ns-a")),
            ("tag".to_owned(), run_filter().with_tag("region", "eu")),
            (
                "execution_id".to_owned(),
                SubscriptionFilter::new().with_execution_id(target),
            ),
            (
                "combined".to_owned(),
                run_filter()
                    .with_namespace("ns-a")
                    .with_tag("region", "eu")
                    .with_execution_id(target),
            ),
            (
                "no match".to_owned(),
                SubscriptionFilter::new().with_namespace("nobody"),
            ),
        ];
        for (i, kind) in kinds.iter().enumerate() {
            filters.push((format!("kind {kind}"), run_filter().with_kinds([*kind])));
            let next = kinds[(i + 1) % kinds.len()];
            filters.push((
                format!("kinds {kind},{next}"),
                run_filter().with_kinds([*kind, next]),
            ));
        }
        for (what, filter) in filters {
            expect_filtered(h, family, &published, &filter, &what).await;
        }
    }
}

/// A record of `family` as a producer outside ff may write it: UUIDs in
/// upper case, tags JSON with extra spaces; the kind is the family's `i`th
/// shape (an unknown outcome/effect string for `other`). Returns the
/// fields and the event and metadata it must decode to.
fn non_canonical(
    family: Family,
    i: usize,
    exec: ExecutionId,
    run: &str,
) -> (Vec<(Field, String)>, (NewEvent, EventMeta)) {
    let shapes: Vec<NewEvent> = crate::event::sample_drafts()
        .into_iter()
        .filter(|d| d.family() == family)
        .collect();
    let mut draft = shapes[i % shapes.len()].clone();
    set_execution_id(&mut draft, exec);
    let meta = EventMeta::new()
        .with_namespace("ns-raw")
        .with_tag("run", run)
        .with_tag("n", format!("raw{i}"));
    let mut fields: Vec<(Field, String)> = draft
        .fields()
        .into_iter()
        .filter_map(|(f, v)| v.map(|v| (f, v)))
        .map(|(f, v)| {
            let upper = matches!(
                f,
                Field::ExecutionId
                    | Field::LeaseId
                    | Field::NewLeaseId
                    | Field::SignalId
                    | Field::WaitpointId
            );
            (
                f,
                if upper {
                    v.to_uppercase().replace("{FP:", "{fp:")
                } else {
                    v
                },
            )
        })
        .collect();
    fields.push((Field::Namespace, "ns-raw".into()));
    fields.push((
        Field::Tags,
        format!("{{ \"n\" : \"raw{i}\", \"run\" : \"{run}\" }}"),
    ));
    (fields, (draft, meta))
}

/// Guarantee 9 over records an outside producer wrote: upper-case UUIDs and
/// unknown outcome/effect strings decode to the same typed values as ff's
/// own, and every filter treats them exactly as it treats those values
/// (a filter on the execution id admits the upper-case spelling).
pub async fn filters_treat_non_canonical_records_like_canonical_ones<H: Harness>(h: &H) {
    let run = run_label("noncanonical");
    for family in Family::ALL.iter().copied() {
        let target = ExecutionId::new(11);
        let kinds = family.kinds();
        let mut published = Vec::new();
        for i in 0..kinds.len().max(4) + 2 {
            let exec = if i % 2 == 0 {
                target
            } else {
                ExecutionId::new(12)
            };
            let (fields, expected) = non_canonical(family, i, exec, &run);
            hook(
                Capability::RawRecords,
                "store a raw record",
                h.inject_raw(family, &fields).await,
            );
            published.push(expected);
        }
        let run_filter = || SubscriptionFilter::new().with_tag("run", run.clone());
        expect_filtered(
            h,
            family,
            &published,
            &run_filter(),
            "run tag (every raw record)",
        )
        .await;
        expect_filtered(
            h,
            family,
            &published,
            &run_filter().with_execution_id(target),
            "execution_id against upper-case UUIDs",
        )
        .await;
        expect_filtered(
            h,
            family,
            &published,
            &run_filter().with_namespace("ns-raw"),
            "namespace",
        )
        .await;
        for kind in &kinds {
            expect_filtered(
                h,
                family,
                &published,
                &run_filter().with_kinds([*kind]),
                &format!("kind {kind} over raw records"),
            )
            .await;
        }
    }
}

/// Guarantee 9 and the delivery stream's checkpoints: while a filter admits nothing, `Checkpoint` items carry
/// the scanned position forward, and resuming from one skips exactly the
/// filtered-out events.
pub async fn checkpoints_advance_past_filtered_out_events<H: Harness>(h: &H) {
    let run = run_label("checkpoint");
    let publisher = h.publisher();
    let interval = h.checkpoint_interval();
    assert!(
        interval <= Duration::from_secs(1),
        "configure the harness with a checkpoint interval of at most 1 s (got {interval:?})"
    );
    for family in Family::ALL.iter().copied() {
        let drafts = drafts(family, 6, &run);
        let filter = SubscriptionFilter::new().with_namespace("admits-nothing");
        let mut sub = subscribe(h, family, StreamCursor::empty(), &filter).await;
        let item = next_item(&mut sub, ITEM_DEADLINE, "CaughtUp").await;
        assert!(
            matches!(item, DeliveryItem::CaughtUp { .. }),
            "got {item:?}"
        );
        let cursors = publish_batch(&*publisher, &drafts[..5]).await;
        // A checkpoint past all five: past the last one's cursor, or, with
        // one position per partition, at or past the head of every one.
        let order = h.event_order();
        let last = match order {
            EventOrder::Total => cursors.last().unwrap().clone(),
            _ => h.backend().bounds(family).await.expect("bounds").head,
        };
        let checkpoint = loop {
            match next_item(&mut sub, interval + ITEM_DEADLINE, "a Checkpoint").await {
                DeliveryItem::Checkpoint { cursor } => {
                    let past = match order {
                        EventOrder::Total => {
                            cursor.position_cmp(&last) != Some(std::cmp::Ordering::Less)
                        }
                        _ => cursor.position_cmp(&last).is_some_and(|o| o.is_ge()),
                    };
                    if past {
                        break cursor;
                    }
                }
                other => panic!("{family}: a filter admitting nothing yielded {other:?}"),
            }
        };
        drop(sub);
        publish_batch(&*publisher, &drafts[5..]).await;
        let mut resumed = subscribe(h, family, checkpoint, &Default::default()).await;
        let (rest, _) = until_caught_up(&mut resumed, "events after a checkpoint").await;
        assert_delivered_in(
            order,
            &rest,
            &drafts[5..],
            &format!("{family} resumed from a checkpoint"),
        );
    }
}

/// A filtered subscription reads past a long run of rejected events
/// promptly — live and during catch-up — instead of pausing per batch.
pub async fn filtered_subscriptions_skip_long_rejected_runs_promptly<H: Harness>(h: &H) {
    let run = run_label("rejected-run");
    let publisher = h.publisher();
    for family in Family::ALL.iter().copied() {
        let needle_ns = format!("needle-{run}");
        let filter = SubscriptionFilter::new().with_namespace(needle_ns.clone());
        let mut live = subscribe(h, family, StreamCursor::empty(), &filter).await;
        let item = next_item(&mut live, ITEM_DEADLINE, "CaughtUp").await;
        assert!(
            matches!(item, DeliveryItem::CaughtUp { .. }),
            "got {item:?}"
        );
        let hay = drafts(family, 3000, &run);
        for chunk in hay.chunks(500) {
            publish_batch(&*publisher, chunk).await;
        }
        let mut needle = drafts(family, 1, &run);
        needle[0].1.namespace = Some(needle_ns);
        publish_batch(&*publisher, &needle).await;
        let got = tokio::time::timeout(
            ITEM_DEADLINE,
            take_events(&mut live, 1, "the one matching event after 3000 rejected"),
        )
        .await
        .unwrap_or_else(|_| panic!("{family}: a live filtered subscription took over {ITEM_DEADLINE:?} to read past 3000 rejected events"));
        assert_delivered(&got, &needle, &format!("{family} live past a rejected run"));
        let mut catch_up = subscribe(h, family, StreamCursor::beginning(), &filter).await;
        let (got, _) = tokio::time::timeout(
            ITEM_DEADLINE,
            until_caught_up(&mut catch_up, "catch-up past 3000 rejected events"),
        )
        .await
        .unwrap_or_else(|_| panic!("{family}: a filtered catch-up took over {ITEM_DEADLINE:?} to read past 3000 rejected events"));
        assert_delivered(
            &got,
            &needle,
            &format!("{family} catch-up past a rejected run"),
        );
    }
}
