//! A unit's reader: one backend subscription from the unit's committed
//! cursor, keeping only the unit's events.
//!
//! Invariant: every item it queues carries a cursor that resumes exactly
//! after everything the unit's consumer has been handed — events of the
//! unit, and positions past events of other units only once all earlier
//! unit events were queued — so committing any handle never skips an event
//! of the unit. The subscription is the backend's own, so the backend
//! judges the starting cursor.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::mpsc;

use crate::backend::{DeliveryItem, StreamBackend};
use crate::error::EngineError;
use crate::group::item::{Commit, GroupItem, Hold};
use crate::group::spec::GroupSpec;

/// What a reader tells the driver when its subscription ends.
#[derive(Debug)]
pub(crate) struct ReaderFailed {
    pub(crate) unit: u32,
    pub(crate) epoch: u64,
    pub(crate) error: EngineError,
}

/// Read `hold`'s unit into `out` until the hold is deactivated, the
/// consumer is gone or the subscription fails (reported on `failed`).
pub(crate) async fn read_unit(
    backend: Arc<dyn StreamBackend>,
    spec: GroupSpec,
    hold: Arc<Hold>,
    checkpoint_interval: Duration,
    out: mpsc::Sender<GroupItem>,
    failed: mpsc::UnboundedSender<ReaderFailed>,
) {
    let unit = hold.lease.unit;
    let report = |error: EngineError| {
        let _ = failed.send(ReaderFailed {
            unit,
            epoch: hold.lease.epoch,
            error,
        });
    };
    let mut stream = match backend
        .subscribe_family(spec.family, hold.lease.cursor.clone(), &spec.filter)
        .await
    {
        Ok(s) => s,
        Err(e) => return report(e),
    };
    let mut seq = 0u64;
    let mut scanned = None;
    loop {
        if !hold.is_active() {
            return;
        }
        let next = match tokio::time::timeout(checkpoint_interval, stream.next()).await {
            Ok(next) => next,
            Err(_) => {
                if let Some(cursor) = scanned.take() {
                    seq += 1;
                    let commit = Commit::new(hold.clone(), seq, cursor);
                    if out
                        .send(GroupItem::Checkpoint { unit, commit })
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                continue;
            }
        };
        let item = match next {
            Some(Ok(DeliveryItem::Event { event, meta })) => {
                if spec.unit_of(event.execution_id()) != unit {
                    scanned = Some(event.cursor().clone());
                    continue;
                }
                scanned = None;
                seq += 1;
                let commit = Commit::new(hold.clone(), seq, event.cursor().clone());
                GroupItem::Event {
                    unit,
                    event,
                    meta,
                    commit,
                }
            }
            Some(Ok(DeliveryItem::Corrupt { cursor, detail }))
            | Some(Err(EngineError::Corrupt { cursor, detail })) => {
                scanned = None;
                seq += 1;
                let commit = Commit::new(hold.clone(), seq, cursor);
                GroupItem::Corrupt {
                    unit,
                    detail,
                    commit,
                }
            }
            Some(Ok(other)) => {
                if other.cursor() != &hold.lease.cursor {
                    scanned = Some(other.cursor().clone());
                }
                continue;
            }
            Some(Err(e)) => return report(e),
            None => {
                return report(EngineError::Backend {
                    backend: backend.backend_name(),
                    detail: format!("the subscription of unit {unit} ended without an error"),
                })
            }
        };
        if out.send(item).await.is_err() {
            return;
        }
    }
}
