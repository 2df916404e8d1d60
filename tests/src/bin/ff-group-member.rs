//! One consumer-group member as a process of its own, for the group fault
//! tests (`tests/tests/group_faults.rs`), which kill, stop and churn
//! these processes.
//!
//! For every event it records an effect, then commits the unit's position:
//! on Postgres the effect row and the fenced commit (`commit_in`) go in one
//! transaction (effectively once), which it commits even after a refusal
//! (the refusal alone must keep the effect out); on Valkey the effect is a line appended
//! to a file, then the position is committed (at least once). Everything
//! the test needs to follow is one line on stdout per step:
//!
//! ```text
//! session <session>
//! assigned <unit> <epoch>
//! handled <unit> <epoch> <n>          (effect and commit done)
//! fenced <unit> <epoch> <n>           (commit refused: the unit moved on)
//! commit-failed <unit> <n> <error>
//! pausing <unit> <n>                  (--stop-after: effect done, commit next)
//! released <unit> | lost <unit> | unit-failed <unit> <error>
//! left                                (SIGTERM: left the group cleanly)
//! ```
//!
//! `<n>` is the event's `n` tag, which the tests' producers set uniquely.
//! The process exits when its stdin closes, so a test process that dies
//! (however it dies) leaves no member behind.
//!
//! ```text
//! ff-group-member --backend URL (--schema S --effects-table T | --key-prefix P --effects-file F)
//!     --group G --member ID [--units U] [--lease-ms MS] [--work-ms MS] [--stop-after N]
//! ```

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use ff_backend_postgres::sqlx::{self, Connection, PgConnection};
use ff_backend_postgres::{PostgresBackend, PostgresConfig};
use ff_backend_valkey::{ValkeyBackend, ValkeyConfig};
use ff_core::backend::{ReconnectPolicy, StreamBackend};
use ff_core::engine_error::EngineError;
use ff_core::group::{Commit, GroupConfig, GroupItem, GroupMember, GroupSpec};
use ff_core::stream_events::{EventMeta, Family};
use ff_core::stream_subscribe::StreamCursor;
use futures::StreamExt;
use tokio::signal::unix::{signal, SignalKind};

/// The command line.
struct Args {
    backend: String,
    schema: Option<String>,
    effects_table: Option<String>,
    key_prefix: Option<String>,
    effects_file: Option<String>,
    group: String,
    member: String,
    units: u32,
    lease: Duration,
    work: Duration,
    stop_after: Option<u64>,
}

const USAGE: &str = "usage: ff-group-member --backend URL (--schema S --effects-table T | \
    --key-prefix P --effects-file F) --group G --member ID [--units U] [--lease-ms MS] \
    [--work-ms MS] [--stop-after N]";

fn parse() -> Result<Args, String> {
    let mut args = Args {
        backend: String::new(),
        schema: None,
        effects_table: None,
        key_prefix: None,
        effects_file: None,
        group: String::new(),
        member: String::new(),
        units: 16,
        lease: Duration::from_secs(2),
        work: Duration::ZERO,
        stop_after: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value; {USAGE}"))?;
        let number = |v: &str| -> Result<u64, String> {
            v.parse()
                .map_err(|_| format!("{flag} takes a number, got {v:?}; {USAGE}"))
        };
        match flag.as_str() {
            "--backend" => args.backend = value,
            "--schema" => args.schema = Some(value),
            "--effects-table" => args.effects_table = Some(value),
            "--key-prefix" => args.key_prefix = Some(value),
            "--effects-file" => args.effects_file = Some(value),
            "--group" => args.group = value,
            "--member" => args.member = value,
            "--units" => args.units = number(&value)? as u32,
            "--lease-ms" => args.lease = Duration::from_millis(number(&value)?),
            "--work-ms" => args.work = Duration::from_millis(number(&value)?),
            "--stop-after" => args.stop_after = Some(number(&value)?),
            _ => return Err(format!("unknown flag {flag}; {USAGE}")),
        }
    }
    if args.backend.is_empty() || args.group.is_empty() || args.member.is_empty() {
        return Err(format!(
            "--backend, --group and --member are required; {USAGE}"
        ));
    }
    Ok(args)
}

