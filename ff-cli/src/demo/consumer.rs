//! A checkpointing consumer: it applies each event to its state, commits
//! state and cursor together every few hundred events (and on checkpoint
//! items), "crashes" once mid-way — losing everything since its last
//! commit — and resumes from its stored cursor.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use ff_core::backend::{CursorStore, DeliveryItem, StreamBackend};
use ff_core::filter::SubscriptionFilter;
use ff_core::stream_events::{EventMeta, Family, NewEvent};
use ff_core::stream_subscribe::StreamCursor;
use futures::StreamExt;
use indicatif::ProgressBar;

use super::workload::SEQ_TAG;

/// Commit state and cursor after this many applied events.
const COMMIT_EVERY: u64 = 500;
/// After the last expected event, how long to keep listening for extras.
const TRAILING_QUIET: Duration = Duration::from_millis(300);

/// What a consumer has applied: its effects, checked against the plan.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    /// Events applied (the effects that stuck after rollbacks).
    pub delivered: u64,
    /// Events applied whose sequence had already been applied.
    pub duplicated: u64,
    /// Events applied with a sequence below one applied before in the
    /// same partition (the order a partitioned family keeps).
    pub out_of_order: u64,
    /// Events applied that the consumer's filter should not have admitted.
    pub unexpected: u64,
    /// Events whose content or metadata differ from what was published.
    pub mismatched: u64,
    /// Distinct expected sequences applied.
    pub distinct: u64,
    seen: Vec<bool>,
    /// The highest sequence applied, per partition.
    max_seq: Vec<Option<u64>>,
}

impl Tally {
    fn new(space: usize, partitions: u16) -> Self {
        Self {
            seen: vec![false; space],
            max_seq: vec![None; usize::from(partitions.max(1))],
            ..Self::default()
        }
    }
}

/// What a consumer is checked against: the family's planned events by
/// sequence, and which of them its filter admits.
pub struct Plan {
    /// Planned drafts of the family, indexed by sequence.
    pub events: Arc<Vec<(NewEvent, EventMeta)>>,
    /// `wanted[seq]`: whether the filter admits that event.
    pub wanted: Vec<bool>,
    /// How many partitions the family is split into: order is checked
    /// within each.
    pub partitions: u16,
}

impl Plan {
    fn expected(&self) -> u64 {
        self.wanted.iter().filter(|w| **w).count() as u64
    }

    fn apply(&self, tally: &mut Tally, event: NewEvent, meta: &EventMeta) -> Result<()> {
        let seq: u64 = meta
            .tags
            .get(SEQ_TAG)
            .and_then(|s| s.parse().ok())
            .context("an event without its demo sequence tag")?;
        let Some(slot) = tally.seen.get_mut(seq as usize) else {
            bail!("sequence {seq} was never published");
        };
        tally.delivered += 1;
        let (planned, planned_meta) = &self.events[seq as usize];
        if event != *planned || meta != planned_meta {
            tally.mismatched += 1;
        }
        if !self.wanted[seq as usize] {
            tally.unexpected += 1;
        } else if *slot {
            tally.duplicated += 1;
        } else {
            *slot = true;
            tally.distinct += 1;
        }
        let partition = usize::from(event.execution_id().partition() % self.partitions.max(1));
        let max = &mut tally.max_seq[partition];
        if max.is_some_and(|m| seq < m) {
            tally.out_of_order += 1;
        }
        *max = Some(max.map_or(seq, |m| m.max(seq)));
        Ok(())
    }
}

/// How one consumer ran.
pub struct ConsumerRun {
    /// The effects that stuck.
    pub tally: Tally,
    /// Events planned for it.
    pub expected: u64,
    /// How many times it was interrupted and resumed.
    pub restarts: u32,
    /// Events applied but not committed when it crashed, delivered again
    /// after the resume (at-least-once delivery absorbed by the commit).
    pub replayed: u64,
    /// When the last expected event was applied.
    pub completed_at: Option<std::time::Instant>,
}

/// Consume `family` from the cursor stored under `name` until every
/// wanted event of `plan` is applied, crashing once after `crash_after`
/// events, with uncommitted work pending.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    backend: Arc<dyn StreamBackend>,
    store: Arc<dyn CursorStore>,
    name: String,
    family: Family,
    filter: SubscriptionFilter,
    plan: Plan,
    crash_after: u64,
    progress: ProgressBar,
) -> Result<ConsumerRun> {
    let idle_limit = Duration::from_secs(30);
    let expected = plan.expected();
    let mut committed = Tally::new(plan.wanted.len(), plan.partitions);
    let mut restarts = 0;
    let mut replayed = 0;
    'session: loop {
        let cursor = store
            .load(&name)
            .await?
            .context("the consumer's starting cursor was never stored")?;
        let mut tally = committed.clone();
        let mut since_commit = 0u64;
        let mut last_applied: Option<StreamCursor> = None;
        let mut stream = backend.subscribe_family(family, cursor, &filter).await?;
        let mut done = false;
        let mut completed_at = None;
        loop {
            if tally.distinct == expected && !done {
                done = true;
                completed_at = Some(std::time::Instant::now());
                if let Some(cursor) = &last_applied {
                    store.store(&name, cursor).await?;
                }
            }
            let wait = if done { TRAILING_QUIET } else { idle_limit };
            let item = match tokio::time::timeout(wait, stream.next()).await {
                Err(_) if done => {
                    return Ok(ConsumerRun {
                        tally,
                        expected,
                        restarts,
                        replayed,
                        completed_at,
                    });
                }
                Err(_) => {
                    progress.println(format!(
                        "{family}: no event for {idle_limit:?}; stopping with {} of {expected}",
                        tally.distinct
                    ));
                    return Ok(ConsumerRun {
                        tally,
                        expected,
                        restarts,
                        replayed,
                        completed_at,
                    });
                }
                Ok(None) => bail!("{family}: the subscription ended unexpectedly"),
                Ok(Some(Err(e))) if e.is_terminal() => return Err(e.into()),
                Ok(Some(Err(e))) => {
                    progress.println(format!("{family}: {e}"));
                    continue;
                }
                Ok(Some(Ok(item))) => item,
            };
            let commit_at = match item {
                DeliveryItem::Event { event, meta } => {
                    let cursor = event.cursor().clone();
                    plan.apply(&mut tally, event.to_new_event(), &meta)?;
                    last_applied = Some(cursor.clone());
                    progress.inc(1);
                    since_commit += 1;
                    (since_commit >= COMMIT_EVERY).then_some(cursor)
                }
                DeliveryItem::Checkpoint { cursor } | DeliveryItem::CaughtUp { cursor } => {
                    Some(cursor)
                }
                DeliveryItem::Corrupt { cursor, detail } => {
                    progress.println(format!("{family}: corrupt entry at {cursor}: {detail}"));
                    Some(cursor)
                }
                _ => None,
            };
            if let Some(cursor) = commit_at {
                store.store(&name, &cursor).await?;
                committed = tally.clone();
                since_commit = 0;
            }
            if restarts == 0 && tally.delivered >= crash_after && since_commit > 0 {
                // Simulated crash: uncommitted effects are lost with the process.
                restarts += 1;
                replayed = tally.delivered - committed.delivered;
                progress.dec(replayed);
                drop(stream);
                continue 'session;
            }
        }
    }
}
