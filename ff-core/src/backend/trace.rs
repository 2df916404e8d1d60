//! What backends log, at which level: one level per class of event, the
//! same on every backend, and one span per subscription.
//!
//! Every subscription runs inside [`subscription_span`] (`ff_subscription`,
//! at `INFO`, with the fields `backend` and `family`), so each event a
//! subscription logs can be traced to the stream it belongs to.
//!
//! | class | level | examples |
//! |---|---|---|
//! | a subscription can no longer go on | `WARN` | gave up reconnecting; the server keeps breaking the protocol |
//! | a connection was lost, reconnecting | `WARN` | "lost its connection; reconnecting" (once per outage) |
//! | a background duty failed, work goes on degraded | `WARN` | a retention trim failed; wake-ups could not be sent; a group heartbeat failed |
//! | events held back longer than the configured warning | `WARN` | an old open Postgres transaction |
//! | recovered, or the topology changed | `INFO` | "reconnected"; a node was demoted; a seed did not answer |
//! | a one-off change made on the operator's behalf | `INFO` | a migration applied |
//! | one attempt failed and will be retried | `DEBUG` | a reconnect attempt; a notification; a topology probe |
//! | a subscription's own lifecycle and skipped entries | `DEBUG` | started, ended; a corrupt entry (the consumer gets it as an item) |
//!
//! Nothing a consumer is told through its stream (an error, a `Corrupt`
//! item) is logged above `DEBUG`: the consumer decides how loud it is.

use crate::event::Family;

/// The span a backend runs one subscription in: `ff_subscription` with
/// `backend` (its [`backend_name`](super::StreamBackend::backend_name))
/// and `family` (its [`Family::as_str`]).
pub fn subscription_span(backend: &'static str, family: Family) -> tracing::Span {
    tracing::info_span!("ff_subscription", backend, family = family.as_str())
}
