//! Families split into partitions (`partitions=P`), over the real test
//! cluster (and one standalone server): keys in the slot of `{fp:n}`,
//! cursors that say which partitions they follow and refuse other uses,
//! subscriptions over a subset of partitions or one execution's partition
//! and the connections each holds, `append_cmd` beside an execution's own
//! keys, and a batch whose partitions are stored independently.

use std::collections::BTreeSet;
use std::time::Duration;

use ff_backend_valkey::redis::{self, Value};
use ff_backend_valkey::{key_slot, EntryOf, ValkeyBackend, ValkeyConfig};
use ff_core::backend::{DeliveryItem, DeliveryStream, EventPublisher, StreamBackend};
use ff_core::engine_error::EngineError;
use ff_core::filter::SubscriptionFilter;
use ff_core::stream_events::{CompletionOutcome, EventMeta, Family, NewEvent, StreamEvent};
use ff_core::stream_subscribe::StreamCursor;
use ff_core::types::ExecutionId;
use ff_tests::harness::valkey::server_url;
use ff_tests::harness::valkey_cluster::cluster_url;
use ff_tests::support::{self, skip_if_external_valkey_cluster, ClusterOptions, ValkeyCluster};
use futures::StreamExt;
use tokio::task::block_in_place;
use tokio::time::{timeout_at, Instant};

const DEADLINE: Duration = Duration::from_secs(10);

fn config(partitions: u16) -> ValkeyConfig {
    let name = support::unique_name("ffpart");
    ValkeyConfig::default()
        .with_key_prefix(format!("{name}:"))
        .with_client_name(name)
        .with_partitions(partitions)
        .with_read_batch(50)
}

async fn backend(partitions: u16) -> ValkeyBackend {
    ValkeyBackend::connect(&cluster_url().await, config(partitions))
        .await
        .expect("connect")
}

/// `n` completions, event `i` of execution `{fp:i}`.
fn completions(n: u16) -> Vec<(NewEvent, EventMeta)> {
    (0..n)
        .map(|i| {
            (
                NewEvent::completion(ExecutionId::new(i), CompletionOutcome::Success),
                EventMeta::new().with_tag("n", i.to_string()),
            )
        })
        .collect()
}

/// Events until `CaughtUp`, with the `CaughtUp` cursor.
async fn until_caught_up(sub: &mut DeliveryStream) -> (Vec<StreamEvent>, StreamCursor) {
    let deadline = Instant::now() + DEADLINE;
    let mut events = Vec::new();
    loop {
        match timeout_at(deadline, sub.next()).await {
            Ok(Some(Ok(DeliveryItem::Event { event, .. }))) => events.push(event),
            Ok(Some(Ok(DeliveryItem::CaughtUp { cursor }))) => return (events, cursor),
            Ok(Some(Ok(_))) => {}
            other => panic!("expected events then CaughtUp, got {other:?}"),
        }
    }
}

fn partitions_of(events: &[StreamEvent], p: u16) -> BTreeSet<u16> {
    events
        .iter()
        .map(|e| e.execution_id().partition() % p)
        .collect()
}

fn invalid<T>(r: Result<T, EngineError>, needles: &[&str]) {
    match r {
        Err(EngineError::InvalidCursor { detail }) => {
            for needle in needles {
                assert!(detail.contains(needle), "{detail:?} lacks {needle:?}");
            }
        }
        Err(other) => panic!("expected InvalidCursor, got {other}"),
        Ok(_) => panic!("expected InvalidCursor, the cursor was accepted"),
    }
}

/// How many subscription wake-up connections the backend holds on its
/// nodes now.
async fn subscription_connections(backend: &ValkeyBackend) -> usize {
    connections_named(backend, &backend.subscription_client_name()).await
}

