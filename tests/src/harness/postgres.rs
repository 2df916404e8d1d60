//! The Postgres harness: a backend in a fresh schema and application name
//! on the shared test cluster, with fault hooks over an admin pool.
//!
//! Harnesses of one test process run one at a time (each holds a lock for
//! its lifetime): delivery waits for the oldest open transaction anywhere in
//! the cluster, so another test's transaction (a migration, say) overlapping
//! a tail subscribe would make that subscription include earlier events
//! ("more, never fewer"), which exact assertions would count as wrong.

use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use ff_backend_postgres::cursor_codec::{
    decode_postgres_any, encode_postgres, encode_postgres_history, PostgresCursor,
    PostgresHistoryPosition,
};
use ff_backend_postgres::sqlx::postgres::PgRow;
use ff_backend_postgres::sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use ff_backend_postgres::sqlx::{self, PgPool, Row};
use ff_backend_postgres::{PostgresBackend, PostgresConfig};
use ff_core::backend::{EventPublisher, StreamBackend};
use ff_core::engine_error::EngineError;
use ff_core::stream_events::record::Field;
use ff_core::stream_events::Family;
use ff_core::stream_subscribe::{CursorStart, StreamCursor};
use ff_core::testkit::support::{drafts, publish_batch, ITEM_DEADLINE};
use ff_core::testkit::Harness;
use tokio::sync::{Mutex, OwnedMutexGuard};
use tokio::time::Instant;

use crate::support::{self, PostgresServer};

/// The checkpoint interval harness backends use.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(200);
/// The safety-net poll harness backends use.
pub const SAFETY_NET_POLL: Duration = Duration::from_secs(30);
/// The liveness read harness backends use: far beyond the live deadline,
/// so that a live test fails when a wake-up goes missing instead of being
/// rescued by the read that proves the server still answers.
pub const LIVENESS_INTERVAL: Duration = Duration::from_secs(30);
/// Rows a harness subscription reads per query: small, so backlogs span
/// many reads.
pub const READ_BATCH: usize = 50;

/// A PostgreSQL server of the calling test's own (to stop, kill and
/// restart); `None`, after a loud SKIPPED notice naming `test`, when the
/// suite is pointed at an external server.
pub async fn own_server(test: &str) -> Option<Arc<PostgresServer>> {
    if support::skip_if_external_postgres(test) {
        return None;
    }
    let server = tokio::task::spawn_blocking(PostgresServer::start)
        .await
        .expect("support thread")
        .expect("start a PostgreSQL server");
    Some(Arc::new(server))
}

/// The shared test cluster's URL (started on first use).
pub async fn server_url() -> String {
    tokio::task::spawn_blocking(support::shared_postgres_url)
        .await
        .expect("support thread")
        .expect("a PostgreSQL server for the suite")
}

/// One test at a time on the shared cluster (see the module docs).
pub async fn serial() -> OwnedMutexGuard<()> {
    static LOCK: OnceLock<Arc<Mutex<()>>> = OnceLock::new();
    LOCK.get_or_init(|| Arc::new(Mutex::new(())))
        .clone()
        .lock_owned()
        .await
}

/// The harness configuration for a backend in `schema`.
pub fn config(schema: &str) -> PostgresConfig {
    PostgresConfig::default()
        .with_schema(schema)
        .with_application_name(format!("fft_{schema}"))
        .with_checkpoint_interval(CHECKPOINT_INTERVAL)
        .with_safety_net_poll(SAFETY_NET_POLL)
        .with_liveness_interval(LIVENESS_INTERVAL)
        .with_read_batch(READ_BATCH)
        .with_pool_size(4)
}

/// A small pool under an application name `kill_connections` spares.
pub async fn admin_pool(url: &str) -> PgPool {
    let options = PgConnectOptions::from_str(url)
        .expect("admin url")
        .application_name("ff-tests-admin");
    PgPoolOptions::new()
        .max_connections(2)
        .connect_with(options)
        .await
        .expect("admin connection")
}

/// The `(xid as text, id)` of a positioned Postgres cursor.
pub fn position(family: Family, cursor: &StreamCursor) -> (String, i64) {
    match decode_postgres_any(cursor, family) {
        Ok(CursorStart::After(PostgresCursor::History(p))) => (p.xid.to_string(), p.id as i64),
        Ok(CursorStart::After(PostgresCursor::Plain(p))) => (p.xid.to_string(), p.id as i64),
        other => panic!("not a positioned cursor: {other:?}"),
    }
}

/// A `RETURNING` clause whose row [`returned_cursor`] turns into the
/// inserted row's cursor.
pub const RETURNING_POSITION: &str =
    "RETURNING xid::text::int8, id, at, (SELECT system_identifier FROM pg_control_system())";

/// The cursor of the row an `INSERT ... RETURNING_POSITION` returned.
pub fn returned_cursor(family: Family, row: &PgRow) -> StreamCursor {
    let get = |i: usize| row.get::<i64, _>(i) as u64;
    encode_postgres_history(
        family,
        PostgresHistoryPosition::new(get(3), get(0), get(1), get(2)),
    )
}

/// A second cluster, started on first use, whose cursors the shared
/// cluster's backends must refuse (another history).
async fn foreign_server_url() -> String {
    static SERVER: tokio::sync::OnceCell<Option<Arc<PostgresServer>>> =
        tokio::sync::OnceCell::const_new();
    let server = SERVER
        .get_or_init(|| own_server("the foreign-cursor hook's second cluster"))
        .await;
    match server {
        Some(server) => server.url(),
        // Pointed at an external server: a second database of it is the
        // nearest thing to another history.
        None => server_url().await,
    }
}

