//! [`PostgresGroupStore`]: consumer groups' members, leases and unit
//! cursors in the `groups`, `group_members` and `group_units` tables, and
//! [`PostgresBackend::commit_in`], the fenced commit inside the caller's
//! transaction.
//!
//! Invariants (see migration 0010):
//! - a heartbeat writes only its `group_members` row; a unit's lease is
//!   live while its owner's row is (judged on the server's clock), so a
//!   consumer's transaction that locked a unit row never conflicts with a
//!   heartbeat;
//! - `group_units` rows change only when a unit changes hands (acquire,
//!   release, leave: the epoch moves on acquire by a new owner) or when
//!   `group_commit` moves the cursor under the right owner, epoch and
//!   previous cursor — and a refused commit raises, aborting the caller's
//!   transaction;
//! - no session-scoped advisory lock is taken: a killed host's session can
//!   hold nothing that outlives its heartbeat;
//! - the member driver never waits on a unit row a consumer's transaction
//!   holds (`FOR UPDATE NOWAIT`: the unit is "not free yet"), so a
//!   long-running transaction cannot stall another member's heartbeats.

use std::time::Duration;

use async_trait::async_trait;
use ff_core::engine_error::EngineError;
use ff_core::group::{
    filter_text, validate_group_name, Commit, GroupSpec, GroupStore, GroupView, GroupWake,
    MemberInfo, UnitLease, UnitState,
};
use ff_core::stream_events::Family;
use ff_core::stream_subscribe::StreamCursor;
use sqlx::{Connection, PgConnection};

use crate::error::{map_sqlx, BACKEND};
use crate::group_wake::watch_group;
use crate::pool::with_conn;
use crate::PostgresBackend;

/// SQLSTATE `group_commit` raises when a commit is fenced.
const FENCED: &str = "FFG01";
/// SQLSTATE of `FOR UPDATE NOWAIT` on a locked row.
const LOCK_NOT_AVAILABLE: &str = "55P03";

fn sql_state(e: &sqlx::Error) -> Option<String> {
    e.as_database_error()
        .and_then(|db| db.code().map(|c| c.into_owned()))
}

/// Consumer groups kept in the backend's schema. Cheap to clone.
#[derive(Clone, Debug)]
pub struct PostgresGroupStore {
    backend: PostgresBackend,
}

impl PostgresGroupStore {
    /// The group store of `backend`'s schema.
    pub fn new(backend: PostgresBackend) -> Self {
        Self { backend }
    }

    fn table(&self, name: &str) -> String {
        format!("{}.{name}", self.backend.inner.names.schema())
    }

    fn channel(&self) -> String {
        group_channel(self.backend.inner.names.schema())
    }
}

/// The notification channel of every group in `schema`; the payload is
/// the group's name.
pub(crate) fn group_channel(schema: &str) -> String {
    format!("{schema}.ff_groups")
}

/// Map a failure of a statement that commits a unit's cursor: the
/// fencing refusal becomes `Fenced` for `lease`, a serialisation failure
/// (the unit changed hands while a REPEATABLE READ or SERIALIZABLE
/// transaction ran) too.
fn map_commit(e: sqlx::Error, lease: &UnitLease) -> EngineError {
    match sql_state(&e).as_deref() {
        Some(FENCED) => lease.fenced(
            e.as_database_error()
                .map(|db| db.message())
                .unwrap_or("refused"),
        ),
        Some("40001") => lease.fenced("the unit changed hands while the transaction ran"),
        _ => map_sqlx(e),
    }
}

fn unreadable(what: &str, e: impl std::fmt::Display) -> EngineError {
    EngineError::Backend {
        backend: BACKEND,
        detail: format!("stored {what} is unreadable: {e}"),
    }
}

impl PostgresBackend {
    /// The store of this backend's consumer groups.
    pub fn groups(&self) -> PostgresGroupStore {
        PostgresGroupStore::new(self.clone())
    }

