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

/// A backend under a fresh prefix with `partitions` partitions, and an
/// admin connection to its server.
async fn fresh(partitions: u16) -> (ValkeyBackend, redis::aio::MultiplexedConnection) {
    let url = server_url().await;
    let name = support::unique_name("ffreuse");
    let backend = ValkeyBackend::connect(
        &url,
        ValkeyConfig::default()
            .with_key_prefix(format!("{name}:"))
            .with_client_name(name)
            .with_partitions(partitions),
    )
    .await
    .expect("connect");
    let admin = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    (backend, admin)
}

/// `XADD key id …` of a completion of execution `{fp:1}` tagged `n`.
fn xadd(key: &str, id: &str, n: &str) -> redis::Cmd {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(key)
        .arg(id)
        .arg("v")
        .arg("1")
        .arg("execution_id")
        .arg(ExecutionId::new(1).to_string())
        .arg("outcome")
        .arg("success")
        .arg("tags")
        .arg(format!(r#"{{"n":"{n}"}}"#));
    cmd
}

/// The original history: entries `1000-1` … `1000-5`, tagged 1 … 5.
async fn write_original(admin: &mut redis::aio::MultiplexedConnection, key: &str) {
    for seq in 1..=5 {
        let _: String = xadd(key, &format!("1000-{seq}"), &seq.to_string())
            .query_async(admin)
            .await
            .expect("XADD");
    }
}

/// The promoted copy, swapped in at once (one transaction): it missed the
/// tail of the original, so new entries reuse its ids — `1000-1` …
/// `1000-3` as before, a new `1000-4`, with `new_five` a new `1000-5` too
/// (as many entries reused as lost), then a later one.
async fn swap_in_lossy_copy(
    admin: &mut redis::aio::MultiplexedConnection,
    key: &str,
    new_five: bool,
) {
    let mut pipe = redis::pipe();
    pipe.atomic().cmd("DEL").arg(key).ignore();
    for seq in 1..=3 {
        pipe.add_command(xadd(key, &format!("1000-{seq}"), &seq.to_string()))
            .ignore();
    }
    pipe.add_command(xadd(key, "1000-4", "4-new")).ignore();
    if new_five {
        pipe.add_command(xadd(key, "1000-5", "5-new")).ignore();
    }
    pipe.add_command(xadd(key, "2000-0", "later")).ignore();
    let () = pipe.query_async(admin).await.expect("swap the copy in");
}

/// The `n` tags of the events up to `CaughtUp`, and the cursor of each.
async fn backlog(sub: &mut ff_core::backend::DeliveryStream) -> Vec<(String, StreamCursor)> {
    let deadline = Instant::now() + DEADLINE;
    let mut events = Vec::new();
    loop {
        match timeout_at(deadline, sub.next()).await {
            Ok(Some(Ok(DeliveryItem::Event { event, meta }))) => {
                events.push((meta.tags["n"].clone(), event.cursor().clone()))
            }
            Ok(Some(Ok(DeliveryItem::CaughtUp { .. }))) => return events,
            Ok(Some(Ok(_))) => {}
            other => panic!("expected events then CaughtUp, got {other:?}"),
        }
    }
}

/// `CursorExpired` saying the history changed, whose `oldest` replays
/// what the copy holds.
async fn history_changed(
    backend: &ValkeyBackend,
    result: Result<(), EngineError>,
    new_five: bool,
    what: &str,
) {
    let oldest = match result {
        Err(EngineError::CursorExpired { oldest, detail, .. }) => {
            assert!(detail.contains("history changed"), "{what}: {detail}");
            assert!(!detail.contains('\n'), "{detail}");
            oldest.expect("an oldest position")
        }
        Err(other) => panic!("{what}: expected CursorExpired, got {other}"),
        Ok(()) => panic!("{what}: expected CursorExpired"),
    };
    let mut again = backend
        .subscribe_family(Family::Completion, oldest, &Default::default())
        .await
        .expect("resubscribe from oldest");
    let ns: Vec<String> = backlog(&mut again)
        .await
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    let mut expected = vec!["1", "2", "3", "4-new"];
    if new_five {
        expected.push("5-new");
    }
    expected.push("later");
    assert_eq!(ns, expected, "{what}: from oldest, what the copy holds");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stored_cursor_whose_id_a_lossy_copy_reused_is_cursor_expired() {
    for new_five in [false, true] {
        for partitions in [1, 2] {
            let what = format!("partitions={partitions}, a new 1000-5: {new_five}");
            let (backend, mut admin) = fresh(partitions).await;
            // Execution {fp:1}'s partition.
            let key = backend
                .partition_stream_key(Family::Completion, 1 % partitions)
                .to_owned();
            write_original(&mut admin, &key).await;
            let mut sub = backend
                .subscribe_family(
                    Family::Completion,
                    StreamCursor::beginning(),
                    &Default::default(),
                )
                .await
                .expect("subscribe");
            let read = backlog(&mut sub).await;
            assert_eq!(read.len(), 5);
            let (_, stored) = read.last().cloned().expect("the fifth event");
            drop(sub);

            swap_in_lossy_copy(&mut admin, &key, new_five).await;
            let resumed = backend
                .subscribe_family(Family::Completion, stored, &Default::default())
                .await
                .map(drop);
            history_changed(&backend, resumed, new_five, &what).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_live_subscription_whose_position_a_lossy_copy_reused_is_cursor_expired() {
    for partitions in [1, 2] {
        let (backend, mut admin) = fresh(partitions).await;
        let key = backend
            .partition_stream_key(Family::Completion, 1 % partitions)
            .to_owned();
        write_original(&mut admin, &key).await;
        let mut sub = backend
            .subscribe_family(
                Family::Completion,
                StreamCursor::beginning(),
                &Default::default(),
            )
            .await
            .expect("subscribe");
        assert_eq!(backlog(&mut sub).await.len(), 5);
        // As many entries reused as lost: the stream's entries-added count
        // is what the subscription expects.
        swap_in_lossy_copy(&mut admin, &key, true).await;
        let deadline = Instant::now() + DEADLINE;
        let next = loop {
            match timeout_at(deadline, sub.next()).await {
                Ok(Some(Ok(DeliveryItem::Checkpoint { .. }))) => {}
                Ok(Some(Ok(DeliveryItem::Event { meta, .. }))) => panic!(
                    "partitions={partitions}: event {} was delivered after the history changed under the position, without CursorExpired",
                    meta.tags["n"]
                ),
                Ok(Some(Err(e))) => break Err(e),
                other => panic!("partitions={partitions}: expected CursorExpired, got {other:?}"),
            }
        };
        history_changed(
            &backend,
            next,
            true,
            &format!("live, partitions={partitions}"),
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn cursors_without_a_witness_still_resume_exactly() {
    let (backend, mut admin) = fresh(1).await;
    let key = backend.stream_key(Family::Completion).to_owned();
    write_original(&mut admin, &key).await;
    // An 18-byte cursor, as builds before witnesses issued.
    let old = ff_backend_valkey::cursor_codec::encode_valkey(Family::Completion, 1000, 3);
    assert_eq!(old.as_bytes().len(), 18);
    let mut sub = backend
        .subscribe_family(Family::Completion, old, &Default::default())
        .await
        .expect("an old cursor resumes");
    let read = backlog(&mut sub).await;
    let ns: Vec<&str> = read.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(ns, ["4", "5"]);
    // What this build yields carries the entry's witness, and resumes the same.
    let (_, fourth) = &read[0];
    assert_eq!(fourth.as_bytes().len(), 22);
    let mut sub = backend
        .subscribe_family(Family::Completion, fourth.clone(), &Default::default())
        .await
        .expect("resume");
    let ns: Vec<String> = backlog(&mut sub)
        .await
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(ns, ["5"]);
}
