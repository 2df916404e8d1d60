//! Consumer groups: N members share one family's events, each event
//! handled by one member, in order per execution.
//!
//! A group (a name, a family, a filter) splits the family into U **units**
//! by the execution's `{fp:N}` (unit = N mod U), so every execution's
//! events stay in one unit, in order. U is fixed when the group is created
//! and stored with it; a member asking for another U is refused.
//!
//! Each unit has one owner at a time, held by a **lease** kept in the
//! backend the events live in ([`GroupStore`]): the owner's session, an
//! epoch that moves only when the unit changes hands, and the unit's
//! committed cursor. A lease lives as long as its owner's heartbeat, so a
//! heartbeat never touches a unit's row. Every commit is a compare-and-set
//! on the unit's epoch and its previous cursor: a paused member ("zombie")
//! cannot move a cursor it no longer owns, and a store that lost a write
//! yields duplicates, never a skipped event.
//!
//! [`GroupMember`] is the backend-independent member: it heartbeats,
//! computes the leaderless assignment ([`assign`]), takes free or expired
//! units, drains and releases the ones it gives up, and yields one stream
//! of [`GroupItem`]s tagged with their unit, each event with a [`Commit`]
//! handle. A member reads the family once for all the units it holds, through
//! one backend subscription (on a partitioned Valkey family, of the
//! partitions it holds: there a unit is a partition and U must be P); the
//! backend judges each unit's committed cursor when the unit is taken (a
//! trimmed one is `CursorExpired` for that unit alone).
//!
//! ```no_run
//! # async fn demo(backend: std::sync::Arc<dyn ff_core::backend::StreamBackend>) -> Result<(), ff_core::error::EngineError> {
//! use futures::StreamExt;
//! use ff_core::group::{GroupConfig, GroupItem, GroupMember, GroupSpec};
//! use ff_core::event::Family;
//! let spec = GroupSpec::new("promoter", Family::Completion, 16)?;
//! let mut member = GroupMember::join(backend, spec, "replica-1", GroupConfig::default()).await?;
//! while let Some(item) = member.next().await {
//!     if let GroupItem::Event { unit, event, commit, .. } = item {
//!         println!("unit {unit}: {}", event.cursor());
//!         commit.commit().await?; // after the effects
//!     }
//! }
//! # Ok(()) }
//! ```

mod assign;
mod config;
mod item;
mod member;
mod reader;
mod spec;
mod store;

pub use assign::{assign, rendezvous_score};
pub use config::{GroupConfig, DEFAULT_CHECKPOINT_INTERVAL, DEFAULT_LEASE};
pub use item::{Commit, GroupItem};
pub use member::GroupMember;
pub use spec::{filter_text, unit_of, validate_group_name, GroupSpec, MAX_UNITS};
pub use store::{GroupStore, GroupView, GroupWake, MemberInfo, UnitLease, UnitState};
