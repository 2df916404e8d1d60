//! The subscription read path treats the server as untrusted input. A
//! scripted loopback server ([`HostileServer`]) sends ids that go
//! backwards or repeat, replays pages, sends more than was asked, bulk
//! strings and lines without end, and fails the blocking read after every
//! successful page read; a seeded fuzzer sends random hostile pages. In
//! every case: no panic (the stream ends with a typed error, not silently),
//! no out-of-order or repeated delivery, and the client stops reading what
//! it did not ask for.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ff_backend_valkey::cursor_codec::decode_valkey;
use ff_backend_valkey::{ValkeyBackend, ValkeyConfig};
use ff_core::backend::{DeliveryItem, DeliveryStream, ReconnectPolicy, StreamBackend};
use ff_core::engine_error::EngineError;
use ff_core::filter::SubscriptionFilter;
use ff_core::stream_events::Family;
use ff_core::stream_subscribe::{CursorStart, StreamCursor, ValkeyPosition};
use ff_tests::hostile_valkey::{entry, page_reply, state_reply, Answer, HostileServer, Request};
use futures::StreamExt;
use tokio::time::{timeout_at, Instant};

const DEADLINE: Duration = Duration::from_secs(30);
const HEAD: &str = "99999-0";

fn config() -> ValkeyConfig {
    ValkeyConfig::default()
        .with_client_name("ffhostile")
        .with_timeouts(Duration::from_secs(5), Duration::from_secs(5))
        .with_reconnect(
            ReconnectPolicy::new(None, Some(20))
                .with_backoff(Duration::from_millis(1), Duration::from_millis(4)),
        )
}

async fn subscribe(server: &HostileServer, config: ValkeyConfig) -> DeliveryStream {
    let backend = ValkeyBackend::connect(&server.url(), config)
        .await
        .expect("connect to the scripted server");
    backend
        .subscribe_family(
            Family::Completion,
            StreamCursor::beginning(),
            &SubscriptionFilter::default(),
        )
        .await
        .expect("subscribe")
}

fn position(cursor: &StreamCursor) -> ValkeyPosition {
    match decode_valkey(cursor, Family::Completion) {
        Ok(CursorStart::After(p)) => p,
        other => panic!("not a positioned cursor: {other:?}"),
    }
}

/// Everything the stream yields until it ends: the positions of its
/// events (asserted strictly increasing) and the error it ended with. A
/// stream that ends without an error (a panicked task) fails the test.
async fn drain(mut sub: DeliveryStream) -> (Vec<ValkeyPosition>, EngineError) {
    let mut delivered: Vec<ValkeyPosition> = Vec::new();
    loop {
        match timeout_at(Instant::now() + DEADLINE, sub.next()).await {
            Ok(Some(Ok(DeliveryItem::Event { event, .. }))) => {
                let p = position(event.cursor());
                if let Some(last) = delivered.last() {
                    assert!(p > *last, "delivered {p:?} after {last:?}");
                }
                delivered.push(p);
            }
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) if e.is_terminal() => {
                assert!(
                    timeout_at(Instant::now() + DEADLINE, sub.next())
                        .await
                        .expect("the stream ends")
                        .is_none(),
                    "a terminal error ends the stream"
                );
                return (delivered, e);
            }
            Ok(Some(Err(_))) => {}
            Ok(None) => panic!("the stream ended without an error (did its task panic?)"),
            Err(_) => panic!("the stream neither ended nor delivered within {DEADLINE:?}"),
        }
    }
}

fn p(ms: u64) -> ValkeyPosition {
    ValkeyPosition { ms, seq: 0 }
}

fn protocol_error(e: &EngineError, needle: &str) {
    match e {
        EngineError::Backend { detail, .. } => {
            assert!(detail.contains("invalid replies"), "{detail}");
            assert!(detail.contains(needle), "{detail} lacks {needle:?}");
            assert!(!detail.contains('\n'), "one line: {detail}");
        }
        other => panic!("expected a Backend protocol error, got {other:?}"),
    }
}

