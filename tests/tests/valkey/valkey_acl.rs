//! Least-privilege ACL accounts (the rights docs/valkey.md lists, from
//! `ff_tests::acl`): a publisher and a read-only consumer with only those
//! rights do their whole job — publish and trim; subscribe, tail, read
//! bounds and store a cursor — and an account missing any one right gets
//! one line naming the command and the account. Run on the plaintext
//! Valkey server and on the TLS server (Redis 7.0, whose refusals are
//! worded differently).

use std::time::Duration;

use ff_backend_valkey::redis::{self, aio::MultiplexedConnection};
use ff_backend_valkey::{Retention, ValkeyBackend, ValkeyConfig};
use ff_core::backend::{CursorStore, DeliveryItem, EventPublisher, StreamBackend};
use ff_core::engine_error::EngineError;
use ff_core::filter::SubscriptionFilter;
use ff_core::stream_events::{CompletionOutcome, EventMeta, Family, NewEvent};
use ff_core::types::ExecutionId;
use ff_tests::acl::{commands, setuser_args, Role, CLUSTER_ONLY};
use ff_tests::harness::valkey::server_url;
use ff_tests::support;
use futures::StreamExt;
use tokio::time::{timeout_at, Instant};

const DEADLINE: Duration = Duration::from_secs(20);
const PASSWORD: &str = "hunter2";

/// A server to test on: the URL ff connects to (without credentials) and
/// an admin connection to each of its nodes.
struct Server {
    url: String,
    admins: Vec<MultiplexedConnection>,
}

async fn plain() -> Server {
    let url = server_url().await;
    Server {
        admins: vec![admin(&url).await],
        url,
    }
}

async fn tls() -> Server {
    let (url, plain) = tokio::task::spawn_blocking(support::shared_valkey_tls_urls)
        .await
        .expect("support thread")
        .expect("a TLS server");
    Server {
        admins: vec![admin(&plain).await],
        url,
    }
}

/// The shared cluster (accounts are created on every node, replicas
/// included), its URL with `query`; `None` for an external cluster.
async fn cluster(query: &str) -> Option<Server> {
    let cluster = tokio::task::spawn_blocking(support::shared_valkey_cluster)
        .await
        .expect("support thread")
        .expect("a Valkey Cluster")?;
    let mut admins = Vec::new();
    for node in 0..cluster.node_count() {
        admins.push(admin(&cluster.node_url(node)).await);
    }
    Some(Server {
        url: format!("{}{query}", cluster.url()),
        admins,
    })
}

async fn admin(url: &str) -> MultiplexedConnection {
    redis::Client::open(url)
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("admin connection")
}

impl Server {
    /// Create `user` for `role` under `prefix` (minus `without`); the URL
    /// that logs in as it.
    async fn account(&mut self, role: Role, prefix: &str, without: &[&str]) -> (String, String) {
        let user = support::unique_name("ffacl");
        let mut cmd = redis::cmd("ACL");
        for arg in setuser_args(&user, PASSWORD, role, prefix, without) {
            cmd.arg(arg);
        }
        for admin in &mut self.admins {
            let () = cmd.query_async(admin).await.expect("ACL SETUSER");
        }
        let url = self
            .url
            .replacen("://", &format!("://{user}:{PASSWORD}@"), 1);
        (user, url)
    }
}

fn config(prefix: &str) -> ValkeyConfig {
    ValkeyConfig::default()
        .with_key_prefix(prefix)
        .with_client_name(support::unique_name("ffacl"))
        .with_retention(Family::Completion, Retention::MaxLen(5))
}

fn event(n: usize) -> (NewEvent, EventMeta) {
    (
        NewEvent::completion(ExecutionId::new(1), CompletionOutcome::Success),
        EventMeta::new().with_tag("n", n.to_string()),
    )
}

/// One line, naming `command` and `user`, without the password.
fn names(e: &EngineError, command: &str, user: &str) {
    let text = e.to_string();
    assert!(
        text.contains(command) && text.contains(&format!("the account {user:?}")),
        "{text:?} should name {command} and the account {user}"
    );
    assert!(!text.contains('\n'), "one line: {text}");
    assert!(!text.contains(PASSWORD) && !format!("{e:?}").contains(PASSWORD));
}

