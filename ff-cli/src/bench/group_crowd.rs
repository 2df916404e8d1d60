//! The moving parts of `ff bench group`: members running in tasks that
//! report every event they handle, a producer publishing one event per
//! unit at a steady pace, and the tally of what was handled.
//!
//! Invariant: a member reports an event (its "effect") before it commits
//! it, so an event handed out but not committed when its member crashes
//! is redelivered and counted twice by the tally, never lost from it.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};
use ff_core::backend::{EventPublisher, StreamBackend};
use ff_core::group::{GroupConfig, GroupItem, GroupMember, GroupSpec};
use ff_core::stream_events::{CompletionOutcome, EventMeta, NewEvent};
use ff_core::types::ExecutionId;
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// One event a member handled.
#[derive(Clone, Copy, Debug)]
pub struct Delivery {
    /// The member's index.
    pub member: usize,
    /// The event's unit.
    pub unit: u32,
    /// The event's `n` tag.
    pub n: u64,
    /// When the member received it.
    pub at: Instant,
}

/// How a running member stops.
#[derive(Clone, Copy, Debug)]
pub enum Stop {
    /// `leave()`: drain, then release at once.
    Leave,
    /// `abort()`: its store activity stops without a release, as a crash.
    Crash,
}

/// A draft of the bench's run `run`, numbered `n`, in `unit` of `units`.
pub fn draft(run: &str, n: u64, unit: u32) -> (NewEvent, EventMeta) {
    (
        NewEvent::completion(ExecutionId::new(unit as u16), CompletionOutcome::Success),
        EventMeta::new()
            .with_tag("run", run)
            .with_tag("n", n.to_string()),
    )
}

/// The `n` tag of an event of run `run`.
pub fn n_of(meta: &EventMeta, run: &str) -> Option<u64> {
    if meta.tags.get("run").map(String::as_str) != Some(run) {
        return None;
    }
    meta.tags.get("n")?.parse().ok()
}

/// Members of one group, each in a task, reporting on one channel.
pub struct Crowd {
    backend: Arc<dyn StreamBackend>,
    spec: GroupSpec,
    config: GroupConfig,
    run: String,
    stops: HashMap<usize, (oneshot::Sender<Stop>, JoinHandle<()>)>,
    tx: mpsc::UnboundedSender<Delivery>,
    rx: mpsc::UnboundedReceiver<Delivery>,
    next: usize,
    /// How often each `n` was handled.
    pub handled: HashMap<u64, u32>,
}

impl Crowd {
    /// A crowd of `spec`'s group over `backend`, handling run `run`.
    pub fn new(
        backend: Arc<dyn StreamBackend>,
        spec: GroupSpec,
        config: GroupConfig,
        run: &str,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self {
            backend,
            spec,
            config,
            run: run.to_owned(),
            stops: HashMap::new(),
            tx,
            rx,
            next: 0,
            handled: HashMap::new(),
        }
    }

    /// Join a member (the group is created at the tail by the first);
    /// answer its index and its session.
    pub async fn join(&mut self) -> Result<(usize, String)> {
        let index = self.next;
        self.next += 1;
        let member = GroupMember::join(
            self.backend.clone(),
            self.spec.clone(),
            &format!("bench-{index}"),
            self.config.clone(),
        )
        .await?;
        let session = member.session().to_owned();
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = tokio::spawn(run_member(
            member,
            index,
            self.run.clone(),
            self.tx.clone(),
            stop_rx,
        ));
        self.stops.insert(index, (stop_tx, task));
        Ok((index, session))
    }

    /// Stop member `index` as `how` says and wait until it has.
    pub async fn stop(&mut self, index: usize, how: Stop) {
        if let Some((stop, task)) = self.stops.remove(&index) {
            let _ = stop.send(how);
            let _ = task.await;
        }
    }

    fn record(&mut self, d: Delivery) {
        *self.handled.entry(d.n).or_default() += 1;
    }