#[tokio::test]
async fn ids_that_go_backwards_or_repeat_are_never_delivered() {
    for page in [
        &["3-0", "2-0"][..],
        &["2-0", "2-0"],
        &["1-0", "0-0"],
        &["1-0", "1-0", "2-0"],
    ] {
        let ids: Vec<String> = page.iter().map(|s| s.to_string()).collect();
        let server = HostileServer::start(move |request| match request {
            Request::State => Answer::Bytes(state_reply(Some("1-0"), HEAD, 100)),
            Request::Page { .. } => {
                let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
                Answer::Bytes(page_reply(&ids, HEAD))
            }
            Request::Wait => Answer::Bytes(b"*-1\r\n".to_vec()),
        })
        .await;
        let (delivered, error) = drain(subscribe(&server, config()).await).await;
        assert!(delivered.is_empty(), "{page:?}: delivered {delivered:?}");
        protocol_error(&error, "only move forward");
        assert_eq!(
            server.read_connections(),
            3,
            "{page:?}: reconnected, then gave up"
        );
    }
}

#[tokio::test]
async fn a_page_reply_of_the_wrong_shape_is_reconnected_to_then_refused() {
    let server = HostileServer::start(|request| match request {
        Request::State => Answer::Bytes(state_reply(Some("1-0"), HEAD, 100)),
        // EXEC answers an integer where the array of replies is due.
        Request::Page { .. } => Answer::Bytes(b":7\r\n".to_vec()),
        Request::Wait => Answer::Bytes(b"*-1\r\n".to_vec()),
    })
    .await;
    let (delivered, error) = drain(subscribe(&server, config()).await).await;
    assert!(delivered.is_empty(), "delivered {delivered:?}");
    protocol_error(&error, "EXEC returned");
    assert_eq!(
        server.read_connections(),
        3,
        "a malformed reply is reconnected to, then the reader gives up"
    );
}

#[tokio::test]
async fn a_replayed_page_is_delivered_once_and_does_not_loop_forever() {
    let server = HostileServer::start(|request| match request {
        Request::State => Answer::Bytes(state_reply(Some("1-0"), "3-0", 3)),
        // Whatever was asked, the same page.
        Request::Page { .. } => Answer::Bytes(page_reply(&["1-0", "2-0", "3-0"], "3-0")),
        // "Something new": the paired read queued behind it follows.
        Request::Wait => Answer::Bytes(b"*1\r\n*2\r\n$1\r\nk\r\n*0\r\n".to_vec()),
    })
    .await;
    let (delivered, error) = drain(subscribe(&server, config()).await).await;
    assert_eq!(delivered, vec![p(1), p(2), p(3)]);
    protocol_error(&error, "does not follow 3-0");
}

#[tokio::test]
async fn a_page_with_more_entries_than_asked_is_refused() {
    let server = HostileServer::start(|request| match request {
        Request::State => Answer::Bytes(state_reply(Some("1-0"), HEAD, 100)),
        Request::Page { count, .. } => {
            // 300 times what was asked (300,000 for COUNT 1000), in order.
            let ids: Vec<String> = (1..=count * 300).map(|n| format!("{n}-0")).collect();
            let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
            Answer::Bytes(page_reply(&ids, HEAD))
        }
        Request::Wait => Answer::Bytes(b"*-1\r\n".to_vec()),
    })
    .await;
    let (delivered, error) = drain(subscribe(&server, config()).await).await;
    assert!(delivered.is_empty(), "{delivered:?}");
    protocol_error(&error, "elements allowed");
}

