//! The outbox's shape: one table per family, its typed event columns, and
//! the names derived from the configured schema.
//!
//! Every event column is named after its [`Field`] wire name, so the
//! shared decoder in `ff-core` reads a row by the same names a Valkey entry
//! or a JSON object uses. Common columns precede them in every table:
//! `xid`, `id`, `at`, `v`, `namespace`, `tags`.

use ff_core::stream_events::record::Field;
use ff_core::stream_events::Family;

/// One event column of a family's table.
#[derive(Debug)]
pub(crate) struct Column {
    /// The field it stores; its wire name is the column name.
    pub field: Field,
    /// `uuid` (typed) rather than `text`.
    pub is_uuid: bool,
}

impl Column {
    /// The column's name.
    pub fn name(&self) -> &'static str {
        self.field.name()
    }

    /// The column's SQL type.
    pub fn sql_type(&self) -> &'static str {
        if self.is_uuid {
            "uuid"
        } else {
            "text"
        }
    }
}

const fn text(field: Field) -> Column {
    Column {
        field,
        is_uuid: false,
    }
}

const fn uuid(field: Field) -> Column {
    Column {
        field,
        is_uuid: true,
    }
}

/// A family's table: its name and event columns, in select/insert order.
#[derive(Debug)]
pub(crate) struct TableDef {
    /// The family stored.
    pub family: Family,
    /// Table name within the schema.
    pub table: &'static str,
    /// Event columns, after the common ones.
    pub columns: &'static [Column],
    /// The column holding the kind (for kind filters).
    pub kind_column: Field,
}

/// Columns every row starts with in reads: `xid, id, at, v, namespace, tags`.
pub(crate) const COMMON_COLUMNS: usize = 6;

const LEASE_HISTORY: TableDef = TableDef {
    family: Family::LeaseHistory,
    table: "lease_history",
    columns: &[
        text(Field::Type),
        text(Field::ExecutionId),
        uuid(Field::LeaseId),
        text(Field::WorkerInstanceId),
        text(Field::PrevOwner),
        uuid(Field::NewLeaseId),
        text(Field::NewOwner),
        text(Field::RevokedBy),
    ],
    kind_column: Field::Type,
};

const COMPLETION: TableDef = TableDef {
    family: Family::Completion,
    table: "completion",
    columns: &[text(Field::ExecutionId), text(Field::Outcome)],
    kind_column: Field::Outcome,
};

const SIGNAL_DELIVERY: TableDef = TableDef {
    family: Family::SignalDelivery,
    table: "signal_delivery",
    columns: &[
        text(Field::ExecutionId),
        uuid(Field::SignalId),
        uuid(Field::WaitpointId),
        text(Field::SourceIdentity),
        text(Field::Effect),
    ],
    kind_column: Field::Effect,
};

const INSTANCE_TAGS: TableDef = TableDef {
    family: Family::InstanceTags,
    table: "instance_tags",
    columns: &[
        text(Field::Type),
        text(Field::ExecutionId),
        text(Field::Tag),
    ],
    kind_column: Field::Type,
};

/// The table definition of `family`.
pub(crate) fn table_def(family: Family) -> &'static TableDef {
    match family {
        Family::LeaseHistory => &LEASE_HISTORY,
        Family::Completion => &COMPLETION,
        Family::SignalDelivery => &SIGNAL_DELIVERY,
        // `Family` is non-exhaustive; every known family is listed above.
        _ => &INSTANCE_TAGS,
    }
}

impl TableDef {
    /// Position of `field` among the event columns.
    pub fn column_index(&self, field: Field) -> Option<usize> {
        self.columns.iter().position(|c| c.field == field)
    }

    /// The event columns as a comma-separated list, each prefixed with `prefix`.
    pub fn column_list(&self, prefix: &str) -> String {
        self.columns
            .iter()
            .map(|c| format!("{prefix}{}", c.name()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Names of the objects in one configured schema.
#[derive(Clone, Debug)]
pub(crate) struct SchemaNames {
    schema: String,
}

impl SchemaNames {
    /// Names in `schema` (already validated as a plain identifier).
    pub fn new(schema: &str) -> Self {
        Self {
            schema: schema.to_owned(),
        }
    }

    /// The schema name.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// `schema.table` of `family`'s outbox.
    pub fn table(&self, family: Family) -> String {
        format!("{}.{}", self.schema, table_def(family).table)
    }

    /// `schema.horizons`: each family's retention horizon.
    pub fn horizons(&self) -> String {
        format!("{}.horizons", self.schema)
    }

    /// `schema.consumer_cursors`: the cursor store.
    pub fn cursors(&self) -> String {
        format!("{}.consumer_cursors", self.schema)
    }

    /// The notification channel of `family`: `schema.table` (the trigger
    /// sends `TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME`).
    pub fn channel(&self, family: Family) -> String {
        self.table(family)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_draft_field_has_a_column() {
        for draft in ff_core::stream_events::sample_drafts() {
            let def = table_def(draft.family());
            for (field, _) in draft.fields() {
                assert!(
                    def.column_index(field).is_some(),
                    "{} lacks a column for {}",
                    def.table,
                    field.name()
                );
            }
        }
        for family in Family::ALL {
            assert_eq!(table_def(*family).family, *family);
        }
    }

    #[test]
    fn channels_fit_postgres_limits() {
        let names = SchemaNames::new(&"s".repeat(crate::config::MAX_SCHEMA_LEN));
        for family in Family::ALL {
            assert!(names.channel(*family).len() <= 63);
        }
    }
}
