//! Decoding outbox rows through the shared `ff-core` decoder.
//!
//! [`RowView`] exposes one row's typed columns as a
//! [`RecordAccess`]: text columns are borrowed straight from the row
//! buffer, uuid columns are read as typed UUIDs. A row the decoder rejects
//! becomes a `Corrupt` item carrying the row's cursor, so the stream can
//! go on with the next row.
//!
//! Columns are read without `sqlx`'s per-value type check: their types are
//! fixed by the reads this crate writes (see `sql::read`), and the check
//! is a measurable share of catch-up time.

use std::borrow::Cow;

use ff_core::backend::DeliveryItem;
use ff_core::engine_error::EngineError;
use ff_core::stream_events::record::{decode_new_event, Field, RecordAccess};
use ff_core::stream_events::{EventMeta, Family};
use ff_core::types::TimestampMs;
use sqlx::postgres::PgRow;
use sqlx::Row;
use uuid::Uuid;

use crate::error::BACKEND;
use crate::position::Pos;
use crate::schema::{table_def, TableDef, COMMON_COLUMNS};

/// One outbox row, read from column `base` on:
/// `xid, id, at, v, namespace, tags`, then the family's event columns.
pub(crate) struct RowView<'r> {
    row: &'r PgRow,
    base: usize,
    def: &'static TableDef,
}

impl<'r> RowView<'r> {
    /// View `row`'s outbox columns, which start at column `base`.
    pub fn new(row: &'r PgRow, base: usize, family: Family) -> Self {
        Self {
            row,
            base,
            def: table_def(family),
        }
    }

    /// The row's position.
    pub fn position(&self) -> Result<Pos, EngineError> {
        let xid: i64 = self.get(0)?;
        let id: i64 = self.get(1)?;
        let at: i64 = self.get(2)?;
        Ok(Pos::row(xid, id, at))
    }

    fn get<'a, T>(&'a self, offset: usize) -> Result<T, EngineError>
    where
        T: sqlx::Decode<'a, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
    {
        self.row
            .try_get_unchecked(self.base + offset)
            .map_err(|e| EngineError::Backend {
                backend: BACKEND,
                detail: format!("reading an outbox row: {e}"),
            })
    }

    fn event_column(&self, field: Field) -> Option<(usize, bool)> {
        self.def
            .column_index(field)
            .map(|i| (self.base + COMMON_COLUMNS + i, self.def.columns[i].is_uuid))
    }

    /// Decode the row into a delivery item: the event with its metadata,
    /// or `Corrupt` naming what could not be decoded. Cursors name the
    /// cluster `system`.
    pub fn decode(&self, system: u64) -> Result<(Pos, DeliveryItem), EngineError> {
        let pos = self.position()?;
        let family = self.def.family;
        let cursor = pos.cursor(family, system);
        let corrupt = |detail: String| DeliveryItem::Corrupt {
            cursor: cursor.clone(),
            detail: format!(
                "{family} row (xid {}, id {}) in {}: {detail}",
                pos.xid, pos.id, self.def.table
            ),
        };
        let draft = match decode_new_event(family, self) {
            Ok(d) => d,
            Err(e) => return Ok((pos, corrupt(e.detail))),
        };
        let at: i64 = match self.get(2) {
            Ok(at) => at,
            Err(e) => return Ok((pos, corrupt(format!("field `at`: {e}")))),
        };
        let mut meta = EventMeta::new();
        meta.namespace = match self
            .row
            .try_get_unchecked::<Option<String>, _>(self.base + 4)
        {
            Ok(ns) => ns,
            Err(e) => return Ok((pos, corrupt(format!("field `namespace`: {e}")))),
        };
        let tags: Option<&str> = match self.row.try_get_unchecked(self.base + 5) {
            Ok(t) => t,
            Err(e) => return Ok((pos, corrupt(format!("field `tags`: {e}")))),
        };
        if let Some(tags) = tags {
            match EventMeta::parse_tags_json(tags) {
                Ok(map) => meta.tags = map,
                Err(e) => return Ok((pos, corrupt(format!("field `tags`: {e}")))),
            }
        }
        let event = draft.into_event(cursor.clone(), TimestampMs(at));
        Ok((pos, DeliveryItem::Event { event, meta }))
    }
}

impl RecordAccess for RowView<'_> {
    fn text(&self, field: Field) -> Result<Option<Cow<'_, str>>, String> {
        match field {
            Field::SchemaVersion => {
                let v: i16 = self
                    .row
                    .try_get_unchecked(self.base + 3)
                    .map_err(|e| e.to_string())?;
                Ok(Some(if v == 1 {
                    Cow::Borrowed("1")
                } else {
                    Cow::Owned(v.to_string())
                }))
            }
            Field::Namespace => self
                .row
                .try_get_unchecked::<Option<&str>, _>(self.base + 4)
                .map(|v| v.map(Cow::Borrowed))
                .map_err(|e| e.to_string()),
            Field::Tags => self
                .row
                .try_get_unchecked::<Option<&str>, _>(self.base + 5)
                .map(|v| v.map(Cow::Borrowed))
                .map_err(|e| e.to_string()),
            _ => match self.event_column(field) {
                None => Ok(None),
                Some((i, true)) => self
                    .row
                    .try_get_unchecked::<Option<Uuid>, _>(i)
                    .map(|v| v.map(|u| Cow::Owned(u.hyphenated().to_string())))
                    .map_err(|e| e.to_string()),
                Some((i, false)) => self
                    .row
                    .try_get_unchecked::<Option<&str>, _>(i)
                    .map(|v| v.map(Cow::Borrowed))
                    .map_err(|e| e.to_string()),
            },
        }
    }

    fn uuid(&self, field: Field) -> Result<Option<Uuid>, String> {
        match self.event_column(field) {
            Some((i, true)) => self
                .row
                .try_get_unchecked::<Option<Uuid>, _>(i)
                .map_err(|e| e.to_string()),
            Some((i, false)) => match self
                .row
                .try_get_unchecked::<Option<&str>, _>(i)
                .map_err(|e| e.to_string())?
            {
                None => Ok(None),
                Some(t) => Uuid::parse_str(t).map(Some).map_err(|e| {
                    format!(
                        "{:?} is not a UUID: {e}",
                        t.chars().take(80).collect::<String>()
                    )
                }),
            },
            None => Ok(None),
        }
    }
}
