//! A Valkey Cluster reached over TLS (Redis 7.0 with `tls-port` on every
//! node, certificates from a throwaway CA): the `ca_cert=` of the one URL
//! is used for every node ff discovers, publishes and each partition's
//! subscription connection go to their node's TLS port, and a URL without
//! the CA is refused for every node alike.

use ff_backend_valkey::{ValkeyBackend, ValkeyConfig};
use ff_core::backend::{DeliveryItem, EventPublisher, StreamBackend};
use ff_core::engine_error::EngineError;
use ff_core::stream_events::{CompletionOutcome, EventMeta, Family, NewEvent};
use ff_core::stream_subscribe::StreamCursor;
use ff_core::types::ExecutionId;
use ff_tests::support::{self, skip_if_external_valkey_cluster, ClusterOptions, ValkeyCluster};
use futures::StreamExt;
use tokio::task::block_in_place;
use tokio::time::{timeout_at, Duration, Instant};

#[tokio::test(flavor = "multi_thread")]
async fn a_tls_cluster_is_discovered_published_to_and_subscribed_over_tls() {
    if skip_if_external_valkey_cluster(
        "a_tls_cluster_is_discovered_published_to_and_subscribed_over_tls",
    ) {
        return;
    }
    let cluster = block_in_place(|| {
        ValkeyCluster::start_with(ClusterOptions {
            replicas_per_primary: 0,
            tls: true,
            ..ClusterOptions::default()
        })
    })
    .expect("a TLS cluster (redis-server with TLS)");
    let url = format!("{}&partitions=3", cluster.tls_url().expect("TLS"));
    let name = support::unique_name("fftlscluster");
    let config = ValkeyConfig::default()
        .with_key_prefix(format!("{name}:"))
        .with_client_name(name);
    let backend = ValkeyBackend::connect(&url, config.clone())
        .await
        .expect("connect over TLS");
    assert!(backend.is_cluster());
    let nodes = backend.nodes();
    assert_eq!(nodes.len(), 3);
    for node in &nodes {
        let port: u16 = node.rsplit(':').next().unwrap().parse().unwrap();
        assert!(
            (0..cluster.node_count()).all(|n| cluster.port(n) != port),
            "{node} is a plaintext port: ff must use the nodes' TLS ports"
        );
    }
    let events: Vec<(NewEvent, EventMeta)> = (0..9)
        .map(|n| {
            (
                NewEvent::completion(ExecutionId::new(n), CompletionOutcome::Success),
                EventMeta::new(),
            )
        })
        .collect();
    backend
        .publish_batch(events)
        .await
        .expect("publish over TLS");
    let mut sub = backend
        .subscribe_family(
            Family::Completion,
            StreamCursor::beginning(),
            &Default::default(),
        )
        .await
        .expect("subscribe over TLS");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = 0;
    loop {
        match timeout_at(deadline, sub.next()).await {
            Ok(Some(Ok(DeliveryItem::Event { .. }))) => got += 1,
            Ok(Some(Ok(DeliveryItem::CaughtUp { .. }))) => break,
            other => panic!("expected events then CaughtUp, got {other:?}"),
        }
    }
    assert_eq!(got, 9, "every partition read over TLS");

    // Without the CA, no node's certificate is trusted.
    let untrusted = url
        .split('?')
        .next()
        .map(|base| format!("{base}?partitions=3"))
        .unwrap();
    match ValkeyBackend::connect(&untrusted, config).await {
        Err(e @ EngineError::Transport { .. }) => {
            let text = e.to_string();
            assert!(text.contains("ca_cert"), "{text}");
            assert!(!text.contains('\n'), "{text}");
        }
        other => panic!("expected an untrusted certificate, got {other:?}"),
    }
}
