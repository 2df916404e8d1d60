//! Stored records: the one place that knows each family's field names and
//! how to decode them.
//!
//! A backend exposes a stored entry (a Valkey field map, a Postgres row, a
//! JSON object) through [`RecordAccess`]; [`decode_new_event`] turns it into
//! a typed [`NewEvent`], which becomes a [`StreamEvent`](crate::event::StreamEvent) once the backend
//! supplies the cursor and time. Unknown fields are ignored (see "Evolution" in `docs/design.md`).

use std::borrow::Cow;

use uuid::Uuid;

use crate::event::{
    CompletionOutcome, Family, InstanceTagKind, LeaseHistoryKind, NewEvent, SignalDeliveryEffect,
};
use crate::types::{ExecutionId, LeaseId, SignalId, WaitpointId, WorkerInstanceId};

/// The schema version this build writes and the highest it reads.
pub const SCHEMA_VERSION: u32 = 1;

/// A stored field. [`Field::name`] is its name on every wire: the Valkey
/// entry field, the Postgres column, the JSON key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Field {
    /// `v`: the schema version (absent means 1).
    SchemaVersion,
    /// `type`: the kind, for families whose kind is a variant.
    Type,
    /// `execution_id`.
    ExecutionId,
    /// `lease_id`.
    LeaseId,
    /// `worker_instance_id`.
    WorkerInstanceId,
    /// `prev_owner`.
    PrevOwner,
    /// `new_lease_id`.
    NewLeaseId,
    /// `new_owner`.
    NewOwner,
    /// `revoked_by`.
    RevokedBy,
    /// `outcome`.
    Outcome,
    /// `signal_id`.
    SignalId,
    /// `waitpoint_id`.
    WaitpointId,
    /// `source_identity`.
    SourceIdentity,
    /// `effect`.
    Effect,
    /// `tag`.
    Tag,
    /// `namespace` (metadata).
    Namespace,
    /// `tags` (metadata, a JSON object of strings).
    Tags,
}

impl Field {
    /// The field's wire name.
    pub fn name(self) -> &'static str {
        match self {
            Field::SchemaVersion => "v",
            Field::Type => "type",
            Field::ExecutionId => "execution_id",
            Field::LeaseId => "lease_id",
            Field::WorkerInstanceId => "worker_instance_id",
            Field::PrevOwner => "prev_owner",
            Field::NewLeaseId => "new_lease_id",
            Field::NewOwner => "new_owner",
            Field::RevokedBy => "revoked_by",
            Field::Outcome => "outcome",
            Field::SignalId => "signal_id",
            Field::WaitpointId => "waitpoint_id",
            Field::SourceIdentity => "source_identity",
            Field::Effect => "effect",
            Field::Tag => "tag",
            Field::Namespace => "namespace",
            Field::Tags => "tags",
        }
    }
}

/// Why a stored record (or a published JSON object) could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
#[non_exhaustive]
pub struct DecodeError {
    /// What was wrong, naming the field and value.
    pub detail: String,
    /// The offending field's name, when one field is to blame.
    pub field: Option<String>,
}

impl DecodeError {
    /// A decode error with `detail`.
    pub fn new(detail: impl Into<String>) -> Self {
        Self {
            detail: detail.into(),
            field: None,
        }
    }

    /// A decode error blaming the field `name`: the detail reads
    /// ``field `name`: why``.
    pub fn in_field(name: impl Into<String>, why: impl std::fmt::Display) -> Self {
        let name = name.into();
        Self {
            detail: format!("field `{name}`: {why}"),
            field: Some(name),
        }
    }
}

/// Read access to one stored record's fields. Implement `text`; override
/// `uuid` where the store keeps typed UUID columns.
pub trait RecordAccess {
    /// The field's text, `None` when absent. `Err` when present but not
    /// readable as text (e.g. invalid UTF-8), with a description.
    fn text(&self, field: Field) -> Result<Option<Cow<'_, str>>, String>;

    /// The field as a UUID, `None` when absent.
    fn uuid(&self, field: Field) -> Result<Option<Uuid>, String> {
        match self.text(field)? {
            None => Ok(None),
            Some(t) => Uuid::parse_str(&t)
                .map(Some)
                .map_err(|e| format!("{:?} is not a UUID: {e}", truncate(&t))),
        }
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

fn field_err(field: Field, why: impl std::fmt::Display) -> DecodeError {
    DecodeError::in_field(field.name(), why)
}

fn text<'a, R: RecordAccess + ?Sized>(
    r: &'a R,
    field: Field,
) -> Result<Option<Cow<'a, str>>, DecodeError> {
    r.text(field).map_err(|e| field_err(field, e))
}

