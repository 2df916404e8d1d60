//! Gap-free ordering under concurrent writers, against PostgreSQL servers
//! of their own: these tests hold transactions open, and the horizon that
//! holds delivery back is cluster-wide, so they must not share a server
//! with tests that expect prompt delivery.
//!
//! A plain `id > last_seen` reader loses events whenever transactions
//! commit out of id order; these tests prove the outbox never does.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ff_backend_postgres::sqlx::{Connection, PgConnection};
use ff_backend_postgres::{PostgresBackend, PostgresConfig};
use ff_core::backend::{DeliveryItem, EventPublisher, StreamBackend};
use ff_core::filter::SubscriptionFilter;
use ff_core::stream_events::{CompletionOutcome, EventMeta, Family, NewEvent};
use ff_core::stream_subscribe::StreamCursor;
use ff_core::testkit::support::{next_item, until_caught_up, Sub, ITEM_DEADLINE, LIVE_DEADLINE};
use ff_core::types::ExecutionId;
use ff_tests::harness::postgres::own_server;
use tokio::time::Instant;

const FAMILY: Family = Family::Completion;

async fn backend(url: &str) -> PostgresBackend {
    let config = PostgresConfig::default()
        .with_schema("gaps")
        .with_application_name("ff-gaps")
        .with_checkpoint_interval(Duration::from_millis(200))
        .with_held_back_poll(Duration::from_millis(20));
    PostgresBackend::connect(url, config)
        .await
        .expect("connect the backend")
}

fn event(writer: usize, seq: usize) -> (NewEvent, EventMeta) {
    (
        NewEvent::completion(ExecutionId::new(writer as u16), CompletionOutcome::Success),
        EventMeta::new().with_tag("id", format!("{writer}/{seq}")),
    )
}

fn id_of(meta: &EventMeta) -> String {
    meta.tags.get("id").cloned().unwrap_or_default()
}

async fn subscribe(b: &PostgresBackend, from: StreamCursor) -> Sub {
    Sub::new(
        b.subscribe_family(FAMILY, from, &SubscriptionFilter::default())
            .await
            .expect("subscribe"),
    )
}

/// The next event (skipping markers) within `within`, or `None`.
async fn next_event(sub: &mut Sub, within: Duration) -> Option<(String, StreamCursor)> {
    let deadline = Instant::now() + within;
    loop {
        match sub
            .next_raw(deadline.saturating_duration_since(Instant::now()))
            .await
        {
            None => return None,
            Some(Some(Ok(DeliveryItem::Event { event, meta }))) => {
                return Some((id_of(&meta), event.cursor().clone()))
            }
            Some(Some(Ok(_))) => {}
            Some(other) => panic!("unexpected {other:?}"),
        }
    }
}

#[cfg_attr(
    ff_external_postgres,
    ignore = "needs a PostgreSQL server of its own; FF_TEST_POSTGRES_URL is set"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_transaction_holds_back_later_commits_and_nothing_is_lost() {
    let Some(server) =
        own_server("an_open_transaction_holds_back_later_commits_and_nothing_is_lost").await
    else {
        return;
    };
    let url = server.url();
    let b = backend(&url).await;
    let mut tail = subscribe(&b, StreamCursor::empty()).await;
    let DeliveryItem::CaughtUp { cursor: start } =
        next_item(&mut tail, ITEM_DEADLINE, "CaughtUp").await
    else {
        panic!("a tail subscription starts with CaughtUp");
    };

    // Writer A takes the lower transaction id and row id, and stays open.
    let mut conn_a = PgConnection::connect(&url).await.expect("connect A");
    let mut tx_a = conn_a.begin().await.expect("begin A");
    let (ea, ma) = event(1, 0);
    let cursor_a = b.append(&mut tx_a, &ea, &ma).await.expect("append A");
    // Writer B inserts after A and commits first.
    let mut conn_b = PgConnection::connect(&url).await.expect("connect B");
    let mut tx_b = conn_b.begin().await.expect("begin B");
    let (eb, mb) = event(2, 0);
    let cursor_b = b.append(&mut tx_b, &eb, &mb).await.expect("append B");
    tx_b.commit().await.expect("commit B");
    assert_eq!(
        cursor_a.position_cmp(&cursor_b),
        Some(std::cmp::Ordering::Less),
        "A's event sorts first although B committed first: an `id > last_seen` reader would skip it"
    );

    // B's event waits behind A, and that is observable.
    assert!(
        next_event(&mut tail, Duration::from_millis(300))
            .await
            .is_none(),
        "B's event was delivered while A, which sorts before it, is still open"
    );
    let held = b.held_back(FAMILY).await.expect("held_back");
    assert_eq!(held.events, 1, "{held:?}");
    assert!(held.oldest_open_age.is_some(), "{held:?}");

    tx_a.commit().await.expect("commit A");
    let first = next_event(&mut tail, LIVE_DEADLINE)
        .await
        .expect("A's event");
    let second = next_event(&mut tail, LIVE_DEADLINE)
        .await
        .expect("B's event");
    assert_eq!((first.0.as_str(), second.0.as_str()), ("1/0", "2/0"));
    assert_eq!((&first.1, &second.1), (&cursor_a, &cursor_b));
    assert!(
        next_event(&mut tail, Duration::from_millis(200))
            .await
            .is_none(),
        "each event is delivered once"
    );
    assert_eq!(b.held_back(FAMILY).await.unwrap().events, 0);

    // Resuming from any delivered position yields exactly the rest.
    for (from, expected) in [
        (start, vec!["1/0", "2/0"]),
        (cursor_a, vec!["2/0"]),
        (cursor_b, vec![]),
    ] {
        let mut sub = subscribe(&b, from).await;
        let (events, _) = until_caught_up(&mut sub, "the rest").await;
        let ids: Vec<String> = events.iter().map(|(_, m)| id_of(m)).collect();
        assert_eq!(ids, expected);
    }
}

