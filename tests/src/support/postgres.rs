//! A throwaway PostgreSQL cluster (`initdb` + `pg_ctl`).

use std::ffi::{OsStr, OsString};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::postgres_tls::{self, PostgresTlsFiles};
use super::{
    describe, effective_uid, find_in_path, is_executable, log_tail, make_temp_dir, release_port,
    reserve_port, run, shell_quote, start_timeout, Backoff, SupportError, Watchdog,
};

const DATA_DIR: &str = "data";
const LOG_FILE: &str = "postgres.log";
const EXTRA_CONF: &str = "ff-test.conf";
const TLS_CONF: &str = "ff-tls.conf";
/// The OS user the cluster runs as when the tests run as root.
const UNPRIVILEGED_USER: &str = "postgres";

/// A PostgreSQL cluster of its own: a fresh `initdb` in a temporary
/// directory, listening on a free loopback port (and a unix socket in that
/// directory), superuser `postgres` with `trust` authentication.
///
/// When the tests run as root the cluster runs as the unprivileged
/// `postgres` OS user (via `runuser`, or `su` when `runuser` is absent).
/// Dropping it stops the server and removes the directory.
pub struct PostgresServer {
    bindir: PathBuf,
    dir: PathBuf,
    port: u16,
    run_as: Option<RunAs>,
    // Declared last: dropped (disarmed) after `Drop::drop` cleaned up.
    watchdog: Option<Watchdog>,
}

#[derive(Clone)]
struct RunAs {
    uid: u32,
    gid: u32,
    via: Via,
}

#[derive(Clone)]
enum Via {
    Runuser(PathBuf),
    Su(PathBuf),
}

impl PostgresServer {
    /// A server object with a fresh directory (owned by the cluster's OS
    /// user) and its watchdog, not started and without a data directory.
    fn unstarted(bindir: PathBuf, run_as: Option<RunAs>) -> Result<Self, SupportError> {
        let dir = make_temp_dir("pg")?;
        let mut server = PostgresServer {
            bindir,
            dir,
            port: 0,
            run_as,
            watchdog: None,
        };
        if let Some(run_as) = &server.run_as {
            std::os::unix::fs::chown(&server.dir, Some(run_as.uid), Some(run_as.gid)).map_err(
                |e| SupportError::io(format!("chown {} to postgres", server.dir.display()), e),
            )?;
        }
        server.watchdog = Some(Watchdog::spawn(&server.cleanup_script())?);
        Ok(server)
    }

    /// Creates and starts a cluster, and waits until it accepts connections.
    pub fn start() -> Result<Self, SupportError> {
        let bindir = pg_bindir()?;
        let run_as = if effective_uid() == Some(0) {
            Some(RunAs::detect()?)
        } else {
            None
        };
        let mut server = Self::unstarted(bindir, run_as)?;
        server.init_cluster(&server.data_dir())?;
        server.listen()?;
        Ok(server)
    }

    /// `initdb` a cluster in `data` that includes the extra configuration
    /// files.
    fn init_cluster(&self, data: &Path) -> Result<(), SupportError> {
        let mut initdb = self.pg_command(
            "initdb",
            [
                OsStr::new("-D"),
                data.as_os_str(),
                OsStr::new("-U"),
                OsStr::new("postgres"),
                OsStr::new("-A"),
                OsStr::new("trust"),
                OsStr::new("-E"),
                OsStr::new("UTF8"),
                OsStr::new("--locale=C"),
                OsStr::new("--no-sync"),
            ],
        );
        initdb.env("TZ", "UTC");
        run(initdb)?;
        let conf = data.join("postgresql.conf");
        let mut main_conf = std::fs::read_to_string(&conf)
            .map_err(|e| SupportError::io(format!("reading {}", conf.display()), e))?;
        main_conf.push_str(&format!(
            "\ninclude '{EXTRA_CONF}'\ninclude_if_exists '{TLS_CONF}'\n"
        ));
        std::fs::write(&conf, main_conf)
            .map_err(|e| SupportError::io(format!("writing {}", conf.display()), e))
    }

