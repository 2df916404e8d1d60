//! `ff group status NAME`: a consumer group's members, and each unit's
//! owner, epoch, committed cursor and lag, as a table or `--json`.
//!
//! Lag is counted by reading the family once from the oldest unit cursor
//! up to the head (at most [`LAG_SCAN_LIMIT`] events): an event counts
//! for its unit when it lies after that unit's cursor.

use std::cmp::Ordering;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use ff_core::backend::{DeliveryItem, StreamBackend};
use ff_core::engine_error::EngineError;
use ff_core::filter::SubscriptionFilter;
use ff_core::group::{unit_of, GroupView};
use ff_core::stream_subscribe::StreamCursor;
use futures::StreamExt;
use serde_json::json;

/// Most events `ff group status` reads to count lag.
pub const LAG_SCAN_LIMIT: u64 = 100_000;

/// `ff group` options.
#[derive(Args, Debug)]
pub struct GroupArgs {
    #[command(subcommand)]
    command: GroupCommand,
}

#[derive(Subcommand, Debug)]
enum GroupCommand {
    /// Show a group's members, and each unit's owner, epoch, cursor and lag.
    Status(StatusArgs),
}

/// `ff group status` options.
#[derive(Args, Debug)]
struct StatusArgs {
    /// The group's name.
    name: String,
    /// Backend URL where the group lives: valkey://host:port, postgres://... (memory: holds groups only within one process).
    #[arg(long, env = "FF_BACKEND", default_value = "memory:")]
    backend: String,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// Lag of one unit: events after its cursor, or why it is unknown.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Lag {
    Events(u64),
    AtLeast(u64),
    Expired,
}

impl Lag {
    fn text(&self) -> String {
        match self {
            Lag::Events(n) => n.to_string(),
            Lag::AtLeast(n) => format!(">={n}"),
            Lag::Expired => "expired".into(),
        }
    }

    fn json(&self) -> serde_json::Value {
        match self {
            Lag::Events(n) => json!(n),
            Lag::AtLeast(n) => json!({ "at_least": n }),
            Lag::Expired => json!("expired"),
        }
    }
}

/// Run `ff group`.
pub async fn run(args: GroupArgs) -> Result<()> {
    match args.command {
        GroupCommand::Status(args) => status(args).await,
    }
}

async fn status(args: StatusArgs) -> Result<()> {
    let opened = crate::backend_url::open(&args.backend).await?;
    let store = opened.group_store()?;
    let view = store
        .view(&args.name)
        .await
        .with_context(|| format!("reading group {:?}", args.name))?;
    let lags = lags(opened.as_ref(), &view).await?;
    if args.json {
        let members: Vec<_> = view
            .members
            .iter()
            .map(
                |m| json!({ "id": m.id(), "session": m.session, "expires_in_ms": m.expires_in_ms }),
            )
            .collect();
        let units: Vec<_> = view
            .unit_states
            .iter()
            .zip(&lags)
            .map(|(u, lag)| {
                json!({
                    "unit": u.unit,
                    "owner": u.owner,
                    "owner_live": u.owner_live,
                    "epoch": u.epoch,
                    "cursor": u.cursor.to_string(),
                    "lag": lag.json(),
                })
            })
            .collect();
        println!(
            "{}",
            json!({
                "group": args.name,
                "family": view.family.as_str(),
                "filter": view.filter,
                "units": view.units,
                "members": members,
                "unit_states": units,
            })
        );
    } else {
        println!(
            "group {:?}: family {}, {} units, {} live members{}",
            args.name,
            view.family.as_str(),
            view.units,
            view.members.len(),
            if view.filter.is_empty() {
                String::new()
            } else {
                format!(", filter {}", view.filter)
            }
        );
        for m in &view.members {
            println!("  member {} (lease {} ms left)", m.session, m.expires_in_ms);
        }
        println!(
            "{:>5}  {:<32} {:>6}  {:>8}  cursor",
            "unit", "owner", "epoch", "lag"
        );
        for (u, lag) in view.unit_states.iter().zip(&lags) {
            let owner = match (&u.owner, u.owner_live) {
                (Some(o), true) => o.clone(),
                (Some(o), false) => format!("{o} (expired)"),
                (None, _) => "-".into(),
            };
            println!(
                "{:>5}  {:<32} {:>6}  {:>8}  {}",
                u.unit,
                owner,
                u.epoch,
                lag.text(),
                u.cursor
            );
        }
    }
    opened.close().await;
    Ok(())
}

/// Each unit's lag (see the module docs).
async fn lags(backend: &dyn StreamBackend, view: &GroupView) -> Result<Vec<Lag>> {
    let cursors: Vec<&StreamCursor> = view.unit_states.iter().map(|u| &u.cursor).collect();
    let Some(start) = cursors.iter().copied().reduce(|a, b| {
        if b.position_cmp(a) == Some(Ordering::Less) {
            b
        } else {
            a
        }
    }) else {
        return Ok(Vec::new());
    };
    let beginning = StreamCursor::beginning();
    let start = if cursors.iter().any(|c| c.as_bytes().len() <= 1) {
        &beginning
    } else {
        start
    };
    let mut lag = vec![Lag::Events(0); cursors.len()];
    let mut stream = match backend
        .subscribe_family(view.family, start.clone(), &SubscriptionFilter::default())
        .await
    {
        Ok(s) => s,
        Err(EngineError::CursorExpired { .. }) => {
            for (i, c) in cursors.iter().enumerate() {
                if backend
                    .resolve_cursor(view.family, (*c).clone())
                    .await
                    .is_err()
                {
                    lag[i] = Lag::Expired;
                }
            }
            return Ok(lag);
        }
        Err(e) => return Err(e.into()),
    };
    let mut scanned = 0u64;
    while let Some(item) = stream.next().await {
        match item? {
            DeliveryItem::Event { event, .. } => {
                scanned += 1;
                let unit = unit_of(event.execution_id(), view.units) as usize;
                if let (Some(c), Some(Lag::Events(n))) = (cursors.get(unit), lag.get_mut(unit)) {
                    if event.cursor().position_cmp(c) == Some(Ordering::Greater)
                        || c.as_bytes().len() <= 1
                    {
                        *n += 1;
                    }
                }
                if scanned >= LAG_SCAN_LIMIT {
                    for l in &mut lag {
                        if let Lag::Events(n) = l {
                            *l = Lag::AtLeast(*n);
                        }
                    }
                    break;
                }
            }
            DeliveryItem::CaughtUp { .. } => break,
            _ => {}
        }
    }
    Ok(lag)
}
