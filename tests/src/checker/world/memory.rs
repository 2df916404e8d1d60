//! The embedded backend: one instance in this process. Its store is the
//! process itself, so what it holds is read back from the publishes'
//! cursors and its bounds.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ff_backend_memory::cursor_codec::{decode_memory, encode_memory};
use ff_backend_memory::MemoryBackend;
use ff_core::backend::{CursorStore, StreamBackend};
use ff_core::engine_error::EngineError;
use ff_core::stream_events::{EventMeta, Family, NewEvent};
use ff_core::stream_subscribe::{CursorStart, StreamCursor};
use rand::rngs::StdRng;
use rand::Rng;

use super::{publish_all, publish_each, Fault, FaultCtx, PublishResult, World, WorldKind};
use crate::checker::history::{DeliveryPath, PosKey, PublishPath, Recorder};
use crate::checker::truth::{StoreState, StoredEvent};

/// The memory world.
pub struct MemoryWorld {
    backend: Arc<MemoryBackend>,
}

impl MemoryWorld {
    /// A backend with a read batch drawn from `rng`.
    pub fn start(rng: &mut StdRng) -> Self {
        let batch = [1, 7, 64, 512][rng.random_range(0..4)];
        let backend = MemoryBackend::builder()
            .read_batch(batch)
            .checkpoint_interval(Duration::from_millis(200))
            .build();
        Self {
            backend: Arc::new(backend),
        }
    }
}

#[async_trait]
impl World for MemoryWorld {
    fn kind(&self) -> WorldKind {
        WorldKind::Memory
    }

    fn partitions(&self) -> u16 {
        1
    }

    fn exact(&self) -> bool {
        true
    }

    fn publish_paths(&self) -> Vec<PublishPath> {
        vec![PublishPath::Single, PublishPath::Batch]
    }

    fn delivery_paths(&self) -> Vec<DeliveryPath> {
        vec![
            DeliveryPath::Typed,
            DeliveryPath::Delivery,
            DeliveryPath::Store,
            DeliveryPath::Sse,
        ]
    }

    fn faults(&self) -> Vec<Fault> {
        vec![Fault::Prune, Fault::GatewayRestart]
    }

    async fn reader(&self) -> Result<Arc<dyn StreamBackend>, EngineError> {
        Ok(self.backend.clone())
    }

    fn store(&self) -> Arc<dyn CursorStore> {
        self.backend.clone()
    }

    async fn publish(
        &self,
        path: PublishPath,
        events: Vec<(NewEvent, EventMeta)>,
    ) -> Vec<PublishResult> {
        match path {
            PublishPath::Batch => publish_all(self.backend.as_ref(), events).await,
            _ => publish_each(self.backend.as_ref(), events).await,
        }
    }

    async fn inject(
        &self,
        fault: &Fault,
        rng: &mut StdRng,
        ctx: &FaultCtx<'_>,
    ) -> Result<(), String> {
        let rec = ctx.rec;
        match fault {
            Fault::Prune => {
                let family = [Family::Completion, Family::LeaseHistory][rng.random_range(0..2)];
                let bounds = self
                    .backend
                    .bounds(family)
                    .await
                    .map_err(|e| e.to_string())?;
                let (Some(oldest), Some(head)) = (
                    self.position(family, &bounds.oldest),
                    self.position(family, &bounds.head),
                ) else {
                    return Ok(());
                };
                let cut = oldest.1 + (head.1.saturating_sub(oldest.1)) / 2;
                if cut <= oldest.1 + 1 {
                    return Ok(());
                }
                let at = encode_memory(family, oldest.0, cut);
                let removed = self
                    .backend
                    .prune_before(family, &at)
                    .map_err(|e| e.to_string())?;
                rec.note(format!(
                    "evicted {removed} {} events before seq {cut}",
                    family.as_str()
                ));
                Ok(())
            }
            other => Err(format!("the memory world cannot inject {other:?}")),
        }
    }

    fn position(&self, family: Family, cursor: &StreamCursor) -> Option<PosKey> {
        match decode_memory(cursor, family).ok()? {
            CursorStart::After(p) => Some(PosKey(p.epoch, p.seq)),
            _ => None,
        }
    }

    async fn state(&self, rec: &Recorder) -> Result<StoreState, String> {
        let acked: Vec<(Family, u64, PosKey)> = rec
            .lock()
            .published
            .values()
            .filter(|p| p.acked.is_some())
            .filter_map(|p| Some((p.family, p.ck, p.pos?)))
            .collect();
        let mut state = StoreState::default();
        for &family in Family::ALL {
            let bounds = self
                .backend
                .bounds(family)
                .await
                .map_err(|e| e.to_string())?;
            // `oldest` resumes at the oldest retained event: it names the
            // last evicted one (or the origin).
            let oldest = self.position(family, &bounds.oldest);
            let stored = acked
                .iter()
                .filter(|(f, _, pos)| *f == family && oldest.is_none_or(|o| *pos > o))
                .map(|&(_, ck, pos)| StoredEvent {
                    ck,
                    partition: 0,
                    pos,
                })
                .collect();
            if let Some(o) = oldest {
                state.pruned_through.insert((family, 0), o);
            }
            state.stored.insert(family, stored);
        }
        Ok(state)
    }
}
