//! A stream whose history changes under a live subscription — as when a
//! primary fails over to a replica that had not received its last
//! acknowledged entries, and new entries follow with later ids — is
//! reported with `CursorExpired`, never delivered as if nothing was lost.
//! The failover is played on one server with `DUMP`/`RESTORE`: the stream
//! goes back to an earlier copy, then new entries are appended.

use std::time::Duration;

use ff_backend_valkey::redis::{self, Value};
use ff_backend_valkey::{ValkeyBackend, ValkeyConfig};
use ff_core::backend::{DeliveryItem, EventPublisher, StreamBackend};
use ff_core::engine_error::EngineError;
use ff_core::stream_events::{CompletionOutcome, EventMeta, Family, NewEvent};
use ff_core::stream_subscribe::StreamCursor;
use ff_core::types::ExecutionId;
use ff_tests::harness::valkey::server_url;
use ff_tests::support;
use futures::StreamExt;
use tokio::time::{timeout_at, Instant};

const DEADLINE: Duration = Duration::from_secs(10);

fn completion(n: u16) -> (NewEvent, EventMeta) {
    (
        NewEvent::completion(ExecutionId::new(n), CompletionOutcome::Success),
        EventMeta::new().with_tag("n", n.to_string()),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_history_that_forked_under_a_live_subscription_is_cursor_expired() {
    let url = server_url().await;
    let name = support::unique_name("fffork");
    let backend = ValkeyBackend::connect(
        &url,
        ValkeyConfig::default()
            .with_key_prefix(format!("{name}:"))
            .with_client_name(name),
    )
    .await
    .expect("connect");
    let mut admin = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let key = backend.stream_key(Family::Completion).to_owned();

    backend
        .publish_batch((0..3).map(completion).collect())
        .await
        .expect("publish");
    // The replica's copy: three entries.
    let copy: Vec<u8> = redis::cmd("DUMP")
        .arg(&key)
        .query_async(&mut admin)
        .await
        .expect("DUMP");
    let mut sub = backend
        .subscribe_family(
            Family::Completion,
            StreamCursor::beginning(),
            &Default::default(),
        )
        .await
        .expect("subscribe");
    // Two more, acknowledged by the primary only; the subscription reads
    // all five, to the end of the stream.
    backend
        .publish_batch((3..5).map(completion).collect())
        .await
        .expect("publish");
    let deadline = Instant::now() + DEADLINE;
    let mut events = 0;
    while events < 5 {
        match timeout_at(deadline, sub.next()).await {
            Ok(Some(Ok(DeliveryItem::Event { .. }))) => events += 1,
            Ok(Some(Ok(_))) => {}
            other => panic!("expected five events, got {other:?}"),
        }
    }
    // The failover: back to three entries, then new ones take ids after
    // the lost two.
    let () = redis::cmd("RESTORE")
        .arg(&key)
        .arg(0)
        .arg(copy)
        .arg("REPLACE")
        .query_async(&mut admin)
        .await
        .expect("RESTORE");
    backend
        .publish_batch((5..7).map(completion).collect())
        .await
        .expect("publish after the failover");
    loop {
        match timeout_at(deadline, sub.next()).await {
            Ok(Some(Ok(DeliveryItem::CaughtUp { .. } | DeliveryItem::Checkpoint { .. }))) => {}
            Ok(Some(Err(EngineError::CursorExpired { oldest, detail, .. }))) => {
                assert!(detail.contains("history changed"), "{detail}");
                assert!(!detail.contains('\n'), "{detail}");
                // From `oldest`, what is stored now: 0, 1, 2, 5, 6.
                let mut again = backend
                    .subscribe_family(
                        Family::Completion,
                        oldest.expect("an oldest position"),
                        &Default::default(),
                    )
                    .await
                    .expect("resubscribe");
                let mut ns = Vec::new();
                loop {
                    match timeout_at(deadline, again.next()).await {
                        Ok(Some(Ok(DeliveryItem::Event { meta, .. }))) => {
                            ns.push(meta.tags["n"].clone())
                        }
                        Ok(Some(Ok(DeliveryItem::CaughtUp { .. }))) => break,
                        Ok(Some(Ok(_))) => {}
                        other => panic!("expected the stored events, got {other:?}"),
                    }
                }
                assert_eq!(ns, ["0", "1", "2", "5", "6"]);
                let _: Value = redis::cmd("DEL")
                    .arg(&key)
                    .query_async(&mut admin)
                    .await
                    .unwrap();
                return;
            }
            Ok(Some(Ok(DeliveryItem::Event { meta, .. }))) => panic!(
                "event {} was delivered after the history lost events 3 and 4, without CursorExpired",
                meta.tags["n"]
            ),
            other => panic!("expected CursorExpired, got {other:?}"),
        }
    }
}
