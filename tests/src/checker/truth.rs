//! What was committed: the stores' own record, read directly (raw `XRANGE`,
//! plain SQL), joined with the publishes. The one oracle every check asks.
//!
//! A family's history per partition is its retained entries in stored
//! order, preceded by the acknowledged events retention removed (those at
//! or behind the store's recorded horizon, ordered by the positions their
//! publishes returned). An acknowledged event found in neither is *lost*
//! — unless a lossy failover was injected, when it is *forked*: part of a
//! history the store no longer has, which no consumer may continue from
//! without a `CursorExpired`.

use std::collections::{BTreeMap, HashMap, HashSet};

use ff_core::stream_events::Family;

use super::history::{Ck, History, PosKey};

/// One retained event as the store holds it.
#[derive(Clone, Debug)]
pub struct StoredEvent {
    /// Its number (from the `ck` metadata tag).
    pub ck: Ck,
    /// Its partition.
    pub partition: u16,
    /// Its position.
    pub pos: PosKey,
}

/// What a world's store holds at the end of a run.
#[derive(Clone, Debug, Default)]
pub struct StoreState {
    /// Retained events of every family.
    pub stored: BTreeMap<Family, Vec<StoredEvent>>,
    /// Per family and partition: every position at or before this one was
    /// removed by retention.
    pub pruned_through: HashMap<(Family, u16), PosKey>,
    /// Events retention removed, where the world knows them one by one.
    pub removed: BTreeMap<Family, Vec<StoredEvent>>,
    /// After a lossy failover: the events the new primary held when it
    /// took over (read from it directly at that moment).
    pub survived: Option<HashSet<Ck>>,
}

/// One event of a committed history.
#[derive(Clone, Debug)]
pub struct TruthEntry {
    /// Its number.
    pub ck: Ck,
    /// Its position.
    pub pos: PosKey,
    /// Whether the store still holds it.
    pub retained: bool,
}

/// The committed histories of a run.
#[derive(Debug, Default)]
pub struct Truth {
    /// Per family and partition, in stream order.
    pub streams: HashMap<(Family, u16), Vec<TruthEntry>>,
    /// Acknowledged events of a history the store no longer has.
    pub forked: HashSet<Ck>,
    /// Acknowledged events the store lost without a fault that may lose.
    pub lost: Vec<Ck>,
}

impl Truth {
    /// Join the store's state with the history.
    pub fn build(state: &StoreState, history: &History) -> Self {
        let lossy = history.faults.iter().any(|f| f.lossy);
        let lossy_windows: Vec<(std::time::Duration, Option<std::time::Duration>)> = history
            .faults
            .iter()
            .filter(|f| f.lossy)
            .map(|f| (f.from, f.until))
            .collect();
        let mut truth = Truth::default();
        let mut held: HashSet<Ck> = HashSet::new();
        for (&family, events) in &state.stored {
            for e in events {
                held.insert(e.ck);
                truth
                    .streams
                    .entry((family, e.partition))
                    .or_default()
                    .push(TruthEntry {
                        ck: e.ck,
                        pos: e.pos,
                        retained: true,
                    });
            }
        }
        let removed: HashMap<Ck, PosKey> = state
            .removed
            .values()
            .flatten()
            .map(|e| (e.ck, e.pos))
            .collect();
        for p in history.published.values() {
            if held.contains(&p.ck) || p.acked.is_none() {
                continue;
            }
            // Removed by retention, as read from the store one by one: it
            // was part of the store's history when retention ran, whatever
            // faults came before (say, acknowledged by the new primary after
            // a lossy takeover, then pruned).
            let known_removed = removed.get(&p.ck).copied();
            // Acknowledged while a lossy fault was under way: it reached the
            // new primary only if the new primary held it when it took over.
            let after_fault = p.acked.is_some_and(|a| {
                lossy_windows
                    .iter()
                    .any(|&(from, until)| a >= from && until.is_none_or(|u| a <= u))
            });
            let survived = state.survived.as_ref().map(|s| s.contains(&p.ck));
            if known_removed.is_none() && after_fault && survived != Some(true) {
                truth.forked.insert(p.ck);
                continue;
            }
            let pruned = known_removed.or(
                match (p.pos, state.pruned_through.get(&(p.family, p.partition))) {
                    (Some(pos), Some(&through)) if pos <= through => Some(pos),
                    _ => None,
                },
            );
            if let Some(pos) = pruned {
                truth
                    .streams
                    .entry((p.family, p.partition))
                    .or_default()
                    .push(TruthEntry {
                        ck: p.ck,
                        pos,
                        retained: false,
                    });
            } else if lossy {
                truth.forked.insert(p.ck);
            } else {
                truth.lost.push(p.ck);
            }
        }
        for entries in truth.streams.values_mut() {
            entries.sort_by_key(|e| e.pos);
        }
        truth
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ff_core::types::ExecutionId;

    use super::*;
    use crate::checker::history::{FaultWindow, PublishPath, Published};

    fn published(ck: Ck, acked_ms: u64) -> Published {
        Published {
            ck,
            family: Family::Completion,
            partition: 0,
            execution: ExecutionId::new(0),
            namespace: None,
            path: PublishPath::Single,
            started: Duration::from_millis(acked_ms - 1),
            acked: Some(Duration::from_millis(acked_ms)),
            finished: Duration::from_millis(acked_ms),
            cursor: None,
            pos: Some(PosKey(ck, 0)),
            error: None,
        }
    }

    fn stored(ck: Ck) -> StoredEvent {
        StoredEvent {
            ck,
            partition: 0,
            pos: PosKey(ck, 0),
        }
    }

    /// Events 1..=4 acknowledged inside a lossy failover's window (100 to
    /// 200 ms), with no record of what the new primary held: 1 was read
    /// from the store by retention, 2 is retained, 3 and 4 are in neither.
    fn lossy_run() -> (StoreState, History) {
        let mut history = History::default();
        history.faults.push(FaultWindow {
            what: "kill -9 of the primary".into(),
            from: Duration::from_millis(100),
            until: Some(Duration::from_millis(200)),
            lossy: true,
            consumer: None,
        });
        for ck in 1..=4 {
            history.published.insert(ck, published(ck, 100 + 10 * ck));
        }
        let mut state = StoreState::default();
        state.removed.insert(Family::Completion, vec![stored(1)]);
        state.stored.insert(Family::Completion, vec![stored(2)]);
        state
            .pruned_through
            .insert((Family::Completion, 0), PosKey(3, 0));
        (state, history)
    }

    #[test]
    fn an_event_retention_read_from_the_store_is_history_even_after_a_lossy_failover() {
        let (state, history) = lossy_run();
        let truth = Truth::build(&state, &history);
        let stream: Vec<(Ck, bool)> = truth.streams[&(Family::Completion, 0)]
            .iter()
            .map(|e| (e.ck, e.retained))
            .collect();
        assert_eq!(stream, vec![(1, false), (2, true)]);
        // Behind the horizon but never seen in the store: it may have been
        // lost in the failover before retention ran.
        assert_eq!(truth.forked, HashSet::from([3, 4]));
        assert!(truth.lost.is_empty());
    }
}
