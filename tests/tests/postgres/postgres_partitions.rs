//! Retention by time ranges: an outbox partitioned by `at` prunes by
//! dropping or detaching whole ranges, records the horizon (an older
//! cursor is `CursorExpired`, never a gap), keeps live subscriptions and
//! row pruning working, and takes the filter indexes.

use std::time::Duration;

use ff_backend_postgres::sqlx::{self, PgPool};
use ff_backend_postgres::PostgresBackend;
use ff_core::backend::{DeliveryItem, EventPublisher, StreamBackend};
use ff_core::engine_error::EngineError;
use ff_core::filter::SubscriptionFilter;
use ff_core::stream_events::{CompletionOutcome, EventMeta, Family, NewEvent};
use ff_core::stream_subscribe::StreamCursor;
use ff_core::testkit::support::{next_item, take_events, Sub, ITEM_DEADLINE};
use ff_core::types::ExecutionId;
use ff_tests::harness::postgres::{
    admin_pool, config, returned_cursor, serial, server_url, RETURNING_POSITION,
};
use ff_tests::support::unique_name;

const HOUR_MS: i64 = 3_600_000;

/// Insert a completion tagged `n` with `at` `age_ms` in the past; returns
/// its cursor.
async fn insert_aged(
    admin: &PgPool,
    backend: &PostgresBackend,
    family: Family,
    n: &str,
    age_ms: i64,
) -> StreamCursor {
    let row = sqlx::query(&format!(
        "INSERT INTO {} (execution_id, outcome, tags, at) \
         VALUES ('{{fp:2}}:0b6f0c1e-4f3b-4c1e-9a57-2f7d9c1e0a11', 'success', \
                 jsonb_build_object('n', $1::text), \
                 (extract(epoch FROM clock_timestamp()) * 1000)::bigint - $2) {RETURNING_POSITION}",
        backend.table_name(family)
    ))
    .bind(n)
    .bind(age_ms)
    .fetch_one(admin)
    .await
    .expect("insert an aged row");
    returned_cursor(family, &row)
}

async fn tags_from(
    backend: &PostgresBackend,
    family: Family,
    from: StreamCursor,
) -> Result<Vec<String>, EngineError> {
    let mut sub = Sub::new(
        backend
            .subscribe_family(family, from, &SubscriptionFilter::default())
            .await?,
    );
    let mut out = Vec::new();
    loop {
        match next_item(&mut sub, ITEM_DEADLINE, "events until CaughtUp").await {
            DeliveryItem::Event { meta, .. } => out.push(meta.tags["n"].clone()),
            DeliveryItem::CaughtUp { .. } => return Ok(out),
            _ => {}
        }
    }
}

