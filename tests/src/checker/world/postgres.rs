//! Postgres: a primary behind a proxy (a promoted copy takes its place on
//! a failover), an application pool of the checker's own for transactions
//! and plain SQL, and the outbox tables read directly.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use ff_backend_postgres::cursor_codec::{decode_postgres_any, PostgresCursor};
use ff_backend_postgres::sqlx::postgres::{PgPool, PgPoolOptions};
use ff_backend_postgres::sqlx::{self, Row};
use ff_backend_postgres::{PostgresBackend, PostgresConfig};
use ff_core::backend::{CursorStore, EventPublisher, StreamBackend};
use ff_core::engine_error::EngineError;
use ff_core::stream_events::{EventMeta, Family, NewEvent};
use ff_core::stream_subscribe::{CursorStart, StreamCursor};
use futures::future::{BoxFuture, FutureExt};
use rand::rngs::StdRng;
use rand::Rng;

use super::{
    addr, blocking, publish_all, publish_each, Fault, FaultCtx, PublishResult, World, WorldKind,
};
use crate::checker::consumer::HANDED_BY_FAULT;
use crate::checker::history::{DeliveryPath, PosKey, PublishPath, Recorder};
use crate::checker::plan::FAMILIES;
use crate::checker::truth::{StoreState, StoredEvent};
use crate::support::{unique_name, PostgresServer, TcpProxy};

/// The partition interval of a time-partitioned world.
const RANGE: Duration = Duration::from_secs(1);

/// The Postgres world.
pub struct PostgresWorld {
    server: Mutex<Arc<PostgresServer>>,
    proxy: TcpProxy,
    url: String,
    config: PostgresConfig,
    publisher: Arc<PostgresBackend>,
    pool: PgPool,
    partitioned: bool,
    survived: Mutex<Option<std::collections::HashSet<u64>>>,
}

/// Connect from a blocking thread: the compiler cannot prove `connect`'s
/// future `Send` for every lifetime inside `async_trait` methods, and
/// `block_on` does not need it to be.
async fn connect(url: &str, config: &PostgresConfig) -> Result<PostgresBackend, EngineError> {
    let (url, config) = (url.to_owned(), config.clone());
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || runtime.block_on(PostgresBackend::connect(&url, config)))
        .await
        .map_err(|e| EngineError::Backend {
            backend: "postgres",
            detail: format!("the connecting thread failed: {e}"),
        })?
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

impl PostgresWorld {
    /// Start a server, migrate a schema of the run's own, and connect.
    pub async fn start(rng: &mut StdRng) -> Result<Self, String> {
        let server = Arc::new(blocking(PostgresServer::start).map_err(err)?);
        let proxy = TcpProxy::start(addr(server.port())).map_err(err)?;
        let url = format!("postgres://postgres@127.0.0.1:{}/postgres", proxy.port());
        let schema = unique_name("ck").replace('-', "_");
        let config = PostgresConfig::default()
            .with_schema(schema)
            .with_application_name("ff-checker")
            .with_read_batch([1, 7, 256][rng.random_range(0..3)])
            .with_checkpoint_interval(Duration::from_millis(200))
            .with_safety_net_poll(Duration::from_secs(30))
            .with_liveness_interval(Duration::from_secs(30));
        let publisher = PostgresBackend::connect(&url, config.clone())
            .await
            .map_err(err)?;
        let partitioned = rng.random_bool(0.4);
        if partitioned {
            publisher.partition_by_time(RANGE).await.map_err(err)?;
        }
        let pool = PgPoolOptions::new()
            .max_connections(6)
            .acquire_timeout(Duration::from_secs(10))
            .connect(&url)
            .await
            .map_err(err)?;
        Ok(Self {
            server: Mutex::new(server),
            proxy,
            url,
            config,
            publisher: Arc::new(publisher),
            pool,
            partitioned,
            survived: Mutex::new(None),
        })
    }

