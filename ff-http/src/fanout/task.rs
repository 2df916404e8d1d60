//! The hub task: the one reader of a hub's backend subscription.
//!
//! Invariant: the task drops its backend stream before it frees the hub's
//! slot ([`finish`]), so a new hub never opens its subscription while this
//! one is still open. It subscribes from the hub's start with no filter,
//! delivers every item to the hub, holds a catch-up hub back for its
//! slowest client (see [`crate::hub`]'s flow control), hands a catch-up
//! hub over once the live hub or a catch-up hub ahead has seen its latest
//! item (reminding its clients whenever that hub has seen a later one),
//! and ends when idle, on shutdown, or on a terminal error.

use std::sync::{Arc, Weak};
use std::time::Duration;

use ff_core::backend::DeliveryItem;
use ff_core::engine_error::EngineError;
use ff_core::filter::SubscriptionFilter;
use ff_core::stream_subscribe::StreamCursor;
use futures::StreamExt;
use tokio::time::Instant;

use super::Hubs;
use crate::hub::{hold_back, Hub, Role};
use crate::metrics::{Metrics, SubscriptionGauge, SubscriptionKind};

/// The hub task: subscribe from the hub's start, deliver every item, end
/// when idle, on shutdown, or on a terminal error. A catch-up hub also
/// holds back while its slowest client's buffer is full (up to a limit),
/// hands over once the live hub has seen its latest item, and ends as
/// soon as its last client has left.
pub(super) async fn run_hub(hub: Arc<Hub>, hubs: Weak<Hubs>) {
    let Some(strong) = hubs.upgrade() else {
        hub.close();
        hub.release();
        return;
    };
    let (backend, metrics, settings, mut shutdown) = (
        strong.backend.clone(),
        strong.metrics.clone(),
        strong.settings.clone(),
        strong.shutdown.clone(),
    );
    drop(strong);
    let family = hub.family();
    let (start, kind) = match &hub.role {
        Role::Live => (StreamCursor::empty(), SubscriptionKind::Shared),
        Role::CatchUp { start } => (start.clone(), SubscriptionKind::Own),
    };
    let catching_up = kind_is_catch_up(kind);
    let everything = SubscriptionFilter::default();
    let subscribed = tokio::select! {
        r = backend.subscribe_family(family, start, &everything) => r,
        _ = shutdown.wait_for(|s| *s) => {
            hub.close();
            finish(&hub, &hubs);
            return;
        }
    };
    let mut stream = match subscribed {
        Ok(stream) => stream,
        Err(e) => {
            tracing::debug!(%family, error = %e, "shared subscription could not start");
            hub.fail(e);
            finish(&hub, &hubs);
            return;
        }
    };
    let gauge = SubscriptionGauge::new(metrics.clone(), kind);
    tracing::debug!(%family, role = ?hub.role, "shared subscription started");
    let linger = if catching_up {
        settings.linger.min(Duration::from_secs(1))
    } else {
        settings.linger
    };
    let tick_every = (linger / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    let mut tick = tokio::time::interval(tick_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut idle_since: Option<tokio::time::Instant> = None;
    // Hold back within the replay window too, so the window still covers
    // the slowest client and newcomers behind it can join.
    let hold_at = match settings.keep {
        0 => settings.capacity * 3 / 4,
        keep => (settings.capacity * 3 / 4).min(keep),
    }
    .max(1);
    let mut handed_over_at: Option<Instant> = None;
    // The latest item the clients were told to move at.
    let mut reminded: Option<StreamCursor> = None;
    loop {
        if catching_up && hub.tx.len() >= hold_at {
            if hold_back(&hub, hold_at, settings.timeout, &mut shutdown).await {
                // Once per stall: whoever still has as much unread and read
                // nothing meanwhile is detached, and is placed again from
                // its own position when it reads on. A client that reads
                // on, however slowly, sets the hub's pace instead.
                let quiet = settings.timeout;
                let detached = hub.detach(|unread, idle| unread >= hold_at && idle >= quiet);
                Metrics::add(&metrics.clients_detached, detached as u64);
            }
            if let Some(hubs) = hubs.upgrade() {
                hubs.catch_up.hold_released();
            }
        }
        tokio::select! {
            biased;
            _ = shutdown.wait_for(|s| *s) => {
                hub.close();
                break;
            }
            item = stream.next() => match item {
                Some(Ok(item)) => hub.deliver(item),
                Some(Err(EngineError::Corrupt { cursor, detail })) => {
                    hub.deliver(DeliveryItem::Corrupt { cursor, detail });
                }
                Some(Err(e)) => {
                    tracing::debug!(%family, error = %e, "shared subscription ended");
                    hub.fail(e);
                    break;
                }
                None => {
                    let cursor = hub.position().unwrap_or_default();
                    hub.fail(EngineError::StreamDisconnected { cursor });
                    break;
                }
            },
            _ = tick.tick() => {
                if handed_over_at.is_some() {
                    remind_stranded(&hub, &hubs, &mut reminded);
                }
                if let Some(at) = handed_over_at {
                    // Clients that have not moved to the live hub within
                    // the limit and read nothing meanwhile have stalled:
                    // they do not keep this reader's slot.
                    if at.elapsed() >= settings.timeout {
                        let limit = settings.timeout;
                        let detached = hub.detach(|unread, idle| unread > 0 && idle >= limit);
                        Metrics::add(&metrics.clients_detached, detached as u64);
                    }
                }
                if hub.tx.receiver_count() > 0 {
                    idle_since = None;
                    continue;
                }
                if catching_up {
                    let since = *idle_since.get_or_insert_with(tokio::time::Instant::now);
                    if hub.has_had_client() || since.elapsed() >= linger {
                        hub.close();
                        break;
                    }
                    continue;
                }
                let since = *idle_since.get_or_insert_with(tokio::time::Instant::now);
                if since.elapsed() >= linger {
                    match hubs.upgrade() {
                        Some(hubs) if !hubs.close_if_idle(&hub) => idle_since = None,
                        _ => {
                            hub.close();
                            break;
                        }
                    }
                }
            }
        }
        if catching_up && !hub.is_handed_over() {
            if let Some(hubs) = hubs.upgrade() {
                if reached_live(&hub, &hubs) {
                    hub.hand_over(None);
                } else {
                    hubs.catch_up.hand_over_to_one_ahead(&hub);
                }
                if hub.is_handed_over() {
                    handed_over_at = Some(Instant::now());
                    reminded = hub.tip().map(|tip| tip.cursor().clone());
                }
            }
        }
    }
    // Close the backend stream before freeing the slot, so a new hub never
    // opens its subscription while this one is still open.
    drop(stream);
    drop(gauge);
    finish(&hub, &hubs);
    tracing::debug!(%family, role = ?hub.role, "shared subscription ended");
}

fn kind_is_catch_up(kind: SubscriptionKind) -> bool {
    matches!(kind, SubscriptionKind::Own)
}

/// `true` when the live hub admits the catch-up `hub`'s latest item
/// ([`Hub::tip`]): it has seen it, so the clients that have read
/// everything can move (see [`Hub::admits`]). A live hub reading another
/// history never does.
fn reached_live(hub: &Hub, hubs: &Hubs) -> bool {
    let Some(live) = hubs.existing(hub.family()) else {
        return false;
    };
    hub.tip().is_some_and(|tip| live.admits(&tip))
}

/// A handed-over hub's clients move when an item or the hand-over reaches
/// them, to a hub that has seen their position; one that has read
/// everything while that hub had not yet seen it would wait for the next
/// item. Once the hub it was handed to has seen the latest item, tell its
/// clients again (once per item).
fn remind_stranded(hub: &Hub, hubs: &Weak<Hubs>, reminded: &mut Option<StreamCursor>) {
    let Some(tip) = hub.tip() else {
        return;
    };
    if reminded.as_ref() == Some(tip.cursor()) {
        return;
    }
    let target = match hub.successor() {
        Some(ahead) => Some(ahead),
        None => hubs.upgrade().and_then(|h| h.existing(hub.family())),
    };
    if target.is_some_and(|t| t.admits(&tip)) {
        *reminded = Some(tip.cursor().clone());
        hub.remind_handed_over();
    }
}

/// Unregister an ended hub, whose backend stream is closed: this frees its
/// slot.
fn finish(hub: &Arc<Hub>, hubs: &Weak<Hubs>) {
    if let Some(hubs) = hubs.upgrade() {
        match hub.role {
            Role::Live => hubs.remove(hub),
            Role::CatchUp { .. } => hubs.catch_up.ended(hub),
        }
    }
    hub.release();
}