fn strings(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_time_ranges_are_dropped_or_detached_and_cursors_behind_them_expire() {
    let _serial = serial().await;
    let url = server_url().await;
    let schema = unique_name("parts");
    let backend = PostgresBackend::connect(&url, config(&schema))
        .await
        .expect("connect");
    backend
        .partition_by_time(Duration::from_millis(HOUR_MS as u64))
        .await
        .expect("partition by the hour");
    backend
        .create_filter_indexes()
        .await
        .expect("filter indexes on partitioned tables");
    let admin = admin_pool(&url).await;
    let family = Family::Completion;
    sqlx::query(&format!(
        "SELECT {schema}.ensure_partitions('completion', \
         (extract(epoch FROM clock_timestamp()) * 1000)::bigint - 5 * {HOUR_MS}, \
         (extract(epoch FROM clock_timestamp()) * 1000)::bigint)"
    ))
    .execute(&admin)
    .await
    .expect("ranges for the past hours");

    let old: Vec<StreamCursor> = {
        let mut out = Vec::new();
        for n in ["o0", "o1", "o2"] {
            out.push(insert_aged(&admin, &backend, family, n, 3 * HOUR_MS).await);
        }
        out
    };
    let event = |n: &str| {
        (
            NewEvent::completion(ExecutionId::new(2), CompletionOutcome::Success),
            EventMeta::new().with_tag("n", n),
        )
    };
    let recent = backend
        .publish_batch(vec![event("n0"), event("n1"), event("n2")])
        .await
        .expect("publish recent events");
    let mut tail = Sub::new(
        backend
            .subscribe_family(
                family,
                StreamCursor::empty(),
                &SubscriptionFilter::default(),
            )
            .await
            .expect("tail"),
    );
    assert!(matches!(
        next_item(&mut tail, ITEM_DEADLINE, "CaughtUp").await,
        DeliveryItem::CaughtUp { .. }
    ));

    let removed = backend
        .prune_partitions_older_than(family, Duration::from_millis(HOUR_MS as u64), false)
        .await
        .expect("prune by ranges");
    assert!(removed >= 1, "the range of the old events is dropped");
    match tags_from(&backend, family, old[0].clone()).await {
        Err(EngineError::CursorExpired { oldest, .. }) => {
            assert_eq!(oldest.as_ref(), Some(&old[2]), "oldest is the horizon")
        }
        other => panic!("a cursor in a dropped range: {other:?}"),
    }
    assert_eq!(backend.bounds(family).await.unwrap().oldest, old[2]);
    assert_eq!(
        tags_from(&backend, family, old[2].clone()).await.unwrap(),
        strings(&["n0", "n1", "n2"])
    );
    assert_eq!(
        tags_from(&backend, family, StreamCursor::beginning())
            .await
            .unwrap(),
        strings(&["n0", "n1", "n2"])
    );

    // Live subscriptions go on; a filtered one reads through the indexes.
    backend
        .publish(event("n3").0, event("n3").1)
        .await
        .expect("publish after pruning");
    let live = take_events(&mut tail, 1, "an event after pruning").await;
    assert_eq!(live[0].1.tags["n"], "n3");
    let mut filtered = Sub::new(
        backend
            .subscribe_family(
                family,
                StreamCursor::beginning(),
                &SubscriptionFilter::new().with_tag("n", "n1"),
            )
            .await
            .expect("a filtered subscription"),
    );
    let one = take_events(&mut filtered, 1, "the filtered event").await;
    assert_eq!(one[0].0.cursor(), &recent[1]);

    // Row pruning keeps working on the partitioned layout.
    backend
        .prune_before(family, &recent[1])
        .await
        .expect("prune rows");
    assert_eq!(
        tags_from(&backend, family, StreamCursor::beginning())
            .await
            .unwrap(),
        strings(&["n1", "n2", "n3"])
    );

    // Detaching keeps the old range as a plain table, out of the stream.
    let lease = Family::InstanceTags;
    sqlx::query(&format!(
        "SELECT {schema}.ensure_partitions('instance-tags', \
         (extract(epoch FROM clock_timestamp()) * 1000)::bigint - 5 * {HOUR_MS}, \
         (extract(epoch FROM clock_timestamp()) * 1000)::bigint)"
    ))
    .execute(&admin)
    .await
    .expect("ranges for the past hours");
    sqlx::query(&format!(
        "INSERT INTO {} (type, execution_id, tag, tags, at) \
         VALUES ('attached', '{{fp:2}}:0b6f0c1e-4f3b-4c1e-9a57-2f7d9c1e0a11', 'hot', '{{\"n\": \"old\"}}', \
                 (extract(epoch FROM clock_timestamp()) * 1000)::bigint - 4 * {HOUR_MS})",
        backend.table_name(lease)
    ))
    .execute(&admin)
    .await
    .expect("an old tag event");
    assert!(
        backend
            .prune_partitions_older_than(lease, Duration::from_millis(HOUR_MS as u64), true)
            .await
            .expect("detach")
            >= 1
    );
    assert!(tags_from(&backend, lease, StreamCursor::beginning())
        .await
        .unwrap()
        .is_empty());
    let kept: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = '{schema}' AND c.relname ~ '^instance_tags_p[0-9]+$' \
         AND NOT c.relispartition AND c.relkind = 'r'"
    ))
    .fetch_one(&admin)
    .await
    .unwrap();
    assert!(kept >= 1, "the detached range stays as a table");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_an_empty_outbox_is_partitioned() {
    let _serial = serial().await;
    let url = server_url().await;
    let backend = PostgresBackend::connect(&url, config(&unique_name("busy")))
        .await
        .expect("connect");
    backend
        .publish(
            NewEvent::completion(ExecutionId::new(1), CompletionOutcome::Success),
            EventMeta::new(),
        )
        .await
        .expect("publish");
    let err = backend
        .partition_by_time(Duration::from_secs(3600))
        .await
        .expect_err("a family with events is not converted");
    assert!(err.to_string().contains("only an empty outbox"), "{err}");
    let partitioned: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM {}.partitioning",
        backend.config().schema
    ))
    .fetch_one(&admin_pool(&url).await)
    .await
    .unwrap();
    assert_eq!(partitioned, 0, "no family is converted when one cannot be");
}