#[tokio::test]
async fn a_page_of_count_entries_but_more_than_count_is_refused_by_count() {
    let server = HostileServer::start(|request| match request {
        Request::State => Answer::Bytes(state_reply(Some("1-0"), HEAD, 100)),
        Request::Page { count, .. } => {
            let ids: Vec<String> = (1..=count + 1).map(|n| format!("{n}-0")).collect();
            let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
            Answer::Bytes(page_reply(&ids, HEAD))
        }
        Request::Wait => Answer::Bytes(b"*-1\r\n".to_vec()),
    })
    .await;
    let (delivered, error) = drain(subscribe(&server, config().with_read_batch(10)).await).await;
    assert!(delivered.is_empty(), "{delivered:?}");
    protocol_error(&error, "11 entries for COUNT 10");
}

/// A reply that declares (or is) far larger than allowed is refused
/// without reading it: the server cannot push it through.
async fn refused_without_reading(prefix: &[u8], total: usize, needle: &str) {
    let prefix = prefix.to_vec();
    let server = HostileServer::start(move |request| match request {
        Request::State => Answer::Bytes(state_reply(Some("1-0"), HEAD, 100)),
        Request::Page { .. } => Answer::Endless {
            prefix: prefix.clone(),
            filler: b'a',
            total,
        },
        Request::Wait => Answer::Bytes(b"*-1\r\n".to_vec()),
    })
    .await;
    let (delivered, error) = drain(subscribe(&server, config()).await).await;
    assert!(delivered.is_empty(), "{delivered:?}");
    protocol_error(&error, needle);
    // The server stops writing once the client closed; wait for all three.
    let deadline = Instant::now() + DEADLINE;
    let written = loop {
        let written = server.endless_bytes_written();
        if written.len() >= 3 {
            break written;
        }
        assert!(Instant::now() < deadline, "the server is still writing");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    for w in written {
        assert!(w < total, "the client read all {total} bytes");
    }
}

#[tokio::test]
async fn a_bulk_string_larger_than_allowed_is_refused_from_its_header() {
    refused_without_reading(
        b"*3\r\n*1\r\n*2\r\n$3\r\n1-0\r\n*2\r\n$1\r\nv\r\n$536870912\r\n",
        512 << 20,
        "larger than",
    )
    .await;
}

#[tokio::test]
async fn a_line_without_an_end_is_refused_at_the_line_cap() {
    refused_without_reading(b"+", 256 << 20, "line longer than").await;
}

#[tokio::test]
async fn a_blocking_read_failing_after_every_page_read_exhausts_the_backoff() {
    let server = HostileServer::start(|request| match request {
        Request::State => Answer::Bytes(state_reply(None, "0-0", 0)),
        Request::Page { .. } => Answer::Bytes(page_reply(&[], "0-0")),
        Request::Wait => Answer::Close,
    })
    .await;
    let policy = ReconnectPolicy::new(None, Some(4))
        .with_backoff(Duration::from_millis(1), Duration::from_millis(2));
    let (delivered, error) = drain(subscribe(&server, config().with_reconnect(policy)).await).await;
    assert!(delivered.is_empty());
    assert!(
        matches!(error, EngineError::StreamDisconnected { .. }),
        "{error:?}"
    );
    assert_eq!(
        server.subscription_connections(),
        5,
        "the first wake-up connection and four attempts: page reads did not reset the backoff"
    );
}

/// xorshift64*, for reproducible hostile pages.
fn next(state: &AtomicU64) -> u64 {
    let mut x = state.load(Ordering::Relaxed);
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    state.store(x, Ordering::Relaxed);
    x.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

#[tokio::test]
async fn random_hostile_pages_never_deliver_out_of_order_or_twice() {
    for seed in 1..=24u64 {
        let rng = Arc::new(AtomicU64::new(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)));
        let requests = Arc::new(AtomicUsize::new(0));
        let server = HostileServer::start(move |request| {
            let roll = |n: u64| next(&rng) % n;
            if requests.fetch_add(1, Ordering::SeqCst) > 60 {
                return Answer::Close;
            }
            match request {
                Request::State => Answer::Bytes(state_reply(Some("1-0"), HEAD, 100)),
                Request::Wait => match roll(4) {
                    0 => Answer::Close,
                    1 => Answer::Bytes(b"*-1\r\n".to_vec()),
                    _ => Answer::Bytes(b"*1\r\n*2\r\n$1\r\nk\r\n*0\r\n".to_vec()),
                },
                Request::Page { .. } => {
                    let mut ids: Vec<(u64, u64)> =
                        (0..roll(6)).map(|_| (roll(30), roll(3))).collect();
                    if roll(3) != 0 {
                        ids.sort();
                    }
                    let ids: Vec<String> =
                        ids.iter().map(|(ms, seq)| format!("{ms}-{seq}")).collect();
                    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
                    let mut bytes = page_reply(&ids, HEAD);
                    match roll(10) {
                        0 => {
                            bytes.truncate(roll(bytes.len() as u64) as usize);
                            Answer::BytesThenClose(bytes)
                        }
                        1 => {
                            let at = roll(bytes.len() as u64) as usize;
                            bytes[at] = next(&rng) as u8;
                            Answer::BytesThenClose(bytes)
                        }
                        _ => Answer::Bytes(bytes),
                    }
                }
            }
        })
        .await;
        // `drain` asserts strictly increasing delivery and a typed end.
        let policy = ReconnectPolicy::new(None, Some(5))
            .with_backoff(Duration::from_millis(1), Duration::from_millis(2));
        let (_delivered, _error) =
            drain(subscribe(&server, config().with_reconnect(policy)).await).await;
    }
}

/// A server answering every `XREAD BLOCK` at once with an entry the
/// subscription already holds: the wake-up broke the protocol (it asked for
/// entries after its position). Reconnected to, then refused — never a
/// loop of reads.
#[tokio::test]
async fn a_wake_up_answered_at_once_with_an_old_entry_is_refused_not_looped() {
    let server = HostileServer::start(|request| match request {
        Request::State => Answer::Bytes(state_reply(Some("1-0"), "3-0", 3)),
        Request::Page { start, .. } if start == "-" => {
            Answer::Bytes(page_reply(&["1-0", "2-0", "3-0"], "3-0"))
        }
        Request::Page { .. } => Answer::Bytes(page_reply(&[], "3-0")),
        Request::Wait => {
            let mut reply = b"*1\r\n*2\r\n$13\r\nff:completion\r\n*1\r\n".to_vec();
            reply.extend_from_slice(&entry("2-0"));
            Answer::Bytes(reply)
        }
    })
    .await;
    let (delivered, error) = drain(subscribe(&server, config()).await).await;
    assert_eq!(delivered, [p(1), p(2), p(3)]);
    protocol_error(&error, "does not follow");
    assert_eq!(
        server.subscription_connections(),
        3,
        "reconnected, then gave up"
    );
}

/// A server whose replies on the backend's shared connection are not RESP
/// at all: a command fails saying it got no valid reply, after a few
/// attempts, not with the connection errors that follow each one.
#[tokio::test]
async fn garbled_replies_on_the_shared_connection_are_named_as_invalid() {
    let server = HostileServer::start(|request| match request {
        Request::State => Answer::Bytes(b"?this is not RESP\r\n".to_vec()),
        Request::Page { .. } | Request::Wait => Answer::Close,
    })
    .await;
    let backend = ValkeyBackend::connect(&server.url(), config())
        .await
        .expect("connect to the scripted server");
    let error = backend
        .bounds(Family::Completion)
        .await
        .expect_err("bounds from a garbling server");
    let text = error.to_string();
    assert!(
        text.contains("no valid reply") && text.contains("not valid RESP"),
        "{text}"
    );
    assert!(text.contains("3 attempt(s)"), "a few attempts: {text}");
    assert!(!text.contains('\n'), "one line: {text}");
}
