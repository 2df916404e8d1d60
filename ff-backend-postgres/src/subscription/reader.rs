//! One gap-free batch read: rows after a position, with the snapshot
//! bounds and retention horizon they were read under.

use ff_core::engine_error::EngineError;
use ff_core::stream_events::Family;
use futures::TryStreamExt;
use sqlx::postgres::PgRow;
use sqlx::Row;

use crate::decode::RowView;
use crate::position::Pos;
use crate::sql::{read_header_len, SqlFilter};

/// What one read returned.
#[derive(Debug)]
pub(crate) struct Batch {
    /// The snapshot's `xmin`: rows of older transactions were readable.
    pub xmin: u64,
    /// The snapshot's `xmax`: no transaction at or beyond it had completed.
    pub xmax: u64,
    /// The family's retention horizon, if it was ever pruned.
    pub horizon: Option<Pos>,
    /// Committed rows (matching the filter) wait behind an open transaction.
    pub held: bool,
    /// Filtered reads: the newest row below `xmin`, matching or not.
    pub scanned: Option<Pos>,
    /// The rows with their positions, in position order (decoded by the
    /// consumer's stream).
    pub items: Vec<(Pos, PgRow)>,
}

/// Why a read failed.
pub(crate) enum ReadError {
    /// The statement failed; classify with `is_connection_error`.
    Sql(sqlx::Error),
    /// The result could not be interpreted.
    Engine(EngineError),
}

impl From<sqlx::Error> for ReadError {
    fn from(e: sqlx::Error) -> Self {
        ReadError::Sql(e)
    }
}

impl From<EngineError> for ReadError {
    fn from(e: EngineError) -> Self {
        ReadError::Engine(e)
    }
}

/// Run the prepared read `sql` of `family` after `after`, at most `limit`
/// rows, reading each row's position as it streams in.
pub(crate) async fn read_batch<'c, E>(
    executor: E,
    sql: &str,
    family: Family,
    filter: &SqlFilter,
    after: Pos,
    limit: usize,
) -> Result<Batch, ReadError>
where
    E: sqlx::Executor<'c, Database = sqlx::Postgres>,
{
    let base = read_header_len(filter);
    let xid_text = after.xid_text();
    let q = sqlx::query(sql)
        .bind(xid_text.as_str())
        .bind(after.id)
        .bind(limit as i64);
    let q = filter.bind(q);
    let mut rows = q.fetch(executor);
    let mut batch: Option<Batch> = None;
    let mut sorted = true;
    while let Some(row) = rows.try_next().await? {
        let b = match &mut batch {
            Some(b) => b,
            None => batch.insert(header(&row, base)?),
        };
        if row.try_get_unchecked::<Option<i64>, _>(base + 1)?.is_none() {
            continue;
        }
        let pos = RowView::new(&row, base, family).position()?;
        if b.items.last().is_some_and(|(last, _)| *last >= pos) {
            sorted = false;
        }
        b.items.push((pos, row));
    }
    drop(rows);
    let mut batch = batch.ok_or_else(|| EngineError::Backend {
        backend: crate::error::BACKEND,
        detail: "the outbox read returned no header row".into(),
    })?;
    if !sorted {
        batch.items.sort_by_key(|(pos, _)| *pos);
    }
    Ok(batch)
}

fn header(row: &PgRow, base: usize) -> Result<Batch, sqlx::Error> {
    let opt_pos = |first: usize| -> Result<Option<Pos>, sqlx::Error> {
        let xid: Option<i64> = row.try_get(first)?;
        let id: Option<i64> = row.try_get(first + 1)?;
        let at: Option<i64> = row.try_get(first + 2)?;
        Ok(xid
            .zip(id)
            .map(|(x, i)| Pos::row(x, i, at.unwrap_or_default())))
    };
    let xmin: i64 = row.try_get(0)?;
    let xmax: i64 = row.try_get(1)?;
    Ok(Batch {
        xmin: xmin.max(0) as u64,
        xmax: xmax.max(0) as u64,
        horizon: opt_pos(2)?,
        held: row.try_get(5)?,
        scanned: if base > 6 { opt_pos(6)? } else { None },
        items: Vec::new(),
    })
}
