//! The consumer-group suite (`docs/groups.md`): exclusive ownership, order
//! per unit, exact resume after a hand-over, fencing, the fixed unit
//! count, hand-over on a clean leave and after a crash, and no lost event
//! under member churn. Every test runs over a backend's
//! [`group_store`](crate::backend::StreamBackend::group_store) and its own
//! subscriptions, so a backend proves its leases by running it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tokio::time::Instant;

use crate::engine_error::EngineError;
use crate::group::{GroupConfig, GroupMember, GroupSpec};
use crate::stream_subscribe::StreamCursor;
use crate::testkit::group_crowd::{
    converged, group_drafts, missing, publish, store_of, suite_config, Crowd, Seen, Stop, FAMILY,
};
use crate::testkit::support::run_label;
use crate::testkit::Harness;

fn spec(test: &str, units: u32) -> GroupSpec {
    GroupSpec::new(run_label(test), FAMILY, units).expect("a valid group spec")
}

/// Collect events until every `n` in `expected` was seen at least once,
/// checking that within one holding of a unit (from its `Assigned` on) a
/// member sees the unit's events in publish order, none twice; answer
/// (n → deliveries as (member, unit)).
async fn collect(
    crowd: &mut Crowd,
    expected: std::ops::Range<usize>,
    what: &str,
) -> BTreeMap<usize, Vec<(usize, u32)>> {
    let mut seen: BTreeMap<usize, Vec<(usize, u32)>> = BTreeMap::new();
    let mut last: BTreeMap<(usize, u32), usize> = BTreeMap::new();
    while !missing(expected.clone(), &seen.keys().copied().collect()).is_empty() {
        match crowd.next(what).await {
            Seen::Assigned { member, unit, .. } => {
                last.remove(&(member, unit));
            }
            Seen::Event {
                member, unit, n, ..
            } => {
                if let Some(prev) = last.insert((member, unit), n) {
                    assert!(
                        n > prev,
                        "group: member {member} saw unit {unit}'s event {n} after {prev} within one holding"
                    );
                }
                seen.entry(n).or_default().push((member, unit));
            }
            _ => {}
        }
    }
    seen
}

/// Three members split six units with no member above ⌈U/N⌉; each event
/// is delivered exactly once, by the one member holding its unit, and the
/// events of a unit arrive in publish order.
pub async fn group_units_are_owned_exclusively_and_ordered<H: Harness + ?Sized>(h: &H) {
    let spec = spec("exclusive", 6);
    let mut crowd = Crowd::new(spec.clone(), suite_config());
    for _ in 0..3 {
        crowd.join(h, true).await;
    }
    let view = converged(h, &spec.name, 3).await;
    for m in &view.members {
        let held = view
            .unit_states
            .iter()
            .filter(|u| u.owner.as_deref() == Some(m.session.as_str()))
            .count();
        assert!(
            held <= 2,
            "group: {} holds {held} of 6 units with 3 members (cap 2)",
            m.session
        );
    }
    let store = store_of(h);
    for unit in 0..spec.units {
        let intruder = store
            .acquire(&spec.name, unit, "intruder#0")
            .await
            .expect("acquire");
        assert!(
            intruder.is_none(),
            "group: unit {unit} was handed to an intruder while its owner is live: {intruder:?}"
        );
    }
    let run = &spec.name;
    publish(h.publisher().as_ref(), group_drafts(run, 0, 120)).await;
    let mut by_unit: BTreeMap<u32, Vec<(usize, usize)>> = BTreeMap::new();
    let mut count: BTreeMap<usize, usize> = BTreeMap::new();
    while count.len() < 120 {
        if let Seen::Event {
            member, unit, n, ..
        } = crowd.next("120 events").await
        {
            *count.entry(n).or_default() += 1;
            by_unit.entry(unit).or_default().push((member, n));
        }
    }
    let twice: Vec<_> = count.iter().filter(|(_, c)| **c > 1).collect();
    assert!(
        twice.is_empty(),
        "group: events delivered more than once without any hand-over: {twice:?}"
    );
    for (unit, events) in &by_unit {
        let owners: BTreeSet<usize> = events.iter().map(|(m, _)| *m).collect();
        assert_eq!(
            owners.len(),
            1,
            "group: unit {unit}'s events went to members {owners:?}"
        );
        let ns: Vec<usize> = events.iter().map(|(_, n)| *n).collect();
        let mut sorted = ns.clone();
        sorted.sort_unstable();
        assert_eq!(
            ns, sorted,
            "group: unit {unit}'s events arrived out of order"
        );
        assert!(
            ns.iter()
                .all(|n| spec.units == 0 || (n % 13) as u32 % spec.units == *unit),
            "group: unit {unit} delivered events of other units: {ns:?}"
        );
    }
}