/// Where effects go, and how a commit is made.
enum Effects {
    /// A row per event in `table`, committed with the position.
    Postgres {
        backend: PostgresBackend,
        conn: PgConnection,
        table: String,
    },
    /// A line per event appended to a file before the commit.
    File(std::fs::File),
}

/// One line on stdout, flushed at once (the test reads it as it comes).
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// One line of an error (the tests parse stdout by lines).
fn one_line(e: &EngineError) -> String {
    e.to_string().replace('\n', " ")
}

/// Stop this process with SIGSTOP, as a debugger or a stalled VM would; it
/// goes on where it was when the test sends SIGCONT.
fn stop_self() {
    let pid = std::process::id().to_string();
    let _ = std::process::Command::new("kill")
        .args(["-STOP", &pid])
        .status();
}

async fn open(args: &Args) -> Result<(Arc<dyn StreamBackend>, Effects), String> {
    let url = &args.backend;
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let (Some(schema), Some(table)) = (&args.schema, &args.effects_table) else {
            return Err(format!(
                "a Postgres member needs --schema and --effects-table; {USAGE}"
            ));
        };
        let config = PostgresConfig::default()
            .with_schema(schema)
            .with_application_name(format!("ffgm_{}", args.member))
            .with_checkpoint_interval(Duration::from_millis(200))
            .with_pool_size(2);
        let backend = PostgresBackend::connect(url, config)
            .await
            .map_err(|e| format!("connecting to Postgres: {e}"))?;
        let conn = PgConnection::connect(url)
            .await
            .map_err(|e| format!("connecting the effects connection: {e}"))?;
        let effects = Effects::Postgres {
            backend: backend.clone(),
            conn,
            table: table.clone(),
        };
        Ok((Arc::new(backend), effects))
    } else {
        let (Some(prefix), Some(file)) = (&args.key_prefix, &args.effects_file) else {
            return Err(format!(
                "a Valkey member needs --key-prefix and --effects-file; {USAGE}"
            ));
        };
        let config = ValkeyConfig::default()
            .with_key_prefix(prefix)
            .with_client_name(format!("ffgm_{}", args.member))
            .with_checkpoint_interval(Duration::from_millis(200))
            .with_timeouts(Duration::from_secs(2), Duration::from_secs(20))
            .with_reconnect(
                ReconnectPolicy::new(Some(Duration::from_secs(60)), None)
                    .with_backoff(Duration::from_millis(20), Duration::from_millis(500)),
            );
        let backend = ValkeyBackend::connect(url, config)
            .await
            .map_err(|e| format!("connecting to Valkey: {e}"))?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(file)
            .map_err(|e| format!("opening the effects file {file}: {e}"))?;
        Ok((Arc::new(backend), Effects::File(file)))
    }
}

/// The event's `n` tag.
fn tag(meta: &EventMeta) -> &str {
    meta.tags.get("n").map(String::as_str).unwrap_or("-")
}

