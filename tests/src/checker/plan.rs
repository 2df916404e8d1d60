//! A run's schedule, drawn once from its seed: the executions, the
//! consumers, what each producer publishes and when, the faults and the
//! consumer operations. The same seed draws the same schedule, so a
//! failing run replays from its seed.

use std::time::Duration;

use ff_core::stream_events::{CompletionOutcome, EventMeta, Family, NewEvent};
use ff_core::types::ExecutionId;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::Rng;

use super::consumer::HANDED_BY_FAULT;
use super::history::{Ck, ConsumerSpec, DeliveryPath, FilterSpec, FirstStart, PublishPath, CK_TAG};
use super::world::{Fault, World};

/// The families a run publishes into.
pub const FAMILIES: [Family; 2] = [Family::Completion, Family::InstanceTags];

/// The namespaces events are spread over.
pub const NAMESPACES: [&str; 2] = ["alpha", "beta"];

/// One event to publish.
#[derive(Clone, Debug)]
pub struct Draft {
    /// Its number.
    pub ck: Ck,
    /// The event.
    pub event: NewEvent,
    /// Its metadata (with the `ck` tag).
    pub meta: EventMeta,
}

/// One publish call.
#[derive(Clone, Debug)]
pub struct Produce {
    /// Pause before it.
    pub delay: Duration,
    /// How it publishes.
    pub path: PublishPath,
    /// What (several events for a batch or a transaction).
    pub drafts: Vec<Draft>,
}

/// Something done to one consumer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConsumerOp {
    /// Drop the subscription and resume from the consumer's own position.
    Resume,
    /// Stop reading for a while (an SSE client: the socket is not read).
    Stall(Duration),
    /// Disconnect, stay away for a while, then resume from the consumer's
    /// own position (a client that reconnects later).
    Away(Duration),
}

/// The whole schedule.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Executions events are spread over.
    pub executions: Vec<ExecutionId>,
    /// The consumers.
    pub consumers: Vec<ConsumerSpec>,
    /// Each producer's calls.
    pub producers: Vec<Vec<Produce>>,
    /// Faults, each after a pause.
    pub faults: Vec<(Duration, Fault)>,
    /// Operations (planned failover, slot migration…), each after a pause,
    /// injected by a second nemesis alongside the faults.
    pub operations: Vec<(Duration, Fault)>,
    /// Consumer operations, each after a pause.
    pub consumer_ops: Vec<(Duration, usize, ConsumerOp)>,
}

fn execution(rng: &mut StdRng, partition: u16) -> ExecutionId {
    let b: [u8; 16] = rng.random();
    let uuid = format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
        u16::from_be_bytes([b[4], b[5]]),
        u16::from_be_bytes([b[6], b[7]]) & 0x0fff,
        u16::from_be_bytes([b[8], b[9]]) & 0x0fff,
        u64::from_be_bytes([0, 0, b[10], b[11], b[12], b[13], b[14], b[15]]),
    );
    ExecutionId::parse(&format!("{{fp:{partition}}}:{uuid}")).expect("a well-formed execution id")
}

fn draft(rng: &mut StdRng, ck: Ck, executions: &[ExecutionId]) -> Draft {
    let execution = *executions.choose(rng).expect("executions");
    let family = *FAMILIES.choose(rng).expect("families");
    let event = match family {
        Family::Completion => NewEvent::completion(
            execution,
            [CompletionOutcome::Success, CompletionOutcome::Failure][rng.random_range(0..2)]
                .clone(),
        ),
        _ => NewEvent::tag_attached(execution, format!("t{}", rng.random_range(0..4))),
    };
    let mut meta = EventMeta::new().with_tag(CK_TAG, ck.to_string());
    if rng.random_bool(0.7) {
        meta = meta.with_namespace(*NAMESPACES.choose(rng).expect("namespaces"));
    }
    Draft { ck, event, meta }
}