/// A member commits part of each unit's events and leaves without
/// draining; the next member gets exactly the rest of every unit — what
/// was handed out but not committed, and what was never handed out —
/// each unit in order.
pub async fn group_resumes_each_unit_exactly_after_its_last_commit<H: Harness + ?Sized>(h: &H) {
    let spec = spec("resume", 4);
    let run = spec.name.clone();
    publish(h.publisher().as_ref(), group_drafts(&run, 0, 80)).await;
    let mut first = GroupMember::join_from(
        h.backend(),
        spec.clone(),
        "first",
        suite_config(),
        StreamCursor::beginning(),
    )
    .await
    .expect("join");
    let mut committed: BTreeSet<usize> = BTreeSet::new();
    let mut per_unit: BTreeMap<u32, usize> = BTreeMap::new();
    let mut handed = 0;
    let deadline = Instant::now() + super::group_crowd::GROUP_DEADLINE;
    while handed < 40 {
        let item = tokio::time::timeout_at(deadline, futures::StreamExt::next(&mut first))
            .await
            .expect("the first member's events in time")
            .expect("the member's stream goes on");
        if let crate::group::GroupItem::Event {
            unit, meta, commit, ..
        } = item
        {
            handed += 1;
            let n: usize = meta.tags["n"].parse().unwrap();
            let k = per_unit.entry(unit).or_default();
            *k += 1;
            // Commit the first three of each unit only.
            if *k <= 3 {
                commit
                    .commit()
                    .await
                    .expect("commit while holding the unit");
                committed.insert(n);
            }
        }
    }
    drop(first);
    let mut crowd = Crowd::new(spec.clone(), suite_config());
    crowd.join(h, true).await;
    let mut got: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    let want: usize = 80 - committed.len();
    let mut total = 0;
    while total < want {
        if let Seen::Event { unit, n, .. } = crowd.next("the rest of every unit").await {
            got.entry(unit).or_default().push(n);
            total += 1;
        }
    }
    for unit in 0..4u32 {
        let expected: Vec<usize> = (0..80)
            .filter(|n| (n % 13) as u32 % 4 == unit && !committed.contains(n))
            .collect();
        assert_eq!(
            got.get(&unit).cloned().unwrap_or_default(),
            expected,
            "group: after the hand-over unit {unit} must resume exactly after its last commit"
        );
    }
}

/// A member that stopped heartbeating (a pause past its lease) holds a
/// commit handle; once another member took the unit, that commit is
/// refused (`Fenced`) and the stored cursor is unchanged. A commit naming
/// the current epoch but a stale previous cursor is refused too.
pub async fn group_refuses_a_zombie_commit<H: Harness + ?Sized>(h: &H) {
    let spec = spec("zombie", 1);
    let run = spec.name.clone();
    publish(h.publisher().as_ref(), group_drafts(&run, 0, 3)).await;
    let mut zombie = GroupMember::join_from(
        h.backend(),
        spec.clone(),
        "zombie",
        suite_config(),
        StreamCursor::beginning(),
    )
    .await
    .expect("join");
    let handle = loop {
        let item = tokio::time::timeout(
            super::group_crowd::GROUP_DEADLINE,
            futures::StreamExt::next(&mut zombie),
        )
        .await
        .expect("an event in time")
        .expect("the stream goes on");
        if let crate::group::GroupItem::Event { commit, .. } = item {
            break commit;
        }
    };
    zombie.abort();
    let mut crowd = Crowd::new(spec.clone(), suite_config());
    crowd.join(h, false).await;
    loop {
        if let Seen::Assigned { .. } = crowd.next("the unit's takeover").await {
            break;
        }
    }
    let refused = handle.commit().await;
    assert!(
        matches!(refused, Err(EngineError::Fenced { .. })),
        "group: a zombie's commit after the unit changed hands must be Fenced, got {refused:?}"
    );
    let store = store_of(h);
    let view = store.view(&spec.name).await.expect("view");
    let unit = &view.unit_states[0];
    assert_ne!(
        &unit.cursor,
        handle.cursor(),
        "group: the refused commit moved the unit's cursor"
    );
    let lease = crate::group::UnitLease::new(
        spec.name.clone(),
        0,
        unit.owner.clone().expect("the new owner"),
        unit.epoch,
        StreamCursor::beginning(),
    );
    let stale = store.commit(&lease, handle.cursor(), handle.cursor()).await;
    assert!(
        matches!(stale, Err(EngineError::Fenced { .. })),
        "group: a commit whose previous cursor is not the stored one must be Fenced, got {stale:?}"
    );
    // The new owner gets the zombie's uncommitted event again.
    loop {
        if let Seen::Event { n, .. } = crowd.next("the redelivered event").await {
            assert_eq!(
                n, 0,
                "group: the new owner must start with the uncommitted event"
            );
            break;
        }
    }
}

