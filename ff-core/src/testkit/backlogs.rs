//! `CaughtUp` at read boundaries: backlogs one less than, exactly and one
//! more than the harness's read batch and read-ahead, where a subscription
//! whose first read exactly reaches the subscribe-time head (or stops one
//! short of it) is most likely to misplace its `CaughtUp`.

use crate::cursor::StreamCursor;
use crate::event::Family;
use crate::filter::SubscriptionFilter;
use crate::testkit::harness::EventOrder;
use crate::testkit::support::*;
use crate::testkit::Harness;

/// The backlog sizes swept for a harness: n − 1, n and n + 1 around the
/// read batch, twice the read batch and the read-ahead limit, in
/// increasing order without repeats.
pub fn backlog_sizes(read_batch: usize, read_ahead_limit: usize) -> Vec<usize> {
    let mut sizes: Vec<usize> = [read_batch, 2 * read_batch, read_ahead_limit]
        .into_iter()
        .filter(|n| *n > 0)
        .flat_map(|n| [n - 1, n, n + 1])
        .filter(|n| *n > 0)
        .collect();
    sizes.sort_unstable();
    sizes.dedup();
    sizes
}

/// The delivery stream (`docs/design.md`): for every backlog size in [`backlog_sizes`], a subscription
/// from the position where the previous backlog ended yields exactly that
/// backlog, then `CaughtUp` carrying the last event's cursor — unfiltered
/// and with a filter that admits every event. Under a per-partition order
/// the backlog lies in one partition, so the partition's reads meet the
/// same boundaries.
pub async fn caught_up_follows_backlogs_sized_around_the_read_batch<H: Harness>(h: &H) {
    let batch = h.read_batch();
    let limit = h.read_ahead_limit();
    assert!(
        batch > 0 && batch <= limit && limit < 1000,
        "read_batch is {batch} and read_ahead_limit {limit}: declare the batch one read \
         fetches (at least 1, at most the read-ahead limit) and a small read-ahead limit"
    );
    let run = run_label("backlogs");
    let publisher = h.publisher();
    let order = h.event_order();
    let sizes = backlog_sizes(batch, limit);
    for family in Family::ALL.iter().copied() {
        let mut tail = subscribe(h, family, StreamCursor::empty(), &Default::default()).await;
        let (_, mut start) = until_caught_up(&mut tail, "CaughtUp of a tail subscription").await;
        drop(tail);
        for &n in &sizes {
            let backlog = match order {
                EventOrder::Total => drafts(family, n, &format!("{run}-{n}")),
                _ => drafts_of_one_partition(family, n, &format!("{run}-{n}")),
            };
            for chunk in backlog.chunks(500) {
                publish_batch(&*publisher, chunk).await;
            }
            let filter = SubscriptionFilter::new().with_tag("run", format!("{run}-{n}"));
            let mut next_start = None;
            for (filtered, filter) in [(false, SubscriptionFilter::default()), (true, filter)] {
                let what =
                    format!(
                    "{family}: a{} subscription over a backlog of {n} events (read batch {batch}, \
                     read-ahead {limit})",
                    if filtered { " filtered" } else { "n unfiltered" }
                );
                let mut sub = subscribe(h, family, start.clone(), &filter).await;
                let (events, caught_up) = until_caught_up(&mut sub, &what).await;
                assert_delivered_in(
                    order,
                    &events,
                    &backlog,
                    &format!("{what}, before CaughtUp"),
                );
                let last = events.last().expect("a non-empty backlog").0.cursor();
                assert_eq!(
                    caught_up.position_cmp(last),
                    Some(std::cmp::Ordering::Equal),
                    "{what}: CaughtUp must come right after the last event of the backlog and \
                     carry its cursor ({last:?}), got {caught_up:?}"
                );
                next_start.get_or_insert(caught_up);
            }
            start = next_start.expect("the unfiltered CaughtUp");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::backlog_sizes;

    #[test]
    fn sizes_surround_the_batch_its_double_and_the_read_ahead() {
        assert_eq!(backlog_sizes(10, 20), vec![9, 10, 11, 19, 20, 21]);
        assert_eq!(backlog_sizes(7, 7), vec![6, 7, 8, 13, 14, 15]);
        assert_eq!(backlog_sizes(1, 4), vec![1, 2, 3, 4, 5]);
    }
}
