//! [`MutantGroups`]: the mutant backend's consumer-group leases, members
//! and unit cursors, kept in the store (the "server") and judged on its
//! clock — with the group bugs a [`Mutation`] can switch on.
//!
//! Invariants without a mutation: every operation runs under one lock;
//! a member is live until its last heartbeat's time + ttl; a unit's epoch
//! moves exactly when its owner changes; a commit is a compare-and-set on
//! (owner, epoch, previous cursor); a release or a leave wakes the group.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use ff_core::engine_error::EngineError;
use ff_core::group::{
    filter_text, validate_group_name, GroupSpec, GroupStore, GroupView, GroupWake, MemberInfo,
    UnitLease, UnitState,
};
use ff_core::stream_events::Family;
use ff_core::stream_subscribe::StreamCursor;
use tokio::sync::watch;
use tokio::time::Instant;

use super::Mutation;

/// Every consumer group of one mutant store.
#[derive(Debug)]
pub struct MutantGroups {
    mutation: Option<Mutation>,
    groups: Mutex<BTreeMap<String, Group>>,
}

#[derive(Debug)]
struct Group {
    family: Family,
    filter: String,
    /// Session → its heartbeat's expiry.
    members: BTreeMap<String, Instant>,
    /// Per unit: owner, epoch, committed cursor.
    units: Vec<(Option<String>, u64, StreamCursor)>,
    changed: watch::Sender<u64>,
}

impl Group {
    fn is_live(&self, session: &str, now: Instant) -> bool {
        self.members.get(session).is_some_and(|until| now < *until)
    }

    fn wake(&self) {
        self.changed.send_modify(|n| *n += 1);
    }

    fn view(&self, now: Instant) -> GroupView {
        let members = self
            .members
            .iter()
            .filter(|(_, until)| now < **until)
            .map(|(s, until)| MemberInfo::new(s, (*until - now).as_millis() as i64))
            .collect();
        let units = self
            .units
            .iter()
            .enumerate()
            .map(|(unit, (owner, epoch, cursor))| {
                let live = owner.as_deref().is_some_and(|o| self.is_live(o, now));
                UnitState::new(unit as u32, owner.clone(), live, *epoch, cursor.clone())
            })
            .collect();
        GroupView::new(
            self.family,
            self.filter.clone(),
            self.units.len() as u32,
            members,
            units,
        )
    }
}

impl MutantGroups {
    /// No groups yet, with `mutation` switched on.
    pub(crate) fn new(mutation: Option<Mutation>) -> Self {
        Self {
            mutation,
            groups: Mutex::new(BTreeMap::new()),
        }
    }

    fn has(&self, m: Mutation) -> bool {
        self.mutation == Some(m)
    }

    fn on<T>(
        &self,
        group: &str,
        f: impl FnOnce(&mut Group, Instant) -> Result<T, EngineError>,
    ) -> Result<T, EngineError> {
        let mut groups = self.groups.lock().expect("lock");
        let g = groups.get_mut(group).ok_or_else(|| {
            EngineError::validation(format!(
                "group {group:?} does not exist; a member creates it when it joins"
            ))
        })?;
        f(g, Instant::now())
    }
}

