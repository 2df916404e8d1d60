//! [`PostgresBackend`]: the connection pool, the schema it serves, and the
//! [`StreamBackend`] implementation.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use ff_core::backend::{DeliveryStream, StreamBackend, StreamBounds};
use ff_core::engine_error::EngineError;
use ff_core::filter::SubscriptionFilter;
use ff_core::group::GroupStore;
use ff_core::stream_events::Family;
use ff_core::stream_subscribe::StreamCursor;
use ff_core::types::TimestampMs;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Row};

use crate::config::PostgresConfig;
use crate::error::{map_sqlx, redact_url, BACKEND};
use crate::history;
use crate::inner::Inner;
use crate::migrate;
use crate::notify::Notifier;
use crate::pool::{with_conn, ConnPool};
use crate::position::Pos;
use crate::publish::InsertStatements;
use crate::resolve::Resolved;
use crate::schema::SchemaNames;
use crate::schema_state;
use crate::sql;
use crate::tls;
use crate::url_params;

/// The ff backend over a Postgres outbox. Cheap to clone (the state is
/// shared); see the [crate documentation](crate) for the schema and the
/// ordering guarantee.
#[derive(Clone)]
pub struct PostgresBackend {
    pub(crate) inner: Arc<Inner>,
}

impl fmt::Debug for PostgresBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresBackend")
            .field("schema", &self.inner.config.schema)
            .field("application_name", &self.inner.config.application_name)
            .field("pool_size", &self.inner.config.pool_size)
            .finish_non_exhaustive()
    }
}

impl PostgresBackend {
    /// Connect to the database at `url` (`postgres://user:password@host:port/db`)
    /// and check the schema with reads: pending migrations are applied when
    /// `config.migrate_on_connect` is on, and are an error naming `ff
    /// migrate` otherwise. A current schema is never touched, so roles with
    /// only the grants [`grant_consumer`](Self::grant_consumer) or
    /// [`grant_publisher`](Self::grant_publisher) give can connect.
    ///
    /// A malformed URL or configuration is `Validation` (the URL's
    /// password redacted); an unreachable server is `Transport`.
    pub async fn connect(url: &str, config: PostgresConfig) -> Result<Self, EngineError> {
        let backend = Self::open(url, config).await?;
        backend.ensure_schema().await?;
        Ok(backend)
    }

    /// Connect to the database at `url` and create the schema or bring it
    /// up to date, whatever `migrate_on_connect` says; returns the backend
    /// and the migration versions applied. What `ff migrate` runs.
    pub async fn connect_and_migrate(
        url: &str,
        config: PostgresConfig,
    ) -> Result<(Self, Vec<i64>), EngineError> {
        let backend = Self::open(url, config).await?;
        let applied = backend.migrate().await?;
        Ok((backend, applied))
    }

    /// Connect the pool (once, so an unreachable server fails here) without
    /// looking at the schema.
    async fn open(url: &str, mut config: PostgresConfig) -> Result<Self, EngineError> {
        let invalid = |why: String| {
            EngineError::validation(format!("invalid Postgres URL {}: {why}", redact_url(url)))
        };
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(invalid(
                "expected postgres://user:password@host:port/database".into(),
            ));
        }
        // A password typed with `/ ? # @` unencoded still parses.
        let url = &ff_core::redact::encode_userinfo(url);
        let (url, connect_timeout) = url_params::take_connect_timeout(url)?;
        let url = &url;
        if let Some(timeout) = connect_timeout {
            config.connect_timeout = timeout;
        }
        config.validate()?;
        tls::check_tls_params(url)?;
        let base = PgConnectOptions::from_str(url)
            .map_err(|e| invalid(e.to_string()))?
            .disable_statement_logging()
            .options(config.keepalive_options());
        let pool_options = base
            .clone()
            .application_name(&config.application_name)
            .options([("ff.defer_notify", "on")]);
        // Subscriptions run the same few prepared reads over and over; a
        // generic plan (index scans, as the reads are written for) saves
        // re-planning each execution, about half a millisecond per read.
        let sub_options = base
            .application_name(&config.subscription_application_name())
            .options([("plan_cache_mode", "force_generic_plan")]);
        let pool = ConnPool::new(
            pool_options,
            config.pool_size,
            config.connect_timeout,
            config.query_timeout,
        );
        // Connect once now, so an unreachable server fails `connect`.
        pool.acquire().await?.release();
        let names = SchemaNames::new(&config.schema);
        let backend = Self {
            inner: Arc::new(Inner {
                statements: InsertStatements::new(&names),
                notifier: Notifier::spawn(pool.clone(), names.clone()),
                names,
                pool,
                sub_options,
                config,
            }),
        };
        Ok(backend)
    }

    /// Check the schema with reads; migrate only when something is pending
    /// and `migrate_on_connect` is on, so a least-privilege role never
    /// runs DDL against a current schema.
    async fn ensure_schema(&self) -> Result<(), EngineError> {
        let schema = &self.inner.config.schema;
        let state = with_conn!(self.inner.pool, |conn| schema_state::read(conn, schema)
            .await)?;
        match state.not_ready(schema) {
            None => Ok(()),
            Some(_) if self.inner.config.migrate_on_connect => self.migrate().await.map(drop),
            Some(err) => Err(err),
        }
    }

    /// Create the schema or bring it up to date; returns the migration
    /// versions applied (empty when it was current). Safe to run
    /// concurrently from several processes.
    pub async fn migrate(&self) -> Result<Vec<i64>, EngineError> {
        with_conn!(
            self.inner.pool,
            untimed | conn | migrate::migrate(conn, &self.inner.config.schema).await
        )
    }

    /// The configuration this backend was built with.
    pub fn config(&self) -> &PostgresConfig {
        &self.inner.config
    }

    /// The schema-qualified outbox table of `family` (e.g. `ff.completion`),
    /// for producers writing plain SQL.
    pub fn table_name(&self, family: Family) -> String {
        self.inner.names.table(family)
    }

    /// The notification channel subscribers of `family` listen on (e.g.
    /// `ff.completion`; the outbox trigger notifies it).
    pub fn notification_channel(&self, family: Family) -> String {
        self.inner.names.channel(family)
    }

    /// Send the wake-ups still pending for this instance's publishes
    /// (waiting, within the query timeout, for publishes whose calls ended
    /// without their result), then close the pool (subscriptions keep
    /// their own connections until dropped). Dropping the last handle
    /// sends pending wake-ups too, from a background task that needs the
    /// runtime to keep running: call this before a process exits.
    pub async fn close(&self) {
        self.inner.notifier.flush().await;
        self.inner.pool.close().await;
    }
}

