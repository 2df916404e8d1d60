//! [`MutantHarness`]: the mutant backend's hooks for the conformance suite.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ff_core::backend::{EventPublisher, StreamBackend};
use ff_core::engine_error::EngineError;
use ff_core::stream_events::record::Field;
use ff_core::stream_events::Family;
use ff_core::stream_subscribe::{CursorStart, StreamCursor};
use ff_core::testkit::support::{drafts, publish_batch};
use ff_core::testkit::Harness;

use super::backend::{raw, MutantBackend};
use super::subscription::{BATCH, CHECKPOINT_INTERVAL, SAFETY_NET_POLL};
use super::{cursor, Mutation};

/// A fresh mutant store per test, with one mutation (or none).
pub struct MutantHarness {
    /// The backend under test.
    pub backend: MutantBackend,
}

/// A harness on a fresh store with `mutation` switched on.
pub async fn harness(mutation: Option<Mutation>) -> MutantHarness {
    MutantHarness {
        backend: MutantBackend::new(mutation),
    }
}

impl MutantHarness {
    fn has(&self, m: Mutation) -> bool {
        self.backend.store.has(m)
    }

    /// The connections `kill_connections` leaves alone: none, or — under a
    /// mutation — the publisher's.
    fn spared(&self) -> Vec<u64> {
        let spares_publisher = self.has(Mutation::KillHookSparesThePublisher)
            || self.has(Mutation::ConnectionIdsOmitThePublisher);
        match spares_publisher {
            true => self.backend.publishing_connection().into_iter().collect(),
            false => Vec::new(),
        }
    }
}

#[async_trait]
impl Harness for MutantHarness {
    fn backend(&self) -> Arc<dyn StreamBackend> {
        Arc::new(self.backend.clone())
    }

    fn publisher(&self) -> Arc<dyn EventPublisher> {
        Arc::new(self.backend.clone())
    }

    fn checkpoint_interval(&self) -> Duration {
        CHECKPOINT_INTERVAL
    }

    fn safety_net_poll(&self) -> Option<Duration> {
        Some(SAFETY_NET_POLL)
    }

    fn read_ahead_limit(&self) -> usize {
        2 * BATCH
    }

    fn read_batch(&self) -> usize {
        BATCH
    }

    async fn expire_before(
        &self,
        family: Family,
        cursor: &StreamCursor,
    ) -> Result<(), EngineError> {
        let CursorStart::After(seq) = cursor::decode(&self.backend.store, family, cursor)? else {
            return Err(EngineError::validation(
                "expire_before needs a positioned cursor",
            ));
        };
        if !self.has(Mutation::ExpireHookDoesNothing) {
            self.backend
                .store
                .with_log(family, |log| log.evict_before(seq));
        }
        Ok(())
    }

    async fn inject_raw(
        &self,
        family: Family,
        fields: &[(Field, String)],
    ) -> Result<StreamCursor, EngineError> {
        if self.has(Mutation::RawHookDoesNothing) {
            let head = self.backend.store.with_log(family, |log| log.head());
            return Ok(cursor::encode(&self.backend.store, family, head + 1));
        }
        Ok(self.backend.append(vec![(family, raw(fields))]).remove(0))
    }

    async fn kill_connections(&self) -> Result<(), EngineError> {
        if self.has(Mutation::KillHookUnavailable) {
            return Err(EngineError::unavailable("kill_connections"));
        }
        if !self.has(Mutation::KillHookDoesNothing) {
            self.backend.store.kill_connections_except(&self.spared());
        }
        Ok(())
    }

    async fn connection_ids(&self) -> Result<Vec<String>, EngineError> {
        let hidden = match self.has(Mutation::ConnectionIdsOmitThePublisher) {
            true => self.backend.publishing_connection(),
            false => None,
        };
        Ok(self
            .backend
            .store
            .connection_ids()
            .into_iter()
            .filter(|id| Some(*id) != hidden)
            .map(|id| id.to_string())
            .collect())
    }

    async fn cursor_beyond_head(&self, family: Family) -> Result<StreamCursor, EngineError> {
        let head = self.backend.store.with_log(family, |log| log.head());
        Ok(cursor::encode(&self.backend.store, family, head + 1000))
    }

    async fn foreign_cursor(&self, family: Family) -> Result<StreamCursor, EngineError> {
        let other = MutantBackend::new(self.backend.store.mutation);
        Ok(publish_batch(&other, &drafts(family, 2, "foreign"))
            .await
            .remove(1))
    }

    async fn independent_publisher(&self) -> Result<Arc<dyn EventPublisher>, EngineError> {
        Ok(Arc::new(self.backend.another_process()))
    }

    async fn open_subscriptions(&self) -> Result<usize, EngineError> {
        Ok(self
            .backend
            .store
            .open_subscriptions
            .load(std::sync::atomic::Ordering::Relaxed))
    }
}
