//! Least privilege on Postgres: roles with only the grants
//! `grant_consumer` / `grant_publisher` give (and no right to create
//! anything) tail, publish and keep their positions; a schema that is not
//! ready is one error naming `ff migrate`.

use ff_backend_postgres::sqlx::{self, PgPool};
use ff_backend_postgres::{PostgresBackend, PostgresConfig};
use ff_core::backend::{CursorStore, DeliveryItem, EventPublisher, StreamBackend};
use ff_core::filter::SubscriptionFilter;
use ff_core::stream_events::{CompletionOutcome, EventMeta, Family, NewEvent};
use ff_core::stream_subscribe::StreamCursor;
use ff_core::testkit::support::{next_item, take_events, Sub, ITEM_DEADLINE};
use ff_core::types::{ExecutionId, TimestampMs};
use ff_tests::harness::postgres::{admin_pool, config, serial, server_url};
use ff_tests::support::unique_name;

const FAMILY: Family = Family::Completion;
const PASSWORD: &str = "ff-test-password";

/// A login role with no privileges beyond PUBLIC's (which, since
/// PostgreSQL 15, include no CREATE anywhere in the database).
async fn create_role(admin: &PgPool, label: &str) -> String {
    let role = unique_name(label);
    sqlx::raw_sql(&format!("CREATE ROLE {role} LOGIN PASSWORD '{PASSWORD}'"))
        .execute(admin)
        .await
        .expect("create role");
    role
}

/// `url` with its user (and password) replaced by `role`.
fn as_role(url: &str, role: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    format!("{scheme}://{role}:{PASSWORD}@{host}")
}

fn completion(n: usize) -> (NewEvent, EventMeta) {
    (
        NewEvent::completion(ExecutionId::new(1), CompletionOutcome::Success),
        EventMeta::new().with_tag("n", n.to_string()),
    )
}

async fn expect_connect_error(url: &str, config: PostgresConfig) -> String {
    match PostgresBackend::connect(url, config).await {
        Ok(_) => panic!("connecting succeeded"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_and_publisher_roles_tail_publish_and_keep_positions_without_ddl_rights() {
    let _serial = serial().await;
    let url = server_url().await;
    let admin = admin_pool(&url).await;
    let schema = unique_name("priv");
    let owner = PostgresBackend::connect(&url, config(&schema))
        .await
        .expect("the owner migrates");
    let consumer_role = create_role(&admin, "consumer").await;
    let publisher_role = create_role(&admin, "publisher").await;
    owner
        .grant_consumer(&consumer_role)
        .await
        .expect("grant consumer");
    owner
        .grant_publisher(&publisher_role)
        .await
        .expect("grant publisher");

    // Default settings migrate on connect, but a current schema is only read.
    let consumer = PostgresBackend::connect(&as_role(&url, &consumer_role), config(&schema))
        .await
        .expect("a consumer role connects to a current schema");
    let publisher = PostgresBackend::connect(&as_role(&url, &publisher_role), config(&schema))
        .await
        .expect("a publisher role connects to a current schema");

    let mut tail = Sub::new(
        consumer
            .subscribe_family(
                FAMILY,
                StreamCursor::empty(),
                &SubscriptionFilter::default(),
            )
            .await
            .expect("the consumer subscribes"),
    );
    assert!(matches!(
        next_item(&mut tail, ITEM_DEADLINE, "CaughtUp").await,
        DeliveryItem::CaughtUp { .. }
    ));
    let mut published = Vec::new();
    for n in 0..3 {
        let (e, m) = completion(n);
        published.push(
            publisher
                .publish(e, m)
                .await
                .expect("the publisher publishes"),
        );
    }
    let batch = publisher
        .publish_batch(vec![completion(3), completion(4)])
        .await
        .expect("the publisher publishes a batch");
    published.extend(batch);
    let events = take_events(&mut tail, 5, "the published events").await;
    let delivered: Vec<&StreamCursor> = events.iter().map(|(e, _)| e.cursor()).collect();
    assert_eq!(delivered, published.iter().collect::<Vec<_>>());

    let bounds = consumer.bounds(FAMILY).await.expect("bounds as consumer");
    assert_eq!(bounds.head, published[4]);
    consumer
        .cursor_at(FAMILY, TimestampMs(0))
        .await
        .expect("cursor_at as consumer");

    consumer
        .store("projector", &published[2])
        .await
        .expect("the consumer stores its position");
    assert_eq!(
        consumer.load("projector").await.unwrap(),
        Some(published[2].clone())
    );
    consumer
        .store("projector", &published[4])
        .await
        .expect("the consumer overwrites its position");
    assert_eq!(
        consumer.load("projector").await.unwrap(),
        Some(published[4].clone())
    );

    // Another consumer role has its own positions under the same name.
    let other_role = create_role(&admin, "other").await;
    owner.grant_consumer(&other_role).await.unwrap();
    let other = PostgresBackend::connect(&as_role(&url, &other_role), config(&schema))
        .await
        .expect("a second consumer role connects");
    assert_eq!(other.load("projector").await.unwrap(), None);
    other.store("projector", &published[0]).await.unwrap();
    assert_eq!(
        consumer.load("projector").await.unwrap(),
        Some(published[4].clone()),
        "a role's positions are its own"
    );

    // Each role has only what it was granted, and the error says how to grant.
    let (e, m) = completion(9);
    let err = consumer
        .publish(e, m)
        .await
        .expect_err("a consumer may not publish");
    assert!(err.to_string().contains("--grant-publisher"), "{err}");
    let err = publisher
        .subscribe_family(
            FAMILY,
            StreamCursor::beginning(),
            &SubscriptionFilter::default(),
        )
        .await
        .err()
        .expect("a publisher may not read the outbox");
    assert!(err.to_string().contains("--grant-consumer"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_outdated_schema_is_one_error_naming_ff_migrate() {
    let _serial = serial().await;
    let url = server_url().await;
    let admin = admin_pool(&url).await;
    let role = create_role(&admin, "late").await;
    let role_url = as_role(&url, &role);
    let schema = unique_name("absent");

    let err = expect_connect_error(&role_url, config(&schema)).await;
    assert!(err.contains("ff migrate"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    let err = expect_connect_error(&role_url, config(&schema).with_migrate_on_connect(false)).await;
    assert!(
        err.contains("has no ff tables") && err.contains("ff migrate"),
        "{err}"
    );

    let owner = PostgresBackend::connect(&url, config(&schema))
        .await
        .expect("the owner migrates");
    owner.grant_consumer(&role).await.unwrap();
    sqlx::query(&format!(
        "DELETE FROM {schema}._ff_migrations \
         WHERE version = (SELECT max(version) FROM {schema}._ff_migrations)"
    ))
    .execute(&admin)
    .await
    .expect("forget the newest migration");
    let err = expect_connect_error(&role_url, config(&schema).with_migrate_on_connect(false)).await;
    assert!(err.contains("needs") && err.contains("ff migrate"), "{err}");
    let err = expect_connect_error(&role_url, config(&schema)).await;
    assert!(err.contains("ff migrate"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    owner.close().await;
}