    fn server(&self) -> Arc<PostgresServer> {
        self.server
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn schema(&self) -> &str {
        &self.config.schema
    }

    fn raw_insert<'a>(
        &'a self,
        event: &'a NewEvent,
        meta: &'a EventMeta,
    ) -> BoxFuture<'a, Result<PosKey, String>> {
        async move {
            let table = self.publisher.table_name(event.family());
            let (columns, values): (&str, Vec<String>) = match event {
                NewEvent::Completion { outcome, .. } => {
                    ("outcome", vec![outcome.as_wire().to_owned()])
                }
                NewEvent::TagAttached { tag, .. } => {
                    ("type, tag", vec!["attached".into(), tag.clone()])
                }
                _ => return Err("the raw path writes completion and tag events only".into()),
            };
            let placeholders: Vec<String> =
                (0..values.len()).map(|i| format!("${}", i + 4)).collect();
            let sql = format!(
                "INSERT INTO {table} (execution_id, namespace, tags, {columns}) \
             VALUES ($1, $2, $3::jsonb, {}) RETURNING xid::text::bigint, id",
                placeholders.join(", ")
            );
            let mut q = sqlx::query(&sql)
                .bind(event.execution_id().to_string())
                .bind(meta.namespace.clone())
                .bind(meta.tags_json());
            for v in &values {
                q = q.bind(v);
            }
            let row = q.fetch_one(&self.pool).await.map_err(err)?;
            let xid: i64 = row.try_get(0).map_err(err)?;
            let id: i64 = row.try_get(1).map_err(err)?;
            Ok(PosKey(xid as u64, id as u64))
        }
        .boxed()
    }

    fn in_transaction<'a>(
        &'a self,
        events: &'a [(NewEvent, EventMeta)],
    ) -> BoxFuture<'a, Result<Vec<StreamCursor>, String>> {
        async move {
            let mut tx = self.pool.begin().await.map_err(err)?;
            let cursors = self
                .publisher
                .append_batch(&mut tx, events)
                .await
                .map_err(err)?;
            tx.commit().await.map_err(err)?;
            Ok(cursors)
        }
        .boxed()
    }

    /// The `ck`s of every event `server` holds now.
    fn cks_on(&self, server: &PostgresServer) -> Result<std::collections::HashSet<u64>, String> {
        let mut held = std::collections::HashSet::new();
        for family in FAMILIES {
            let table = self.publisher.table_name(family);
            let out = blocking(|| {
                server.psql(&format!(
                    "SELECT tags->>'ck' FROM {table} WHERE tags ? 'ck'"
                ))
            })
            .map_err(err)?;
            held.extend(out.lines().filter_map(|l| l.trim().parse::<u64>().ok()));
        }
        Ok(held)
    }

    async fn lagging_copy(&self, rng: &mut StdRng, ctx: &FaultCtx<'_>) -> Result<(), String> {
        let window = ctx
            .rec
            .fault("a lagging copy is promoted and takes over", true, None);
        let original = self.server();
        let copy = {
            let original = original.clone();
            blocking(move || original.standby(false)).map_err(err)?
        };
        // The original goes on; the copy will never have what follows.
        // Half the clients read some of it and leave, to come back once the
        // copy has taken over and moved past what they saw.
        tokio::time::sleep(Duration::from_millis(rng.random_range(200..800))).await;
        ctx.send_half_away(Duration::from_millis(4000));
        blocking(|| copy.promote()).map_err(err)?;
        let held = self.cks_on(&copy)?;
        self.survived
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert_with(Default::default)
            .extend(held);
        self.proxy.retarget(addr(copy.port()));
        blocking(|| original.kill()).map_err(err)?;
        // Whatever is acknowledged from now on lands on the copy.
        ctx.rec.heal(window);
        // What was acknowledged during the fault through connections
        // opened after the move reached the copy: it survives too (a later
        // prune may remove it, which the truth must see as pruned, not as
        // lost with the original).
        let reached = self.cks_on(&copy)?;
        self.survived
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert_with(Default::default)
            .extend(reached);
        *self.server.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(copy);
        // Readers find the copy; then it takes writes: its transaction ids
        // pass those the lost history used, so lost cursors sort inside
        // the windows of readers that started on it.
        tokio::time::sleep(Duration::from_millis(rng.random_range(200..800))).await;
        for _ in 0..rng.random_range(10..40) {
            let draft = ctx.draft(Family::Completion);
            let started = ctx.rec.now();
            let result = self
                .publisher
                .publish(draft.event.clone(), draft.meta.clone())
                .await
                .map(|c| (Some(c), None))
                .map_err(err);
            crate::checker::record_publish(
                ctx.rec,
                self,
                &draft,
                PublishPath::Single,
                started,
                result,
            );
        }
        Ok(())
    }

    fn old_transaction<'a>(
        &'a self,
        hold: Duration,
        ctx: &'a FaultCtx<'a>,
    ) -> BoxFuture<'a, Result<(), String>> {
        async move {
            let window = ctx.rec.fault(
                format!("a transaction with an older id stays open {hold:?}"),
                false,
                None,
            );
            let draft = ctx.draft(Family::Completion);
            let mut tx = self.pool.begin().await.map_err(err)?;
            // Take an id now, write later: its row sorts before everything
            // committed meanwhile.
            sqlx::query("SELECT pg_current_xact_id()")
                .execute(&mut *tx)
                .await
                .map_err(err)?;
            // A publish meanwhile hands out its cursor, as a `POST` would.
            let witness = ctx.draft(Family::Completion);
            let started = ctx.rec.now();
            let handed = self
                .publisher
                .publish(witness.event.clone(), witness.meta.clone())
                .await
                .map_err(err);
            if let Ok(cursor) = &handed {
                ctx.handed.send_modify(|m| {
                    m.entry(HANDED_BY_FAULT)
                        .or_insert((witness.ck, cursor.clone()));
                });
            }
            let result = handed.map(|c| (Some(c), None));
            crate::checker::record_publish(
                ctx.rec,
                self,
                &witness,
                PublishPath::Single,
                started,
                result,
            );
            tokio::time::sleep(hold).await;
            let cursors = self
                .publisher
                .append_batch(&mut tx, &[(draft.event.clone(), draft.meta.clone())])
                .await;
            let started = ctx.rec.now();
            let result = match cursors {
                Ok(c) => tx
                    .commit()
                    .await
                    .map(|()| (c.into_iter().next(), None))
                    .map_err(err),
                Err(e) => Err(err(e)),
            };
            crate::checker::record_publish(
                ctx.rec,
                self,
                &draft,
                PublishPath::InTransaction,
                started,
                result,
            );
            ctx.rec.heal(window);
            Ok(())
        }
        .boxed()
    }

    async fn prune_rows(&self, rng: &mut StdRng, ctx: &FaultCtx<'_>) -> Result<(), String> {
        let family = FAMILIES[rng.random_range(0..FAMILIES.len())];
        let cursors: Vec<StreamCursor> = ctx
            .rec
            .lock()
            .published
            .values()
            .filter(|p| p.family == family)
            .filter_map(|p| p.cursor.clone())
            .collect();
        let Some(cut) = cursors.get(cursors.len() / 2) else {
            return Ok(());
        };
        let removed = self
            .publisher
            .prune_before(family, cut)
            .await
            .map_err(err)?;
        ctx.rec
            .note(format!("pruned {removed} {} rows", family.as_str()));
        Ok(())
    }

    /// Time-range pruning at `level` while a writer that wrote into a due
    /// range commits during the prune's lock wait.
    fn prune_partitions<'a>(
        &'a self,
        level: &'a str,
        ctx: &'a FaultCtx<'a>,
    ) -> BoxFuture<'a, Result<(), String>> {
        async move {
        if !self.partitioned {
            return Ok(());
        }
        let window = ctx.rec.fault(format!("time-range pruning at {level} under a writer"), false, None);
        let family = Family::Completion;
        let draft = ctx.draft(family);
        let mut writer = self.pool.begin().await.map_err(err)?;
        let cursors = self
            .publisher
            .append_batch(&mut writer, &[(draft.event.clone(), draft.meta.clone())])
            .await
            .map_err(err)?;
        // Let the writer's range end, so it is due.
        tokio::time::sleep(RANGE + Duration::from_millis(1100)).await;
        let schema = self.schema().to_owned();
        let pool = self.pool.clone();
        let level = level.to_owned();
        let pruner = tokio::spawn(async move {
            let mut conn = pool.acquire().await.map_err(err)?;
            sqlx::query(&format!(
                "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL {level}"
            ))
            .execute(&mut *conn)
            .await
            .map_err(err)?;
            let result = sqlx::query_scalar::<_, i64>(&format!(
                "SELECT {schema}.prune_partitions_older_than($1, $2, false)::bigint"
            ))
            .bind(family.as_str())
            .bind(100i64)
            .fetch_one(&mut *conn)
            .await
            .map_err(err);
            let _ = sqlx::query("SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL READ COMMITTED")
                .execute(&mut *conn)
                .await;
            result
        });
        // Commit once the prune waits for its lock (or soon, if it never does).
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%prune_partitions_older_than%'",
            )
            .fetch_one(&self.pool)
            .await
            .map_err(err)?;
            if waiting > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let started = ctx.rec.now();
        let result = writer
            .commit()
            .await
            .map(|()| (cursors.into_iter().next(), None))
            .map_err(err);
        crate::checker::record_publish(ctx.rec, self, &draft, PublishPath::InTransaction, started, result);
        let pruned = pruner.await.map_err(err)?;
        ctx.rec.note(format!("time-range prune at {}: {pruned:?}", self.schema()));
        ctx.rec.heal(window);
        Ok(())
        }
        .boxed()
    }

    fn read_state(&self) -> BoxFuture<'_, Result<StoreState, String>> {
        async move {
            let mut state = StoreState::default();
            for family in FAMILIES {
                let table = self.publisher.table_name(family);
                let rows = sqlx::query(&format!(
                    "SELECT (tags->>'ck')::bigint, xid::text::bigint, id FROM {table} \
                     WHERE tags ? 'ck' ORDER BY xid, id"
                ))
                .fetch_all(&self.pool)
                .await
                .map_err(err)?;
                let mut stored = Vec::new();
                for row in rows {
                    let ck: i64 = row.try_get(0).map_err(err)?;
                    let xid: i64 = row.try_get(1).map_err(err)?;
                    let id: i64 = row.try_get(2).map_err(err)?;
                    stored.push(StoredEvent {
                        ck: ck as u64,
                        partition: 0,
                        pos: PosKey(xid as u64, id as u64),
                    });
                }
                state.stored.insert(family, stored);
                let horizon = sqlx::query(&format!(
                    "SELECT xid::text::bigint, id FROM {}.horizons WHERE family = $1",
                    self.schema()
                ))
                .bind(family.as_str())
                .fetch_optional(&self.pool)
                .await
                .map_err(err)?;
                if let Some(row) = horizon {
                    let xid: i64 = row.try_get(0).map_err(err)?;
                    let id: i64 = row.try_get(1).map_err(err)?;
                    state
                        .pruned_through
                        .insert((family, 0), PosKey(xid as u64, id as u64));
                }
            }
            state.survived = self
                .survived
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            Ok(state)
        }
        .boxed()
    }
}

