//! The native producer path: the `XADD` a caller puts in its own
//! transaction, and the cursor of the entry it appended.
//!
//! Invariant: the command validates like a publish and goes to the event's
//! partition, and the cursor made from its reply is the one a publish of
//! the same event would have returned (with the entry's witness).

use ff_core::backend::validate_new_event;
use ff_core::engine_error::EngineError;
use ff_core::stream_events::{EventMeta, Family, NewEvent};
use ff_core::stream_subscribe::{encode_valkey, StreamCursor};

use crate::{id, partition, publish, witness, ValkeyBackend};

impl ValkeyBackend {
    /// The `XADD` that appends `event`, for a caller's own `MULTI`/`EXEC`
    /// or script, so a state change and its event commit together. It goes
    /// to the event's partition, whose stream key carries the hash tag
    /// `{fp:n}` on a cluster or with several partitions: with P equal to
    /// the engine's partition count that is the slot of the execution's
    /// own keys. Its reply is the entry id;
    /// [`ValkeyBackend::cursor_of_entry`] turns it into the event's cursor.
    /// Validates like a publish. Retention is not applied by this command:
    /// add [`ValkeyBackend::retention_cmd`] now and then, or call
    /// [`ValkeyBackend::apply_retention`].
    ///
    /// ```no_run
    /// # async fn demo(backend: ff_backend_valkey::ValkeyBackend) -> Result<(), Box<dyn std::error::Error>> {
    /// use ff_backend_valkey::redis;
    /// use ff_core::stream_events::{CompletionOutcome, EventMeta, NewEvent};
    /// use ff_core::types::ExecutionId;
    ///
    /// let exec = ExecutionId::new(3);
    /// let event = NewEvent::completion(exec, CompletionOutcome::Success);
    /// let app_key = format!("app:{{fp:3}}:executions");
    /// let mut conn = backend.connection_for_key(&app_key).await?;
    /// let (entry_id,): (String,) = redis::pipe()
    ///     .atomic()
    ///     .hset(&app_key, exec.to_string(), "done")
    ///     .ignore()
    ///     .add_command(backend.append_cmd(&event, &EventMeta::new())?)
    ///     .query_async(&mut conn)
    ///     .await?;
    /// let cursor = backend.cursor_of_entry(&event, &EventMeta::new(), &entry_id)?;
    /// # let _ = cursor; Ok(()) }
    /// ```
    pub fn append_cmd(
        &self,
        event: &NewEvent,
        meta: &EventMeta,
    ) -> Result<redis::Cmd, EngineError> {
        validate_new_event(event, meta)?;
        let partition = self.partition_of(event.execution_id());
        publish::xadd(
            self.inner.keys.stream(event.family(), partition),
            event,
            meta,
        )
    }

    /// The cursor of `event` with `meta`, appended with
    /// [`ValkeyBackend::append_cmd`] under entry id `entry_id` (`ms-seq`,
    /// as `XADD` replies): the cursor publish would have returned, with
    /// the entry's witness.
    pub fn cursor_of_entry(
        &self,
        event: &NewEvent,
        meta: &EventMeta,
        entry_id: &str,
    ) -> Result<StreamCursor, EngineError> {
        let witness = publish::xadd_witness(&self.append_cmd(event, meta)?);
        let partition = self.partition_of(event.execution_id());
        self.cursor_of(event.family(), partition, entry_id, Some(witness))
    }

    /// The cursor of the entry `entry_id` (`ms-seq`) of `family`'s
    /// partition `partition`, without the entry's witness: the entry's
    /// position in its partition — with several partitions a cursor
    /// following that one partition, which resumes a subscription of it
    /// (or one filtered on an execution of it) exactly after the entry. It
    /// resumes exactly, but cannot tell that entry from another given the
    /// same id after a lossy failover: prefer
    /// [`ValkeyBackend::raw_entry_cursor`] when the fields are known.
    pub fn entry_cursor(
        &self,
        family: Family,
        partition: u16,
        entry_id: &str,
    ) -> Result<StreamCursor, EngineError> {
        self.cursor_of(family, partition, entry_id, None)
    }

    /// The cursor of the entry `entry_id` (`ms-seq`) of `family`'s
    /// partition `partition` that another client appended with `fields`
    /// (names and values, in the order written): the cursor subscriptions
    /// deliver for it, with the entry's witness.
    pub fn raw_entry_cursor<N: AsRef<[u8]>, V: AsRef<[u8]>>(
        &self,
        family: Family,
        partition: u16,
        entry_id: &str,
        fields: &[(N, V)],
    ) -> Result<StreamCursor, EngineError> {
        let witness = witness::digest(fields.iter().flat_map(|(n, v)| [n.as_ref(), v.as_ref()]));
        self.cursor_of(family, partition, entry_id, Some(witness))
    }

    fn cursor_of(
        &self,
        family: Family,
        partition: u16,
        entry_id: &str,
        witness: Option<u32>,
    ) -> Result<StreamCursor, EngineError> {
        if partition >= self.partitions() {
            return Err(EngineError::validation(format!(
                "partition {partition} does not exist: each family has {} partition(s)",
                self.partitions()
            )));
        }
        let at = parse_entry_id(entry_id)?;
        Ok(partition::event_cursor(
            family,
            self.partitions(),
            partition,
            at,
            witness,
        ))
    }

    /// The cursor of the `family` entry with id `entry_id` (`ms-seq`, as
    /// `XADD` replies) when each family is one stream (P = 1), without the
    /// entry's witness (see [`ValkeyBackend::entry_cursor`]); with several
    /// partitions the cursor depends on the event's partition: use
    /// [`ValkeyBackend::cursor_of_entry`].
    pub fn cursor_from_entry_id(
        &self,
        family: Family,
        entry_id: &str,
    ) -> Result<StreamCursor, EngineError> {
        if self.partitions() > 1 {
            return Err(EngineError::validation(format!(
                "with partitions={} an entry id alone does not make a cursor; use cursor_of_entry(event, meta, entry_id)",
                self.partitions()
            )));
        }
        let at = parse_entry_id(entry_id)?;
        Ok(encode_valkey(family, at.ms, at.seq))
    }
}

/// Parse an `XADD` reply id, or say it is not one.
fn parse_entry_id(
    entry_id: &str,
) -> Result<ff_core::stream_subscribe::ValkeyPosition, EngineError> {
    id::parse(entry_id.as_bytes()).ok_or_else(|| {
        EngineError::validation(format!(
            "{:?} is not a stream entry id (ms-seq)",
            entry_id.chars().take(40).collect::<String>()
        ))
    })
}
