//! Trims by clients other than ff — `XADD … MAXLEN`, `XADD … MAXLEN ~`,
//! `XADD … MINID`, `XTRIM MAXLEN`, `XTRIM MAXLEN ~`, `XTRIM MINID` — never
//! leave a silent gap: they do not update `max-deleted-entry-id`, so a
//! cursor equal to it (the `0-0` of an empty stream, or the last entry ff's
//! own retention removed) resumes only while the stream's removal count
//! proves nothing else was removed; otherwise it is `CursorExpired`, and
//! its `oldest` resumes at exactly what is retained.

use std::time::Duration;

use ff_backend_valkey::redis::{self, aio::MultiplexedConnection};
use ff_backend_valkey::{ValkeyBackend, ValkeyConfig};
use ff_core::backend::{DeliveryItem, DeliveryStream, EventPublisher, StreamBackend};
use ff_core::engine_error::EngineError;
use ff_core::filter::SubscriptionFilter;
use ff_core::stream_events::{CompletionOutcome, EventMeta, Family, NewEvent};
use ff_core::stream_subscribe::StreamCursor;
use ff_core::types::{ExecutionId, TimestampMs};
use ff_tests::harness::valkey::server_url;
use ff_tests::support;
use futures::StreamExt;
use tokio::time::{timeout_at, Instant};

const DEADLINE: Duration = Duration::from_secs(20);
const FAMILY: Family = Family::Completion;

/// How another client trims while (or after) appending.
#[derive(Clone, Copy, Debug)]
enum ForeignTrim {
    /// `XADD key MAXLEN 5 * …` on every append.
    XaddMaxLen,
    /// `XADD key MAXLEN ~ 5 * …` on every append.
    XaddApproxMaxLen,
    /// `XADD key MINID <6th id> * …` on every append after the 6th.
    XaddMinId,
    /// Plain appends, then `XTRIM key MAXLEN 5`.
    XtrimMaxLen,
    /// Plain appends, then `XTRIM key MAXLEN ~ 5`.
    XtrimApproxMaxLen,
    /// Plain appends, then `XTRIM key MINID <6th id>`.
    XtrimMinId,
}

const EVERY_TRIM: [ForeignTrim; 6] = [
    ForeignTrim::XaddMaxLen,
    ForeignTrim::XaddApproxMaxLen,
    ForeignTrim::XaddMinId,
    ForeignTrim::XtrimMaxLen,
    ForeignTrim::XtrimApproxMaxLen,
    ForeignTrim::XtrimMinId,
];

impl ForeignTrim {
    /// How many entries to append so the trim removes some: an
    /// approximate trim only drops whole nodes (100 entries by default).
    fn appends(self) -> usize {
        match self {
            Self::XaddApproxMaxLen | Self::XtrimApproxMaxLen => 250,
            _ => 10,
        }
    }
}

async fn backend() -> ValkeyBackend {
    let name = support::unique_name("fftrim");
    ValkeyBackend::connect(
        &server_url().await,
        ValkeyConfig::default()
            .with_key_prefix(format!("{name}:"))
            .with_client_name(name),
    )
    .await
    .expect("connect")
}

async fn raw() -> MultiplexedConnection {
    redis::Client::open(server_url().await)
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("connection")
}

