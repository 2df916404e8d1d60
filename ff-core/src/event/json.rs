//! The JSON shape of events (CLI, SSE, HTTP publish): one flat object with
//! `family`, `type` (the kind), every field, `cursor` as text, `at` as
//! integer milliseconds, and the metadata as `namespace` and `tags`.
//!
//! Publishing is typed strictly ([`new_event_from_json`]): every field is a
//! string (or `null` for an absent optional one), never a coerced number or
//! boolean; a `type` must agree with the event (for completions and signal
//! deliveries the kind follows from `outcome`/`effect`); and a key that is
//! not part of the event's shape is rejected, so a typo such as
//! `"namepsace"` never silently drops data. Each error names the field.
//! Reading published events back ([`event_from_json`]) ignores unknown
//! keys, so an older consumer reads a newer producer's output.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::cursor::StreamCursor;
use crate::event::record::{decode_new_event, json_kind, DecodeError, Field};
use crate::event::{
    CompletionEvent, EventMeta, Family, InstanceTagEvent, LeaseHistoryEvent, NewEvent,
    SignalDeliveryEvent, StreamEvent,
};
use crate::types::TimestampMs;

fn draft_object(draft: &NewEvent, meta: Option<&EventMeta>) -> Map<String, Value> {
    let mut obj = Map::new();
    obj.insert("family".into(), draft.family().as_str().into());
    obj.insert("type".into(), draft.kind().as_str().into());
    for (field, value) in draft.fields() {
        if field != Field::Type {
            obj.insert(
                field.name().into(),
                value.map_or(Value::Null, Value::String),
            );
        }
    }
    if let Some(meta) = meta {
        obj.insert(
            "namespace".into(),
            meta.namespace.clone().map_or(Value::Null, Value::String),
        );
        let tags = meta
            .tags
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        obj.insert("tags".into(), Value::Object(tags));
    }
    obj
}

/// The JSON object of a published event, with its metadata when given.
///
/// ```
/// use ff_core::event::{event_to_json, CompletionEvent, CompletionOutcome, EventMeta};
/// use ff_core::cursor::StreamCursor;
/// use ff_core::types::{ExecutionId, TimestampMs};
/// let event = CompletionEvent::new(
///     StreamCursor::beginning(), ExecutionId::new(0), CompletionOutcome::Success, TimestampMs(7));
/// let json = event_to_json(&event.into(), Some(&EventMeta::new().with_namespace("billing")));
/// assert_eq!(json["type"], "success");
/// assert_eq!(json["at"], 7);
/// assert_eq!(json["namespace"], "billing");
/// ```
pub fn event_to_json(event: &StreamEvent, meta: Option<&EventMeta>) -> Value {
    let mut obj = draft_object(&event.to_new_event(), meta);
    obj.insert("cursor".into(), event.cursor().to_string().into());
    obj.insert("at".into(), event.at().0.into());
    Value::Object(obj)
}

/// The JSON object of a draft (what `POST` and `ff publish` accept).
pub fn new_event_to_json(draft: &NewEvent, meta: &EventMeta) -> Value {
    Value::Object(draft_object(draft, Some(meta)))
}

fn as_object(value: &Value) -> Result<&Map<String, Value>, DecodeError> {
    value
        .as_object()
        .ok_or_else(|| DecodeError::new("expected a JSON object"))
}

fn family_of(obj: &Map<String, Value>, expected: Option<Family>) -> Result<Family, DecodeError> {
    let named = match obj.get("family") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(
            s.parse::<Family>()
                .map_err(|e| DecodeError::in_field("family", e))?,
        ),
        Some(other) => {
            return Err(DecodeError::in_field(
                "family",
                format!("expected a string, got {}", json_kind(other)),
            ))
        }
    };
    match (named, expected) {
        (Some(n), Some(e)) if n != e => Err(DecodeError::in_field(
            "family",
            format!("event is {n} but this stream is {e}"),
        )),
        (Some(f), _) | (None, Some(f)) => Ok(f),
        (None, None) => Err(DecodeError::in_field("family", "missing")),
    }
}