#[cfg_attr(
    ff_external_postgres,
    ignore = "needs a PostgreSQL server of its own; FF_TEST_POSTGRES_URL is set"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tail_subscribed_while_a_writer_is_open_still_receives_its_events() {
    let Some(server) =
        own_server("a_tail_subscribed_while_a_writer_is_open_still_receives_its_events").await
    else {
        return;
    };
    let url = server.url();
    let b = backend(&url).await;
    let mut conn_a = PgConnection::connect(&url).await.expect("connect A");
    let mut tx_a = conn_a.begin().await.expect("begin A");
    let (ea, ma) = event(1, 0);
    b.append(&mut tx_a, &ea, &ma).await.expect("append A");
    let (eb, mb) = event(2, 0);
    b.publish(eb, mb).await.expect("publish B");

    // The newest visible event is B's; a tail resolved there would skip A.
    let mut tail = subscribe(&b, StreamCursor::empty()).await;
    let item = next_item(&mut tail, ITEM_DEADLINE, "CaughtUp").await;
    assert!(matches!(item, DeliveryItem::CaughtUp { .. }), "{item:?}");
    tx_a.commit().await.expect("commit A");
    let first = next_event(&mut tail, LIVE_DEADLINE)
        .await
        .expect("A's event");
    assert_eq!(
        first.0, "1/0",
        "the overlapping transaction's event is delivered"
    );
    // B committed before the subscribe but sorts after A: included, as
    // the contract allows (more, never fewer).
    let second = next_event(&mut tail, LIVE_DEADLINE)
        .await
        .expect("B's event");
    assert_eq!(second.0, "2/0");
}

/// A small deterministic generator (xorshift*), seeded per run and printed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn seed() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32) ^ NEXT.fetch_add(1, Ordering::Relaxed)
}

/// One writer: transactions of 1–3 events, held open for a random 0–4 ms,
/// about one in ten rolled back. Returns the ids of committed events.
async fn writer(b: PostgresBackend, url: String, w: usize, txs: usize, seed: u64) -> Vec<String> {
    let mut rng = Rng::new(seed);
    let mut conn = PgConnection::connect(&url).await.expect("writer connect");
    let mut committed = Vec::new();
    let mut seq = 0;
    for _ in 0..txs {
        let mut tx = conn.begin().await.expect("begin");
        let mut ids = Vec::new();
        for _ in 0..=rng.below(3) {
            let (e, m) = event(w, seq);
            seq += 1;
            ids.push(id_of(&m));
            b.append(&mut tx, &e, &m).await.expect("append");
        }
        // Work inside the transaction: lets other writers commit meanwhile.
        tokio::time::sleep(Duration::from_micros(rng.below(4000))).await;
        if rng.below(10) == 0 {
            tx.rollback().await.expect("rollback");
        } else {
            tx.commit().await.expect("commit");
            committed.extend(ids);
        }
    }
    committed
}

