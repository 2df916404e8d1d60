//! Retention: pruning a family's oldest events and recording the horizon.
//!
//! Both operations call the schema's SQL functions (`<schema>.prune_before`,
//! `<schema>.prune_older_than`), which a cron job or operator can also call
//! directly. They delete a prefix of the stream — only rows of
//! transactions older than every open one — and record the newest deleted
//! position as the family's horizon in the same transaction. A
//! subscription positioned behind the horizon then fails with
//! `CursorExpired` (its `oldest` resumes at the oldest retained event).

use std::time::Duration;

use ff_core::engine_error::EngineError;
use ff_core::stream_events::Family;
use ff_core::stream_subscribe::{CursorStart, StreamCursor};

use crate::error::map_sqlx;
use crate::pool::with_conn;
use crate::position;
use crate::PostgresBackend;

impl PostgresBackend {
    /// Delete every event of `family` strictly before the event at
    /// `cursor` (which stays, as the oldest retained); returns how many
    /// were deleted. Events of transactions older than some still-open
    /// transaction are kept until a later prune.
    pub async fn prune_before(
        &self,
        family: Family,
        cursor: &StreamCursor,
    ) -> Result<u64, EngineError> {
        let pos = match position::decode(cursor, family)? {
            CursorStart::After(given) => given.pos,
            _ => {
                return Err(EngineError::validation(
                    "prune_before needs an event's cursor, not the tail or beginning cursor",
                ))
            }
        };
        let sql = format!(
            "SELECT {}.prune_before($1, $2::text::xid8, $3)",
            self.inner.names.schema()
        );
        let deleted: i64 = with_conn!(self.inner.pool, |conn| {
            sqlx::query_scalar(&sql)
                .bind(family.as_str())
                .bind(pos.xid_text())
                .bind(pos.id)
                .fetch_one(conn)
                .await
                .map_err(map_sqlx)
        })?;
        Ok(deleted.max(0) as u64)
    }

    /// Delete the events of `family` before the first one (in stream
    /// order) recorded less than `age` ago; returns how many were deleted.
    pub async fn prune_older_than(
        &self,
        family: Family,
        age: Duration,
    ) -> Result<u64, EngineError> {
        let age_ms = i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
        let sql = format!(
            "SELECT {}.prune_older_than($1, $2)",
            self.inner.names.schema()
        );
        let deleted: i64 = with_conn!(self.inner.pool, |conn| {
            sqlx::query_scalar(&sql)
                .bind(family.as_str())
                .bind(age_ms)
                .fetch_one(conn)
                .await
                .map_err(map_sqlx)
        })?;
        Ok(deleted.max(0) as u64)
    }
}