fn meta_of(obj: &Map<String, Value>) -> Result<EventMeta, DecodeError> {
    let mut meta = EventMeta::new();
    match obj.get("namespace") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => meta.namespace = Some(s.clone()),
        Some(other) => {
            return Err(DecodeError::in_field(
                "namespace",
                format!("expected a string, got {}", json_kind(other)),
            ))
        }
    }
    match obj.get("tags") {
        None | Some(Value::Null) => {}
        Some(Value::Object(tags)) => {
            for (k, v) in tags {
                let v = v.as_str().ok_or_else(|| {
                    DecodeError::in_field(
                        "tags",
                        format!("value of {k:?} must be a string, got {}", json_kind(v)),
                    )
                })?;
                meta.tags.insert(k.clone(), v.to_owned());
            }
        }
        Some(other) => {
            return Err(DecodeError::in_field(
                "tags",
                format!("expected an object of strings, got {}", json_kind(other)),
            ))
        }
    }
    Ok(meta)
}

/// Keys a published object may carry besides its event's own fields:
/// `cursor` and `at` are accepted (and ignored) so `ff tail` output can be
/// published again.
const ENVELOPE: [&str; 6] = ["family", "type", "namespace", "tags", "cursor", "at"];

/// Every event field any event of `family` has.
fn family_fields(family: Family) -> &'static [Field] {
    match family {
        Family::LeaseHistory => &[
            Field::ExecutionId,
            Field::LeaseId,
            Field::WorkerInstanceId,
            Field::PrevOwner,
            Field::NewLeaseId,
            Field::NewOwner,
            Field::RevokedBy,
        ],
        Family::Completion => &[Field::ExecutionId, Field::Outcome],
        Family::SignalDelivery => &[
            Field::ExecutionId,
            Field::SignalId,
            Field::WaitpointId,
            Field::SourceIdentity,
            Field::Effect,
        ],
        Family::InstanceTags => &[Field::ExecutionId, Field::Tag],
    }
}

