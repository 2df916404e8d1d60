//! Appending events: one row per event, in the caller's transaction or on
//! the backend's pool.
//!
//! A single event is one `INSERT ... VALUES`; a batch is one
//! `INSERT ... SELECT FROM UNNEST(...)` per family it touches. The row's
//! cursor is `(xid, id)`: the inserting transaction's id and the row id.

use std::borrow::Cow;

use ff_core::backend::validate_new_event;
use ff_core::engine_error::EngineError;
use ff_core::stream_events::{EventMeta, Family, NewEvent};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::error::{map_sqlx, BACKEND};
use crate::event_columns::{column_value, ColumnValue};
use crate::position::Pos;
use crate::schema::{table_def, SchemaNames};
use crate::sql;

/// The insert statements of every family, built once per schema.
#[derive(Debug)]
pub(crate) struct InsertStatements {
    one: Vec<String>,
    many: Vec<String>,
}

impl InsertStatements {
    /// Build the statements for `names`.
    pub fn new(names: &SchemaNames) -> Self {
        Self {
            one: Family::ALL
                .iter()
                .map(|f| sql::insert_one(names, *f))
                .collect(),
            many: Family::ALL
                .iter()
                .map(|f| sql::insert_many(names, *f))
                .collect(),
        }
    }

    fn one(&self, family: Family) -> &str {
        &self.one[family.index()]
    }

    fn many(&self, family: Family) -> &str {
        &self.many[family.index()]
    }
}

/// The event's column values in its table's column order.
fn column_values(event: &NewEvent) -> Result<Vec<ColumnValue<'_>>, EngineError> {
    table_def(event.family())
        .columns
        .iter()
        .map(|c| column_value(event, c))
        .collect()
}

fn positions(rows: &[sqlx::postgres::PgRow]) -> Result<Vec<Pos>, EngineError> {
    rows.iter()
        .map(|r| {
            let xid: i64 = r.try_get(0).map_err(map_sqlx)?;
            let id: i64 = r.try_get(1).map_err(map_sqlx)?;
            let at: i64 = r.try_get(2).map_err(map_sqlx)?;
            Ok(Pos::row(xid, id, at))
        })
        .collect()
}

/// Insert one (already validated) event on `conn`; returns its position.
pub(crate) async fn insert_one(
    conn: &mut PgConnection,
    statements: &InsertStatements,
    event: &NewEvent,
    meta: &EventMeta,
) -> Result<Pos, EngineError> {
    let values = column_values(event)?;
    let mut q = sqlx::query(statements.one(event.family()));
    for v in &values {
        q = match v {
            ColumnValue::Text(t) => q.bind(t.as_deref()),
            ColumnValue::Uuid(u) => q.bind(*u),
        };
    }
    let q = q.bind(meta.namespace.as_deref()).bind(meta.tags_json());
    let row = q.fetch_one(conn).await.map_err(map_sqlx)?;
    positions(std::slice::from_ref(&row)).map(|mut p| p.remove(0))
}

/// One column of a batch, as an array to bind.
enum ColumnArray<'a> {
    Text(Vec<Option<Cow<'a, str>>>),
    Uuid(Vec<Option<Uuid>>),
}

/// Insert (already validated) events of one `family` on `conn` with one
/// statement; returns their positions in input order.
pub(crate) async fn insert_many(
    conn: &mut PgConnection,
    statements: &InsertStatements,
    family: Family,
    events: &[(&NewEvent, &EventMeta)],
) -> Result<Vec<Pos>, EngineError> {
    if let [(event, meta)] = events {
        return Ok(vec![insert_one(conn, statements, event, meta).await?]);
    }
    let def = table_def(family);
    let mut columns: Vec<ColumnArray> = def
        .columns
        .iter()
        .map(|c| {
            if c.is_uuid {
                ColumnArray::Uuid(Vec::with_capacity(events.len()))
            } else {
                ColumnArray::Text(Vec::with_capacity(events.len()))
            }
        })
        .collect();
    let mut namespaces = Vec::with_capacity(events.len());
    let mut tags = Vec::with_capacity(events.len());
    for (event, meta) in events {
        for (array, column) in columns.iter_mut().zip(def.columns) {
            match (array, column_value(event, column)?) {
                (ColumnArray::Text(a), ColumnValue::Text(v)) => a.push(v),
                (ColumnArray::Uuid(a), ColumnValue::Uuid(v)) => a.push(v),
                _ => unreachable!("column_value follows the table's column types"),
            }
        }
        namespaces.push(meta.namespace.as_deref());
        tags.push(meta.tags_json());
    }
    let mut q = sqlx::query(statements.many(family));
    for array in &columns {
        q = match array {
            ColumnArray::Text(a) => q.bind(a),
            ColumnArray::Uuid(a) => q.bind(a),
        };
    }
    let rows = q
        .bind(&namespaces)
        .bind(&tags)
        .fetch_all(conn)
        .await
        .map_err(map_sqlx)?;
    let mut positions = positions(&rows)?;
    if positions.len() != events.len() {
        return Err(EngineError::Backend {
            backend: BACKEND,
            detail: format!(
                "inserting {} {family} events returned {} rows",
                events.len(),
                positions.len()
            ),
        });
    }
    // Rows were inserted in input order, so their ids ascend with it.
    positions.sort();
    Ok(positions)
}

/// Validate a batch whole, then group it by family (keeping input order
/// within each family): `(family, input indices)`.
pub(crate) fn group_by_family(
    events: &[(NewEvent, EventMeta)],
) -> Result<Vec<(Family, Vec<usize>)>, EngineError> {
    let mut groups: Vec<(Family, Vec<usize>)> = Vec::new();
    for (i, (event, meta)) in events.iter().enumerate() {
        validate_new_event(event, meta)?;
        let family = event.family();
        match groups.iter_mut().find(|(f, _)| *f == family) {
            Some((_, idx)) => idx.push(i),
            None => groups.push((family, vec![i])),
        }
    }
    Ok(groups)
}

/// Insert a validated, grouped batch on `conn`; returns the positions in
/// input order. Atomic when `conn` is inside a transaction (or when the
/// batch has one family: one statement).
pub(crate) async fn insert_grouped(
    conn: &mut PgConnection,
    statements: &InsertStatements,
    events: &[(NewEvent, EventMeta)],
    groups: &[(Family, Vec<usize>)],
) -> Result<Vec<(Family, Pos)>, EngineError> {
    let mut out: Vec<Option<(Family, Pos)>> = vec![None; events.len()];
    for (family, idx) in groups {
        let batch: Vec<(&NewEvent, &EventMeta)> =
            idx.iter().map(|i| (&events[*i].0, &events[*i].1)).collect();
        let positions = insert_many(conn, statements, *family, &batch).await?;
        for (i, pos) in idx.iter().zip(positions) {
            out[*i] = Some((*family, pos));
        }
    }
    Ok(out.into_iter().flatten().collect())
}