#[async_trait]
impl GroupStore for MutantGroups {
    fn backend_name(&self) -> &'static str {
        "mutant"
    }

    async fn create_or_check(
        &self,
        spec: &GroupSpec,
        start: &StreamCursor,
    ) -> Result<(), EngineError> {
        validate_group_name(&spec.name)?;
        let mut groups = self.groups.lock().expect("lock");
        if let Some(g) = groups.get(&spec.name) {
            return spec.check_matches(g.family, &g.filter, g.units.len() as u32);
        }
        groups.insert(
            spec.name.clone(),
            Group {
                family: spec.family,
                filter: filter_text(&spec.filter),
                members: BTreeMap::new(),
                units: vec![(None, 0, start.clone()); spec.units as usize],
                changed: watch::channel(0).0,
            },
        );
        Ok(())
    }

    async fn heartbeat(
        &self,
        group: &str,
        session: &str,
        ttl: Duration,
    ) -> Result<GroupView, EngineError> {
        let renew_moves_epoch = self.has(Mutation::GroupEpochMovesOnRenew);
        let ttl = match self.has(Mutation::GroupLeasesExpireEarly) {
            true => ttl / 2,
            false => ttl,
        };
        self.on(group, |g, now| {
            let joined = !g.is_live(session, now);
            g.members.retain(|_, until| now < *until);
            g.members.insert(session.to_owned(), now + ttl);
            if renew_moves_epoch {
                for (owner, epoch, _) in &mut g.units {
                    if owner.as_deref() == Some(session) {
                        *epoch += 1;
                    }
                }
            }
            if joined {
                g.wake();
            }
            Ok(g.view(now))
        })
    }

    async fn view(&self, group: &str) -> Result<GroupView, EngineError> {
        self.on(group, |g, now| Ok(g.view(now)))
    }

    async fn acquire(
        &self,
        group: &str,
        unit: u32,
        session: &str,
    ) -> Result<Option<UnitLease>, EngineError> {
        let ignore_live_owner = self.has(Mutation::GroupAcquireTakesALiveUnit);
        let other_units_cursor = self.has(Mutation::GroupResumesFromAnotherUnit);
        self.on(group, |g, now| {
            let count = g.units.len();
            let Some((owner, _, _)) = g.units.get(unit as usize) else {
                return Err(EngineError::validation(format!(
                    "group {group:?} has no unit {unit}"
                )));
            };
            let owner = owner.clone();
            let mine = owner.as_deref() == Some(session);
            let free = owner.as_deref().is_none_or(|o| !g.is_live(o, now));
            if !(mine || free || ignore_live_owner) {
                return Ok(None);
            }
            let cursor_of = match other_units_cursor {
                true => (unit as usize + 1) % count,
                false => unit as usize,
            };
            let cursor = g.units[cursor_of].2.clone();
            let slot = &mut g.units[unit as usize];
            if !mine {
                slot.0 = Some(session.to_owned());
                slot.1 += 1;
                g.wake();
            }
            let epoch = g.units[unit as usize].1;
            Ok(Some(UnitLease::new(group, unit, session, epoch, cursor)))
        })
    }

    async fn release(&self, lease: &UnitLease) -> Result<(), EngineError> {
        let wakes = !self.has(Mutation::GroupReleaseDoesNotWake);
        self.on(&lease.group, |g, _| {
            if let Some(slot) = g.units.get_mut(lease.unit as usize) {
                if slot.0.as_deref() == Some(lease.owner.as_str()) && slot.1 == lease.epoch {
                    slot.0 = None;
                    if wakes {
                        g.wake();
                    }
                }
            }
            Ok(())
        })
    }

    async fn leave(&self, group: &str, session: &str) -> Result<(), EngineError> {
        let wakes = !self.has(Mutation::GroupReleaseDoesNotWake);
        self.on(group, |g, _| {
            g.members.remove(session);
            for slot in &mut g.units {
                if slot.0.as_deref() == Some(session) {
                    slot.0 = None;
                }
            }
            if wakes {
                g.wake();
            }
            Ok(())
        })
    }

    async fn commit(
        &self,
        lease: &UnitLease,
        prev: &StreamCursor,
        next: &StreamCursor,
    ) -> Result<(), EngineError> {
        let fenced_by_epoch = !self.has(Mutation::GroupCommitUnfenced);
        let fenced_by_prev = !self.has(Mutation::GroupCommitIgnoresThePreviousCursor);
        self.on(&lease.group, |g, _| {
            let Some((owner, epoch, cursor)) = g.units.get_mut(lease.unit as usize) else {
                return Err(lease.fenced("the unit does not exist"));
            };
            if fenced_by_epoch
                && (owner.as_deref() != Some(lease.owner.as_str()) || *epoch != lease.epoch)
            {
                return Err(lease.fenced(&format!("the unit is at epoch {epoch}")));
            }
            if fenced_by_prev && cursor != prev {
                return Err(lease.fenced("the stored cursor is not the one last committed"));
            }
            *cursor = next.clone();
            Ok(())
        })
    }

    async fn watch(&self, group: &str) -> Result<GroupWake, EngineError> {
        let mut changed = self.on(group, |g, _| Ok(g.changed.subscribe()))?;
        changed.borrow_and_update();
        Ok(Box::pin(futures::stream::unfold(
            changed,
            |mut changed| async move {
                changed.changed().await.ok()?;
                Some(((), changed))
            },
        )))
    }
}
