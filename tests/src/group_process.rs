//! Consumer-group members as processes of their own (the `ff-group-member`
//! binary), the effects they record, and the oracle the group fault tests
//! judge them by.
//!
//! A [`MemberProcess`] is killed when dropped (and the binary exits when
//! its stdin, held here, closes), so a failing or panicking test leaves no
//! member behind. Its stdout lines are kept with the instant each arrived,
//! which is what hand-over times are measured on.
//!
//! The oracle ([`tally`]) compares the effects with what the stream stores
//! (read back from the beginning): every stored event handled (lost 0),
//! within each holding of a unit (a run: one session, unit and epoch) the
//! unit's events in stored order without a skip, and where duplicates are.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ff_backend_postgres::sqlx::{self, PgPool};
use ff_core::backend::{DeliveryItem, StreamBackend};
use ff_core::filter::SubscriptionFilter;
use ff_core::group::unit_of;
use ff_core::stream_events::Family;
use ff_core::stream_subscribe::StreamCursor;
use futures::StreamExt;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::watch;
use tokio::time::{timeout_at, Instant};

/// One stdout line of a member and when the test read it.
#[derive(Clone, Debug)]
pub struct Line {
    /// When it arrived.
    pub at: Instant,
    /// The line.
    pub text: String,
}

/// A running `ff-group-member` process.
pub struct MemberProcess {
    /// The member id it joined with.
    pub name: String,
    child: Child,
    _stdin: Option<ChildStdin>,
    pid: u32,
    lines: Arc<Mutex<Vec<Line>>>,
    seen: watch::Receiver<usize>,
}

impl std::fmt::Debug for MemberProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "member {} (pid {})", self.name, self.pid)
    }
}

impl MemberProcess {
    /// Start `exe` as member `name` with `args` (everything but
    /// `--member`).
    pub fn spawn(exe: &str, name: &str, args: &[String]) -> Self {
        let mut child = Command::new(exe)
            .args(args)
            .args(["--member", name])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {exe}: {e}"));
        let pid = child.id().expect("a running child");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (seen_tx, seen) = watch::channel(0);
        let sink = lines.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(text)) = reader.next_line().await {
                let mut lines = sink.lock().unwrap_or_else(|p| p.into_inner());
                lines.push(Line {
                    at: Instant::now(),
                    text,
                });
                let _ = seen_tx.send(lines.len());
            }
        });
        Self {
            name: name.to_owned(),
            child,
            _stdin: stdin,
            pid,
            lines,
            seen,
        }
    }

    /// Every line so far.
    pub fn lines(&self) -> Vec<Line> {
        self.lines.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Wait for the first line at index `from` or later that `matches`;
    /// its index and the line. Panics, naming `what` and the lines so far,
    /// at `deadline` or when the process's stdout closes.
    pub async fn wait_line(
        &mut self,
        what: &str,
        from: usize,
        deadline: Instant,
        matches: impl Fn(&str) -> bool,
    ) -> (usize, Line) {
        loop {
            {
                let lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
                if let Some((i, l)) = lines
                    .iter()
                    .enumerate()
                    .skip(from)
                    .find(|(_, l)| matches(&l.text))
                {
                    return (i, l.clone());
                }
            }
            match timeout_at(deadline, self.seen.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => panic!("{self:?} ended before {what}: {:?}", self.texts()),
                Err(_) => panic!("{self:?}: no {what} by the deadline: {:?}", self.texts()),
            }
        }
    }

    fn texts(&self) -> Vec<String> {
        let lines = self.lines();
        let start = lines.len().saturating_sub(30);
        lines[start..].iter().map(|l| l.text.clone()).collect()
    }

    /// The member's session (from its first line).
    pub async fn session(&mut self, deadline: Instant) -> String {
        let (_, line) = self
            .wait_line("session line", 0, deadline, |l| l.starts_with("session "))
            .await;
        line.text["session ".len()..].to_owned()
    }

    /// Send `signal` (a `kill` name: `STOP`, `CONT`, `TERM`, `KILL`).
    pub fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .args([format!("-{signal}"), self.pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {self:?} failed");
    }

    /// `kill -9` the process and wait for it to be gone; the instant of
    /// the kill.
    pub async fn kill9(&mut self) -> Instant {
        let at = Instant::now();
        self.signal("KILL");
        let _ = self.child.wait().await;
        at
    }

    /// Whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM: the member leaves cleanly (drain, then release); wait for
    /// it to exit with success by `deadline`. Its lines stay readable.
    pub async fn terminate(&mut self, deadline: Instant) {
        self.signal("TERM");
        self.wait_exit(deadline).await;
    }

    /// Wait for the process (sent SIGTERM) to exit with success by
    /// `deadline`.
    pub async fn wait_exit(&mut self, deadline: Instant) {
        let status = timeout_at(deadline, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("{self:?} did not leave by the deadline"))
            .expect("wait for the member");
        assert!(
            status.success(),
            "{self:?} exited with {status} on SIGTERM: {:?}",
            self.texts()
        );
    }
}

/// The effect of one handled event, as a member recorded it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Effect {
    /// Where it was recorded (a file's index; 0 for the Postgres table).
    pub source: usize,
    /// Its place in the source (line number; the table's id).
    pub seq: i64,
    /// The member's session.
    pub session: String,
    /// The unit it was handled in.
    pub unit: u32,
    /// The epoch the unit was held under.
    pub epoch: u64,
    /// The event's `n` tag.
    pub n: String,
}

