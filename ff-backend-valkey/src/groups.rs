//! [`ValkeyGroupStore`]: consumer groups' members, leases and unit cursors
//! in four keys per group, driven by one Lua script (`groups.lua`).
//!
//! Layout: `{prefix}{g:<hash>}:group` (name, family, filter, units),
//! `…:members` (session → heartbeat expiry on the server's clock),
//! `…:units` (each unit's owner, epoch and cursor) and `…:wake` (a stream
//! members block on for hand-overs). `<hash>` is a stable hash of the group
//! name, so every key of a group — each unit's lease and cursor included —
//! shares one hash slot and one script call sees them all atomically; the
//! name is stored and checked, so two names that hash alike are refused.
//!
//! On a family split into P > 1 partitions a unit is a partition: the store
//! says so ([`GroupStore::unit_partitions`]) and lets members subscribe to
//! the partitions they hold.
//!
//! Invariants: as for every [`GroupStore`] — a heartbeat renews every lease
//! of its member without touching the units, the epoch moves only when a
//! unit changes hands, and a commit compares owner, epoch and the previous
//! cursor, so a failover that lost a write yields duplicates, never a
//! skipped event. Every operation is safe to resend: an acquire by the
//! current owner and a commit of the stored cursor change nothing.

use std::time::Duration;

use async_trait::async_trait;
use ff_core::backend::DeliveryStream;
use ff_core::engine_error::EngineError;
use ff_core::filter::SubscriptionFilter;
use ff_core::group::{
    filter_text, rendezvous_score, validate_group_name, GroupSpec, GroupStore, GroupView,
    GroupWake, MemberInfo, UnitLease, UnitState,
};
use ff_core::stream_events::Family;
use ff_core::stream_subscribe::StreamCursor;
use redis::Value;
use std::sync::Arc;

use crate::error::{unexpected, BACKEND};
use crate::inner::Inner;
use crate::routing::slot::key_slot;
use crate::routing::Retry;

const SCRIPT: &str = include_str!("groups.lua");

/// A group's four keys and their slot.
struct GroupKeys {
    keys: [String; 4],
    slot: u16,
}

/// Consumer groups kept on the backend's server (cluster included).
#[derive(Clone)]
pub struct ValkeyGroupStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ValkeyGroupStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValkeyGroupStore")
            .field("prefix", &self.inner.config.key_prefix)
            .finish_non_exhaustive()
    }
}

impl ValkeyGroupStore {
    pub(crate) fn new(inner: Arc<Inner>) -> Self {
        Self { inner }
    }

    fn keys(&self, group: &str) -> GroupKeys {
        let tag = format!("{:016x}", rendezvous_score(group, 0));
        let base = format!("{}{{g:{tag}}}", self.inner.config.key_prefix);
        let keys = [
            format!("{base}:group"),
            format!("{base}:members"),
            format!("{base}:units"),
            format!("{base}:wake"),
        ];
        let slot = key_slot(keys[0].as_bytes());
        GroupKeys { keys, slot }
    }

    /// Run the script's `op` on `group` with `args`.
    async fn run(&self, group: &str, op: &str, args: &[String]) -> Result<Vec<Value>, EngineError> {
        let keys = self.keys(group);
        let context = format!(
            "consumer group {group:?} ({op}) on {}",
            self.inner.url.redacted()
        );
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(SCRIPT).arg(4);
        for k in &keys.keys {
            cmd.arg(k);
        }
        cmd.arg(op).arg(group);
        for a in args {
            cmd.arg(a);
        }
        let reply = self
            .inner
            .router
            .command(keys.slot, &cmd, Retry::Idempotent)
            .await
            .map_err(|e| self.inner.fail(e, &context))?;
        match reply {
            Value::Array(items) => {
                if matches!(items.first(), Some(v) if text(v).as_deref() == Some("nogroup")) {
                    return Err(EngineError::validation(format!(
                        "consumer group {group:?} does not exist; a member creates it when it joins"
                    )));
                }
                Ok(items)
            }
            Value::ServerError(e) => Err(self.inner.fail(e.into(), &context)),
            other => Err(unexpected(&context, format!("{other:?}"))),
        }
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(n) => Some(n.to_string()),
        _ => None,
    }
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(n) => Some(*n),
        other => text(other).and_then(|t| t.parse().ok()),
    }
}

fn bad(group: &str, what: &str) -> EngineError {
    unexpected(&format!("consumer group {group:?}"), what)
}

/// Decode the script's view reply: `ok, family, filter, units, members,
/// unit rows`.
fn decode_view(group: &str, items: &[Value]) -> Result<GroupView, EngineError> {
    let [_, family, filter, units, members, rows] = items else {
        return Err(bad(group, "a view of another shape"));
    };
    let family: Family = text(family)
        .and_then(|f| f.parse().ok())
        .ok_or_else(|| bad(group, "an unknown family"))?;
    let filter = text(filter).unwrap_or_default();
    let units = int(units).ok_or_else(|| bad(group, "no unit count"))? as u32;
    let (Value::Array(members), Value::Array(rows)) = (members, rows) else {
        return Err(bad(group, "members or units that are not arrays"));
    };
    let mut infos = Vec::new();
    for pair in members.chunks(2) {
        let [session, left] = pair else {
            return Err(bad(group, "an odd member list"));
        };
        infos.push(MemberInfo::new(
            text(session).ok_or_else(|| bad(group, "a member session"))?,
            int(left).unwrap_or(0),
        ));
    }
    infos.sort_by(|a, b| a.session.cmp(&b.session));
    let mut states = Vec::new();
    for (u, row) in rows.chunks(4).enumerate() {
        let [owner, live, epoch, cursor] = row else {
            return Err(bad(group, "a unit row of another shape"));
        };
        let owner = text(owner).filter(|o| !o.is_empty());
        let cursor: StreamCursor = text(cursor)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| bad(group, "a unit cursor that is not a cursor"))?;
        states.push(UnitState::new(
            u as u32,
            owner,
            int(live) == Some(1),
            int(epoch).unwrap_or(0) as u64,
            cursor,
        ));
    }
    Ok(GroupView::new(family, filter, units, infos, states))
}

