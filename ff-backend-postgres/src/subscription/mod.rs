//! Subscriptions: a task per subscription that reads the outbox in
//! gap-free batches and hands items to the consumer's stream.
//!
//! - [`connection`]: the subscription's own listening connection.
//! - [`reader`]: one batch read with its snapshot bounds and horizon.
//! - [`task`]: the read / yield / wait loop, checkpoints, reconnection.
//! - [`stream`]: the consumer's end.

mod connection;
mod reader;
mod stream;
mod task;

use std::sync::Arc;

use ff_core::backend::{subscription_span, DeliveryItem, DeliveryStream};
use ff_core::engine_error::EngineError;
use ff_core::filter::SubscriptionFilter;
use ff_core::stream_events::Family;
use ff_core::stream_subscribe::{CursorStart, StreamCursor};
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::error::map_sqlx;
use crate::filter_indexes;
use crate::history;
use crate::inner::Inner;
use crate::pool::with_conn;
use crate::position::{self, Given, Pos};
use crate::resolve::Resolved;
use crate::sql::{self, SqlFilter};

use connection::{timed_out, SubConnection};
use stream::{Pending, SubscriptionStream, CHANNEL_BATCHES};
use task::{Driver, Start};

/// Subscribe to `family` after `cursor`: validate the filter and cursor,
/// connect and `LISTEN`, resolve the start position (expired positions
/// fail here), then start the task.
pub(crate) async fn subscribe(
    inner: Arc<Inner>,
    family: Family,
    cursor: StreamCursor,
    filter: &SubscriptionFilter,
) -> Result<DeliveryStream, EngineError> {
    filter.validate_for(family)?;
    let start = position::decode(&cursor, family)?;
    let sql_filter = SqlFilter::new(filter, family);
    let base = sql::read_header_len(&sql_filter);
    let mut conn = SubConnection::open(
        &inner.sub_options,
        &inner.names.channel(family),
        inner.config.connect_timeout,
    )
    .await
    .map_err(map_sqlx)?;
    let probe = probe(&start);
    let limit = inner.config.read_timeout;
    let names = &inner.names;
    let prepare = async {
        let indexed = if sql_filter.is_empty() {
            false
        } else {
            sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
                .bind(filter_indexes::malformed_index(names, family))
                .fetch_one(conn.executor())
                .await
                .map_err(map_sqlx)?
        };
        let resolved = Resolved::read(conn.executor(), names, family, probe).await?;
        Ok::<_, EngineError>((indexed, resolved))
    };
    let (indexed, resolved) = match tokio::time::timeout(limit, prepare)
        .await
        .unwrap_or_else(|_| Err(map_sqlx(timed_out(limit, "resolving the start"))))
    {
        Ok(r) => r,
        Err(e) => {
            conn.close().await;
            return Err(e);
        }
    };
    let read_sql = sql::read(names, family, &sql_filter, indexed);
    let mut start = match judge(family, start, cursor, &resolved) {
        Ok(s) => s,
        Err(e) => {
            conn.close().await;
            return Err(e);
        }
    };
    let (tx, rx) = mpsc::channel(CHANNEL_BATCHES);
    let initial = std::mem::take(&mut start.initial);
    let system = resolved.system;
    let driver = Driver::new(
        inner, family, read_sql, sql_filter, conn, &start, system, tx,
    )
    .with_two_phase(resolved.two_phase);
    tokio::spawn(
        driver
            .run(initial)
            .instrument(subscription_span(crate::error::BACKEND, family)),
    );
    Ok(Box::pin(SubscriptionStream::new(
        rx, family, base, filter, system,
    )))
}

