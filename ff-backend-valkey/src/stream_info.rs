//! [`StreamState`]: what `XINFO STREAM` says about a family's stream —
//! read in the same transaction as the entries it judges, or on its own
//! (subscribe, bounds) — and, only when judging a position needs it, the
//! record of ff's last trim of it.
//!
//! Invariant: every read of a stream's state touches the stream's key
//! alone, so it is served wherever that key is, also while its slot
//! migrates (a read of two keys, one of them missing, is refused with
//! `TRYAGAIN` until the migration ends). The trim record — a key of its
//! own, existing only once ff's retention ran — is read after the state,
//! on its own, and only for a position just at the trimmed edge
//! ([`StreamState::needs_record`]). Read later than the state, it can only
//! be newer: a record written since (ff's retention removed more) no
//! longer matches the state's counters, so the position is judged expired
//! — a false alarm, never a silent gap.

use ff_core::engine_error::EngineError;
use ff_core::stream_events::Family;
use ff_core::stream_subscribe::ValkeyPosition;
use redis::Value;

use crate::error::{reply_text, server_error, unexpected};
use crate::id;
use crate::inner::Inner;
use crate::routing::{Retry, Transaction};
use crate::trim_record::TrimRecord;
use crate::witness;

/// A stream's metadata at one instant. An absent key is an empty stream
/// whose history is `0-0`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct StreamState {
    /// The id of the newest entry ever added (`last-generated-id`).
    pub(crate) last_generated: ValkeyPosition,
    /// The largest removed entry id ff (or `XDEL`) recorded
    /// (`max-deleted-entry-id`).
    pub(crate) max_deleted: ValkeyPosition,
    /// The oldest retained entry, if any.
    pub(crate) first: Option<ValkeyPosition>,
    /// The newest retained entry, if any.
    pub(crate) last: Option<ValkeyPosition>,
    /// That entry's [witness](crate::witness), if any.
    pub(crate) last_witness: Option<u32>,
    /// Retained entries.
    pub(crate) length: u64,
    /// Entries ever added (`entries-added`; `None` from servers before
    /// Redis 7.0, which cannot prove any trim harmless).
    pub(crate) entries_added: Option<u64>,
    /// The record of ff's last trim; `None` when the stored record is not
    /// one ff wrote, or was not read (then no trim is proven harmless).
    pub(crate) trim_record: Option<TrimRecord>,
    /// Whether the trim record was read (see [`StreamState::needs_record`]).
    pub(crate) record_read: bool,
}

impl StreamState {
    /// The state of a key that does not exist.
    pub(crate) const ABSENT: StreamState = StreamState {
        last_generated: id::ZERO,
        max_deleted: id::ZERO,
        first: None,
        last: None,
        last_witness: None,
        length: 0,
        entries_added: Some(0),
        trim_record: Some(TrimRecord::NONE),
        record_read: true,
    };

    /// Whether judging position `c` on this state needs the trim record,
    /// which was not read: `c` lies before the first retained entry, not
    /// just before it, and is the stream's `max-deleted-entry-id` — only
    /// then can the record prove that nothing after `c` was removed.
    pub(crate) fn needs_record(&self, c: ValkeyPosition) -> bool {
        !self.record_read
            && c == self.max_deleted
            && !self.never_lost_before(c)
            && self
                .first
                .is_some_and(|first| c < first && c != id::before(first))
    }

    /// Whether the stream's counters prove that nothing after `c` was ever
    /// removed although `c` lies before the first retained entry: `c` is
    /// the last entry ff's trim removed (or `0-0` on a stream that never
    /// lost an entry), and nothing was removed since.
    pub(crate) fn removals_end_at(&self, c: ValkeyPosition) -> bool {
        c == self.max_deleted
            && (self.never_lost_before(c)
                || self.trim_record.is_some_and(|r| {
                    r.through == c && r.accounts_for(self.entries_added, self.length)
                }))
    }

    /// `c` is `0-0` and the counters show that no entry was ever removed:
    /// nothing is missing after it, whatever the trim record says.
    fn never_lost_before(&self, c: ValkeyPosition) -> bool {
        c == id::ZERO && TrimRecord::NONE.accounts_for(self.entries_added, self.length)
    }

