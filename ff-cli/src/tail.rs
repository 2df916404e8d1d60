//! `ff tail`: print a family's events as JSON lines, each with its cursor.

use std::io::Write;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use ff_core::backend::{DeliveryItem, StreamBackend};
use ff_core::stream_events::{event_to_json, Family};
use ff_core::stream_subscribe::StreamCursor;
use futures::StreamExt;

use crate::backend_url::Opened;
use crate::filter_args::FilterArgs;

/// `ff tail` options.
#[derive(Args, Debug, Clone)]
pub struct TailArgs {
    /// Family: lease-history, completion, signal-delivery, instance-tags.
    pub family: Family,
    /// Backend URL: memory:, valkey://host:port[/db] (several seeds: valkey://a:1,b:2; any nodes of a cluster, the first that answers used; ?partitions=P splits each family; valkeys://…?ca_cert=PATH for TLS), postgres://...
    #[arg(long, env = "FF_BACKEND", default_value = "memory:")]
    pub backend: String,
    /// Where to start: `tail` (only new events), `beginning`, `oldest`
    /// (the oldest retained event, as `bounds` reports it), or a cursor.
    #[arg(long, default_value = "tail")]
    pub from: String,
    /// Stop after this many events.
    #[arg(long)]
    pub limit: Option<u64>,
    /// Stop after this many seconds without printing an event (checkpoints
    /// and caught-up positions do not count, even with --positions).
    #[arg(long, value_name = "SECS", value_parser = crate::duration_arg::parse_secs)]
    pub idle_timeout: Option<Duration>,
    /// Also print checkpoint and caught-up positions as
    /// `{"checkpoint": cursor}` / `{"caught_up": cursor}` lines.
    #[arg(long)]
    pub positions: bool,
    #[command(flatten)]
    /// Filters.
    pub filter: FilterArgs,
    /// Run as a member of this consumer group: print only the events of
    /// the units this member holds (each with its `unit`), committing
    /// each after printing it. `--from` places a new group's units.
    #[arg(long, value_name = "NAME")]
    pub group: Option<String>,
    /// This member's id in the group (default: host name and process id).
    #[arg(long, value_name = "ID", requires = "group")]
    pub member: Option<String>,
    /// Units of a new group (default: an existing group's, else 16); a
    /// group's unit count is fixed when it is created.
    #[arg(long, value_name = "U", requires = "group")]
    pub units: Option<u32>,
    /// The group lease in seconds: a crashed member's units move after
    /// about this long (default 10).
    #[arg(long, value_name = "SECS", requires = "group", value_parser = crate::group_tail::parse_lease)]
    pub lease: Option<Duration>,
}

/// Resolve `--from` for `family` on `backend`.
pub async fn resolve_from(
    from: &str,
    family: Family,
    backend: &dyn StreamBackend,
) -> Result<StreamCursor> {
    match from {
        "tail" => Ok(StreamCursor::empty()),
        "beginning" => Ok(StreamCursor::beginning()),
        "oldest" => Ok(backend
            .bounds(family)
            .await
            .context("--from oldest: reading the stream's bounds")?
            .oldest),
        cursor => cursor.parse().with_context(|| {
            format!(
                "--from {} (expected tail, beginning, oldest or a cursor)",
                ff_core::engine_error::excerpt(cursor)
            )
        }),
    }
}

/// Run `ff tail`.
pub async fn run(args: TailArgs, opened: Opened) -> Result<()> {
    if let Some(group) = args.group.clone() {
        return crate::group_tail::run(args, group, opened).await;
    }
    let filter = args.filter.to_filter(args.family)?;
    let start = resolve_from(&args.from, args.family, opened.as_ref()).await?;
    let mut stream = opened.subscribe_family(args.family, start, &filter).await?;
    let idle = args.idle_timeout;
    // Only a printed event puts off the idle deadline: a filtered stream's
    // checkpoints keep arriving while nothing matches.
    let mut idle_until = idle.map(|idle| tokio::time::Instant::now() + idle);
    let stdout = std::io::stdout();
    let mut printed = 0u64;
    loop {
        if args.limit.is_some_and(|l| printed >= l) {
            return Ok(());
        }
        let next = match idle_until {
            Some(until) => match tokio::time::timeout_at(until, stream.next()).await {
                Ok(next) => next,
                Err(_) => return Ok(()),
            },
            None => stream.next().await,
        };
        let line = match next {
            None => return Ok(()),
            Some(Err(e)) if e.is_terminal() => bail!(e),
            Some(Err(e)) => {
                eprintln!("ff tail: {e}");
                continue;
            }
            Some(Ok(DeliveryItem::Event { event, meta })) => {
                printed += 1;
                idle_until = idle.map(|idle| tokio::time::Instant::now() + idle);
                event_to_json(&event, Some(&meta)).to_string()
            }
            Some(Ok(DeliveryItem::Corrupt { cursor, detail })) => {
                eprintln!("ff tail: corrupt entry at {cursor}: {detail}");
                continue;
            }
            Some(Ok(DeliveryItem::Checkpoint { cursor })) if args.positions => {
                serde_json::json!({ "checkpoint": cursor.to_string() }).to_string()
            }
            Some(Ok(DeliveryItem::CaughtUp { cursor })) if args.positions => {
                serde_json::json!({ "caught_up": cursor.to_string() }).to_string()
            }
            Some(Ok(_)) => continue,
        };
        let mut out = stdout.lock();
        if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
            return Ok(()); // stdout closed (e.g. piped into `head`)
        }
    }
}
