//! Subscribing: resolve where each followed partition starts (once, at
//! subscribe time), then hand the work to a [`pump`] task feeding a
//! bounded channel.
//!
//! - [`conn`]: a connection of the subscription path (lean RESP2);
//! - [`node_conn`]: per node, the one connection every subscription of
//!   the backend sends its paired reads on;
//! - [`read`]: reads paired with `XINFO STREAM` in one transaction;
//! - [`wakeup`]: per followed stream, the one `XREAD BLOCK` wake-up every
//!   subscription of the backend following it waits on;
//! - [`session`]: following a slot's node, outages and their backoff;
//! - [`reader`]: one partition: catch-up with read-ahead, live waits,
//!   redirects, reconnection, expiry;
//! - [`merge`]: the partitions' entries in one order, positions, markers;
//! - [`pump`]: the task driving the readers and the merge;
//! - [`subscription`]: the consumer's end.
//!
//! With one partition there is one reader and the merge passes its pages
//! through: the single-stream subscription is the one-partition case.
//!
//! Connection budget: a backend holds one read connection per node and
//! one wake-up connection per stream (family × partition) that at least
//! one of its subscriptions follows, however many subscriptions there are
//! ([`Shared`]); both close when the last subscription using them is
//! dropped.

mod conn;
mod merge;
mod node_conn;
mod pump;
mod read;
mod reader;
mod session;
mod subscription;
mod wakeup;

use std::sync::Arc;

use ff_core::backend::{subscription_span, DeliveryItem, DeliveryStream};
use ff_core::engine_error::EngineError;
use ff_core::filter::SubscriptionFilter;
use ff_core::stream_events::Family;
use ff_core::stream_subscribe::{CursorStart, StreamCursor, ValkeyPosition};
use futures::future::try_join_all;
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::cursor_codec::WitnessedPosition;
use crate::expiry;
use crate::inner::Inner;
use crate::partition::{partition_of, Followed};
use crate::stream_info::{self, StreamState};
use crate::witness;
use merge::{lane_detail, Merger};
use pump::Pump;
use reader::Reader;
use subscription::Subscription;

/// What every subscription of a backend shares: the read connection to
/// each node and the wake-up of each followed stream.
#[derive(Default)]
pub(crate) struct Shared {
    pub(crate) conns: node_conn::NodeConns,
    pub(crate) wakeups: wakeup::WakeUps,
}

/// Batches buffered between the pump and the consumer. With one more
/// being merged, a page and a read-ahead page per partition, a
/// subscription holds a few read batches at most, whatever the backlog.
const CHANNEL_BATCHES: usize = 1;

/// Entries per read of one partition at least, however many partitions
/// share the read batch.
const MIN_PARTITION_READ: usize = 16;

/// Partitions that read a whole read batch each; beyond, the reads shrink
/// so all of them together buffer at most as much.
const FULL_READ_PARTITIONS: usize = 8;

/// Entries per read of each of `lanes` followed partitions: the read batch
/// up to [`FULL_READ_PARTITIONS`] partitions, then a share of
/// `FULL_READ_PARTITIONS` batches (at least [`MIN_PARTITION_READ`]). So a
/// subscription buffers O(read batch + partitions) entries, and a read
/// costs its round trip over as many entries as it can: measured, a
/// subscription over 6 partitions reading `batch / 6` per round trip
/// caught up about 25% slower than over one, reading `batch` as fast.
fn per_partition_read(batch: usize, lanes: usize) -> usize {
    (FULL_READ_PARTITIONS * batch / lanes.max(1)).clamp(MIN_PARTITION_READ.min(batch), batch)
}

/// Subscribe to `family` exactly after `cursor`, following every
/// partition (or, with an `execution_id` filter, only that execution's).
pub(crate) async fn subscribe(
    inner: &Arc<Inner>,
    family: Family,
    cursor: StreamCursor,
    filter: &SubscriptionFilter,
) -> Result<DeliveryStream, EngineError> {
    let count = inner.keys.partitions();
    let followed = match &filter.execution_id {
        Some(execution) if count > 1 => {
            Followed::some(family, count, &[partition_of(execution, count)])?
        }
        _ => Followed::all(family, count),
    };
    subscribe_followed(inner, followed, cursor, filter).await
}