fn required<'a, R: RecordAccess + ?Sized>(
    r: &'a R,
    field: Field,
) -> Result<Cow<'a, str>, DecodeError> {
    text(r, field)?.ok_or_else(|| field_err(field, "missing"))
}

fn opt_uuid<R: RecordAccess + ?Sized>(r: &R, field: Field) -> Result<Option<Uuid>, DecodeError> {
    r.uuid(field).map_err(|e| field_err(field, e))
}

fn opt_worker<R: RecordAccess + ?Sized>(
    r: &R,
    field: Field,
) -> Result<Option<WorkerInstanceId>, DecodeError> {
    text(r, field)?
        .map(|t| WorkerInstanceId::parse(&t).map_err(|e| field_err(field, e)))
        .transpose()
}

/// Check the record's schema version: absent means 1; a higher version
/// than [`SCHEMA_VERSION`] cannot be read by this build.
pub fn check_schema_version<R: RecordAccess + ?Sized>(r: &R) -> Result<u32, DecodeError> {
    let Some(v) = text(r, Field::SchemaVersion)? else {
        return Ok(1);
    };
    let v: u32 = v.trim().parse().map_err(|_| {
        field_err(
            Field::SchemaVersion,
            format!("{:?} is not a version number", truncate(&v)),
        )
    })?;
    if v == 0 || v > SCHEMA_VERSION {
        return Err(field_err(
            Field::SchemaVersion,
            format!("schema version {v} is not readable by this build (reads 1..={SCHEMA_VERSION}); upgrade the consumer"),
        ));
    }
    Ok(v)
}

/// Decode a stored record of `family` into the event it holds.
pub fn decode_new_event<R: RecordAccess + ?Sized>(
    family: Family,
    r: &R,
) -> Result<NewEvent, DecodeError> {
    check_schema_version(r)?;
    let exec_text = required(r, Field::ExecutionId)?;
    let execution_id =
        ExecutionId::parse(&exec_text).map_err(|e| field_err(Field::ExecutionId, e))?;
    let event = match family {
        Family::LeaseHistory => {
            let kind_text = required(r, Field::Type)?;
            let kind: LeaseHistoryKind =
                kind_text.parse().map_err(|e| field_err(Field::Type, e))?;
            let lease = |f| opt_uuid(r, f).map(|u| u.map(LeaseId::from_uuid));
            match kind {
                LeaseHistoryKind::Acquired => NewEvent::LeaseAcquired {
                    execution_id,
                    lease_id: lease(Field::LeaseId)?,
                    worker_instance_id: opt_worker(r, Field::WorkerInstanceId)?,
                },
                LeaseHistoryKind::Renewed => NewEvent::LeaseRenewed {
                    execution_id,
                    lease_id: lease(Field::LeaseId)?,
                    worker_instance_id: opt_worker(r, Field::WorkerInstanceId)?,
                },
                LeaseHistoryKind::Expired => NewEvent::LeaseExpired {
                    execution_id,
                    lease_id: lease(Field::LeaseId)?,
                    prev_owner: opt_worker(r, Field::PrevOwner)?,
                },
                LeaseHistoryKind::Reclaimed => NewEvent::LeaseReclaimed {
                    execution_id,
                    new_lease_id: lease(Field::NewLeaseId)?,
                    new_owner: opt_worker(r, Field::NewOwner)?,
                },
                LeaseHistoryKind::Revoked => NewEvent::LeaseRevoked {
                    execution_id,
                    lease_id: lease(Field::LeaseId)?,
                    revoked_by: required(r, Field::RevokedBy)?.into_owned(),
                },
            }
        }
        Family::Completion => NewEvent::Completion {
            execution_id,
            outcome: CompletionOutcome::from_wire(&required(r, Field::Outcome)?),
        },
        Family::SignalDelivery => NewEvent::SignalDelivery {
            execution_id,
            signal_id: opt_uuid(r, Field::SignalId)?
                .map(SignalId::from_uuid)
                .ok_or_else(|| field_err(Field::SignalId, "missing"))?,
            waitpoint_id: opt_uuid(r, Field::WaitpointId)?.map(WaitpointId::from_uuid),
            source_identity: text(r, Field::SourceIdentity)?.map(Cow::into_owned),
            effect: SignalDeliveryEffect::from_wire(&required(r, Field::Effect)?),
        },
        Family::InstanceTags => {
            let kind_text = required(r, Field::Type)?;
            let kind: InstanceTagKind = kind_text.parse().map_err(|e| field_err(Field::Type, e))?;
            let tag = required(r, Field::Tag)?.into_owned();
            match kind {
                InstanceTagKind::Attached => NewEvent::TagAttached { execution_id, tag },
                InstanceTagKind::Cleared => NewEvent::TagCleared { execution_id, tag },
            }
        }
    };
    Ok(event)
}