/// Judge `cursor` as [`subscribe`] does, on the pool, without opening a
/// subscription, and answer the position a subscription from it starts
/// exactly after (`beginning()` stays `beginning()`).
pub(crate) async fn resolve(
    inner: &Inner,
    family: Family,
    cursor: StreamCursor,
) -> Result<StreamCursor, EngineError> {
    let start = position::decode(&cursor, family)?;
    let probe = probe(&start);
    let resolved = with_conn!(inner.pool, |conn| {
        Resolved::read(conn, &inner.names, family, probe).await
    })?;
    let beginning = matches!(start, CursorStart::Beginning);
    let start = judge(family, start, cursor, &resolved)?;
    Ok(if beginning {
        StreamCursor::beginning()
    } else {
        start.yielded
    })
}

/// The position whose row [`Resolved::read`] must look up to prove a
/// start (see [`history::unproven`]).
fn probe(start: &CursorStart<Given>) -> Option<Pos> {
    match start {
        CursorStart::After(given) => Some(given.pos),
        _ => None,
    }
}

/// The proof every start passes, on `resolved` (read with [`probe`]): a
/// cursor of another cluster (not upgraded in place) is expired whatever
/// this one holds;
/// otherwise rows numbered beyond this cluster's ids stop everyone. Then
/// [`resolve_start`].
fn judge(
    family: Family,
    start: CursorStart<Given>,
    cursor: StreamCursor,
    resolved: &Resolved,
) -> Result<Start, EngineError> {
    let other_cluster = matches!(
        start,
        CursorStart::After(Given { pos, system }) if history::from_another_cluster(pos, system, resolved)
    );
    if let Some(err) = history::foreign_rows(resolved, family).filter(|_| !other_cluster) {
        return Err(err);
    }
    resolve_start(family, start, cursor, resolved)
}

/// Turn a decoded cursor into a concrete start. The tail becomes the
/// newest row a reader can see without gaps (see
/// [`Resolved::tail_start`]). A cursor at or after the oldest open
/// transaction (a publish's own cursor can be) starts there too, so
/// transactions that were open when it was written and commit later are
/// not skipped: more, never fewer. `CaughtUp` is yielded at once when
/// nothing committed before the subscribe lies after the start; otherwise
/// after the newest such event.
fn resolve_start(
    family: Family,
    start: CursorStart<Given>,
    cursor: StreamCursor,
    resolved: &Resolved,
) -> Result<Start, EngineError> {
    let system = resolved.system;
    let tail = resolved.tail_start();
    let from = |scan: Option<Pos>, yielded: StreamCursor| match resolved.head {
        Some(head) if scan.is_none_or(|s| head > s) => Start {
            scan,
            yielded,
            caught_up: false,
            target: Some(head),
            initial: Vec::new(),
        },
        _ => {
            let at = scan.unwrap_or(tail);
            Start {
                scan: Some(at),
                yielded,
                caught_up: true,
                target: None,
                initial: vec![Pending::Ready(Ok(DeliveryItem::CaughtUp {
                    cursor: at.cursor(family, system),
                }))],
            }
        }
    };
    Ok(match start {
        CursorStart::Tail => {
            let cursor = tail.cursor(family, system);
            Start {
                scan: Some(tail),
                yielded: cursor.clone(),
                caught_up: true,
                target: None,
                initial: vec![Pending::Ready(Ok(DeliveryItem::CaughtUp { cursor }))],
            }
        }
        CursorStart::Beginning => match (resolved.head, resolved.horizon) {
            // Nothing is retained: every event to come commits later.
            (None, _) => from(Some(tail), tail.cursor(family, system)),
            // Rows that sort behind the horizon are pruned, even where a
            // time-range prune has not deleted them yet.
            (Some(_), Some(horizon)) => from(Some(horizon), StreamCursor::beginning()),
            (Some(_), None) => from(None, StreamCursor::beginning()),
        },
        CursorStart::After(Given {
            pos,
            system: read_in,
        }) => {
            if let Some(detail) = history::unproven(pos, read_in, resolved) {
                return Err(EngineError::CursorExpired {
                    cursor,
                    oldest: Some(history::oldest(resolved, family)),
                    detail,
                });
            }
            if pos.xid >= resolved.xmin && tail < pos {
                from(Some(tail), tail.cursor(family, system))
            } else {
                from(Some(pos), cursor)
            }
        }
    })
}