#[async_trait]
impl World for PostgresWorld {
    fn kind(&self) -> WorldKind {
        WorldKind::Postgres
    }

    fn partitions(&self) -> u16 {
        1
    }

    fn exact(&self) -> bool {
        false
    }

    fn publish_paths(&self) -> Vec<PublishPath> {
        vec![
            PublishPath::Single,
            PublishPath::Batch,
            PublishPath::InTransaction,
            PublishPath::Raw,
            PublishPath::ShortLived,
        ]
    }

    fn delivery_paths(&self) -> Vec<DeliveryPath> {
        vec![
            DeliveryPath::Typed,
            DeliveryPath::Delivery,
            DeliveryPath::Store,
            DeliveryPath::Sse,
        ]
    }

    fn faults(&self) -> Vec<Fault> {
        vec![
            Fault::KillRestart,
            Fault::OldTransaction(800),
            Fault::PromoteLaggingCopy,
            Fault::Prune,
            Fault::PrunePartitions("READ COMMITTED"),
            Fault::PrunePartitions("REPEATABLE READ"),
            Fault::PrunePartitions("SERIALIZABLE"),
            Fault::GatewayRestart,
        ]
    }

    async fn reader(&self) -> Result<Arc<dyn StreamBackend>, EngineError> {
        Ok(Arc::new(connect(&self.url, &self.config).await?))
    }