    /// Take in every delivery reported so far.
    pub fn drain(&mut self) {
        while let Ok(d) = self.rx.try_recv() {
            self.record(d);
        }
    }

    /// Wait until `member` handled an event of each of `units` received at
    /// or after `since`; answer the latest such first receipt − `since`.
    pub async fn wait_delivering(
        &mut self,
        member: usize,
        units: &BTreeSet<u32>,
        since: Instant,
        deadline: Instant,
    ) -> Result<Duration> {
        let mut pending = units.clone();
        let mut latest = Duration::ZERO;
        while !pending.is_empty() {
            let d = match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(d)) => d,
                Ok(None) => bail!("every member stopped"),
                Err(_) => bail!("units {pending:?} did not deliver on member {member} in time"),
            };
            self.record(d);
            if d.member == member && d.at >= since && pending.remove(&d.unit) {
                latest = latest.max(d.at - since);
            }
        }
        Ok(latest)
    }

    /// Wait until every `n` below `published` was handled, up to
    /// `deadline`; answer how many never were.
    pub async fn wait_all_handled(&mut self, published: u64, deadline: Instant) -> u64 {
        self.drain();
        loop {
            let missing = (0..published)
                .filter(|n| !self.handled.contains_key(n))
                .count() as u64;
            if missing == 0 {
                return 0;
            }
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(d)) => self.record(d),
                _ => return missing,
            }
        }
    }

    /// Deliveries beyond the first of each event so far.
    pub fn repeats(&self) -> u64 {
        self.handled.values().map(|c| u64::from(c - 1)).sum()
    }
}

async fn run_member(
    mut member: GroupMember,
    index: usize,
    run: String,
    tx: mpsc::UnboundedSender<Delivery>,
    mut stop: oneshot::Receiver<Stop>,
) {
    loop {
        let item = tokio::select! {
            how = &mut stop => {
                match how.unwrap_or(Stop::Leave) {
                    Stop::Leave => {
                        if let Err(e) = member.leave().await {
                            eprintln!("ff bench group: member {index} left with an error: {e}");
                        }
                    }
                    Stop::Crash => member.abort(),
                }
                return;
            }
            item = member.next() => item,
        };
        let Some(item) = item else { return };
        match item {
            GroupItem::Event {
                unit, meta, commit, ..
            } => {
                if let Some(n) = n_of(&meta, &run) {
                    let at = Instant::now();
                    let _ = tx.send(Delivery {
                        member: index,
                        unit,
                        n,
                        at,
                    });
                }
                // A fenced commit ends the unit here (a `Lost` item
                // follows); its events go to the next owner.
                let _ = commit.commit().await;
            }
            GroupItem::Checkpoint { commit, .. } | GroupItem::Corrupt { commit, .. } => {
                let _ = commit.commit().await;
            }
            _ => {}
        }
    }
}

/// A producer publishing one event per unit every `every`, numbering
/// them from 0, until stopped; it answers how many it published.
pub struct Producer {
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<u64>>,
}

impl Producer {
    /// Start publishing run `run`'s events over `units` units.
    pub fn start(
        publisher: Arc<dyn EventPublisher>,
        run: &str,
        units: u32,
        every: Duration,
    ) -> Self {
        let (stop, mut stopped) = watch::channel(false);
        let run = run.to_owned();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut next = 0u64;
            loop {
                tokio::select! {
                    _ = stopped.changed() => return Ok(next),
                    _ = tick.tick() => {}
                }
                let batch = (0..units)
                    .map(|u| draft(&run, next + u64::from(u), u))
                    .collect();
                publisher.publish_batch(batch).await?;
                next += u64::from(units);
            }
        });
        Self { stop, task }
    }

    /// Stop publishing; answer how many events were published.
    pub async fn stop(self) -> Result<u64> {
        let _ = self.stop.send(true);
        self.task.await?
    }
}
