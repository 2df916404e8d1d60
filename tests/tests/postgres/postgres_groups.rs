//! The consumer-group suite against a real PostgreSQL server, plus what
//! only Postgres offers: the fenced commit inside the consumer's own
//! transaction (`commit_in`), whose refusal rolls the transaction's effects
//! back, and heartbeats that never conflict with a consumer's REPEATABLE
//! READ transaction.

use std::time::Duration;

use ff_backend_postgres::sqlx::{self, Connection};
use ff_core::engine_error::EngineError;
use ff_core::group::{Commit, GroupItem, GroupMember, GroupSpec};
use ff_core::stream_events::Family;
use ff_core::stream_subscribe::StreamCursor;
use ff_core::testkit::group_crowd::{group_drafts, publish, suite_config, GROUP_DEADLINE};
use ff_core::testkit::Harness;
use ff_tests::harness::postgres::{server_url, PostgresHarness};
use futures::StreamExt;

async fn harness() -> PostgresHarness {
    PostgresHarness::new().await
}

ff_core::group_suite!(harness);

/// The next event's commit handle from `member`, within the deadline.
async fn next_event(member: &mut GroupMember) -> Commit {
    loop {
        let item = tokio::time::timeout(GROUP_DEADLINE, member.next())
            .await
            .expect("an event within the deadline")
            .expect("the member's stream goes on");
        if let GroupItem::Event { commit, .. } = item {
            return commit;
        }
    }
}

/// Wait until `member` reports holding a unit.
async fn assigned(member: &mut GroupMember) {
    loop {
        let item = tokio::time::timeout(GROUP_DEADLINE, member.next())
            .await
            .expect("an assignment within the deadline")
            .expect("the member's stream goes on");
        if let GroupItem::Assigned { .. } = item {
            return;
        }
    }
}

async fn effects_table(h: &PostgresHarness) -> String {
    let table = format!("{}.effects", h.backend.config().schema);
    sqlx::raw_sql(&format!("CREATE TABLE {table} (n integer)"))
        .execute(&h.admin)
        .await
        .expect("create the effects table");
    table
}

