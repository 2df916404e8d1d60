//! A randomized fault-injection checker, in the spirit of Jepsen.
//!
//! One run = a seed and a world (a backend on real servers). The seed draws
//! a [`plan`]: producers publishing over every path the world has (single,
//! batch, in a transaction, raw `XADD` / plain SQL, a backend dropped right
//! after its publish), consumers over every delivery path (typed, the
//! delivery stream with filters, a partition subset, a cursor-store resume,
//! SSE through the gateway with `Last-Event-ID` reconnects), consumer
//! operations (resume, stall) and faults ([`world::Fault`]: kill -9 and
//! restart, a black-holed server, a lossy failover to a replica whose clock
//! is behind, a promoted lagging Postgres copy, an old open transaction,
//! pruning under writers at every isolation level, a partition count that
//! differs between publisher and subscriber, a gateway restart), and, from
//! a second nemesis on a seed stream of its own, routine operations (a
//! planned Valkey switchover; planned and forced failover and slot
//! migration on a Valkey Cluster).
//!
//! Everything lands in one [`history::History`]; after the run quiets down,
//! the [`truth`] (what the stores hold, read directly) and the [`oracle`]
//! judge it: per partition, every consumer received exactly the committed
//! sequence after its start, or a `CursorExpired` came before any gap; no
//! acknowledged event was lost; caught-up consumers were woken within
//! [`oracle::WAKE_UP_BOUND`] outside faults; no subscription ended on an
//! error it should have reconnected through; no publish failed outside a
//! fault. A failure prints its seed, the
//! faults, and the shrunk history around each violation; the same seed
//! draws the same schedule again.

pub mod consumer;
pub mod gateway;
pub mod history;
pub mod oracle;
pub mod plan;
pub mod report;
pub mod sse;
pub mod truth;
pub mod world;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::sync::watch;

use ff_core::types::ExecutionId;
use history::{DeliveryPath, Published, Recorder};
use oracle::Violation;
use plan::{Draft, Plan};
use truth::Truth;
use world::{Fault, FaultCtx, World, WorldKind};

/// What the nemesis acts on.
#[derive(Clone)]
struct Nemesis {
    world: Arc<dyn World>,
    rec: Recorder,
    gateway: Option<Arc<gateway::CheckerGateway>>,
    executions: Vec<ExecutionId>,
    next_ck: Arc<AtomicU64>,
    handed: Arc<watch::Sender<consumer::Handed>>,
    consumers: Vec<tokio::sync::mpsc::UnboundedSender<plan::ConsumerOp>>,
}

impl Nemesis {
    /// Inject `schedule` in order, each fault after its pause; the task
    /// answers what could not be injected.
    fn spawn(
        self,
        schedule: Vec<(Duration, Fault)>,
        mut rng: StdRng,
    ) -> tokio::task::JoinHandle<Vec<String>> {
        tokio::spawn(async move {
            let mut failures = Vec::new();
            for (delay, fault) in &schedule {
                tokio::time::sleep(*delay).await;
                if let Err(e) = self.inject(fault, &mut rng).await {
                    failures.push(format!("{fault:?}: {e}"));
                }
            }
            failures
        })
    }

