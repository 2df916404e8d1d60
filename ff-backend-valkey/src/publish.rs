//! Appending events: the `XADD` command for one event (which callers can
//! put in their own transaction) and all-or-none batches.

use ff_core::backend::validate_new_event;
use ff_core::engine_error::EngineError;
use ff_core::stream_events::record::{Field, SCHEMA_VERSION};
use ff_core::stream_events::{EventMeta, Family, NewEvent};
use ff_core::stream_subscribe::{encode_valkey, StreamCursor};
use redis::{Cmd, Value};

use crate::error::{reply_text, server_error, unexpected};
use crate::id;
use crate::inner::Inner;
use crate::limits::MAX_ENTRY_BYTES;
use crate::retention::retention_cmd;

/// `XADD key * v 1 <field value>… [namespace ns] [tags {json}]`, or
/// `Validation` when the entry would be larger than [`MAX_ENTRY_BYTES`]
/// (subscribers would read it as `Corrupt`).
pub(crate) fn xadd(key: &str, event: &NewEvent, meta: &EventMeta) -> Result<Cmd, EngineError> {
    let mut cmd = Cmd::with_capacity(18, 256);
    cmd.arg("XADD")
        .arg(key)
        .arg("*")
        .arg(Field::SchemaVersion.name())
        .arg(SCHEMA_VERSION);
    for (field, value) in event.fields() {
        if let Some(value) = value {
            cmd.arg(field.name()).arg(value);
        }
    }
    if let Some(ns) = &meta.namespace {
        cmd.arg(Field::Namespace.name()).arg(ns);
    }
    if !meta.tags.is_empty() {
        cmd.arg(Field::Tags.name()).arg(meta.tags_json());
    }
    // The entry: every argument after `XADD key *`, plus the id (≤ 41 bytes).
    let size: usize = cmd
        .args_iter()
        .skip(3)
        .map(|a| match a {
            redis::Arg::Simple(b) => b.len(),
            redis::Arg::Cursor => 0,
        })
        .sum::<usize>()
        + 41;
    if size > MAX_ENTRY_BYTES {
        return Err(EngineError::validation(format!(
            "the {} event's stream entry would be {size} bytes, more than the {MAX_ENTRY_BYTES} bytes a Valkey entry may hold; use fewer or shorter tags",
            event.family()
        )));
    }
    Ok(cmd)
}

/// Append `events` in one `MULTI`/`EXEC` (after validating all of them),
/// running each touched family's retention when it is due.
pub(crate) async fn publish_batch(
    inner: &Inner,
    events: Vec<(NewEvent, EventMeta)>,
) -> Result<Vec<StreamCursor>, EngineError> {
    for (event, meta) in &events {
        validate_new_event(event, meta)?;
    }
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::Pipeline::with_capacity(events.len() + 4);
    pipe.atomic();
    let mut touched = [false; 4];
    for (event, meta) in &events {
        let family = event.family();
        touched[usize::from(family.cursor_byte() - 1)] = true;
        pipe.add_command(xadd(inner.keys.stream(family), event, meta)?);
    }
    let mut trimmed = Vec::new();
    for family in Family::ALL.iter().copied() {
        if !touched[usize::from(family.cursor_byte() - 1)] {
            continue;
        }
        let key = inner.keys.stream(family);
        let record = inner.keys.trim_record(family);
        if let Some(cmd) = retention_cmd(key, record, inner.config.retention(family)) {
            if inner.retention.due(family) {
                pipe.add_command(cmd);
                trimmed.push(family);
            }
        }
    }
    let context = || {
        format!(
            "publishing {} event(s) to {}",
            events.len(),
            inner.url.redacted()
        )
    };
    let reply = match pipe.cmd_iter().next() {
        // One XADD is atomic by itself: skip MULTI/EXEC (a shorter path
        // for live publishers).
        Some(xadd) if pipe.len() == 1 => inner
            .conn
            .command(xadd)
            .await
            .map(|reply| Value::Array(vec![reply])),
        _ => inner.conn.transaction(&pipe).await,
    }
    .map_err(|e| inner.fail(e, context()))?;
    let replies = match reply {
        Value::Array(replies) if replies.len() == events.len() + trimmed.len() => replies,
        Value::ServerError(e) => {
            return Err(server_error(
                &reply_text(e.code(), e.details()),
                inner.account(),
                &context(),
            ))
        }
        other => return Err(unexpected(&context(), format!("EXEC returned {other:?}"))),
    };
    for (family, reply) in trimmed.iter().zip(&replies[events.len()..]) {
        if let Value::ServerError(e) = reply {
            let error = server_error(
                &reply_text(e.code(), e.details()),
                inner.account(),
                "trimming",
            );
            tracing::warn!(%family, %error, "ff valkey: trimming to the configured retention failed");
        }
    }
    events
        .iter()
        .zip(&replies)
        .map(|((event, _), reply)| {
            let family = event.family();
            match reply {
                Value::BulkString(b) => id::parse(b)
                    .map(|p| encode_valkey(family, p.ms, p.seq))
                    .ok_or_else(|| unexpected(&context(), format!("XADD returned {reply:?}"))),
                Value::ServerError(e) => Err(server_error(
                    &reply_text(e.code(), e.details()),
                    inner.account(),
                    &format!(
                        "{} (other events of this batch may have been stored): XADD to {}",
                        context(),
                        inner.keys.stream(family)
                    ),
                )),
                other => Err(unexpected(&context(), format!("XADD returned {other:?}"))),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ff_core::stream_events::sample_drafts;

    fn args(cmd: &Cmd) -> Vec<String> {
        cmd.args_iter()
            .map(|a| match a {
                redis::Arg::Simple(b) => String::from_utf8_lossy(b).into_owned(),
                redis::Arg::Cursor => "<cursor>".into(),
            })
            .collect()
    }

    #[test]
    fn xadd_writes_the_version_every_present_field_and_the_metadata() {
        let draft = &sample_drafts()[11]; // signal delivery without optional fields
        let a = args(&xadd("ff:signal-delivery", draft, &EventMeta::new()).unwrap());
        assert_eq!(&a[..5], ["XADD", "ff:signal-delivery", "*", "v", "1"]);
        assert!(
            !a.contains(&"waitpoint_id".to_owned()),
            "None fields are omitted"
        );
        assert!(!a.contains(&"tags".to_owned()), "empty tags are omitted");
        let meta = EventMeta::new().with_namespace("ns").with_tag("k", "v");
        let a = args(&xadd("k", draft, &meta).unwrap());
        let tail = &a[a.len() - 4..];
        assert_eq!(tail, ["namespace", "ns", "tags", r#"{"k":"v"}"#]);
    }

    #[test]
    fn an_entry_larger_than_a_subscriber_reads_is_refused() {
        let draft = &sample_drafts()[11];
        let mut meta = EventMeta::new();
        for k in 0..64 {
            meta = meta.with_tag(format!("{k:0>1000}"), "\u{1}".repeat(1000));
        }
        assert!(validate_new_event(draft, &meta).is_ok(), "valid in ff-core");
        match xadd("k", draft, &meta) {
            Err(EngineError::Validation { detail }) => {
                assert!(detail.contains("65536"), "{detail}")
            }
            Err(other) => panic!("expected Validation, got {other}"),
            Ok(_) => panic!("an oversized entry was accepted"),
        }
    }
}
