//! Appending events: the `XADD` command for one event (which callers can
//! put in their own transaction) and all-or-none batches.

use ff_core::backend::validate_new_event;
use ff_core::engine_error::EngineError;
use ff_core::stream_events::record::{Field, SCHEMA_VERSION};
use ff_core::stream_events::{EventMeta, Family, NewEvent};
use std::collections::BTreeMap;

use ff_core::stream_subscribe::{StreamCursor, ValkeyPosition};
use redis::{Cmd, Value};

use crate::config::Retention;
use crate::error::{reply_text, server_error, unexpected};
use crate::id;
use crate::inner::Inner;
use crate::limits::MAX_ENTRY_BYTES;
use crate::partition::{event_cursor, partition_of};
use crate::retention::retention_cmd;
use crate::routing::redirect::is_demotion;
use crate::routing::{Retry, Transaction};
use crate::witness;

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

/// The [witness](crate::witness) of the entry an [`xadd`] command
/// appends: of its fields, every argument after `XADD key *`.
pub(crate) fn xadd_witness(cmd: &Cmd) -> u32 {
    witness::digest(cmd.args_iter().skip(3).map(|a| match a {
        redis::Arg::Simple(b) => b,
        redis::Arg::Cursor => &[][..],
    }))
}

/// The events of one batch that go to one partition: appended together
/// in one `MULTI`/`EXEC` (or one plain `XADD`), with the retention of each
/// touched family of that partition when it is due.
struct PartitionWrite {
    partition: u16,
    /// Indexes into the batch, in batch order.
    events: Vec<usize>,
    /// Their entries' witnesses, in the same order.
    witnesses: Vec<u32>,
    cmds: Vec<Cmd>,
    /// The families whose retention runs after the appends.
    trimmed: Vec<Family>,
    /// What is sent: built from `cmds` once they are all known.
    request: Option<Request>,
}

/// A partition's write as sent.
enum Request {
    /// One `XADD`, atomic by itself: no `MULTI`/`EXEC` (the shorter path
    /// live publishers take).
    Single(Cmd),
    /// Everything else, and any write followed by `WAIT`.
    Transaction(Transaction),
}

/// Append `events` (after validating all of them): one `MULTI`/`EXEC` per
/// partition they go to, all partitions at once. With one partition the
/// batch is all-or-none; across partitions each partition's part is (a
/// cluster has no cross-slot transactions), and an error names the
/// partitions whose part was not acknowledged.
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
    let partitions = inner.keys.partitions();
    let mut writes: BTreeMap<u16, PartitionWrite> = BTreeMap::new();
    for (i, (event, meta)) in events.iter().enumerate() {
        let partition = partition_of(event.execution_id(), partitions);
        let write = writes.entry(partition).or_insert_with(|| PartitionWrite {
            partition,
            events: Vec::new(),
            witnesses: Vec::new(),
            cmds: Vec::new(),
            trimmed: Vec::new(),
            request: None,
        });
        write.events.push(i);
        let cmd = xadd(inner.keys.stream(event.family(), partition), event, meta)?;
        write.witnesses.push(xadd_witness(&cmd));
        write.cmds.push(cmd);
    }
    for write in writes.values_mut() {
        for family in Family::ALL.iter().copied() {
            let touched = write.events.iter().any(|&i| events[i].0.family() == family);
            if !touched {
                continue;
            }
            // Checked before the command is built: it is due at most once
            // per interval, and the command carries the whole script.
            let retention = inner.config.retention(family);
            if retention == Retention::None || !inner.retention.due(family, write.partition) {
                continue;
            }
            let key = inner.keys.stream(family, write.partition);
            let record = inner.keys.trim_record(family, write.partition);
            if let Some(cmd) = retention_cmd(key, record, retention) {
                write.cmds.push(cmd);
                write.trimmed.push(family);
            }
        }
        let cmds = std::mem::take(&mut write.cmds);
        write.request = Some(match (inner.config.replica_acks, cmds.len()) {
            (None, 1) => Request::Single(cmds.into_iter().next().expect("one command")),
            (None, _) => Request::Transaction(Transaction::new(cmds)),
            (Some((replicas, timeout)), _) => {
                let mut wait = redis::cmd("WAIT");
                wait.arg(replicas).arg(
                    u64::try_from(timeout.as_millis())
                        .unwrap_or(u64::MAX)
                        .max(1),
                );
                Request::Transaction(Transaction::new(cmds).acknowledged_by(wait))
            }
        });
    }
    let context = || {
        format!(
            "publishing {} event(s) to {}",
            events.len(),
            inner.url.redacted()
        )
    };
    let results = futures::future::join_all(
        writes
            .values()
            .map(|write| send(inner, write, &events, &context)),
    )
    .await;
    let mut cursors: Vec<Option<StreamCursor>> = vec![None; events.len()];
    let mut failed: Vec<(u16, EngineError)> = Vec::new();
    for (write, result) in writes.values().zip(results) {
        match result {
            Ok(ids) => {
                for ((&i, &witness), at) in write.events.iter().zip(&write.witnesses).zip(ids) {
                    cursors[i] = Some(event_cursor(
                        events[i].0.family(),
                        partitions,
                        write.partition,
                        at,
                        Some(witness),
                    ));
                }
            }
            Err(e) => failed.push((write.partition, e)),
        }
    }
    match failed.len() {
        0 => Ok(cursors
            .into_iter()
            .map(|c| c.expect("every event written"))
            .collect()),
        n if n == writes.len() => Err(failed.swap_remove(0).1),
        _ => {
            let list: Vec<String> = failed.iter().map(|(p, _)| p.to_string()).collect();
            let (_, first) = failed.swap_remove(0);
            Err(partly_applied(first, &list.join(", ")))
        }
    }
}

