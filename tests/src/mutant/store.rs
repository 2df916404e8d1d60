//! The mutant backend's "server": one log per family, shared by every
//! instance (process) of the backend, with retention, a notification
//! channel that crosses processes, and simulated connections that the
//! harness can sever.
//!
//! Invariants: sequence numbers of a family start at 1 and increase by one
//! per record; `evicted_through` is the highest sequence evicted (0 when
//! none), so a position `s` is retained iff `evicted_through <= s <= head`.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use ff_core::stream_events::record::Field;
use ff_core::stream_events::{EventMeta, Family, NewEvent};
use ff_core::types::TimestampMs;
use tokio::sync::watch;

use super::groups::MutantGroups;
use super::Mutation;

/// What a record holds: an event ff's publisher wrote, or the raw fields
/// an outside producer wrote (decoded when read).
#[derive(Clone, Debug)]
pub(crate) enum Body {
    Event(NewEvent, EventMeta),
    Raw(Vec<(Field, String)>),
}

/// One stored record.
#[derive(Clone, Debug)]
pub(crate) struct Record {
    pub seq: u64,
    pub at: TimestampMs,
    pub body: Body,
}

/// One family's log.
#[derive(Debug, Default)]
pub(crate) struct Log {
    records: VecDeque<Record>,
    head: u64,
    evicted_through: u64,
}

/// What a read after a position found.
pub(crate) enum Read {
    Records(Vec<Record>),
    /// The position is behind the retained history or beyond its head.
    Expired {
        oldest: u64,
    },
}

impl Log {
    /// The last sequence assigned (0 when empty).
    pub fn head(&self) -> u64 {
        self.head
    }

    /// The position just before the oldest retained record.
    pub fn oldest_position(&self) -> u64 {
        self.evicted_through
    }

    /// Whether position `after` is behind the retained history or beyond
    /// the head.
    pub fn is_expired(&self, after: u64) -> bool {
        after < self.evicted_through || after > self.head
    }

    fn append(&mut self, body: Body) -> u64 {
        self.head += 1;
        self.records.push_back(Record {
            seq: self.head,
            at: TimestampMs::now(),
            body,
        });
        self.head
    }

    /// Evict every record before `seq`.
    pub fn evict_before(&mut self, seq: u64) {
        while self.records.front().is_some_and(|r| r.seq < seq) {
            let gone = self.records.pop_front().expect("a record");
            self.evicted_through = gone.seq;
        }
    }

    /// Up to `max` records after `after`.
    pub fn read_after(&self, after: u64, max: usize) -> Read {
        if after < self.evicted_through {
            return Read::Expired {
                oldest: self.evicted_through,
            };
        }
        let start = self.records.partition_point(|r| r.seq <= after);
        Read::Records(self.records.iter().skip(start).take(max).cloned().collect())
    }

    /// The first record at or after `at`.
    pub fn first_at_or_after(&self, at: TimestampMs) -> Option<u64> {
        self.records.iter().find(|r| r.at >= at).map(|r| r.seq)
    }
}

/// The shared store.
#[derive(Debug)]
pub(crate) struct Store {
    /// Random per store: part of every cursor.
    pub epoch: u64,
    /// The bug switched on, if any.
    pub mutation: Option<Mutation>,
    /// Every family's log, under one lock so a batch is atomic.
    logs: Mutex<[Log; 4]>,
    /// Bumped on every append and every connection kill: the wake-up that
    /// reaches every process.
    notify: watch::Sender<u64>,
    live_connections: Mutex<BTreeSet<u64>>,
    next_connection: AtomicU64,
    /// Subscriptions not yet dropped.
    pub open_subscriptions: AtomicUsize,
    /// Consumer positions by name.
    cursors: Mutex<HashMap<String, Vec<u8>>>,
    /// Consumer groups.
    pub groups: Arc<MutantGroups>,
}

impl Store {
    pub fn new(mutation: Option<Mutation>) -> Self {
        Self {
            epoch: rand_epoch(),
            mutation,
            logs: Mutex::new(Default::default()),
            notify: watch::channel(0).0,
            live_connections: Mutex::new(BTreeSet::new()),
            next_connection: AtomicU64::new(1),
            open_subscriptions: AtomicUsize::new(0),
            cursors: Mutex::new(HashMap::new()),
            groups: Arc::new(MutantGroups::new(mutation)),
        }
    }

    /// Whether `m` is the mutation switched on.
    pub fn has(&self, m: Mutation) -> bool {
        self.mutation == Some(m)
    }

    /// Run `f` on `family`'s log.
    pub fn with_log<T>(&self, family: Family, f: impl FnOnce(&mut Log) -> T) -> T {
        let mut logs = self.logs.lock().expect("store lock");
        f(&mut logs[family.index()])
    }

    /// Append records (of any families) under one lock; returns each
    /// one's family and sequence, in order.
    pub fn append_all(&self, records: Vec<(Family, Body)>) -> Vec<(Family, u64)> {
        let appended = {
            let mut logs = self.logs.lock().expect("store lock");
            records
                .into_iter()
                .map(|(family, body)| (family, logs[family.index()].append(body)))
                .collect()
        };
        self.notify.send_modify(|n| *n = n.wrapping_add(1));
        appended
    }

    /// The cross-process wake-up channel.
    pub fn notifications(&self) -> watch::Receiver<u64> {
        self.notify.subscribe()
    }

    /// Open a connection; returns its id.
    pub fn connect(&self) -> u64 {
        let id = self.next_connection.fetch_add(1, Ordering::Relaxed);
        self.live_connections.lock().expect("lock").insert(id);
        id
    }

    /// Whether connection `id` is still open.
    pub fn is_live(&self, id: u64) -> bool {
        self.live_connections.lock().expect("lock").contains(&id)
    }

    /// Close connection `id` (its holder went away).
    pub fn disconnect(&self, id: u64) {
        self.live_connections.lock().expect("lock").remove(&id);
    }

    /// Sever every connection but `spared` and wake everyone so they
    /// notice.
    pub fn kill_connections_except(&self, spared: &[u64]) {
        self.live_connections
            .lock()
            .expect("lock")
            .retain(|id| spared.contains(id));
        self.notify.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// The position stored under `name`.
    pub fn load_cursor(&self, name: &str) -> Option<Vec<u8>> {
        self.cursors.lock().expect("lock").get(name).cloned()
    }

    /// Store `cursor` under `name`.
    pub fn store_cursor(&self, name: String, cursor: Vec<u8>) {
        self.cursors.lock().expect("lock").insert(name, cursor);
    }

    /// The ids of the open connections.
    pub fn connection_ids(&self) -> Vec<u64> {
        self.live_connections
            .lock()
            .expect("lock")
            .iter()
            .copied()
            .collect()
    }
}

/// A random epoch from the standard library's per-process hasher seeds.
fn rand_epoch() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}
