//! The conformance suite, the cursor-store suite and Postgres-specific
//! behaviour (in-transaction producing and cursor storing, plain-SQL
//! producers, migrations, retention by age) against a real PostgreSQL
//! server: one per test binary, or `FF_TEST_POSTGRES_URL`.
//!
//! Every test gets its own schema and `application_name`, and tests of
//! this binary run one at a time (see `ff_tests::harness::postgres`).

use std::time::Duration;

use async_trait::async_trait;
use ff_backend_postgres::sqlx::{self, Connection};
use ff_backend_postgres::{PostgresBackend, PostgresConfig};
use ff_core::backend::{CursorStore, DeliveryItem, EventPublisher, StreamBackend};
use ff_core::engine_error::EngineError;
use ff_core::filter::SubscriptionFilter;
use ff_core::stream_events::{CompletionOutcome, EventMeta, Family, NewEvent};
use ff_core::stream_subscribe::StreamCursor;
use ff_core::testkit::support::{next_item, until_caught_up, Sub, ITEM_DEADLINE, LIVE_DEADLINE};
use ff_core::types::ExecutionId;
use ff_tests::harness::postgres::{position, server_url, PostgresHarness};

async fn harness() -> PostgresHarness {
    PostgresHarness::new().await
}

ff_core::conformance_suite!(harness);

/// The cursor store in a fresh schema (the harness stays alive with it).
struct Store(PostgresHarness);

#[async_trait]
impl CursorStore for Store {
    async fn load(&self, name: &str) -> Result<Option<StreamCursor>, EngineError> {
        self.0.backend.load(name).await
    }

    async fn store(&self, name: &str, cursor: &StreamCursor) -> Result<(), EngineError> {
        self.0.backend.store(name, cursor).await
    }
}

async fn cursor_store() -> Store {
    Store(harness().await)
}

async fn reopen(store: Store) -> Store {
    Store(store.0.reopened().await)
}

ff_core::cursor_store_suite!(cursor_store, reopen: reopen);

// ---------------------------------------------------------------------------
// Postgres-specific behaviour
// ---------------------------------------------------------------------------

fn completion(n: usize) -> (NewEvent, EventMeta) {
    (
        NewEvent::completion(ExecutionId::new(1), CompletionOutcome::Success),
        EventMeta::new().with_tag("n", n.to_string()),
    )
}

fn tag_n(item: &DeliveryItem) -> Option<usize> {
    match item {
        DeliveryItem::Event { meta, .. } => meta.tags.get("n").and_then(|n| n.parse().ok()),
        _ => None,
    }
}

