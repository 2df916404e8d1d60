//! Routing over a real Valkey Cluster: discovery from any node, slots as
//! the server computes them, and requests that follow the cluster through
//! `MOVED` (a resharded slot), `ASK` and `TRYAGAIN` (a slot mid-migration)
//! and a failover (`CLUSTERDOWN`, a dead node) — on the publish, bounds and
//! cursor-store paths. Subscriptions over a cluster are tested by the
//! conformance suite and the cluster fault tests.

use std::time::Duration;

use ff_backend_valkey::{key_slot, ValkeyBackend, ValkeyConfig};
use ff_core::backend::{CursorStore, EventPublisher, StreamBackend};
use ff_core::engine_error::EngineError;
use ff_core::stream_events::{CompletionOutcome, EventMeta, Family, NewEvent};
use ff_core::types::ExecutionId;
use ff_tests::support::{
    self, shared_valkey_cluster, shared_valkey_cluster_url, skip_if_external_valkey_cluster,
    ClusterOptions, ValkeyCluster,
};
use tokio::task::block_in_place;

fn config(label: &str) -> ValkeyConfig {
    let name = support::unique_name(label);
    ValkeyConfig::default()
        .with_key_prefix(format!("{name}:"))
        .with_client_name(name)
}

fn completions(n: usize, run: &str) -> Vec<(NewEvent, EventMeta)> {
    (0..n)
        .map(|i| {
            (
                NewEvent::completion(ExecutionId::new(i as u16), CompletionOutcome::Success),
                EventMeta::new()
                    .with_tag("run", run)
                    .with_tag("n", i.to_string()),
            )
        })
        .collect()
}

async fn shared_url() -> String {
    tokio::task::spawn_blocking(shared_valkey_cluster_url)
        .await
        .expect("support thread")
        .expect("a Valkey Cluster for the tests")
}

async fn retained(backend: &ValkeyBackend, family: Family) -> u64 {
    backend
        .bounds(family)
        .await
        .expect("bounds")
        .retained
        .expect("Valkey counts what it retains")
}

