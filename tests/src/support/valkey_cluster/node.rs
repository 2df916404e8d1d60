//! One cluster-enabled `valkey-server` process of a [`ValkeyCluster`]
//! (super::ValkeyCluster): its directory, ports, configuration and life.
//!
//! Invariant: a node keeps its client port, bus port and directory (with
//! `nodes.conf`, so its cluster identity, and its append-only file) across
//! [`kill`](ClusterNode::kill) and [`launch`](ClusterNode::launch); its
//! ports stay reserved in this process until the node is dropped.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::super::tls_ca::TlsFiles;
use super::super::{log_tail, release_port, reserve_port, start_timeout, Backoff, SupportError};
use super::session::Session;
use super::ClusterOptions;
use crate::support::Reply;

const LOG_FILE: &str = "valkey.log";
const CONF_FILE: &str = "valkey.conf";

/// A cluster node process; see the module docs.
pub(super) struct ClusterNode {
    dir: PathBuf,
    port: u16,
    bus_port: u16,
    /// The TLS port and certificates of a TLS cluster's node.
    tls: Option<(u16, TlsFiles)>,
    child: Option<Child>,
}

impl ClusterNode {
    /// Creates the node's directory under `parent` and starts it on free
    /// ports, retrying with fresh ports when another process took one.
    pub(super) fn start(
        binary: &Path,
        parent: &Path,
        index: usize,
        options: &ClusterOptions,
        tls: Option<&TlsFiles>,
    ) -> Result<Self, SupportError> {
        let dir = parent.join(format!("node-{index}"));
        std::fs::create_dir(&dir)
            .map_err(|e| SupportError::io(format!("creating {}", dir.display()), e))?;
        let mut node = ClusterNode {
            dir,
            port: 0,
            bus_port: 0,
            tls: tls.map(|files| (0, files.clone())),
            child: None,
        };
        let mut attempts = 0;
        loop {
            attempts += 1;
            node.port = reserve_port()?;
            node.bus_port = reserve_port()?;
            if let Some((port, _)) = node.tls.as_mut() {
                *port = reserve_port()?;
            }
            node.write_config(options)?;
            match node.launch(binary) {
                Ok(()) => return Ok(node),
                Err(e) if attempts < 5 && node.port_was_taken() => {
                    drop(e);
                    release_port(node.port);
                    release_port(node.bus_port);
                    if let Some((port, _)) = &node.tls {
                        release_port(*port);
                    }
                    let _ = std::fs::remove_file(node.dir.join(LOG_FILE));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The client port.
    pub(super) fn port(&self) -> u16 {
        self.port
    }

    /// The TLS client port of a TLS cluster's node.
    pub(super) fn tls_port(&self) -> Option<u16> {
        self.tls.as_ref().map(|(port, _)| *port)
    }

    /// The cluster bus port (set with `cluster-port`, not port + 10000).
    pub(super) fn bus_port(&self) -> u16 {
        self.bus_port
    }

    /// The process id while it runs.
    pub(super) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process was started and not killed since.
    pub(super) fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Sends one command over a fresh connection.
    pub(super) fn command(&self, args: &[&[u8]]) -> Result<Reply, SupportError> {
        Session::connect(self.port)?.command(args)
    }

    /// Starts the process (replaying its append-only file and `nodes.conf`
    /// when it ran before) and waits until it answers `PING`.
    pub(super) fn launch(&mut self, binary: &Path) -> Result<(), SupportError> {
        let log_path = self.dir.join(LOG_FILE);
        let log = File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| SupportError::io(format!("opening {}", log_path.display()), e))?;
        let log_err = log
            .try_clone()
            .map_err(|e| SupportError::io("duplicating the log file handle", e))?;
        let child = Command::new(binary)
            .arg(self.dir.join(CONF_FILE))
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| SupportError::io(format!("spawning {}", binary.display()), e))?;
        self.child = Some(child);
        self.wait_answers_ping()
    }

    /// SIGKILL (a crash: nothing flushed beyond what `appendfsync` did) and
    /// wait until the process is gone. A no-op when it is not running.
    pub(super) fn kill(&mut self) -> Result<(), SupportError> {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            child
                .wait()
                .map_err(|e| SupportError::io("waiting for a cluster node to exit", e))?;
        }
        Ok(())
    }

    /// The end of the node's log, for error messages.
    pub(super) fn log_tail(&self, max: usize) -> String {
        log_tail(&self.dir.join(LOG_FILE), max)
    }

    fn write_config(&self, options: &ClusterOptions) -> Result<(), SupportError> {
        let durability = if options.durable {
            "appendonly yes\nappendfsync always\n"
        } else {
            "appendonly no\n"
        };
        let config = format!(
            "# Written by ff-tests: one node of a throwaway cluster.\n\
             port {port}\n\
             bind 127.0.0.1\n\
             protected-mode no\n\
             daemonize no\n\
             dir \"{dir}\"\n\
             logfile \"\"\n\
             save \"\"\n\
             {durability}\
             cluster-enabled yes\n\
             cluster-config-file nodes.conf\n\
             cluster-port {bus}\n\
             cluster-node-timeout {timeout}\n\
             cluster-replica-validity-factor 0\n\
             repl-diskless-sync-delay 0\n",
            port = self.port,
            bus = self.bus_port,
            dir = self.dir.to_string_lossy(),
            timeout = options.node_timeout.as_millis(),
        );
        let config = match &self.tls {
            None => config,
            // The bus over TLS too: only then does a node announce its
            // TLS port (CLUSTER SHARDS `tls-port`) beside the plaintext one.
            // Nodes present the test client certificate to each other.
            Some((port, files)) => format!(
                "{config}tls-port {port}\n\
                 tls-cert-file \"{}\"\n\
                 tls-key-file \"{}\"\n\
                 tls-ca-cert-file \"{}\"\n\
                 tls-client-cert-file \"{}\"\n\
                 tls-client-key-file \"{}\"\n\
                 tls-auth-clients no\n\
                 tls-cluster yes\n\
                 tls-replication yes\n",
                files.server_cert.display(),
                files.server_key.display(),
                files.ca.display(),
                files.client_cert.display(),
                files.client_key.display(),
            ),
        };
        let path = self.dir.join(CONF_FILE);
        std::fs::write(&path, config)
            .map_err(|e| SupportError::io(format!("writing {}", path.display()), e))
    }

    fn wait_answers_ping(&mut self) -> Result<(), SupportError> {
        let timeout = start_timeout();
        let deadline = Instant::now() + timeout;
        let mut backoff = Backoff::new();
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Err(self.start_failed(format!("the process exited ({status})")));
                }
            }
            let last = match Session::connect_with_timeout(self.port, Duration::from_secs(2))
                .and_then(|mut s| s.command(&[b"PING"]))
            {
                Ok(Reply::Simple(s)) if s == "PONG" => return Ok(()),
                Ok(other) => format!("PING answered {other:?}"),
                Err(e) => e.to_string(),
            };
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
            server: "valkey cluster node",
            reason: format!("127.0.0.1:{}: {reason}", self.port),
            log: self.log_tail(4000),
        }
    }

    fn port_was_taken(&self) -> bool {
        let log = self.log_tail(4000);
        log.contains("Address already in use") || log.contains("EADDRINUSE")
    }
}

impl Drop for ClusterNode {
    fn drop(&mut self) {
        let _ = self.kill();
        release_port(self.port);
        release_port(self.bus_port);
        if let Some((port, _)) = &self.tls {
            release_port(*port);
        }
    }
}
