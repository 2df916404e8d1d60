//! Semantic 5 from the publisher's side: `kill_connections` severs the
//! publisher's connections too, and a publish in flight across it either
//! succeeds or fails with a transport error — promptly — while every
//! publish that was acknowledged reaches the subscribers, once, in order.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::time::{timeout, Instant};

use crate::backend::DeliveryItem;
use crate::cursor::StreamCursor;
use crate::error::EngineError;
use crate::event::{EventMeta, Family, NewEvent, StreamEvent};
use crate::testkit::harness::{hook, Capability, EventOrder};
use crate::testkit::support::*;
use crate::testkit::Harness;
use crate::types::ExecutionId;

/// Publishes attempted one by one per family; the connections are killed
/// after the first [`KILL_AFTER`] of them.
const ATTEMPTS: usize = 30;
/// Publishes attempted before the kill.
const KILL_AFTER: usize = 8;

/// Wait until none of `before` is among the backend's connections and at
/// least one connection is open again.
async fn wait_until_replaced<H: Harness>(h: &H, before: &[String], what: &str) {
    let deadline = Instant::now() + ITEM_DEADLINE;
    loop {
        let now = hook(
            Capability::Reconnect,
            "list its connections",
            h.connection_ids().await,
        );
        let survivors: Vec<&String> = now.iter().filter(|id| before.contains(id)).collect();
        if survivors.is_empty() && !now.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: after kill_connections the backend still holds connections {survivors:?} \
             of {before:?} ({} now): the hook must sever every connection, the publisher's too",
            now.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How many partitions (streams with an order of their own) `order` has.
fn partitions(order: EventOrder) -> usize {
    match order {
        EventOrder::Total => 1,
        EventOrder::PerPartition { partitions } => usize::from(partitions.max(1)),
    }
}

/// The index (`n` tag) of each delivered event among `drafts`, checking
/// the event equals that draft.
fn indexes(
    delivered: &[(StreamEvent, EventMeta)],
    drafts: &[(NewEvent, EventMeta)],
    what: &str,
) -> Vec<usize> {
    delivered
        .iter()
        .map(|(event, meta)| {
            let i: usize = meta
                .tags
                .get("n")
                .and_then(|n| n.parse().ok())
                .filter(|i| *i < drafts.len())
                .unwrap_or_else(|| panic!("{what}: delivered an event nobody published: {meta:?}"));
            assert_delivered(
                &[(event.clone(), meta.clone())],
                &drafts[i..=i],
                &format!("{what}: event #{i}"),
            );
            i
        })
        .collect()
}

/// The indexes of `attempts` that a subscription from the beginning finds
/// stored (for a failure message).
async fn stored_among<H: Harness>(
    h: &H,
    family: Family,
    attempts: &[(NewEvent, EventMeta)],
) -> Vec<usize> {
    let mut sub = subscribe(h, family, StreamCursor::beginning(), &Default::default()).await;
    let (all, _) = until_caught_up(&mut sub, "everything stored, to explain a loss").await;
    let run = attempts.first().and_then(|(_, m)| m.tags.get("run"));
    let ours: Vec<(StreamEvent, EventMeta)> = all
        .into_iter()
        .filter(|(_, m)| m.tags.get("run") == run)
        .collect();
    indexes(&ours, attempts, "everything stored")
}

/// Guarantee 5 for publishers: with no subscription open, a publish leaves a
/// connection that `connection_ids` lists; a publish racing
/// `kill_connections` returns within the item deadline, `Ok` or a
/// `Transport`/`Backend` error; the publisher works again afterwards; a
/// tailing subscriber receives every acknowledged event exactly once and
/// in publish order, and a failed one at most once; and every connection
/// listed before the kill — the publisher's included — was replaced.
pub async fn publishes_across_a_connection_loss_are_delivered_or_refused<H: Harness>(h: &H) {
    let run = run_label("publish-kill");
    let publisher = h.publisher();
    let order = h.event_order();
    for family in Family::ALL.iter().copied() {
        let warm_up = drafts(family, 1, &format!("{run}-warm-up"));
        publish_batch(&*publisher, &warm_up).await;
        let idle = hook(
            Capability::Reconnect,
            "list its connections",
            h.connection_ids().await,
        );
        assert!(
            !idle.is_empty(),
            "{family}: connection_ids lists no connection after a publish while no subscription \
             is open: list the publisher's connections too (kill_connections must sever them)"
        );

        let mut sub = subscribe(h, family, StreamCursor::empty(), &Default::default()).await;
        let item = next_item(&mut sub, ITEM_DEADLINE, "CaughtUp").await;
        assert!(
            matches!(item, DeliveryItem::CaughtUp { .. }),
            "{family}: a tail subscription must start with CaughtUp, got {item:?}"
        );
        let before = hook(
            Capability::Reconnect,
            "list its connections",
            h.connection_ids().await,
        );

        let attempts = drafts(family, ATTEMPTS, &run);
        let (kill_now, killed) = tokio::sync::oneshot::channel::<()>();
        let publishing = async {
            let mut kill_now = Some(kill_now);
            let mut acknowledged = BTreeSet::new();
            for (i, (draft, meta)) in attempts.iter().enumerate() {
                if i == KILL_AFTER {
                    let _ = kill_now.take().map(|k| k.send(()));
                    tokio::task::yield_now().await;
                }
                let what = format!("{family}: publish #{i} of {ATTEMPTS} across a connection loss");
                match timeout(
                    ITEM_DEADLINE,
                    publisher.publish(draft.clone(), meta.clone()),
                )
                .await
                {
                    Err(_) => panic!(
                        "{what} neither succeeded nor failed within {ITEM_DEADLINE:?}: a publish \
                         on a severed connection must reconnect or fail"
                    ),
                    Ok(Ok(_)) => {
                        acknowledged.insert(i);
                    }
                    Ok(Err(EngineError::Transport { .. } | EngineError::Backend { .. })) => {}
                    Ok(Err(e)) => panic!(
                        "{what} failed with `{e}`: expected success or a Transport/Backend error"
                    ),
                }
            }
            acknowledged
        };
        let killing = async {
            killed.await.expect("the publishing half asks for the kill");
            hook(
                Capability::Reconnect,
                "kill its connections",
                h.kill_connections().await,
            );
        };
        let (acknowledged, ()) = tokio::join!(publishing, killing);

        // One end marker per partition: a partition's marker comes after
        // everything published to that partition before it.
        let mut end = drafts(family, partitions(order), &format!("{run}-end"));
        for (p, (draft, _)) in end.iter_mut().enumerate() {
            set_execution_id(draft, ExecutionId::new(p as u16));
        }
        for (draft, meta) in &end {
            publish_retrying(&*publisher, draft.clone(), meta.clone()).await;
        }
        let what = format!("{family}: a tail subscription across a publish that raced a kill");
        let mut delivered = Vec::new();
        let mut markers = 0;
        while markers < end.len() {
            let (event, meta) = take_events(
                &mut sub,
                1,
                &format!("{what}: the events, then an end marker in every partition"),
            )
            .await
            .remove(0);
            if meta.tags.get("run") == end[0].1.tags.get("run") {
                markers += 1;
            } else {
                delivered.push((event, meta));
            }
        }
        let got = indexes(&delivered, &attempts, &what);
        let partition = |i: usize| order.partition_of(attempts[i].0.execution_id());
        for pair in got.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            let same_stream = order == EventOrder::Total || partition(a) == partition(b);
            assert!(
                !same_stream || a < b,
                "{what}: event #{b} came after #{a}: each event at most once, in publish order \
                 (delivered {got:?})"
            );
        }
        let missing: Vec<usize> = acknowledged
            .iter()
            .copied()
            .filter(|i| !got.contains(i))
            .collect();
        if !missing.is_empty() {
            let stored = stored_among(h, family, &attempts).await;
            let kept: Vec<&usize> = missing.iter().filter(|i| stored.contains(i)).collect();
            panic!(
                "{what}: the publishes {missing:?} were acknowledged but never delivered \
                 (delivered {got:?}); a subscription from the beginning finds {kept:?} of them \
                 stored, so {}",
                if kept.is_empty() {
                    "the publisher acknowledged writes that were not stored"
                } else {
                    "the subscription skipped stored events across the reconnect"
                }
            );
        }
        wait_until_replaced(h, &before, &what).await;
    }
}
