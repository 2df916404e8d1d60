//! `ff publish`: append events from JSON lines on stdin (or one from
//! flags) and print each assigned cursor.

use std::io::BufRead;

use anyhow::{bail, Context, Result};
use clap::Args;
use ff_core::backend::EventPublisher;
use ff_core::stream_events::{new_event_from_json, EventMeta, Family, NewEvent};

use crate::backend_url::Opened;

/// `ff publish` options.
#[derive(Args, Debug, Clone)]
pub struct PublishArgs {
    /// Family the events belong to.
    pub family: Family,
    /// Backend URL: memory:, valkey://host:port[/db] (several seeds: valkey://a:1,b:2; any nodes of a cluster, the first that answers used; ?partitions=P splits each family; valkeys://…?ca_cert=PATH for TLS), postgres://...
    #[arg(long, env = "FF_BACKEND", default_value = "memory:")]
    pub backend: String,
    /// One event as JSON instead of reading stdin, e.g.
    /// `{"execution_id":"{fp:0}:…","outcome":"success"}`.
    #[arg(long)]
    pub event: Option<String>,
    /// Events per batch when reading stdin (each batch is all-or-none).
    #[arg(long, default_value_t = 100)]
    pub batch: usize,
}

fn parse_line(line: &str, family: Family, lineno: usize) -> Result<(NewEvent, EventMeta)> {
    let value: serde_json::Value =
        serde_json::from_str(line).with_context(|| format!("line {lineno}: not JSON"))?;
    new_event_from_json(&value, Some(family)).with_context(|| format!("line {lineno}"))
}

/// Run `ff publish`.
pub async fn run(args: PublishArgs, opened: Opened) -> Result<()> {
    if let Some(event) = &args.event {
        let (draft, meta) = parse_line(event, args.family, 1)?;
        let cursor = opened.publish(draft, meta).await?;
        println!("{cursor}");
        return Ok(());
    }
    let stdin = std::io::stdin();
    let mut batch = Vec::new();
    let mut published = 0usize;
    for (i, line) in stdin.lock().lines().enumerate() {
        let line = line.context("reading stdin")?;
        if line.trim().is_empty() {
            continue;
        }
        batch.push(parse_line(&line, args.family, i + 1)?);
        if batch.len() >= args.batch.max(1) {
            published += flush(&opened, &mut batch).await?;
        }
    }
    published += flush(&opened, &mut batch).await?;
    if published == 0 {
        bail!("no events on stdin: pass JSON lines, or --event JSON");
    }
    Ok(())
}

async fn flush(opened: &Opened, batch: &mut Vec<(NewEvent, EventMeta)>) -> Result<usize> {
    if batch.is_empty() {
        return Ok(0);
    }
    let cursors = opened.publish_batch(std::mem::take(batch)).await?;
    for c in &cursors {
        println!("{c}");
    }
    Ok(cursors.len())
}