    /// Commit `commit`'s unit position inside the caller's transaction on
    /// `conn`: the unit's row is locked, its owner, epoch and previous
    /// cursor checked, and the cursor written — so the consumer's effects
    /// and its position commit together or not at all. A fenced commit
    /// (the unit changed hands) is `Fenced` and aborts the transaction,
    /// so its effects roll back even if the caller went on to commit.
    ///
    /// ```no_run
    /// # async fn demo(backend: &ff_backend_postgres::PostgresBackend, pool: &ff_backend_postgres::sqlx::PgPool, commit: ff_core::group::Commit) -> Result<(), Box<dyn std::error::Error>> {
    /// let mut tx = pool.begin().await?;
    /// // ... apply the event's effects in `tx` ...
    /// backend.commit_in(&mut tx, &commit).await?;
    /// tx.commit().await?;
    /// # Ok(()) }
    /// ```
    ///
    /// Should the transaction roll back after this succeeded, the member's
    /// next commit of the unit is fenced (the stored cursor is not the one
    /// it believes committed) and the unit's events are delivered again
    /// from the stored cursor.
    pub async fn commit_in(
        &self,
        conn: &mut PgConnection,
        commit: &Commit,
    ) -> Result<(), EngineError> {
        let sql = format!(
            "SELECT {}.group_commit($1, $2, $3, $4, $5, $6)",
            self.inner.names.schema()
        );
        commit
            .commit_with(|lease, prev, next| {
                let lease = lease.clone();
                let (prev, next) = (prev.to_string(), next.to_string());
                async move {
                    sqlx::query(&sql)
                        .bind(&lease.group)
                        .bind(lease.unit as i32)
                        .bind(&lease.owner)
                        .bind(lease.epoch as i64)
                        .bind(prev)
                        .bind(next)
                        .execute(conn)
                        .await
                        .map_err(|e| map_commit(e, &lease))?;
                    Ok(())
                }
            })
            .await
    }
}

impl PostgresGroupStore {
    async fn view_on(
        &self,
        conn: &mut PgConnection,
        group: &str,
    ) -> Result<GroupView, EngineError> {
        let def: Option<(String, String, i32)> = sqlx::query_as(&format!(
            "SELECT family, filter, units FROM {} WHERE name = $1",
            self.table("groups")
        ))
        .bind(group)
        .fetch_optional(&mut *conn)
        .await
        .map_err(map_sqlx)?;
        let Some((family, filter, units)) = def else {
            return Err(EngineError::validation(format!(
                "consumer group {group:?} does not exist; a member creates it when it joins"
            )));
        };
        let family: Family = family.parse().map_err(|e| unreadable("group family", e))?;
        let members: Vec<(String, i64)> = sqlx::query_as(&format!(
            "SELECT session, (extract(epoch FROM expires_at - clock_timestamp()) * 1000)::bigint \
             FROM {} WHERE group_name = $1 AND expires_at > clock_timestamp() ORDER BY session",
            self.table("group_members")
        ))
        .bind(group)
        .fetch_all(&mut *conn)
        .await
        .map_err(map_sqlx)?;
        let rows: Vec<(i32, Option<String>, i64, String, bool)> = sqlx::query_as(&format!(
            "SELECT u.unit, u.owner, u.epoch, u.cursor, EXISTS (SELECT 1 FROM {} m \
                 WHERE m.group_name = u.group_name AND m.session = u.owner \
                 AND m.expires_at > clock_timestamp()) \
             FROM {} u WHERE u.group_name = $1 ORDER BY u.unit",
            self.table("group_members"),
            self.table("group_units")
        ))
        .bind(group)
        .fetch_all(&mut *conn)
        .await
        .map_err(map_sqlx)?;
        let unit_states = rows
            .into_iter()
            .map(|(unit, owner, epoch, cursor, live)| {
                let cursor: StreamCursor =
                    cursor.parse().map_err(|e| unreadable("unit cursor", e))?;
                Ok(UnitState::new(
                    unit as u32,
                    owner,
                    live,
                    epoch as u64,
                    cursor,
                ))
            })
            .collect::<Result<Vec<_>, EngineError>>()?;
        Ok(GroupView::new(
            family,
            filter,
            units as u32,
            members
                .into_iter()
                .map(|(s, ms)| MemberInfo::new(s, ms))
                .collect(),
            unit_states,
        ))
    }

    async fn notify(&self, conn: &mut PgConnection, group: &str) -> Result<(), EngineError> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(self.channel())
            .bind(group)
            .execute(conn)
            .await
            .map_err(map_sqlx)?;
        Ok(())
    }
}

