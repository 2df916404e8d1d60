//! The native producer path: the `XADD` a caller puts in its own
//! transaction, and the cursor of the entry it appended.
//!
//! Invariant: the command validates like a publish and goes to the event's
//! partition, and the cursor made from its reply is the one a publish of
//! the same event would have returned (with the entry's witness).

use ff_core::backend::validate_new_event;
use ff_core::engine_error::EngineError;
use ff_core::stream_events::{EventMeta, Family, NewEvent};
use ff_core::stream_subscribe::StreamCursor;

use crate::{id, partition, publish, witness, ValkeyBackend};

impl ValkeyBackend {
    /// The `XADD` that appends `event`, for a caller's own `MULTI`/`EXEC`
    /// or script, so a state change and its event commit together. It goes
    /// to the event's partition, whose stream key carries the hash tag
    /// `{fp:n}` on a cluster or with several partitions: with P equal to
    /// the engine's partition count that is the slot of the execution's
    /// own keys. Its reply is the entry id;
    /// [`ValkeyBackend::entry_id_cursor`] with [`EntryOf::Event`] turns it
    /// into the event's cursor.
    /// Validates like a publish. Retention is not applied by this command:
    /// add [`ValkeyBackend::retention_cmd`] now and then, or call
    /// [`ValkeyBackend::apply_retention`].
    ///
    /// ```no_run
    /// # async fn demo(backend: ff_backend_valkey::ValkeyBackend) -> Result<(), Box<dyn std::error::Error>> {
    /// use ff_backend_valkey::{redis, EntryOf};
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
    /// let meta = EventMeta::new();
    /// let cursor = backend.entry_id_cursor(&entry_id, EntryOf::Event { event: &event, meta: &meta })?;
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

    /// The cursor of the stream entry `entry_id` (`ms-seq`, as `XADD`
    /// replies), for the entry `entry` describes: the one function that
    /// turns an entry id into a cursor. With several partitions the cursor
    /// follows the entry's partition alone, and resumes a subscription of
    /// it (or one filtered on an execution of it) exactly after the entry.
    ///
    /// Fails with `Validation` for a malformed id, a partition that does
    /// not exist, or an event that would not validate.
    pub fn entry_id_cursor(
        &self,
        entry_id: &str,
        entry: EntryOf<'_>,
    ) -> Result<StreamCursor, EngineError> {
        let (family, partition, witness) = match entry {
            EntryOf::Event { event, meta } => (
                event.family(),
                self.partition_of(event.execution_id()),
                Some(publish::xadd_witness(&self.append_cmd(event, meta)?)),
            ),
            EntryOf::Stored {
                family,
                partition,
                witness,
            } => (family, partition, witness.map(|w| w.0)),
        };
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

    /// The cursor of `event` with `meta`, appended under `entry_id`.
    #[deprecated(note = "use entry_id_cursor(entry_id, EntryOf::Event { event, meta })")]
    pub fn cursor_of_entry(
        &self,
        event: &NewEvent,
        meta: &EventMeta,
        entry_id: &str,
    ) -> Result<StreamCursor, EngineError> {
        self.entry_id_cursor(entry_id, EntryOf::Event { event, meta })
    }

    /// The cursor of the entry `entry_id` of `family`'s partition
    /// `partition`, without the entry's witness.
    #[deprecated(
        note = "use entry_id_cursor(entry_id, EntryOf::Stored { family, partition, witness: None })"
    )]
    pub fn entry_cursor(
        &self,
        family: Family,
        partition: u16,
        entry_id: &str,
    ) -> Result<StreamCursor, EngineError> {
        self.entry_id_cursor(
            entry_id,
            EntryOf::Stored {
                family,
                partition,
                witness: None,
            },
        )
    }

    /// The cursor of the entry `entry_id` of `family`'s partition
    /// `partition` that another client appended with `fields`.
    #[deprecated(
        note = "use entry_id_cursor(entry_id, EntryOf::Stored { family, partition, witness: Some(EntryWitness::of_fields(fields)) })"
    )]
    pub fn raw_entry_cursor<N: AsRef<[u8]>, V: AsRef<[u8]>>(
        &self,
        family: Family,
        partition: u16,
        entry_id: &str,
        fields: &[(N, V)],
    ) -> Result<StreamCursor, EngineError> {
        self.entry_id_cursor(
            entry_id,
            EntryOf::Stored {
                family,
                partition,
                witness: Some(EntryWitness::of_fields(fields)),
            },
        )
    }

    /// The cursor of the `family` entry `entry_id` when each family is one
    /// stream (P = 1), without the entry's witness.
    #[deprecated(
        note = "use entry_id_cursor(entry_id, EntryOf::Stored { family, partition: 0, witness: None })"
    )]
    pub fn cursor_from_entry_id(
        &self,
        family: Family,
        entry_id: &str,
    ) -> Result<StreamCursor, EngineError> {
        if self.partitions() > 1 {
            return Err(EngineError::validation(format!(
                "with partitions={} an entry id alone does not make a cursor; use entry_id_cursor with the entry's partition",
                self.partitions()
            )));
        }
        self.entry_id_cursor(
            entry_id,
            EntryOf::Stored {
                family,
                partition: 0,
                witness: None,
            },
        )
    }
}

/// Which entry an entry id names, for [`ValkeyBackend::entry_id_cursor`].
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub enum EntryOf<'a> {
    /// The entry [`ValkeyBackend::append_cmd`] wrote for `event` with
    /// `meta`: its family and partition follow from the event, and the
    /// cursor is the one a publish would have returned, with the entry's
    /// witness.
    Event {
        /// The event appended.
        event: &'a NewEvent,
        /// Its metadata.
        meta: &'a EventMeta,
    },
    /// An entry of `family`'s partition `partition` (below
    /// [`ValkeyBackend::partitions`]) that another client wrote. With its
    /// `witness` ([`EntryWitness::of_fields`]) the cursor is the one
    /// subscriptions deliver; without, it resumes exactly but cannot tell
    /// the entry from another given the same id after a lossy failover.
    Stored {
        /// The entry's family.
        family: Family,
        /// The entry's partition.
        partition: u16,
        /// The entry's witness, when its fields are known.
        witness: Option<EntryWitness>,
    },
}

/// The witness of a stream entry: a digest of its field names and values
/// in the order written, by which a cursor tells its entry from another
/// given the same id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryWitness(u32);

impl EntryWitness {
    /// The witness of an entry written with `fields` (names and values, in
    /// the order written).
    pub fn of_fields<N: AsRef<[u8]>, V: AsRef<[u8]>>(fields: &[(N, V)]) -> Self {
        Self(witness::digest(
            fields.iter().flat_map(|(n, v)| [n.as_ref(), v.as_ref()]),
        ))
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
