//! The Server-Sent Events wire format of each message the gateway sends.
//!
//! - event: `id: CURSOR`, `event: KIND`, `data: JSON` (one line);
//! - position: `id: CURSOR`, `event: ff-position`, `data:
//!   {"cursor":CURSOR,"reason":REASON}` — the `id:` moves the client's
//!   `Last-Event-ID`, the named event hands the same position to page code
//!   (an `EventSource` never dispatches an id-only message);
//! - error: `event: ff-error` with a JSON `data:` line (and `id:` when the
//!   error has a position to resume from, e.g. a corrupt entry);
//! - keep-alive: the comment `: keep-alive`.
//!
//! Cursor text is base64url and kinds are fixed lower-case names, and
//! compact JSON escapes every control character, so no field can contain a
//! line break.

use bytes::Bytes;
use ff_core::stream_events::{event_to_json, EventMeta, StreamEvent};
use ff_core::stream_subscribe::StreamCursor;
use serde_json::Value;

/// The `event:` name of error messages (`error` is reserved by `EventSource`).
pub const ERROR_EVENT: &str = "ff-error";

/// The `event:` name of position messages: the start position, checkpoints,
/// and a client's reaching or leaving the live subscription.
pub const POSITION_EVENT: &str = "ff-position";

/// Why a position message was sent (its JSON `reason`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PositionReason {
    /// The resolved start position, sent at once on connect.
    Start,
    /// A filtered client passed over events up to here.
    Checkpoint,
    /// The client has been sent its backlog (what the live subscription had
    /// delivered when it joined it, or, with none open, what was committed
    /// before its catch-up reader started); events now arrive as published.
    CaughtUp,
    /// The client, once caught up, fell behind the live subscription and
    /// catches up again from here.
    Behind,
}

impl PositionReason {
    fn as_str(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Checkpoint => "checkpoint",
            Self::CaughtUp => "caught-up",
            Self::Behind => "behind",
        }
    }
}

/// The keep-alive comment.
pub(crate) const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";

/// Append an event message.
pub(crate) fn push_event(out: &mut Vec<u8>, event: &StreamEvent, meta: &EventMeta) {
    let data = event_to_json(event, Some(meta)).to_string();
    push_message(
        out,
        Some(event.cursor()),
        Some(event.kind().as_str()),
        &data,
    );
}

/// Append an event message that names `cursor` (in `id:` and the JSON's
/// `"cursor"`) instead of the event's own: a client's merged position.
pub(crate) fn push_event_at(
    out: &mut Vec<u8>,
    event: &StreamEvent,
    meta: &EventMeta,
    cursor: &StreamCursor,
) {
    let mut json = event_to_json(event, Some(meta));
    json["cursor"] = cursor.to_string().into();
    push_message(
        out,
        Some(cursor),
        Some(event.kind().as_str()),
        &json.to_string(),
    );
}

/// One event message as shared bytes (what the fan-out hub broadcasts).
pub(crate) fn event_frame(event: &StreamEvent, meta: &EventMeta) -> Bytes {
    let mut out = Vec::with_capacity(256);
    push_event(&mut out, event, meta);
    Bytes::from(out)
}

/// Append a position message.
pub(crate) fn push_position(out: &mut Vec<u8>, cursor: &StreamCursor, reason: PositionReason) {
    let text = cursor.to_string();
    out.extend_from_slice(b"id: ");
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(b"\nevent: ");
    out.extend_from_slice(POSITION_EVENT.as_bytes());
    // Cursor text is base64url and the reason a fixed name: nothing to escape.
    out.extend_from_slice(b"\ndata: {\"cursor\":\"");
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(b"\",\"reason\":\"");
    out.extend_from_slice(reason.as_str().as_bytes());
    out.extend_from_slice(b"\"}\n\n");
}

/// Append an `ff-error` message, with `id:` when `cursor` is given.
pub(crate) fn push_error(out: &mut Vec<u8>, cursor: Option<&StreamCursor>, json: &Value) {
    push_message(out, cursor, Some(ERROR_EVENT), &json.to_string());
}

/// Append a message with the given fields; `data` must be one line.
fn push_message(out: &mut Vec<u8>, id: Option<&StreamCursor>, event: Option<&str>, data: &str) {
    debug_assert!(!data.contains('\n') && !data.contains('\r'));
    if let Some(id) = id {
        out.extend_from_slice(b"id: ");
        out.extend_from_slice(id.to_string().as_bytes());
        out.push(b'\n');
    }
    if let Some(event) = event {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(event.as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(data.as_bytes());
    out.extend_from_slice(b"\n\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use ff_backend_memory::cursor_codec::encode_memory;
    use ff_core::stream_events::Family;
    use ff_core::stream_events::{CompletionOutcome, NewEvent};
    use ff_core::types::{ExecutionId, TimestampMs};

    #[test]
    fn an_event_is_id_event_and_one_data_line() {
        let cursor = encode_memory(Family::Completion, 1, 2);
        let event = NewEvent::completion(
            ExecutionId::new(1),
            CompletionOutcome::Other("line\nbreak".into()),
        )
        .into_event(cursor.clone(), TimestampMs(5));
        let frame = event_frame(&event, &EventMeta::new().with_namespace("n\r"));
        let text = std::str::from_utf8(&frame).unwrap();
        let lines: Vec<&str> = text.split('\n').collect();
        assert_eq!(lines[0], format!("id: {cursor}"));
        assert_eq!(lines[1], "event: other");
        assert!(lines[2].starts_with("data: {"));
        assert_eq!(&lines[3..], ["", ""]);
        let json: Value = serde_json::from_str(&lines[2][6..]).unwrap();
        assert_eq!(json["outcome"], "line\nbreak");
        assert_eq!(json["cursor"], cursor.to_string());
    }

    #[test]
    fn position_and_error_messages() {
        let cursor = encode_memory(Family::Completion, 1, 2);
        let mut out = Vec::new();
        push_position(&mut out, &cursor, PositionReason::Checkpoint);
        push_error(&mut out, None, &serde_json::json!({"error": "x"}));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!(
                "id: {cursor}\nevent: ff-position\ndata: {{\"cursor\":\"{cursor}\",\"reason\":\"checkpoint\"}}\n\n\
                 event: ff-error\ndata: {{\"error\":\"x\"}}\n\n"
            )
        );
    }

    #[test]
    fn a_position_message_is_json_naming_the_cursor_and_why() {
        let cursor = encode_memory(Family::Completion, 7, 9);
        for (reason, name) in [
            (PositionReason::Start, "start"),
            (PositionReason::Checkpoint, "checkpoint"),
            (PositionReason::CaughtUp, "caught-up"),
            (PositionReason::Behind, "behind"),
        ] {
            let mut out = Vec::new();
            push_position(&mut out, &cursor, reason);
            let text = String::from_utf8(out).unwrap();
            let data = text.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
            let json: Value = serde_json::from_str(data).unwrap();
            assert_eq!(
                json,
                serde_json::json!({"cursor": cursor.to_string(), "reason": name})
            );
        }
    }
}
