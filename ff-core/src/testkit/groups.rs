//! The consumer-group suite (`docs/groups.md`): exclusive ownership, order
//! per unit, exact resume after a hand-over, fencing, the fixed unit
//! count, hand-over on a clean leave and after a crash, and no lost event
//! under member churn. Every test runs over a backend's
//! [`group_store`](crate::backend::StreamBackend::group_store) and its own
//! subscriptions, so a backend proves its leases by running it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tokio::time::Instant;

use crate::cursor::StreamCursor;
use crate::error::EngineError;
use crate::group::{GroupConfig, GroupMember, GroupSpec};
use crate::testkit::group_crowd::{
    converged, group_drafts, missing, publish, store_of, suite_config, Crowd, Seen, Stop, FAMILY,
};
use crate::testkit::support::run_label;
use crate::testkit::Harness;

/// A group of `units` units — or, where the backend splits the family
/// into partitions (a unit is then a partition), of one unit per partition.
fn spec<H: Harness + ?Sized>(h: &H, test: &str, units: u32) -> GroupSpec {
    let units = store_of(h).unit_partitions(FAMILY).map_or(units, u32::from);
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
    let spec = spec(h, "exclusive", 6);
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
    let spec = spec(h, "resume", 4);
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
    let deadline = Instant::now() + super::group_crowd::GROUP_DEADLINE;
    while total < want {
        assert!(
            Instant::now() < deadline,
            "group: after the hand-over only {total} of the {want} uncommitted events were \
             handled and committed within {:?}: {got:?}",
            super::group_crowd::GROUP_DEADLINE
        );
        if let Seen::Event { unit, n, .. } = crowd.next("the rest of every unit").await {
            got.entry(unit).or_default().push(n);
            total += 1;
        }
    }
    for unit in 0..spec.units {
        let expected: Vec<usize> = (0..80)
            .filter(|n| (n % 13) as u32 % spec.units == unit && !committed.contains(n))
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
    let spec = spec(h, "zombie", 1);
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
    let (handle, zombie_n) = loop {
        let item = tokio::time::timeout(
            super::group_crowd::GROUP_DEADLINE,
            futures::StreamExt::next(&mut zombie),
        )
        .await
        .expect("an event in time")
        .expect("the stream goes on");
        if let crate::group::GroupItem::Event { commit, meta, .. } = item {
            break (commit, meta.tags["n"].parse::<usize>().unwrap());
        }
    };
    let zombie_unit = handle.lease().unit;
    zombie.abort();
    let mut crowd = Crowd::new(spec.clone(), suite_config());
    crowd.join(h, false).await;
    loop {
        if let Seen::Assigned { unit, .. } = crowd.next("the unit's takeover").await {
            if unit == zombie_unit {
                break;
            }
        }
    }
    let refused = handle.commit().await;
    assert!(
        matches!(refused, Err(EngineError::Fenced { .. })),
        "group: a zombie's commit after the unit changed hands must be Fenced, got {refused:?}"
    );
    let store = store_of(h);
    let view = store.view(&spec.name).await.expect("view");
    let unit = &view.unit_states[zombie_unit as usize];
    assert_ne!(
        &unit.cursor,
        handle.cursor(),
        "group: the refused commit moved the unit's cursor"
    );
    let lease = crate::group::UnitLease::new(
        spec.name.clone(),
        zombie_unit,
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
        if let Seen::Event { n, unit, .. } = crowd.next("the redelivered event").await {
            if unit != zombie_unit {
                continue;
            }
            assert_eq!(
                n, zombie_n,
                "group: the new owner must start with the uncommitted event"
            );
            break;
        }
    }
}

/// A member asking for another unit count than the group was created
/// with is refused with an error naming both.
pub async fn group_refuses_another_unit_count<H: Harness + ?Sized>(h: &H) {
    let spec = spec(h, "units", 4);
    let member = GroupMember::join(h.backend(), spec.clone(), "a", suite_config())
        .await
        .expect("join");
    let (mine, others) = (spec.units, spec.units * 2);
    let other = GroupSpec::new(spec.name.clone(), FAMILY, others).unwrap();
    let err = GroupMember::join(h.backend(), other, "b", suite_config())
        .await
        .expect_err("another unit count must be refused");
    let text = err.to_string();
    assert!(
        matches!(err, EngineError::Validation { .. })
            && text.contains(&mine.to_string())
            && text.contains(&others.to_string()),
        "group: the refusal must be Validation naming {mine} and {others}, got {err:?}"
    );
    drop(member);
}

/// With a lease far longer than the deadline, a member that leaves
/// cleanly (and one dropped) hands its units to the other at once.
pub async fn group_hands_over_at_once_on_a_clean_leave<H: Harness + ?Sized>(h: &H) {
    let config = GroupConfig::with_lease(Duration::from_secs(600))
        .checkpoint_interval(Duration::from_millis(100));
    for how in [Stop::Leave, Stop::Drop] {
        let spec = spec(h, "clean-leave", 4);
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
    let spec = spec(h, "crash", 4);
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
    // Assignments seen before the crash may still be queued (a unit can
    // pass through `b` while the two settle): only later ones count.
    let crashed_at = Instant::now();
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
            if member == b && a_units.contains(&unit) && at >= crashed_at {
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
    let spec = spec(h, "churn", 8);
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

/// The cursor a plain subscription from the beginning yields with event
/// `n` of `run` (on a partitioned family: a position in every partition).
async fn stream_cursor_of<H: Harness + ?Sized>(h: &H, run: &str, n: usize) -> StreamCursor {
    use futures::StreamExt;
    let mut sub = h
        .backend()
        .subscribe_family(
            FAMILY,
            StreamCursor::beginning(),
            &crate::filter::SubscriptionFilter::default(),
        )
        .await
        .expect("subscribe from the beginning");
    let deadline = Instant::now() + super::group_crowd::GROUP_DEADLINE;
    loop {
        let item = tokio::time::timeout_at(deadline, sub.next())
            .await
            .expect("the event within the deadline")
            .expect("the subscription goes on")
            .expect("no subscription error");
        if let crate::backend::DeliveryItem::Event { event, meta } = item {
            if meta.tags.get("run").map(String::as_str) == Some(run)
                && meta.tags.get("n").map(String::as_str) == Some(n.to_string().as_str())
            {
                return event.cursor().clone();
            }
        }
    }
}

/// Retention that trims past a unit's committed cursor is that unit's
/// `CursorExpired` (a `UnitFailed` item, the member's stream goes on),
/// as for any subscription — never a silent skip to the oldest event.
pub async fn group_reports_a_trimmed_units_cursor_as_expired<H: Harness + ?Sized>(h: &H) {
    let spec = spec(h, "trimmed", 1);
    let run = spec.name.clone();
    publish(h.publisher().as_ref(), group_drafts(&run, 0, 40)).await;
    let mut first = GroupMember::join_from(
        h.backend(),
        spec.clone(),
        "first",
        suite_config(),
        StreamCursor::beginning(),
    )
    .await
    .expect("join");
    let (trimmed, k) = loop {
        let item = tokio::time::timeout(
            super::group_crowd::GROUP_DEADLINE,
            futures::StreamExt::next(&mut first),
        )
        .await
        .expect("an event in time")
        .expect("the stream goes on");
        if let crate::group::GroupItem::Event {
            unit, commit, meta, ..
        } = item
        {
            commit.commit().await.expect("commit the first event");
            break (unit, meta.tags["n"].parse::<usize>().unwrap());
        }
    };
    drop(first);
    // Trim up to the unit's second event after the committed one, so at
    // least one of its events after the cursor is gone.
    let cut = (k + 1..40)
        .filter(|n| (n % 13) as u32 % spec.units == trimmed)
        .nth(1)
        .expect("two more events of the unit");
    h.expire_before(FAMILY, &stream_cursor_of(h, &run, cut).await)
        .await
        .unwrap_or_else(|e| panic!("group suite: expire_before failed: {e}"));
    let mut crowd = Crowd::new(spec.clone(), suite_config());
    crowd.join(h, true).await;
    loop {
        match crowd.next("the unit's CursorExpired").await {
            Seen::Failed { error, unit, .. } if unit == trimmed => {
                assert!(
                    matches!(error, EngineError::CursorExpired { .. }),
                    "group: a trimmed unit cursor must fail with CursorExpired, got {error:?}"
                );
                break;
            }
            Seen::Event { n, unit, .. } if unit == trimmed => {
                panic!("group: event {n} was delivered although the unit's cursor was trimmed")
            }
            _ => {}
        }
    }
}

/// A heartbeat keeps its member live for the whole ttl it asked for (as
/// the store judges it), and a unit's epoch stays put across its holder's
/// heartbeats: only a change of hands moves it, so a healthy member's
/// commits are never fenced.
pub async fn group_keeps_a_members_lease_and_epochs_across_heartbeats<H: Harness + ?Sized>(h: &H) {
    let store = store_of(h);
    // Only the store's granularity (milliseconds) is allowed for.
    let slack = Duration::from_millis(2);
    let probe = spec(h, "lease-length", 1);
    store
        .create_or_check(&probe, &StreamCursor::beginning())
        .await
        .expect("create the probe's group");
    let ttl = suite_config().lease;
    let sent = Instant::now();
    store
        .heartbeat(&probe.name, "probe#1", ttl)
        .await
        .expect("heartbeat");
    loop {
        let view = store.view(&probe.name).await.expect("view");
        let read = Instant::now();
        if read + slack >= sent + ttl {
            break;
        }
        assert!(
            view.members.iter().any(|m| m.session == "probe#1"),
            "group: a member whose heartbeat asked for {ttl:?} is gone after {:?}",
            read.duration_since(sent)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let spec = spec(h, "renew", 2);
    let mut crowd = Crowd::new(spec.clone(), suite_config());
    crowd.join(h, true).await;
    let before = converged(h, &spec.name, 1).await;
    let session = before.members[0].session.clone();
    let mut renewals = 0;
    let mut last = before.members[0].expires_in_ms;
    let deadline = Instant::now() + super::group_crowd::GROUP_DEADLINE;
    while renewals < 2 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let view = store.view(&spec.name).await.expect("view");
        let Some(me) = view.members.iter().find(|m| m.session == session) else {
            panic!("group: the only member is no longer live: {view:?}");
        };
        if me.expires_in_ms > last {
            renewals += 1;
        }
        last = me.expires_in_ms;
        assert!(
            Instant::now() < deadline,
            "group: the member's heartbeat was not renewed twice within {:?}",
            super::group_crowd::GROUP_DEADLINE
        );
    }
    let after = store.view(&spec.name).await.expect("view");
    for (was, is) in before.unit_states.iter().zip(&after.unit_states) {
        assert_eq!(
            (was.owner.as_deref(), was.epoch),
            (is.owner.as_deref(), is.epoch),
            "group: unit {}'s owner or epoch moved across its holder's heartbeats",
            was.unit
        );
    }
}

/// A member takes over a unit whose committed cursor is far behind what
/// it has already read for its other units (the unit's previous owner
/// never committed): it still delivers every event of that unit after the
/// committed cursor, none skipped because its reader was further on.
pub async fn group_reads_a_unit_taken_behind_the_reader_from_its_cursor<H: Harness + ?Sized>(
    h: &H,
) {
    let spec = spec(h, "behind", 4);
    let run = spec.name.clone();
    let total = 13 * 4;
    let mut crowd = Crowd::new(spec.clone(), suite_config());
    let a = crowd.join(h, true).await;
    let b = crowd.join(h, false).await;
    let view = converged(h, &spec.name, 2).await;
    publish(h.publisher().as_ref(), group_drafts(&run, 0, total)).await;
    let a_session = view
        .members
        .iter()
        .find(|m| m.id() == format!("m{a}"))
        .map(|m| m.session.clone());
    let a_units: BTreeSet<u32> = view
        .unit_states
        .iter()
        .filter(|u| u.owner == a_session)
        .map(|u| u.unit)
        .collect();
    let unit_of = |n: usize| (n % 13) as u32 % spec.units;
    let mut by_a: BTreeSet<usize> = BTreeSet::new();
    let mut a_wants: BTreeSet<usize> = (0..total)
        .filter(|n| a_units.contains(&unit_of(*n)))
        .collect();
    while !a_wants.is_subset(&by_a) {
        if let Seen::Event { member, n, .. } = crowd.next("member a's own units").await {
            if member == a {
                by_a.insert(n);
            }
        }
    }
    // `b` committed nothing: its units go back to `a` at the cursors `a`
    // committed before the hand-over, behind `a`'s reader.
    crowd.stop(b, Stop::Drop).await;
    a_wants = (0..total).collect();
    while !a_wants.is_subset(&by_a) {
        if let Seen::Event { member, n, .. } = crowd
            .next("every event of the units taken back behind the reader")
            .await
        {
            if member == a {
                by_a.insert(n);
            }
        }
    }
}