#[async_trait]
impl GroupStore for ValkeyGroupStore {
    fn backend_name(&self) -> &'static str {
        BACKEND
    }

    async fn create_or_check(
        &self,
        spec: &GroupSpec,
        start: &StreamCursor,
    ) -> Result<(), EngineError> {
        validate_group_name(&spec.name)?;
        let reply = self
            .run(
                &spec.name,
                "create",
                &[
                    spec.family.as_str().to_owned(),
                    filter_text(&spec.filter),
                    spec.units.to_string(),
                    start.to_string(),
                ],
            )
            .await?;
        match reply.as_slice() {
            [status] if text(status).as_deref() == Some("created") => Ok(()),
            [status, family, filter, units] if text(status).as_deref() == Some("exists") => {
                let family: Family = text(family)
                    .and_then(|f| f.parse().ok())
                    .ok_or_else(|| bad(&spec.name, "an unknown family"))?;
                spec.check_matches(
                    family,
                    &text(filter).unwrap_or_default(),
                    int(units).unwrap_or(0) as u32,
                )
            }
            other => Err(bad(&spec.name, &format!("create answered {other:?}"))),
        }
    }

    async fn heartbeat(
        &self,
        group: &str,
        session: &str,
        ttl: Duration,
    ) -> Result<GroupView, EngineError> {
        let reply = self
            .run(
                group,
                "heartbeat",
                &[session.to_owned(), ttl.as_millis().to_string()],
            )
            .await?;
        decode_view(group, &reply)
    }

    async fn view(&self, group: &str) -> Result<GroupView, EngineError> {
        let reply = self.run(group, "view", &[]).await?;
        decode_view(group, &reply)
    }

    async fn acquire(
        &self,
        group: &str,
        unit: u32,
        session: &str,
    ) -> Result<Option<UnitLease>, EngineError> {
        let reply = self
            .run(group, "acquire", &[unit.to_string(), session.to_owned()])
            .await?;
        match reply.as_slice() {
            [status, epoch, cursor] if text(status).as_deref() == Some("ok") => {
                let epoch = int(epoch).ok_or_else(|| bad(group, "an epoch"))? as u64;
                let cursor: StreamCursor = text(cursor)
                    .and_then(|c| c.parse().ok())
                    .ok_or_else(|| bad(group, "a unit cursor that is not a cursor"))?;
                Ok(Some(UnitLease::new(group, unit, session, epoch, cursor)))
            }
            [status] if text(status).as_deref() == Some("held") => Ok(None),
            [status] if text(status).as_deref() == Some("nounit") => Err(EngineError::validation(
                format!("group {group:?} has no unit {unit}"),
            )),
            other => Err(bad(group, &format!("acquire answered {other:?}"))),
        }
    }

    async fn release(&self, lease: &UnitLease) -> Result<(), EngineError> {
        self.run(
            &lease.group,
            "release",
            &[
                lease.unit.to_string(),
                lease.owner.clone(),
                lease.epoch.to_string(),
            ],
        )
        .await
        .map(|_| ())
    }

    async fn leave(&self, group: &str, session: &str) -> Result<(), EngineError> {
        self.run(group, "leave", &[session.to_owned()])
            .await
            .map(|_| ())
    }

    async fn commit(
        &self,
        lease: &UnitLease,
        prev: &StreamCursor,
        next: &StreamCursor,
    ) -> Result<(), EngineError> {
        let reply = self
            .run(
                &lease.group,
                "commit",
                &[
                    lease.unit.to_string(),
                    lease.owner.clone(),
                    lease.epoch.to_string(),
                    prev.to_string(),
                    next.to_string(),
                ],
            )
            .await?;
        match reply.as_slice() {
            [status] if text(status).as_deref() == Some("ok") => Ok(()),
            [status, owner, epoch, why] if text(status).as_deref() == Some("fenced") => Err(lease
                .fenced(&format!(
                    "{} (held by {} under epoch {})",
                    text(why).unwrap_or_default(),
                    text(owner).unwrap_or_default(),
                    text(epoch).unwrap_or_default()
                ))),
            other => Err(bad(&lease.group, &format!("commit answered {other:?}"))),
        }
    }

    async fn watch(&self, group: &str) -> Result<GroupWake, EngineError> {
        let keys = self.keys(group);
        crate::group_wake::watch(self.inner.clone(), keys.keys[3].clone(), keys.slot).await
    }

    fn unit_partitions(&self, _family: Family) -> Option<u16> {
        Some(self.inner.keys.partitions()).filter(|&p| p > 1)
    }

    async fn start_partitions(
        &self,
        family: Family,
        partitions: &[u16],
        cursor: StreamCursor,
    ) -> Result<StreamCursor, EngineError> {
        crate::subscribe::start_position(&self.inner, family, partitions, cursor).await
    }

    async fn subscribe_partitions(
        &self,
        family: Family,
        partitions: &[u16],
        cursor: StreamCursor,
        filter: &SubscriptionFilter,
    ) -> Result<DeliveryStream, EngineError> {
        crate::subscribe::subscribe_partitions(&self.inner, family, partitions, cursor, filter)
            .await
    }
}