/// Subscribe to `family`'s partitions `partitions` exactly after `cursor`.
pub(crate) async fn subscribe_partitions(
    inner: &Arc<Inner>,
    family: Family,
    partitions: &[u16],
    cursor: StreamCursor,
    filter: &SubscriptionFilter,
) -> Result<DeliveryStream, EngineError> {
    let count = inner.keys.partitions();
    let mut wanted = partitions.to_vec();
    if let Some(execution) = &filter.execution_id {
        let own = partition_of(execution, count);
        if !wanted.contains(&own) {
            return Err(EngineError::validation(format!(
                "the execution_id filter's execution {execution} is in partition {own}, which is not among the partitions subscribed to"
            )));
        }
        wanted = vec![own];
    }
    let followed = Followed::some(family, count, &wanted)?;
    subscribe_followed(inner, followed, cursor, filter).await
}

/// Resolve where an unfiltered subscription of every partition of
/// `family` from `cursor` starts (see [`start_of`]), and answer that
/// position.
pub(crate) async fn resolve(
    inner: &Arc<Inner>,
    family: Family,
    cursor: StreamCursor,
) -> Result<StreamCursor, EngineError> {
    let followed = Followed::all(family, inner.keys.partitions());
    Ok(start_of(inner, &followed, cursor).await?.resume)
}

/// Where a subscription of `family`'s `partitions` from `cursor` starts,
/// judged as subscribing judges it, as a cursor naming a position in each
/// partition: the tail at each newest entry, the beginning just before
/// each oldest retained entry, a position as itself.
pub(crate) async fn start_position(
    inner: &Arc<Inner>,
    family: Family,
    partitions: &[u16],
    cursor: StreamCursor,
) -> Result<StreamCursor, EngineError> {
    let followed = Followed::some(family, inner.keys.partitions(), partitions)?;
    let start = start_of(inner, &followed, cursor).await?;
    let positions: Vec<ValkeyPosition> = start
        .positions
        .iter()
        .zip(&start.states)
        .map(|(p, state)| p.unwrap_or_else(|| expiry::oldest(state)))
        .collect();
    Ok(followed.encode_witnessed(&positions, &start.witnesses))
}

/// Where a subscription over `followed` from `cursor` starts, read once.
struct Start {
    /// Each followed partition's state when the start was resolved.
    states: Vec<StreamState>,
    /// Each followed partition's position (`None`: its beginning).
    positions: Vec<Option<ValkeyPosition>>,
    /// The witness of each position's entry, where it names one.
    witnesses: Vec<Option<u32>>,
    /// Each partition's newest entry when the subscription must catch up
    /// to it before `CaughtUp`; `None` when `initial` holds `CaughtUp`.
    targets: Option<Vec<ValkeyPosition>>,
    /// The position the subscription resumes from before it yields.
    resume: StreamCursor,
    /// Items to yield first.
    initial: Option<Vec<Result<DeliveryItem, EngineError>>>,
}

