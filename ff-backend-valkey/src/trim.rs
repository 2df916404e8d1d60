//! Retention on demand: the trim commands and the calls that run them.
//!
//! Invariant: every trim goes through the retention script, which records
//! what it removed (the stream's `max-deleted-entry-id` and the trim
//! record), so a cursor behind a trim is `CursorExpired`, never a gap.

use ff_core::engine_error::EngineError;
use ff_core::stream_events::Family;
use ff_core::stream_subscribe::{CursorStart, StreamCursor};
use redis::Value;

use crate::partition::Followed;
use crate::routing::Retry;
use crate::{error, id, retention, ValkeyBackend};

impl ValkeyBackend {
    /// The command that trims `family`'s stream (its partition 0) to its
    /// configured retention (`None` when it keeps everything); its reply is
    /// the number of entries removed. Publishes run it themselves about
    /// every 100 ms per stream. With several partitions, use
    /// [`ValkeyBackend::partition_retention_cmd`] for each.
    pub fn retention_cmd(&self, family: Family) -> Option<redis::Cmd> {
        self.partition_retention_cmd(family, 0)
    }

    /// [`ValkeyBackend::retention_cmd`] for `family`'s partition `partition`.
    pub fn partition_retention_cmd(&self, family: Family, partition: u16) -> Option<redis::Cmd> {
        retention::retention_cmd(
            self.inner.keys.stream(family, partition),
            self.inner.keys.trim_record(family, partition),
            self.inner.config.retention(family),
        )
    }

    /// Trim every partition of `family` to its configured retention now;
    /// returns the number of entries removed.
    pub async fn apply_retention(&self, family: Family) -> Result<u64, EngineError> {
        let mut removed = 0;
        for partition in 0..self.partitions() {
            if let Some(cmd) = self.partition_retention_cmd(family, partition) {
                removed += self.run_trim(family, partition, cmd).await?;
            }
        }
        Ok(removed)
    }

    /// Remove, in every partition of `family`, the entries before
    /// `first_kept`'s position there; the entry at that position (with one
    /// partition: the event at `first_kept`) becomes the oldest retained,
    /// and cursors before it then yield `CursorExpired`. Returns the number
    /// of entries removed. The same name and meaning as the other backends'
    /// `prune_before`.
    pub async fn prune_before(
        &self,
        family: Family,
        first_kept: &StreamCursor,
    ) -> Result<u64, EngineError> {
        let followed = Followed::all(family, self.partitions());
        let CursorStart::After(positions) = followed.decode(first_kept)? else {
            return Err(EngineError::validation(
                "prune_before needs the cursor of an event, not tail or beginning",
            ));
        };
        let mut removed = 0;
        for (&partition, &p) in followed.partitions().iter().zip(&positions) {
            if p == id::ZERO {
                continue;
            }
            let cmd = retention::trim_before_cmd(
                self.inner.keys.stream(family, partition),
                self.inner.keys.trim_record(family, partition),
                p,
            );
            removed += self.run_trim(family, partition, cmd).await?;
        }
        Ok(removed)
    }

    /// The former name of [`ValkeyBackend::prune_before`].
    #[deprecated(note = "renamed prune_before, as in the other backends")]
    pub async fn trim_before(
        &self,
        family: Family,
        first_kept: &StreamCursor,
    ) -> Result<u64, EngineError> {
        self.prune_before(family, first_kept).await
    }

    async fn run_trim(
        &self,
        family: Family,
        partition: u16,
        cmd: redis::Cmd,
    ) -> Result<u64, EngineError> {
        let context = format!("trimming {}", self.inner.describe(family, partition));
        // Trimming again to the same bound removes nothing more: safe to resend.
        match self
            .inner
            .router
            .command(
                self.inner.keys.slot(family, partition),
                &cmd,
                Retry::Idempotent,
            )
            .await
            .map_err(|e| self.inner.fail(e, &context))?
        {
            Value::Int(n) => Ok(u64::try_from(n).unwrap_or(0)),
            Value::ServerError(e) => Err(self.inner.fail(e.into(), &context)),
            other => Err(error::unexpected(
                &context,
                format!("the trim script returned {other:?}"),
            )),
        }
    }
}
