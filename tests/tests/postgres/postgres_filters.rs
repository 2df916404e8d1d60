//! Filter parity on Postgres: a filtered subscription delivers exactly
//! what an unfiltered one does after the shared Rust filter
//! (`SubscriptionFilter::matches`) — over random plain-SQL rows that
//! include non-canonical spellings (upper-case UUIDs, unknown kinds) and
//! rows the decoder rejects (non-string tag values, malformed ids, worker
//! ids, versions), which are `Corrupt` whether or not a filter is set.

use ff_backend_postgres::sqlx::{self, PgPool};
use ff_backend_postgres::PostgresBackend;
use ff_core::backend::{DeliveryItem, StreamBackend};
use ff_core::filter::SubscriptionFilter;
use ff_core::stream_events::{EventKind, Family};
use ff_core::stream_subscribe::StreamCursor;
use ff_core::testkit::support::{next_item, Sub, ITEM_DEADLINE};
use ff_core::types::ExecutionId;
use ff_tests::harness::postgres::{admin_pool, config, serial, server_url};
use ff_tests::support::unique_name;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};

const ROWS_PER_FAMILY: usize = 150;
const FILTERS_PER_FAMILY: usize = 40;

/// What a delivery stream yielded for one row.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Seen {
    Event(StreamCursor),
    Corrupt(StreamCursor),
}

/// The random values rows and filters draw from.
struct Pools {
    ids: Vec<ExecutionId>,
}

impl Pools {
    fn new() -> Self {
        Self {
            ids: (0..3).map(|p| ExecutionId::new(p * 7)).collect(),
        }
    }

    fn execution_id(&self, rng: &mut StdRng) -> String {
        let id = self.ids.choose(rng).expect("ids").to_string();
        let (partition, uuid) = id.split_at(id.find("}:").expect("{fp:N}:<uuid>") + 2);
        let upper = format!("{partition}{}", uuid.to_uppercase());
        match rng.random_range(0..10) {
            0..=4 => id,
            5 | 6 => upper,
            7 => id.replacen("{fp:", "{fp:0", 1),
            8 => id.replacen("{fp:", "{FP:", 1),
            _ => [
                "not-an-id",
                "{fp:70000}:0b6f0c1e-4f3b-4c1e-9a57-2f7d9c1e0a11",
            ]
            .choose(rng)
            .expect("bad ids")
            .to_string(),
        }
    }
}

fn pick<'a>(rng: &mut StdRng, options: &[&'a str]) -> &'a str {
    options.choose(rng).expect("options")
}

fn maybe(rng: &mut StdRng, options: &[&str]) -> Option<String> {
    if rng.random_bool(0.3) {
        None
    } else {
        Some(pick(rng, options).to_owned())
    }
}

/// Insert one random row of `family` with plain SQL.
async fn insert_random(
    admin: &PgPool,
    table: &str,
    family: Family,
    pools: &Pools,
    rng: &mut StdRng,
) {
    let v = *[1i16, 1, 1, 1, 1, 1, 0, 2].choose(rng).expect("versions");
    let execution_id = pools.execution_id(rng);
    let namespace = maybe(rng, &["a", "b", ""]);
    let tags = pick(
        rng,
        &[
            "{}",
            r#"{"k": "v"}"#,
            r#"{"k": "v"}"#,
            r#"{"k": "w"}"#,
            r#"{"k": "v", "x": "y"}"#,
            r#"{"k": 5}"#,
            r#"{"k": null}"#,
            r#"{"x": true}"#,
            "[]",
            r#""v""#,
        ],
    );
    let workers = ["w1", "w1", "", "bad\u{1}id", "\u{85}next-line"];
    let long_worker = "w".repeat(300);
    let worker = |rng: &mut StdRng| {
        if rng.random_bool(0.05) {
            Some(long_worker.clone())
        } else {
            maybe(rng, &workers)
        }
    };
    let common = "v, execution_id, namespace, tags";
    let sql = match family {
        Family::LeaseHistory => format!(
            "INSERT INTO {table} ({common}, type, lease_id, worker_instance_id, prev_owner, \
             new_owner, revoked_by) \
             VALUES ($1, $2, $3, $4::jsonb, $5, gen_random_uuid(), $6, $7, $8, $9)"
        ),
        Family::Completion => {
            format!("INSERT INTO {table} ({common}, outcome) VALUES ($1, $2, $3, $4::jsonb, $5)")
        }
        Family::SignalDelivery => format!(
            "INSERT INTO {table} ({common}, signal_id, waitpoint_id, source_identity, effect) \
             VALUES ($1, $2, $3, $4::jsonb, gen_random_uuid(), NULL, $5, $6)"
        ),
        _ => format!(
            "INSERT INTO {table} ({common}, type, tag) VALUES ($1, $2, $3, $4::jsonb, $5, $6)"
        ),
    };
    let q = sqlx::query(&sql)
        .bind(v)
        .bind(execution_id)
        .bind(namespace)
        .bind(tags);
    let q = match family {
        Family::LeaseHistory => q
            .bind(pick(
                rng,
                &[
                    "acquired",
                    "renewed",
                    "expired",
                    "reclaimed",
                    "revoked",
                    "ACQUIRED",
                    "bogus",
                ],
            ))
            .bind(worker(rng))
            .bind(worker(rng))
            .bind(worker(rng))
            .bind(maybe(rng, &["operator"])),
        Family::Completion => q.bind(pick(
            rng,
            &[
                "success",
                "failure",
                "cancelled",
                "timed_out",
                "SUCCESS",
                "",
            ],
        )),
        Family::SignalDelivery => q.bind(maybe(rng, &["svc"])).bind(pick(
            rng,
            &["satisfied", "buffered", "deduped", "rerouted", "Buffered"],
        )),
        _ => q
            .bind(pick(rng, &["attached", "cleared", "detached"]))
            .bind(pick(rng, &["hot", "cold"])),
    };
    q.execute(admin).await.expect("insert a random row");
}