/// Send one partition's appends; the entry ids of its events, in order.
async fn send(
    inner: &Inner,
    write: &PartitionWrite,
    events: &[(NewEvent, EventMeta)],
    context: &(dyn Fn() -> String + Sync),
) -> Result<Vec<ValkeyPosition>, EngineError> {
    let family = events[write.events[0]].0.family();
    let slot = inner.keys.slot(family, write.partition);
    let reply = match write.request.as_ref().expect("built before sending") {
        Request::Single(xadd) => inner
            .router
            .command(slot, xadd, Retry::Once)
            .await
            .map(|reply| Value::Array(vec![reply]))
            .map_err(|e| inner.fail(e, context()))?,
        Request::Transaction(transaction) => {
            let (reply, acks) = inner
                .router
                .transaction(slot, transaction, Retry::Once)
                .await
                .map_err(|e| inner.fail(e, context()))?;
            if let (Some(acks), Some((replicas, timeout))) = (acks, inner.config.replica_acks) {
                let acks = acks.map_err(|e| {
                    unacknowledged(
                        context,
                        write.partition,
                        format!("their acknowledgement could not be read ({e})"),
                    )
                })?;
                check_acks(inner, &acks, replicas, timeout, write.partition, context)?;
            }
            reply
        }
    };
    let n = write.events.len();
    let replies = match reply {
        Value::Array(replies) if replies.len() == n + write.trimmed.len() => replies,
        Value::ServerError(e) => {
            return Err(server_error(
                &reply_text(e.code(), e.details()),
                inner.account(),
                &context(),
            ))
        }
        other => return Err(unexpected(&context(), format!("EXEC returned {other:?}"))),
    };
    for (family, reply) in write.trimmed.iter().zip(&replies[n..]) {
        if let Value::ServerError(e) = reply {
            let error = server_error(
                &reply_text(e.code(), e.details()),
                inner.account(),
                "trimming",
            );
            tracing::warn!(%family, %error, "ff valkey: trimming to the configured retention failed");
        }
    }
    write
        .events
        .iter()
        .zip(&replies)
        .map(|(&i, reply)| match reply {
            Value::BulkString(b) => id::parse(b)
                .ok_or_else(|| unexpected(&context(), format!("XADD returned {reply:?}"))),
            Value::ServerError(e) => Err(server_error(
                &reply_text(e.code(), e.details()),
                inner.account(),
                &format!(
                    "{} (other events of this batch may have been stored): XADD to {}",
                    context(),
                    inner.keys.stream(events[i].0.family(), write.partition)
                ),
            )),
            other => Err(unexpected(&context(), format!("XADD returned {other:?}"))),
        })
        .collect()
}

