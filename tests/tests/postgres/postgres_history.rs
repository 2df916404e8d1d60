//! Cursors and the history they belong to: a copy promoted after the
//! original advanced, a lossless failover, and a dump restored into a
//! fresh cluster. A cursor the server cannot prove belongs to its history
//! is `CursorExpired` with an `oldest` the server vouches for — never a
//! partial set — and a failover that lost nothing expires nothing. Every
//! test runs servers of its own.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ff_backend_postgres::{PostgresBackend, PostgresConfig};
use ff_core::backend::{DeliveryItem, ReconnectPolicy, StreamBackend};
use ff_core::engine_error::EngineError;
use ff_core::filter::SubscriptionFilter;
use ff_core::stream_events::Family;
use ff_core::stream_subscribe::StreamCursor;
use ff_core::testkit::support::{next_item, Sub, ITEM_DEADLINE};
use ff_tests::harness::postgres::own_server;
use ff_tests::harness::tagged;
use ff_tests::support::{PostgresServer, TcpProxy};
use tokio::time::Instant;

const FAMILY: Family = Family::Completion;

fn config() -> PostgresConfig {
    PostgresConfig::default()
        .with_schema("hist")
        .with_application_name("ff-hist")
        .with_checkpoint_interval(Duration::from_millis(200))
        .with_connect_timeout(Duration::from_secs(2))
        .with_read_timeout(Duration::from_secs(2))
        .with_reconnect(
            ReconnectPolicy::new(Some(Duration::from_secs(60)), None)
                .with_backoff(Duration::from_millis(20), Duration::from_millis(200)),
        )
}

use ff_tests::support::blocking;

fn addr(server: &PostgresServer) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], server.port()))
}

async fn connect(url: &str) -> PostgresBackend {
    PostgresBackend::connect(url, config())
        .await
        .expect("connect")
}

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

/// The `oldest` of the `CursorExpired` that subscribing from `from` gives.
async fn expired(backend: &PostgresBackend, from: &StreamCursor, why: &str) -> StreamCursor {
    match read_from(backend, from).await {
        Err(EngineError::CursorExpired { oldest, detail, .. }) => {
            assert!(detail.contains(why), "{detail}");
            oldest.expect("an oldest position the server vouches for")
        }
        other => panic!("expected CursorExpired ({why}), got {other:?}"),
    }
}