/// Judge `cursor` against each followed partition's state: the tail
/// resolves to every partition's newest entry; a position expired in any
/// partition is `CursorExpired` (with every expired partition's oldest).
async fn start_of(
    inner: &Arc<Inner>,
    followed: &Followed,
    cursor: StreamCursor,
) -> Result<Start, EngineError> {
    let family = followed.family();
    let start = followed.decode_witnessed(&cursor)?;
    // A position with a witness: its entry is read with the state, to
    // check it is still the one the position names.
    let (judged, probes): (Vec<Option<ValkeyPosition>>, Vec<Option<ValkeyPosition>>) = match &start
    {
        CursorStart::After((positions, witnesses)) => positions
            .iter()
            .zip(witnesses)
            .map(|(&p, w)| (Some(p), w.map(|_| p)))
            .unzip(),
        _ => (
            vec![None; followed.partitions().len()],
            vec![None; followed.partitions().len()],
        ),
    };
    let (states, found): (Vec<StreamState>, Vec<Option<u32>>) = try_join_all(
        followed
            .partitions()
            .iter()
            .zip(judged.into_iter().zip(probes))
            .map(|(&n, (judged, probe))| async move {
                let context = format!("subscribing to {}", inner.describe(family, n));
                let (state, found) =
                    stream_info::stream_state_at(inner, family, n, probe, &context).await?;
                let state = match judged {
                    Some(p) => {
                        stream_info::ready_to_judge(inner, family, n, state, p, &context).await?
                    }
                    None => state,
                };
                Ok::<_, EngineError>((state, found))
            }),
    )
    .await?
    .into_iter()
    .unzip();
    let heads: Vec<ValkeyPosition> = states.iter().map(|s| s.last_generated).collect();
    let head_witnesses: Vec<Option<u32>> = states
        .iter()
        .map(|s| s.last_witness.filter(|_| s.last == Some(s.last_generated)))
        .collect();
    let (positions, witnesses, targets, resume, initial): (
        Vec<Option<ValkeyPosition>>,
        Vec<Option<u32>>,
        _,
        _,
        _,
    ) = match start {
        CursorStart::Tail => {
            let resolved = followed.encode_witnessed(&heads, &head_witnesses);
            let caught_up = vec![Ok(DeliveryItem::CaughtUp {
                cursor: resolved.clone(),
            })];
            (
                heads.iter().copied().map(Some).collect(),
                head_witnesses,
                None,
                resolved,
                Some(caught_up),
            )
        }
        CursorStart::Beginning => (
            vec![None; heads.len()],
            vec![None; heads.len()],
            Some(heads),
            cursor,
            None,
        ),
        CursorStart::After((positions, witnesses)) => {
            // Every expired lane resumes at what it retains in `oldest`.
            let mut oldest = positions.clone();
            let mut oldest_witnesses = witnesses.clone();
            let mut first = None;
            for (lane, (&p, state)) in positions.iter().zip(&states).enumerate() {
                let judged = expiry::judge(p, state)
                    .and_then(|()| witness::judge(p, witnesses[lane], state, found[lane]));
                if let Err(expired) = judged {
                    oldest[lane] = expired.oldest;
                    oldest_witnesses[lane] = None;
                    first.get_or_insert((lane, expired.detail));
                }
            }
            if let Some((lane, detail)) = first {
                return Err(EngineError::CursorExpired {
                    cursor,
                    oldest: Some(followed.encode_witnessed(&oldest, &oldest_witnesses)),
                    detail: lane_detail(followed, lane, &detail),
                });
            }
            (
                positions.into_iter().map(Some).collect(),
                witnesses,
                Some(heads),
                cursor,
                None,
            )
        }
    };
    Ok(Start {
        states,
        positions,
        witnesses,
        targets,
        resume,
        initial,
    })
}

async fn subscribe_followed(
    inner: &Arc<Inner>,
    followed: Followed,
    cursor: StreamCursor,
    filter: &SubscriptionFilter,
) -> Result<DeliveryStream, EngineError> {
    let family = followed.family();
    filter.validate_for(family)?;
    let Start {
        states,
        positions,
        witnesses,
        targets,
        resume,
        initial,
    } = start_of(inner, &followed, cursor).await?;
    let lanes = followed.partitions().len();
    let per_read = per_partition_read(inner.config.read_batch, lanes);
    let readers = followed
        .partitions()
        .iter()
        .zip(positions.iter().zip(&witnesses))
        .zip(&states)
        .map(|((&n, (&read, &witness)), state)| {
            Reader::new(
                inner.clone(),
                family,
                n,
                per_read,
                filter.clone(),
                read.map(|at| WitnessedPosition { at, witness }),
                Some(state),
            )
        })
        .collect();
    let merger = Merger::new(followed, positions, targets).with_witnesses(&witnesses);
    let (tx, rx) = mpsc::channel(CHANNEL_BATCHES);
    let pump = Pump::new(inner.clone(), merger, readers, tx, resume, initial);
    let span = subscription_span(crate::error::BACKEND, family);
    let task = tokio::spawn(pump.run().instrument(span));
    Ok(Box::pin(Subscription::new(rx, task)))
}