impl Plan {
    /// Draw a schedule of about `steps` publish calls for `world`. The
    /// operations come from `ops_rng`, so a world that gains an operation
    /// keeps every seed's other draws.
    pub fn draw(rng: &mut StdRng, ops_rng: &mut StdRng, world: &dyn World, steps: usize) -> Plan {
        let partitions = world.partitions();
        let executions: Vec<ExecutionId> = (0..6)
            .map(|_| {
                let n = rng.random_range(0..16u16);
                execution(rng, n)
            })
            .collect();
        let paths = world.publish_paths();
        let mut ck = 0;
        let producers: Vec<Vec<Produce>> = (0..2)
            .map(|_| {
                (0..steps / 2)
                    .map(|_| {
                        let path = *paths.choose(rng).expect("publish paths");
                        let n = match path {
                            PublishPath::Batch | PublishPath::InTransaction => {
                                rng.random_range(2..5)
                            }
                            _ => 1,
                        };
                        let drafts = (0..n)
                            .map(|_| {
                                ck += 1;
                                draft(rng, ck, &executions)
                            })
                            .collect();
                        Produce {
                            delay: Duration::from_millis(rng.random_range(0..150)),
                            path,
                            drafts,
                        }
                    })
                    .collect::<Vec<Produce>>()
            })
            .collect();
        let mut producers = producers;
        // A backend made for one last publish and dropped at once: nothing
        // published after it wakes subscribers in its stead.
        if paths.contains(&PublishPath::ShortLived) && rng.random_bool(0.5) {
            for calls in &mut producers {
                if let Some(last) = calls.last_mut() {
                    last.path = PublishPath::ShortLived;
                    last.drafts.truncate(1);
                }
            }
        }
        let delivery = world.delivery_paths();
        let consumers = (0..rng.random_range(3..6))
            .map(|id| {
                let path = *delivery.choose(rng).expect("delivery paths");
                let family = *FAMILIES.choose(rng).expect("families");
                let filter = match rng.random_range(0..4) {
                    0 => FilterSpec::Namespace(NAMESPACES[rng.random_range(0..2)].into()),
                    1 => FilterSpec::Execution(*executions.choose(rng).expect("executions")),
                    _ => FilterSpec::All,
                };
                let partitions = (path == DeliveryPath::Partitions).then(|| {
                    let mut some: Vec<u16> =
                        (0..partitions).filter(|_| rng.random_bool(0.5)).collect();
                    if some.is_empty() {
                        some.push(0);
                    }
                    some
                });
                let filter = match (&partitions, filter) {
                    // An execution filter must name a followed partition.
                    (Some(_), FilterSpec::Execution(_)) => FilterSpec::All,
                    (_, f) => f,
                };
                let first = match rng.random_range(0..3) {
                    0 => FirstStart::Beginning,
                    _ => FirstStart::Tail,
                };
                ConsumerSpec {
                    id,
                    family,
                    path,
                    filter,
                    partitions,
                    first,
                }
            })
            .collect::<Vec<ConsumerSpec>>();
        let mut consumers = consumers;
        // A client that starts from a publish's own cursor (as after a
        // `POST`): it must get what a subscription from that cursor gets.
        let available = world.faults();
        let calls: Vec<&Draft> = producers
            .iter()
            .flatten()
            .flat_map(|c| c.drafts.iter())
            .collect();
        if rng.random_bool(0.6) {
            if let Some(origin) = calls.choose(rng) {
                // A fault that holds an older transaction open hands out
                // the cursor of a publish made meanwhile.
                let (ck, family) = if available
                    .iter()
                    .any(|f| matches!(f, Fault::OldTransaction(_)))
                    && rng.random_bool(0.7)
                {
                    (HANDED_BY_FAULT, Family::Completion)
                } else {
                    (origin.ck, origin.event.family())
                };
                let path = if delivery.contains(&DeliveryPath::Sse) && rng.random_bool(0.5) {
                    DeliveryPath::Sse
                } else {
                    **delivery
                        .iter()
                        .filter(|p| **p != DeliveryPath::Partitions)
                        .collect::<Vec<_>>()
                        .choose(rng)
                        .expect("delivery paths")
                };
                consumers.push(ConsumerSpec {
                    id: consumers.len(),
                    family,
                    path,
                    filter: FilterSpec::All,
                    partitions: None,
                    first: FirstStart::PublishCursor(ck),
                });
            }
        }
        let faults = (0..rng.random_range(1..4))
            .filter_map(|_| {
                let fault = available.choose(rng)?.clone();
                Some((Duration::from_millis(rng.random_range(100..700)), fault))
            })
            .collect();
        let consumer_ops = (0..rng.random_range(2..6))
            .map(|_| {
                let op = match rng.random_range(0..10) {
                    0..5 => ConsumerOp::Resume,
                    5..7 => ConsumerOp::Stall(Duration::from_millis(rng.random_range(100..1500))),
                    _ => ConsumerOp::Away(Duration::from_millis(rng.random_range(300..3000))),
                };
                (
                    Duration::from_millis(rng.random_range(100..800)),
                    rng.random_range(0..16usize),
                    op,
                )
            })
            .collect();
        let kinds = world.operations();
        let operations = if kinds.is_empty() {
            Vec::new()
        } else {
            (0..ops_rng.random_range(0..3))
                .filter_map(|_| {
                    let op = kinds.choose(ops_rng)?.clone();
                    Some((Duration::from_millis(ops_rng.random_range(200..1500)), op))
                })
                .collect()
        };
        Plan {
            executions,
            consumers,
            producers,
            faults,
            operations,
            consumer_ops,
        }
    }

    /// The number of events the producers publish.
    pub fn events(&self) -> usize {
        self.producers
            .iter()
            .flatten()
            .map(|p| p.drafts.len())
            .sum()
    }
}
