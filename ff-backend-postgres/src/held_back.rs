//! How far delivery is held back by open transactions.
//!
//! Subscribers deliver only rows of transactions older than the oldest
//! transaction still open anywhere in the cluster (one that has written,
//! and so holds a transaction id). While such a transaction stays open,
//! rows committed after it started wait, however long it runs.
//! [`PostgresBackend::held_back`] measures that; subscriptions also log a
//! warning once they have been held back longer than
//! [`PostgresConfig::held_back_warning`](crate::PostgresConfig::held_back_warning).

use std::time::Duration;

use ff_core::engine_error::EngineError;
use ff_core::stream_events::Family;
use sqlx::Row;

use crate::error::map_sqlx;
use crate::pool::with_conn;
use crate::PostgresBackend;

/// What holds back a family's delivery right now.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HeldBack {
    /// The family measured.
    pub family: Family,
    /// Committed events not yet deliverable: newer than the oldest open
    /// transaction.
    pub events: u64,
    /// The oldest open transaction's id (delivery stops before it).
    pub oldest_open_xid: u64,
    /// How long the oldest open transaction that holds an id has run, when
    /// visible to this role (`pg_stat_activity`).
    pub oldest_open_age: Option<Duration>,
    /// Its backend pid, when visible.
    pub holder_pid: Option<i32>,
    /// Its `application_name`, when visible.
    pub holder_application_name: Option<String>,
}

impl PostgresBackend {
    /// Measure how far `family`'s delivery is held back by open
    /// transactions. Counting the waiting events scans them, so this costs
    /// in proportion to how many are held back.
    pub async fn held_back(&self, family: Family) -> Result<HeldBack, EngineError> {
        let sql = format!(
            "WITH f AS MATERIALIZED (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin) \
             SELECT f.xmin::text::int8, \
                    (SELECT count(*) FROM {table} t WHERE t.xid >= f.xmin), \
                    a.pid, a.application_name, \
                    (extract(epoch FROM (clock_timestamp() - a.xact_start)) * 1000)::int8 \
             FROM f LEFT JOIN LATERAL ( \
                 SELECT pid, application_name, xact_start FROM pg_stat_activity \
                 WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid() \
                 ORDER BY age(backend_xid) DESC LIMIT 1 \
             ) a ON true",
            table = self.inner.names.table(family)
        );
        let row = with_conn!(self.inner.pool, |conn| {
            sqlx::query(&sql).fetch_one(conn).await.map_err(map_sqlx)
        })?;
        let xmin: i64 = row.try_get(0).map_err(map_sqlx)?;
        let events: i64 = row.try_get(1).map_err(map_sqlx)?;
        let age_ms: Option<i64> = row.try_get(4).map_err(map_sqlx)?;
        Ok(HeldBack {
            family,
            events: events.max(0) as u64,
            oldest_open_xid: xmin.max(0) as u64,
            oldest_open_age: age_ms.map(|ms| Duration::from_millis(ms.max(0) as u64)),
            holder_pid: row.try_get(2).map_err(map_sqlx)?,
            holder_application_name: row.try_get(3).map_err(map_sqlx)?,
        })
    }
}
