//! The consumer-group suite against the embedded memory backend: leases,
//! members and unit cursors live in the backend instance.

use ff_tests::harness::memory::harness;

ff_core::group_suite!(harness);

/// A unit the store shows as a member's while that member does not read it
/// (lost on its own clock, a drain cut short) and the assignment gives to
/// another member is released by the member, never pinned.
#[test]
fn a_member_releases_a_unit_it_owns_in_the_store_but_does_not_read() {
    use std::time::Duration;

    use ff_core::group::{assign, GroupMember, GroupSpec};
    use ff_core::stream_events::Family;
    use ff_core::testkit::group_crowd::suite_config;
    use ff_core::testkit::Harness;

    ff_core::testkit::block_on(async {
        let h = harness().await;
        let store = h.backend().group_store().unwrap();
        let spec = GroupSpec::new("orphan", Family::Completion, 4).unwrap();
        let member = GroupMember::join(h.backend(), spec, "a", suite_config())
            .await
            .expect("join");
        let me = member.session().to_owned();
        // A member that never takes its units: the ones assigned to it are
        // released by `a` and stay free.
        let ghost = "ghost#1";
        store
            .heartbeat("orphan", ghost, Duration::from_secs(600))
            .await
            .unwrap();
        let target = assign(4, &[me.as_str(), ghost]);
        let ghosts: Vec<u32> = (0..4u32)
            .filter(|u| target[*u as usize] == Some(1))
            .collect();
        assert!(!ghosts.is_empty(), "the ghost is assigned no unit");
        let unit = ghosts[0];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let view = store.view("orphan").await.unwrap();
            if view.unit_states[unit as usize].owner.is_none() {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "a never released the ghost's unit"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The store now says `a` owns the ghost's unit, which `a` does not read.
        store
            .acquire("orphan", unit, &me)
            .await
            .unwrap()
            .expect("a free unit");
        loop {
            let view = store.view("orphan").await.unwrap();
            if view.unit_states[unit as usize].owner.is_none() {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "unit {unit} stays pinned to a member that does not read it"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(member);
    });
}
