//! Consumer-group fault tests over real servers, with every member a
//! process of its own (`ff-group-member`) that records an effect per event
//! and then commits (Postgres: effect and `commit_in` in one transaction;
//! Valkey: an appended line, then the commit):
//!
//! - `kill -9` of a member stopped between an effect and its commit: its
//!   units move to the others within lease + heartbeat (+ slack), and each
//!   resumes exactly after its last committed event;
//! - `SIGSTOP` of a member past its lease, then `SIGCONT`: its commit is
//!   fenced (on Postgres its effect rolls back) and it carries on as a
//!   member;
//! - churn 1 → 8 → 1 members, ten rounds, each with a `kill -9`, while
//!   two producers publish; on a Valkey Cluster of our own, primaries are
//!   killed during the churn.
//!
//! The oracle ([`ff_tests::group_process::tally`]) compares the effects
//! with what the stream stores: nothing lost, no skip within a holding of
//! a unit, no duplicated effect on Postgres; on Valkey duplicates only at
//! a hand-over. Waiting is for a condition, with a deadline.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use ff_backend_valkey::{ValkeyBackend, ValkeyConfig};
use ff_core::backend::{EventPublisher, ReconnectPolicy, StreamBackend};
use ff_core::group::{rendezvous_score, GroupConfig, GroupView};
use ff_core::stream_events::{CompletionOutcome, EventMeta, Family, NewEvent};
use ff_core::types::ExecutionId;
use ff_tests::group_process::{
    stored, tally, wait_until_handled, Effect, EffectSink, MemberProcess, Tally,
};
use ff_tests::harness::postgres::{server_url as postgres_url, PostgresHarness};
use ff_tests::harness::valkey::server_url as valkey_url;
use ff_tests::support::{self, ClusterOptions, ValkeyCluster};
use tokio::sync::watch;
use tokio::task::{block_in_place, JoinHandle};
use tokio::time::Instant;

const EXE: &str = env!("CARGO_BIN_EXE_ff-group-member");
const UNITS: u32 = 16;
/// The members' lease (their heartbeat is a third of it).
const LEASE: Duration = Duration::from_secs(2);
/// Added to lease + heartbeat for a hand-over on a loaded machine.
const SLACK: Duration = Duration::from_secs(20);
/// How long any other step may take.
const DEADLINE: Duration = Duration::from_secs(90);
/// Churn rounds (1 → 8 → 1 members, one `kill -9` each).
const ROUNDS: usize = 10;

fn heartbeat() -> Duration {
    GroupConfig::with_lease(LEASE).heartbeat
}

fn deadline() -> Instant {
    Instant::now() + DEADLINE
}

/// The servers, the group, and where members record effects.
struct World {
    name: &'static str,
    backend: Arc<dyn StreamBackend>,
    publisher: Arc<dyn EventPublisher>,
    sink: EffectSink,
    group: String,
    /// Arguments every member gets (backend, group, units, lease).
    args: Vec<String>,
    /// The Valkey key prefix (Valkey worlds).
    prefix: String,
    cluster: Option<(ValkeyCluster, ValkeyBackend)>,
    _postgres: Option<PostgresHarness>,
}

impl World {
    fn base_args(url: &str, group: &str) -> Vec<String> {
        vec![
            "--backend".into(),
            url.into(),
            "--group".into(),
            group.into(),
            "--units".into(),
            UNITS.to_string(),
            "--lease-ms".into(),
            LEASE.as_millis().to_string(),
        ]
    }

    async fn postgres() -> Self {
        let h = PostgresHarness::new().await;
        let schema = h.backend.config().schema.clone();
        let url = postgres_url().await;
        let group = support::unique_name("g");
        let mut args = Self::base_args(&url, &group);
        args.extend(["--schema".into(), schema.clone()]);
        Self {
            name: "postgres",
            backend: Arc::new(h.backend.clone()),
            publisher: Arc::new(h.backend.clone()),
            sink: EffectSink::postgres(h.admin.clone(), &schema).await,
            group,
            args,
            prefix: String::new(),
            cluster: None,
            _postgres: Some(h),
        }
    }

    async fn valkey() -> Self {
        let url = valkey_url().await;
        Self::on_valkey("valkey", &url, None).await
    }

    async fn valkey_cluster() -> Self {
        let cluster = block_in_place(|| ValkeyCluster::start_with(ClusterOptions::for_faults()))
            .expect("a durable cluster of our own");
        let url = cluster.url();
        Self::on_valkey("valkey-cluster", &url, Some(cluster)).await
    }

