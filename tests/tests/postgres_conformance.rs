//! The conformance suite, the cursor-store suite and Postgres-specific
//! behaviour (in-transaction producing and cursor storing, plain-SQL
//! producers, migrations, retention by age) against a real PostgreSQL
//! server: one per test binary, or `FF_TEST_POSTGRES_URL`.
//!
//! Every test gets its own schema and `application_name`. Tests of this
//! binary run one at a time: delivery waits for the oldest open
//! transaction anywhere in the cluster, so another test's transaction
//! (a migration, say) overlapping a tail subscribe would make that
//! subscription include earlier events ("more, never fewer"), which the
//! suite's exact assertions would count as wrong.

use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use ff_backend_postgres::sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use ff_backend_postgres::sqlx::{self, Connection, PgPool, Row};
use ff_backend_postgres::{PostgresBackend, PostgresConfig};
use ff_core::backend::{CursorStore, DeliveryItem, EventPublisher, StreamBackend};
use ff_core::engine_error::EngineError;
use ff_core::filter::SubscriptionFilter;
use ff_core::stream_events::{CompletionOutcome, EventMeta, Family, NewEvent};
use ff_core::stream_subscribe::{decode_postgres, encode_postgres, CursorStart, StreamCursor};
use ff_core::testkit::support::{next_item, until_caught_up, Sub, ITEM_DEADLINE, LIVE_DEADLINE};
use ff_core::testkit::Harness;
use ff_core::types::ExecutionId;
use ff_tests::support;
use tokio::sync::{Mutex, OwnedMutexGuard};
use tokio::time::Instant;

const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(200);
const SAFETY_NET_POLL: Duration = Duration::from_secs(30);

/// A schema (and application) name no other test or test process uses.
fn unique(label: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{label}_{}_{n}_{nanos:08x}", std::process::id())
}

async fn server_url() -> String {
    tokio::task::spawn_blocking(support::shared_postgres_url)
        .await
        .expect("support thread")
        .expect("a PostgreSQL server for the suite")
}

/// One test at a time on the shared cluster (see the module docs).
async fn serial() -> OwnedMutexGuard<()> {
    static LOCK: OnceLock<Arc<Mutex<()>>> = OnceLock::new();
    LOCK.get_or_init(|| Arc::new(Mutex::new(())))
        .clone()
        .lock_owned()
        .await
}

fn config(schema: &str) -> PostgresConfig {
    PostgresConfig::default()
        .with_schema(schema)
        .with_application_name(format!("fft_{schema}"))
        .with_checkpoint_interval(CHECKPOINT_INTERVAL)
        .with_safety_net_poll(SAFETY_NET_POLL)
        .with_pool_size(4)
}

async fn admin_pool(url: &str) -> PgPool {
    let options = PgConnectOptions::from_str(url)
        .expect("admin url")
        .application_name("ff-tests-admin");
    PgPoolOptions::new()
        .max_connections(2)
        .connect_with(options)
        .await
        .expect("admin connection")
}

fn position(family: Family, cursor: &StreamCursor) -> (String, i64) {
    match decode_postgres(cursor, family) {
        Ok(CursorStart::After(p)) => (p.xid.to_string(), p.id as i64),
        other => panic!("not a positioned cursor: {other:?}"),
    }
}

/// A row the shared decoder rejects: its `execution_id` is not
/// `{fp:N}:<uuid>`. Every other column is valid.
fn corrupt_insert(table: &str, family: Family) -> String {
    let values = match family {
        Family::LeaseHistory => "(type, execution_id) VALUES ('acquired', 'not-an-execution-id')",
        Family::Completion => "(execution_id, outcome) VALUES ('not-an-execution-id', 'success')",
        Family::SignalDelivery => {
            "(execution_id, signal_id, effect) VALUES ('not-an-execution-id', gen_random_uuid(), 'buffered')"
        }
        _ => "(type, execution_id, tag) VALUES ('attached', 'not-an-execution-id', 'hot')",
    };
    format!("INSERT INTO {table} {values} RETURNING xid::text::int8, id")
}