    /// Upgrades the cluster in place as an operator moves to a new major
    /// version: stops it, `initdb`s a new cluster (with this server's
    /// binaries: an upgrade to the same major, which `pg_upgrade` runs
    /// exactly as it runs one to the next), runs `pg_upgrade` from the old
    /// data directory into it, and starts the new cluster on the same
    /// port. Rows and transaction ids carry over; the system identifier is
    /// the new cluster's.
    pub fn upgrade_in_place(&self) -> Result<(), SupportError> {
        self.stop()?;
        let next = self.dir.join("data.next");
        self.init_cluster(&next)?;
        self.write_extra_config_in(&next)?;
        let port = OsString::from(self.port.to_string());
        let bindir = self.bindir.as_os_str();
        let upgrade = self.pg_command(
            "pg_upgrade",
            [
                OsStr::new("-b"),
                bindir,
                OsStr::new("-B"),
                bindir,
                OsStr::new("-d"),
                self.data_dir().as_os_str(),
                OsStr::new("-D"),
                next.as_os_str(),
                OsStr::new("-U"),
                OsStr::new("postgres"),
                OsStr::new("-p"),
                port.as_os_str(),
                OsStr::new("-P"),
                port.as_os_str(),
                OsStr::new("-s"),
                self.dir.as_os_str(),
                OsStr::new("--no-sync"),
            ],
        );
        run(upgrade)?;
        let before = self.dir.join("data.before-upgrade");
        std::fs::rename(self.data_dir(), &before)
            .map_err(|e| SupportError::io("moving the old data directory aside", e))?;
        std::fs::rename(&next, self.data_dir())
            .map_err(|e| SupportError::io("moving the upgraded data directory in place", e))?;
        self.launch()
    }

    /// A physical copy of this cluster (`pg_basebackup`, same system
    /// identifier), started as a hot standby on a port of its own. With
    /// `follow` it streams from this server; without, it replays only
    /// what the backup holds (as a copy cut off from its primary would).
    /// [`promote`](Self::promote) makes it a primary.
    pub fn standby(&self, follow: bool) -> Result<Self, SupportError> {
        let mut copy = Self::unstarted(self.bindir.clone(), self.run_as.clone())?;
        let port = OsString::from(self.port.to_string());
        let data = copy.data_dir();
        let mut args = vec![
            OsStr::new("-D"),
            data.as_os_str(),
            OsStr::new("-h"),
            OsStr::new("127.0.0.1"),
            OsStr::new("-p"),
            port.as_os_str(),
            OsStr::new("-U"),
            OsStr::new("postgres"),
            OsStr::new("-X"),
            OsStr::new("stream"),
            OsStr::new("--checkpoint=fast"),
            OsStr::new("--no-sync"),
        ];
        if follow {
            args.push(OsStr::new("-R"));
        }
        run(copy.pg_command("pg_basebackup", args))?;
        if !follow {
            let signal = copy.data_dir().join("standby.signal");
            std::fs::write(&signal, "")
                .map_err(|e| SupportError::io(format!("writing {}", signal.display()), e))?;
            if let Some(run_as) = &copy.run_as {
                std::os::unix::fs::chown(&signal, Some(run_as.uid), Some(run_as.gid))
                    .map_err(|e| SupportError::io(format!("chown {}", signal.display()), e))?;
            }
        }
        copy.listen()?;
        Ok(copy)
    }

    /// Turns TLS on with a throwaway CA made in the cluster's directory,
    /// admits TCP connections only over TLS (`hostssl`; role
    /// [`CERT_ROLE`](super::postgres_tls::CERT_ROLE) only with a client
    /// certificate), and restarts the server. Returns the PEM files.
    pub fn enable_tls(&self) -> Result<PostgresTlsFiles, SupportError> {
        let files = postgres_tls::make(&self.dir)?;
        for path in [
            &files.ca,
            &files.other_ca,
            &files.server_cert,
            &files.server_key,
            &files.client_cert,
            &files.client_key,
        ] {
            self.give_to_cluster_user(path)?;
        }
        let key_mode = std::fs::Permissions::from_mode(0o600);
        std::fs::set_permissions(&files.server_key, key_mode)
            .map_err(|e| SupportError::io("chmod the server key", e))?;
        let data = self.data_dir();
        for (name, text) in [
            (TLS_CONF, postgres_tls::server_config(&files)),
            ("pg_hba.conf", postgres_tls::HBA.to_owned()),
        ] {
            let path = data.join(name);
            std::fs::write(&path, text)
                .map_err(|e| SupportError::io(format!("writing {}", path.display()), e))?;
            self.give_to_cluster_user(&path)?;
        }
        self.restart()?;
        Ok(files)
    }