    fn store(&self) -> Arc<dyn CursorStore> {
        self.publisher.clone()
    }

    async fn publish(
        &self,
        path: PublishPath,
        events: Vec<(NewEvent, EventMeta)>,
    ) -> Vec<PublishResult> {
        let n = events.len();
        let all = |r: Result<Vec<StreamCursor>, String>| -> Vec<PublishResult> {
            match r {
                Ok(c) => c.into_iter().map(|c| Ok((Some(c), None))).collect(),
                Err(e) => (0..n).map(|_| Err(e.clone())).collect(),
            }
        };
        match path {
            PublishPath::Raw => {
                let mut out = Vec::new();
                for (e, m) in &events {
                    out.push(self.raw_insert(e, m).await.map(|pos| (None, Some(pos))));
                }
                out
            }
            PublishPath::InTransaction => all(self.in_transaction(&events).await),
            PublishPath::Batch => publish_all(self.publisher.as_ref(), events).await,
            PublishPath::ShortLived => {
                let once = match connect(&self.url, &self.config).await {
                    Ok(b) => b,
                    Err(e) => return all(Err(err(e))),
                };
                let r = once.publish_batch(events).await.map_err(err);
                drop(once);
                all(r)
            }
            PublishPath::Single => publish_each(self.publisher.as_ref(), events).await,
        }
    }

