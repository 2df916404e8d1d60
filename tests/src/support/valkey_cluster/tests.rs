use std::net::TcpStream;

use super::*;

/// A key (with a `{fp:N}` hash tag, like execution ids) that `primary` serves.
fn key_served_by(cluster: &ValkeyCluster, primary: usize, label: &str) -> String {
    let topology = cluster.topology().unwrap();
    (0..10_000)
        .map(|n| format!("{{fp:{n}}}:{label}"))
        .find(|key| topology.owner_of_slot(cluster.key_slot(key).unwrap()) == Some(primary))
        .expect("some partition lands on every primary")
}

fn error_text(reply: Reply) -> String {
    match reply {
        Reply::Error(e) => e,
        other => panic!("expected an error reply, got {other:?}"),
    }
}

fn bulk(value: &str) -> Reply {
    Reply::Bulk(Some(value.as_bytes().to_vec()))
}

#[test]
fn the_shared_cluster_has_three_primaries_each_with_a_replica_and_serves_every_slot() {
    let url = shared_valkey_cluster_url().unwrap();
    assert_eq!(url, shared_valkey_cluster_url().unwrap(), "started once");
    let Some(cluster) = shared_valkey_cluster().unwrap() else {
        say_external("the_shared_cluster_has_three_primaries…");
        return;
    };
    assert_eq!(url, cluster.url());
    assert_eq!(cluster.node_count(), 6);
    let topology = cluster.topology().unwrap();
    assert_eq!(topology.primaries(), [0, 1, 2]);
    assert_eq!(topology.slots_covered(), SLOTS);
    for p in 0..3 {
        assert_eq!(topology.replicas_of(p), [3 + p], "{topology:?}");
        let info = text_reply(cluster.command(p, &["CLUSTER", "INFO"]).unwrap(), "INFO").unwrap();
        assert_eq!(info_field(&info, "cluster_state"), Some("ok"));
        assert_eq!(info_field(&info, "cluster_known_nodes"), Some("6"));
    }
    cluster.wait_until_stable().unwrap();
}

#[test]
fn a_key_lives_on_the_primary_serving_its_slot_and_other_nodes_redirect_with_moved() {
    let Some(cluster) = shared_valkey_cluster().unwrap() else {
        say_external("a_key_lives_on_the_primary_serving_its_slot…");
        return;
    };
    let key = format!("{{fp:7}}:{}", crate::support::unique_name("owner"));
    let slot = cluster.key_slot(&key).unwrap();
    assert_eq!(
        slot,
        cluster.key_slot("{fp:7}").unwrap(),
        "the hash tag decides"
    );
    let owner = cluster.owner_of_key(&key).unwrap();
    assert_eq!(
        cluster.command(owner, &["SET", &key, "v"]).unwrap(),
        Reply::Simple("OK".into())
    );
    assert_eq!(cluster.command(owner, &["GET", &key]).unwrap(), bulk("v"));
    let moved = format!("MOVED {slot} 127.0.0.1:{}", cluster.port(owner));
    for other in (0..cluster.node_count()).filter(|&n| n != owner) {
        assert_eq!(
            error_text(cluster.command(other, &["GET", &key]).unwrap()),
            moved
        );
    }
    cluster.command(owner, &["DEL", &key]).unwrap();
}

