//! The consumer-group suite against a real Valkey server and a real
//! Valkey Cluster (each family one partition): a group's keys share one
//! hash slot, and its wake-ups come from a stream on the node serving it.
//! On a family split into partitions a unit is a partition: the whole
//! suite runs there too, with one unit per partition.

use ff_tests::harness::valkey::ValkeyHarness;
use ff_tests::harness::valkey_cluster::ValkeyClusterHarness;

async fn harness() -> ValkeyHarness {
    ValkeyHarness::new().await
}

ff_core::group_suite!(harness);

mod cluster {
    use super::*;

    async fn harness() -> ValkeyClusterHarness {
        ValkeyClusterHarness::new(1).await
    }

    ff_core::group_suite!(harness);
}

mod partitioned {
    use super::*;

    async fn harness() -> ValkeyClusterHarness {
        ValkeyClusterHarness::new(6).await
    }

    ff_core::group_suite!(harness);

    /// On a family split into 6 partitions a unit is a partition: a member
    /// asking for 4 units is refused with an error naming both counts.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_unit_count_other_than_the_partition_count_is_refused() {
        use ff_core::engine_error::EngineError;
        use ff_core::group::{GroupMember, GroupSpec};
        use ff_core::stream_events::Family;
        use ff_core::testkit::group_crowd::suite_config;
        use ff_core::testkit::Harness;

        let h = harness().await;
        let spec = GroupSpec::new("four", Family::Completion, 4).unwrap();
        let err = GroupMember::join(h.backend(), spec, "m", suite_config())
            .await
            .expect_err("4 units on 6 partitions must be refused");
        let text = err.to_string();
        assert!(
            matches!(err, EngineError::Validation { .. })
                && text.contains("4 units")
                && text.contains("6 partitions"),
            "the refusal must be Validation naming 4 units and 6 partitions, got {err:?}"
        );
    }
}

/// A failover that loses committed cursor writes moves a unit's cursor
/// back: the owner's next commit is fenced (its previous cursor is not the
/// stored one), the unit is reported lost, taken again and read from the
/// stored cursor — events are delivered twice, never skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_cursor_write_gives_duplicates_never_a_skip() {
    use ff_core::engine_error::EngineError;
    use ff_core::group::{rendezvous_score, GroupItem, GroupMember, GroupSpec};
    use ff_core::stream_events::Family;
    use ff_core::stream_subscribe::StreamCursor;
    use ff_core::testkit::group_crowd::{group_drafts, publish, suite_config, GROUP_DEADLINE};
    use ff_core::testkit::Harness;
    use futures::StreamExt;

    let h = harness().await;
    publish(h.publisher().as_ref(), group_drafts("regress", 0, 6)).await;
    let spec = GroupSpec::new("regress", Family::Completion, 1).unwrap();
    let mut member = GroupMember::join_from(
        h.backend(),
        spec,
        "m",
        suite_config(),
        StreamCursor::beginning(),
    )
    .await
    .expect("join");
    async fn next_item(member: &mut GroupMember) -> GroupItem {
        tokio::time::timeout(GROUP_DEADLINE, member.next())
            .await
            .expect("an item within the deadline")
            .expect("the stream goes on")
    }
    let mut kept = None;
    let n_of =
        |meta: &ff_core::stream_events::EventMeta| -> usize { meta.tags["n"].parse().unwrap() };
    loop {
        if let GroupItem::Event { meta, commit, .. } = next_item(&mut member).await {
            let n = n_of(&meta);
            commit.commit().await.expect("commit");
            if n == 1 {
                kept = Some(commit.cursor().clone());
            }
            if n == 2 {
                break;
            }
        }
    }
    let units = format!(
        "{}{{g:{:016x}}}:units",
        h.backend.config().key_prefix,
        rendezvous_score("regress", 0)
    );
    let url = ff_tests::harness::valkey::server_url().await;
    let mut admin = ff_backend_valkey::redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = ff_backend_valkey::redis::cmd("HSET")
        .arg(&units)
        .arg("c:0")
        .arg(kept.unwrap().to_string())
        .query_async(&mut admin)
        .await
        .expect("move the stored cursor back");
    loop {
        if let GroupItem::Event { meta, commit, .. } = next_item(&mut member).await {
            assert_eq!(n_of(&meta), 3);
            let refused = commit.commit().await;
            assert!(
                matches!(refused, Err(EngineError::Fenced { .. })),
                "a commit over a regressed cursor must be fenced, got {refused:?}"
            );
            break;
        }
    }
    let mut after = Vec::new();
    let mut lost = false;
    while after.len() < 4 {
        match next_item(&mut member).await {
            GroupItem::Lost { .. } => lost = true,
            GroupItem::Event { meta, commit, .. } if lost => {
                after.push(n_of(&meta));
                commit.commit().await.expect("commit after the regression");
            }
            _ => {}
        }
    }
    assert_eq!(
        after,
        vec![2, 3, 4, 5],
        "duplicates from the stored cursor, nothing skipped"
    );
}

/// A member reads the family once for every unit it holds: holding 8
/// units costs one subscription connection (and one for the group's
/// wake-ups), not one per unit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_reads_the_family_once_for_all_its_units() {
    use ff_core::group::{GroupItem, GroupMember, GroupSpec};
    use ff_core::stream_events::Family;
    use ff_core::stream_subscribe::StreamCursor;
    use ff_core::testkit::group_crowd::{group_drafts, publish, suite_config, GROUP_DEADLINE};
    use ff_core::testkit::Harness;
    use futures::StreamExt;
    use std::collections::BTreeSet;

    let h = harness().await;
    let url = ff_tests::harness::valkey::server_url().await;
    let mut admin = ff_backend_valkey::redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let name = format!("{}:sub", h.backend.client_name());
    let mut subscriptions = async || -> usize {
        let list: String = ff_backend_valkey::redis::cmd("CLIENT")
            .arg("LIST")
            .query_async(&mut admin)
            .await
            .expect("CLIENT LIST");
        list.lines()
            .filter(|line| line.split(' ').any(|kv| kv == format!("name={name}")))
            .count()
    };
    let before = subscriptions().await;
    publish(h.publisher().as_ref(), group_drafts("once", 0, 26)).await;
    let spec = GroupSpec::new("once", Family::Completion, 8).unwrap();
    let mut member = GroupMember::join_from(
        h.backend(),
        spec,
        "m",
        suite_config(),
        StreamCursor::beginning(),
    )
    .await
    .expect("join");
    let mut units = BTreeSet::new();
    while units.len() < 8 {
        let item = tokio::time::timeout(GROUP_DEADLINE, member.next())
            .await
            .expect("an item within the deadline")
            .expect("the stream goes on");
        if let GroupItem::Event { unit, .. } = item {
            units.insert(unit);
        }
    }
    let during = subscriptions().await;
    assert_eq!(
        during - before,
        2,
        "a member holding 8 units must read through one subscription (plus its wake-ups)"
    );
}
