//! `ff tail FAMILY --group NAME`: run one member of a consumer group and
//! print the events of the units it holds as JSON lines, each with its
//! `unit`, committing each event's position after printing it.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, Result};
use ff_core::backend::StreamBackend;
use ff_core::engine_error::EngineError;
use ff_core::group::{GroupConfig, GroupItem, GroupMember, GroupSpec};
use ff_core::stream_events::event_to_json;
use futures::StreamExt;

use crate::backend_url::Opened;
use crate::tail::{resolve_from, TailArgs};

/// Units a new group gets when `--units` is not given.
pub const DEFAULT_UNITS: u32 = 16;

/// This process's default member id: the host name and the process id.
fn default_member() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "ff".to_owned());
    format!("{host}-{}", std::process::id())
}

/// The unit count to join `group` with: `--units`, else the existing
/// group's, else [`DEFAULT_UNITS`].
async fn units_for(args: &TailArgs, group: &str, opened: &Opened) -> Result<u32> {
    if let Some(units) = args.units {
        return Ok(units);
    }
    let store = opened.group_store()?;
    match store.view(group).await {
        Ok(view) => Ok(view.units),
        Err(EngineError::Validation { .. }) => Ok(DEFAULT_UNITS),
        Err(e) => Err(e.into()),
    }
}

/// Run `ff tail --group`.
pub async fn run(args: TailArgs, group: String, opened: Opened) -> Result<()> {
    let filter = args.filter.to_filter(args.family)?;
    let units = units_for(&args, &group, &opened).await?;
    let spec = GroupSpec::new(group.clone(), args.family, units)?.with_filter(filter)?;
    let start = resolve_from(&args.from, args.family, opened.as_ref()).await?;
    let member_id = args.member.clone().unwrap_or_else(default_member);
    let mut config = GroupConfig::default();
    if let Some(lease) = args.lease {
        config = GroupConfig::with_lease(lease);
    }
    let mut member = GroupMember::join_from(opened.clone(), spec, &member_id, config, start)
        .await
        .with_context(|| format!("joining group {group:?} as {member_id:?}"))?;
    eprintln!(
        "ff tail: member {} of group {group:?} ({units} units)",
        member.session()
    );
    let stdout = std::io::stdout();
    let mut printed = 0u64;
    let result = loop {
        if args.limit.is_some_and(|l| printed >= l) {
            break Ok(());
        }
        let next = match args.idle_timeout {
            Some(idle) => match tokio::time::timeout(idle, member.next()).await {
                Ok(next) => next,
                Err(_) => break Ok(()),
            },
            None => member.next().await,
        };
        let Some(item) = next else { break Ok(()) };
        match item {
            GroupItem::Event {
                unit,
                event,
                meta,
                commit,
            } => {
                let mut json = event_to_json(&event, Some(&meta));
                if let Some(obj) = json.as_object_mut() {
                    obj.insert("unit".into(), unit.into());
                }
                let mut out = stdout.lock();
                if writeln!(out, "{json}").and_then(|_| out.flush()).is_err() {
                    break Ok(()); // stdout closed (e.g. piped into `head`)
                }
                drop(out);
                printed += 1;
                if let Err(e) = commit.commit().await {
                    eprintln!("ff tail: unit {unit}: {e}");
                }
            }
            GroupItem::Checkpoint { unit, commit } => {
                if let Err(e) = commit.commit().await {
                    eprintln!("ff tail: unit {unit}: {e}");
                }
            }
            GroupItem::Corrupt {
                unit,
                detail,
                commit,
            } => {
                eprintln!(
                    "ff tail: unit {unit}: corrupt entry at {}: {detail}",
                    commit.cursor()
                );
                let _ = commit.commit().await;
            }
            GroupItem::Assigned { unit, epoch } => {
                eprintln!("ff tail: holding unit {unit} (epoch {epoch})");
            }
            GroupItem::Released { unit } => eprintln!("ff tail: handed unit {unit} over"),
            GroupItem::Lost { unit, reason } => eprintln!("ff tail: lost unit {unit}: {reason}"),
            GroupItem::UnitFailed { unit, error } => {
                eprintln!("ff tail: unit {unit}: {error} (retrying)")
            }
            _ => {}
        }
    };
    member.leave().await?;
    result
}

/// Parse `--lease` seconds (at least 1).
pub fn parse_lease(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !(1.0..=3600.0).contains(&secs) {
        return Err(format!("a lease must be 1..=3600 seconds, got {s}"));
    }
    Ok(Duration::from_secs_f64(secs))
}