/// Reject keys that are no part of a `family` event.
fn check_keys_of_family(obj: &Map<String, Value>, family: Family) -> Result<(), DecodeError> {
    let fields = family_fields(family);
    for key in obj.keys() {
        let known =
            ENVELOPE.contains(&key.as_str()) || fields.iter().any(|f| f.name() == key.as_str());
        if !known {
            let expected: Vec<&str> = fields.iter().map(|f| f.name()).collect();
            return Err(DecodeError::in_field(
                truncated(key),
                format!(
                    "not a field of {family} events (fields: {}, plus family, type, namespace, tags)",
                    expected.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// Reject a field set on a kind of event that does not have it (e.g.
/// `prev_owner` on an `acquired` lease event), and a `type` that
/// contradicts the event.
fn check_agrees_with(obj: &Map<String, Value>, draft: &NewEvent) -> Result<(), DecodeError> {
    let kind = draft.kind();
    match obj.get("type") {
        None | Some(Value::Null) => {}
        Some(Value::String(t)) if t == kind.as_str() => {}
        Some(Value::String(t)) => {
            let because = match draft {
                NewEvent::Completion { outcome, .. } => {
                    format!(" (`outcome` {:?} makes it {kind})", outcome.as_wire())
                }
                NewEvent::SignalDelivery { effect, .. } => {
                    format!(" (`effect` {:?} makes it {kind})", effect.as_wire())
                }
                _ => String::new(),
            };
            return Err(DecodeError::in_field(
                "type",
                format!(
                    "{:?} contradicts the event, which is {kind}{because}; omit `type` or make it {:?}",
                    truncated(t),
                    kind.as_str()
                ),
            ));
        }
        Some(other) => {
            return Err(DecodeError::in_field(
                "type",
                format!("expected a string, got {}", json_kind(other)),
            ))
        }
    }
    let own = draft.fields();
    for field in family_fields(draft.family()) {
        let set = !matches!(obj.get(field.name()), None | Some(Value::Null));
        if set && !own.iter().any(|(f, _)| f == field) {
            return Err(DecodeError::in_field(
                field.name(),
                format!("not a field of {kind} events"),
            ));
        }
    }
    match obj.get("cursor") {
        None | Some(Value::Null | Value::String(_)) => {}
        Some(other) => {
            return Err(DecodeError::in_field(
                "cursor",
                format!("expected a string, got {}", json_kind(other)),
            ))
        }
    }
    match obj.get("at") {
        None | Some(Value::Null) => {}
        Some(v) if v.is_i64() => {}
        Some(other) => {
            return Err(DecodeError::in_field(
                "at",
                format!("expected integer milliseconds, got {}", json_kind(other)),
            ))
        }
    }
    Ok(())
}

fn truncated(s: &str) -> String {
    s.chars().take(80).collect()
}

/// Parse a draft to publish, strictly (see the module documentation): no
/// `cursor`/`at` needed (accepted and ignored if present). `family` is the
/// stream it is published to; a different `"family"` in the object is an
/// error. The error names the offending field in [`DecodeError::field`].
pub fn new_event_from_json(
    value: &Value,
    family: Option<Family>,
) -> Result<(NewEvent, EventMeta), DecodeError> {
    let obj = as_object(value)?;
    let family = family_of(obj, family)?;
    check_keys_of_family(obj, family)?;
    let draft = decode_new_event(family, obj)?;
    check_agrees_with(obj, &draft)?;
    Ok((draft, meta_of(obj)?))
}

/// Parse a published event with its metadata (the inverse of
/// [`event_to_json`]); unknown keys are ignored.
pub fn event_from_json(value: &Value) -> Result<(StreamEvent, EventMeta), DecodeError> {
    let obj = as_object(value)?;
    let family = family_of(obj, None)?;
    let draft = decode_new_event(family, obj)?;
    let meta = meta_of(obj)?;
    let cursor = match obj.get("cursor") {
        Some(Value::String(s)) => s
            .parse::<StreamCursor>()
            .map_err(|e| DecodeError::in_field("cursor", e))?,
        _ => return Err(DecodeError::in_field("cursor", "missing or not a string")),
    };
    let at = obj
        .get("at")
        .and_then(Value::as_i64)
        .ok_or_else(|| DecodeError::in_field("at", "missing or not an integer"))?;
    Ok((draft.into_event(cursor, TimestampMs(at)), meta))
}

impl Serialize for StreamEvent {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        event_to_json(self, None).serialize(s)
    }
}

impl<'de> Deserialize<'de> for StreamEvent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        event_from_json(&value)
            .map(|(e, _)| e)
            .map_err(serde::de::Error::custom)
    }
}

macro_rules! family_serde {
    ($ty:ty, $variant:ident) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                StreamEvent::$variant(self.clone()).serialize(s)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                match StreamEvent::deserialize(d)? {
                    StreamEvent::$variant(e) => Ok(e),
                    other => Err(serde::de::Error::custom(format!(
                        "expected a {} event, got {}",
                        Family::$variant,
                        other.family()
                    ))),
                }
            }
        }
    };
}

