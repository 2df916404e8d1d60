//! An event's value for each column of its table, read straight from the
//! typed draft: a UUID column gets the UUID itself and a text column
//! borrows the text the draft holds, so writing an event costs one
//! allocation (its execution id's text) instead of one per field.
//!
//! Invariant: for every event, the value of a column equals what
//! [`NewEvent::fields`] gives for its field (`None` for a field the event
//! lacks), parsed as a UUID for UUID columns. Events of variants this
//! module does not know go through `fields` itself.

use std::borrow::Cow;

use ff_core::engine_error::EngineError;
use ff_core::stream_events::record::Field;
use ff_core::stream_events::NewEvent;
use uuid::Uuid;

use crate::schema::Column;

/// One column's value.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ColumnValue<'a> {
    Text(Option<Cow<'a, str>>),
    Uuid(Option<Uuid>),
}

/// The value of `column` for `event`.
pub(crate) fn column_value<'a>(
    event: &'a NewEvent,
    column: &Column,
) -> Result<ColumnValue<'a>, EngineError> {
    match typed(event, column.field) {
        Some(value) => Ok(value),
        None => from_fields(event, column),
    }
}

fn text(s: &str) -> ColumnValue<'_> {
    ColumnValue::Text(Some(Cow::Borrowed(s)))
}

fn opt_text<'a>(s: Option<&'a str>) -> ColumnValue<'a> {
    ColumnValue::Text(s.map(Cow::Borrowed))
}

/// The value from the event's typed fields; `None` for a variant this
/// module does not know.
fn typed(event: &NewEvent, field: Field) -> Option<ColumnValue<'_>> {
    use NewEvent as E;
    let known = matches!(
        event,
        E::LeaseAcquired { .. }
            | E::LeaseRenewed { .. }
            | E::LeaseExpired { .. }
            | E::LeaseReclaimed { .. }
            | E::LeaseRevoked { .. }
            | E::Completion { .. }
            | E::SignalDelivery { .. }
            | E::TagAttached { .. }
            | E::TagCleared { .. }
    );
    if !known {
        return None;
    }
    let value = match (event, field) {
        (_, Field::ExecutionId) => {
            ColumnValue::Text(Some(Cow::Owned(event.execution_id().to_string())))
        }
        (
            E::LeaseAcquired { .. }
            | E::LeaseRenewed { .. }
            | E::LeaseExpired { .. }
            | E::LeaseReclaimed { .. }
            | E::LeaseRevoked { .. }
            | E::TagAttached { .. }
            | E::TagCleared { .. },
            Field::Type,
        ) => text(event.kind().as_str()),
        (
            E::LeaseAcquired { lease_id, .. }
            | E::LeaseRenewed { lease_id, .. }
            | E::LeaseExpired { lease_id, .. }
            | E::LeaseRevoked { lease_id, .. },
            Field::LeaseId,
        ) => ColumnValue::Uuid(lease_id.map(|l| l.uuid())),
        (
            E::LeaseAcquired {
                worker_instance_id, ..
            }
            | E::LeaseRenewed {
                worker_instance_id, ..
            },
            Field::WorkerInstanceId,
        ) => opt_text(worker_instance_id.as_ref().map(|w| w.as_str())),
        (E::LeaseExpired { prev_owner, .. }, Field::PrevOwner) => {
            opt_text(prev_owner.as_ref().map(|w| w.as_str()))
        }
        (E::LeaseReclaimed { new_lease_id, .. }, Field::NewLeaseId) => {
            ColumnValue::Uuid(new_lease_id.map(|l| l.uuid()))
        }
        (E::LeaseReclaimed { new_owner, .. }, Field::NewOwner) => {
            opt_text(new_owner.as_ref().map(|w| w.as_str()))
        }
        (E::LeaseRevoked { revoked_by, .. }, Field::RevokedBy) => text(revoked_by),
        (E::Completion { outcome, .. }, Field::Outcome) => text(outcome.as_wire()),
        (E::SignalDelivery { signal_id, .. }, Field::SignalId) => {
            ColumnValue::Uuid(Some(signal_id.uuid()))
        }
        (E::SignalDelivery { waitpoint_id, .. }, Field::WaitpointId) => {
            ColumnValue::Uuid(waitpoint_id.map(|w| w.uuid()))
        }
        (
            E::SignalDelivery {
                source_identity, ..
            },
            Field::SourceIdentity,
        ) => opt_text(source_identity.as_deref()),
        (E::SignalDelivery { effect, .. }, Field::Effect) => text(effect.as_wire()),
        (E::TagAttached { tag, .. } | E::TagCleared { tag, .. }, Field::Tag) => text(tag),
        // A column of the table that this variant does not fill.
        (_, Field::LeaseId | Field::NewLeaseId | Field::SignalId | Field::WaitpointId) => {
            ColumnValue::Uuid(None)
        }
        _ => ColumnValue::Text(None),
    };
    Some(value)
}

/// The value through [`NewEvent::fields`] (every variant, known or not).
fn from_fields<'a>(event: &NewEvent, column: &Column) -> Result<ColumnValue<'a>, EngineError> {
    let value = event
        .fields()
        .into_iter()
        .find(|(f, _)| *f == column.field)
        .and_then(|(_, v)| v);
    if !column.is_uuid {
        return Ok(ColumnValue::Text(value.map(Cow::Owned)));
    }
    value
        .map(|s| Uuid::parse_str(&s))
        .transpose()
        .map(ColumnValue::Uuid)
        .map_err(|e| EngineError::validation(format!("field `{}`: not a UUID: {e}", column.name())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::table_def;
    use ff_core::stream_events::sample_drafts;

    #[test]
    fn typed_values_equal_what_fields_gives_for_every_sample_event() {
        for event in sample_drafts() {
            for column in table_def(event.family()).columns {
                let fast = typed(&event, column.field).expect("a known variant");
                let slow = from_fields(&event, column).unwrap();
                assert_eq!(fast, slow, "{event:?}, column {}", column.name());
            }
        }
    }
}
