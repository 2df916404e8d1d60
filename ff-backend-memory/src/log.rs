//! One family's bounded in-memory log: append, read a batch after a
//! position, evict, and judge expiry under the same lock as the read.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use ff_core::stream_events::{EventMeta, NewEvent};
use ff_core::types::TimestampMs;
use tokio::sync::watch;

/// What a record holds: a typed draft, or raw wire fields decoded at
/// delivery (what a bridge from another store would append).
#[derive(Debug)]
pub(crate) enum RecordBody {
    Event(NewEvent),
    Raw(Vec<(String, String)>),
}

/// One stored event.
#[derive(Debug)]
pub(crate) struct Record {
    pub seq: u64,
    pub at: TimestampMs,
    pub meta: EventMeta,
    pub body: RecordBody,
}

/// How much a family's log may hold.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Retention {
    pub events: usize,
    pub bytes: usize,
}

impl Record {
    /// A rough size: fixed overhead plus every string's length.
    fn approx_bytes(&self) -> usize {
        let meta = self.meta.namespace.as_ref().map_or(0, String::len)
            + self
                .meta
                .tags
                .iter()
                .map(|(k, v)| k.len() + v.len() + 48)
                .sum::<usize>();
        let body: usize = match &self.body {
            RecordBody::Event(e) => e
                .fields()
                .iter()
                .map(|(_, v)| v.as_ref().map_or(0, String::len))
                .sum(),
            RecordBody::Raw(f) => f.iter().map(|(k, v)| k.len() + v.len() + 48).sum(),
        };
        256 + meta + body
    }
}

/// The log's contents. Sequences start at 1 and have no gaps; everything at
/// or below `evicted_through` is gone.
#[derive(Debug, Default)]
pub(crate) struct LogState {
    records: VecDeque<Arc<Record>>,
    /// Approximate bytes held by `records`.
    bytes: usize,
    evicted_through: u64,
    head: u64,
    last_at: i64,
}

/// The outcome of reading after a position.
pub(crate) enum Read {
    /// Records after the position (possibly none).
    Records(Vec<Arc<Record>>),
    /// The position's successor was evicted; resume from `oldest`.
    Expired { oldest: u64 },
}

impl LogState {
    pub fn head(&self) -> u64 {
        self.head
    }

    pub fn evicted_through(&self) -> u64 {
        self.evicted_through
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Append one record, stamping it with a time that never goes backwards,
    /// then evict the oldest records beyond `retention` events or
    /// `max_bytes`. Returns the new record's sequence.
    pub fn push(&mut self, meta: EventMeta, body: RecordBody, retention: Retention) -> u64 {
        self.head += 1;
        self.last_at = TimestampMs::now().0.max(self.last_at);
        let record = Record {
            seq: self.head,
            at: TimestampMs(self.last_at),
            meta,
            body,
        };
        self.bytes += record.approx_bytes();
        self.records.push_back(Arc::new(record));
        while self.records.len() > retention.events
            || (self.bytes > retention.bytes && self.records.len() > 1)
        {
            self.evict_one();
        }
        self.head
    }

    fn evict_one(&mut self) {
        if let Some(r) = self.records.pop_front() {
            self.bytes -= r.approx_bytes();
            self.evicted_through = r.seq;
        }
    }

    /// Evict every record with a sequence below `seq`.
    pub fn evict_before(&mut self, seq: u64) -> usize {
        let mut n = 0;
        while self.records.front().is_some_and(|r| r.seq < seq) {
            self.evict_one();
            n += 1;
        }
        n
    }

    /// Judge `after` (at most the head: subscribe checks) against retention
    /// and read up to `max` records after it.
    pub fn read_after(&self, after: u64, max: usize) -> Read {
        if after < self.evicted_through {
            return Read::Expired {
                oldest: self.evicted_through,
            };
        }
        let start = (after - self.evicted_through) as usize;
        Read::Records(self.records.iter().skip(start).take(max).cloned().collect())
    }

    /// The position just before the first record stamped at or after `at`.
    pub fn position_at(&self, at: i64) -> u64 {
        let idx = self.records.partition_point(|r| r.at.0 < at);
        self.records.get(idx).map_or(self.head, |r| r.seq - 1)
    }
}

/// A log plus the wake-up channel its subscribers wait on.
#[derive(Debug)]
pub(crate) struct FamilyLog {
    state: Mutex<LogState>,
    head_tx: watch::Sender<u64>,
}

impl FamilyLog {
    pub fn new() -> Self {
        Self {
            state: Mutex::new(LogState::default()),
            head_tx: watch::channel(0).0,
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, LogState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Wake subscribers after an append (call with the lock released).
    pub fn notify(&self, head: u64) {
        self.head_tx.send_replace(head);
    }

    pub fn watch(&self) -> watch::Receiver<u64> {
        self.head_tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ff_core::stream_events::{CompletionOutcome, NewEvent};
    use ff_core::types::ExecutionId;

    fn body() -> RecordBody {
        RecordBody::Event(NewEvent::completion(
            ExecutionId::new(0),
            CompletionOutcome::Success,
        ))
    }

    fn seqs(read: Read) -> Vec<u64> {
        match read {
            Read::Records(r) => r.iter().map(|r| r.seq).collect(),
            _ => panic!("expected records"),
        }
    }

    #[test]
    fn retention_evicts_the_oldest_and_expires_positions_before_them() {
        let mut log = LogState::default();
        for _ in 0..5 {
            log.push(
                EventMeta::new(),
                body(),
                Retention {
                    events: 3,
                    bytes: usize::MAX,
                },
            );
        }
        assert_eq!(log.evicted_through(), 2);
        assert_eq!(seqs(log.read_after(2, 10)), vec![3, 4, 5]);
        assert_eq!(seqs(log.read_after(4, 10)), vec![5]);
        assert!(matches!(log.read_after(1, 10), Read::Expired { oldest: 2 }));
        assert_eq!(seqs(log.read_after(5, 10)), Vec::<u64>::new());
    }

    #[test]
    fn a_byte_budget_evicts_large_records() {
        let mut log = LogState::default();
        let big = EventMeta::new().with_tag("blob", "x".repeat(10_000));
        for _ in 0..10 {
            log.push(
                big.clone(),
                body(),
                Retention {
                    events: 1000,
                    bytes: 35_000,
                },
            );
        }
        assert!(log.len() <= 3, "{} records kept", log.len());
        assert!(matches!(
            log.read_after(log.evicted_through(), 10),
            Read::Records(_)
        ));
    }

    #[test]
    fn evict_before_keeps_the_named_record() {
        let mut log = LogState::default();
        for _ in 0..6 {
            log.push(
                EventMeta::new(),
                body(),
                Retention {
                    events: 100,
                    bytes: usize::MAX,
                },
            );
        }
        assert_eq!(log.evict_before(4), 3);
        assert_eq!(seqs(log.read_after(3, 10)), vec![4, 5, 6]);
        assert!(matches!(log.read_after(2, 10), Read::Expired { oldest: 3 }));
    }
}