/// One subscriber that drops its subscription at random points and
/// resumes from the last cursor it saw, until it has `expected` events or
/// `done` says the writers finished and nothing more arrives.
async fn resuming_reader(
    b: PostgresBackend,
    seed: u64,
    done: tokio::sync::watch::Receiver<Option<usize>>,
) -> (Vec<(String, StreamCursor)>, usize) {
    let mut rng = Rng::new(seed);
    let mut got: Vec<(String, StreamCursor)> = Vec::new();
    let mut from = StreamCursor::beginning();
    let mut resumes = 0;
    loop {
        let mut sub = subscribe(&b, from.clone()).await;
        let mut budget = 5 + rng.below(60);
        loop {
            if let Some(total) = *done.borrow() {
                if got.len() >= total {
                    return (got, resumes);
                }
            }
            // Wait for the next item, re-checking `done` meanwhile: once the
            // writers are finished, a reader that has everything stops.
            let deadline = Instant::now() + ITEM_DEADLINE;
            let item = loop {
                match sub.next_raw(Duration::from_millis(100)).await {
                    Some(item) => break item.expect("stream ended").expect("stream error"),
                    None => {
                        if let Some(total) = *done.borrow() {
                            if got.len() >= total {
                                return (got, resumes);
                            }
                        }
                        assert!(
                            Instant::now() < deadline,
                            "reader stalled with {} events (writers done: {:?})",
                            got.len(),
                            *done.borrow()
                        );
                    }
                }
            };
            match item {
                DeliveryItem::Event { event, meta } => {
                    from = event.cursor().clone();
                    got.push((id_of(&meta), from.clone()));
                    budget -= 1;
                    if budget == 0 {
                        break;
                    }
                }
                DeliveryItem::CaughtUp { cursor } | DeliveryItem::Checkpoint { cursor } => {
                    from = cursor;
                    if done.borrow().is_none() && rng.below(4) == 0 {
                        break;
                    }
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        drop(sub);
        resumes += 1;
    }
}

#[cfg_attr(
    ff_external_postgres,
    ignore = "needs a PostgreSQL server of its own; FF_TEST_POSTGRES_URL is set"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_with_rollbacks_deliver_every_commit_once_in_one_order() {
    let Some(server) =
        own_server("concurrent_writers_with_rollbacks_deliver_every_commit_once_in_one_order")
            .await
    else {
        return;
    };
    let url = server.url();
    let b = backend(&url).await;
    let seed = seed();
    eprintln!("randomized gap test seed: {seed}");
    let (done_tx, done_rx) = tokio::sync::watch::channel(None);
    let readers: Vec<_> = (0..3)
        .map(|r| {
            tokio::spawn(resuming_reader(
                b.clone(),
                seed ^ (r + 100),
                done_rx.clone(),
            ))
        })
        .collect();
    let writers: Vec<_> = (0..8)
        .map(|w| tokio::spawn(writer(b.clone(), url.clone(), w, 40, seed ^ w as u64)))
        .collect();
    let mut committed = BTreeSet::new();
    for w in writers {
        for id in w.await.expect("writer") {
            assert!(committed.insert(id), "ids are unique");
        }
    }
    done_tx.send(Some(committed.len())).expect("readers alive");
    let mut orders = Vec::new();
    for r in readers {
        let (got, resumes) = r.await.expect("reader");
        assert!(resumes > 0, "each reader dropped and resumed at least once");
        let ids: Vec<&String> = got.iter().map(|(id, _)| id).collect();
        let mut seen = BTreeSet::new();
        for id in &ids {
            assert!(seen.insert(*id), "{id} delivered twice (seed {seed})");
            assert!(
                committed.contains(*id),
                "{id} was delivered but never committed (rolled back?) (seed {seed})"
            );
        }
        assert_eq!(
            seen.len(),
            committed.len(),
            "a reader missed committed events (seed {seed})"
        );
        for pair in got.windows(2) {
            assert_eq!(
                pair[0].1.position_cmp(&pair[1].1),
                Some(std::cmp::Ordering::Less),
                "cursors must increase (seed {seed})"
            );
        }
        orders.push(ids.into_iter().cloned().collect::<Vec<_>>());
    }
    assert!(
        orders.windows(2).all(|p| p[0] == p[1]),
        "every reader sees one and the same order (seed {seed})"
    );
    // Within a writer, commit order is event order.
    let mut last_seq: HashMap<String, usize> = HashMap::new();
    for id in &orders[0] {
        let (w, s) = id.split_once('/').unwrap();
        let s: usize = s.parse().unwrap();
        if let Some(prev) = last_seq.insert(w.to_owned(), s) {
            assert!(prev < s, "writer {w}'s events out of order (seed {seed})");
        }
    }
    let per_writer: BTreeMap<&str, usize> = orders[0].iter().fold(BTreeMap::new(), |mut m, id| {
        *m.entry(id.split_once('/').unwrap().0).or_default() += 1;
        m
    });
    eprintln!(
        "delivered {} committed events from {} writers",
        orders[0].len(),
        per_writer.len()
    );
}
