//! Retention by whole time ranges: outboxes partitioned by `at`.
//!
//! For outboxes that take millions of events a day, deleting old rows
//! costs as much as writing them. A family converted with
//! [`PostgresBackend::partition_by_time`] is partitioned by `at` (the SQL
//! lives in migrations `0007`, `0008` and `0009`), and
//! [`PostgresBackend::prune_partitions_older_than`] drops or detaches
//! whole ranges, recording the horizon exactly as row pruning does, so an
//! expired cursor is still `CursorExpired`, never a gap. Ranges are cut by
//! `at` but streams are ordered by `(xid, id)`: a range is removed only
//! when every transaction that wrote into it is older than every open
//! one, and rows of younger ranges that sort behind the new horizon are
//! deleted with it, so what stays is exactly the stream after the horizon.
//!
//! Both operations drop tables, so they run at READ COMMITTED whatever the
//! session's default isolation: at a stricter level the snapshot would
//! predate the lock wait, and a row committed meanwhile would be dropped
//! unseen. (The SQL functions refuse stricter levels themselves.)
//!
//! A prune never stalls a family behind one open transaction: it decides
//! from the catalog alone whether any range is due (or missing ahead), and
//! only then asks for the ACCESS EXCLUSIVE lock, waiting at most
//! [`PostgresConfig::prune_lock_timeout`]; on timeout it removes nothing
//! and the next run retries. Rows that landed in the default partition are
//! removed by age as rows, without that lock.
//!
//! [`PostgresConfig::prune_lock_timeout`]: crate::PostgresConfig::prune_lock_timeout

use std::time::Duration;

use ff_core::engine_error::EngineError;
use ff_core::stream_events::Family;

use sqlx::Connection;

use crate::error::map_sqlx;
use crate::pool::with_conn;
use crate::PostgresBackend;

/// Begins the transaction of an operation that drops tables: its
/// statements must each see what committed before their locks.
const READ_COMMITTED: &str = "BEGIN ISOLATION LEVEL READ COMMITTED";

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl PostgresBackend {
    /// Convert every family's outbox, which must be empty (else nothing is
    /// converted), to one
    /// partitioned by `at` in ranges of `interval` (e.g. a day), with
    /// ranges from the previous interval to seven intervals ahead (a week
    /// when the interval is a day). Families
    /// already converted are left as they are. Grant roles their rights
    /// afterwards (`ff migrate --partitioned --grant-…` does).
    pub async fn partition_by_time(&self, interval: Duration) -> Result<(), EngineError> {
        if interval < Duration::from_secs(1) {
            return Err(EngineError::validation(
                "the partition interval must be at least one second",
            ));
        }
        let sql = format!(
            "SELECT {}.partition_by_time($1, $2)",
            self.inner.names.schema()
        );
        // All families or none.
        with_conn!(
            self.inner.pool,
            untimed | conn | {
                let mut tx = conn.begin_with(READ_COMMITTED).await.map_err(map_sqlx)?;
                for family in Family::ALL {
                    sqlx::query(&sql)
                        .bind(family.as_str())
                        .bind(millis(interval))
                        .execute(&mut *tx)
                        .await
                        .map_err(map_sqlx)?;
                }
                tx.commit().await.map_err(map_sqlx)
            }
        )
    }

    /// Drop (or, with `detach`, detach and keep as plain tables) the time
    /// ranges of a partitioned `family` that ended more than `age` ago,
    /// recording the retention horizon, and delete rows of those times
    /// that sit in the default partition; also creates the ranges of the
    /// current interval and the seven after it. Returns how many ranges
    /// were removed. Takes the table's exclusive lock only when a range is
    /// due or missing, and waits for it at most
    /// [`prune_lock_timeout`](crate::PostgresConfig::prune_lock_timeout):
    /// when another transaction holds the table longer, nothing is removed
    /// and the call fails with a `Backend` error saying so (run it again
    /// later). Run it regularly (e.g. daily, from `pg_cron` as `SELECT
    /// <schema>.prune_partitions_older_than(family, age_ms, detach,
    /// lock_timeout_ms)`, at READ COMMITTED: the function refuses stricter
    /// isolation levels, and returns -1 when it could not lock in time).
    pub async fn prune_partitions_older_than(
        &self,
        family: Family,
        age: Duration,
        detach: bool,
    ) -> Result<u64, EngineError> {
        let sql = format!(
            "SELECT {}.prune_partitions_older_than($1, $2, $3, $4)",
            self.inner.names.schema()
        );
        let lock_timeout = self.inner.config.prune_lock_timeout;
        let removed: i32 = with_conn!(
            self.inner.pool,
            untimed | conn | {
                let mut tx = conn.begin_with(READ_COMMITTED).await.map_err(map_sqlx)?;
                let removed = sqlx::query_scalar(&sql)
                    .bind(family.as_str())
                    .bind(millis(age))
                    .bind(detach)
                    .bind(millis(lock_timeout).max(1))
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(map_sqlx)?;
                tx.commit().await.map_err(map_sqlx)?;
                Ok(removed)
            }
        )?;
        if removed < 0 {
            return Err(EngineError::Backend {
                backend: "postgres",
                detail: format!(
                    "pruning {} removed nothing: another transaction held its table for longer than the prune lock timeout of {} ms (an open transaction that read the family, pg_dump, or an idle-in-transaction session); run the prune again later",
                    family.as_str(),
                    millis(lock_timeout).max(1)
                ),
            });
        }
        Ok(removed as u64)
    }
}
