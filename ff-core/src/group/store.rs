//! [`GroupStore`]: the lease and cursor store a backend implements for
//! consumer groups.
//!
//! Invariants every implementation keeps:
//! - a unit's lease is live while its owner's member heartbeat is live
//!   (judged on the store's clock), so a heartbeat renews every lease of a
//!   member without touching any unit's row;
//! - a unit's epoch moves exactly when its owner changes (free → owned
//!   counts), never on a heartbeat or a commit;
//! - a commit is a compare-and-set on (owner, epoch, previous cursor): a
//!   zombie's commit, or one after a lost write moved the cursor back, is
//!   refused with [`EngineError::Fenced`].

use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use futures::Stream;

use crate::backend::DeliveryStream;
use crate::cursor::StreamCursor;
use crate::error::EngineError;
use crate::event::Family;
use crate::filter::SubscriptionFilter;
use crate::group::GroupSpec;

/// Wake-ups of a group: one item each time its membership or a unit's
/// owner may have changed (a join, a leave, a release, an acquire).
/// Heartbeats do not wake; crashes are found by the heartbeat tick.
pub type GroupWake = Pin<Box<dyn Stream<Item = ()> + Send>>;

/// A member as the store sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemberInfo {
    /// The member's session (`id#incarnation`).
    pub session: String,
    /// Milliseconds until its heartbeat expires (store clock).
    pub expires_in_ms: i64,
}

impl MemberInfo {
    /// A member from its parts.
    pub fn new(session: impl Into<String>, expires_in_ms: i64) -> Self {
        Self {
            session: session.into(),
            expires_in_ms,
        }
    }

    /// The member id part of the session.
    pub fn id(&self) -> &str {
        self.session
            .rsplit_once('#')
            .map_or(self.session.as_str(), |(id, _)| id)
    }
}

/// One unit as the store sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct UnitState {
    /// The unit number.
    pub unit: u32,
    /// Its owner's session, if any (live or not).
    pub owner: Option<String>,
    /// Whether the owner's heartbeat is live.
    pub owner_live: bool,
    /// The lease epoch.
    pub epoch: u64,
    /// The last committed cursor.
    pub cursor: StreamCursor,
}

impl UnitState {
    /// A unit from its parts.
    pub fn new(
        unit: u32,
        owner: Option<String>,
        owner_live: bool,
        epoch: u64,
        cursor: StreamCursor,
    ) -> Self {
        Self {
            unit,
            owner,
            owner_live,
            epoch,
            cursor,
        }
    }

    /// Whether `session` may acquire this unit now.
    pub fn takeable_by(&self, session: &str) -> bool {
        match &self.owner {
            None => true,
            Some(owner) => owner == session || !self.owner_live,
        }
    }
}

/// A group as the store sees it: definition, live members, every unit.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct GroupView {
    /// The group's family.
    pub family: Family,
    /// Its filter's stored text ([`filter_text`](crate::group::filter_text)).
    pub filter: String,
    /// Its unit count.
    pub units: u32,
    /// Members whose heartbeat is live, by session.
    pub members: Vec<MemberInfo>,
    /// Every unit, in unit order.
    pub unit_states: Vec<UnitState>,
}

impl GroupView {
    /// A view from its parts.
    pub fn new(
        family: Family,
        filter: String,
        units: u32,
        members: Vec<MemberInfo>,
        unit_states: Vec<UnitState>,
    ) -> Self {
        Self {
            family,
            filter,
            units,
            members,
            unit_states,
        }
    }

    /// Whether the group has settled on `members` live members, each unit
    /// held by the live member the [assignment](crate::group::assign)
    /// names: no hand-over is pending.
    pub fn settled(&self, members: usize) -> bool {
        let sessions: Vec<&str> = self.members.iter().map(|m| m.session.as_str()).collect();
        let target = crate::group::assign(self.units, &sessions);
        sessions.len() == members
            && self.unit_states.iter().all(|u| {
                u.owner_live
                    && target
                        .get(u.unit as usize)
                        .copied()
                        .flatten()
                        .map(|i| sessions[i])
                        == u.owner.as_deref()
            })
    }
}

/// A unit held by a member: what a commit names.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct UnitLease {
    /// The group.
    pub group: String,
    /// The unit.
    pub unit: u32,
    /// The holder's session.
    pub owner: String,
    /// The epoch it holds the unit under.
    pub epoch: u64,
    /// The unit's committed cursor when acquired.
    pub cursor: StreamCursor,
}