    /// This state with the trim record read beside it: the reply to `GET`
    /// of the record key (`None` when the key does not exist).
    pub(crate) fn with_record(mut self, record: Option<&[u8]>) -> Self {
        self.trim_record = match record {
            None => Some(TrimRecord::NONE),
            Some(text) => TrimRecord::parse(text),
        };
        self.record_read = true;
        self
    }

    /// Read the fields of an `XINFO STREAM` reply. `Err` names what was
    /// missing or malformed.
    pub(crate) fn from_fields<'a>(
        fields: impl IntoIterator<Item = (&'a [u8], InfoValue<'a>)>,
    ) -> Result<Self, String> {
        let mut state = StreamState {
            entries_added: None,
            trim_record: None,
            record_read: false,
            ..StreamState::ABSENT
        };
        let mut saw_last_generated = false;
        for (name, value) in fields {
            match (name, value) {
                (b"length", InfoValue::Int(n)) => {
                    state.length = u64::try_from(n).map_err(|_| "negative length")?
                }
                (b"last-generated-id", InfoValue::Bytes(b)) => {
                    state.last_generated = id::parse(b).ok_or("bad last-generated-id")?;
                    saw_last_generated = true;
                }
                (b"max-deleted-entry-id", InfoValue::Bytes(b)) => {
                    state.max_deleted = id::parse(b).ok_or("bad max-deleted-entry-id")?
                }
                (b"entries-added", InfoValue::Int(n)) => {
                    state.entries_added =
                        Some(u64::try_from(n).map_err(|_| "negative entries-added")?)
                }
                (b"first-entry", v) => state.first = entry_id(v, "first-entry")?,
                (b"last-entry", v) => {
                    state.last = entry_id(v, "last-entry")?;
                    state.last_witness = match v {
                        InfoValue::Entry { witness, .. } => Some(witness),
                        _ => None,
                    };
                }
                (
                    b"length" | b"last-generated-id" | b"max-deleted-entry-id" | b"entries-added",
                    _,
                ) => {
                    return Err(format!(
                        "XINFO STREAM field {} has an unexpected type",
                        String::from_utf8_lossy(name)
                    ))
                }
                _ => {}
            }
        }
        if !saw_last_generated {
            return Err("XINFO STREAM has no last-generated-id".into());
        }
        Ok(state)
    }

    /// Parse an `XINFO STREAM` reply of the general-purpose client (RESP2
    /// flat array or RESP3 map).
    pub(crate) fn from_value(reply: &Value) -> Result<Self, String> {
        fn bytes(v: &Value) -> Option<&[u8]> {
            match v {
                Value::BulkString(b) => Some(b),
                Value::SimpleString(s) => Some(s.as_bytes()),
                _ => None,
            }
        }
        fn value(v: &Value) -> InfoValue<'_> {
            match v {
                Value::Int(n) => InfoValue::Int(*n),
                Value::Nil => InfoValue::Nil,
                Value::Array(parts) => InfoValue::Entry {
                    id: parts.first().and_then(bytes),
                    witness: witness::digest(
                        match parts.get(1) {
                            Some(Value::Array(fields)) => fields.as_slice(),
                            _ => &[],
                        }
                        .iter()
                        .map(|f| bytes(f).unwrap_or_default()),
                    ),
                },
                other => bytes(other).map_or(InfoValue::Other, InfoValue::Bytes),
            }
        }
        let pairs: Vec<(&[u8], InfoValue<'_>)> = match reply {
            Value::Array(items) => items
                .chunks_exact(2)
                .filter_map(|p| Some((bytes(&p[0])?, value(&p[1]))))
                .collect(),
            Value::Map(pairs) => pairs
                .iter()
                .filter_map(|(k, v)| Some((bytes(k)?, value(v))))
                .collect(),
            other => return Err(format!("XINFO STREAM returned {other:?}")),
        };
        Self::from_fields(pairs)
    }
}