#[async_trait]
impl GroupStore for PostgresGroupStore {
    fn backend_name(&self) -> &'static str {
        BACKEND
    }

    async fn create_or_check(
        &self,
        spec: &GroupSpec,
        start: &StreamCursor,
    ) -> Result<(), EngineError> {
        validate_group_name(&spec.name)?;
        let pool = &self.backend.inner.pool;
        with_conn!(pool, |conn| {
            let mut tx = conn.begin().await.map_err(map_sqlx)?;
            let created: Option<i32> = sqlx::query_scalar(&format!(
                "INSERT INTO {} (name, family, filter, units) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (name) DO NOTHING RETURNING units",
                self.table("groups")
            ))
            .bind(&spec.name)
            .bind(spec.family.as_str())
            .bind(filter_text(&spec.filter))
            .bind(spec.units as i32)
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_sqlx)?;
            if created.is_some() {
                sqlx::query(&format!(
                    "INSERT INTO {} (group_name, unit, cursor) \
                     SELECT $1, u, $2 FROM generate_series(0, $3 - 1) AS u",
                    self.table("group_units")
                ))
                .bind(&spec.name)
                .bind(start.to_string())
                .bind(spec.units as i32)
                .execute(&mut *tx)
                .await
                .map_err(map_sqlx)?;
                tx.commit().await.map_err(map_sqlx)?;
                return Ok(());
            }
            let (family, filter, units): (String, String, i32) = sqlx::query_as(&format!(
                "SELECT family, filter, units FROM {} WHERE name = $1",
                self.table("groups")
            ))
            .bind(&spec.name)
            .fetch_one(&mut *tx)
            .await
            .map_err(map_sqlx)?;
            tx.commit().await.map_err(map_sqlx)?;
            let family: Family = family.parse().map_err(|e| unreadable("group family", e))?;
            spec.check_matches(family, &filter, units as u32)
        })
    }

    async fn heartbeat(
        &self,
        group: &str,
        session: &str,
        ttl: Duration,
    ) -> Result<GroupView, EngineError> {
        let pool = &self.backend.inner.pool;
        let ttl_ms = ttl.as_millis() as i64;
        with_conn!(pool, |conn| {
            let renewed = sqlx::query(&format!(
                "UPDATE {} SET expires_at = clock_timestamp() + $3 * interval '1 millisecond' \
                 WHERE group_name = $1 AND session = $2 AND expires_at > clock_timestamp()",
                self.table("group_members")
            ))
            .bind(group)
            .bind(session)
            .bind(ttl_ms)
            .execute(&mut *conn)
            .await
            .map_err(map_sqlx)?
            .rows_affected();
            if renewed == 0 {
                // Only a member of an existing group is recorded.
                self.view_on(conn, group).await?;
                sqlx::query(&format!(
                    "INSERT INTO {t} (group_name, session, expires_at) \
                     VALUES ($1, $2, clock_timestamp() + $3 * interval '1 millisecond') \
                     ON CONFLICT (group_name, session) DO UPDATE SET expires_at = EXCLUDED.expires_at",
                    t = self.table("group_members")
                ))
                .bind(group)
                .bind(session)
                .bind(ttl_ms)
                .execute(&mut *conn)
                .await
                .map_err(map_sqlx)?;
                sqlx::query(&format!(
                    "DELETE FROM {} WHERE group_name = $1 \
                     AND expires_at < clock_timestamp() - interval '1 hour'",
                    self.table("group_members")
                ))
                .bind(group)
                .execute(&mut *conn)
                .await
                .map_err(map_sqlx)?;
                self.notify(conn, group).await?;
            }
            self.view_on(conn, group).await
        })
    }

    async fn view(&self, group: &str) -> Result<GroupView, EngineError> {
        let pool = &self.backend.inner.pool;
        with_conn!(pool, |conn| self.view_on(conn, group).await)
    }

    async fn acquire(
        &self,
        group: &str,
        unit: u32,
        session: &str,
    ) -> Result<Option<UnitLease>, EngineError> {
        let pool = &self.backend.inner.pool;
        with_conn!(pool, |conn| {
            let mut tx = conn.begin().await.map_err(map_sqlx)?;
            let row: Result<Option<(Option<String>, i64, String, bool)>, _> =
                sqlx::query_as(&format!(
                    "SELECT u.owner, u.epoch, u.cursor, EXISTS (SELECT 1 FROM {} m \
                     WHERE m.group_name = u.group_name AND m.session = u.owner \
                     AND m.expires_at > clock_timestamp()) \
                 FROM {} u WHERE u.group_name = $1 AND u.unit = $2 FOR UPDATE NOWAIT",
                    self.table("group_members"),
                    self.table("group_units")
                ))
                .bind(group)
                .bind(unit as i32)
                .fetch_optional(&mut *tx)
                .await;
            // A consumer transaction holds the row (its commit_in): not now.
            // Waiting would stall this member's heartbeats behind it.
            let row = match row {
                Err(e) if sql_state(&e).as_deref() == Some(LOCK_NOT_AVAILABLE) => return Ok(None),
                other => other.map_err(map_sqlx)?,
            };
            let Some((owner, epoch, cursor, owner_live)) = row else {
                return Err(EngineError::validation(format!(
                    "group {group:?} has no unit {unit}"
                )));
            };
            let cursor: StreamCursor = cursor.parse().map_err(|e| unreadable("unit cursor", e))?;
            let mine = owner.as_deref() == Some(session);
            if owner.is_some() && !mine && owner_live {
                return Ok(None);
            }
            let mut epoch = epoch as u64;
            if !mine {
                epoch += 1;
                sqlx::query(&format!(
                    "UPDATE {} SET owner = $3, epoch = $4 WHERE group_name = $1 AND unit = $2",
                    self.table("group_units")
                ))
                .bind(group)
                .bind(unit as i32)
                .bind(session)
                .bind(epoch as i64)
                .execute(&mut *tx)
                .await
                .map_err(map_sqlx)?;
                self.notify(&mut tx, group).await?;
            }
            tx.commit().await.map_err(map_sqlx)?;
            Ok(Some(UnitLease::new(group, unit, session, epoch, cursor)))
        })
    }

    async fn release(&self, lease: &UnitLease) -> Result<(), EngineError> {
        let pool = &self.backend.inner.pool;
        with_conn!(pool, |conn| {
            let released = sqlx::query(&format!(
                "UPDATE {} SET owner = NULL \
                 WHERE group_name = $1 AND unit = $2 AND owner = $3 AND epoch = $4",
                self.table("group_units")
            ))
            .bind(&lease.group)
            .bind(lease.unit as i32)
            .bind(&lease.owner)
            .bind(lease.epoch as i64)
            .execute(&mut *conn)
            .await
            .map_err(map_sqlx)?
            .rows_affected();
            if released > 0 {
                self.notify(conn, &lease.group).await?;
            }
            Ok(())
        })
    }

    async fn leave(&self, group: &str, session: &str) -> Result<(), EngineError> {
        let pool = &self.backend.inner.pool;
        with_conn!(pool, |conn| {
            sqlx::query(&format!(
                "DELETE FROM {} WHERE group_name = $1 AND session = $2",
                self.table("group_members")
            ))
            .bind(group)
            .bind(session)
            .execute(&mut *conn)
            .await
            .map_err(map_sqlx)?;
            sqlx::query(&format!(
                "UPDATE {} SET owner = NULL WHERE group_name = $1 AND owner = $2",
                self.table("group_units")
            ))
            .bind(group)
            .bind(session)
            .execute(&mut *conn)
            .await
            .map_err(map_sqlx)?;
            self.notify(conn, group).await
        })
    }

    async fn commit(
        &self,
        lease: &UnitLease,
        prev: &StreamCursor,
        next: &StreamCursor,
    ) -> Result<(), EngineError> {
        let pool = &self.backend.inner.pool;
        with_conn!(pool, |conn| {
            sqlx::query(&format!(
                "SELECT {}.group_commit($1, $2, $3, $4, $5, $6)",
                self.backend.inner.names.schema()
            ))
            .bind(&lease.group)
            .bind(lease.unit as i32)
            .bind(&lease.owner)
            .bind(lease.epoch as i64)
            .bind(prev.to_string())
            .bind(next.to_string())
            .execute(&mut *conn)
            .await
            .map_err(|e| map_commit(e, lease))?;
            Ok(())
        })
    }

    async fn watch(&self, group: &str) -> Result<GroupWake, EngineError> {
        watch_group(
            self.backend.inner.sub_options.clone(),
            self.channel(),
            group.to_owned(),
            self.backend.inner.config.connect_timeout,
        )
        .await
    }
}