/// Where the members record effects.
#[derive(Clone, Debug)]
pub enum EffectSink {
    /// A table (`session, unit, epoch, n`, ordered by `id`).
    Postgres {
        /// A pool on the members' database.
        pool: PgPool,
        /// The table, schema-qualified.
        table: String,
    },
    /// One file per member process in a directory.
    Files(PathBuf),
}

impl EffectSink {
    /// A Postgres table for the effects, created in `schema`.
    pub async fn postgres(pool: PgPool, schema: &str) -> Self {
        let table = format!("{schema}.effects");
        sqlx::raw_sql(&format!(
            "CREATE TABLE {table} (id bigserial PRIMARY KEY, session text NOT NULL, \
             unit integer NOT NULL, epoch bigint NOT NULL, n text NOT NULL)"
        ))
        .execute(&pool)
        .await
        .expect("create the effects table");
        Self::Postgres { pool, table }
    }

    /// A fresh directory for effect files.
    pub fn files(label: &str) -> Self {
        let dir = std::env::temp_dir().join(crate::support::unique_name(label));
        std::fs::create_dir_all(&dir).expect("create the effects directory");
        Self::Files(dir)
    }

    /// The arguments that point a member at this sink (`name` is the
    /// member's id, which names its file).
    pub fn member_args(&self, name: &str) -> Vec<String> {
        match self {
            Self::Postgres { table, .. } => vec!["--effects-table".into(), table.clone()],
            Self::Files(dir) => vec![
                "--effects-file".into(),
                dir.join(format!("{name}.effects")).display().to_string(),
            ],
        }
    }

    /// Every effect committed so far, each source in its own order.
    pub async fn read(&self) -> Vec<Effect> {
        match self {
            Self::Postgres { pool, table } => {
                let rows: Vec<(i64, String, i32, i64, String)> = sqlx::query_as(&format!(
                    "SELECT id, session, unit, epoch, n FROM {table} ORDER BY id"
                ))
                .fetch_all(pool)
                .await
                .expect("read the effects");
                rows.into_iter()
                    .map(|(seq, session, unit, epoch, n)| Effect {
                        source: 0,
                        seq,
                        session,
                        unit: unit as u32,
                        epoch: epoch as u64,
                        n,
                    })
                    .collect()
            }
            Self::Files(dir) => read_files(dir),
        }
    }

    /// Whether duplicates are refused by construction (Postgres).
    pub fn effectively_once(&self) -> bool {
        matches!(self, Self::Postgres { .. })
    }
}