    /// Adds `settings` (`name = value` lines) to the server's extra
    /// configuration and restarts it, e.g. to allow prepared transactions,
    /// which need a restart.
    pub fn configure(&self, settings: &[&str]) -> Result<(), SupportError> {
        let path = self.data_dir().join(EXTRA_CONF);
        let mut conf = std::fs::read_to_string(&path)
            .map_err(|e| SupportError::io(format!("reading {}", path.display()), e))?;
        for line in settings {
            conf.push_str(line);
            conf.push('\n');
        }
        std::fs::write(&path, conf)
            .map_err(|e| SupportError::io(format!("writing {}", path.display()), e))?;
        self.restart()
    }

    /// Make `path` owned by the cluster's OS user (when running as root).
    fn give_to_cluster_user(&self, path: &Path) -> Result<(), SupportError> {
        if let Some(run_as) = &self.run_as {
            std::os::unix::fs::chown(path, Some(run_as.uid), Some(run_as.gid))
                .map_err(|e| SupportError::io(format!("chown {}", path.display()), e))?;
        }
        Ok(())
    }

    /// Promotes a standby to a primary (`pg_ctl promote`), waiting until it
    /// accepts writes.
    pub fn promote(&self) -> Result<(), SupportError> {
        let promote = self.pg_command(
            "pg_ctl",
            [
                OsStr::new("promote"),
                OsStr::new("-D"),
                self.data_dir().as_os_str(),
                OsStr::new("-w"),
            ],
        );
        run(promote).map(drop)
    }

    /// Stops the server, sets the epoch of its next transaction id
    /// (`pg_resetwal --epoch`), and starts it again: every transaction id
    /// it issues from then on is at least `epoch * 2^32`.
    pub fn set_xid_epoch(&self, epoch: u32) -> Result<(), SupportError> {
        self.stop()?;
        let epoch = OsString::from(epoch.to_string());
        let reset = self.pg_command(
            "pg_resetwal",
            [
                OsStr::new("--epoch"),
                epoch.as_os_str(),
                OsStr::new("-D"),
                self.data_dir().as_os_str(),
            ],
        );
        run(reset)?;
        self.launch()
    }

    /// Copies `schema` into `target` the logical way: `pg_dump` of this
    /// server restored with `psql` (data, sequences, functions, policies;
    /// the target keeps its own system identifier and transaction ids).
    pub fn copy_schema_to(
        &self,
        schema: &str,
        target: &PostgresServer,
    ) -> Result<(), SupportError> {
        let dump = self.dir.join(format!("{schema}.dump.sql"));
        let mut pg_dump = Command::new(self.bindir.join("pg_dump"));
        pg_dump
            .args([
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-n",
                schema,
            ])
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-f")
            .arg(&dump)
            .env_remove("PGPASSWORD")
            .env_remove("PGOPTIONS");
        run(pg_dump)?;
        let mut psql = Command::new(target.bindir.join("psql"));
        psql.args([
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
        ])
        .args(["-d", "postgres"])
        .arg("-p")
        .arg(target.port.to_string())
        .arg("-f")
        .arg(&dump)
        .env_remove("PGPASSWORD")
        .env_remove("PGOPTIONS");
        let restored = run(psql).map(drop);
        let _ = std::fs::remove_file(&dump);
        restored
    }