/// A value in an `XINFO STREAM` reply, as far as ff reads it.
#[derive(Clone, Copy, Debug)]
pub(crate) enum InfoValue<'a> {
    /// A string.
    Bytes(&'a [u8]),
    /// An integer.
    Int(i64),
    /// Nil (no entry).
    Nil,
    /// An entry `[id, fields]`: its id and its fields' witness.
    Entry { id: Option<&'a [u8]>, witness: u32 },
    /// Anything else.
    Other,
}

/// `first-entry` / `last-entry`: an entry or nil.
fn entry_id(v: InfoValue<'_>, what: &str) -> Result<Option<ValkeyPosition>, String> {
    match v {
        InfoValue::Nil => Ok(None),
        InfoValue::Entry { id: Some(b), .. } => id::parse(b)
            .map(Some)
            .ok_or_else(|| format!("bad {what} id in XINFO STREAM")),
        other => Err(format!("bad {what} in XINFO STREAM: {other:?}")),
    }
}

/// The state of `family`'s partition `partition` now: `XINFO STREAM` on
/// the node serving it (the trim record not read).
pub(crate) async fn stream_state(
    inner: &Inner,
    family: Family,
    partition: u16,
    context: &str,
) -> Result<StreamState, EngineError> {
    let reply = inner
        .router
        .transaction(
            inner.keys.slot(family, partition),
            &Transaction::new(state_request(inner, family, partition)),
            Retry::Idempotent,
        )
        .await
        .map(|(reply, _)| reply)
        .map_err(|e| inner.fail(e, context))?;
    match reply {
        Value::Array(parts) => match parts.as_slice() {
            [info] => parse_state(info, inner.account(), context),
            _ => Err(unexpected(context, format!("EXEC returned {parts:?}"))),
        },
        Value::ServerError(e) => Err(inner.fail(e.into(), context)),
        other => Err(unexpected(context, format!("EXEC returned {other:?}"))),
    }
}

/// [`stream_state`], and the [witness](crate::witness) of the entry at
/// `at` when given (`None` when the stream holds no entry there), read in
/// the same transaction.
pub(crate) async fn stream_state_at(
    inner: &Inner,
    family: Family,
    partition: u16,
    at: Option<ValkeyPosition>,
    context: &str,
) -> Result<(StreamState, Option<u32>), EngineError> {
    let Some(at) = at else {
        return Ok((stream_state(inner, family, partition, context).await?, None));
    };
    let mut range = redis::cmd("XRANGE");
    let id = id::format(at);
    range
        .arg(inner.keys.stream(family, partition))
        .arg(&id)
        .arg(&id);
    let [info] = state_request(inner, family, partition);
    let reply = inner
        .router
        .transaction(
            inner.keys.slot(family, partition),
            &Transaction::new([info, range]),
            Retry::Idempotent,
        )
        .await
        .map(|(reply, _)| reply)
        .map_err(|e| inner.fail(e, context))?;
    let parts = match reply {
        Value::Array(parts) => parts,
        Value::ServerError(e) => return Err(inner.fail(e.into(), context)),
        other => return Err(unexpected(context, format!("EXEC returned {other:?}"))),
    };
    let [info, found] = parts.as_slice() else {
        return Err(unexpected(context, format!("EXEC returned {parts:?}")));
    };
    let state = parse_state(info, inner.account(), context)?;
    Ok((
        state,
        entry_witness(found, at).map_err(|why| unexpected(context, why))?,
    ))
}

/// The witness of the entry at `at` from an `XRANGE at at` reply.
fn entry_witness(reply: &Value, at: ValkeyPosition) -> Result<Option<u32>, String> {
    let bytes = |v: &Value| match v {
        Value::BulkString(b) => b.clone(),
        _ => Vec::new(),
    };
    match reply {
        Value::Array(entries) if entries.is_empty() => Ok(None),
        Value::Array(entries) => match entries.as_slice() {
            [Value::Array(entry)] => match entry.as_slice() {
                [Value::BulkString(found), Value::Array(fields)]
                    if id::parse(found) == Some(at) =>
                {
                    let fields: Vec<Vec<u8>> = fields.iter().map(bytes).collect();
                    Ok(Some(witness::digest(fields.iter().map(Vec::as_slice))))
                }
                _ => Err(format!("XRANGE returned {entry:?}")),
            },
            _ => Err(format!(
                "XRANGE returned {} entries for one id",
                entries.len()
            )),
        },
        other => Err(format!("XRANGE returned {other:?}")),
    }
}

/// `XINFO STREAM` of a stream (its reply: see [`parse_state`]).
pub(crate) fn state_request(inner: &Inner, family: Family, partition: u16) -> [redis::Cmd; 1] {
    let mut info = redis::cmd("XINFO");
    info.arg("STREAM").arg(inner.keys.stream(family, partition));
    [info]
}

/// `state` ready to judge position `c`: with the trim record read (`GET`,
/// on its own) when [`StreamState::needs_record`] says so.
pub(crate) async fn ready_to_judge(
    inner: &Inner,
    family: Family,
    partition: u16,
    state: StreamState,
    c: ValkeyPosition,
    context: &str,
) -> Result<StreamState, EngineError> {
    if !state.needs_record(c) {
        return Ok(state);
    }
    let mut get = redis::cmd("GET");
    get.arg(inner.keys.trim_record(family, partition));
    let reply = inner
        .router
        .command(inner.keys.slot(family, partition), &get, Retry::Idempotent)
        .await
        .map_err(|e| inner.fail(e, context))?;
    match reply {
        Value::Nil => Ok(state.with_record(None)),
        Value::BulkString(b) => Ok(state.with_record(Some(&b))),
        Value::ServerError(e) => Err(server_error(
            &reply_text(e.code(), e.details()),
            inner.account(),
            &format!("{context}: GET of the trim record"),
        )),
        other => Err(unexpected(context, format!("GET returned {other:?}"))),
    }
}

/// Parse the reply of [`state_request`] on a shared connection; "no such
/// key" is the absent stream.
pub(crate) fn parse_state(
    reply: &Value,
    account: &str,
    context: &str,
) -> Result<StreamState, EngineError> {
    match reply {
        Value::ServerError(e) if e.details().is_some_and(|d| d.contains("no such key")) => {
            Ok(StreamState::ABSENT)
        }
        Value::ServerError(e) => Err(server_error(
            &reply_text(e.code(), e.details()),
            account,
            &format!("{context}: XINFO STREAM"),
        )),
        other => StreamState::from_value(other).map_err(|why| unexpected(context, why)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn p(ms: u64, seq: u64) -> ValkeyPosition {
        ValkeyPosition { ms, seq }
    }

    #[test]
    fn parses_the_fields_valkey_9_reports() {
        let entry =
            |id: &str| Value::Array(vec![bulk(id), Value::Array(vec![bulk("a"), bulk("1")])]);
        let reply = Value::Array(vec![
            bulk("length"),
            Value::Int(2),
            bulk("radix-tree-keys"),
            Value::Int(1),
            bulk("last-generated-id"),
            bulk("5-0"),
            bulk("max-deleted-entry-id"),
            bulk("3-0"),
            bulk("entries-added"),
            Value::Int(5),
            bulk("recorded-first-entry-id"),
            bulk("4-0"),
            bulk("groups"),
            Value::Int(0),
            bulk("first-entry"),
            entry("4-0"),
            bulk("last-entry"),
            entry("5-0"),
        ]);
        let s = StreamState::from_value(&reply).unwrap();
        assert_eq!(
            s,
            StreamState {
                last_generated: p(5, 0),
                max_deleted: p(3, 0),
                first: Some(p(4, 0)),
                last: Some(p(5, 0)),
                last_witness: Some(witness::digest([&b"a"[..], b"1"])),
                length: 2,
                entries_added: Some(5),
                trim_record: None,
                record_read: false,
            }
        );
    }

    #[test]
    fn empty_streams_have_no_entries_and_garbage_is_an_error() {
        let reply = Value::Map(vec![
            (bulk("length"), Value::Int(0)),
            (bulk("last-generated-id"), bulk("9-1")),
            (bulk("first-entry"), Value::Nil),
            (bulk("last-entry"), Value::Nil),
        ]);
        let s = StreamState::from_value(&reply).unwrap();
        assert_eq!(s.first, None);
        assert_eq!(s.last_generated, p(9, 1));
        assert_eq!(
            s.max_deleted,
            id::ZERO,
            "absent on old servers: nothing recorded"
        );
        assert!(StreamState::from_value(&Value::Int(3)).is_err());
        assert!(StreamState::from_value(&Value::Array(vec![])).is_err());
    }
}