fn random_filter(family: Family, pools: &Pools, rng: &mut StdRng) -> SubscriptionFilter {
    let mut filter = SubscriptionFilter::new();
    if rng.random_bool(0.4) {
        filter = filter.with_namespace(pick(rng, &["a", "b", ""]));
    }
    if rng.random_bool(0.4) {
        let (k, v) = *[("k", "v"), ("k", "w"), ("x", "y")]
            .choose(rng)
            .expect("tags");
        filter = filter.with_tag(k, v);
    }
    if rng.random_bool(0.4) {
        filter = filter.with_execution_id(*pools.ids.choose(rng).expect("ids"));
    }
    if rng.random_bool(0.4) {
        let all: Vec<EventKind> = family.kinds();
        let chosen: Vec<EventKind> = all
            .iter()
            .copied()
            .filter(|_| rng.random_bool(0.5))
            .collect();
        filter = filter.with_kinds(if chosen.is_empty() {
            vec![all[0]]
        } else {
            chosen
        });
    }
    filter
}

/// Everything `filter` yields from the beginning until `CaughtUp`. With
/// `by_rust`, the subscription is unfiltered and the Rust filter is
/// applied to its events instead.
async fn delivered(
    backend: &PostgresBackend,
    family: Family,
    filter: &SubscriptionFilter,
    by_rust: bool,
) -> Vec<Seen> {
    let server_side = if by_rust {
        SubscriptionFilter::default()
    } else {
        filter.clone()
    };
    let mut sub = Sub::new(
        backend
            .subscribe_family(family, StreamCursor::beginning(), &server_side)
            .await
            .expect("subscribe"),
    );
    let mut out = Vec::new();
    loop {
        match next_item(&mut sub, ITEM_DEADLINE, "rows until CaughtUp").await {
            DeliveryItem::Event { event, meta } if !by_rust || filter.matches(&event, &meta) => {
                out.push(Seen::Event(event.cursor().clone()))
            }
            DeliveryItem::Corrupt { cursor, .. } => out.push(Seen::Corrupt(cursor)),
            DeliveryItem::CaughtUp { .. } => return out,
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_filters_deliver_exactly_what_the_rust_filter_admits_and_every_corrupt_row() {
    parity(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_filter_indexes_sql_filters_still_deliver_exactly_what_the_rust_filter_admits() {
    parity(true).await;
}

async fn parity(indexed: bool) {
    let _serial = serial().await;
    let url = server_url().await;
    let backend = PostgresBackend::connect(&url, config(&unique_name("parity")))
        .await
        .expect("connect");
    if indexed {
        backend
            .create_filter_indexes()
            .await
            .expect("create the filter indexes");
    }
    let admin = admin_pool(&url).await;
    let seed: u64 = rand::random();
    eprintln!("filter parity seed: {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let pools = Pools::new();
    for family in Family::ALL {
        let table = backend.table_name(*family);
        for _ in 0..ROWS_PER_FAMILY {
            insert_random(&admin, &table, *family, &pools, &mut rng).await;
        }
        let all = delivered(&backend, *family, &SubscriptionFilter::default(), false).await;
        assert_eq!(
            all.len(),
            ROWS_PER_FAMILY,
            "{family}: every row, event or corrupt"
        );
        assert!(
            all.iter().any(|s| matches!(s, Seen::Corrupt(_)))
                && all.iter().any(|s| matches!(s, Seen::Event(_))),
            "{family}: the random rows include good and corrupt ones (seed {seed})"
        );
        for _ in 0..FILTERS_PER_FAMILY {
            let filter = random_filter(*family, &pools, &mut rng);
            let by_sql = delivered(&backend, *family, &filter, false).await;
            let by_rust = delivered(&backend, *family, &filter, true).await;
            assert_eq!(
                by_sql, by_rust,
                "{family}, filter {filter:?}: SQL and Rust filtering disagree (seed {seed})"
            );
        }
    }
}