/// A member asking for another unit count than the group was created
/// with is refused with an error naming both.
pub async fn group_refuses_another_unit_count<H: Harness + ?Sized>(h: &H) {
    let spec = spec("units", 4);
    let member = GroupMember::join(h.backend(), spec.clone(), "a", suite_config())
        .await
        .expect("join");
    let other = GroupSpec::new(spec.name.clone(), FAMILY, 8).unwrap();
    let err = GroupMember::join(h.backend(), other, "b", suite_config())
        .await
        .expect_err("another unit count must be refused");
    let text = err.to_string();
    assert!(
        matches!(err, EngineError::Validation { .. }) && text.contains('4') && text.contains('8'),
        "group: the refusal must be Validation naming 4 and 8, got {err:?}"
    );
    drop(member);
}

/// With a lease far longer than the deadline, a member that leaves
/// cleanly (and one dropped) hands its units to the other at once.
pub async fn group_hands_over_at_once_on_a_clean_leave<H: Harness + ?Sized>(h: &H) {
    let config = GroupConfig::with_lease(Duration::from_secs(600))
        .checkpoint_interval(Duration::from_millis(100));
    for how in [Stop::Leave, Stop::Drop] {
        let spec = spec("clean-leave", 4);
        let mut crowd = Crowd::new(spec.clone(), config.clone());
        let a = crowd.join(h, true).await;
        let b = crowd.join(h, true).await;
        converged(h, &spec.name, 2).await;
        crowd.stop(a, how).await;
        let mut held: BTreeSet<u32> = BTreeSet::new();
        let view = store_of(h).view(&spec.name).await.unwrap();
        let mine = view
            .members
            .iter()
            .find(|m| m.id() == format!("m{b}"))
            .map(|m| m.session.clone());
        for u in &view.unit_states {
            if u.owner == mine {
                held.insert(u.unit);
            }
        }
        while held.len() < 4 {
            if let Seen::Assigned { member, unit, .. } = crowd
                .next(
                    "the leaver's units on the other member (a 600 s lease must not be waited for)",
                )
                .await
            {
                if member == b {
                    held.insert(unit);
                }
            }
        }
    }
}

/// A crashed member's units move to the other member once its lease
/// expired — never before the lease could have run out.
pub async fn group_hands_over_a_crashed_members_units_after_its_lease<H: Harness + ?Sized>(h: &H) {
    let spec = spec("crash", 4);
    let mut crowd = Crowd::new(spec.clone(), suite_config());
    let a = crowd.join(h, true).await;
    let b = crowd.join(h, true).await;
    let view = converged(h, &spec.name, 2).await;
    let a_session = view
        .members
        .iter()
        .find(|m| m.id() == format!("m{a}"))
        .unwrap()
        .session
        .clone();
    crowd.stop(a, Stop::Crash).await;
    // Read after the crash (no heartbeat of it follows) and timed before
    // the read, so the estimate is never later than the store's expiry.
    let read_at = Instant::now();
    let view = store_of(h).view(&spec.name).await.expect("view");
    let a_member = view
        .members
        .iter()
        .find(|m| m.session == a_session)
        .expect("the crashed member is live until its lease expires");
    let expiry = read_at + Duration::from_millis(a_member.expires_in_ms.max(0) as u64);
    let a_units: BTreeSet<u32> = view
        .unit_states
        .iter()
        .filter(|u| u.owner.as_deref() == Some(a_session.as_str()))
        .map(|u| u.unit)
        .collect();
    assert!(
        !a_units.is_empty(),
        "group: the crashing member held no unit: {view:?}"
    );
    let mut taken = BTreeSet::new();
    while taken != a_units {
        if let Seen::Assigned { member, unit, at } = crowd.next("the crashed member's units").await
        {
            if member == b && a_units.contains(&unit) {
                assert!(
                    at + Duration::from_millis(2) >= expiry,
                    "group: unit {unit} moved {:?} before the crashed member's lease expired",
                    expiry.duration_since(at)
                );
                taken.insert(unit);
            }
        }
    }
}