    /// Picks a free port, writes the extra configuration, and starts the
    /// server.
    fn listen(&mut self) -> Result<(), SupportError> {
        let server = self;
        // The port was free a moment ago, but another process may grab it
        // before the postmaster binds it: retry with a fresh port then.
        let mut attempts = 0;
        loop {
            attempts += 1;
            server.port = reserve_port()?;
            server.write_extra_config()?;
            match server.launch() {
                Ok(()) => return Ok(()),
                Err(e) if attempts < 5 && server.port_was_taken() => {
                    release_port(server.port);
                    drop(e);
                    let _ = std::fs::remove_file(server.log_path());
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The loopback TCP port the server listens on (kept across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The cluster's temporary directory (data directory, log, socket).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The directory holding `initdb`, `pg_ctl`, `psql`, ...
    pub fn bindir(&self) -> &Path {
        &self.bindir
    }

    /// Whether the postmaster is running (`pg_ctl status`).
    pub fn is_running(&self) -> bool {
        let mut status = self.pg_command(
            "pg_ctl",
            [
                OsStr::new("status"),
                OsStr::new("-D"),
                self.data_dir().as_os_str(),
            ],
        );
        status
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .stdin(Stdio::null());
        status.status().map(|s| s.success()).unwrap_or(false)
    }

    /// Stops the server cleanly (`pg_ctl stop -m fast`) and waits until it
    /// is gone. A no-op when it is not running.
    pub fn stop(&self) -> Result<(), SupportError> {
        self.shutdown("fast")
    }

    /// Crashes the server: `pg_ctl stop -m immediate` (SIGQUIT, no
    /// checkpoint; the next start runs crash recovery), waiting until it is
    /// gone. A no-op when it is not running.
    pub fn kill(&self) -> Result<(), SupportError> {
        self.shutdown("immediate")
    }

    /// Starts the server again on the same port and data directory, and
    /// waits until it accepts connections. If it is still running it is
    /// stopped (fast) first.
    pub fn restart(&self) -> Result<(), SupportError> {
        self.stop()?;
        self.launch()
    }

    /// Runs `sql` with `psql` over TCP as `postgres` and returns its
    /// unaligned, tuples-only output (trailing newline trimmed).
    pub fn psql(&self, sql: &str) -> Result<String, SupportError> {
        let mut cmd = Command::new(self.bindir.join("psql"));
        cmd.args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
        ])
        .arg("-p")
        .arg(self.port.to_string())
        .args(["-U", "postgres", "-d", "postgres", "-c", sql])
        .env_remove("PGPASSWORD")
        .env_remove("PGOPTIONS");
        let out = run(cmd)?;
        Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join(DATA_DIR)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join(LOG_FILE)
    }

    /// A command running `bindir/program args...` as the cluster's OS user,
    /// in the cluster directory (which that user can always enter).
    fn pg_command<'a>(&self, program: &str, args: impl IntoIterator<Item = &'a OsStr>) -> Command {
        let program = self.bindir.join(program);
        let mut cmd = match &self.run_as {
            None => {
                let mut cmd = Command::new(program);
                cmd.args(args);
                cmd
            }
            Some(RunAs {
                via: Via::Runuser(runuser),
                ..
            }) => {
                let mut cmd = Command::new(runuser);
                cmd.args(["-u", UNPRIVILEGED_USER, "--"])
                    .arg(program)
                    .args(args);
                cmd
            }
            Some(RunAs {
                via: Via::Su(su), ..
            }) => {
                let line = std::iter::once(shell_quote(program.as_os_str()))
                    .chain(args.into_iter().map(shell_quote))
                    .collect::<Vec<_>>()
                    .join(" ");
                let mut cmd = Command::new(su);
                cmd.args([UNPRIVILEGED_USER, "-s", "/bin/sh", "-c"])
                    .arg(format!("exec {line}"));
                cmd
            }
        };
        cmd.current_dir(&self.dir);
        cmd
    }

    /// `pg_ctl stop` for the watchdog: what runs once the test process is
    /// gone.
    fn cleanup_script(&self) -> String {
        let stop = self.pg_command(
            "pg_ctl",
            [
                OsStr::new("stop"),
                OsStr::new("-D"),
                self.data_dir().as_os_str(),
                OsStr::new("-m"),
                OsStr::new("immediate"),
                OsStr::new("-w"),
            ],
        );
        let dir = shell_quote(self.dir.as_os_str());
        format!(
            "(cd {dir} && {}) >/dev/null 2>&1\ncd / && rm -rf {dir}",
            describe(&stop)
        )
    }

    fn write_extra_config(&self) -> Result<(), SupportError> {
        self.write_extra_config_in(&self.data_dir())
    }

    /// Writes the extra configuration into the data directory `data`.
    fn write_extra_config_in(&self, data: &Path) -> Result<(), SupportError> {
        let socket_dir = self.dir.to_string_lossy().replace('\'', "''");
        let config = format!(
            "# Written by ff-tests.\n\
             port = {port}\n\
             listen_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{socket_dir}'\n\
             max_connections = 200\n\
             shared_buffers = 32MB\n\
             fsync = off\n\
             timezone = 'UTC'\n",
            port = self.port,
        );
        let path = data.join(EXTRA_CONF);
        std::fs::write(&path, config)
            .map_err(|e| SupportError::io(format!("writing {}", path.display()), e))?;
        if let Some(run_as) = &self.run_as {
            std::os::unix::fs::chown(&path, Some(run_as.uid), Some(run_as.gid))
                .map_err(|e| SupportError::io(format!("chown {}", path.display()), e))?;
        }
        Ok(())
    }

    /// `pg_ctl start` and wait until the server accepts TCP connections.
    fn launch(&self) -> Result<(), SupportError> {
        let timeout = start_timeout();
        let deadline = Instant::now() + timeout;
        let log = self.log_path();
        let timeout_secs = OsString::from(timeout.as_secs().to_string());
        let start = self.pg_command(
            "pg_ctl",
            [
                OsStr::new("start"),
                OsStr::new("-D"),
                self.data_dir().as_os_str(),
                OsStr::new("-l"),
                log.as_os_str(),
                OsStr::new("-w"),
                OsStr::new("-t"),
                timeout_secs.as_os_str(),
            ],
        );
        if let Err(e) = run(start) {
            return Err(self.start_failed(e.to_string()));
        }
        self.wait_ready(deadline)
    }

    /// Polls `pg_isready` over TCP (or, without it, a plain TCP connect)
    /// until it succeeds or the deadline passes.
    fn wait_ready(&self, deadline: Instant) -> Result<(), SupportError> {
        let pg_isready = self.bindir.join("pg_isready");
        let have_isready = is_executable(&pg_isready);
        let mut backoff = Backoff::new();
        loop {
            let check: Result<(), String> = if have_isready {
                let out = Command::new(&pg_isready)
                    .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "postgres"])
                    .arg("-p")
                    .arg(self.port.to_string())
                    .args(["-t", "2"])
                    .stdin(Stdio::null())
                    .output();
                match out {
                    Ok(out) if out.status.success() => Ok(()),
                    Ok(out) => Err(format!(
                        "pg_isready: {}",
                        String::from_utf8_lossy(&out.stdout).trim()
                    )),
                    Err(e) => Err(format!("pg_isready: {e}")),
                }
            } else {
                let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
                TcpStream::connect_timeout(&addr, Duration::from_secs(2))
                    .map(drop)
                    .map_err(|e| format!("connect: {e}"))
            };
            let last = match check {
                Ok(()) => return Ok(()),
                Err(why) => why,
            };
            if Instant::now() >= deadline {
                return Err(self.start_failed(format!(
                    "not accepting connections on port {} in time (last: {last})",
                    self.port
                )));
            }
            backoff.pause();
        }
    }

