//! Helpers of the group suite: members run in tasks of their own and
//! report what they see on one channel, so a test can watch several
//! members at once, stop them cleanly or as a crash would, and wait for
//! conditions with deadlines.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::backend::EventPublisher;
use crate::cursor::StreamCursor;
use crate::error::EngineError;
use crate::event::{CompletionOutcome, EventMeta, Family, NewEvent};
use crate::group::{Commit, GroupConfig, GroupItem, GroupMember, GroupSpec, GroupView};
use crate::testkit::Harness;
use crate::types::ExecutionId;

/// How long any expected group condition may take.
pub const GROUP_DEADLINE: Duration = Duration::from_secs(30);

/// The timing the suite's members use: a 2 s lease, so crash hand-overs
/// are quick while a loaded test machine's scheduling delays stay well
/// inside a delivery window, and short checkpoints.
pub fn suite_config() -> GroupConfig {
    GroupConfig::with_lease(Duration::from_secs(2)).checkpoint_interval(Duration::from_millis(100))
}

/// `n` Completion drafts tagged `run` and `n`, over 13 partitions, so a
/// group's units all get events.
pub fn group_drafts(run: &str, from: usize, n: usize) -> Vec<(NewEvent, EventMeta)> {
    (from..from + n)
        .map(|i| {
            (
                NewEvent::completion(
                    ExecutionId::new((i % 13) as u16),
                    CompletionOutcome::Success,
                ),
                EventMeta::new()
                    .with_tag("run", run)
                    .with_tag("n", i.to_string()),
            )
        })
        .collect()
}

/// Publish `drafts` in one batch.
pub async fn publish(publisher: &dyn EventPublisher, drafts: Vec<(NewEvent, EventMeta)>) {
    publisher
        .publish_batch(drafts)
        .await
        .unwrap_or_else(|e| panic!("group suite: publishing failed: {e}"));
}

/// What a member saw, with the member's index.
#[derive(Debug)]
pub enum Seen {
    /// The member holds the unit now.
    Assigned {
        /// Member index.
        member: usize,
        /// Unit.
        unit: u32,
        /// When the test saw it.
        at: Instant,
    },
    /// The member handled event `n` of the unit (and committed it, when
    /// the member commits).
    Event {
        /// Member index.
        member: usize,
        /// Unit.
        unit: u32,
        /// The event's `n` tag.
        n: usize,
        /// Its commit handle.
        commit: Commit,
    },
    /// The member gave the unit up or lost it.
    Gone {
        /// Member index.
        member: usize,
        /// Unit.
        unit: u32,
    },
    /// The unit's subscription failed.
    Failed {
        /// Member index.
        member: usize,
        /// Unit.
        unit: u32,
        /// The error.
        error: EngineError,
    },
}

/// How a running member is stopped.
#[derive(Debug, Clone, Copy)]
pub enum Stop {
    /// `leave()`: drain, then release.
    Leave,
    /// Drop the member: release at once.
    Drop,
    /// `abort()`: as a crash, the lease expires.
    Crash,
}

/// Members of one group running in tasks, reporting on one channel.
pub struct Crowd {
    spec: GroupSpec,
    config: GroupConfig,
    stops: BTreeMap<usize, (oneshot::Sender<Stop>, tokio::task::JoinHandle<()>)>,
    tx: mpsc::UnboundedSender<Seen>,
    /// Everything the members saw, in the order the test received it.
    pub rx: mpsc::UnboundedReceiver<Seen>,
    next: usize,
}