impl UnitLease {
    /// A lease from its parts.
    pub fn new(
        group: impl Into<String>,
        unit: u32,
        owner: impl Into<String>,
        epoch: u64,
        cursor: StreamCursor,
    ) -> Self {
        Self {
            group: group.into(),
            unit,
            owner: owner.into(),
            epoch,
            cursor,
        }
    }

    /// The `Fenced` error for this lease, naming what moved.
    pub fn fenced(&self, what: &str) -> EngineError {
        EngineError::Fenced {
            detail: format!(
                "group {:?} unit {} is no longer held by {} under epoch {}: {what}; \
                 its events go to the current owner from the stored cursor",
                self.group, self.unit, self.owner, self.epoch
            ),
        }
    }
}

/// Leases, members and unit cursors of consumer groups, kept in the
/// backend the events live in. See the module docs for the invariants.
#[async_trait]
pub trait GroupStore: Send + Sync {
    /// Short backend name.
    fn backend_name(&self) -> &'static str;

    /// Create the group with every unit at `start` if it does not exist;
    /// otherwise check `spec` against the stored definition
    /// ([`GroupSpec::check_matches`]).
    async fn create_or_check(
        &self,
        spec: &GroupSpec,
        start: &StreamCursor,
    ) -> Result<(), EngineError>;

    /// Record `session` live until the store's now + `ttl` (adding it, and
    /// waking the group, when it was not live), and answer the group's view
    /// as read after that.
    async fn heartbeat(
        &self,
        group: &str,
        session: &str,
        ttl: Duration,
    ) -> Result<GroupView, EngineError>;

    /// The group's view, read only (`Validation` if it does not exist).
    async fn view(&self, group: &str) -> Result<GroupView, EngineError>;

    /// Take `unit` for `session` if it is free, its owner's heartbeat
    /// expired, or `session` holds it already; the epoch moves when the
    /// owner changes. `None` when another live member holds it.
    async fn acquire(
        &self,
        group: &str,
        unit: u32,
        session: &str,
    ) -> Result<Option<UnitLease>, EngineError>;

    /// Give `lease`'s unit up if it is still held under that epoch, and
    /// wake the group.
    async fn release(&self, lease: &UnitLease) -> Result<(), EngineError>;

    /// Remove `session` from the members, release every unit it holds,
    /// and wake the group.
    async fn leave(&self, group: &str, session: &str) -> Result<(), EngineError>;

    /// Move `lease`'s unit cursor from `prev` to `next`: only while the
    /// unit is held by the lease's owner under its epoch and its stored
    /// cursor is `prev`; otherwise [`EngineError::Fenced`].
    async fn commit(
        &self,
        lease: &UnitLease,
        prev: &StreamCursor,
        next: &StreamCursor,
    ) -> Result<(), EngineError>;

    /// Wake-ups of `group` (see [`GroupWake`]).
    async fn watch(&self, group: &str) -> Result<GroupWake, EngineError>;

    /// `Some(P)` when this backend splits `family` into P > 1 partitions:
    /// a group's unit is then a partition (U must be P) and a member reads
    /// only the partitions it holds, through
    /// [`GroupStore::subscribe_partitions`]. `None` (the default) when the
    /// family is one stream.
    fn unit_partitions(&self, family: Family) -> Option<u16> {
        let _ = family;
        None
    }

    /// Judge `cursor` as a subscription of `family`'s `partitions` from it
    /// would, and answer where that subscription starts as a cursor naming
    /// a position in each of them: the tail resolved, `beginning()` just
    /// before each partition's oldest retained entry. Refuses what
    /// subscribing refuses (`CursorExpired`, `InvalidCursor`);
    /// `Unavailable` where families are not partitioned.
    async fn start_partitions(
        &self,
        family: Family,
        partitions: &[u16],
        cursor: StreamCursor,
    ) -> Result<StreamCursor, EngineError> {
        let _ = (family, partitions, cursor);
        Err(EngineError::unavailable(format!(
            "partition subscriptions on the {} backend",
            self.backend_name()
        )))
    }

    /// Subscribe to `family`'s `partitions` only, exactly after `cursor`
    /// (a cursor naming each of them); `Unavailable` where families are
    /// not partitioned.
    async fn subscribe_partitions(
        &self,
        family: Family,
        partitions: &[u16],
        cursor: StreamCursor,
        filter: &SubscriptionFilter,
    ) -> Result<DeliveryStream, EngineError> {
        let _ = (family, partitions, cursor, filter);
        Err(EngineError::unavailable(format!(
            "partition subscriptions on the {} backend",
            self.backend_name()
        )))
    }
}
