//! A failing run's report: the seed to replay, the faults, each violation,
//! and the history shrunk to what concerns it — the consumer's segments
//! around the events named, those events' publishes, and the committed
//! sequence around them.

use std::collections::BTreeSet;
use std::fmt::Write;

use super::history::{Ck, History};
use super::oracle::Violation;
use super::truth::{StoreState, Truth};
use super::RunConfig;

/// Events shown on each side of a named one.
const CONTEXT: usize = 3;

/// Render the report.
pub fn render(
    config: &RunConfig,
    history: &History,
    state: Option<&StoreState>,
    violations: &[Violation],
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "checker FAILED: world {} seed {} ({} violation(s)); replay: cargo run -p ff-tests --bin ff-checker -- --world {} --seed {} --steps {}",
        config.world.as_str(),
        config.seed,
        violations.len(),
        config.world.as_str(),
        config.seed,
        config.steps,
    );
    let _ = writeln!(out, "what happened:");
    for (at, what) in &history.log {
        let _ = writeln!(out, "  {:>8.3}s  {what}", at.as_secs_f64());
    }
    let truth = state.map(|s| Truth::build(s, history));
    for v in violations.iter().take(5) {
        let _ = writeln!(out, "violation: {v}");
        let named: BTreeSet<Ck> = v.events.iter().copied().collect();
        for ck in &named {
            if let Some(p) = history.published.get(ck) {
                let _ = writeln!(
                    out,
                    "  event {ck}: {} partition {} via {:?}, started {:.3}s, acked {}, cursor {}{}",
                    p.family.as_str(),
                    p.partition,
                    p.path,
                    p.started.as_secs_f64(),
                    p.acked
                        .map(|a| format!("{:.3}s", a.as_secs_f64()))
                        .unwrap_or_else(|| "never".into()),
                    p.cursor.as_ref().map(|c| c.to_string()).unwrap_or_default(),
                    p.error
                        .as_ref()
                        .map(|e| format!(", error: {e}"))
                        .unwrap_or_default(),
                );
            }
        }
        if let Some(truth) = &truth {
            for ((family, partition), entries) in &truth.streams {
                let Some(i) = entries.iter().position(|e| named.contains(&e.ck)) else {
                    continue;
                };
                let from = i.saturating_sub(CONTEXT);
                let slice: Vec<String> = entries[from..(i + CONTEXT + 1).min(entries.len())]
                    .iter()
                    .map(|e| format!("{}{}", e.ck, if e.retained { "" } else { "(pruned)" }))
                    .collect();
                let _ = writeln!(
                    out,
                    "  committed {} partition {partition} around it: … {} …",
                    family.as_str(),
                    slice.join(" ")
                );
            }
            let forked: Vec<&Ck> = named.iter().filter(|c| truth.forked.contains(c)).collect();
            if !forked.is_empty() {
                let _ = writeln!(out, "  of a lost (forked) history: {forked:?}");
            }
        }
        if let Some(c) = v.consumer {
            let (spec, segments) = &history.consumers[c];
            let _ = writeln!(
                out,
                "  consumer {c}: {} via {:?}, filter {:?}, partitions {:?}, first start {:?}",
                spec.family.as_str(),
                spec.path,
                spec.filter,
                spec.partitions,
                spec.first
            );
            for (n, s) in segments.iter().enumerate() {
                let events: Vec<Ck> = s.events.iter().map(|r| r.ck).collect();
                let shown = match events.iter().position(|ck| named.contains(ck)) {
                    Some(i) => {
                        let from = i.saturating_sub(CONTEXT);
                        format!(
                            "… {:?} …",
                            &events[from..(i + CONTEXT + 1).min(events.len())]
                        )
                    }
                    None if events.len() > 2 * CONTEXT => format!(
                        "{:?} … {:?}",
                        &events[..CONTEXT],
                        &events[events.len() - CONTEXT..]
                    ),
                    None => format!("{events:?}"),
                };
                let _ = writeln!(
                    out,
                    "    segment {n}: {:?} from {:?} at {:.3}s, {} event(s) {shown}, end {:?}",
                    s.start,
                    s.from,
                    s.called.as_secs_f64(),
                    events.len(),
                    s.end
                );
            }
        }
    }
    out
}
