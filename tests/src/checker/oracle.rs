//! The oracle: per consumer and partition, what it received is exactly the
//! committed sequence after its start, or a `CursorExpired` came before
//! any gap; events reach caught-up consumers within the wake-up bound.
//!
//! A consumer's *position* in a partition is logical: the event it last
//! received there, or how it started (tail, beginning, a publish's
//! cursor). Each segment's events in a partition must be one contiguous
//! run of that partition's committed history (filtered as the consumer
//! filters) that begins exactly where the position says:
//! - after an event: right after it;
//! - beginning: with nothing retained skipped;
//! - tail: with nothing skipped that was published after the subscribe
//!   returned and, where the backend orders by commit (`exact`), nothing
//!   included that was acknowledged before the subscribe was called;
//! - a publish's cursor: right after it where `exact`; on Postgres, events
//!   at or before it may come again ("more, never fewer"), but none whose
//!   transaction began committing after both the cursor was handed out
//!   and the subscribe returned (it was open at subscribe, so it cannot be
//!   behind the start) may be skipped; one that committed before the
//!   subscribe sorts where it sorts.
//!
//! A consumer that received an event of a forked history (one a lossy
//! failover lost) must receive nothing of the new history before a
//! `CursorExpired`. A consumer stopped at the end of a quiet run must have
//! received everything after its position.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use super::history::{
    Ck, ConsumerSpec, FirstStart, History, PosKey, Published, Segment, SegmentEnd, SegmentStart,
};
use super::truth::{Truth, TruthEntry};

/// How long a caught-up consumer may wait for an event outside faults.
pub const WAKE_UP_BOUND: Duration = Duration::from_secs(5);

/// One broken promise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The consumer concerned, if any.
    pub consumer: Option<usize>,
    /// The events around it, for the shrunk history.
    pub events: Vec<Ck>,
    /// What went wrong.
    pub what: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.consumer {
            Some(c) => write!(f, "consumer {c}: {}", self.what),
            None => write!(f, "{}", self.what),
        }
    }
}

/// Where a consumer stands in one partition.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Logical {
    Beginning,
    Tail {
        called: Duration,
        returned: Duration,
    },
    AfterEvent(Ck),
    AfterPublish {
        event: Ck,
        /// When the subscribe from that cursor returned.
        returned: Duration,
    },
    AfterForked(Ck),
    /// Somewhere the oracle cannot place (a checkpoint a store gave back).
    Unknown,
}

/// Judge a run. `exact` is false where a tail or a publish's cursor may
/// include overlapping transactions (Postgres); `complete` when the run
/// ended quietly, so every consumer should have caught up.
pub fn check(history: &History, truth: &Truth, exact: bool, complete: bool) -> Vec<Violation> {
    let mut out = Vec::new();
    for &ck in &truth.lost {
        out.push(Violation {
            consumer: None,
            events: vec![ck],
            what: format!(
                "acknowledged event {ck} is neither stored nor behind the retention horizon"
            ),
        });
    }
    out.extend(failed_publishes(history));
    for (spec, segments) in &history.consumers {
        Consumer {
            spec,
            history,
            truth,
            exact,
            out: &mut out,
        }
        .check(segments, complete);
    }
    out
}

/// How long after a fault heals a publish may still fail: each pooled
/// connection to a server that went away learns so on its next use.
pub const SETTLE_AFTER_FAULT: Duration = Duration::from_secs(2);

/// Publishes that failed although no fault was under way while they ran
/// (a consumer's own stall aside): once a fault or operation has healed
/// (and [`SETTLE_AFTER_FAULT`] passed), the backend must serve writes
/// again, not fail them until a timeout.
fn failed_publishes(history: &History) -> Vec<Violation> {
    let overlaps_a_fault = |p: &Published| {
        history
            .faults
            .iter()
            .filter(|f| f.consumer.is_none())
            .any(|f| {
                p.finished >= f.from && f.until.is_none_or(|u| p.started <= u + SETTLE_AFTER_FAULT)
            })
    };
    let mut failed: Vec<&Published> = history
        .published
        .values()
        .filter(|p| p.error.is_some() && !overlaps_a_fault(p))
        .collect();
    failed.sort_by_key(|p| p.ck);
    failed
        .into_iter()
        .map(|p| Violation {
            consumer: None,
            events: vec![p.ck],
            what: format!(
                "publishing event {} failed although no fault was under way from {:.3}s to {:.3}s: {}",
                p.ck,
                p.started.as_secs_f64(),
                p.finished.as_secs_f64(),
                p.error.as_deref().unwrap_or_default()
            ),
        })
        .collect()
}

