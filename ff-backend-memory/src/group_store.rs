//! [`MemoryGroupStore`]: consumer-group leases, members and unit cursors
//! in process memory, judged on this process's monotonic clock.
//!
//! Every operation runs under one lock, so each is atomic: a commit's
//! compare-and-set on (owner, epoch, cursor), an acquire's check that the
//! owner's heartbeat expired, and the epoch bump when a unit changes
//! hands. A heartbeat touches only its member's entry.

use std::collections::HashMap;
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

/// Consumer groups kept in memory, shared by every member in the process
/// that uses the same [`MemoryBackend`](crate::MemoryBackend).
#[derive(Debug, Default)]
pub struct MemoryGroupStore {
    groups: Mutex<HashMap<String, Group>>,
}

#[derive(Debug)]
struct Group {
    family: Family,
    filter: String,
    units: Vec<Unit>,
    /// Member session → when its heartbeat expires.
    members: HashMap<String, Instant>,
    wake: watch::Sender<u64>,
}

#[derive(Debug)]
struct Unit {
    owner: Option<String>,
    epoch: u64,
    cursor: StreamCursor,
}

impl Group {
    fn live(&self, session: &str, now: Instant) -> bool {
        self.members.get(session).is_some_and(|e| *e > now)
    }

    fn wake(&self) {
        self.wake.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn view(&self, now: Instant) -> GroupView {
        let mut members: Vec<MemberInfo> = self
            .members
            .iter()
            .filter(|(_, e)| **e > now)
            .map(|(s, e)| MemberInfo::new(s.clone(), e.duration_since(now).as_millis() as i64))
            .collect();
        members.sort_by(|a, b| a.session.cmp(&b.session));
        let unit_states = self
            .units
            .iter()
            .enumerate()
            .map(|(i, u)| {
                let live = u.owner.as_deref().is_some_and(|o| self.live(o, now));
                UnitState::new(i as u32, u.owner.clone(), live, u.epoch, u.cursor.clone())
            })
            .collect();
        GroupView::new(
            self.family,
            self.filter.clone(),
            self.units.len() as u32,
            members,
            unit_states,
        )
    }
}

impl MemoryGroupStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn with_group<T>(
        &self,
        group: &str,
        f: impl FnOnce(&mut Group, Instant) -> Result<T, EngineError>,
    ) -> Result<T, EngineError> {
        let mut groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        let g = groups.get_mut(group).ok_or_else(|| no_group(group))?;
        f(g, Instant::now())
    }
}

fn no_group(group: &str) -> EngineError {
    EngineError::validation(format!(
        "consumer group {group:?} does not exist; a member creates it when it joins"
    ))
}

#[async_trait]
impl GroupStore for MemoryGroupStore {
    fn backend_name(&self) -> &'static str {
        "memory"
    }

    async fn create_or_check(
        &self,
        spec: &GroupSpec,
        start: &StreamCursor,
    ) -> Result<(), EngineError> {
        validate_group_name(&spec.name)?;
        let mut groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(g) = groups.get(&spec.name) {
            return spec.check_matches(g.family, &g.filter, g.units.len() as u32);
        }
        let units = (0..spec.units)
            .map(|_| Unit {
                owner: None,
                epoch: 0,
                cursor: start.clone(),
            })
            .collect();
        groups.insert(
            spec.name.clone(),
            Group {
                family: spec.family,
                filter: filter_text(&spec.filter),
                units,
                members: HashMap::new(),
                wake: watch::channel(0).0,
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
        self.with_group(group, |g, now| {
            let was_live = g.live(session, now);
            g.members.retain(|_, e| *e > now);
            g.members.insert(session.to_owned(), now + ttl);
            if !was_live {
                g.wake();
            }
            Ok(g.view(now))
        })
    }

    async fn view(&self, group: &str) -> Result<GroupView, EngineError> {
        self.with_group(group, |g, now| Ok(g.view(now)))
    }

    async fn acquire(
        &self,
        group: &str,
        unit: u32,
        session: &str,
    ) -> Result<Option<UnitLease>, EngineError> {
        self.with_group(group, |g, now| {
            let live = |o: &str| g.live(o, now);
            let u = g.units.get(unit as usize).ok_or_else(|| {
                EngineError::validation(format!("group {group:?} has no unit {unit}"))
            })?;
            let takeable = match u.owner.as_deref() {
                None => true,
                Some(o) => o == session || !live(o),
            };
            if !takeable {
                return Ok(None);
            }
            let changes_hands = u.owner.as_deref() != Some(session);
            let u = &mut g.units[unit as usize];
            if changes_hands {
                u.owner = Some(session.to_owned());
                u.epoch += 1;
            }
            let lease = UnitLease::new(group, unit, session, u.epoch, u.cursor.clone());
            if changes_hands {
                g.wake();
            }
            Ok(Some(lease))
        })
    }

    async fn release(&self, lease: &UnitLease) -> Result<(), EngineError> {
        self.with_group(&lease.group, |g, _| {
            if let Some(u) = g.units.get_mut(lease.unit as usize) {
                if u.owner.as_deref() == Some(lease.owner.as_str()) && u.epoch == lease.epoch {
                    u.owner = None;
                    g.wake();
                }
            }
            Ok(())
        })
    }

    async fn leave(&self, group: &str, session: &str) -> Result<(), EngineError> {
        self.with_group(group, |g, _| {
            g.members.remove(session);
            for u in &mut g.units {
                if u.owner.as_deref() == Some(session) {
                    u.owner = None;
                }
            }
            g.wake();
            Ok(())
        })
    }

    async fn commit(
        &self,
        lease: &UnitLease,
        prev: &StreamCursor,
        next: &StreamCursor,
    ) -> Result<(), EngineError> {
        self.with_group(&lease.group, |g, _| {
            let u = g
                .units
                .get_mut(lease.unit as usize)
                .ok_or_else(|| lease.fenced("the unit does not exist"))?;
            if u.owner.as_deref() != Some(lease.owner.as_str()) || u.epoch != lease.epoch {
                return Err(lease.fenced(&format!("the unit is at epoch {}", u.epoch)));
            }
            if &u.cursor != prev {
                return Err(lease.fenced("the stored cursor is not the one last committed"));
            }
            u.cursor = next.clone();
            Ok(())
        })
    }

    async fn watch(&self, group: &str) -> Result<GroupWake, EngineError> {
        let mut rx = self.with_group(group, |g, _| Ok(g.wake.subscribe()))?;
        rx.borrow_and_update();
        Ok(Box::pin(futures::stream::unfold(rx, |mut rx| async move {
            rx.changed().await.ok()?;
            Some(((), rx))
        })))
    }
}