async fn count(h: &PostgresHarness, table: &str) -> i64 {
    sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
        .fetch_one(&h.admin)
        .await
        .expect("count effects")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zombies_commit_in_is_fenced_and_its_effects_roll_back() {
    let h = harness().await;
    let table = effects_table(&h).await;
    let spec = GroupSpec::new("effects", Family::Completion, 1).unwrap();
    publish(h.publisher().as_ref(), group_drafts("effects", 0, 2)).await;
    let mut zombie = GroupMember::join_from(
        h.backend(),
        spec.clone(),
        "zombie",
        suite_config(),
        StreamCursor::beginning(),
    )
    .await
    .expect("join");
    let stale = next_event(&mut zombie).await;
    zombie.abort();
    let mut owner = GroupMember::join(h.backend(), spec, "owner", suite_config())
        .await
        .expect("join");
    assigned(&mut owner).await;

    let url = server_url().await;
    let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect");
    let mut tx = conn.begin().await.expect("begin");
    sqlx::query(&format!("INSERT INTO {table} (n) VALUES (0)"))
        .execute(&mut *tx)
        .await
        .expect("the zombie's effect");
    let refused = h.backend.commit_in(&mut tx, &stale).await;
    assert!(
        matches!(refused, Err(EngineError::Fenced { .. })),
        "a zombie's commit_in must be Fenced, got {refused:?}"
    );
    // Even a caller that ignores the refusal cannot commit the effect.
    let _ = tx.commit().await;
    assert_eq!(count(&h, &table).await, 0, "the zombie's effect committed");

    // The owner gets the same event and commits effect and position together.
    let fresh = next_event(&mut owner).await;
    assert_eq!(
        fresh.cursor(),
        stale.cursor(),
        "the owner starts with the uncommitted event"
    );
    let mut tx = conn.begin().await.expect("begin");
    sqlx::query(&format!("INSERT INTO {table} (n) VALUES (0)"))
        .execute(&mut *tx)
        .await
        .expect("the owner's effect");
    h.backend
        .commit_in(&mut tx, &fresh)
        .await
        .expect("the owner's commit_in");
    tx.commit().await.expect("commit");
    assert_eq!(count(&h, &table).await, 1);
    let view = h.backend.groups();
    let view = ff_core::group::GroupStore::view(&view, "effects")
        .await
        .expect("view");
    assert_eq!(&view.unit_states[0].cursor, fresh.cursor());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_do_not_fail_a_repeatable_read_commit_in() {
    let h = harness().await;
    let table = effects_table(&h).await;
    let spec = GroupSpec::new("rr", Family::Completion, 1).unwrap();
    publish(h.publisher().as_ref(), group_drafts("rr", 0, 1)).await;
    let mut member = GroupMember::join_from(
        h.backend(),
        spec,
        "m",
        suite_config(),
        StreamCursor::beginning(),
    )
    .await
    .expect("join");
    let commit = next_event(&mut member).await;
    let url = server_url().await;
    let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect");
    let mut tx = conn.begin().await.expect("begin");
    sqlx::raw_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .execute(&mut *tx)
        .await
        .expect("repeatable read");
    // Take the snapshot, then wait for a heartbeat to commit after it.
    let expiry = format!(
        "SELECT (extract(epoch FROM max(expires_at)) * 1000)::bigint FROM {}.group_members",
        h.backend.config().schema
    );
    sqlx::query(&format!("INSERT INTO {table} (n) VALUES (1)"))
        .execute(&mut *tx)
        .await
        .expect("effect");
    let seen: i64 = sqlx::query_scalar(&expiry)
        .fetch_one(&mut *tx)
        .await
        .expect("the heartbeat the snapshot sees");
    let deadline = tokio::time::Instant::now() + GROUP_DEADLINE;
    loop {
        let now: i64 = sqlx::query_scalar(&expiry)
            .fetch_one(&h.admin)
            .await
            .expect("the latest heartbeat");
        if now > seen {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no heartbeat within the deadline"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    h.backend
        .commit_in(&mut tx, &commit)
        .await
        .expect("heartbeats must not make a REPEATABLE READ commit_in fail");
    tx.commit().await.expect("commit");
    assert_eq!(count(&h, &table).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_with_only_the_consumer_grants_runs_a_group_member() {
    let h = harness().await;
    let role = ff_tests::support::unique_name("grp");
    sqlx::raw_sql(&format!(
        "CREATE ROLE {role} LOGIN PASSWORD 'ff-test-password'"
    ))
    .execute(&h.admin)
    .await
    .expect("create role");
    h.backend
        .grant_consumer(&role)
        .await
        .expect("grant consumer");
    let url = server_url().await;
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let consumer = ff_backend_postgres::PostgresBackend::connect(
        &format!("{scheme}://{role}:ff-test-password@{host}"),
        h.backend.config().clone(),
    )
    .await
    .expect("the consumer role connects");
    publish(h.publisher().as_ref(), group_drafts("granted", 0, 1)).await;
    let spec = GroupSpec::new("granted", Family::Completion, 2).unwrap();
    let mut member = GroupMember::join_from(
        std::sync::Arc::new(consumer),
        spec,
        "m",
        suite_config(),
        StreamCursor::beginning(),
    )
    .await
    .expect("the consumer role joins a group");
    let commit = next_event(&mut member).await;
    commit.commit().await.expect("the consumer role commits");
    member.leave().await.expect("the consumer role leaves");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_holding_a_unit_row_does_not_stall_the_next_owners_heartbeats() {
    let h = harness().await;
    let spec = GroupSpec::new("held", Family::Completion, 1).unwrap();
    publish(h.publisher().as_ref(), group_drafts("held", 0, 2)).await;
    let mut zombie = GroupMember::join_from(
        h.backend(),
        spec.clone(),
        "zombie",
        suite_config(),
        StreamCursor::beginning(),
    )
    .await
    .expect("join");
    let handle = next_event(&mut zombie).await;
    let url = server_url().await;
    let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect");
    let mut tx = conn.begin().await.expect("begin");
    h.backend
        .commit_in(&mut tx, &handle)
        .await
        .expect("commit_in locks the unit row");
    zombie.abort();
    let mut next = GroupMember::join(h.backend(), spec, "next", suite_config())
        .await
        .expect("join");
    let session = next.session().to_owned();
    let expiry = |s: String| {
        let sql = format!(
            "SELECT (extract(epoch FROM expires_at) * 1000)::bigint FROM {}.group_members \
             WHERE session = $1",
            h.backend.config().schema
        );
        let admin = h.admin.clone();
        async move {
            sqlx::query_scalar::<_, i64>(&sql)
                .bind(s)
                .fetch_optional(&admin)
                .await
                .expect("read the heartbeat")
        }
    };
    // Wait until the zombie's lease expired (the unit is takeable but
    // locked), then until the next member heartbeated a full lease later.
    let groups = h.backend.groups();
    let deadline = tokio::time::Instant::now() + GROUP_DEADLINE;
    loop {
        let view = ff_core::group::GroupStore::view(&groups, "held")
            .await
            .expect("view");
        if !view.unit_states[0].owner_live {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the zombie's lease never expired"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first = loop {
        if let Some(e) = expiry(session.clone()).await {
            break e;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the next member never heartbeated"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let lease = suite_config().lease.as_millis() as i64;
    loop {
        let now = expiry(session.clone()).await.unwrap_or(first);
        if now > first + lease {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the next member stopped heartbeating while a transaction held the unit row"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Once the transaction ends the unit moves.
    tx.rollback().await.expect("rollback");
    assigned(&mut next).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_heartbeats_hang_stops_delivering_on_its_own_clock() {
    let h = harness().await;
    let spec = GroupSpec::new("hang", Family::Completion, 1).unwrap();
    let mut member = GroupMember::join(h.backend(), spec, "m", suite_config())
        .await
        .expect("join");
    assigned(&mut member).await;
    // Hold every heartbeat (and view) back.
    let mut admin = h.admin.begin().await.expect("begin");
    sqlx::raw_sql(&format!(
        "LOCK TABLE {}.group_members IN ACCESS EXCLUSIVE MODE",
        h.backend.config().schema
    ))
    .execute(&mut *admin)
    .await
    .expect("lock the members table");
    publish(h.publisher().as_ref(), group_drafts("hang", 0, 3)).await;
    loop {
        let item = tokio::time::timeout(GROUP_DEADLINE, member.next())
            .await
            .expect("the member reports the unit lost in time")
            .expect("the stream goes on");
        if let GroupItem::Lost { .. } = item {
            break;
        }
    }
    admin.rollback().await.expect("unlock");
    // Heartbeats succeed again: the unit comes back, its events with it —
    // none before it is held again.
    let mut held = false;
    let mut seen = 0;
    while seen < 3 {
        let item = tokio::time::timeout(GROUP_DEADLINE, member.next())
            .await
            .expect("events after the unit came back")
            .expect("the stream goes on");
        match item {
            GroupItem::Assigned { .. } => held = true,
            GroupItem::Event { commit, .. } => {
                assert!(
                    held,
                    "an event of a lost unit was delivered before it was held again"
                );
                commit.commit().await.expect("commit");
                seen += 1;
            }
            _ => {}
        }
    }
}