/// Append completion entries numbered `numbers` (tag `n`) as another
/// client would, trimming the way `trim` says. Returns how many entries
/// the stream retains afterwards.
async fn append_and_trim(
    conn: &mut MultiplexedConnection,
    key: &str,
    numbers: std::ops::Range<usize>,
    trim: ForeignTrim,
) -> usize {
    let mut ids: Vec<String> = Vec::new();
    for (i, n) in numbers.enumerate() {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(key);
        match trim {
            ForeignTrim::XaddMaxLen => {
                cmd.arg("MAXLEN").arg(5);
            }
            ForeignTrim::XaddApproxMaxLen => {
                cmd.arg("MAXLEN").arg("~").arg(5);
            }
            ForeignTrim::XaddMinId if i > 5 => {
                cmd.arg("MINID").arg(&ids[5]);
            }
            _ => {}
        }
        cmd.arg("*")
            .arg("v")
            .arg(1)
            .arg("execution_id")
            .arg(ExecutionId::new(1).to_string())
            .arg("outcome")
            .arg("success")
            .arg("tags")
            .arg(format!(r#"{{"n":"{n}"}}"#));
        ids.push(cmd.query_async(conn).await.expect("XADD"));
    }
    let mut xtrim = redis::cmd("XTRIM");
    xtrim.arg(key);
    let xtrim = match trim {
        ForeignTrim::XtrimMaxLen => Some(xtrim.arg("MAXLEN").arg(5)),
        ForeignTrim::XtrimApproxMaxLen => Some(xtrim.arg("MAXLEN").arg("~").arg(5)),
        ForeignTrim::XtrimMinId => Some(xtrim.arg("MINID").arg(&ids[5])),
        _ => None,
    };
    if let Some(xtrim) = xtrim {
        let _: u64 = xtrim.query_async(conn).await.expect("XTRIM");
    }
    redis::cmd("XLEN")
        .arg(key)
        .query_async(conn)
        .await
        .expect("XLEN")
}

/// The numbers (tag `n`) of the events up to `CaughtUp`.
async fn backlog(sub: &mut DeliveryStream) -> Vec<usize> {
    let mut numbers = Vec::new();
    loop {
        match timeout_at(Instant::now() + DEADLINE, sub.next()).await {
            Ok(Some(Ok(DeliveryItem::Event { meta, .. }))) => {
                numbers.push(meta.tags["n"].parse().expect("n"))
            }
            Ok(Some(Ok(DeliveryItem::CaughtUp { .. }))) => return numbers,
            other => panic!("reading a backlog: {other:?}"),
        }
    }
}

/// Subscribe from `cursor`, expecting `CursorExpired`; its `oldest`.
async fn expect_expired(b: &ValkeyBackend, cursor: &StreamCursor, what: &str) -> StreamCursor {
    match b
        .subscribe_family(FAMILY, cursor.clone(), &SubscriptionFilter::default())
        .await
    {
        Err(EngineError::CursorExpired { oldest, detail, .. }) => {
            assert!(detail.contains("trimmed"), "{what}: {detail}");
            oldest.expect("an oldest cursor")
        }
        Ok(mut sub) => panic!(
            "{what}: resumed silently, delivering {:?}",
            backlog(&mut sub).await
        ),
        Err(e) => panic!("{what}: expected CursorExpired, got {e}"),
    }
}

async fn subscribe(b: &ValkeyBackend, cursor: StreamCursor) -> DeliveryStream {
    b.subscribe_family(FAMILY, cursor, &SubscriptionFilter::default())
        .await
        .expect("subscribe")
}

/// The cursor a tail subscription resolves to (its `CaughtUp`).
async fn tail_position(b: &ValkeyBackend) -> StreamCursor {
    let mut sub = subscribe(b, StreamCursor::empty()).await;
    match timeout_at(Instant::now() + DEADLINE, sub.next()).await {
        Ok(Some(Ok(DeliveryItem::CaughtUp { cursor }))) => cursor,
        other => panic!("tail: {other:?}"),
    }
}

#[tokio::test]
async fn the_zero_cursor_of_an_empty_stream_expires_after_any_foreign_trim() {
    let mut conn = raw().await;
    for trim in EVERY_TRIM {
        let b = backend().await;
        // Every way ff hands out the position of an empty stream.
        let zero = tail_position(&b).await;
        let bounds = b.bounds(FAMILY).await.expect("bounds");
        assert_eq!(bounds.head, zero, "{trim:?}: bounds of an empty stream");
        assert_eq!(bounds.oldest, zero, "{trim:?}: bounds of an empty stream");
        let at = b
            .cursor_at(FAMILY, TimestampMs(0))
            .await
            .expect("cursor_at");
        assert_eq!(at, zero, "{trim:?}: cursor_at on an empty stream");

        let appended = trim.appends();
        let retained = append_and_trim(&mut conn, b.stream_key(FAMILY), 0..appended, trim).await;
        assert!(
            (1..appended).contains(&retained),
            "{trim:?} removed some entries (retained {retained} of {appended})"
        );

        let oldest = expect_expired(&b, &zero, &format!("{trim:?}")).await;
        let mut sub = subscribe(&b, oldest).await;
        assert_eq!(
            backlog(&mut sub).await,
            (appended - retained..appended).collect::<Vec<_>>(),
            "{trim:?}: oldest resumes at exactly what is retained"
        );
    }
}

#[tokio::test]
async fn the_zero_cursor_of_an_empty_stream_resumes_everything_when_nothing_was_trimmed() {
    let b = backend().await;
    let zero = tail_position(&b).await;
    let mut conn = raw().await;
    let retained = append_and_trim(
        &mut conn,
        b.stream_key(FAMILY),
        0..10,
        ForeignTrim::XaddMaxLen,
    )
    .await;
    assert_eq!(retained, 5, "the foreign client trims to 5");
    // A second backend on a fresh key: appended by another client, no trim.
    let fresh = backend().await;
    let zero_fresh = tail_position(&fresh).await;
    assert_eq!(zero_fresh, zero, "both empty streams are at 0-0");
    for n in 0..10 {
        let _: String = redis::cmd("XADD")
            .arg(fresh.stream_key(FAMILY))
            .arg("*")
            .arg("v")
            .arg(1)
            .arg("execution_id")
            .arg(ExecutionId::new(1).to_string())
            .arg("outcome")
            .arg("success")
            .arg("tags")
            .arg(format!(r#"{{"n":"{n}"}}"#))
            .query_async(&mut conn)
            .await
            .expect("XADD");
    }
    let mut sub = subscribe(&fresh, zero_fresh).await;
    assert_eq!(backlog(&mut sub).await, (0..10).collect::<Vec<_>>());
}

#[tokio::test]
async fn the_last_entry_ffs_retention_removed_expires_once_another_client_trims_further() {
    let mut conn = raw().await;
    for trim in EVERY_TRIM {
        let b = backend().await;
        let cursors = b
            .publish_batch(
                (0..20)
                    .map(|n| {
                        (
                            NewEvent::completion(ExecutionId::new(1), CompletionOutcome::Success),
                            EventMeta::new().with_tag("n", n.to_string()),
                        )
                    })
                    .collect(),
            )
            .await
            .expect("publish");
        assert_eq!(
            b.prune_before(FAMILY, &cursors[10]).await.expect("trim"),
            10
        );
        // ff's own trim is on the record: the last removed position lost nothing.
        let mut sub = subscribe(&b, cursors[9].clone()).await;
        assert_eq!(backlog(&mut sub).await, (10..20).collect::<Vec<_>>());

        let appended = trim.appends();
        let retained =
            append_and_trim(&mut conn, b.stream_key(FAMILY), 20..20 + appended, trim).await;
        assert!(
            retained < 10 + appended,
            "{trim:?} removed some entries (retained {retained})"
        );
        let oldest = expect_expired(&b, &cursors[9], &format!("{trim:?} after ff's trim")).await;
        let mut sub = subscribe(&b, oldest).await;
        assert_eq!(
            backlog(&mut sub).await,
            (20 + appended - retained..20 + appended).collect::<Vec<_>>(),
            "{trim:?}: oldest resumes at exactly what is retained"
        );
    }
}

#[tokio::test]
async fn a_cursor_inside_an_untrimmed_stream_expires_when_another_client_trims_past_it() {
    let b = backend().await;
    let mut conn = raw().await;
    let cursors = b
        .publish_batch(
            (0..10)
                .map(|n| {
                    (
                        NewEvent::completion(ExecutionId::new(1), CompletionOutcome::Success),
                        EventMeta::new().with_tag("n", n.to_string()),
                    )
                })
                .collect(),
        )
        .await
        .expect("publish");
    let retained = append_and_trim(
        &mut conn,
        b.stream_key(FAMILY),
        10..12,
        ForeignTrim::XtrimMaxLen,
    )
    .await;
    assert_eq!(retained, 5);
    let oldest = expect_expired(&b, &cursors[3], "cursor 3 after XTRIM MAXLEN 5").await;
    let mut sub = subscribe(&b, oldest).await;
    assert_eq!(backlog(&mut sub).await, (7..12).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_live_subscription_at_zero_ends_with_cursor_expired_when_a_foreign_trim_overtakes_it() {
    let b = backend().await;
    let mut sub = subscribe(&b, StreamCursor::empty()).await;
    match timeout_at(Instant::now() + DEADLINE, sub.next()).await {
        Ok(Some(Ok(DeliveryItem::CaughtUp { .. }))) => {}
        other => panic!("tail: {other:?}"),
    }
    // Ten appends trimmed to five, atomically: the subscription's next read
    // sees only the trimmed stream.
    let mut pipe = redis::pipe();
    pipe.atomic();
    for n in 0..10 {
        pipe.cmd("XADD")
            .arg(b.stream_key(FAMILY))
            .arg("MAXLEN")
            .arg(5)
            .arg("*")
            .arg("v")
            .arg(1)
            .arg("execution_id")
            .arg(ExecutionId::new(1).to_string())
            .arg("outcome")
            .arg("success")
            .arg("tags")
            .arg(format!(r#"{{"n":"{n}"}}"#))
            .ignore();
    }
    let mut conn = raw().await;
    let () = pipe.query_async(&mut conn).await.expect("MULTI/EXEC");
    match timeout_at(Instant::now() + DEADLINE, sub.next()).await {
        Ok(Some(Err(EngineError::CursorExpired { oldest, .. }))) => {
            let mut rest = subscribe(&b, oldest.expect("oldest")).await;
            assert_eq!(backlog(&mut rest).await, (5..10).collect::<Vec<_>>());
        }
        other => panic!("expected CursorExpired before any event, got {other:?}"),
    }
}

/// The last entry ff's trim removed, when the first retained entry does
/// not directly follow it (ids with gaps): only the trim record, read
/// beside the stream's state, proves nothing else was removed — on
/// subscribing and on the subscription's first read alike.
#[tokio::test]
async fn the_last_entry_ffs_trim_removed_resumes_when_ids_have_gaps() {
    let b = backend().await;
    let mut conn = raw().await;
    for n in 0..20u64 {
        let _: String = redis::cmd("XADD")
            .arg(b.stream_key(FAMILY))
            .arg(format!("{}-0", (n + 1) * 10))
            .arg("v")
            .arg(1)
            .arg("execution_id")
            .arg(ExecutionId::new(1).to_string())
            .arg("outcome")
            .arg("success")
            .arg("tags")
            .arg(format!(r#"{{"n":"{n}"}}"#))
            .query_async(&mut conn)
            .await
            .expect("XADD");
    }
    let mut sub = subscribe(&b, StreamCursor::beginning()).await;
    let mut cursors = Vec::new();
    while cursors.len() < 20 {
        match timeout_at(Instant::now() + DEADLINE, sub.next()).await {
            Ok(Some(Ok(DeliveryItem::Event { event, .. }))) => cursors.push(event.cursor().clone()),
            Ok(Some(Ok(_))) => {}
            other => panic!("reading the stream: {other:?}"),
        }
    }
    assert_eq!(
        b.prune_before(FAMILY, &cursors[10]).await.expect("trim"),
        10
    );
    let mut sub = subscribe(&b, cursors[9].clone()).await;
    assert_eq!(backlog(&mut sub).await, (10..20).collect::<Vec<_>>());
}