/// A consumer's whole job: connect, bounds, catch up from the oldest,
/// tail one live event `publisher` appends, store and load its cursor.
/// The first error, if any.
async fn consume(url: &str, prefix: &str, publisher: &ValkeyBackend) -> Result<(), EngineError> {
    let consumer = ValkeyBackend::connect(url, config(prefix)).await?;
    let bounds = consumer.bounds(Family::Completion).await?;
    consumer
        .cursor_at(Family::Completion, ff_core::types::TimestampMs(0))
        .await?;
    let mut sub = consumer
        .subscribe_family(
            Family::Completion,
            bounds.oldest,
            &SubscriptionFilter::default(),
        )
        .await?;
    let mut caught_up = 0;
    loop {
        match timeout_at(Instant::now() + DEADLINE, sub.next()).await {
            Ok(Some(Ok(DeliveryItem::Event { .. }))) => caught_up += 1,
            Ok(Some(Ok(DeliveryItem::CaughtUp { .. }))) => break,
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => return Err(e),
            other => panic!("catching up: {other:?}"),
        }
    }
    let (e, m) = event(99);
    let live = publisher.publish(e, m).await.expect("publish");
    loop {
        match timeout_at(Instant::now() + DEADLINE, sub.next()).await {
            Ok(Some(Ok(DeliveryItem::Event { event, meta }))) => {
                // With partitions, publish returns the event's position in
                // its partition, not the subscription's cursor.
                if publisher.partitions() == 1 {
                    assert_eq!(event.cursor(), &live);
                }
                assert_eq!(meta.tags["n"], "99");
                break;
            }
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => return Err(e),
            other => panic!("tailing: {other:?}"),
        }
    }
    assert!(caught_up > 0, "the backlog was read");
    consumer.store("acl-consumer", &live).await?;
    assert_eq!(consumer.load("acl-consumer").await?, Some(live));
    Ok(())
}

async fn documented_rights_suffice(mut server: Server) {
    let prefix = format!("{}:", support::unique_name("ffacl"));
    let (_, publisher_url) = server.account(Role::Publisher, &prefix, &[]).await;
    let publisher = ValkeyBackend::connect(&publisher_url, config(&prefix))
        .await
        .expect("the publisher connects");
    publisher
        .publish_batch((0..20).map(event).collect())
        .await
        .expect("the publisher publishes");
    publisher
        .apply_retention(Family::Completion)
        .await
        .expect("the publisher trims");
    let retained = publisher
        .bounds(Family::Completion)
        .await
        .expect("bounds")
        .retained;
    assert_eq!(retained, Some(5), "trimmed to the retention");
    let (user, consumer_url) = server
        .account(Role::ConsumerWithCursorStore, &prefix, &[])
        .await;
    consume(&consumer_url, &prefix, &publisher)
        .await
        .expect("a consumer with the documented rights does its job");

    let consumer = ValkeyBackend::connect(&consumer_url, config(&prefix))
        .await
        .expect("connect");
    let (e, m) = event(0);
    let refused = consumer.publish(e, m).await.expect_err("read-only");
    names(&refused, "XADD", &user);
}

async fn each_missing_right_is_named(mut server: Server) {
    let prefix = format!("{}:", support::unique_name("ffacl"));
    let (_, publisher_url) = server.account(Role::Publisher, &prefix, &[]).await;
    let publisher = ValkeyBackend::connect(&publisher_url, config(&prefix))
        .await
        .expect("the publisher connects");
    publisher
        .publish_batch((0..3).map(event).collect())
        .await
        .expect("publish");
    for missing in commands(Role::ConsumerWithCursorStore) {
        if CLUSTER_ONLY.contains(&missing) {
            continue;
        }
        let (user, url) = server
            .account(Role::ConsumerWithCursorStore, &prefix, &[missing])
            .await;
        let e = consume(&url, &prefix, &publisher)
            .await
            .expect_err(&format!("without +{missing}"));
        names(&e, &missing.to_ascii_uppercase(), &user);
    }
    for missing in ["xadd", "eval", "xtrim"] {
        let (user, url) = server.account(Role::Publisher, &prefix, &[missing]).await;
        let b = ValkeyBackend::connect(&url, config(&prefix))
            .await
            .expect("connect");
        let result = async {
            let (e, m) = event(0);
            b.publish(e, m).await?;
            b.apply_retention(Family::Completion).await
        }
        .await;
        let e = result.expect_err(&format!("without +{missing}"));
        let text = e.to_string();
        let command = missing.to_ascii_uppercase();
        // Redis 7.0 does not say which command a script was refused.
        let needle = if text.contains(&command) {
            command
        } else {
            "retention script".to_owned()
        };
        names(&e, &needle, &user);
    }
}

#[tokio::test]
async fn accounts_with_only_the_documented_rights_publish_tail_and_store_cursors() {
    documented_rights_suffice(plain().await).await;
}

#[tokio::test]
async fn accounts_with_only_the_documented_rights_work_over_tls() {
    documented_rights_suffice(tls().await).await;
}

#[tokio::test]
async fn accounts_with_only_the_documented_rights_work_on_a_cluster_with_and_without_partitions() {
    for query in ["", "?partitions=3"] {
        let Some(server) = cluster(query).await else {
            support::say_loudly("SKIPPED the cluster ACL test: an external cluster");
            return;
        };
        documented_rights_suffice(server).await;
    }
}

#[tokio::test]
async fn a_missing_right_is_named_with_the_command_and_the_account() {
    each_missing_right_is_named(plain().await).await;
}

#[tokio::test]
async fn a_missing_right_is_named_over_tls_too() {
    each_missing_right_is_named(tls().await).await;
}
