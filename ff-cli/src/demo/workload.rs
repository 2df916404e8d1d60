//! The demo's workload: executions that acquire leases, renew them,
//! sometimes lose and reclaim them, receive signals, get tagged, and
//! complete — every event tagged with its family sequence for checking.

use ff_core::stream_events::{CompletionOutcome, EventMeta, NewEvent, SignalDeliveryEffect};
use ff_core::types::{ExecutionId, LeaseId, SignalId, WaitpointId, WorkerInstanceId};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Tag carrying an event's position in its family's planned sequence.
pub const SEQ_TAG: &str = "demo-seq";
/// Tag carrying the run id, so consumers ignore other runs' events.
pub const RUN_TAG: &str = "demo-run";
/// Namespaces the demo's tenants publish under.
pub const NAMESPACES: [&str; 3] = ["billing", "search", "ingest"];

/// The planned events, in publish order, and how many of each family.
pub struct Workload {
    /// Drafts with metadata, in publish order.
    pub events: Vec<(NewEvent, EventMeta)>,
    /// Events per family, indexed by [`Family::index`](ff_core::stream_events::Family::index).
    pub per_family: [u64; 4],
    /// Completion failures in the `billing` namespace (the filtered consumer's expectation).
    pub billing_failures: u64,
}

impl Workload {
    /// Each family's events in publish order, which is sequence order.
    pub fn by_family(&self) -> [std::sync::Arc<Vec<(NewEvent, EventMeta)>>; 4] {
        let mut out: [Vec<(NewEvent, EventMeta)>; 4] = Default::default();
        for (draft, meta) in &self.events {
            out[draft.family().index()].push((draft.clone(), meta.clone()));
        }
        out.map(std::sync::Arc::new)
    }
}

/// Generate at least `target` events for run `run`, deterministically from `seed`.
pub fn generate(target: usize, run: &str, seed: u64) -> Workload {
    let mut rng = StdRng::seed_from_u64(seed);
    let workers: Vec<WorkerInstanceId> = (0..8)
        .map(|i| WorkerInstanceId::parse(&format!("worker-{i}")).expect("valid id"))
        .collect();
    let mut w = Workload {
        events: Vec::with_capacity(target + 16),
        per_family: [0; 4],
        billing_failures: 0,
    };
    while w.events.len() < target {
        let exec = ExecutionId::new(rng.random_range(0..16));
        let ns = NAMESPACES[rng.random_range(0..NAMESPACES.len())];
        let push = |w: &mut Workload, draft: NewEvent| {
            let f = draft.family();
            let seq = w.per_family[f.index()];
            w.per_family[f.index()] += 1;
            let meta = EventMeta::new()
                .with_namespace(ns)
                .with_tag(RUN_TAG, run)
                .with_tag(SEQ_TAG, seq.to_string());
            w.events.push((draft, meta));
        };
        let worker = workers[rng.random_range(0..workers.len())].clone();
        let lease = LeaseId::new();
        push(
            &mut w,
            NewEvent::lease_acquired(exec, Some(lease), Some(worker.clone())),
        );
        let tagged = rng.random_bool(0.5);
        if tagged {
            push(&mut w, NewEvent::tag_attached(exec, "priority:high"));
        }
        for _ in 0..rng.random_range(0..3) {
            push(
                &mut w,
                NewEvent::lease_renewed(exec, Some(lease), Some(worker.clone())),
            );
        }
        let waitpoint = WaitpointId::new();
        for _ in 0..rng.random_range(0..3) {
            let effect = match rng.random_range(0..10) {
                0..=5 => SignalDeliveryEffect::Satisfied,
                6..=8 => SignalDeliveryEffect::Buffered,
                _ => SignalDeliveryEffect::Deduped,
            };
            let source = Some(format!("svc-{}", rng.random_range(0..4)));
            push(
                &mut w,
                NewEvent::signal_delivery(exec, SignalId::new(), Some(waitpoint), source, effect),
            );
        }
        if rng.random_bool(0.1) {
            push(
                &mut w,
                NewEvent::lease_expired(exec, Some(lease), Some(worker.clone())),
            );
            let new_owner = workers[rng.random_range(0..workers.len())].clone();
            push(
                &mut w,
                NewEvent::lease_reclaimed(exec, Some(LeaseId::new()), Some(new_owner)),
            );
        }
        if rng.random_bool(0.03) {
            push(
                &mut w,
                NewEvent::lease_revoked(exec, Some(lease), "operator-console"),
            );
        }
        let outcome = match rng.random_range(0..100) {
            0..=79 => CompletionOutcome::Success,
            80..=94 => CompletionOutcome::Failure,
            95..=98 => CompletionOutcome::Cancelled,
            _ => CompletionOutcome::Other("timed_out".into()),
        };
        if outcome == CompletionOutcome::Failure && ns == "billing" {
            w.billing_failures += 1;
        }
        push(&mut w, NewEvent::completion(exec, outcome));
        if tagged && rng.random_bool(0.7) {
            push(&mut w, NewEvent::tag_cleared(exec, "priority:high"));
        }
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_covers_every_family_and_counts_match() {
        let w = generate(5_000, "t", 7);
        assert!(w.events.len() >= 5_000);
        assert_eq!(w.per_family.iter().sum::<u64>(), w.events.len() as u64);
        assert!(w.per_family.iter().all(|n| *n > 0));
        assert!(w.billing_failures > 0);
    }
}