    async fn inject(&self, fault: &Fault, rng: &mut StdRng) -> Result<(), String> {
        match fault {
            Fault::GatewayRestart => {
                let Some(g) = &self.gateway else {
                    return Ok(());
                };
                let window = self.rec.fault("gateway restart", false, None);
                let r = match self.world.reader().await {
                    Ok(b) => g.restart(b).await,
                    Err(e) => Err(e.to_string()),
                };
                self.rec.heal(window);
                r
            }
            other => {
                let ctx = FaultCtx {
                    rec: &self.rec,
                    next_ck: &self.next_ck,
                    executions: &self.executions,
                    handed: &self.handed,
                    consumers: &self.consumers,
                };
                self.world.inject(other, rng, &ctx).await
            }
        }
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// The seed.
    pub seed: u64,
    /// The world.
    pub world: WorldKind,
    /// About how many publish calls.
    pub steps: usize,
}

/// A passing run's figures.
#[derive(Clone, Debug, Default)]
pub struct RunSummary {
    /// Events published (acknowledged).
    pub published: usize,
    /// Events delivered, over all consumers.
    pub delivered: usize,
    /// Faults injected.
    pub faults: usize,
    /// Consumers.
    pub consumers: usize,
    /// How long it took.
    pub elapsed: Duration,
}

/// A failing run: its seed, what broke, and the report to print.
#[derive(Debug)]
pub struct RunFailure {
    /// The seed (replay with it).
    pub seed: u64,
    /// The world.
    pub world: WorldKind,
    /// What broke.
    pub violations: Vec<Violation>,
    /// The report: faults, violations, the shrunk history.
    pub report: String,
}

/// How long after the last publish consumers may take to catch up.
const QUIET_DEADLINE: Duration = Duration::from_secs(12);

/// Record a publish's outcome.
pub(crate) fn record_publish(
    rec: &Recorder,
    world: &dyn World,
    draft: &Draft,
    path: history::PublishPath,
    started: Duration,
    result: world::PublishResult,
) {
    let partition = draft.event.execution_id().partition() % world.partitions().max(1);
    let family = draft.event.family();
    let now = rec.now();
    let mut h = rec.lock();
    let (acked, cursor, pos, error) = match result {
        Ok((cursor, pos)) => {
            let pos = pos.or_else(|| cursor.as_ref().and_then(|c| world.position(family, c)));
            (Some(now), cursor, pos, None)
        }
        Err(e) => (None, None, None, Some(e)),
    };
    h.published.insert(
        draft.ck,
        Published {
            ck: draft.ck,
            family,
            partition,
            execution: *draft.event.execution_id(),
            namespace: draft.meta.namespace.clone(),
            path,
            started,
            acked,
            finished: now,
            cursor,
            pos,
            error,
        },
    );
}

/// Run one seed.
pub async fn run(config: &RunConfig) -> Result<RunSummary, RunFailure> {
    let began = Instant::now();
    let fail = |what: String| RunFailure {
        seed: config.seed,
        world: config.world,
        violations: vec![Violation {
            consumer: None,
            events: Vec::new(),
            what: what.clone(),
        }],
        report: format!(
            "checker seed {} world {}: {what}\n",
            config.seed,
            config.world.as_str()
        ),
    };
    let mut rng = StdRng::seed_from_u64(config.seed);
    let world = world::start(config.world, &mut rng)
        .await
        .map_err(|e| fail(format!("the world did not start: {e}")))?;
    let plan = Plan::draw(
        &mut rng,
        &mut StdRng::seed_from_u64(config.seed ^ 0x2545_f491_4f6c_dd1d),
        world.as_ref(),
        config.steps,
    );
    let rec = Recorder::new();
    rec.note(format!(
        "world {} with {} partition(s); {} consumers; {} events planned",
        config.world.as_str(),
        world.partitions(),
        plan.consumers.len(),
        plan.events()
    ));

    let needs_gateway = plan.consumers.iter().any(|c| c.path == DeliveryPath::Sse)
        || plan.faults.iter().any(|(_, f)| *f == Fault::GatewayRestart);
    let gateway = if needs_gateway {
        let backend = world
            .reader()
            .await
            .map_err(|e| fail(format!("no backend for the gateway: {e}")))?;
        Some(Arc::new(
            gateway::CheckerGateway::start(backend)
                .await
                .map_err(|e| fail(format!("the gateway did not start: {e}")))?,
        ))
    } else {
        None
    };
    let (cursors_tx, cursors_rx) = watch::channel(consumer::Handed::new());
    let sources = Arc::new(consumer::Sources {
        world: world.clone(),
        gateway: gateway.as_ref().map(|g| g.addr()),
        publish_cursors: cursors_rx,
    });
    let consumers: Vec<consumer::ConsumerHandle> = plan
        .consumers
        .iter()
        .cloned()
        .map(|spec| consumer::spawn(spec, sources.clone(), rec.clone()))
        .collect();
    // Producers start once every tail consumer is subscribed.
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let ready = rec.lock().consumers.iter().all(|(spec, segs)| {
            matches!(spec.first, history::FirstStart::PublishCursor(_))
                || segs.iter().any(|s| s.returned.is_some())
        });
        if ready {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let cursors_tx = Arc::new(cursors_tx);
    let producers: Vec<_> = plan
        .producers
        .iter()
        .cloned()
        .map(|calls| {
            let (world, rec, cursors) = (world.clone(), rec.clone(), cursors_tx.clone());
            tokio::spawn(async move {
                for call in calls {
                    tokio::time::sleep(call.delay).await;
                    let started = rec.now();
                    let events = call
                        .drafts
                        .iter()
                        .map(|d| (d.event.clone(), d.meta.clone()))
                        .collect();
                    let results = world.publish(call.path, events).await;
                    for (draft, result) in call.drafts.iter().zip(results) {
                        if let Ok((Some(cursor), _)) = &result {
                            cursors.send_modify(|m| {
                                m.insert(draft.ck, (draft.ck, cursor.clone()));
                            });
                        }
                        record_publish(&rec, world.as_ref(), draft, call.path, started, result);
                    }
                }
            })
        })
        .collect();
    let next_ck = Arc::new(AtomicU64::new(1_000_000));
    let away: Vec<_> = consumers.iter().map(|c| c.ops_sender()).collect();
    let nemesis = Nemesis {
        world: world.clone(),
        rec: rec.clone(),
        gateway: gateway.clone(),
        executions: plan.executions.clone(),
        next_ck: next_ck.clone(),
        handed: cursors_tx.clone(),
        consumers: away,
    };
    let faults = nemesis.clone().spawn(
        plan.faults.clone(),
        StdRng::seed_from_u64(config.seed ^ 0x9e37_79b9_7f4a_7c15),
    );
    let operations = nemesis.spawn(
        plan.operations.clone(),
        StdRng::seed_from_u64(config.seed ^ 0x5851_f42d_4c95_7f2d),
    );
    let consumer_ops = {
        let plan = plan.clone();
        let handles: Vec<_> = consumers.iter().map(|c| c.ops_sender()).collect();
        tokio::spawn(async move {
            for (delay, target, op) in &plan.consumer_ops {
                tokio::time::sleep(*delay).await;
                if !handles.is_empty() {
                    let _ = handles[target % handles.len()].send(*op);
                }
            }
        })
    };
    for p in producers {
        let _ = p.await;
    }
    let mut nemesis_failures = faults.await.unwrap_or_default();
    nemesis_failures.extend(operations.await.unwrap_or_default());
    let _ = consumer_ops.await;
    for f in &nemesis_failures {
        rec.note(format!("nemesis could not act: {f}"));
    }

    // Wait for a quiet end: every consumer caught up, or the deadline.
    let deadline = Instant::now() + QUIET_DEADLINE;
    let mut verdict;
    loop {
        let state = match world.state(&rec).await {
            Ok(s) => s,
            Err(e) => {
                verdict = vec![Violation {
                    consumer: None,
                    events: Vec::new(),
                    what: format!("reading the store failed: {e}"),
                }];
                if Instant::now() >= deadline {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
                continue;
            }
        };
        verdict = {
            let history = rec.lock();
            let truth = Truth::build(&state, &history);
            oracle::check(&history, &truth, world.exact(), true)
        };
        if verdict.is_empty() || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for c in consumers {
        c.stop().await;
    }
    if let Some(g) = &gateway {
        g.stop().await;
    }
    let state = if verdict.is_empty() {
        None
    } else {
        world.state(&rec).await.ok()
    };
    let history = rec.lock();
    if std::env::var_os("FF_CHECKER_VERBOSE").is_some() {
        for (at, what) in &history.log {
            eprintln!("  seed {} {:>8.3}s  {what}", config.seed, at.as_secs_f64());
        }
    }
    if !verdict.is_empty() {
        return Err(RunFailure {
            seed: config.seed,
            world: config.world,
            report: report::render(config, &history, state.as_ref(), &verdict),
            violations: verdict,
        });
    }
    Ok(RunSummary {
        published: history
            .published
            .values()
            .filter(|p| p.acked.is_some())
            .count(),
        delivered: history
            .consumers
            .iter()
            .flat_map(|(_, s)| s.iter())
            .map(|s| s.events.len())
            .sum(),
        faults: history
            .faults
            .iter()
            .filter(|f| f.consumer.is_none())
            .count(),
        consumers: history.consumers.len(),
        elapsed: began.elapsed(),
    })
}