    fn shutdown(&self, mode: &str) -> Result<(), SupportError> {
        if !self.is_running() {
            return Ok(());
        }
        let timeout_secs = OsString::from(start_timeout().as_secs().to_string());
        let stop = self.pg_command(
            "pg_ctl",
            [
                OsStr::new("stop"),
                OsStr::new("-D"),
                self.data_dir().as_os_str(),
                OsStr::new("-m"),
                OsStr::new(mode),
                OsStr::new("-w"),
                OsStr::new("-t"),
                timeout_secs.as_os_str(),
            ],
        );
        run(stop).map(drop)
    }

    fn start_failed(&self, reason: String) -> SupportError {
        SupportError::StartFailed {
            server: "postgres",
            reason: format!("{} ({}): {reason}", self.bindir.display(), self.url()),
            log: log_tail(&self.log_path(), 4000),
        }
    }

    fn port_was_taken(&self) -> bool {
        let log = log_tail(&self.log_path(), 4000);
        log.contains("Address already in use") || log.contains("could not create any TCP/IP")
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        let _ = self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
        release_port(self.port);
        // `watchdog` is dropped (disarmed) after this.
    }
}

impl RunAs {
    fn detect() -> Result<Self, SupportError> {
        let id = |flag: &str| -> Option<u32> {
            let out = Command::new("id")
                .args([flag, UNPRIVILEGED_USER])
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .output()
                .ok()?;
            if !out.status.success() {
                return None;
            }
            String::from_utf8_lossy(&out.stdout).trim().parse().ok()
        };
        let (Some(uid), Some(gid)) = (id("-u"), id("-g")) else {
            return Err(SupportError::Privileges(format!(
                "Postgres refuses to run as root and there is no `{UNPRIVILEGED_USER}` user \
                 to run it as; create one (e.g. `useradd --system --user-group {UNPRIVILEGED_USER}`) \
                 or run scripts/test.sh"
            )));
        };
        if uid == 0 {
            return Err(SupportError::Privileges(format!(
                "the `{UNPRIVILEGED_USER}` user has uid 0"
            )));
        }
        let find = |name: &str| {
            find_in_path(name).or_else(|| {
                ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
                    .iter()
                    .map(|d| Path::new(d).join(name))
                    .find(|p| is_executable(p))
            })
        };
        let via = if let Some(runuser) = find("runuser") {
            Via::Runuser(runuser)
        } else if let Some(su) = find("su") {
            Via::Su(su)
        } else {
            return Err(SupportError::Privileges(
                "neither `runuser` nor `su` is available to run Postgres as `postgres`".into(),
            ));
        };
        Ok(RunAs { uid, gid, via })
    }
}