async fn tail(h: &PostgresHarness, family: Family) -> Sub {
    let stream = h
        .backend
        .subscribe_family(
            family,
            StreamCursor::empty(),
            &SubscriptionFilter::default(),
        )
        .await
        .expect("subscribe");
    let mut sub = Sub::new(stream);
    let first = next_item(&mut sub, ITEM_DEADLINE, "CaughtUp").await;
    assert!(matches!(first, DeliveryItem::CaughtUp { .. }), "{first:?}");
    sub
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_in_a_committed_transaction_is_delivered_and_a_rolled_back_one_never() {
    let h = harness().await;
    let mut sub = tail(&h, Family::Completion).await;
    let url = server_url().await;
    let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect");

    let mut rolled_back = conn.begin().await.expect("begin");
    let (event, meta) = completion(0);
    h.backend
        .append(&mut rolled_back, &event, &meta)
        .await
        .expect("append");
    rolled_back.rollback().await.expect("rollback");

    let mut tx = conn.begin().await.expect("begin");
    let mut cursors = Vec::new();
    for n in 1..=2 {
        let (event, meta) = completion(n);
        cursors.push(
            h.backend
                .append(&mut tx, &event, &meta)
                .await
                .expect("append"),
        );
    }
    let batch = [completion(3), completion(4)];
    cursors.extend(
        h.backend
            .append_batch(&mut tx, &batch)
            .await
            .expect("append_batch"),
    );
    tx.commit().await.expect("commit");

    for (n, cursor) in (1..=4).zip(&cursors) {
        let item = next_item(&mut sub, LIVE_DEADLINE, "a committed append").await;
        assert_eq!(tag_n(&item), Some(n), "{item:?}");
        assert_eq!(item.cursor(), cursor, "delivered cursor equals append's");
    }
    let (xid0, _) = position(Family::Completion, &cursors[0]);
    for c in &cursors {
        assert_eq!(
            position(Family::Completion, c).0,
            xid0,
            "every append of one transaction carries its xid"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_stored_in_the_consumers_transaction_commits_with_it() {
    let h = harness().await;
    let url = server_url().await;
    let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect");
    let a = h
        .backend
        .publish(completion(1).0, completion(1).1)
        .await
        .expect("publish");
    let b = h
        .backend
        .publish(completion(2).0, completion(2).1)
        .await
        .expect("publish");

    let mut tx = conn.begin().await.expect("begin");
    h.backend
        .store_cursor_in(&mut tx, "projector", &a)
        .await
        .expect("store in tx");
    assert_eq!(
        h.backend
            .load_cursor_in(&mut tx, "projector")
            .await
            .unwrap(),
        Some(a.clone()),
        "visible inside the transaction"
    );
    assert_eq!(
        h.backend.load("projector").await.unwrap(),
        None,
        "invisible outside until commit"
    );
    tx.commit().await.expect("commit");
    assert_eq!(h.backend.load("projector").await.unwrap(), Some(a.clone()));

    let mut tx = conn.begin().await.expect("begin");
    h.backend
        .store_cursor_in(&mut tx, "projector", &b)
        .await
        .expect("store in tx");
    tx.rollback().await.expect("rollback");
    assert_eq!(
        h.backend.load("projector").await.unwrap(),
        Some(a),
        "a rolled-back store leaves the previous cursor"
    );
    assert!(matches!(
        h.backend.store("", &b).await,
        Err(EngineError::Validation { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_sql_insert_wakes_subscribers_and_decodes() {
    let h = harness().await;
    let mut sub = tail(&h, Family::SignalDelivery).await;
    let exec = ExecutionId::new(3);
    sqlx::query(&format!(
        "INSERT INTO {} (execution_id, signal_id, waitpoint_id, source_identity, effect, namespace, tags) \
         VALUES ($1, '0b6f0c1e-4f3b-4c1e-9a57-2f7d9c1e0a11', NULL, 'svc-a', 'rerouted', 'billing', '{{\"region\": \"eu\"}}')",
        h.backend.table_name(Family::SignalDelivery)
    ))
    .bind(exec.to_string())
    .execute(&h.admin)
    .await
    .expect("plain insert");
    let item = next_item(&mut sub, LIVE_DEADLINE, "the plain-SQL event").await;
    let DeliveryItem::Event { event, meta } = item else {
        panic!("expected an event, got {item:?}");
    };
    let ff_core::stream_events::StreamEvent::SignalDelivery(e) = event else {
        panic!("wrong family: {event:?}");
    };
    assert_eq!(e.execution_id, exec);
    assert_eq!(
        e.signal_id.to_string(),
        "0b6f0c1e-4f3b-4c1e-9a57-2f7d9c1e0a11"
    );
    assert_eq!(e.waitpoint_id, None);
    assert_eq!(e.source_identity.as_deref(), Some("svc-a"));
    assert_eq!(e.effect.as_wire(), "rerouted");
    assert_eq!(meta.namespace.as_deref(), Some("billing"));
    assert_eq!(meta.tags.get("region").map(String::as_str), Some("eu"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_are_idempotent_and_bad_settings_are_rejected() {
    let h = harness().await;
    assert!(
        h.backend.migrate().await.expect("migrate again").is_empty(),
        "a current schema needs no migration"
    );
    let url = server_url().await;
    let again = PostgresBackend::connect(&url, h.backend.config().clone())
        .await
        .expect("connect to an existing schema");
    assert!(again.migrate().await.unwrap().is_empty());

    let bad_schema = PostgresConfig::default().with_schema("Robert'); DROP");
    assert!(matches!(
        PostgresBackend::connect(&url, bad_schema).await,
        Err(EngineError::Validation { .. })
    ));
    let secret = "postgres://alice:hunter2@127.0.0.1:notaport/db";
    let err = PostgresBackend::connect(secret, PostgresConfig::default())
        .await
        .expect_err("a malformed URL");
    assert!(matches!(err, EngineError::Validation { .. }), "{err:?}");
    assert!(!format!("{err} {err:?}").contains("hunter2"), "{err}");
    assert!(!format!("{:?}", h.backend).contains("postgres://"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_by_age_expires_cursors_behind_the_horizon() {
    let h = harness().await;
    let family = Family::Completion;
    let old: Vec<_> = (0..3).map(completion).collect();
    let cursors = h.backend.publish_batch(old).await.expect("publish");
    // Everything is older than zero seconds.
    let deleted = h
        .backend
        .prune_older_than(family, Duration::ZERO)
        .await
        .expect("prune");
    assert_eq!(deleted, 3);
    let stale = h
        .backend
        .subscribe_family(family, cursors[0].clone(), &SubscriptionFilter::default())
        .await;
    match stale {
        Err(EngineError::CursorExpired { oldest, .. }) => {
            assert_eq!(oldest.as_ref(), Some(&cursors[2]), "oldest is the horizon");
        }
        Err(e) => panic!("expected CursorExpired, got {e}"),
        Ok(_) => panic!("expected CursorExpired, got a stream"),
    }
    let bounds = h.backend.bounds(family).await.expect("bounds");
    assert_eq!(bounds.oldest, cursors[2]);
    let fresh = h
        .backend
        .publish(completion(9).0, completion(9).1)
        .await
        .expect("publish");
    let mut sub = Sub::new(
        h.backend
            .subscribe_family(family, bounds.oldest, &SubscriptionFilter::default())
            .await
            .expect("subscribe from oldest"),
    );
    let (events, caught_up) = until_caught_up(&mut sub, "events after pruning").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].0.cursor(), &fresh);
    assert_eq!(caught_up, fresh);
    assert_eq!(
        h.backend
            .prune_older_than(family, Duration::from_secs(3600))
            .await
            .unwrap(),
        0,
        "nothing is an hour old"
    );
}
