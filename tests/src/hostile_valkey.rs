//! A loopback server that speaks just enough RESP2 to host one ff Valkey
//! subscription, and answers its reads with whatever a test scripts:
//! replies that go backwards, repeat, are larger than asked, never end a
//! line, or close the connection. It exists to prove that the backend
//! treats the server as untrusted input; every other test talks to a real
//! Valkey server.
//!
//! The server answers `MULTI` with `+OK`, queued commands with `+QUEUED`,
//! `CLUSTER …` as a standalone server does (cluster support disabled),
//! `GET` and `SET` with nil (the key prefix's layout record is absent, and
//! the backend's `SET … NX GET` records it), and every other command it
//! does not script with `+OK`. A test scripts
//! three requests (see [`Request`]): the state read at subscribe time
//! (`XINFO STREAM` in `MULTI`), a paired page read (`XRANGE` + `XINFO
//! STREAM` in `MULTI`), and the wake-up (`XREAD`). When a read also
//! fetches the entry at its position (`XRANGE key id id`, which it does
//! once it holds that entry's witness), the server appends that entry —
//! [`entry`]`(id)`, as every scripted page holds — to a scripted `EXEC`
//! reply sent whole (`Answer::Bytes`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// What the subscription asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// `XINFO STREAM`, at subscribe time.
    State,
    /// A paired read: `XRANGE key start end COUNT count`.
    Page {
        /// The `XRANGE` start (`-` or `(ms-seq`).
        start: String,
        /// The `XRANGE` end.
        end: String,
        /// The `COUNT`.
        count: usize,
    },
    /// The `XREAD BLOCK` wake-up.
    Wait,
}

/// How to answer a request.
pub enum Answer {
    /// These bytes.
    Bytes(Vec<u8>),
    /// Close the connection.
    Close,
    /// These bytes, then close the connection (a reply cut short, or
    /// corrupted so it may never complete, ends promptly).
    BytesThenClose(Vec<u8>),
    /// `prefix`, then `filler` bytes until `total` bytes were written or
    /// the client closed the connection.
    Endless {
        /// The first bytes.
        prefix: Vec<u8>,
        /// The byte repeated after them.
        filler: u8,
        /// Stop after this many bytes in all.
        total: usize,
    },
}

type Script = dyn Fn(&Request) -> Answer + Send + Sync;

/// The server; dropping it stops accepting (open connections end when
/// the client closes them).
pub struct HostileServer {
    port: u16,
    subscription_connections: Arc<AtomicUsize>,
    read_connections: Arc<AtomicUsize>,
    written: Arc<Mutex<Vec<usize>>>,
    task: JoinHandle<()>,
}

impl Drop for HostileServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HostileServer {
    /// Listen on a free loopback port and answer with `script`.
    pub async fn start(script: impl Fn(&Request) -> Answer + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind a loopback port");
        let port = listener.local_addr().expect("local address").port();
        let script: Arc<Script> = Arc::new(script);
        let subscription_connections = Arc::new(AtomicUsize::new(0));
        let read_connections = Arc::new(AtomicUsize::new(0));
        let written = Arc::new(Mutex::new(Vec::new()));
        let task = {
            let subscription_connections = subscription_connections.clone();
            let read_connections = read_connections.clone();
            let written = written.clone();
            tokio::spawn(async move {
                while let Ok((socket, _)) = listener.accept().await {
                    let connection = Connection {
                        socket,
                        script: script.clone(),
                        subscription_connections: subscription_connections.clone(),
                        read_connections: read_connections.clone(),
                        written: written.clone(),
                    };
                    tokio::spawn(connection.serve());
                }
            })
        };
        Self {
            port,
            subscription_connections,
            read_connections,
            written,
            task,
        }
    }