    async fn inject(
        &self,
        fault: &Fault,
        rng: &mut StdRng,
        ctx: &FaultCtx<'_>,
    ) -> Result<(), String> {
        match fault {
            Fault::KillRestart => {
                let window = ctx
                    .rec
                    .fault("kill -9 of the server, then a restart", false, None);
                let server = self.server();
                blocking(|| server.kill()).map_err(err)?;
                tokio::time::sleep(Duration::from_millis(rng.random_range(50..600))).await;
                blocking(|| server.restart()).map_err(err)?;
                ctx.rec.heal(window);
                Ok(())
            }
            Fault::OldTransaction(ms) => {
                self.old_transaction(Duration::from_millis(rng.random_range(*ms / 4..=*ms)), ctx)
                    .await
            }
            Fault::PromoteLaggingCopy => self.lagging_copy(rng, ctx).await,
            Fault::Prune => self.prune_rows(rng, ctx).await,
            Fault::PrunePartitions(level) => self.prune_partitions(level, ctx).await,
            other => Err(format!("the postgres world cannot inject {other:?}")),
        }
    }

    fn position(&self, family: Family, cursor: &StreamCursor) -> Option<PosKey> {
        match decode_postgres_any(cursor, family).ok()? {
            CursorStart::After(PostgresCursor::Plain(p)) => Some(PosKey(p.xid, p.id)),
            CursorStart::After(PostgresCursor::History(p)) => Some(PosKey(p.xid, p.id)),
            _ => None,
        }
    }

    async fn state(&self, _rec: &Recorder) -> Result<StoreState, String> {
        self.read_state().await
    }
}