/// The tags of the next `n` events a live subscription yields.
async fn take(sub: &mut Sub, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    while out.len() < n {
        if let DeliveryItem::Event { meta, .. } = next_item(sub, ITEM_DEADLINE, "live events").await
        {
            out.push(meta.tags["n"].clone());
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
async fn a_copy_promoted_after_the_original_advanced_expires_cursors_past_the_fork() {
    let Some(original) =
        own_server("a_copy_promoted_after_the_original_advanced_expires_cursors_past_the_fork")
            .await
    else {
        return;
    };
    let proxy = TcpProxy::start(addr(&original)).expect("proxy");
    let via_proxy = format!("postgres://postgres@127.0.0.1:{}/postgres", proxy.port());
    let on_original = connect(&original.url()).await;
    let before_fork = publish(&on_original, &["e0", "e1", "e2", "e3", "e4"]).await;
    let copy = {
        let original = original.clone();
        Arc::new(blocking(move || original.standby(false)).await)
    };
    let after_fork = publish(&on_original, &["e5", "e6", "e7", "e8", "e9"]).await;

    // A live subscription read everything on the original, through an
    // address that will move to the copy.
    let live = connect(&via_proxy).await;
    let mut sub = Sub::new(
        live.subscribe_family(
            FAMILY,
            StreamCursor::beginning(),
            &SubscriptionFilter::default(),
        )
        .await
        .expect("subscribe"),
    );
    assert_eq!(take(&mut sub, 10).await.len(), 10);

    {
        let original = original.clone();
        blocking(move || original.kill()).await;
    }
    {
        let copy = copy.clone();
        blocking(move || copy.promote()).await;
    }
    proxy.retarget(addr(&copy));
    let on_copy = connect(&copy.url()).await;
    let names: Vec<String> = (0..10).map(|n| format!("f{n}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    publish(&on_copy, &names).await;

    // The live subscription reconnects to the copy, which lacks what it
    // read last: CursorExpired, not the copy's events under reused ids.
    let deadline = Instant::now() + ITEM_DEADLINE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match sub.next_raw(left).await {
            None => panic!("the live subscription neither expired nor ended"),
            Some(Some(Err(EngineError::CursorExpired { oldest, .. }))) => {
                assert!(oldest.is_some());
                break;
            }
            Some(Some(Ok(DeliveryItem::Event { meta, .. }))) => {
                panic!("delivered {:?} from the copy's diverged history", meta.tags)
            }
            Some(Some(Ok(_))) => {}
            Some(other) => panic!("expected CursorExpired, got {other:?}"),
        }
    }

    let oldest = expired(&on_copy, &after_fork[4], "history diverged").await;
    assert_eq!(
        read_from(&on_copy, &before_fork[4])
            .await
            .expect("a cursor before the fork"),
        strings(&names),
        "a cursor both histories share resumes exactly"
    );
    let mut everything = strings(&["e0", "e1", "e2", "e3", "e4"]);
    everything.extend(strings(&names));
    assert_eq!(
        read_from(&on_copy, &oldest).await.expect("from oldest"),
        everything,
        "oldest replays the copy's whole history"
    );
}

#[cfg_attr(
    ff_external_postgres,
    ignore = "needs a PostgreSQL server of its own; FF_TEST_POSTGRES_URL is set"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_that_lost_nothing_expires_no_cursor() {
    let Some(original) = own_server("a_failover_that_lost_nothing_expires_no_cursor").await else {
        return;
    };
    let proxy = TcpProxy::start(addr(&original)).expect("proxy");
    let via_proxy = format!("postgres://postgres@127.0.0.1:{}/postgres", proxy.port());
    let on_original = connect(&original.url()).await;
    let first = publish(&on_original, &["e0", "e1"]).await;
    let standby = {
        let original = original.clone();
        Arc::new(blocking(move || original.standby(true)).await)
    };
    let last = publish(&on_original, &["e2", "e3"]).await;
    let live = connect(&via_proxy).await;
    let mut sub = Sub::new(
        live.subscribe_family(FAMILY, first[1].clone(), &SubscriptionFilter::default())
            .await
            .expect("subscribe"),
    );
    assert_eq!(take(&mut sub, 2).await, strings(&["e2", "e3"]));

    let lsn = original
        .psql("SELECT pg_current_wal_lsn()")
        .expect("the original's position");
    let deadline = Instant::now() + ITEM_DEADLINE;
    loop {
        let caught_up = standby
            .psql(&format!(
                "SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn"
            ))
            .expect("the standby's position");
        if caught_up == "t" {
            break;
        }
        assert!(Instant::now() < deadline, "the standby did not catch up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    {
        let original = original.clone();
        blocking(move || original.kill()).await;
    }
    {
        let standby = standby.clone();
        blocking(move || standby.promote()).await;
    }
    proxy.retarget(addr(&standby));
    let on_standby = connect(&standby.url()).await;
    publish(&on_standby, &["f0", "f1"]).await;

    assert_eq!(
        take(&mut sub, 2).await,
        strings(&["f0", "f1"]),
        "the live subscription goes on after the failover"
    );
    assert_eq!(
        read_from(&on_standby, &last[1])
            .await
            .expect("the newest cursor"),
        strings(&["f0", "f1"])
    );
    assert_eq!(
        read_from(&on_standby, &first[0])
            .await
            .expect("an older cursor"),
        strings(&["e1", "e2", "e3", "f0", "f1"])
    );
}

#[cfg_attr(
    ff_external_postgres,
    ignore = "needs a PostgreSQL server of its own; FF_TEST_POSTGRES_URL is set"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dump_restored_into_a_fresh_cluster_expires_every_cursor_and_serves_once_its_ids_pass() {
    let Some(original) = own_server(
        "a_dump_restored_into_a_fresh_cluster_expires_every_cursor_and_serves_once_its_ids_pass",
    )
    .await
    else {
        return;
    };
    // The original has issued far more transaction ids than a fresh cluster.
    original
        .psql(
            "DO $$ BEGIN FOR i IN 1..3000 LOOP PERFORM pg_current_xact_id(); COMMIT; END LOOP; END $$",
        )
        .expect("advance the original's transaction ids");
    let on_original = connect(&original.url()).await;
    let cursors = publish(&on_original, &["e0", "e1", "e2", "e3", "e4"]).await;
    on_original
        .prune_before(FAMILY, &cursors[1])
        .await
        .expect("prune e0");

    let fresh = own_server("a dump restored into a fresh cluster")
        .await
        .expect("a server");
    {
        let (original, fresh) = (original.clone(), fresh.clone());
        blocking(move || original.copy_schema_to("hist", &fresh)).await;
    }

    let on_fresh = connect(&fresh.url()).await;
    let oldest = expired(&on_fresh, &cursors[4], "another cluster").await;
    match read_from(&on_fresh, &oldest).await {
        Err(EngineError::Backend { detail, .. }) => {
            assert!(detail.contains("pg_resetwal"), "{detail}")
        }
        other => panic!("rows of another cluster's ids are refused until its ids pass: {other:?}"),
    }

    {
        let fresh = fresh.clone();
        blocking(move || fresh.set_xid_epoch(1)).await;
    }
    let on_fresh = connect(&fresh.url()).await;
    expired(&on_fresh, &cursors[4], "another cluster").await;
    assert_eq!(
        read_from(&on_fresh, &oldest).await.expect("from oldest"),
        strings(&["e1", "e2", "e3", "e4"]),
        "oldest replays every restored event after the horizon"
    );
    let mut sub = Sub::new(
        on_fresh
            .subscribe_family(FAMILY, oldest, &SubscriptionFilter::default())
            .await
            .expect("subscribe"),
    );
    publish(&on_fresh, &["g0"]).await;
    assert_eq!(
        take(&mut sub, 5).await,
        strings(&["e1", "e2", "e3", "e4", "g0"]),
        "events written after the restore sort after the restored ones"
    );
}
