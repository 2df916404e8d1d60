//! Faults on a cluster of our own (three primaries with a replica each,
//! `appendonly yes` / `appendfsync always`), under a running publisher and
//! a running subscription over every partition: `kill -9` of a primary (its
//! replica takes over), twice per test, and the migration of a partition's
//! slot to another primary and back.
//!
//! The oracle (see "How it is tested" in `docs/design.md`), per partition: what the subscription delivered
//! equals what the cluster stores, each event once, in the stored order;
//! every acknowledged publish is stored (publishes wait for one replica:
//! `ValkeyConfig::with_replica_acks`); nothing is stored that was not
//! published. A subscription that read an entry the failover then lost
//! must have said so with `CursorExpired`: from its `oldest`, the partition
//! is delivered again from what is stored, and everything it had delivered
//! there that is not stored was never acknowledged.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use ff_backend_valkey::{ValkeyBackend, ValkeyConfig};
use ff_core::backend::{
    DeliveryItem, DeliveryStream, EventPublisher, ReconnectPolicy, StreamBackend,
};
use ff_core::engine_error::EngineError;
use ff_core::stream_events::{CompletionOutcome, EventMeta, Family, NewEvent, StreamEvent};
use ff_core::stream_subscribe::StreamCursor;
use ff_core::types::ExecutionId;
use ff_tests::support::{self, skip_if_external_valkey_cluster, ClusterOptions, ValkeyCluster};
use futures::StreamExt;
use tokio::sync::{mpsc, watch, Mutex};
use tokio::task::block_in_place;
use tokio::time::{timeout_at, Instant};

const FAMILY: Family = Family::Completion;
/// How long the whole settling phase may take.
const SETTLE: Duration = Duration::from_secs(60);

fn config(partitions: u16) -> ValkeyConfig {
    let name = support::unique_name("fffault");
    ValkeyConfig::default()
        .with_key_prefix(format!("{name}:"))
        .with_client_name(name)
        .with_partitions(partitions)
        .with_read_batch(100)
        .with_replica_acks(1, Duration::from_secs(2))
        .with_timeouts(Duration::from_secs(2), Duration::from_secs(20))
        .with_reconnect(
            ReconnectPolicy::new(Some(Duration::from_secs(60)), None)
                .with_backoff(Duration::from_millis(20), Duration::from_millis(500)),
        )
}

/// An event's publish sequence number and its partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Seq {
    partition: u16,
    n: u64,
}

fn seq_of(event: &StreamEvent, meta: &EventMeta, partitions: u16) -> Seq {
    Seq {
        partition: event.execution_id().partition() % partitions,
        n: meta.tags["seq"].parse().expect("a seq tag"),
    }
}

/// What the publisher did: acknowledged and failed publishes.
#[derive(Default)]
struct Published {
    acked: BTreeSet<u64>,
    failed: BTreeSet<u64>,
    /// The publishes refused with a `Backend` error (the server refused the
    /// command, as opposed to a `Transport` error: stored or not, unknown).
    refused: Vec<String>,
}