// ---------------------------------------------------------------------------
// Binary discovery
// ---------------------------------------------------------------------------

fn has_server_binaries(dir: &Path) -> bool {
    is_executable(&dir.join("initdb")) && is_executable(&dir.join("pg_ctl"))
}

/// Finds the directory with `initdb` and `pg_ctl`; cached.
fn pg_bindir() -> Result<PathBuf, SupportError> {
    static FOUND: OnceLock<Result<PathBuf, Vec<String>>> = OnceLock::new();
    FOUND
        .get_or_init(discover_pg)
        .clone()
        .map_err(|tried| SupportError::BinaryNotFound {
            program: "PostgreSQL server binaries (initdb, pg_ctl)",
            tried,
        })
}

fn discover_pg() -> Result<PathBuf, Vec<String>> {
    let mut tried = Vec::new();
    if let Some(dir) = std::env::var_os("FF_PG_BINDIR").filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        if has_server_binaries(&dir) {
            return Ok(dir);
        }
        // An explicit choice that does not work is an error, not a hint.
        tried.push(format!(
            "FF_PG_BINDIR={} (no initdb/pg_ctl there)",
            dir.display()
        ));
        return Err(tried);
    }
    tried.push("$FF_PG_BINDIR (unset)".into());

    match Command::new("pg_config")
        .arg("--bindir")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
    {
        Ok(out) if out.status.success() => {
            let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if has_server_binaries(&dir) {
                return Ok(dir);
            }
            tried.push(format!(
                "pg_config --bindir = {} (no initdb/pg_ctl there)",
                dir.display()
            ));
        }
        _ => tried.push("pg_config --bindir (no pg_config)".into()),
    }

    let mut versions: Vec<(Vec<u32>, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let version = name
                .split('.')
                .map(|part| part.parse::<u32>().ok())
                .collect::<Option<Vec<u32>>>()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, bin)| has_server_binaries(bin))
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    tried.push("/usr/lib/postgresql/*/bin".into());

    if let Some(initdb) = find_in_path("initdb") {
        if let Some(dir) = std::fs::canonicalize(&initdb)
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
        {
            if has_server_binaries(&dir) {
                return Ok(dir);
            }
        }
    }
    tried.push("initdb on PATH".into());
    tried.push(
        "install PostgreSQL (e.g. `apt-get install postgresql`) or run scripts/test.sh".into(),
    );
    Err(tried)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::support::SHARED_POSTGRES as SHARED;

    #[test]
    fn postgres_starts_and_restarts() {
        let server = PostgresServer::start().expect("start postgres");
        assert!(server.is_running());
        let port = server.port();
        assert_eq!(
            server.url(),
            format!("postgres://postgres@127.0.0.1:{port}/postgres")
        );
        assert_eq!(server.psql("select 1").unwrap(), "1");
        assert_eq!(
            server.psql("show max_connections").unwrap(),
            "200",
            "the extra config is in effect"
        );
        assert_eq!(server.psql("select current_user").unwrap(), "postgres");
        server
            .psql("create table t (v text); insert into t values ('committed')")
            .unwrap();

        // A crash: committed data survives crash recovery.
        server.kill().unwrap();
        assert!(!server.is_running());
        assert!(
            server.psql("select 1").is_err(),
            "nothing answers after kill"
        );
        server.restart().unwrap();
        assert!(server.is_running());
        assert_eq!(server.port(), port, "restart keeps the port");
        assert_eq!(server.psql("select v from t").unwrap(), "committed");

        // A clean stop and a restart of a running server.
        server.stop().unwrap();
        assert!(!server.is_running());
        server.stop().unwrap(); // no-op
        server.restart().unwrap();
        server.restart().unwrap();
        assert_eq!(server.psql("select count(*) from t").unwrap(), "1");

        let dir = server.dir().to_path_buf();
        assert!(dir.is_dir());
        drop(server);
        assert!(!dir.exists(), "drop removes the directory");
        assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    }

    #[test]
    fn shared_postgres_is_started_once_and_answers() {
        let first = crate::support::shared_postgres_url().unwrap();
        let second = crate::support::shared_postgres_url().unwrap();
        assert_eq!(first, second);
        if crate::support::external_postgres() {
            return;
        }
        let server = SHARED
            .get()
            .and_then(|r| r.as_ref().ok())
            .expect("shared server");
        assert_eq!(server.url(), first);
        assert_eq!(server.psql("select 40 + 2").unwrap(), "42");
    }
}
