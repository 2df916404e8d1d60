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
            // Acknowledged while a lossy fault was under way: it reached the
            // new primary only if the new primary held it when it took over.
            let after_fault = p.acked.is_some_and(|a| {
                lossy_windows
                    .iter()
                    .any(|&(from, until)| a >= from && until.is_none_or(|u| a <= u))
            });
            let survived = state.survived.as_ref().map(|s| s.contains(&p.ck));
            if after_fault && survived != Some(true) {
                truth.forked.insert(p.ck);
                continue;
            }
            let pruned = removed.get(&p.ck).copied().or(
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
