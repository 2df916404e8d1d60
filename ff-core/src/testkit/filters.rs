//! Semantic 9: filters admit exactly the matching events, and checkpoints
//! keep a filtered consumer's resume position moving.

use std::time::Duration;

use crate::backend::DeliveryItem;
use crate::filter::SubscriptionFilter;
use crate::stream_events::{EventMeta, Family, NewEvent};
use crate::stream_subscribe::StreamCursor;
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

/// §3.7.9: each filter criterion, alone and combined, admits exactly the
/// matching events, in order.
pub async fn filters_admit_exactly_the_matching_events<H: Harness>(h: &H) {
    let run = run_label("filters");
    let publisher = h.publisher();
    for family in Family::ALL.iter().copied() {
        let target = ExecutionId::new(9);
        let published = varied(family, &run, target);
        publish_batch(&*publisher, &published).await;
        let first_kind = published[0].0.kind();
        let run_filter = || SubscriptionFilter::new().with_tag("run", run.clone());
        let filters = vec![
            (
                "namespace",
                SubscriptionFilter::new().with_namespace("ns-a"),
            ),
            ("tag", SubscriptionFilter::new().with_tag("region", "eu")),
            (
                "execution_id",
                SubscriptionFilter::new().with_execution_id(target),
            ),
            ("kinds", SubscriptionFilter::new().with_kinds([first_kind])),
            (
                "combined",
                run_filter()
                    .with_namespace("ns-a")
                    .with_tag("region", "eu")
                    .with_execution_id(target),
            ),
            (
                "no match",
                SubscriptionFilter::new().with_namespace("nobody"),
            ),
        ];
        for (what, filter) in filters {
            let expected: Vec<(NewEvent, EventMeta)> = published
                .iter()
                .filter(|(d, m)| filter.matches_parts(d.kind(), d.execution_id(), m))
                .cloned()
                .collect();
            let mut sub = subscribe(h, family, StreamCursor::beginning(), &filter).await;
            let (got, _) = until_caught_up(&mut sub, "filtered backlog").await;
            assert_delivered(&got, &expected, &format!("{family} filter {what}"));
        }
    }
}

/// §3.6 / §3.7.9: while a filter admits nothing, `Checkpoint` items carry
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
        let last = cursors.last().unwrap();
        let checkpoint = loop {
            match next_item(&mut sub, interval + ITEM_DEADLINE, "a Checkpoint").await {
                DeliveryItem::Checkpoint { cursor } => {
                    if cursor.position_cmp(last) != Some(std::cmp::Ordering::Less) {
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
        assert_delivered(
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