    /// `valkey://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("valkey://127.0.0.1:{}", self.port)
    }

    /// How many subscription wake-up connections (client name ending in
    /// `:sub`) were opened.
    pub fn subscription_connections(&self) -> usize {
        self.subscription_connections.load(Ordering::SeqCst)
    }

    /// How many subscription read connections (client name ending in
    /// `:read`) were opened.
    pub fn read_connections(&self) -> usize {
        self.read_connections.load(Ordering::SeqCst)
    }

    /// Bytes written by each [`Answer::Endless`] so far.
    pub fn endless_bytes_written(&self) -> Vec<usize> {
        self.written
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

struct Connection {
    socket: TcpStream,
    script: Arc<Script>,
    subscription_connections: Arc<AtomicUsize>,
    read_connections: Arc<AtomicUsize>,
    written: Arc<Mutex<Vec<usize>>>,
}

impl Connection {
    async fn serve(mut self) {
        let mut buf = Vec::new();
        let mut queued: Option<Vec<Vec<String>>> = None;
        loop {
            let command = loop {
                if let Some((command, used)) = parse_command(&buf) {
                    buf.drain(..used);
                    break command;
                }
                let mut chunk = [0u8; 16 * 1024];
                match self.socket.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            };
            let name = command.first().map(|c| c.to_ascii_uppercase());
            let answer = match (name.as_deref(), queued.as_mut()) {
                (Some("MULTI"), _) => {
                    queued = Some(Vec::new());
                    Answer::Bytes(b"+OK\r\n".to_vec())
                }
                (Some("EXEC"), Some(_)) => {
                    let commands = queued.take().unwrap_or_default();
                    let answer = (self.script)(&request_of(&commands));
                    match (answer, probe_of(&commands)) {
                        (Answer::Bytes(bytes), Some(id)) if bytes.starts_with(b"*") => {
                            // One more part than the scripted reply's.
                            let head = bytes.iter().position(|&b| b == b'\r').unwrap_or(0);
                            let parts: usize = std::str::from_utf8(&bytes[1..head])
                                .ok()
                                .and_then(|n| n.parse().ok())
                                .unwrap_or(0);
                            let mut out = format!("*{}", parts + 1).into_bytes();
                            out.extend_from_slice(&bytes[head..]);
                            out.extend_from_slice(b"*1\r\n");
                            out.extend_from_slice(&entry(&id));
                            Answer::Bytes(out)
                        }
                        (answer, _) => answer,
                    }
                }
                (_, Some(commands)) => {
                    commands.push(command);
                    Answer::Bytes(b"+QUEUED\r\n".to_vec())
                }
                (Some("XREAD"), None) => (self.script)(&Request::Wait),
                (Some("PING"), None) => Answer::Bytes(b"+PONG\r\n".to_vec()),
                (Some("GET" | "SET"), None) => Answer::Bytes(b"$-1\r\n".to_vec()),
                (Some("CLUSTER"), None) => {
                    Answer::Bytes(b"-ERR This instance has cluster support disabled\r\n".to_vec())
                }
                (Some("CLIENT"), None) => {
                    let is_setname =
                        command.get(1).map(|s| s.to_ascii_uppercase()) == Some("SETNAME".into());
                    if is_setname && command.get(2).is_some_and(|n| n.ends_with(":sub")) {
                        self.subscription_connections.fetch_add(1, Ordering::SeqCst);
                    }
                    if is_setname && command.get(2).is_some_and(|n| n.ends_with(":read")) {
                        self.read_connections.fetch_add(1, Ordering::SeqCst);
                    }
                    Answer::Bytes(b"+OK\r\n".to_vec())
                }
                _ => Answer::Bytes(b"+OK\r\n".to_vec()),
            };
            match answer {
                Answer::Bytes(bytes) => {
                    if self.socket.write_all(&bytes).await.is_err() {
                        return;
                    }
                }
                Answer::Close => return,
                Answer::BytesThenClose(bytes) => {
                    let _ = self.socket.write_all(&bytes).await;
                    return;
                }
                Answer::Endless {
                    prefix,
                    filler,
                    total,
                } => {
                    let mut sent = 0;
                    if self.socket.write_all(&prefix).await.is_ok() {
                        sent = prefix.len();
                        let chunk = vec![filler; 64 * 1024];
                        while sent < total {
                            let n = chunk.len().min(total - sent);
                            if self.socket.write_all(&chunk[..n]).await.is_err() {
                                break;
                            }
                            sent += n;
                        }
                    }
                    self.written
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(sent);
                    return;
                }
            }
        }
    }
}

/// The id whose entry a paired read fetches (`XRANGE key id id`).
fn probe_of(commands: &[Vec<String>]) -> Option<String> {
    commands
        .iter()
        .find(|c| c.len() == 4 && c[0].eq_ignore_ascii_case("XRANGE"))
        .map(|c| c[2].clone())
}

/// What the queued commands of a transaction ask.
fn request_of(commands: &[Vec<String>]) -> Request {
    for c in commands {
        if c.len() == 6 && c[0].eq_ignore_ascii_case("XRANGE") {
            return Request::Page {
                start: c.get(2).cloned().unwrap_or_default(),
                end: c.get(3).cloned().unwrap_or_default(),
                count: c.get(5).and_then(|n| n.parse().ok()).unwrap_or(0),
            };
        }
    }
    Request::State
}

/// One command (`*n` of bulk strings) from the front of `buf`, and the
/// bytes it used.
fn parse_command(buf: &[u8]) -> Option<(Vec<String>, usize)> {
    fn line(buf: &[u8], at: usize) -> Option<(&[u8], usize)> {
        let end = at + buf.get(at..)?.windows(2).position(|w| w == b"\r\n")?;
        Some((&buf[at..end], end + 2))
    }
    let (head, mut at) = line(buf, 0)?;
    let n: usize = std::str::from_utf8(head.strip_prefix(b"*")?)
        .ok()?
        .parse()
        .ok()?;
    let mut args = Vec::with_capacity(n);
    for _ in 0..n {
        let (len, next) = line(buf, at)?;
        let len: usize = std::str::from_utf8(len.strip_prefix(b"$")?)
            .ok()?
            .parse()
            .ok()?;
        let data = buf.get(next..next + len)?;
        args.push(String::from_utf8_lossy(data).into_owned());
        at = next + len + 2;
        if buf.len() < at {
            return None;
        }
    }
    Some((args, at))
}

/// A complete ff completion entry `[id, fields]` in RESP.
pub fn entry(id: &str) -> Vec<u8> {
    let fields = [
        "v",
        "1",
        "execution_id",
        "{fp:1}:6f1c0a4e-2b7d-4c53-9a3e-8f0e5d2c1b7a",
        "outcome",
        "success",
    ];
    let mut out = format!("*2\r\n${}\r\n{id}\r\n*{}\r\n", id.len(), fields.len()).into_bytes();
    for f in fields {
        out.extend_from_slice(format!("${}\r\n{f}\r\n", f.len()).as_bytes());
    }
    out
}

/// An `XINFO STREAM` reply of a stream whose first entry is `first` (none:
/// empty), newest id `last_generated`, `length` entries and nothing ever
/// removed.
pub fn xinfo(first: Option<&str>, last_generated: &str, length: usize) -> Vec<u8> {
    let bulk = |s: &str| format!("${}\r\n{s}\r\n", s.len());
    let mut out = b"*12\r\n".to_vec();
    out.extend_from_slice(format!("{}:{length}\r\n", bulk("length")).as_bytes());
    out.extend_from_slice(
        format!("{}{}", bulk("last-generated-id"), bulk(last_generated)).as_bytes(),
    );
    out.extend_from_slice(format!("{}{}", bulk("max-deleted-entry-id"), bulk("0-0")).as_bytes());
    out.extend_from_slice(format!("{}:{length}\r\n", bulk("entries-added")).as_bytes());
    for name in ["first-entry", "last-entry"] {
        out.extend_from_slice(bulk(name).as_bytes());
        match first {
            Some(id) => out.extend_from_slice(&entry(id)),
            None => out.extend_from_slice(b"*-1\r\n"),
        }
    }
    out
}

/// The `EXEC` reply of the state read at subscribe time.
pub fn state_reply(first: Option<&str>, last_generated: &str, length: usize) -> Vec<u8> {
    let mut out = b"*1\r\n".to_vec();
    out.extend_from_slice(&xinfo(first, last_generated, length));
    out
}

/// The `EXEC` reply of a paired read returning the entries `ids`, on a
/// stream whose first entry is `1-0` and newest id `last_generated`.
pub fn page_reply(ids: &[&str], last_generated: &str) -> Vec<u8> {
    let mut out = format!("*2\r\n*{}\r\n", ids.len()).into_bytes();
    for id in ids {
        out.extend_from_slice(&entry(id));
    }
    out.extend_from_slice(&xinfo(Some("1-0"), last_generated, 100));
    out
}