/// A record as a list of (name, value) byte pairs — the shape of a Valkey
/// stream entry. Lookup is linear: entries have a handful of fields.
impl<K: AsRef<[u8]>, V: AsRef<[u8]>> RecordAccess for [(K, V)] {
    fn text(&self, field: Field) -> Result<Option<Cow<'_, str>>, String> {
        let name = field.name().as_bytes();
        match self.iter().find(|(k, _)| k.as_ref() == name) {
            None => Ok(None),
            Some((_, v)) => std::str::from_utf8(v.as_ref())
                .map(|s| Some(Cow::Borrowed(s)))
                .map_err(|_| "value is not valid UTF-8".to_owned()),
        }
    }
}

/// A JSON object (the CLI's and HTTP gateway's event shape). `null` counts as
/// absent; every field is text, so a number or boolean where text is due is
/// an error, never coerced.
impl RecordAccess for serde_json::Map<String, serde_json::Value> {
    fn text(&self, field: Field) -> Result<Option<Cow<'_, str>>, String> {
        match self.get(field.name()) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(Cow::Borrowed(s))),
            Some(other) => Err(format!("expected a string, got {}", json_kind(other))),
        }
    }
}

/// How a JSON value is named in errors: its type and a short rendering.
pub(crate) fn json_kind(value: &serde_json::Value) -> String {
    use serde_json::Value;
    let what = match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    let shown: String = value.to_string().chars().take(40).collect();
    format!("{what} ({shown})")
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXEC: &str = "{fp:1}:11111111-1111-4111-8111-111111111111";

    #[test]
    fn every_draft_round_trips_through_its_fields() {
        for draft in crate::event::sample_drafts() {
            let pairs: Vec<(&str, String)> = draft
                .fields()
                .into_iter()
                .filter_map(|(f, v)| v.map(|v| (f.name(), v)))
                .collect();
            let back = decode_new_event(draft.family(), pairs.as_slice()).unwrap();
            assert_eq!(back, draft);
        }
    }

    #[test]
    fn missing_and_malformed_fields_are_named() {
        let no_outcome = [("execution_id", EXEC)];
        let err = decode_new_event(Family::Completion, &no_outcome[..]).unwrap_err();
        assert!(err.detail.contains("outcome"), "{err}");
        let bad_exec = [("execution_id", "nope"), ("outcome", "success")];
        let err = decode_new_event(Family::Completion, &bad_exec[..]).unwrap_err();
        assert!(err.detail.contains("execution_id"), "{err}");
        let bad_kind = [("execution_id", EXEC), ("type", "stolen")];
        let err = decode_new_event(Family::LeaseHistory, &bad_kind[..]).unwrap_err();
        assert!(err.detail.contains("type"), "{err}");
        let bad_utf8: [(&[u8], &[u8]); 2] = [(b"execution_id", b"\xff\xfe"), (b"outcome", b"x")];
        assert!(decode_new_event(Family::Completion, &bad_utf8[..]).is_err());
    }

    #[test]
    fn newer_schema_versions_are_rejected_and_unknown_fields_ignored() {
        let newer = [("v", "2"), ("execution_id", EXEC), ("outcome", "success")];
        let err = decode_new_event(Family::Completion, &newer[..]).unwrap_err();
        assert!(err.detail.contains("schema version 2"), "{err}");
        let extra = [
            ("v", "1"),
            ("execution_id", EXEC),
            ("outcome", "success"),
            ("colour", "blue"),
        ];
        assert!(decode_new_event(Family::Completion, &extra[..]).is_ok());
    }
}