#[test]
fn killing_a_primary_promotes_its_replica_which_keeps_replicated_writes() {
    let mut cluster = ValkeyCluster::start_with(ClusterOptions::for_faults()).unwrap();
    let key = key_served_by(&cluster, 0, "failover");
    assert_eq!(
        cluster.command(0, &["SET", &key, "kept"]).unwrap(),
        Reply::Simple("OK".into())
    );
    // Acknowledged by the replica too, so the failover cannot lose it.
    assert_eq!(
        cluster.command(0, &["WAIT", "1", "10000"]).unwrap(),
        Reply::Integer(1)
    );

    let promoted = cluster.kill_primary_and_wait_for_failover(0).unwrap();
    assert_eq!(promoted, 3, "node 3 replicated node 0");
    assert!(!cluster.is_running(0));
    let topology = cluster.topology().unwrap();
    assert_eq!(topology.primaries(), [1, 2, 3]);
    assert_eq!(
        topology.owner_of_slot(cluster.key_slot(&key).unwrap()),
        Some(3)
    );
    assert_eq!(cluster.command(3, &["GET", &key]).unwrap(), bulk("kept"));
    assert_ne!(
        cluster.url(),
        cluster.node_url(0),
        "the URL names a live node"
    );

    // The old primary comes back as its successor's replica.
    cluster.restart_node(0).unwrap();
    let topology = cluster.topology().unwrap();
    assert_eq!(topology.replicas_of(3), [0]);
    assert!(error_text(cluster.command(0, &["GET", &key]).unwrap()).starts_with("MOVED"));
}

#[test]
fn migrating_a_slot_moves_its_keys_and_ownership_asking_in_between() {
    let mut cluster = ValkeyCluster::start().unwrap();
    let first = key_served_by(&cluster, 1, "a");
    let tag = &first[..first.find('}').unwrap() + 1];
    let keys: Vec<String> = ["a", "b", "c"]
        .iter()
        .map(|k| format!("{tag}:{k}"))
        .collect();
    let slot = cluster.key_slot(&keys[0]).unwrap();
    for k in &keys {
        assert_eq!(cluster.key_slot(k).unwrap(), slot);
        assert_eq!(
            cluster.command(1, &["SET", k, k]).unwrap(),
            Reply::Simple("OK".into())
        );
    }

    let to_port = cluster.port(2);
    let mut migration = cluster.begin_slot_migration(slot, 2).unwrap();
    assert_eq!((migration.from(), migration.to()), (1, 2));
    assert_eq!(migration.move_keys(1).unwrap(), 1);
    let c = migration.cluster();
    let moved: Vec<&String> = keys
        .iter()
        .filter(|k| {
            let mut target = c.session(2).unwrap();
            assert_eq!(
                target.text_command(&["ASKING"]).unwrap(),
                Reply::Simple("OK".into())
            );
            target.text_command(&["GET", k]).unwrap() == bulk(k)
        })
        .collect();
    assert_eq!(moved.len(), 1, "one key moved");
    let (moved, stayed) = (moved[0], keys.iter().find(|k| *k != moved[0]).unwrap());
    // The source still serves what it has and sends the rest to the target.
    assert_eq!(c.command(1, &["GET", stayed]).unwrap(), bulk(stayed));
    assert_eq!(
        error_text(c.command(1, &["GET", moved]).unwrap()),
        format!("ASK {slot} 127.0.0.1:{to_port}")
    );
    // The target answers only clients that ask.
    assert!(error_text(c.command(2, &["GET", moved]).unwrap()).starts_with("MOVED"));

    while migration.move_keys(100).unwrap() > 0 {}
    migration.finish().unwrap();
    assert_eq!(cluster.topology().unwrap().owner_of_slot(slot), Some(2));
    for k in &keys {
        assert_eq!(cluster.command(2, &["GET", k]).unwrap(), bulk(k));
        assert_eq!(
            error_text(cluster.command(1, &["GET", k]).unwrap()),
            format!("MOVED {slot} 127.0.0.1:{to_port}")
        );
    }
    // And back, in one call.
    cluster.migrate_slot(slot, 1).unwrap();
    assert_eq!(cluster.owner_of_key(&keys[0]).unwrap(), 1);

    let (dir, port) = (cluster.dir().to_path_buf(), cluster.port(0));
    drop(cluster);
    assert!(!dir.exists(), "drop removes the directory");
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "and stops the nodes"
    );
}

fn say_external(test: &str) {
    crate::support::say_loudly(&format!(
        "SKIPPED {test}: {VALKEY_CLUSTER_URL_ENV} is set, and this test inspects the cluster \
         the support started"
    ));
}