    async fn on_valkey(name: &'static str, url: &str, cluster: Option<ValkeyCluster>) -> Self {
        let prefix = format!("{}:", support::unique_name("ffg"));
        // No replica acknowledgements: a failover may lose events members
        // handled (counted as handled but not stored), never skip one.
        let config = ValkeyConfig::default()
            .with_key_prefix(&prefix)
            .with_client_name(support::unique_name("ffgtest"))
            .with_timeouts(Duration::from_secs(2), Duration::from_secs(20))
            .with_reconnect(
                ReconnectPolicy::new(Some(Duration::from_secs(60)), None)
                    .with_backoff(Duration::from_millis(20), Duration::from_millis(500)),
            );
        let backend = ValkeyBackend::connect(url, config)
            .await
            .expect("connect to Valkey");
        let group = support::unique_name("g");
        let mut args = Self::base_args(url, &group);
        args.extend(["--key-prefix".into(), prefix.clone()]);
        Self {
            name,
            backend: Arc::new(backend.clone()),
            publisher: Arc::new(backend.clone()),
            sink: EffectSink::files("ffg-effects"),
            group,
            args,
            prefix,
            cluster: cluster.map(|c| (c, backend)),
            _postgres: None,
        }
    }

    /// Start member `name` with `extra` arguments.
    fn spawn(&self, name: &str, extra: &[&str]) -> MemberProcess {
        let mut args = self.args.clone();
        args.extend(self.sink.member_args(name));
        args.extend(extra.iter().map(|s| s.to_string()));
        MemberProcess::spawn(EXE, name, &args)
    }

    async fn view(&self) -> GroupView {
        let store = self.backend.group_store().expect("a group store");
        store.view(&self.group).await.expect("the group's view")
    }

    /// The units `session` holds in the store.
    async fn units_of(&self, session: &str) -> Vec<u32> {
        self.view()
            .await
            .unit_states
            .iter()
            .filter(|s| s.owner.as_deref() == Some(session))
            .map(|s| s.unit)
            .collect()
    }

    /// Kill `-9` the primary serving `key` and wait for its replica to
    /// take over, then restart it (it rejoins as a replica).
    fn fail_over(&mut self, key: &str) {
        let (cluster, _) = self.cluster.as_mut().expect("a cluster world");
        block_in_place(|| {
            let primary = cluster.owner_of_key(key).expect("the key's owner");
            let promoted = cluster
                .kill_primary_and_wait_for_failover(primary)
                .expect("failover");
            assert_ne!(promoted, primary);
            cluster
                .restart_node(primary)
                .expect("restart the old primary");
        });
    }

    /// The key of the group's units (leases and cursors).
    fn group_key(&self) -> String {
        format!(
            "{}{{g:{:016x}}}:units",
            self.prefix,
            rendezvous_score(&self.group, 0)
        )
    }

    /// Stop `producers`, read back what is stored, and wait until every
    /// stored event has an effect: the oracle's findings.
    async fn settle(&self, producers: Producers) -> Tally {
        let published = producers.stop().await;
        let stored = stored(self.backend.as_ref(), UNITS, deadline()).await;
        assert!(
            stored.len() as u64 <= published,
            "{}: more stored than published",
            self.name
        );
        let effects = wait_until_handled(&self.sink, &stored, deadline()).await;
        eprintln!("{}: {published} publishes tried", self.name);
        tally(&stored, &effects)
    }
}

/// Two tasks publishing completions tagged `n` = `p<producer>-<seq>`
/// over 64 executions until stopped.
struct Producers {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<u64>>,
}

impl Producers {
    fn start(publisher: &Arc<dyn EventPublisher>) -> Self {
        let (stop, rx) = watch::channel(false);
        let tasks = (0..2u64)
            .map(|p| {
                let publisher = publisher.clone();
                let rx = rx.clone();
                tokio::spawn(async move {
                    let mut seq = 0u64;
                    while !*rx.borrow() {
                        let execution = ExecutionId::new(((seq * 2 + p) % 64) as u16);
                        let event = NewEvent::completion(execution, CompletionOutcome::Success);
                        let meta = EventMeta::new().with_tag("n", format!("p{p}-{seq}"));
                        // A failed publish (a failover) may or may not be
                        // stored; the oracle reads what is.
                        let _ = publisher.publish(event, meta).await;
                        seq += 1;
                        // Pace the load; not synchronisation.
                        tokio::time::sleep(Duration::from_millis(15)).await;
                    }
                    seq
                })
            })
            .collect();
        Self { stop, tasks }
    }

