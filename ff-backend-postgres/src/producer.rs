//! Producing events: inside the caller's transaction, or on the pool.

use async_trait::async_trait;
use ff_core::backend::{validate_new_event, EventPublisher};
use ff_core::engine_error::EngineError;
use ff_core::stream_events::{EventMeta, NewEvent};
use ff_core::stream_subscribe::StreamCursor;
use sqlx::{Acquire, PgConnection};

use crate::error::map_sqlx;
use crate::publish::{group_by_family, insert_grouped, insert_one};
use crate::PostgresBackend;

impl PostgresBackend {
    /// Append `event` inside the caller's transaction on `conn`: the event
    /// exists if and only if that transaction commits. Returns its cursor,
    /// whose position is the caller's transaction id and the row id.
    ///
    /// Subscribers are woken by the outbox trigger when the transaction
    /// commits. A transaction that will be prepared (two-phase commit)
    /// must run `SET LOCAL ff.defer_notify = 'on'` first, as a `NOTIFY`
    /// makes `PREPARE TRANSACTION` fail; its subscribers then see the
    /// events within [`PostgresConfig::prepared_poll`](crate::PostgresConfig::prepared_poll)
    /// of `COMMIT PREPARED`. Pass a transaction as `&mut tx`. The cursor names the
    /// cluster the backend's own pool reaches (`conn` is expected to reach
    /// the same database).
    ///
    /// ```no_run
    /// # async fn demo(backend: &ff_backend_postgres::PostgresBackend, pool: &ff_backend_postgres::sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
    /// use ff_core::stream_events::{CompletionOutcome, EventMeta, NewEvent};
    /// use ff_core::types::ExecutionId;
    /// let mut tx = pool.begin().await?;
    /// // ... the business write, in the same transaction ...
    /// let event = NewEvent::completion(ExecutionId::new(0), CompletionOutcome::Success);
    /// let cursor = backend.append(&mut tx, &event, &EventMeta::new()).await?;
    /// tx.commit().await?;
    /// # let _ = cursor; Ok(()) }
    /// ```
    pub async fn append(
        &self,
        conn: &mut PgConnection,
        event: &NewEvent,
        meta: &EventMeta,
    ) -> Result<StreamCursor, EngineError> {
        validate_new_event(event, meta)?;
        let pos = insert_one(conn, &self.inner.statements, event, meta).await?;
        Ok(pos.cursor(event.family(), self.inner.pool.system()))
    }

    /// Append `events` inside the caller's transaction on `conn` (one
    /// statement per family); returns their cursors in order. The whole
    /// batch is validated before anything is written.
    pub async fn append_batch(
        &self,
        conn: &mut PgConnection,
        events: &[(NewEvent, EventMeta)],
    ) -> Result<Vec<StreamCursor>, EngineError> {
        let groups = group_by_family(events)?;
        let rows = insert_grouped(conn, &self.inner.statements, events, &groups).await?;
        let system = self.inner.pool.system();
        Ok(rows
            .into_iter()
            .map(|(f, pos)| pos.cursor(f, system))
            .collect())
    }
}

#[async_trait]
impl EventPublisher for PostgresBackend {
    /// All-or-none: one statement per family, in one transaction when the
    /// batch spans families.
    async fn publish_batch(
        &self,
        events: Vec<(NewEvent, EventMeta)>,
    ) -> Result<Vec<StreamCursor>, EngineError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let groups = group_by_family(&events)?;
        let statements = &self.inner.statements;
        let mut publishing = self
            .inner
            .notifier
            .publishing(groups.iter().map(|(family, _)| *family))
            .await?;
        let rows = self
            .inner
            .pool
            .timed(async {
                let conn = publishing.conn();
                if groups.len() == 1 {
                    insert_grouped(conn, statements, &events, &groups).await
                } else {
                    let mut tx = conn.begin().await.map_err(map_sqlx)?;
                    let rows = insert_grouped(&mut tx, statements, &events, &groups).await?;
                    tx.commit().await.map_err(map_sqlx)?;
                    Ok(rows)
                }
            })
            .await?;
        publishing.committed();
        let system = self.inner.pool.system();
        Ok(rows
            .into_iter()
            .map(|(f, pos)| pos.cursor(f, system))
            .collect())
    }

    async fn publish(&self, event: NewEvent, meta: EventMeta) -> Result<StreamCursor, EngineError> {
        validate_new_event(&event, &meta)?;
        let mut publishing = self.inner.notifier.publishing([event.family()]).await?;
        let pos = self
            .inner
            .pool
            .timed(insert_one(
                publishing.conn(),
                &self.inner.statements,
                &event,
                &meta,
            ))
            .await?;
        publishing.committed();
        Ok(pos.cursor(event.family(), self.inner.pool.system()))
    }
}