/// A backend in a fresh schema, plus an admin pool (with another
/// application name, so `kill_connections` spares it) for the hooks.
struct PostgresHarness {
    backend: PostgresBackend,
    admin: PgPool,
    _serial: OwnedMutexGuard<()>,
}

impl PostgresHarness {
    async fn new() -> Self {
        let serial = serial().await;
        let url = server_url().await;
        let backend = PostgresBackend::connect(&url, config(&unique("t")))
            .await
            .expect("connect the backend");
        let admin = admin_pool(&url).await;
        Self {
            backend,
            admin,
            _serial: serial,
        }
    }

    fn err(e: sqlx::Error) -> EngineError {
        EngineError::Backend {
            backend: "postgres-harness",
            detail: e.to_string(),
        }
    }
}

#[async_trait]
impl Harness for PostgresHarness {
    fn backend(&self) -> Arc<dyn StreamBackend> {
        Arc::new(self.backend.clone())
    }

    fn publisher(&self) -> Arc<dyn EventPublisher> {
        Arc::new(self.backend.clone())
    }

    fn checkpoint_interval(&self) -> Duration {
        CHECKPOINT_INTERVAL
    }

    fn safety_net_poll(&self) -> Option<Duration> {
        Some(SAFETY_NET_POLL)
    }

    /// Prune through the backend's prune function; rows of transactions
    /// older than an open one are kept until it ends, so retry (with a
    /// deadline) until nothing before `cursor` remains.
    async fn expire_before(
        &self,
        family: Family,
        cursor: &StreamCursor,
    ) -> Result<(), EngineError> {
        let (xid, id) = position(family, cursor);
        let deadline = Instant::now() + ITEM_DEADLINE;
        loop {
            self.backend.prune_before(family, cursor).await?;
            let left: i64 = sqlx::query_scalar(&format!(
                "SELECT count(*) FROM {} WHERE (xid, id) < ($1::text::xid8, $2)",
                self.backend.table_name(family)
            ))
            .bind(&xid)
            .bind(id)
            .fetch_one(&self.admin)
            .await
            .map_err(Self::err)?;
            if left == 0 {
                return Ok(());
            }
            assert!(
                Instant::now() < deadline,
                "{left} rows before the cursor survived pruning"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn inject_corrupt(&self, family: Family) -> Result<StreamCursor, EngineError> {
        let row = sqlx::query(&corrupt_insert(&self.backend.table_name(family), family))
            .fetch_one(&self.admin)
            .await
            .map_err(Self::err)?;
        let xid: i64 = row.get(0);
        let id: i64 = row.get(1);
        Ok(encode_postgres(family, xid as u64, id as u64))
    }

    async fn kill_connections(&self) -> Result<bool, EngineError> {
        let config = self.backend.config();
        sqlx::query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name IN ($1, $2)",
        )
        .bind(&config.application_name)
        .bind(config.subscription_application_name())
        .fetch_all(&self.admin)
        .await
        .map_err(Self::err)?;
        Ok(true)
    }

    async fn cursor_beyond_head(&self, family: Family) -> Result<StreamCursor, EngineError> {
        let xmax: i64 =
            sqlx::query_scalar("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::int8")
                .fetch_one(&self.admin)
                .await
                .map_err(Self::err)?;
        Ok(encode_postgres(family, xmax as u64 + 1_000_000, 1))
    }

    async fn open_subscriptions(&self) -> Result<usize, EngineError> {
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1")
                .bind(self.backend.config().subscription_application_name())
                .fetch_one(&self.admin)
                .await
                .map_err(Self::err)?;
        Ok(n as usize)
    }
}

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

ff_core::cursor_store_suite!(cursor_store);

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