/// `Ok` when `WAIT` replied that at least `replicas` replicas have the
/// partition's writes. A `WAIT` ended by a failover (the primary was
/// demoted while it waited: `UNBLOCKED`, `REDIRECT`, `MOVED`) is the same
/// `Transport` error as too few acknowledgements: the events are stored
/// on the demoted primary and it is unknown whether its successor has
/// them, so only the caller may decide to publish again.
fn check_acks(
    inner: &Inner,
    acks: &Value,
    replicas: u16,
    timeout: std::time::Duration,
    partition: u16,
    context: &(dyn Fn() -> String + Sync),
) -> Result<(), EngineError> {
    match acks {
        Value::Int(n) if *n >= i64::from(replicas) => Ok(()),
        Value::Int(n) => Err(EngineError::transport(
            crate::error::BACKEND,
            crate::error::InContext::new(
                context(),
                std::io::Error::other(format!(
                    "partition {partition}'s events are stored on its primary, but {n} of the {replicas} replica(s) asked for acknowledged them within {timeout:?}: they can be lost if that primary fails now; publish again if they must not be (a duplicate may result)"
                )),
            ),
        )),
        Value::ServerError(e) if demoted(e.code(), e.details().unwrap_or("")) => {
            Err(unacknowledged(
                context,
                partition,
                format!(
                    "it was demoted (a failover) before {replicas} replica(s) acknowledged them ({})",
                    reply_text(e.code(), e.details())
                ),
            ))
        }
        Value::ServerError(e) => Err(server_error(
            &reply_text(e.code(), e.details()),
            inner.account(),
            &format!("{}: WAIT", context()),
        )),
        other => Err(unexpected(&context(), format!("WAIT returned {other:?}"))),
    }
}

/// Whether `WAIT`'s refusal `code detail` says the node stopped being a
/// primary after the write: it ended the wait (`UNBLOCKED`, `REDIRECT`,
/// `MOVED`), or it was a replica already when the `WAIT` arrived.
fn demoted(code: &str, detail: &str) -> bool {
    is_demotion(code)
        || code == "MOVED"
        || code == "READONLY"
        || (code == "ERR" && detail.contains("used with replica"))
}

/// The `Transport` error of events stored on partition `partition`'s
/// primary whose replicas' acknowledgement is unknown (`why`).
fn unacknowledged(
    context: &(dyn Fn() -> String + Sync),
    partition: u16,
    why: String,
) -> EngineError {
    EngineError::transport(
        crate::error::BACKEND,
        crate::error::InContext::new(
            context(),
            std::io::Error::other(format!(
                "partition {partition}'s events are stored on its primary, but {why}: they may be lost in a failover; publish again if they must not be (a duplicate may result)"
            )),
        ),
    )
}

/// `error` of a batch whose other partitions were stored: says which
/// partitions' parts were not acknowledged.
fn partly_applied(error: EngineError, partitions: &str) -> EngineError {
    let note = format!(
        "partitions {partitions} of this batch were not acknowledged (each partition's part is stored whole or not at all; the others are stored)"
    );
    match error {
        EngineError::Backend { backend, detail } => EngineError::Backend {
            backend,
            detail: format!("{note}: {detail}"),
        },
        EngineError::Transport { backend, source } => EngineError::Transport {
            backend,
            source: std::sync::Arc::new(crate::error::InContext::new(note, source)),
        },
        other => other,
    }
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
    fn a_wait_ended_or_refused_by_a_demotion_is_recognised() {
        for (code, detail) in [
            ("UNBLOCKED", "force unblock from blocking operation, instance state changed (master -> replica?)"),
            ("MOVED", "3999 127.0.0.1:7001"),
            ("REDIRECT", "127.0.0.1:7001"),
            ("ERR", "WAIT cannot be used with replica instances. Please also note …"),
        ] {
            assert!(demoted(code, detail), "{code} {detail}");
        }
        assert!(!demoted("ERR", "unknown command 'WAIT'"));
        assert!(!demoted(
            "NOPERM",
            "User p has no permissions to run the 'wait' command"
        ));
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