impl Drop for EffectSink {
    fn drop(&mut self) {
        if let Self::Files(dir) = self {
            if !std::thread::panicking() {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
}

fn read_files(dir: &Path) -> Vec<Effect> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("list the effects directory")
        .map(|e| e.expect("a directory entry").path())
        .collect();
    files.sort();
    let mut effects = Vec::new();
    for (source, file) in files.iter().enumerate() {
        let text = std::fs::read_to_string(file).expect("read an effects file");
        // A line is written with one write; only complete lines count.
        let complete = text.split_inclusive('\n').filter(|l| l.ends_with('\n'));
        for (seq, line) in complete.enumerate() {
            let parts: Vec<&str> = line.split_whitespace().collect();
            let [session, unit, epoch, n] = parts[..] else {
                panic!("a malformed effect line in {}: {line:?}", file.display());
            };
            effects.push(Effect {
                source,
                seq: seq as i64,
                session: session.to_owned(),
                unit: unit.parse().expect("a unit"),
                epoch: epoch.parse().expect("an epoch"),
                n: n.to_owned(),
            });
        }
    }
    effects
}

/// What the stream stores, per unit, in stored order.
#[derive(Debug, Default)]
pub struct Stored {
    /// Each unit's events (`n` tags) in stored order.
    pub units: BTreeMap<u32, Vec<String>>,
    /// Each event's unit and index within the unit.
    pub place: HashMap<String, (u32, usize)>,
}

impl Stored {
    /// How many events are stored.
    pub fn len(&self) -> usize {
        self.place.len()
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.place.is_empty()
    }
}

/// Read every stored completion event from the beginning up to
/// `CaughtUp`, by the `n` tag, split into `units` units.
pub async fn stored(backend: &dyn StreamBackend, units: u32, deadline: Instant) -> Stored {
    let mut sub = backend
        .subscribe_family(
            Family::Completion,
            StreamCursor::beginning(),
            &SubscriptionFilter::default(),
        )
        .await
        .expect("subscribe from the beginning");
    let mut stored = Stored::default();
    loop {
        match timeout_at(deadline, sub.next()).await {
            Ok(Some(Ok(DeliveryItem::Event { event, meta }))) => {
                let n = meta.tags.get("n").expect("an n tag").clone();
                let unit = unit_of(event.execution_id(), units);
                let list = stored.units.entry(unit).or_default();
                let fresh = stored.place.insert(n.clone(), (unit, list.len()));
                assert!(fresh.is_none(), "event {n} is stored twice");
                list.push(n);
            }
            Ok(Some(Ok(DeliveryItem::CaughtUp { .. }))) => return stored,
            Ok(Some(Ok(_))) => {}
            other => panic!("reading what is stored: {other:?}"),
        }
    }
}

/// Wait until every stored event has an effect; the effects then.
/// Panics at `deadline` naming how many are missing.
pub async fn wait_until_handled(
    sink: &EffectSink,
    stored: &Stored,
    deadline: Instant,
) -> Vec<Effect> {
    loop {
        let effects = sink.read().await;
        let seen: HashSet<&str> = effects.iter().map(|e| e.n.as_str()).collect();
        let missing = stored
            .place
            .keys()
            .filter(|n| !seen.contains(n.as_str()))
            .count();
        if missing == 0 {
            return effects;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} of {} stored events were never handled",
            stored.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The oracle's findings.
#[derive(Debug, Default)]
pub struct Tally {
    /// Events stored.
    pub stored: usize,
    /// Effects recorded.
    pub effects: usize,
    /// Stored events without an effect.
    pub lost: Vec<String>,
    /// Effects beyond the first of their event.
    pub duplicates: usize,
    /// Effects of events the stream does not store (a lossy failover).
    pub not_stored: usize,
    /// Effects recorded in another unit than their event's.
    pub wrong_unit: Vec<String>,
    /// Within a run, an event followed by a later one of its unit with
    /// stored events in between: a skip, or order broken.
    pub skips: Vec<String>,
    /// Within a run, an event followed by an earlier one (a redelivery
    /// after a cursor went back).
    pub rewinds: usize,
    /// Duplicated effects that are neither the first nor the last effect
    /// of their run (a duplicate away from a hand-over).
    pub stray_duplicates: Vec<String>,
    /// Units whose effects, in the single source's order, differ from the
    /// unit's stored events (checked only with one source).
    pub unit_order_differs: Vec<u32>,
    /// Runs (holdings of a unit) seen.
    pub runs: usize,
}

/// A holding of a unit: the effect source, session, unit and epoch.
type RunKey<'a> = (usize, &'a str, u32, u64);

/// Judge `effects` against `stored` (see the module docs).
pub fn tally(stored: &Stored, effects: &[Effect]) -> Tally {
    let mut t = Tally {
        stored: stored.len(),
        effects: effects.len(),
        ..Tally::default()
    };
    let mut count: HashMap<&str, usize> = HashMap::new();
    for e in effects {
        *count.entry(e.n.as_str()).or_default() += 1;
    }
    t.lost = stored
        .place
        .keys()
        .filter(|n| !count.contains_key(n.as_str()))
        .cloned()
        .collect();
    t.lost.sort();
    for (n, c) in &count {
        if stored.place.contains_key(*n) {
            t.duplicates += c - 1;
        } else {
            t.not_stored += c;
        }
    }
    // Runs: one session's holding of one unit under one epoch, in order.
    let mut runs: BTreeMap<RunKey, Vec<(String, usize)>> = BTreeMap::new();
    for e in effects {
        let Some(&(unit, index)) = stored.place.get(&e.n) else {
            continue;
        };
        if unit != e.unit {
            t.wrong_unit.push(format!(
                "{} handled in unit {} (its unit is {unit})",
                e.n, e.unit
            ));
        }
        runs.entry((e.source, e.session.as_str(), e.unit, e.epoch))
            .or_default()
            .push((e.n.clone(), index));
    }
    t.runs = runs.len();
    for ((_, session, unit, epoch), run) in &runs {
        for pair in run.windows(2) {
            let (prev, next) = (&pair[0], &pair[1]);
            if next.1 > prev.1 + 1 {
                t.skips.push(format!(
                    "{session} unit {unit} epoch {epoch}: {} then {} ({} stored between)",
                    prev.0,
                    next.0,
                    next.1 - prev.1 - 1
                ));
            } else if next.1 <= prev.1 {
                t.rewinds += 1;
            }
        }
        for (i, (n, _)) in run.iter().enumerate() {
            if count[n.as_str()] > 1 && i != 0 && i + 1 != run.len() {
                t.stray_duplicates.push(format!(
                    "{n} (effect {i} of {} in {session}'s unit {unit})",
                    run.len()
                ));
            }
        }
    }
    if effects.iter().all(|e| e.source == 0) {
        let mut per_unit: BTreeMap<u32, Vec<&str>> = BTreeMap::new();
        for e in effects.iter().filter(|e| stored.place.contains_key(&e.n)) {
            per_unit.entry(e.unit).or_default().push(&e.n);
        }
        for (unit, expected) in &stored.units {
            let got = per_unit.get(unit).cloned().unwrap_or_default();
            if got.len() != expected.len() || got.iter().zip(expected).any(|(a, b)| *a != b) {
                t.unit_order_differs.push(*unit);
            }
        }
    }
    t
}

impl Tally {
    /// Assert the properties every backend keeps: nothing lost, each
    /// effect in its event's unit, no skip within a run, and (when
    /// `effectively_once`, Postgres) no duplicate and each unit's effects
    /// exactly its stored events in order. `what` names the test.
    pub fn check(&self, what: &str, effectively_once: bool) {
        assert!(
            self.lost.is_empty(),
            "{what}: {} of {} stored events never handled: {:?}",
            self.lost.len(),
            self.stored,
            &self.lost[..self.lost.len().min(20)]
        );
        assert!(self.wrong_unit.is_empty(), "{what}: {:?}", self.wrong_unit);
        assert!(
            self.skips.is_empty(),
            "{what}: a member skipped stored events of a unit it held: {:?}",
            self.skips
        );
        if effectively_once {
            assert_eq!(self.duplicates, 0, "{what}: duplicated effects on Postgres");
            assert!(
                self.unit_order_differs.is_empty(),
                "{what}: units whose effects differ from their stored events: {:?}",
                self.unit_order_differs
            );
        }
    }
}