/// How many connections named `name` are open on the backend's nodes now.
async fn connections_named(backend: &ValkeyBackend, name: &str) -> usize {
    let mut n = 0;
    for node in backend.nodes() {
        let mut admin = redis::Client::open(format!("redis://{node}"))
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let list: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query_async(&mut admin)
            .await
            .unwrap();
        n += list
            .lines()
            .filter(|l| l.split(' ').any(|kv| kv == format!("name={name}")))
            .count();
    }
    n
}

/// Wait (with a deadline) until the backend holds `n` subscription
/// connections: server-side lists lag a close.
async fn expect_connections(backend: &ValkeyBackend, n: usize, what: &str) {
    expect_named(backend, &backend.subscription_client_name(), n, what).await;
}

/// Wait (with a deadline) until `n` connections named `name` are open.
async fn expect_named(backend: &ValkeyBackend, name: &str, n: usize, what: &str) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let now = connections_named(backend, name).await;
        if now == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {now} connections named {name}, expected {n}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// 50 tail subscriptions over P = 8 on the server at `url`: every one gets
/// an event published to each partition, while the backend holds one
/// wake-up connection per partition and one read connection per node
/// serving them — what one subscription holds — and dropping them all
/// closes every one.
async fn many_subscriptions_share_their_connections(url: &str) {
    const SUBSCRIPTIONS: usize = 50;
    const P: u16 = 8;
    let b = ValkeyBackend::connect(url, config(P))
        .await
        .expect("connect");
    let wake_ups = b.subscription_client_name();
    let reads = format!("{}:read", b.client_name());
    let nodes: BTreeSet<String> = (0..P)
        .map(|n| {
            b.node_for_key(b.partition_stream_key(Family::Completion, n))
                .expect("a node serves the partition")
        })
        .collect();
    let mut subs = Vec::new();
    for _ in 0..SUBSCRIPTIONS {
        let mut sub = b
            .subscribe_family(
                Family::Completion,
                StreamCursor::empty(),
                &Default::default(),
            )
            .await
            .expect("subscribe");
        let first = timeout_at(Instant::now() + DEADLINE, sub.next()).await;
        assert!(matches!(first, Ok(Some(Ok(DeliveryItem::CaughtUp { .. })))));
        subs.push(sub);
    }
    b.publish_batch(completions(P)).await.expect("publish");
    for (i, sub) in subs.iter_mut().enumerate() {
        let deadline = Instant::now() + DEADLINE;
        let mut events = Vec::new();
        while events.len() < usize::from(P) {
            match timeout_at(deadline, sub.next()).await {
                Ok(Some(Ok(DeliveryItem::Event { event, .. }))) => events.push(event),
                Ok(Some(Ok(_))) => {}
                other => panic!("subscription {i}: expected live events, got {other:?}"),
            }
        }
        assert_eq!(
            partitions_of(&events, P),
            (0..P).collect(),
            "subscription {i}"
        );
    }
    expect_named(
        &b,
        &wake_ups,
        usize::from(P),
        "wake-ups of 50 subscriptions over P = 8",
    )
    .await;
    expect_named(
        &b,
        &reads,
        nodes.len(),
        "read connections of 50 subscriptions",
    )
    .await;
    drop(subs);
    expect_named(
        &b,
        &wake_ups,
        0,
        "wake-ups after dropping every subscription",
    )
    .await;
    expect_named(
        &b,
        &reads,
        0,
        "read connections after dropping every subscription",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn subscriptions_hold_connections_per_partition_and_node_not_per_subscription() {
    many_subscriptions_share_their_connections(&server_url().await).await;
    many_subscriptions_share_their_connections(&cluster_url().await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn partition_n_streams_live_in_the_slot_of_fp_n() {
    let b = backend(6).await;
    assert_eq!(b.partitions(), 6);
    let prefix = b.config().key_prefix.clone();
    for n in 0..6u16 {
        let key = b.partition_stream_key(Family::Completion, n);
        assert_eq!(key, format!("{prefix}{{fp:{n}}}:completion"));
        assert_eq!(
            key_slot(key.as_bytes()),
            key_slot(format!("{{fp:{n}}}:6f1c0a4e").as_bytes())
        );
    }
    assert_eq!(b.partition_of(&ExecutionId::new(13)), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn partitions_come_from_the_url_and_a_braced_prefix_is_refused() {
    let url = format!("{}?partitions=4", cluster_url().await);
    let b = ValkeyBackend::connect(&url, config(1))
        .await
        .expect("connect");
    assert_eq!(b.partitions(), 4);
    match ValkeyBackend::connect(&url, config(1).with_key_prefix("ff:{app}:")).await {
        Err(EngineError::Validation { detail }) => {
            assert!(
                detail.contains("braces") && detail.contains("{fp:n}"),
                "{detail}"
            )
        }
        other => panic!("expected Validation, got {other:?}"),
    }
    match ValkeyBackend::connect(&url, config(6)).await {
        Err(EngineError::Validation { detail }) => {
            assert!(
                detail.contains("partitions=4") && detail.contains("6"),
                "{detail}"
            )
        }
        other => panic!("expected Validation, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn cursors_of_another_partition_count_or_partition_set_are_invalid_and_say_which() {
    let six = backend(6).await;
    six.publish_batch(completions(6)).await.expect("publish");
    let mut sub = six
        .subscribe_family(
            Family::Completion,
            StreamCursor::beginning(),
            &SubscriptionFilter::default(),
        )
        .await
        .expect("subscribe");
    let (events, full) = until_caught_up(&mut sub).await;
    assert_eq!(events.len(), 6);

    // Under another prefix: this one is laid out with partitions=6.
    let four = ValkeyBackend::connect(&cluster_url().await, config(4))
        .await
        .expect("connect");
    invalid(
        four.subscribe_family(Family::Completion, full.clone(), &Default::default())
            .await,
        &["issued for 6 partitions", "into 4", "partitions=4"],
    );

    let mut sub = six
        .subscribe_partitions(
            Family::Completion,
            &[1, 4],
            StreamCursor::beginning(),
            &SubscriptionFilter::default(),
        )
        .await
        .expect("subscribe to two partitions");
    let (_, subset) = until_caught_up(&mut sub).await;
    invalid(
        six.subscribe_family(Family::Completion, subset, &Default::default())
            .await,
        &[
            "does not cover",
            "partitions 1, 4 of 6",
            "but not 0, 2, 3, 5",
        ],
    );

    let standalone = ValkeyBackend::connect(&server_url().await, config(1))
        .await
        .expect("connect to the standalone server");
    invalid(
        standalone
            .subscribe_family(Family::Completion, full, &Default::default())
            .await,
        &["partitioned Valkey cursor (partitions=6)", "partitions=1"],
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_subset_follows_only_its_partitions_and_narrows_a_wider_cursor() {
    let b = backend(6).await;
    let first = b.publish_batch(completions(12)).await.expect("publish");
    assert_eq!(first.len(), 12);
    let mut all = b
        .subscribe_family(
            Family::Completion,
            StreamCursor::beginning(),
            &Default::default(),
        )
        .await
        .expect("subscribe");
    let (events, full) = until_caught_up(&mut all).await;
    assert_eq!(events.len(), 12);
    drop(all);

    let mut two = b
        .subscribe_partitions(
            Family::Completion,
            &[4, 1],
            StreamCursor::beginning(),
            &Default::default(),
        )
        .await
        .expect("subscribe to two partitions");
    let (mine, _) = until_caught_up(&mut two).await;
    assert_eq!(mine.len(), 4, "executions 1, 4, 7, 10");
    assert_eq!(partitions_of(&mine, 6), BTreeSet::from([1, 4]));
    expect_connections(&b, 2, "a subscription to two partitions").await;
    drop(two);
    expect_connections(&b, 0, "after dropping it").await;

    // The full subscription's cursor, narrowed: only later events.
    b.publish_batch(completions(6)).await.expect("publish more");
    let mut resumed = b
        .subscribe_partitions(Family::Completion, &[1, 4], full, &Default::default())
        .await
        .expect("subscribe from a wider cursor");
    let (later, _) = until_caught_up(&mut resumed).await;
    assert_eq!(later.len(), 2, "executions 1 and 4 of the second batch");
    assert_eq!(partitions_of(&later, 6), BTreeSet::from([1, 4]));

    match b
        .subscribe_partitions(
            Family::Completion,
            &[6],
            StreamCursor::beginning(),
            &Default::default(),
        )
        .await
    {
        Err(EngineError::Validation { detail }) => {
            assert!(detail.contains("partition 6 does not exist"), "{detail}")
        }
        Err(other) => panic!("expected Validation, got {other}"),
        Ok(_) => panic!("a partition beyond P was accepted"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_execution_filter_reads_only_its_partition_and_resumes_from_publish_cursors() {
    let b = backend(6).await;
    let exec = ExecutionId::new(9);
    let filter = SubscriptionFilter::new().with_execution_id(exec);
    let events: Vec<(NewEvent, EventMeta)> = [
        CompletionOutcome::Success,
        CompletionOutcome::Failure,
        CompletionOutcome::Cancelled,
    ]
    .into_iter()
    .map(|o| (NewEvent::completion(exec, o), EventMeta::new()))
    .collect();
    let cursors = b.publish_batch(events).await.expect("publish");
    b.publish_batch(completions(12)).await.expect("others");
    let mut sub = b
        .subscribe_family(Family::Completion, StreamCursor::beginning(), &filter)
        .await
        .expect("subscribe");
    expect_connections(&b, 1, "an execution_id-filtered subscription").await;
    let (got, _) = until_caught_up(&mut sub).await;
    assert_eq!(got.len(), 3);
    assert!(got.iter().all(|e| *e.execution_id() == exec));
    drop(sub);
    // The publish cursor of the first event resumes it after that event.
    let mut sub = b
        .subscribe_family(Family::Completion, cursors[0].clone(), &filter)
        .await
        .expect("subscribe from a publish cursor");
    let (rest, _) = until_caught_up(&mut sub).await;
    let at: Vec<&StreamCursor> = rest.iter().map(|e| e.cursor()).collect();
    assert_eq!(at, [&cursors[1], &cursors[2]]);
    // A subscription over every partition cannot start from it.
    invalid(
        b.subscribe_family(Family::Completion, cursors[0].clone(), &Default::default())
            .await,
        &["does not cover", "partitions 3 of 6"],
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_merged_subscription_holds_one_connection_per_partition() {
    let b = backend(6).await;
    let base = subscription_connections(&b).await;
    assert_eq!(base, 0);
    let mut subs = Vec::new();
    for family in [Family::Completion, Family::LeaseHistory] {
        let mut sub = b
            .subscribe_family(family, StreamCursor::empty(), &Default::default())
            .await
            .expect("subscribe");
        let first = timeout_at(Instant::now() + DEADLINE, sub.next()).await;
        assert!(matches!(first, Ok(Some(Ok(DeliveryItem::CaughtUp { .. })))));
        subs.push(sub);
    }
    expect_connections(&b, 12, "two subscriptions over six partitions").await;
    drop(subs);
    expect_connections(&b, 0, "after dropping them").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn append_cmd_commits_with_the_executions_own_keys() {
    let b = backend(6).await;
    let exec = ExecutionId::new(3);
    let event = NewEvent::completion(exec, CompletionOutcome::Success);
    let app_key = format!("{}app:{{fp:3}}:state", b.config().key_prefix);
    let mut conn = b.connection_for_key(&app_key).await.expect("connection");
    let (entry_id,): (String,) = redis::pipe()
        .atomic()
        .hset(&app_key, exec.to_string(), "done")
        .ignore()
        .add_command(b.append_cmd(&event, &EventMeta::new()).expect("append_cmd"))
        .query_async(&mut conn)
        .await
        .expect("one transaction in the execution's slot");
    let meta = EventMeta::new();
    let cursor = b
        .entry_id_cursor(
            &entry_id,
            EntryOf::Event {
                event: &event,
                meta: &meta,
            },
        )
        .expect("cursor");
    let filter = SubscriptionFilter::new().with_execution_id(exec);
    let mut sub = b
        .subscribe_family(Family::Completion, StreamCursor::beginning(), &filter)
        .await
        .expect("subscribe");
    let (got, _) = until_caught_up(&mut sub).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].cursor(), &cursor);
    let state: Value = redis::cmd("HGET")
        .arg(&app_key)
        .arg(exec.to_string())
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(state, Value::BulkString(b"done".to_vec()));
    #[allow(deprecated)]
    let from_id_alone = b.cursor_from_entry_id(Family::Completion, &entry_id);
    match from_id_alone {
        Err(EngineError::Validation { detail }) => {
            assert!(detail.contains("entry_id_cursor"), "{detail}")
        }
        other => panic!("expected Validation, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn partitions_work_on_a_standalone_server_too() {
    let b = ValkeyBackend::connect(&server_url().await, config(4))
        .await
        .expect("connect");
    assert!(!b.is_cluster());
    let prefix = b.config().key_prefix.clone();
    assert_eq!(
        b.partition_stream_key(Family::Completion, 2),
        format!("{prefix}{{fp:2}}:completion")
    );
    b.publish_batch(completions(8)).await.expect("publish");
    let mut sub = b
        .subscribe_family(
            Family::Completion,
            StreamCursor::beginning(),
            &Default::default(),
        )
        .await
        .expect("subscribe");
    let (events, _) = until_caught_up(&mut sub).await;
    assert_eq!(events.len(), 8);
    assert_eq!(partitions_of(&events, 4), BTreeSet::from([0, 1, 2, 3]));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_over_partitions_names_those_not_acknowledged_and_keeps_the_rest() {
    if skip_if_external_valkey_cluster("a_batch_over_partitions_names_those_not_acknowledged") {
        return;
    }
    let mut cluster = block_in_place(|| {
        ValkeyCluster::start_with(ClusterOptions {
            replicas_per_primary: 0,
            ..ClusterOptions::default()
        })
    })
    .expect("a cluster");
    let b = ValkeyBackend::connect(
        &cluster.url(),
        config(6).with_timeouts(Duration::from_secs(1), Duration::from_secs(2)),
    )
    .await
    .expect("connect");
    // Stop the node serving partition 0's stream (and whatever else it serves).
    let key = b.partition_stream_key(Family::Completion, 0).to_owned();
    let owner = block_in_place(|| cluster.owner_of_key(&key)).unwrap();
    let down: BTreeSet<u16> = (0..6)
        .filter(|&n| {
            let k = b.partition_stream_key(Family::Completion, n);
            block_in_place(|| cluster.owner_of_key(k)).unwrap() == owner
        })
        .collect();
    let up: Vec<u16> = (0..6).filter(|n| !down.contains(n)).collect();
    assert!(!up.is_empty(), "the partitions spread over the primaries");
    block_in_place(|| cluster.kill_node(owner)).expect("kill");
    let e = b
        .publish_batch(completions(6))
        .await
        .expect_err("a partition's node is down");
    let text = e.to_string();
    let named: Vec<String> = down.iter().map(u16::to_string).collect();
    assert!(
        text.contains(&format!(
            "partitions {} of this batch were not acknowledged",
            named.join(", ")
        )),
        "{text}"
    );
    assert!(!text.contains('\n'), "{text}");
    // The other partitions' events are stored.
    let mut sub = b
        .subscribe_partitions(
            Family::Completion,
            &up,
            StreamCursor::beginning(),
            &Default::default(),
        )
        .await
        .expect("subscribe to the partitions still served");
    let (stored, _) = until_caught_up(&mut sub).await;
    assert_eq!(partitions_of(&stored, 6), up.iter().copied().collect());
    assert_eq!(stored.len(), up.len());
}

/// The layout record under `prefix` (`{prefix}layout`), read
/// through `via`'s connection to the node serving it.
async fn layout_record(via: &ValkeyBackend, prefix: &str) -> Option<String> {
    let key = format!("{prefix}layout");
    let mut conn = via.connection_for_key(&key).await.expect("connection");
    redis::cmd("GET")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .expect("GET")
}

/// `connect` refused because the prefix records `recorded` partitions and
/// the backend was configured with `configured`, saying what to do.
fn layout_refused(r: Result<ValkeyBackend, EngineError>, recorded: u16, configured: u16) {
    match r {
        Err(EngineError::Validation { detail }) => {
            for needle in [
                format!("partitions={recorded} (recorded"),
                format!("configured with partitions={configured}"),
                format!("use partitions={recorded}, or a new key prefix"),
            ] {
                assert!(detail.contains(&needle), "{detail:?} lacks {needle:?}");
            }
        }
        Err(other) => panic!("expected Validation, got {other}"),
        Ok(_) => panic!("partitions={configured} connected to a prefix laid out with {recorded}"),
    }
}

/// On `base` (a server's URL), under fresh prefixes: whichever side
/// connects first records its P, and the other side, configured with
/// another P through its URL, is refused naming both — a publisher with
/// `publisher_p` and a subscriber with `subscriber_p`, in both orders.
async fn disagreeing_sides_are_refused(base: &str, publisher_p: u16, subscriber_p: u16) {
    let url = |p: u16| format!("{base}?partitions={p}");
    let fresh = || config(1).with_key_prefix(format!("{}:", support::unique_name("fflayout")));

    // The publisher first.
    let cfg = fresh();
    let prefix = cfg.key_prefix.clone();
    let publisher = ValkeyBackend::connect(&url(publisher_p), cfg.clone())
        .await
        .expect("the first to use the prefix connects");
    assert_eq!(
        layout_record(&publisher, &prefix).await.as_deref(),
        Some(format!("layout=1 partitions={publisher_p}").as_str()),
        "a publisher records its P at first use"
    );
    publisher
        .publish_batch(completions(8))
        .await
        .expect("publish");
    layout_refused(
        ValkeyBackend::connect(&url(subscriber_p), cfg.clone()).await,
        publisher_p,
        subscriber_p,
    );

    // The subscriber first.
    let cfg = fresh();
    let prefix = cfg.key_prefix.clone();
    let subscriber = ValkeyBackend::connect(&url(subscriber_p), cfg.clone())
        .await
        .expect("the first to use the prefix connects");
    let mut sub = subscriber
        .subscribe_family(
            Family::Completion,
            StreamCursor::beginning(),
            &SubscriptionFilter::default(),
        )
        .await
        .expect("subscribe");
    let (events, _) = until_caught_up(&mut sub).await;
    assert!(events.is_empty());
    assert_eq!(
        layout_record(&subscriber, &prefix).await.as_deref(),
        Some(format!("layout=1 partitions={subscriber_p}").as_str()),
        "a subscriber records its P at first use"
    );
    layout_refused(
        ValkeyBackend::connect(&url(publisher_p), cfg.clone()).await,
        subscriber_p,
        publisher_p,
    );
    // The same P still connects, on either side.
    ValkeyBackend::connect(&url(subscriber_p), cfg)
        .await
        .expect("the recorded P connects");
}

#[tokio::test(flavor = "multi_thread")]
async fn publishers_and_subscribers_that_disagree_on_p_are_refused_naming_both() {
    let standalone = server_url().await;
    let cluster = cluster_url().await;
    for base in [&standalone, &cluster] {
        disagreeing_sides_are_refused(base, 8, 4).await;
        disagreeing_sides_are_refused(base, 1, 4).await;
    }
}
