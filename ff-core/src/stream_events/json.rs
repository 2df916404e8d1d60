//! The JSON shape of events (CLI, SSE, HTTP publish): one flat object with
//! `family`, `type` (the kind), every field, `cursor` as text, `at` as
//! integer milliseconds, and the metadata as `namespace` and `tags`.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::stream_events::record::{decode_new_event, DecodeError, Field};
use crate::stream_events::{
    CompletionEvent, EventMeta, Family, InstanceTagEvent, LeaseHistoryEvent, NewEvent,
    SignalDeliveryEvent, StreamEvent,
};
use crate::stream_subscribe::StreamCursor;
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
/// use ff_core::stream_events::{event_to_json, CompletionEvent, CompletionOutcome, EventMeta};
/// use ff_core::stream_subscribe::StreamCursor;
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
                .map_err(|e| DecodeError::new(format!("field `family`: {e}")))?,
        ),
        Some(other) => {
            return Err(DecodeError::new(format!(
                "field `family`: expected a string, got {other}"
            )))
        }
    };
    match (named, expected) {
        (Some(n), Some(e)) if n != e => Err(DecodeError::new(format!(
            "field `family`: event is {n} but this stream is {e}"
        ))),
        (Some(f), _) | (None, Some(f)) => Ok(f),
        (None, None) => Err(DecodeError::new("field `family`: missing")),
    }
}

fn meta_of(obj: &Map<String, Value>) -> Result<EventMeta, DecodeError> {
    let mut meta = EventMeta::new();
    match obj.get("namespace") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => meta.namespace = Some(s.clone()),
        Some(other) => {
            return Err(DecodeError::new(format!(
                "field `namespace`: expected a string, got {other}"
            )))
        }
    }
    match obj.get("tags") {
        None | Some(Value::Null) => {}
        Some(Value::Object(tags)) => {
            for (k, v) in tags {
                let v = v.as_str().ok_or_else(|| {
                    DecodeError::new(format!("field `tags`: value of {k:?} is not a string"))
                })?;
                meta.tags.insert(k.clone(), v.to_owned());
            }
        }
        Some(other) => {
            return Err(DecodeError::new(format!(
                "field `tags`: expected an object of strings, got {other}"
            )))
        }
    }
    Ok(meta)
}

/// Parse a draft (no `cursor`/`at` needed; they are ignored if present).
/// `family` is the stream it is published to; a different `"family"` in the
/// object is an error.
pub fn new_event_from_json(
    value: &Value,
    family: Option<Family>,
) -> Result<(NewEvent, EventMeta), DecodeError> {
    let obj = as_object(value)?;
    let family = family_of(obj, family)?;
    let draft = decode_new_event(family, obj)?;
    Ok((draft, meta_of(obj)?))
}

/// Parse a published event with its metadata (the inverse of [`event_to_json`]).
pub fn event_from_json(value: &Value) -> Result<(StreamEvent, EventMeta), DecodeError> {
    let obj = as_object(value)?;
    let (draft, meta) = new_event_from_json(value, None)?;
    let cursor = match obj.get("cursor") {
        Some(Value::String(s)) => s
            .parse::<StreamCursor>()
            .map_err(|e| DecodeError::new(format!("field `cursor`: {e}")))?,
        _ => return Err(DecodeError::new("field `cursor`: missing or not a string")),
    };
    let at = obj
        .get("at")
        .and_then(Value::as_i64)
        .ok_or_else(|| DecodeError::new("field `at`: missing or not an integer"))?;
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
    use crate::stream_subscribe::encode_memory;

    #[test]
    fn every_variant_round_trips_through_json_with_metadata() {
        let meta = EventMeta::new()
            .with_namespace("billing")
            .with_tag("region", "eu");
        for (i, draft) in crate::stream_events::sample_drafts()
            .into_iter()
            .enumerate()
        {
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
            crate::stream_events::CompletionOutcome::Other("timed_out".into()),
        );
        let json = new_event_to_json(&draft, &EventMeta::new());
        assert_eq!(json["type"], "other");
        assert_eq!(json["outcome"], "timed_out");
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