struct Consumer<'a> {
    spec: &'a ConsumerSpec,
    history: &'a History,
    truth: &'a Truth,
    exact: bool,
    out: &'a mut Vec<Violation>,
}

impl Consumer<'_> {
    fn violation(&mut self, events: Vec<Ck>, what: String) {
        self.out.push(Violation {
            consumer: Some(self.spec.id),
            events,
            what,
        });
    }

    fn published(&self, ck: Ck) -> Option<&Published> {
        self.history.published.get(&ck)
    }

    fn partition_of(&self, ck: Ck) -> Option<u16> {
        self.published(ck).map(|p| p.partition)
    }

    /// The partition's committed history as this consumer filters it.
    fn stream(&self, partition: u16) -> Vec<&TruthEntry> {
        self.truth
            .streams
            .get(&(self.spec.family, partition))
            .map(|entries| {
                entries
                    .iter()
                    .filter(|e| {
                        self.published(e.ck)
                            .is_some_and(|p| self.spec.filter.admits(p))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn partitions(&self) -> Vec<u16> {
        if let Some(list) = &self.spec.partitions {
            return list.clone();
        }
        let mut all: Vec<u16> = self
            .truth
            .streams
            .keys()
            .filter(|(f, _)| *f == self.spec.family)
            .map(|&(_, p)| p)
            .collect();
        for p in self.history.published.values() {
            if p.family == self.spec.family && !all.contains(&p.partition) {
                all.push(p.partition);
            }
        }
        all.sort_unstable();
        all
    }

    fn first_logical(&self, first: &FirstStart, seg: &Segment) -> Logical {
        match first {
            FirstStart::Tail => Logical::Tail {
                called: seg.called,
                returned: seg.returned.unwrap_or(seg.called),
            },
            FirstStart::Beginning => Logical::Beginning,
            FirstStart::PublishCursor(ck) => Logical::AfterPublish {
                event: *ck,
                returned: seg.returned.unwrap_or(seg.called),
            },
        }
    }

    fn check(&mut self, segments: &[Segment], complete: bool) {
        let partitions = self.partitions();
        let mut state: HashMap<u16, Logical> = HashMap::new();
        for (n, seg) in segments.iter().enumerate() {
            match &seg.start {
                SegmentStart::First(first) => {
                    let l = self.first_logical(first, seg);
                    for &p in &partitions {
                        state.insert(p, l.clone());
                    }
                }
                SegmentStart::AfterExpiry => {
                    for &p in &partitions {
                        state.insert(p, Logical::Beginning);
                    }
                }
                SegmentStart::Resume => {}
                SegmentStart::Restored(at) => {
                    // A stored cursor of an event places its partition; in
                    // the others it holds positions the oracle cannot name.
                    let own = at.and_then(|ck| self.partition_of(ck));
                    for &p in &partitions {
                        let l = match at {
                            Some(ck) if own == Some(p) && self.truth.forked.contains(ck) => {
                                Logical::AfterForked(*ck)
                            }
                            Some(ck) if own == Some(p) => Logical::AfterEvent(*ck),
                            _ => Logical::Unknown,
                        };
                        state.insert(p, l);
                    }
                }
            }
            for &p in &partitions {
                let run: Vec<Ck> = seg
                    .events
                    .iter()
                    .map(|r| r.ck)
                    .filter(|&ck| self.partition_of(ck) == Some(p))
                    .collect();
                if run.is_empty() {
                    continue;
                }
                let next = self.judge_run(n, p, &run, &state[&p]);
                match next {
                    Some(l) => {
                        state.insert(p, l);
                    }
                    None => return,
                }
            }
            self.check_wake_ups(n, seg);
            if let SegmentEnd::Broken(e) = &seg.end {
                self.violation(
                    Vec::new(),
                    format!("segment {n}: the subscription ended with a terminal error instead of recovering: {e}"),
                );
            }
        }
        let Some(last) = segments.last() else {
            return;
        };
        if !complete || !matches!(last.end, SegmentEnd::Stopped | SegmentEnd::Open) {
            return;
        }
        if last.end == SegmentEnd::Open && last.returned.is_none() {
            self.violation(
                Vec::new(),
                format!(
                    "segment {}: its subscribe call (from {:?} at {:.3}s) had not returned by the end of a quiet run",
                    segments.len() - 1,
                    last.from,
                    last.called.as_secs_f64()
                ),
            );
            return;
        }
        for &p in &partitions {
            self.check_complete(p, &state[&p]);
        }
    }

    /// Check one segment's events in one partition; the new position, or
    /// `None` after a violation (later segments would only repeat it).
    fn judge_run(&mut self, n: usize, p: u16, run: &[Ck], at: &Logical) -> Option<Logical> {
        let stream = self.stream(p);
        let index: HashMap<Ck, usize> = stream.iter().enumerate().map(|(i, e)| (e.ck, i)).collect();
        // Events of a forked history end the comparable part of the run.
        let forked = run.iter().position(|ck| self.truth.forked.contains(ck));
        let (ours, theirs) = run.split_at(forked.unwrap_or(run.len()));
        if let Some(&after) = theirs.iter().find(|ck| !self.truth.forked.contains(ck)) {
            let lost = theirs[0];
            self.violation(
                vec![lost, after],
                format!(
                    "segment {n}, partition {p}: after event {lost} of a history the store lost, delivered event {after} of the new one without CursorExpired"
                ),
            );
            return None;
        }
        if let (Logical::AfterForked(lost), Some(&first)) = (at, ours.first()) {
            self.violation(
                vec![*lost, first],
                format!(
                    "segment {n}, partition {p}: resumed from event {lost} of a lost history and delivered event {first} of the new one without CursorExpired"
                ),
            );
            return None;
        }
        if let Some(&first) = ours.first() {
            let Some(&i0) = index.get(&first) else {
                self.violation(
                    vec![first],
                    format!("segment {n}, partition {p}: delivered event {first}, which its filter does not admit or the store never held"),
                );
                return None;
            };
            for (j, &ck) in ours.iter().enumerate() {
                let want = stream.get(i0 + j).map(|e| e.ck);
                if want != Some(ck) {
                    let what = match (index.get(&ck), want) {
                        (Some(&got), Some(w)) if got > i0 + j => format!(
                            "skipped {} event(s) from event {w} (next delivered: {ck})",
                            got - (i0 + j)
                        ),
                        (Some(_), _) => format!("delivered event {ck} again or out of order"),
                        (None, _) => format!("delivered event {ck}, which its filter does not admit or the store never held"),
                    };
                    self.violation(vec![ck], format!("segment {n}, partition {p}: {what}"));
                    return None;
                }
            }
            if let Err(what) = self.judge_start(&stream, &index, i0, at) {
                self.violation(vec![first], format!("segment {n}, partition {p}: {what}"));
                return None;
            }
        }
        Some(match theirs.last().or(ours.last()) {
            Some(&ck) if self.truth.forked.contains(&ck) => Logical::AfterForked(ck),
            Some(&ck) => Logical::AfterEvent(ck),
            None => at.clone(),
        })
    }

    /// Whether a run may begin at index `i0` of `stream` from `at`.
    fn judge_start(
        &self,
        stream: &[&TruthEntry],
        index: &HashMap<Ck, usize>,
        i0: usize,
        at: &Logical,
    ) -> Result<(), String> {
        let first = stream[i0].ck;
        match at {
            Logical::AfterEvent(e) => match index.get(e) {
                Some(&i) if i + 1 == i0 => Ok(()),
                Some(&i) if i0 > i + 1 => Err(format!(
                    "resumed after event {e} but began at event {first}: skipped {}",
                    i0 - i - 1
                )),
                Some(_) => Err(format!(
                    "resumed after event {e} but began at event {first}, which came before it"
                )),
                None => Err(format!("resumed after event {e}, which is in no history")),
            },
            Logical::AfterForked(e) => Err(format!(
                "resumed from event {e} of a lost history without CursorExpired"
            )),
            Logical::Unknown => Ok(()),
            Logical::Beginning => match stream[..i0].iter().find(|e| e.retained) {
                Some(skipped) => Err(format!(
                    "from the beginning, began at event {first} and skipped retained event {}",
                    skipped.ck
                )),
                None => Ok(()),
            },
            Logical::Tail { called, returned } => {
                if let Some(skipped) = stream[..i0]
                    .iter()
                    .find(|e| self.published(e.ck).is_some_and(|p| p.started > *returned))
                {
                    return Err(format!(
                        "from the tail, skipped event {}, published after the subscribe returned",
                        skipped.ck
                    ));
                }
                if self.exact
                    && self
                        .published(first)
                        .and_then(|p| p.acked)
                        .is_some_and(|a| a < *called)
                {
                    return Err(format!(
                        "from the tail, delivered event {first}, acknowledged before the subscribe began"
                    ));
                }
                Ok(())
            }
            Logical::AfterPublish { event: e, returned } => {
                let Some(origin) = self.published(*e) else {
                    return Err(format!("started from the cursor of unknown event {e}"));
                };
                let (Some(pos), Some(handed)) = (origin.pos, origin.acked) else {
                    return Ok(());
                };
                let since = handed.max(*returned);
                let after = stream
                    .iter()
                    .position(|t| t.pos > pos)
                    .unwrap_or(stream.len());
                if self.exact {
                    return if i0 == after {
                        Ok(())
                    } else {
                        Err(format!(
                            "from event {e}'s publish cursor, began at event {first} instead of right after it"
                        ))
                    };
                }
                if i0 > after {
                    return Err(format!(
                        "from event {e}'s publish cursor, skipped events after it (began at {first})"
                    ));
                }
                match stream[..i0]
                    .iter()
                    .find(|t| self.published(t.ck).is_some_and(|p| p.started > since))
                {
                    Some(skipped) => Err(format!(
                        "from event {e}'s publish cursor, skipped event {}, which began committing after the cursor was handed out and the subscribe returned",
                        skipped.ck
                    )),
                    None => Ok(()),
                }
            }
        }
    }

    /// At the end of a quiet run: nothing left undelivered after `at`.
    fn check_complete(&mut self, p: u16, at: &Logical) {
        let stream = self.stream(p);
        let missing: Vec<Ck> = match at {
            Logical::AfterEvent(e) => match stream.iter().position(|t| t.ck == *e) {
                Some(i) => stream[i + 1..].iter().map(|t| t.ck).collect(),
                None => Vec::new(),
            },
            Logical::AfterForked(e) => {
                self.violation(
                    vec![*e],
                    format!(
                        "partition {p}: positioned at event {e} of a lost history and never told (no CursorExpired)"
                    ),
                );
                return;
            }
            Logical::Beginning => stream.iter().filter(|t| t.retained).map(|t| t.ck).collect(),
            Logical::Unknown => Vec::new(),
            Logical::Tail { returned, .. } => stream
                .iter()
                .filter(|t| self.published(t.ck).is_some_and(|p| p.started > *returned))
                .map(|t| t.ck)
                .collect(),
            Logical::AfterPublish { event: e, returned } => {
                let origin = self.published(*e);
                let pos = origin
                    .and_then(|o| o.pos)
                    .unwrap_or(PosKey(u64::MAX, u64::MAX));
                let since = origin
                    .and_then(|o| o.acked)
                    .unwrap_or(Duration::MAX)
                    .max(*returned);
                stream
                    .iter()
                    .filter(|t| {
                        t.pos > pos
                            || (!self.exact
                                && self.published(t.ck).is_some_and(|p| p.started > since))
                    })
                    .map(|t| t.ck)
                    .collect()
            }
        };
        if let Some(&first) = missing.first() {
            self.violation(
                missing.iter().copied().take(8).collect(),
                format!(
                    "partition {p}: never delivered {} event(s) from event {first} by the end of a quiet run",
                    missing.len()
                ),
            );
        }
    }

    /// Events reached the caught-up segment within the bound, outside
    /// faults.
    fn check_wake_ups(&mut self, n: usize, seg: &Segment) {
        let Some(caught_up) = seg.caught_up else {
            return;
        };
        for r in &seg.events {
            let Some(acked) = self.published(r.ck).and_then(|p| p.acked) else {
                continue;
            };
            if acked < caught_up || r.at.saturating_sub(acked) <= WAKE_UP_BOUND {
                continue;
            }
            let disturbed = self.history.faults.iter().any(|f| {
                f.consumer.is_none_or(|c| c == self.spec.id)
                    && f.from <= r.at
                    && f.until.is_none_or(|u| u + WAKE_UP_BOUND >= acked)
            });
            if !disturbed {
                let late = r.at.saturating_sub(acked);
                self.violation(
                    vec![r.ck],
                    format!(
                        "segment {n}: event {} arrived {late:.1?} after its publish returned, with no fault active (bound {WAKE_UP_BOUND:?})",
                        r.ck
                    ),
                );
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::history::{
        ConsumerSpec, DeliveryPath, FaultWindow, FilterSpec, PublishPath, Received,
    };
    use ff_core::stream_events::Family;
    use ff_core::types::ExecutionId;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Events 1..=n, published one per 10 ms, stored in that order.
    fn world(n: u64) -> (History, Truth) {
        let mut history = History::default();
        let mut truth = Truth::default();
        let execution = ExecutionId::new(0);
        for ck in 1..=n {
            history.published.insert(
                ck,
                Published {
                    ck,
                    family: Family::Completion,
                    partition: 0,
                    execution,
                    namespace: None,
                    path: PublishPath::Single,
                    started: ms(ck * 10),
                    acked: Some(ms(ck * 10 + 1)),
                    finished: ms(ck * 10 + 1),
                    cursor: None,
                    pos: Some(PosKey(ck, 0)),
                    error: None,
                },
            );
            truth
                .streams
                .entry((Family::Completion, 0))
                .or_default()
                .push(TruthEntry {
                    ck,
                    pos: PosKey(ck, 0),
                    retained: true,
                });
        }
        (history, truth)
    }

    fn consumer(history: &mut History, first: FirstStart, segments: Vec<(SegmentStart, Vec<Ck>)>) {
        let spec = ConsumerSpec {
            id: history.consumers.len(),
            family: Family::Completion,
            path: DeliveryPath::Delivery,
            filter: FilterSpec::All,
            partitions: None,
            first,
        };
        let segments = segments
            .into_iter()
            .map(|(start, events)| Segment {
                start,
                from: String::new(),
                called: ms(0),
                returned: Some(ms(1)),
                caught_up: None,
                events: events
                    .into_iter()
                    .map(|ck| Received {
                        ck,
                        at: ms(ck * 10 + 2),
                    })
                    .collect(),
                end: SegmentEnd::Stopped,
            })
            .collect();
        history.consumers.push((spec, segments));
    }

    #[test]
    fn every_event_once_in_order_across_a_resume_passes() {
        let (mut h, t) = world(6);
        let first = FirstStart::Beginning;
        consumer(
            &mut h,
            first.clone(),
            vec![
                (SegmentStart::First(first), vec![1, 2, 3]),
                (SegmentStart::Resume, vec![4, 5, 6]),
            ],
        );
        assert_eq!(check(&h, &t, true, true), vec![]);
    }

    #[test]
    fn a_skip_a_repeat_and_a_missing_tail_are_each_caught() {
        let first = FirstStart::Beginning;
        for (events, what) in [
            (vec![vec![1, 2], vec![4, 5, 6]], "skipped"),
            (vec![vec![1, 2, 3], vec![3, 4, 5, 6]], "came before"),
            (vec![vec![1, 2, 3], vec![4, 5]], "never delivered"),
        ] {
            let (mut h, t) = world(6);
            let segments = events
                .into_iter()
                .enumerate()
                .map(|(i, e)| {
                    let start = if i == 0 {
                        SegmentStart::First(first.clone())
                    } else {
                        SegmentStart::Resume
                    };
                    (start, e)
                })
                .collect();
            consumer(&mut h, first.clone(), segments);
            let v = check(&h, &t, true, true);
            assert!(v.iter().any(|v| v.what.contains(what)), "{what}: {v:?}");
        }
    }

    #[test]
    fn continuing_past_a_lost_history_without_expiry_is_caught() {
        let (mut h, mut t) = world(6);
        // Events 3 and 4 were acknowledged on a primary that was lost.
        t.streams
            .get_mut(&(Family::Completion, 0))
            .expect("stream")
            .retain(|e| e.ck != 3 && e.ck != 4);
        t.forked.extend([3, 4]);
        h.faults.push(FaultWindow {
            what: "lossy failover".into(),
            from: ms(0),
            until: Some(ms(100)),
            lossy: true,
            consumer: None,
        });
        let first = FirstStart::Beginning;
        consumer(
            &mut h,
            first.clone(),
            vec![(SegmentStart::First(first), vec![1, 2, 3, 4, 5, 6])],
        );
        let v = check(&h, &t, true, true);
        assert!(
            v.iter().any(|v| v.what.contains("without CursorExpired")),
            "{v:?}"
        );
    }

    #[test]
    fn a_publish_cursor_on_postgres_must_include_what_committed_after_it() {
        let (mut h, t) = world(6);
        // Event 2 began committing after event 4's cursor was handed out.
        h.published.get_mut(&2).expect("event 2").started = ms(200);
        let first = FirstStart::PublishCursor(4);
        consumer(
            &mut h,
            first.clone(),
            vec![(SegmentStart::First(first.clone()), vec![5, 6])],
        );
        let v = check(&h, &t, false, true);
        assert!(
            v.iter().any(|v| v.what.contains("skipped event 2")),
            "{v:?}"
        );
        let (mut h, t) = world(6);
        h.published.get_mut(&2).expect("event 2").started = ms(200);
        consumer(
            &mut h,
            first.clone(),
            vec![(SegmentStart::First(first.clone()), vec![2, 3, 4, 5, 6])],
        );
        assert_eq!(check(&h, &t, false, true), vec![]);
        // Subscribed from the cursor only after event 2 committed: event 2
        // sorts before the cursor's event, so it is not after it.
        let (mut h, t) = world(6);
        h.published.get_mut(&2).expect("event 2").started = ms(200);
        consumer(
            &mut h,
            first.clone(),
            vec![(SegmentStart::First(first), vec![5, 6])],
        );
        h.consumers[0].1[0].returned = Some(ms(300));
        assert_eq!(check(&h, &t, false, true), vec![]);
    }

    #[test]
    fn a_publish_that_fails_with_no_fault_under_way_is_caught() {
        let (mut h, t) = world(6);
        for ck in [2, 5] {
            let p = h.published.get_mut(&ck).expect("published");
            p.acked = None;
            p.error = Some("refused".into());
        }
        // Event 2's call overlaps a fault; event 5's begins well after it
        // healed.
        let late = h.published.get_mut(&5).expect("published");
        late.started = ms(30) + SETTLE_AFTER_FAULT + ms(1);
        late.finished = late.started;
        h.faults.push(FaultWindow {
            what: "restart".into(),
            from: ms(21),
            until: Some(ms(30)),
            lossy: false,
            consumer: None,
        });
        let v = check(&h, &t, true, true);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].events, vec![5]);
        assert!(v[0].what.contains("no fault was under way"), "{v:?}");
    }
}