impl Crowd {
    /// A crowd of `spec`'s group with `config`.
    pub fn new(spec: GroupSpec, config: GroupConfig) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self {
            spec,
            config,
            stops: BTreeMap::new(),
            tx,
            rx,
            next: 0,
        }
    }

    /// Join a member that commits every event when `commit` is set;
    /// answer its index.
    pub async fn join<H: Harness + ?Sized>(&mut self, h: &H, commit: bool) -> usize {
        let member = GroupMember::join_from(
            h.backend(),
            self.spec.clone(),
            &format!("m{}", self.next),
            self.config.clone(),
            StreamCursor::beginning(),
        )
        .await
        .unwrap_or_else(|e| panic!("group suite: a member could not join: {e}"));
        let index = self.next;
        self.next += 1;
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = tokio::spawn(run_member(member, index, commit, self.tx.clone(), stop_rx));
        self.stops.insert(index, (stop_tx, task));
        index
    }

    /// Stop member `index` the way `how` says, and wait until it has
    /// (after a crash, no heartbeat of it follows).
    pub async fn stop(&mut self, index: usize, how: Stop) {
        if let Some((stop, task)) = self.stops.remove(&index) {
            let _ = stop.send(how);
            let _ = task.await;
        }
    }

    /// The next thing a member saw, or a panic naming `what` at the deadline.
    pub async fn next(&mut self, what: &str) -> Seen {
        match tokio::time::timeout(GROUP_DEADLINE, self.rx.recv()).await {
            Ok(Some(seen)) => seen,
            _ => panic!(
                "group suite: nothing seen within {GROUP_DEADLINE:?} while waiting for {what}"
            ),
        }
    }
}

async fn run_member(
    mut member: GroupMember,
    index: usize,
    commit: bool,
    tx: mpsc::UnboundedSender<Seen>,
    mut stop: oneshot::Receiver<Stop>,
) {
    loop {
        let item = tokio::select! {
            how = &mut stop => {
                match how.unwrap_or(Stop::Drop) {
                    Stop::Leave => { let _ = member.leave().await; }
                    Stop::Drop => drop(member),
                    Stop::Crash => member.abort(),
                }
                return;
            }
            item = member.next() => item,
        };
        let Some(item) = item else { return };
        let seen = match item {
            GroupItem::Assigned { unit, .. } => Seen::Assigned {
                member: index,
                unit,
                at: Instant::now(),
            },
            GroupItem::Event {
                unit,
                meta,
                commit: handle,
                ..
            } => {
                let n = meta
                    .tags
                    .get("n")
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(usize::MAX);
                if commit && handle.commit().await.is_err() {
                    continue;
                }
                Seen::Event {
                    member: index,
                    unit,
                    n,
                    commit: handle,
                }
            }
            GroupItem::Checkpoint { commit: handle, .. } => {
                if commit {
                    let _ = handle.commit().await;
                }
                continue;
            }
            GroupItem::Released { unit } | GroupItem::Lost { unit, .. } => Seen::Gone {
                member: index,
                unit,
            },
            GroupItem::UnitFailed { unit, error } => Seen::Failed {
                member: index,
                unit,
                error,
            },
            _ => continue,
        };
        if tx.send(seen).is_err() {
            return;
        }
    }
}

/// Wait until the store shows every unit held by the live member the
/// assignment names, with `members` live members.
pub async fn converged<H: Harness + ?Sized>(h: &H, group: &str, members: usize) -> GroupView {
    let store = h
        .backend()
        .group_store()
        .unwrap_or_else(|e| panic!("group suite: the backend has no group store: {e}"));
    let deadline = Instant::now() + GROUP_DEADLINE;
    loop {
        let view = store
            .view(group)
            .await
            .unwrap_or_else(|e| panic!("group suite: reading group {group:?} failed: {e}"));
        if view.settled(members) {
            return view;
        }
        assert!(
            Instant::now() < deadline,
            "group suite: group {group:?} did not settle on {members} members within \
             {GROUP_DEADLINE:?}: {view:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every `n` in `expected` that `seen` lacks.
pub fn missing(expected: impl IntoIterator<Item = usize>, seen: &BTreeSet<usize>) -> Vec<usize> {
    expected.into_iter().filter(|n| !seen.contains(n)).collect()
}

/// The store of `h`'s backend.
pub fn store_of<H: Harness + ?Sized>(h: &H) -> Arc<dyn crate::group::GroupStore> {
    h.backend()
        .group_store()
        .unwrap_or_else(|e| panic!("group suite: the backend has no group store: {e}"))
}

/// The family every group test uses.
pub const FAMILY: Family = Family::Completion;