impl Effects {
    /// Record the effect of event `n` of `unit`, run `work`, then commit;
    /// `pause` stops the process between the effect and the commit.
    async fn handle(
        &mut self,
        session: &str,
        unit: u32,
        n: &str,
        commit: &Commit,
        work: Duration,
        pause: bool,
    ) -> Result<(), EngineError> {
        let epoch = commit.lease().epoch;
        let line = format!("{session} {unit} {epoch} {n}\n");
        match self {
            Effects::Postgres {
                backend,
                conn,
                table,
            } => {
                let mut tx = conn.begin().await.map_err(backend_error)?;
                sqlx::query(&format!(
                    "INSERT INTO {table} (session, unit, epoch, n) VALUES ($1, $2, $3, $4)"
                ))
                .bind(session)
                .bind(unit as i32)
                .bind(epoch as i64)
                .bind(n)
                .execute(&mut *tx)
                .await
                .map_err(backend_error)?;
                pause_and_work(unit, n, work, pause).await;
                // A careless consumer commits even after a refusal: the
                // refusal itself must keep the effect from committing.
                let fenced = backend.commit_in(&mut tx, commit).await;
                let committed = tx.commit().await.map_err(backend_error);
                fenced.and(committed)
            }
            Effects::File(file) => {
                file.write_all(line.as_bytes())
                    .map_err(|e| EngineError::Backend {
                        backend: "effects-file",
                        detail: e.to_string(),
                    })?;
                pause_and_work(unit, n, work, pause).await;
                commit.commit().await
            }
        }
    }
}

async fn pause_and_work(unit: u32, n: &str, work: Duration, pause: bool) {
    if pause {
        say(&format!("pausing {unit} {n}"));
        stop_self();
    }
    if !work.is_zero() {
        tokio::time::sleep(work).await;
    }
}

fn backend_error(e: sqlx::Error) -> EngineError {
    EngineError::Backend {
        backend: "effects",
        detail: e.to_string(),
    }
}

async fn run(args: Args) -> Result<(), String> {
    let (backend, mut effects) = open(&args).await?;
    let spec = GroupSpec::new(args.group.clone(), Family::Completion, args.units)
        .map_err(|e| e.to_string())?;
    let config = GroupConfig::with_lease(args.lease);
    let mut member = GroupMember::join_from(
        backend,
        spec,
        &args.member,
        config,
        StreamCursor::beginning(),
    )
    .await
    .map_err(|e| format!("joining: {e}"))?;
    let session = member.session().to_owned();
    say(&format!("session {session}"));
    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    exit_when_stdin_closes();
    let mut handled = 0u64;
    loop {
        let item = tokio::select! {
            _ = term.recv() => break,
            item = member.next() => item,
        };
        let Some(item) = item else {
            return Err("the member's stream ended".into());
        };
        match item {
            GroupItem::Assigned { unit, epoch } => say(&format!("assigned {unit} {epoch}")),
            GroupItem::Event {
                unit, meta, commit, ..
            } => {
                handled += 1;
                let n = tag(&meta).to_owned();
                let pause = args.stop_after == Some(handled);
                let epoch = commit.lease().epoch;
                match effects
                    .handle(&session, unit, &n, &commit, args.work, pause)
                    .await
                {
                    Ok(()) => say(&format!("handled {unit} {epoch} {n}")),
                    Err(EngineError::Fenced { .. }) => say(&format!("fenced {unit} {epoch} {n}")),
                    Err(e) => say(&format!("commit-failed {unit} {n} {}", one_line(&e))),
                }
            }
            GroupItem::Checkpoint { commit, .. } | GroupItem::Corrupt { commit, .. } => {
                let _ = commit.commit().await;
            }
            GroupItem::Released { unit } => say(&format!("released {unit}")),
            GroupItem::Lost { unit, .. } => say(&format!("lost {unit}")),
            GroupItem::UnitFailed { unit, error } => {
                say(&format!("unit-failed {unit} {}", one_line(&error)))
            }
            _ => {}
        }
    }
    member.leave().await.map_err(|e| format!("leaving: {e}"))?;
    say("left");
    Ok(())
}

/// End the process once stdin reaches end-of-file: the test that started
/// it is gone.
fn exit_when_stdin_closes() {
    use std::io::Read;
    std::thread::spawn(|| {
        let mut stdin = std::io::stdin();
        let mut buf = [0u8; 64];
        while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
        std::process::exit(3);
    });
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let args = match parse() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("ff-group-member: {e}");
            return ExitCode::from(2);
        }
    };
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ff-group-member: {e}");
            ExitCode::FAILURE
        }
    }
}