#[tokio::test(flavor = "multi_thread")]
async fn any_node_of_a_cluster_reveals_every_primary() {
    let Some(cluster) = block_in_place(shared_valkey_cluster).expect("the shared cluster") else {
        support::say_loudly(
            "SKIPPED any_node_of_a_cluster_reveals_every_primary: external cluster",
        );
        return;
    };
    let topology = block_in_place(|| cluster.topology()).expect("topology");
    let mut primaries: Vec<String> = topology
        .primaries()
        .into_iter()
        .map(|n| format!("127.0.0.1:{}", cluster.port(n)))
        .collect();
    primaries.sort();
    for node in 0..cluster.node_count() {
        let backend = ValkeyBackend::connect(&cluster.node_url(node), config("ffroute"))
            .await
            .expect("connect to a node");
        assert!(backend.is_cluster(), "node {node}");
        assert_eq!(backend.nodes(), primaries, "as seen from node {node}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_standalone_server_is_a_one_node_topology_with_todays_keys() {
    let url = ff_tests::harness::valkey::server_url().await;
    let backend = ValkeyBackend::connect(&url, config("ffroute"))
        .await
        .expect("connect");
    assert!(!backend.is_cluster());
    let port = url.rsplit(':').next().unwrap();
    assert_eq!(backend.nodes(), [format!("127.0.0.1:{port}")]);
    let prefix = &backend.config().key_prefix;
    assert_eq!(
        backend.stream_key(Family::Completion),
        format!("{prefix}completion")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn slots_agree_with_cluster_keyslot() {
    let Some(cluster) = block_in_place(shared_valkey_cluster).expect("the shared cluster") else {
        support::say_loudly("SKIPPED slots_agree_with_cluster_keyslot: external cluster");
        return;
    };
    let mut keys: Vec<String> = (0..200)
        .map(|i| format!("ff:{}:k{i}", support::unique_name("slot")))
        .collect();
    keys.extend((0..64).map(|n| format!("ff:{{fp:{n}}}:completion")));
    keys.extend(["{a}b", "a{}b", "a{{b}}", "{}", "", "é{ü}", "x{y"].map(String::from));
    for key in &keys {
        let server = block_in_place(|| cluster.key_slot(key)).expect("CLUSTER KEYSLOT");
        assert_eq!(key_slot(key.as_bytes()), server, "{key:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_with_one_partition_keeps_a_familys_streams_in_one_slot() {
    let backend = ValkeyBackend::connect(&shared_url().await, config("ffroute"))
        .await
        .expect("connect");
    let prefix = backend.config().key_prefix.clone();
    assert_eq!(
        backend.stream_key(Family::Completion),
        format!("{prefix}{{fp:0}}:completion")
    );
    // A batch over all four families is one transaction.
    let mut batch = completions(3, "one-slot");
    batch.push((
        NewEvent::tag_attached(ExecutionId::new(5), "hot"),
        EventMeta::new(),
    ));
    let cursors = backend.publish_batch(batch).await.expect("publish");
    assert_eq!(cursors.len(), 4);
    assert_eq!(retained(&backend, Family::Completion).await, 3);
    assert_eq!(retained(&backend, Family::InstanceTags).await, 1);
    backend.store("consumer", &cursors[2]).await.expect("store");
    assert_eq!(
        backend.load("consumer").await.expect("load"),
        Some(cursors[2].clone())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_other_than_zero_is_refused_on_a_cluster() {
    let url = format!("{}/3", shared_url().await);
    match ValkeyBackend::connect(&url, config("ffroute")).await {
        Err(EngineError::Validation { detail }) => {
            assert!(
                detail.contains("only database 0") && detail.contains("remove /3"),
                "{detail}"
            )
        }
        other => panic!("expected Validation, got {other:?}"),
    }
}

/// A cluster of three primaries and no replicas, for tests that reshard.
fn own_cluster() -> ValkeyCluster {
    block_in_place(|| {
        ValkeyCluster::start_with(ClusterOptions {
            replicas_per_primary: 0,
            ..ClusterOptions::default()
        })
    })
    .expect("a cluster of our own")
}

#[tokio::test(flavor = "multi_thread")]
async fn publishes_follow_a_resharded_slot_with_moved_and_ask() {
    if skip_if_external_valkey_cluster("publishes_follow_a_resharded_slot_with_moved_and_ask") {
        return;
    }
    let mut cluster = own_cluster();
    let backend = ValkeyBackend::connect(&cluster.url(), config("ffmoved"))
        .await
        .expect("connect");
    let key = backend.stream_key(Family::Completion).to_owned();
    let slot = key_slot(key.as_bytes());
    let run = support::unique_name("moved");
    let events = completions(9, &run);
    backend
        .publish_batch(events[..3].to_vec())
        .await
        .expect("publish before");

    // MOVED: the slot and its stream are on another primary now.
    let from = block_in_place(|| cluster.owner_of_key(&key)).unwrap();
    let to = (from + 1) % 3;
    block_in_place(|| cluster.migrate_slot(slot, to)).expect("migrate");
    backend
        .publish(events[3].0.clone(), events[3].1.clone())
        .await
        .expect("publish after MOVED");
    assert_eq!(retained(&backend, Family::Completion).await, 4);

    // ASK: mid-migration, the stream already on the target.
    let back = block_in_place(|| {
        let mut migration = cluster.begin_slot_migration(slot, from)?;
        while migration.move_keys(100)? > 0 {}
        Ok::<_, support::SupportError>(migration)
    })
    .expect("begin migration");
    backend
        .publish(events[4].0.clone(), events[4].1.clone())
        .await
        .expect("publish after ASK");
    // (Reads of the stream with its absent trim record get TRYAGAIN until
    // the migration ends: they wait, see the next test.)
    block_in_place(|| back.finish()).expect("finish migration");
    assert_eq!(retained(&backend, Family::Completion).await, 5);
    backend
        .publish_batch(events[5..].to_vec())
        .await
        .expect("publish after the migration");
    assert_eq!(retained(&backend, Family::Completion).await, 9);
    assert_eq!(
        block_in_place(|| cluster.owner_of_key(&key)).unwrap(),
        from,
        "the slot went back"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_waits_out_a_slot_split_mid_migration_then_lands_whole() {
    if skip_if_external_valkey_cluster("a_batch_waits_out_a_slot_split_mid_migration") {
        return;
    }
    let mut cluster = own_cluster();
    let backend = ValkeyBackend::connect(&cluster.url(), config("fftryagain"))
        .await
        .expect("connect");
    let run = support::unique_name("tryagain");
    // Both families' streams exist, in one slot.
    let mut first = completions(1, &run);
    first.push((
        NewEvent::tag_attached(ExecutionId::new(1), "a"),
        EventMeta::new(),
    ));
    backend.publish_batch(first.clone()).await.expect("publish");
    let key = backend.stream_key(Family::Completion).to_owned();
    let slot = key_slot(key.as_bytes());
    let from = block_in_place(|| cluster.owner_of_key(&key)).unwrap();
    let to = (from + 1) % 3;
    let mut migration = block_in_place(|| cluster.begin_slot_migration(slot, to)).unwrap();
    // One of the two streams moves: a transaction over both gets TRYAGAIN
    // until the migration ends.
    assert_eq!(block_in_place(|| migration.move_keys(1)).unwrap(), 1);
    let publisher = backend.clone();
    let batch = first.clone();
    let pending = tokio::spawn(async move { publisher.publish_batch(batch).await });
    // The publish is held back, not failed and not split.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !pending.is_finished(),
        "a split slot must hold the batch back"
    );
    block_in_place(|| {
        while migration.move_keys(100)? > 0 {}
        migration.finish()
    })
    .expect("finish migration");
    let cursors = pending.await.expect("task").expect("the batch lands");
    assert_eq!(cursors.len(), 2);
    assert_eq!(retained(&backend, Family::Completion).await, 2);
    assert_eq!(retained(&backend, Family::InstanceTags).await, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_that_cannot_serve_a_slot_fails_the_request_at_its_deadline() {
    if skip_if_external_valkey_cluster("a_cluster_that_cannot_serve_a_slot_fails_at_its_deadline") {
        return;
    }
    let mut cluster = block_in_place(|| {
        ValkeyCluster::start_with(ClusterOptions {
            replicas_per_primary: 0,
            node_timeout: Duration::from_secs(3),
            ..ClusterOptions::default()
        })
    })
    .expect("a cluster");
    let backend = ValkeyBackend::connect(
        &cluster.url(),
        config("ffdeadline").with_timeouts(Duration::from_secs(1), Duration::from_secs(2)),
    )
    .await
    .expect("connect");
    let key = backend.stream_key(Family::Completion).to_owned();
    let owner = block_in_place(|| cluster.owner_of_key(&key)).unwrap();
    block_in_place(|| cluster.kill_node(owner)).expect("kill");
    let started = std::time::Instant::now();
    let (e, m) = completions(1, "deadline").remove(0);
    match backend.publish(e, m).await {
        Err(e @ EngineError::Transport { .. }) => {
            let text = e.to_string();
            assert!(!text.contains('\n'), "{text}");
            assert!(text.contains("publishing"), "{text}");
        }
        other => panic!("expected a Transport error, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "gave up after {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_publish_during_a_failover_waits_for_the_promoted_replica() {
    if skip_if_external_valkey_cluster("a_publish_during_a_failover_waits_for_the_promoted_replica")
    {
        return;
    }
    let mut cluster = block_in_place(|| ValkeyCluster::start_with(ClusterOptions::for_faults()))
        .expect("a cluster");
    let backend = ValkeyBackend::connect(&cluster.url(), config("fffailover"))
        .await
        .expect("connect");
    let run = support::unique_name("failover");
    let events = completions(2, &run);
    backend
        .publish(events[0].0.clone(), events[0].1.clone())
        .await
        .expect("publish before");
    let key = backend.stream_key(Family::Completion).to_owned();
    let owner = block_in_place(|| cluster.owner_of_key(&key)).unwrap();
    let before = backend.nodes();
    block_in_place(|| cluster.kill_node(owner)).expect("kill the primary");
    // Refused connections, then CLUSTERDOWN, until the replica takes over
    // — within one publish call, unless the old connection was still
    // mid-request when the node died: that failure is ambiguous (the event
    // may be stored) and reported, and the producer publishes again.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut ambiguous = 0;
    loop {
        match backend
            .publish(events[1].0.clone(), events[1].1.clone())
            .await
        {
            Ok(_) => break,
            Err(e @ EngineError::Transport { .. }) if std::time::Instant::now() < deadline => {
                ambiguous += 1;
                assert!(
                    ambiguous <= 2,
                    "failed more than the one request in flight: {e}"
                );
            }
            Err(e) => panic!("publish across the failover: {e}"),
        }
    }
    let after = backend.nodes();
    assert_eq!(after.len(), 3, "{after:?}");
    assert_ne!(before, after, "the replica replaced its primary");
    assert!(!after.contains(&format!("127.0.0.1:{}", cluster.port(owner))));
    assert!(retained(&backend, Family::Completion).await >= 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_publish_that_must_reach_a_replica_fails_in_one_line_without_one() {
    let url = ff_tests::harness::valkey::server_url().await;
    let backend = ValkeyBackend::connect(
        &url,
        config("ffwait").with_replica_acks(1, Duration::from_millis(100)),
    )
    .await
    .expect("connect");
    let (e, m) = completions(1, "wait").remove(0);
    match backend.publish(e, m).await {
        Err(e @ EngineError::Transport { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains("0 of the 1 replica(s)") && text.contains("publish again"),
                "{text}"
            );
            assert!(!text.contains('\n'), "{text}");
        }
        other => panic!("expected a Transport error, got {other:?}"),
    }
    // On the cluster every primary has a replica.
    let clustered = ValkeyBackend::connect(
        &shared_url().await,
        config("ffwait").with_replica_acks(1, Duration::from_secs(5)),
    )
    .await
    .expect("connect");
    clustered
        .publish_batch(completions(8, "wait"))
        .await
        .expect("acknowledged by a replica");
}