/// Publish single events (execution `{fp:n mod 64}`) until `stop`, each
/// once (a failed publish is recorded, not repeated).
async fn publisher(
    backend: ValkeyBackend,
    published: Arc<Mutex<Published>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut n: u64 = 0;
    while !*stop.borrow_and_update() {
        let event = NewEvent::completion(
            ExecutionId::new((n % 64) as u16),
            CompletionOutcome::Success,
        );
        let meta = EventMeta::new().with_tag("seq", n.to_string());
        let result = backend.publish(event, meta).await;
        let mut p = published.lock().await;
        match result {
            Ok(_) => p.acked.insert(n),
            Err(e) => {
                if matches!(e, EngineError::Backend { .. }) {
                    p.refused.push(e.to_string());
                }
                p.failed.insert(n)
            }
        };
        drop(p);
        n += 1;
        // Pace the load; not synchronisation.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// What a subscription consumer saw.
enum Seen {
    Event(Seq),
    /// `CursorExpired` for this partition; the consumer resumed from `oldest`.
    Expired(u16),
}

/// Consume `FAMILY` from the beginning forever, resuming from `oldest`
/// after `CursorExpired` and from the cursor after `StreamDisconnected`.
async fn consumer(backend: ValkeyBackend, partitions: u16, out: mpsc::UnboundedSender<Seen>) {
    let mut cursor = StreamCursor::beginning();
    loop {
        let mut sub: DeliveryStream = match backend
            .subscribe_family(FAMILY, cursor.clone(), &Default::default())
            .await
        {
            Ok(sub) => sub,
            Err(EngineError::CursorExpired { oldest, detail, .. }) => {
                let _ = out.send(Seen::Expired(expired_partition(&detail, partitions)));
                cursor = oldest.expect("CursorExpired names the oldest position");
                continue;
            }
            Err(e) if !e.is_terminal() || matches!(e, EngineError::Transport { .. }) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            Err(e) => panic!("subscribe failed: {e}"),
        };
        while let Some(item) = sub.next().await {
            match item {
                Ok(DeliveryItem::Event { event, meta }) => {
                    cursor = event.cursor().clone();
                    let _ = out.send(Seen::Event(seq_of(&event, &meta, partitions)));
                }
                Ok(
                    DeliveryItem::CaughtUp { cursor: c } | DeliveryItem::Checkpoint { cursor: c },
                ) => cursor = c,
                Ok(other) => panic!("unexpected {other:?}"),
                Err(EngineError::CursorExpired { oldest, detail, .. }) => {
                    let _ = out.send(Seen::Expired(expired_partition(&detail, partitions)));
                    cursor = oldest.expect("CursorExpired names the oldest position");
                    break;
                }
                Err(EngineError::StreamDisconnected { cursor: c }) => {
                    cursor = c;
                    break;
                }
                Err(e) => panic!("the subscription failed: {e}"),
            }
        }
    }
}

/// The partition a `CursorExpired` detail names (`completion partition 3:
/// …`, or `completion: …` with one partition).
fn expired_partition(detail: &str, partitions: u16) -> u16 {
    if partitions == 1 {
        return 0;
    }
    detail
        .split("partition ")
        .nth(1)
        .and_then(|rest| rest.split(':').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no partition in {detail:?}"))
}

/// Everything stored, per partition, in stream order.
async fn stored(backend: &ValkeyBackend, partitions: u16) -> BTreeMap<u16, Vec<u64>> {
    let mut sub = backend
        .subscribe_family(FAMILY, StreamCursor::beginning(), &Default::default())
        .await
        .expect("subscribe");
    let deadline = Instant::now() + SETTLE;
    let mut stored: BTreeMap<u16, Vec<u64>> = BTreeMap::new();
    loop {
        match timeout_at(deadline, sub.next()).await {
            Ok(Some(Ok(DeliveryItem::Event { event, meta }))) => {
                let s = seq_of(&event, &meta, partitions);
                stored.entry(s.partition).or_default().push(s.n);
            }
            Ok(Some(Ok(DeliveryItem::CaughtUp { .. }))) => return stored,
            Ok(Some(Ok(_))) => {}
            other => panic!("reading what is stored: {other:?}"),
        }
    }
}

/// A running publisher and consumer over `partitions` partitions on
/// `cluster`; `fault` injects the faults while they run.
async fn under_load(
    cluster: &mut ValkeyCluster,
    partitions: u16,
    fault: impl FnOnce(&mut ValkeyCluster, &ValkeyBackend, &Mutex<Published>),
) -> Report {
    let backend = ValkeyBackend::connect(&cluster.url(), config(partitions))
        .await
        .expect("connect");
    let published = Arc::new(Mutex::new(Published::default()));
    let (stop_tx, stop_rx) = watch::channel(false);
    let publishing = tokio::spawn(publisher(backend.clone(), published.clone(), stop_rx));
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let consuming = tokio::spawn(consumer(backend.clone(), partitions, seen_tx));
    // Some history first, then the faults, then some more.
    wait_for_acks(&published, 300).await;
    block_in_place(|| fault(cluster, &backend, &published));
    let after = published.lock().await.acked.len() + 300;
    wait_for_acks(&published, after).await;
    stop_tx.send(true).expect("the publisher runs");
    publishing.await.expect("the publisher ends");

    let stored = stored(&backend, partitions).await;
    let published = Arc::try_unwrap(published)
        .ok()
        .expect("the publisher ended")
        .into_inner();
    // Wait until the consumer has delivered everything stored.
    let total: usize = stored.values().map(Vec::len).sum();
    let mut delivered: BTreeMap<u16, Vec<u64>> = BTreeMap::new();
    let mut expired: Vec<u16> = Vec::new();
    let deadline = Instant::now() + SETTLE;
    let settled = |delivered: &BTreeMap<u16, Vec<u64>>| {
        stored
            .iter()
            .all(|(p, s)| delivered.get(p).is_some_and(|d| d.len() >= s.len()))
    };
    while !settled(&delivered) {
        match timeout_at(deadline, seen.recv()).await {
            Ok(Some(Seen::Event(s))) => delivered.entry(s.partition).or_default().push(s.n),
            Ok(Some(Seen::Expired(p))) => {
                expired.push(p);
                // The partition is delivered again from what is stored.
                let before = delivered.remove(&p).unwrap_or_default();
                for n in before {
                    if !stored.get(&p).is_some_and(|s| s.contains(&n)) {
                        assert!(
                            !published.acked.contains(&n),
                            "event {n} of partition {p} was acknowledged, delivered, and then lost"
                        );
                    }
                }
            }
            Ok(None) => panic!("the consumer stopped"),
            Err(_) => panic!(
                "the consumer delivered {} of the {total} stored events within {SETTLE:?}",
                delivered.values().map(Vec::len).sum::<usize>()
            ),
        }
    }
    consuming.abort();
    Report {
        stored,
        delivered,
        expired,
        published,
    }
}

async fn wait_for_acks(published: &Mutex<Published>, n: usize) {
    let deadline = Instant::now() + SETTLE;
    while published.lock().await.acked.len() < n {
        assert!(Instant::now() < deadline, "the publisher made no progress");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

struct Report {
    stored: BTreeMap<u16, Vec<u64>>,
    delivered: BTreeMap<u16, Vec<u64>>,
    expired: Vec<u16>,
    published: Published,
}

impl Report {
    /// The oracle of the module docs.
    fn check(&self, what: &str) {
        let stored: BTreeSet<u64> = self.stored.values().flatten().copied().collect();
        let count: usize = self.stored.values().map(Vec::len).sum();
        assert_eq!(stored.len(), count, "{what}: an event is stored twice");
        let lost: Vec<&u64> = self.published.acked.difference(&stored).collect();
        assert!(
            lost.is_empty(),
            "{what}: acknowledged but not stored: {lost:?}"
        );
        let phantom: Vec<&u64> = stored
            .iter()
            .filter(|n| !self.published.acked.contains(n) && !self.published.failed.contains(n))
            .collect();
        assert!(
            phantom.is_empty(),
            "{what}: stored but never published: {phantom:?}"
        );
        assert_eq!(
            self.delivered, self.stored,
            "{what}: per partition, what was delivered differs from what is stored"
        );
        eprintln!(
            "{what}: {} stored ({} acknowledged, {} failed publishes), CursorExpired in partitions {:?}",
            count,
            self.published.acked.len(),
            self.published.failed.len(),
            self.expired
        );
    }
}

fn fault_cluster() -> ValkeyCluster {
    block_in_place(|| ValkeyCluster::start_with(ClusterOptions::for_faults()))
        .expect("a durable cluster of our own")
}

/// Kill the primary serving `partition`'s stream and wait for its replica
/// to take over, then restart it (it rejoins as a replica).
fn fail_over(cluster: &mut ValkeyCluster, backend: &ValkeyBackend, partition: u16) {
    let key = backend.partition_stream_key(FAMILY, partition).to_owned();
    let primary = cluster.owner_of_key(&key).expect("the owner");
    let promoted = cluster
        .kill_primary_and_wait_for_failover(primary)
        .expect("failover");
    assert_ne!(promoted, primary);
    cluster
        .restart_node(primary)
        .expect("restart the old primary");
}

async fn primaries_killed_under_load(partitions: u16, test: &str) {
    if skip_if_external_valkey_cluster(test) {
        return;
    }
    let mut cluster = fault_cluster();
    let report = under_load(&mut cluster, partitions, |cluster, backend, _| {
        fail_over(cluster, backend, 0);
        fail_over(cluster, backend, partitions - 1);
    })
    .await;
    report.check(test);
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_primaries_lose_nothing_acknowledged_with_one_partition() {
    primaries_killed_under_load(
        1,
        "killed_primaries_lose_nothing_acknowledged_with_one_partition",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_primaries_lose_nothing_acknowledged_over_six_partitions() {
    primaries_killed_under_load(
        6,
        "killed_primaries_lose_nothing_acknowledged_over_six_partitions",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_partitions_slot_migrates_and_back_under_load_without_loss_or_repeat() {
    let test = "a_partitions_slot_migrates_and_back_under_load_without_loss_or_repeat";
    if skip_if_external_valkey_cluster(test) {
        return;
    }
    let mut cluster = fault_cluster();
    let report = under_load(&mut cluster, 6, |cluster, backend, _| {
        let key = backend.partition_stream_key(FAMILY, 2).to_owned();
        let slot = cluster.key_slot(&key).expect("slot");
        let from = cluster.owner_of_key(&key).expect("owner");
        let to = cluster
            .topology()
            .expect("topology")
            .primaries()
            .into_iter()
            .find(|&p| p != from)
            .expect("another primary");
        for (a, b) in [(from, to), (to, from)] {
            let mut migration = cluster.begin_slot_migration(slot, b).expect("begin");
            assert_eq!(migration.from(), a);
            // Keys one at a time, with load in between.
            while migration.move_keys(1).expect("move") > 0 {
                std::thread::sleep(Duration::from_millis(100));
            }
            std::thread::sleep(Duration::from_millis(200));
            migration.finish().expect("finish");
        }
    })
    .await;
    assert!(report.expired.is_empty(), "a migration loses nothing");
    report.check(test);
}

/// A planned failover (`CLUSTER FAILOVER`, or `FORCE`) of the primary
/// serving `partition`'s stream; the old primary stays up as a replica.
fn planned_failover(
    cluster: &mut ValkeyCluster,
    backend: &ValkeyBackend,
    partition: u16,
    force: bool,
) {
    let key = backend.partition_stream_key(FAMILY, partition).to_owned();
    let primary = cluster.owner_of_key(&key).expect("the owner");
    let promoted = cluster
        .planned_failover(primary, force)
        .expect("planned failover");
    assert_ne!(promoted, primary);
}

/// `CLUSTER FAILOVER` (or `FORCE`) of the primaries serving the first and
/// the last partition, under load, on a Valkey cluster (blocked readers of
/// a demoted primary get `-MOVED`) or a Redis 7 one (`-UNBLOCKED`).
async fn planned_failovers_under_load(partitions: u16, force: bool, redis7: bool, test: &str) {
    if skip_if_external_valkey_cluster(test) {
        return;
    }
    let mut cluster = block_in_place(|| {
        ValkeyCluster::start_with(ClusterOptions {
            redis7,
            ..ClusterOptions::for_faults()
        })
    })
    .expect("a durable cluster of our own");
    let report = under_load(&mut cluster, partitions, |cluster, backend, _| {
        planned_failover(cluster, backend, 0, force);
        planned_failover(cluster, backend, partitions - 1, force);
    })
    .await;
    if !force {
        assert!(
            report.expired.is_empty(),
            "{test}: a planned failover loses nothing"
        );
    }
    assert_eq!(
        report.published.refused,
        Vec::<String>::new(),
        "{test}: a failover is no reason to refuse a publish"
    );
    report.check(test);
}

#[tokio::test(flavor = "multi_thread")]
async fn planned_failovers_are_followed_with_one_partition() {
    let test = "planned_failovers_are_followed_with_one_partition";
    planned_failovers_under_load(1, false, false, test).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn planned_failovers_are_followed_over_six_partitions() {
    let test = "planned_failovers_are_followed_over_six_partitions";
    planned_failovers_under_load(6, false, false, test).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn forced_failovers_are_followed_with_one_partition() {
    let test = "forced_failovers_are_followed_with_one_partition";
    planned_failovers_under_load(1, true, false, test).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn forced_failovers_are_followed_over_six_partitions() {
    let test = "forced_failovers_are_followed_over_six_partitions";
    planned_failovers_under_load(6, true, false, test).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn planned_failovers_of_redis_7_are_followed_with_one_partition() {
    let test = "planned_failovers_of_redis_7_are_followed_with_one_partition";
    planned_failovers_under_load(1, false, true, test).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn planned_failovers_of_redis_7_are_followed_over_six_partitions() {
    let test = "planned_failovers_of_redis_7_are_followed_over_six_partitions";
    planned_failovers_under_load(6, false, true, test).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn forced_failovers_of_redis_7_are_followed_with_one_partition() {
    let test = "forced_failovers_of_redis_7_are_followed_with_one_partition";
    planned_failovers_under_load(1, true, true, test).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn forced_failovers_of_redis_7_are_followed_over_six_partitions() {
    let test = "forced_failovers_of_redis_7_are_followed_over_six_partitions";
    planned_failovers_under_load(6, true, true, test).await;
}

/// How long a slot migration window is held open.
const WINDOW: Duration = Duration::from_secs(5);
/// Sequence numbers of events a test publishes itself, beside the
/// publisher's (which never reach it).
const MARKER: u64 = 1 << 40;

/// Wait (until `deadline`) for `sub` to deliver an event the publisher
/// published after event `after`; `what` names the subscription.
async fn delivers_by(sub: &mut DeliveryStream, after: u64, deadline: Instant, what: &str) {
    loop {
        match timeout_at(deadline, sub.next()).await {
            Ok(Some(Ok(DeliveryItem::Event { meta, .. })))
                if (after + 1..MARKER)
                    .contains(&meta.tags["seq"].parse::<u64>().expect("a seq tag")) =>
            {
                return
            }
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => panic!("{what} failed during the migration window: {e}"),
            Ok(None) => panic!("{what} ended during the migration window"),
            Err(_) => panic!("{what} delivered nothing while the slot was migrating"),
        }
    }
}

/// Hold partition 0's slot `MIGRATING`/`IMPORTING` for [`WINDOW`] — with
/// its keys still on the source, or (`keys_moved`) already on the target —
/// and check that a live subscription and a new one both deliver before
/// the window closes; then finish the migration.
fn migration_window(
    cluster: &mut ValkeyCluster,
    backend: &ValkeyBackend,
    published: &Mutex<Published>,
    keys_moved: bool,
) {
    let runtime = tokio::runtime::Handle::current();
    let key = backend.partition_stream_key(FAMILY, 0).to_owned();
    let slot = cluster.key_slot(&key).expect("slot");
    let from = cluster.owner_of_key(&key).expect("owner");
    let to = cluster
        .topology()
        .expect("topology")
        .primaries()
        .into_iter()
        .find(|&p| p != from)
        .expect("another primary");
    let mut live = runtime
        .block_on(backend.subscribe_family(FAMILY, StreamCursor::empty(), &Default::default()))
        .expect("a live subscription");
    let mut migration = cluster.begin_slot_migration(slot, to).expect("begin");
    if keys_moved {
        // Quiesce first, so the live subscription waits on the source when
        // the keys move: hold the publisher (it stops after the publish in
        // flight), publish a marker and let the subscription deliver it.
        let mut paused = runtime.block_on(published.lock());
        let marker = MARKER + paused.acked.len() as u64;
        runtime
            .block_on(backend.publish(
                NewEvent::completion(ExecutionId::new(0), CompletionOutcome::Success),
                EventMeta::new().with_tag("seq", marker.to_string()),
            ))
            .expect("publish the marker");
        paused.acked.insert(marker);
        let quiet = Instant::now() + WINDOW;
        runtime.block_on(async {
            loop {
                match timeout_at(quiet, live.next()).await {
                    Ok(Some(Ok(DeliveryItem::Event { meta, .. })))
                        if meta.tags["seq"] == marker.to_string() =>
                    {
                        break
                    }
                    Ok(Some(Ok(_))) => {}
                    other => panic!("waiting for the marker: {other:?}"),
                }
            }
        });
        while migration.move_keys(100).expect("move") > 0 {}
        drop(paused);
    }
    let closes = Instant::now() + WINDOW;
    runtime.block_on(async {
        // The publisher publishes one event at a time: every event after
        // the one in flight now is published inside the window.
        let before = published
            .lock()
            .await
            .acked
            .range(..MARKER)
            .last()
            .map_or(0, |n| n + 1);
        delivers_by(&mut live, before, closes, "the live subscription").await;
        let mut fresh = timeout_at(
            closes,
            backend.subscribe_family(FAMILY, StreamCursor::beginning(), &Default::default()),
        )
        .await
        .expect("a new subscribe returns while the slot is migrating")
        .expect("a new subscribe");
        delivers_by(&mut fresh, before, closes, "a new subscription").await;
        // Hold the window open for its whole length (the fault, not a wait).
        tokio::time::sleep_until(closes).await;
    });
    while migration.move_keys(100).expect("move") > 0 {}
    migration.finish().expect("finish");
}

async fn reads_flow_through_a_migration_window(keys_moved: bool, test: &str) {
    if skip_if_external_valkey_cluster(test) {
        return;
    }
    let mut cluster = fault_cluster();
    let report = under_load(&mut cluster, 1, |cluster, backend, published| {
        migration_window(cluster, backend, published, keys_moved)
    })
    .await;
    assert!(
        report.expired.is_empty(),
        "{test}: a migration loses nothing"
    );
    report.check(test);
}

#[tokio::test(flavor = "multi_thread")]
async fn reads_flow_while_a_slot_migrates_with_its_keys_on_the_source() {
    let test = "reads_flow_while_a_slot_migrates_with_its_keys_on_the_source";
    reads_flow_through_a_migration_window(false, test).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reads_flow_while_a_slot_migrates_with_its_keys_on_the_target() {
    let test = "reads_flow_while_a_slot_migrates_with_its_keys_on_the_target";
    reads_flow_through_a_migration_window(true, test).await;
}
