//! An in-place major upgrade (`pg_upgrade`) keeps the history: rows and
//! transaction ids carry over, only the cluster's system identifier is new.
//! Cursors taken before it — publish cursors, `CaughtUp`, `bounds`,
//! `cursor_at` — resume exactly after it, and a live subscription goes on
//! across it, while a copy by rows (a dump restored into another cluster)
//! still expires them (see `postgres_history`). The upgrade runs from
//! PostgreSQL 15 to 15, the only major installed here; `pg_upgrade` runs an
//! upgrade to the same major exactly as it runs one to the next.

use std::sync::Arc;
use std::time::Duration;

use ff_backend_postgres::{PostgresBackend, PostgresConfig};
use ff_core::backend::{DeliveryItem, ReconnectPolicy, StreamBackend};
use ff_core::engine_error::EngineError;
use ff_core::filter::SubscriptionFilter;
use ff_core::stream_events::Family;
use ff_core::stream_subscribe::StreamCursor;
use ff_core::testkit::support::{next_item, Sub, ITEM_DEADLINE};
use ff_core::types::TimestampMs;
use ff_tests::harness::postgres::own_server;
use ff_tests::harness::tagged;

const FAMILY: Family = Family::Completion;

fn config() -> PostgresConfig {
    PostgresConfig::default()
        .with_schema("upgr")
        .with_application_name("ff-upgrade")
        .with_checkpoint_interval(Duration::from_millis(200))
        .with_connect_timeout(Duration::from_secs(2))
        .with_read_timeout(Duration::from_secs(2))
        .with_reconnect(
            ReconnectPolicy::new(Some(Duration::from_secs(300)), None)
                .with_backoff(Duration::from_millis(20), Duration::from_millis(500)),
        )
}

use ff_tests::support::blocking;

async fn publish(backend: &PostgresBackend, names: &[&str]) -> Vec<StreamCursor> {
    tagged::publish_named(backend, names).await
}

/// Subscribe from `from` and collect the event tags until `CaughtUp`.
async fn read_from(
    backend: &PostgresBackend,
    from: &StreamCursor,
) -> Result<Vec<String>, EngineError> {
    tagged::read_names_from(backend, FAMILY, from).await
}

/// The tags of the next `n` events a live subscription yields, and the
/// `CaughtUp` cursor if one came first.
async fn take(sub: &mut Sub, n: usize, caught_up: &mut Option<StreamCursor>) -> Vec<String> {
    let mut out = Vec::new();
    while out.len() < n {
        match next_item(sub, ITEM_DEADLINE, "live events").await {
            DeliveryItem::Event { meta, .. } => out.push(meta.tags["n"].clone()),
            DeliveryItem::CaughtUp { cursor } => *caught_up = Some(cursor),
            _ => {}
        }
    }
    out
}

fn strings(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[cfg_attr(
    ff_external_postgres,
    ignore = "needs a PostgreSQL server of its own; FF_TEST_POSTGRES_URL is set"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursors_taken_before_pg_upgrade_resume_exactly_after_it() {
    let Some(server) = own_server("cursors_taken_before_pg_upgrade_resume_exactly_after_it").await
    else {
        return;
    };
    let system = "SELECT system_identifier FROM pg_control_system()";
    let before_system = server.psql(system).expect("system identifier");
    let before = PostgresBackend::connect(&server.url(), config())
        .await
        .expect("connect");
    let early = publish(&before, &["e0", "e1"]).await;
    // `cursor_at(since)` starts before e2, the first event recorded at or
    // after `since`.
    let since: i64 = server
        .psql("SELECT max(at) + 1 FROM upgr.completion")
        .expect("the newest at")
        .parse()
        .expect("ms");
    let deadline = tokio::time::Instant::now() + ITEM_DEADLINE;
    while server
        .psql(&format!(
            "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint >= {since}"
        ))
        .expect("the server's clock")
        != "t"
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the server's clock stood still"
        );
        tokio::task::yield_now().await;
    }
    let rest = publish(&before, &["e2", "e3", "e4"]).await;
    let names = strings(&["e0", "e1", "e2", "e3", "e4"]);
    let since = TimestampMs(since);
    let at_time = before.cursor_at(FAMILY, since).await.expect("cursor_at");
    let head = before.bounds(FAMILY).await.expect("bounds").head;

    // A live subscription that has read everything, and a tail one whose
    // CaughtUp names the newest row.
    let mut live = Sub::new(
        before
            .subscribe_family(
                FAMILY,
                StreamCursor::beginning(),
                &SubscriptionFilter::default(),
            )
            .await
            .expect("subscribe"),
    );
    let mut ignored = None;
    assert_eq!(take(&mut live, names.len(), &mut ignored).await, names);
    let mut tail = Sub::new(
        before
            .subscribe_family(
                FAMILY,
                StreamCursor::empty(),
                &SubscriptionFilter::default(),
            )
            .await
            .expect("tail"),
    );
    let caught_up = match next_item(&mut tail, ITEM_DEADLINE, "CaughtUp").await {
        DeliveryItem::CaughtUp { cursor } => cursor,
        other => panic!("expected CaughtUp, got {other:?}"),
    };
    drop(tail);

    {
        let server = Arc::clone(&server);
        blocking(move || server.upgrade_in_place()).await;
    }
    let after_system = server.psql(system).expect("system identifier");
    assert_ne!(
        before_system, after_system,
        "pg_upgrade gives the cluster a new system identifier"
    );

    let after = PostgresBackend::connect(&server.url(), config())
        .await
        .expect("connect after the upgrade");
    publish(&after, &["f0", "f1"]).await;
    let new = strings(&["f0", "f1"]);
    let after_index = |i: usize| {
        names[i + 1..]
            .iter()
            .cloned()
            .chain(new.clone())
            .collect::<Vec<_>>()
    };

    assert_eq!(
        take(&mut live, 2, &mut ignored).await,
        new,
        "the live subscription goes on across the upgrade"
    );
    for (i, cursor) in early.iter().enumerate() {
        assert_eq!(
            read_from(&after, cursor).await.expect("a publish cursor"),
            after_index(i),
            "publish cursor {i}"
        );
    }
    for (i, cursor) in rest.iter().enumerate() {
        assert_eq!(
            read_from(&after, cursor).await.expect("a publish cursor"),
            after_index(i + 2),
            "publish cursor {}",
            i + 2
        );
    }
    for (what, cursor) in [("CaughtUp", &caught_up), ("bounds().head", &head)] {
        assert_eq!(
            read_from(&after, cursor).await.expect(what),
            new,
            "{what} resumes exactly after it"
        );
    }
    assert_eq!(
        read_from(&after, &at_time).await.expect("cursor_at"),
        after_index(1),
        "cursor_at resumes before e2"
    );
}