#[async_trait]
impl StreamBackend for PostgresBackend {
    fn backend_name(&self) -> &'static str {
        BACKEND
    }

    fn group_store(&self) -> Result<Arc<dyn GroupStore>, EngineError> {
        Ok(Arc::new(self.groups()))
    }

    async fn subscribe_family(
        &self,
        family: Family,
        cursor: StreamCursor,
        filter: &SubscriptionFilter,
    ) -> Result<DeliveryStream, EngineError> {
        crate::subscription::subscribe(self.inner.clone(), family, cursor, filter).await
    }

    async fn resolve_cursor(
        &self,
        family: Family,
        cursor: StreamCursor,
    ) -> Result<StreamCursor, EngineError> {
        crate::subscription::resolve(&self.inner, family, cursor).await
    }

    /// `oldest` is the retention horizon (or `beginning()` if never
    /// pruned); `head` the newest committed event. Subscribing from `head`
    /// can miss events of transactions that were open when `bounds` read
    /// it; the tail cursor never does.
    async fn bounds(&self, family: Family) -> Result<StreamBounds, EngineError> {
        let r = with_conn!(self.inner.pool, |conn| {
            Resolved::read(conn, &self.inner.names, family, None).await
        })?;
        let oldest = history::oldest(&r, family);
        let head = r
            .head
            .map_or_else(|| oldest.clone(), |h| h.cursor(family, r.system));
        Ok(StreamBounds::new(oldest, head, None))
    }

    /// The position before the first event (in stream order) recorded at
    /// or after `at` — the row before it, the horizon or the origin — or,
    /// when every event is older, where a tail subscription would start;
    /// never after a transaction still open, and always a position that
    /// survives a crash of the server.
    async fn cursor_at(
        &self,
        family: Family,
        at: TimestampMs,
    ) -> Result<StreamCursor, EngineError> {
        let sql = sql::cursor_at(&self.inner.names, family);
        let row = with_conn!(self.inner.pool, |conn| {
            sqlx::query(&sql)
                .bind(at.0)
                .fetch_one(conn)
                .await
                .map_err(map_sqlx)
        })?;
        let get = |i: usize| row.try_get::<Option<i64>, _>(i).map_err(map_sqlx);
        let pos = |first: usize| -> Result<Option<Pos>, EngineError> {
            Ok(get(first)?
                .zip(get(first + 1)?)
                .map(|(x, i)| Pos::row(x, i, get(first + 2).ok().flatten().unwrap_or_default())))
        };
        let found: bool = row.try_get(0).map_err(map_sqlx)?;
        let system = get(10)?.unwrap_or_default() as u64;
        let (before_first, below, horizon) = (pos(1)?, pos(4)?, pos(7)?);
        let tail = below
            .into_iter()
            .chain(horizon)
            .max()
            .unwrap_or(Pos::ORIGIN);
        let pos = if found {
            before_first
                .into_iter()
                .chain(horizon)
                .max()
                .unwrap_or(Pos::ORIGIN)
                .min(tail)
        } else {
            tail
        };
        Ok(pos.cursor(family, system))
    }
}
