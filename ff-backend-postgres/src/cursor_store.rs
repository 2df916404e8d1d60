//! [`CursorStore`] on Postgres: consumers' positions by name, optionally
//! written inside the consumer's own transaction.
//!
//! Names are per database role: each row records the role that wrote it
//! (`owner`, default `current_user`), and row-level security keeps roles
//! to their own rows, so a consumer role needs no rights on anyone
//! else's positions.

use async_trait::async_trait;
use ff_core::backend::{validate_consumer_name, CursorStore};
use ff_core::engine_error::EngineError;
use ff_core::stream_subscribe::StreamCursor;
use sqlx::PgConnection;

use crate::error::{map_sqlx, BACKEND};
use crate::pool::with_conn;
use crate::PostgresBackend;

impl PostgresBackend {
    fn store_sql(&self) -> String {
        format!(
            "INSERT INTO {} AS c (name, cursor) VALUES ($1, $2) \
             ON CONFLICT (owner, name) DO UPDATE SET cursor = EXCLUDED.cursor, \
             updated_at = (extract(epoch FROM clock_timestamp()) * 1000)::bigint",
            self.inner.names.cursors()
        )
    }

    /// Store `cursor` for consumer `name` inside the caller's transaction
    /// on `conn`, so the consumer's effects and its position commit
    /// together (effectively exactly-once processing).
    ///
    /// ```no_run
    /// # async fn demo(backend: &ff_backend_postgres::PostgresBackend, pool: &ff_backend_postgres::sqlx::PgPool, cursor: ff_core::stream_subscribe::StreamCursor) -> Result<(), Box<dyn std::error::Error>> {
    /// let mut tx = pool.begin().await?;
    /// // ... apply the event's effects in `tx` ...
    /// backend.store_cursor_in(&mut tx, "billing-projector", &cursor).await?;
    /// tx.commit().await?;
    /// # Ok(()) }
    /// ```
    pub async fn store_cursor_in(
        &self,
        conn: &mut PgConnection,
        name: &str,
        cursor: &StreamCursor,
    ) -> Result<(), EngineError> {
        validate_consumer_name(name)?;
        sqlx::query(&self.store_sql())
            .bind(name)
            .bind(cursor.to_string())
            .execute(conn)
            .await
            .map_err(map_sqlx)?;
        Ok(())
    }

    /// Load consumer `name`'s cursor on `conn` (e.g. inside the
    /// transaction that will also store the next one).
    pub async fn load_cursor_in(
        &self,
        conn: &mut PgConnection,
        name: &str,
    ) -> Result<Option<StreamCursor>, EngineError> {
        validate_consumer_name(name)?;
        let text: Option<String> = sqlx::query_scalar(&format!(
            "SELECT cursor FROM {} WHERE owner = current_user AND name = $1",
            self.inner.names.cursors()
        ))
        .bind(name)
        .fetch_optional(conn)
        .await
        .map_err(map_sqlx)?;
        text.map(|t| {
            t.parse().map_err(|e| EngineError::Backend {
                backend: BACKEND,
                detail: format!("stored cursor of consumer {name:?} is unreadable: {e}"),
            })
        })
        .transpose()
    }
}

#[async_trait]
impl CursorStore for PostgresBackend {
    async fn load(&self, name: &str) -> Result<Option<StreamCursor>, EngineError> {
        with_conn!(self.inner.pool, |conn| self
            .load_cursor_in(conn, name)
            .await)
    }

    async fn store(&self, name: &str, cursor: &StreamCursor) -> Result<(), EngineError> {
        with_conn!(self.inner.pool, |conn| self
            .store_cursor_in(conn, name, cursor)
            .await)
    }
}