/// Members join, leave, are dropped and crash while events are published;
/// every event is handled at least once, and each unit's events arrive in
/// order within each holding.
pub async fn group_loses_no_event_under_member_churn<H: Harness + ?Sized>(h: &H) {
    let spec = spec("churn", 8);
    let run = spec.name.clone();
    let publisher = h.publisher();
    let mut crowd = Crowd::new(spec.clone(), suite_config());
    let first = crowd.join(h, true).await;
    let mut next = 0;
    let mut batch = |n: usize| {
        let d = group_drafts(&run, next, n);
        next += n;
        d
    };
    publish(publisher.as_ref(), batch(40)).await;
    let second = crowd.join(h, true).await;
    publish(publisher.as_ref(), batch(40)).await;
    let third = crowd.join(h, true).await;
    publish(publisher.as_ref(), batch(40)).await;
    crowd.stop(first, Stop::Leave).await;
    publish(publisher.as_ref(), batch(40)).await;
    crowd.stop(second, Stop::Crash).await;
    publish(publisher.as_ref(), batch(40)).await;
    crowd.join(h, true).await;
    publish(publisher.as_ref(), batch(40)).await;
    crowd.stop(third, Stop::Drop).await;
    publish(publisher.as_ref(), batch(40)).await;
    let seen = collect(&mut crowd, 0..280, "every published event").await;
    assert!(
        seen.len() == 280,
        "group: events were lost under churn: {:?}",
        missing(0..280, &seen.keys().copied().collect())
    );
}

/// Retention that trims past a unit's committed cursor is that unit's
/// `CursorExpired` (a `UnitFailed` item, the member's stream goes on),
/// as for any subscription — never a silent skip to the oldest event.
pub async fn group_reports_a_trimmed_units_cursor_as_expired<H: Harness + ?Sized>(h: &H) {
    let spec = spec("trimmed", 1);
    let run = spec.name.clone();
    let cursors = h
        .publisher()
        .publish_batch(group_drafts(&run, 0, 10))
        .await
        .expect("publish");
    let mut first = GroupMember::join_from(
        h.backend(),
        spec.clone(),
        "first",
        suite_config(),
        StreamCursor::beginning(),
    )
    .await
    .expect("join");
    loop {
        let item = tokio::time::timeout(
            super::group_crowd::GROUP_DEADLINE,
            futures::StreamExt::next(&mut first),
        )
        .await
        .expect("an event in time")
        .expect("the stream goes on");
        if let crate::group::GroupItem::Event { commit, .. } = item {
            commit.commit().await.expect("commit the first event");
            break;
        }
    }
    drop(first);
    h.expire_before(FAMILY, &cursors[5])
        .await
        .unwrap_or_else(|e| panic!("group suite: expire_before failed: {e}"));
    let mut crowd = Crowd::new(spec.clone(), suite_config());
    crowd.join(h, true).await;
    loop {
        match crowd.next("the unit's CursorExpired").await {
            Seen::Failed { error, .. } => {
                assert!(
                    matches!(error, EngineError::CursorExpired { .. }),
                    "group: a trimmed unit cursor must fail with CursorExpired, got {error:?}"
                );
                break;
            }
            Seen::Event { n, .. } => {
                panic!("group: event {n} was delivered although the unit's cursor was trimmed")
            }
            _ => {}
        }
    }
}
