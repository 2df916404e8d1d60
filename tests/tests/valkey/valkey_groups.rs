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

/// A member reads the family once for every unit it holds: reading a
/// backlog for 8 units sends about as many commands as one plain
/// subscription reading it, not one read of the whole family per unit.
/// Counted on the backend's shared read connection (`tot-cmds` in
/// `CLIENT LIST`), which only this test's subscriptions use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_reads_the_family_once_for_all_its_units() {
    use ff_core::group::{GroupItem, GroupMember, GroupSpec};
    use ff_core::stream_events::Family;
    use ff_core::stream_subscribe::StreamCursor;
    use ff_core::testkit::group_crowd::{group_drafts, publish, suite_config, GROUP_DEADLINE};
    use ff_core::testkit::support::{subscribe, until_caught_up};
    use ff_core::testkit::Harness;
    use futures::StreamExt;
    use std::collections::BTreeSet;
    use tokio::time::Instant;

    let h = harness().await;
    let url = ff_tests::harness::valkey::server_url().await;
    let mut admin = ff_backend_valkey::redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let name = format!("name={}:read", h.backend.client_name());
    // (read connections, commands they were sent)
    let mut reads = async || -> (usize, u64) {
        let list: String = ff_backend_valkey::redis::cmd("CLIENT")
            .arg("LIST")
            .query_async(&mut admin)
            .await
            .expect("CLIENT LIST");
        let mine: Vec<&str> = list
            .lines()
            .filter(|line| line.split(' ').any(|kv| kv == name))
            .collect();
        let commands = mine
            .iter()
            .flat_map(|line| line.split(' '))
            .filter_map(|kv| kv.strip_prefix("tot-cmds="))
            .map(|n| n.parse::<u64>().expect("a command count"))
            .sum();
        (mine.len(), commands)
    };
    const EVENTS: usize = 2_000;
    publish(h.publisher().as_ref(), group_drafts("once", 0, EVENTS)).await;

    let mut plain = subscribe(
        &h,
        Family::Completion,
        StreamCursor::beginning(),
        &Default::default(),
    )
    .await;
    let (events, _) = until_caught_up(&mut plain, "the plain subscription's backlog").await;
    assert_eq!(events.len(), EVENTS);
    let (_, by_plain) = reads().await;
    drop(plain);
    let deadline = Instant::now() + GROUP_DEADLINE;
    while reads().await.0 > 0 {
        assert!(
            Instant::now() < deadline,
            "the read connection outlived its last subscription"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

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
    let (mut units, mut handled) = (BTreeSet::new(), 0);
    while handled < EVENTS {
        let item = tokio::time::timeout(GROUP_DEADLINE, member.next())
            .await
            .expect("an item within the deadline")
            .expect("the stream goes on");
        if let GroupItem::Event { unit, .. } = item {
            units.insert(unit);
            handled += 1;
        }
    }
    let (_, by_member) = reads().await;
    assert_eq!(units.len(), 8, "the member holds every unit");
    assert!(
        by_member < 3 * by_plain,
        "a member holding 8 units sent {by_member} commands to read a backlog one subscription \
         read with {by_plain}: it must read the family once, not once per unit"
    );
}