family_serde!(LeaseHistoryEvent, LeaseHistory);
family_serde!(CompletionEvent, Completion);
family_serde!(SignalDeliveryEvent, SignalDelivery);
family_serde!(InstanceTagEvent, InstanceTags);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cursor::codec::{encode_positioned, MEMORY_BYTE};

    fn encode_memory(family: Family, epoch: u64, seq: u64) -> StreamCursor {
        encode_positioned(MEMORY_BYTE, family, epoch, seq)
    }

    #[test]
    fn every_variant_round_trips_through_json_with_metadata() {
        let meta = EventMeta::new()
            .with_namespace("billing")
            .with_tag("region", "eu");
        for (i, draft) in crate::event::sample_drafts().into_iter().enumerate() {
            let cursor = encode_memory(draft.family(), 42, i as u64 + 1);
            let event = draft.into_event(cursor, TimestampMs(1_700_000_000_000 + i as i64));
            let json = event_to_json(&event, Some(&meta));
            assert_eq!(json["family"], event.family().as_str());
            assert_eq!(json["type"], event.kind().as_str());
            assert_eq!(json["cursor"], event.cursor().to_string());
            let (back, back_meta) = event_from_json(&json).unwrap();
            assert_eq!(back, event);
            assert_eq!(back_meta, meta);
            let text = serde_json::to_string(&event).unwrap();
            assert_eq!(serde_json::from_str::<StreamEvent>(&text).unwrap(), event);
        }
    }

    #[test]
    fn other_keeps_the_raw_string_and_type_is_other() {
        let draft = NewEvent::completion(
            crate::types::ExecutionId::new(0),
            crate::event::CompletionOutcome::Other("timed_out".into()),
        );
        let json = new_event_to_json(&draft, &EventMeta::new());
        assert_eq!(json["type"], "other");
        assert_eq!(json["outcome"], "timed_out");
    }

    const EXEC: &str = "{fp:0}:11111111-1111-4111-8111-111111111111";

    fn rejected(value: Value, family: Family) -> DecodeError {
        new_event_from_json(&value, Some(family)).expect_err("must be rejected")
    }

    #[test]
    fn a_number_or_boolean_where_a_string_is_due_is_rejected_naming_the_field() {
        let e = rejected(
            serde_json::json!({"execution_id": EXEC, "outcome": 1}),
            Family::Completion,
        );
        assert_eq!(e.field.as_deref(), Some("outcome"), "{e}");
        assert!(e.detail.contains("a number"), "{e}");
        let e = rejected(
            serde_json::json!({"type": "acquired", "execution_id": EXEC, "worker_instance_id": 5}),
            Family::LeaseHistory,
        );
        assert_eq!(e.field.as_deref(), Some("worker_instance_id"), "{e}");
        let e = rejected(
            serde_json::json!({"execution_id": EXEC, "outcome": "success", "namespace": true}),
            Family::Completion,
        );
        assert_eq!(e.field.as_deref(), Some("namespace"), "{e}");
        let e = rejected(
            serde_json::json!({"execution_id": EXEC, "outcome": "success", "at": "soon"}),
            Family::Completion,
        );
        assert_eq!(e.field.as_deref(), Some("at"), "{e}");
    }

    #[test]
    fn a_type_that_contradicts_the_event_is_rejected() {
        let e = rejected(
            serde_json::json!({"type": "failure", "execution_id": EXEC, "outcome": "success"}),
            Family::Completion,
        );
        assert_eq!(e.field.as_deref(), Some("type"), "{e}");
        assert!(e.detail.contains("success"), "{e}");
        let e = rejected(
            serde_json::json!({"type": "success", "execution_id": EXEC, "outcome": "timed_out"}),
            Family::Completion,
        );
        assert_eq!(e.field.as_deref(), Some("type"), "{e}");
        let ok = serde_json::json!({"type": "other", "execution_id": EXEC, "outcome": "timed_out"});
        assert!(new_event_from_json(&ok, Some(Family::Completion)).is_ok());
    }

    #[test]
    fn unknown_keys_and_fields_of_another_kind_are_rejected() {
        let e = rejected(
            serde_json::json!({"execution_id": EXEC, "outcome": "success", "namepsace": "x"}),
            Family::Completion,
        );
        assert_eq!(e.field.as_deref(), Some("namepsace"), "{e}");
        let e = rejected(
            serde_json::json!({"type": "acquired", "execution_id": EXEC, "prev_owner": "w1"}),
            Family::LeaseHistory,
        );
        assert_eq!(e.field.as_deref(), Some("prev_owner"), "{e}");
        let e = rejected(
            serde_json::json!({"execution_id": EXEC, "outcome": "success", "tag": "x"}),
            Family::Completion,
        );
        assert_eq!(e.field.as_deref(), Some("tag"), "{e}");
    }

    #[test]
    fn tail_output_can_be_published_again_and_read_back_ignoring_new_keys() {
        let draft = NewEvent::completion(
            crate::types::ExecutionId::new(0),
            crate::event::CompletionOutcome::Failure,
        );
        let event = draft.into_event(encode_memory(Family::Completion, 1, 1), TimestampMs(5));
        let mut json = event_to_json(&event, Some(&EventMeta::new()));
        assert!(new_event_from_json(&json, Some(Family::Completion)).is_ok());
        json["added_in_a_later_version"] = "x".into();
        assert!(event_from_json(&json).is_ok());
    }

    #[test]
    fn a_draft_for_the_wrong_family_is_rejected() {
        let draft = NewEvent::tag_attached(crate::types::ExecutionId::new(0), "hot");
        let json = new_event_to_json(&draft, &EventMeta::new());
        let err = new_event_from_json(&json, Some(Family::Completion)).unwrap_err();
        assert!(err.detail.contains("family"), "{err}");
        assert!(new_event_from_json(&serde_json::json!([1]), None).is_err());
    }
}