/// Connect a second backend from a blocking thread: the compiler cannot
/// prove `connect`'s future `Send` for every lifetime inside the
/// `async_trait` hooks, and `block_on` does not need it to be.
async fn connect_elsewhere(
    url: String,
    config: PostgresConfig,
) -> Result<PostgresBackend, EngineError> {
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || runtime.block_on(PostgresBackend::connect(&url, config)))
        .await
        .expect("connect thread")
}

/// A backend in a fresh schema, plus an admin pool (with another
/// application name, so `kill_connections` spares it) for the hooks.
pub struct PostgresHarness {
    /// The backend under test.
    pub backend: PostgresBackend,
    /// An admin pool for hooks and direct SQL.
    pub admin: PgPool,
    url: String,
    _serial: OwnedMutexGuard<()>,
}

impl PostgresHarness {
    /// A backend on the shared cluster in a fresh schema.
    pub async fn new() -> Self {
        let serial = serial().await;
        let url = server_url().await;
        let backend = PostgresBackend::connect(&url, config(&support::unique_name("t")))
            .await
            .expect("connect the backend");
        let admin = admin_pool(&url).await;
        Self {
            backend,
            admin,
            url,
            _serial: serial,
        }
    }

    /// This harness with its backend dropped and a new one connected to
    /// the same schema (the cursor-store suite's reopen step).
    pub async fn reopened(self) -> Self {
        let Self {
            backend,
            admin,
            url,
            _serial,
        } = self;
        let config = backend.config().clone();
        drop(backend);
        let backend = PostgresBackend::connect(&url, config)
            .await
            .expect("reconnect the backend to its schema");
        Self {
            backend,
            admin,
            url,
            _serial,
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

    /// The batch being consumed, the channel's batches, and one query in
    /// flight.
    fn read_ahead_limit(&self) -> usize {
        5 * READ_BATCH
    }

    fn read_batch(&self) -> usize {
        READ_BATCH
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

    /// Insert through `jsonb_populate_record`, so every value goes through
    /// its column type's text input, as a plain-SQL producer's would; a
    /// value the column type refuses is `Validation`.
    async fn inject_raw(
        &self,
        family: Family,
        fields: &[(Field, String)],
    ) -> Result<StreamCursor, EngineError> {
        let mut record = serde_json::Map::new();
        for (field, value) in fields {
            let value = match field {
                Field::Tags => serde_json::from_str(value)
                    .map_err(|e| EngineError::validation(format!("tags: {e}")))?,
                _ => serde_json::Value::String(value.clone()),
            };
            record.insert(field.name().to_owned(), value);
        }
        let table = self.backend.table_name(family);
        let columns = record
            .keys()
            .map(|c| format!("\"{c}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = if record.is_empty() {
            format!("INSERT INTO {table} DEFAULT VALUES {RETURNING_POSITION}")
        } else {
            format!(
                "INSERT INTO {table} ({columns}) SELECT {columns} \
                 FROM jsonb_populate_record(NULL::{table}, $1::text::jsonb) {RETURNING_POSITION}"
            )
        };
        let row = sqlx::query(&sql)
            .bind(serde_json::Value::Object(record).to_string())
            .fetch_one(&self.admin)
            .await
            .map_err(|e| match e.as_database_error().and_then(|d| d.code()) {
                // A data exception: a column's type cannot hold a value (a
                // word in the smallint `v`), so no producer can write it.
                Some(code) if code.starts_with("22") => EngineError::validation(format!(
                    "the {table} columns cannot hold this record: {e}"
                )),
                _ => Self::err(e),
            })?;
        Ok(returned_cursor(family, &row))
    }

    async fn kill_connections(&self) -> Result<(), EngineError> {
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
        Ok(())
    }

    async fn connection_ids(&self) -> Result<Vec<String>, EngineError> {
        let config = self.backend.config();
        sqlx::query_scalar(
            "SELECT pid::text FROM pg_stat_activity WHERE application_name IN ($1, $2)",
        )
        .bind(&config.application_name)
        .bind(config.subscription_application_name())
        .fetch_all(&self.admin)
        .await
        .map_err(Self::err)
    }

    async fn cursor_beyond_head(&self, family: Family) -> Result<StreamCursor, EngineError> {
        let xmax: i64 =
            sqlx::query_scalar("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::int8")
                .fetch_one(&self.admin)
                .await
                .map_err(Self::err)?;
        Ok(encode_postgres(family, xmax as u64 + 1_000_000, 1))
    }

    /// A cursor of another cluster's outbox (another history).
    async fn foreign_cursor(&self, family: Family) -> Result<StreamCursor, EngineError> {
        let url = foreign_server_url().await;
        let other = connect_elsewhere(url, config(&support::unique_name("foreign"))).await?;
        let cursors = publish_batch(&other, &drafts(family, 2, "foreign")).await;
        Ok(cursors[1].clone())
    }

    async fn independent_publisher(&self) -> Result<Arc<dyn EventPublisher>, EngineError> {
        let other = connect_elsewhere(self.url.clone(), self.backend.config().clone()).await?;
        Ok(Arc::new(other))
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
