//! `ff migrate` with grants, then `ff publish` and `ff tail` as
//! least-privilege roles against a real PostgreSQL server; an expired
//! cursor's error names the oldest retained position as cursor text that
//! `--from` accepts, and `--from oldest` starts there. `ff publish` wakes
//! another process's subscriber before it exits.

use std::time::Duration;

use ff_backend_postgres::{PostgresBackend, PostgresConfig};
use ff_core::backend::{DeliveryItem, StreamBackend};
use ff_core::filter::SubscriptionFilter;
use ff_core::stream_events::Family;
use ff_core::stream_subscribe::StreamCursor;
use ff_core::testkit::support::{next_item, Sub, ITEM_DEADLINE, LIVE_DEADLINE};
use ff_tests::support::PostgresServer;

use common::ff;

mod common;

fn tail(url: &str, from: &str, limit: &str) -> (bool, Vec<serde_json::Value>, String) {
    let (ok, out, err) = ff(
        &[
            "tail",
            "completion",
            "--backend",
            url,
            "--from",
            from,
            "--limit",
            limit,
            "--idle-timeout",
            "10",
        ],
        None,
    );
    let lines = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    (ok, lines, err)
}

fn event(n: usize) -> String {
    format!(
        r#"{{"execution_id":"{{fp:1}}:11111111-1111-4111-8111-11111111111{n}","outcome":"success","tags":{{"n":"{n}"}}}}"#
    )
}

#[test]
fn least_privilege_roles_publish_and_tail_and_expired_cursors_name_oldest() {
    let server = PostgresServer::start().expect("start postgres");
    let owner = server.url();
    server
        .psql("CREATE ROLE app LOGIN; CREATE ROLE writer LOGIN")
        .expect("create roles");
    let as_role = |role: &str| owner.replacen("postgres@", &format!("{role}@"), 1);

    let (ok, out, err) = ff(
        &[
            "migrate",
            "--backend",
            &owner,
            "--grant-consumer",
            "app",
            "--grant-publisher",
            "writer",
        ],
        None,
    );
    assert!(ok, "ff migrate failed: {err}");
    assert!(out.contains("granted consumer rights"), "{out}");

    let input = (0..5).map(event).collect::<Vec<_>>().join("\n");
    let (ok, out, err) = ff(
        &["publish", "completion", "--backend", &as_role("writer")],
        Some(&input),
    );
    assert!(ok, "ff publish as the publisher role failed: {err}");
    let cursors: Vec<&str> = out.lines().collect();
    assert_eq!(cursors.len(), 5, "{out}");

    let (ok, events, err) = tail(&as_role("app"), "beginning", "5");
    assert!(ok, "ff tail as the consumer role failed: {err}");
    assert_eq!(events.len(), 5);
    assert_eq!(events[4]["cursor"], cursors[4]);

    // Prune every event, publish two more, then resume from the first one.
    let pruned = server
        .psql("SELECT ff.prune_older_than('completion', 0)")
        .expect("prune");
    assert_eq!(pruned, "5");
    let input = (5..7).map(event).collect::<Vec<_>>().join("\n");
    let (ok, _, err) = ff(
        &["publish", "completion", "--backend", &as_role("writer")],
        Some(&input),
    );
    assert!(ok, "{err}");
    let (ok, _, err) = tail(&as_role("app"), cursors[0], "1");
    assert!(!ok, "an expired cursor fails");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    let oldest = err
        .split("with cursor ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("the error names the oldest cursor: {err}"))
        .to_owned();
    let (ok, from_text, err) = tail(&as_role("app"), &oldest, "2");
    assert!(ok, "--from the printed oldest cursor: {err}");
    let (ok, from_oldest, err) = tail(&as_role("app"), "oldest", "2");
    assert!(ok, "--from oldest: {err}");
    assert_eq!(from_text, from_oldest);
    let numbers: Vec<&str> = from_oldest
        .iter()
        .map(|e| e["tags"]["n"].as_str().expect("n"))
        .collect();
    assert_eq!(
        numbers,
        ["5", "6"],
        "the retained events, after the horizon"
    );
}

#[test]
fn a_published_event_wakes_another_processes_subscriber_before_ff_exits() {
    let server = PostgresServer::start().expect("start postgres");
    let url = server.url();
    let (ok, _, err) = ff(&["migrate", "--backend", &url], None);
    assert!(ok, "ff migrate failed: {err}");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        // Only a wake-up can deliver within the live deadline.
        let config = PostgresConfig::default()
            .with_safety_net_poll(Duration::from_secs(30))
            .with_liveness_interval(Duration::from_secs(30));
        let backend = PostgresBackend::connect(&url, config)
            .await
            .expect("connect the subscriber");
        let mut tail = Sub::new(
            backend
                .subscribe_family(
                    Family::Completion,
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
        let publish_url = url.clone();
        let (ok, _, err) = tokio::task::spawn_blocking(move || {
            ff(
                &[
                    "publish",
                    "completion",
                    "--backend",
                    &publish_url,
                    "--event",
                    &event(7),
                ],
                None,
            )
        })
        .await
        .expect("ff publish thread");
        assert!(ok, "ff publish failed: {err}");
        let deadline = tokio::time::Instant::now() + LIVE_DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match next_item(&mut tail, left, "the event ff publish wrote").await {
                DeliveryItem::Event { meta, .. } => break assert_eq!(meta.tags["n"], "7"),
                DeliveryItem::Checkpoint { .. } => {}
                other => panic!("expected the published event, got {other:?}"),
            }
        }
    });
}