    /// Stop publishing; how many publishes were tried.
    async fn stop(self) -> u64 {
        let _ = self.stop.send(true);
        let mut total = 0;
        for task in self.tasks {
            total += task.await.expect("a producer");
        }
        total
    }
}

/// The first line of any of `members` that arrived after `after` and
/// matches; `None` if there is none yet.
fn first_line_after(
    members: &[&MemberProcess],
    after: Instant,
    matches: impl Fn(&str) -> bool,
) -> Option<(Instant, String)> {
    members
        .iter()
        .flat_map(|m| m.lines())
        .filter(|l| l.at > after && matches(&l.text))
        .map(|l| (l.at, l.text))
        .min_by_key(|(at, _)| *at)
}

/// Wait (polling the members' lines, with `deadline`) until one of
/// `members` prints a matching line after `after`; when it arrived.
async fn wait_any(
    what: &str,
    members: &[&MemberProcess],
    after: Instant,
    deadline: Instant,
    matches: impl Fn(&str) -> bool,
) -> Instant {
    loop {
        if let Some((at, _)) = first_line_after(members, after, &matches) {
            return at;
        }
        assert!(Instant::now() < deadline, "no {what} by the deadline");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn is_line(text: &str, word: &str, unit: u32) -> bool {
    let mut parts = text.split_whitespace();
    parts.next() == Some(word) && parts.next() == Some(&unit.to_string())
}

/// `(unit, n)` of a `pausing <unit> <n>` line.
fn paused(text: &str) -> (u32, String) {
    let parts: Vec<&str> = text.split_whitespace().collect();
    (parts[1].parse().expect("a unit"), parts[2].to_owned())
}

// ---------------------------------------------------------------------------
// 1. kill -9 mid-event

async fn killed_mid_event(world: World) {
    let what = format!("{}: kill -9 mid-event", world.name);
    let started = Instant::now();
    let producers = Producers::start(&world.publisher);
    let mut a = world.spawn("a", &["--stop-after", "40", "--work-ms", "5"]);
    let mut b = world.spawn("b", &[]);
    let mut c = world.spawn("c", &[]);
    let a_session = a.session(deadline()).await;
    b.session(deadline()).await;
    c.session(deadline()).await;

    // a stops itself between the effect of its 40th event and its commit.
    let (_, line) = a
        .wait_line("pausing", 0, deadline(), |l| l.starts_with("pausing "))
        .await;
    let (in_flight_unit, in_flight) = paused(&line.text);
    let a_units = world.units_of(&a_session).await;
    assert!(
        a_units.contains(&in_flight_unit),
        "{what}: a holds the unit it paused in"
    );
    let before = world.sink.read().await;
    let killed = a.kill9().await;

    // Its units move within lease + heartbeat (+ slack), and deliver.
    let limit = killed + LEASE + heartbeat() + SLACK;
    let mut moved = Vec::new();
    for &unit in &a_units {
        let assigned = wait_any("assignment", &[&b, &c], killed, limit, |l| {
            is_line(l, "assigned", unit)
        })
        .await;
        let delivered = wait_any("delivery", &[&b, &c], killed, limit, |l| {
            is_line(l, "handled", unit)
        })
        .await;
        moved.push((assigned - killed, delivered - killed));
    }

    let tally = world.settle(producers).await;
    let effects = world.sink.read().await;
    b.terminate(deadline()).await;
    c.terminate(deadline()).await;

    // Each of a's units resumes exactly after its last committed event.
    let stored = stored(world.backend.as_ref(), UNITS, deadline()).await;
    let seen: HashSet<(usize, i64)> = before.iter().map(|e| (e.source, e.seq)).collect();
    let index = |e: &Effect| stored.place.get(&e.n).map(|p| p.1);
    let mut redelivered = 0;
    for &unit in &a_units {
        let last_before = before
            .iter()
            .filter(|e| e.unit == unit)
            .filter_map(index)
            .max();
        let first_after = effects
            .iter()
            .filter(|e| e.unit == unit && e.session != a_session)
            .filter(|e| !seen.contains(&(e.source, e.seq)))
            .find_map(index)
            .expect("the unit delivered again");
        let next = last_before.map_or(0, |i| i + 1);
        let again = last_before == Some(first_after)
            && unit == in_flight_unit
            && stored.units[&unit][first_after] == in_flight;
        assert!(
            first_after == next || (!world.sink.effectively_once() && again),
            "{what}: unit {unit} resumed at its event #{first_after}, its last effect before the \
             kill was #{last_before:?}"
        );
        redelivered += usize::from(again);
    }
    tally.check(&what, world.sink.effectively_once());
    assert!(
        tally.duplicates <= 1,
        "{what}: {} duplicates for one event in flight",
        tally.duplicates
    );
    let slowest = moved.iter().max().copied().unwrap_or_default();
    eprintln!(
        "{what}: {:?} total; a held units {a_units:?}; slowest hand-over {:?} (assigned) / {:?} \
         (first delivery) after the kill (lease {LEASE:?}, heartbeat {:?}); {} stored, {} effects, \
         {} duplicated, {redelivered} in-flight event redelivered, {} lost",
        started.elapsed(),
        slowest.0,
        slowest.1,
        heartbeat(),
        tally.stored,
        tally.effects,
        tally.duplicates,
        tally.lost.len()
    );
}

// ---------------------------------------------------------------------------
// 2. SIGSTOP past the lease, then SIGCONT

async fn stopped_past_its_lease(world: World) {
    let what = format!("{}: SIGSTOP past the lease", world.name);
    let started = Instant::now();
    let producers = Producers::start(&world.publisher);
    let mut a = world.spawn("a", &["--stop-after", "30"]);
    let mut b = world.spawn("b", &[]);
    a.session(deadline()).await;
    b.session(deadline()).await;

    let (at, line) = a
        .wait_line("pausing", 0, deadline(), |l| l.starts_with("pausing "))
        .await;
    let (unit, in_flight) = paused(&line.text);
    // b takes the unit once a's lease expired and handles the event a had
    // in hand.
    let takeover = wait_any(
        "the in-flight event on b",
        &[&b],
        line.at,
        line.at + LEASE + heartbeat() + SLACK,
        |l| {
            let p: Vec<&str> = l.split_whitespace().collect();
            p.len() == 4 && p[0] == "handled" && p[1] == unit.to_string() && p[3] == in_flight
        },
    )
    .await;
    let assigned = first_line_after(&[&b], line.at, |l| is_line(l, "assigned", unit))
        .expect("b was assigned the unit before handling its event")
        .0;
    a.signal("CONT");
    // a's next commit result is a refusal of that very event.
    let (fenced_at, result) = a
        .wait_line("a commit result", at, deadline(), |l| {
            ["handled ", "fenced ", "commit-failed "]
                .iter()
                .any(|w| l.starts_with(w))
        })
        .await;
    let parts: Vec<&str> = result.text.split_whitespace().collect();
    assert!(
        parts[0] == "fenced" && parts[1] == unit.to_string() && parts[3] == in_flight,
        "{what}: the zombie's commit of {in_flight} in unit {unit} was not fenced: {:?}",
        result.text
    );
    // It carries on: gets units again and handles events.
    let (again, _) = a
        .wait_line("a new assignment", fenced_at, deadline(), |l| {
            l.starts_with("assigned ")
        })
        .await;
    a.wait_line("an event handled after rejoining", again, deadline(), |l| {
        l.starts_with("handled ")
    })
    .await;
    assert!(a.is_running(), "{what}: the zombie ended");

    let tally = world.settle(producers).await;
    a.terminate(deadline()).await;
    b.terminate(deadline()).await;
    tally.check(&what, world.sink.effectively_once());
    assert!(
        tally.duplicates <= 1,
        "{what}: {} duplicates for one event in flight",
        tally.duplicates
    );
    eprintln!(
        "{what}: {:?} total; b was assigned a's unit {:?} and handled the in-flight event {:?} \
         after a stopped (lease {LEASE:?}); {} stored, {} effects, {} duplicated, {} lost",
        started.elapsed(),
        assigned - line.at,
        takeover - line.at,
        tally.stored,
        tally.effects,
        tally.duplicates,
        tally.lost.len()
    );
}

// ---------------------------------------------------------------------------
// 3-5. churn with kills (and, on a cluster, failovers)

/// A primary to kill in a round of the churn.
#[derive(Clone, Copy)]
enum Failover {
    /// The primary of the group's leases and cursors.
    GroupKeys,
    /// The primary of the family's stream.
    Stream,
}

async fn churn(mut world: World, rounds: usize, failovers: &[(usize, Failover)]) {
    let what = format!("{}: churn 1 → 8 → 1 × {rounds} with kill -9", world.name);
    let started = Instant::now();
    let producers = Producers::start(&world.publisher);
    let mut live = vec![world.spawn("m0", &["--work-ms", "2"])];
    let mut gone: Vec<MemberProcess> = Vec::new();
    live[0]
        .wait_line("an assignment", 0, deadline(), |l| {
            l.starts_with("assigned ")
        })
        .await;
    // (kill instant, the victim's units)
    let mut kills: Vec<(Instant, Vec<u32>)> = Vec::new();
    let mut failed_over = 0;
    for round in 0..rounds {
        let grown = Instant::now();
        for i in 1..8 {
            live.push(world.spawn(&format!("r{round}m{i}"), &["--work-ms", "2"]));
        }
        for m in &mut live[1..] {
            m.session(deadline()).await;
        }
        let newcomers: Vec<&MemberProcess> = live[1..].iter().collect();
        wait_any("work on a newcomer", &newcomers, grown, deadline(), |l| {
            l.starts_with("handled ")
        })
        .await;

        // kill -9 a member that holds units, wherever it is in its work.
        let limit = deadline();
        let mut holders = Vec::new();
        while holders.is_empty() {
            assert!(
                Instant::now() < limit,
                "{what}: no live member holds a unit"
            );
            for (i, m) in live.iter_mut().enumerate() {
                let units = world.units_of(&m.session(limit).await).await;
                if !units.is_empty() {
                    holders.push((i, units));
                }
            }
        }
        let (victim, units) = holders.swap_remove(round % holders.len());
        let mut dead = live.remove(victim);
        kills.push((dead.kill9().await, units));
        gone.push(dead);

        for &(at, failover) in failovers {
            if at == round {
                let key = match failover {
                    Failover::GroupKeys => world.group_key(),
                    Failover::Stream => {
                        let (_, backend) = world.cluster.as_ref().expect("a cluster");
                        backend
                            .partition_stream_key(Family::Completion, 0)
                            .to_owned()
                    }
                };
                world.fail_over(&key);
                failed_over += 1;
            }
        }

        // Back to one member: the others leave cleanly.
        let keep = round % live.len();
        let survivor = live.remove(keep);
        for m in &live {
            m.signal("TERM");
        }
        for mut m in live.drain(..) {
            m.wait_exit(deadline()).await;
            gone.push(m);
        }
        live.push(survivor);
    }

    let tally = world.settle(producers).await;
    for mut m in live.drain(..) {
        m.terminate(deadline()).await;
        gone.push(m);
    }

    // Hand-over after each kill: until every unit of the victim was
    // assigned to another member.
    let all: Vec<&MemberProcess> = gone.iter().collect();
    let mut handovers = Vec::new();
    for (killed, units) in &kills {
        let slowest = units
            .iter()
            .filter_map(|&u| first_line_after(&all, *killed, |l| is_line(l, "assigned", u)))
            .map(|(at, _)| at - *killed)
            .max();
        handovers.push(match slowest {
            Some(d) => format!("{:.1}s", d.as_secs_f64()),
            None => "-".to_owned(),
        });
    }
    tally.check(&what, world.sink.effectively_once());
    if failovers.is_empty() && !world.sink.effectively_once() {
        assert!(
            tally.stray_duplicates.is_empty(),
            "{what}: duplicates away from a hand-over: {:?}",
            tally.stray_duplicates
        );
    }
    eprintln!(
        "{what}: {:?} total; {} kills, hand-over after each (every unit assigned again; - when it held none): {}; \
         {failed_over} primaries killed; {} runs; {} stored, {} effects, {} duplicated, {} \
         rewinds, {} handled but not stored, {} lost",
        started.elapsed(),
        kills.len(),
        handovers.join(" "),
        tally.runs,
        tally.stored,
        tally.effects,
        tally.duplicates,
        tally.rewinds,
        tally.not_stored,
        tally.lost.len()
    );
}

// ---------------------------------------------------------------------------

mod postgres {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_member_killed_mid_event_hands_over_and_resumes_after_its_last_commit() {
        killed_mid_event(World::postgres().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_member_stopped_past_its_lease_is_fenced_and_its_effect_rolls_back() {
        stopped_past_its_lease(World::postgres().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn churn_with_kills_loses_and_duplicates_nothing() {
        churn(World::postgres().await, ROUNDS, &[]).await;
    }
}

mod valkey {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_member_killed_mid_event_hands_over_and_resumes_after_its_last_commit() {
        killed_mid_event(World::valkey().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_member_stopped_past_its_lease_is_fenced() {
        stopped_past_its_lease(World::valkey().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn churn_with_kills_loses_nothing() {
        churn(World::valkey().await, ROUNDS, &[]).await;
    }
}

mod valkey_cluster {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn churn_with_kills_and_killed_primaries_loses_nothing() {
        if support::skip_if_external_valkey_cluster(
            "churn_with_kills_and_killed_primaries_loses_nothing",
        ) {
            return;
        }
        churn(
            World::valkey_cluster().await,
            4,
            &[(1, Failover::GroupKeys), (2, Failover::Stream)],
        )
        .await;
    }
}
