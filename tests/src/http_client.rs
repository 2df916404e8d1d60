//! A raw HTTP/1.1 client that reads Server-Sent Events exactly as sent,
//! shared by every test that speaks HTTP to the gateway or to `ff serve`:
//! what a test checks is exactly what went over the wire, with no HTTP
//! library between.
//!
//! Every read of an open [`Connection`] goes through one cancel-safe
//! `read`, and all parsing state lives in the connection, so a wait that
//! times out loses no byte and the next wait carries on where it stopped.
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A complete (non-streaming) response.
#[derive(Debug)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The headers, in the order sent.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl Response {
    /// The first header named `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics, showing the body, when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }

    /// Everything a client can see, for "never echoed" checks.
    pub fn everything(&self) -> String {
        let headers: String = self
            .headers
            .iter()
            .map(|(k, v)| format!("{k}: {v}\n"))
            .collect();
        format!("{} {headers}{}", self.status, self.text())
    }
}

/// One SSE message (fields absent when not sent).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Message {
    /// The `id:` field.
    pub id: Option<String>,
    /// The `event:` field.
    pub event: Option<String>,
    /// The `data:` lines, joined by newlines.
    pub data: Option<String>,
}

impl Message {
    /// A position message (`event: ff-position`), not an event.
    pub fn is_position(&self) -> bool {
        self.event.as_deref() == Some("ff-position")
    }

    /// A position message's `reason` (`start`, `checkpoint`, ...),
    /// after checking that its JSON names the same cursor as its `id:`.
    pub fn reason(&self) -> Option<String> {
        if !self.is_position() {
            return None;
        }
        let json = self.json();
        assert_eq!(
            json["cursor"].as_str(),
            self.id.as_deref(),
            "a position message's cursor is its id: {self:?}"
        );
        Some(json["reason"].as_str().expect("a reason").to_owned())
    }

    /// The data as JSON; panics when there is none or it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(self.data.as_deref().expect("message has data")).expect("data is JSON")
    }
}

/// What the stream yields: a message or a comment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// A message (an event, a position or an error).
    Message(Message),
    /// A comment line's text (keep-alives).
    Comment(String),
}

enum Framing {
    Chunked(ChunkState),
    Length(usize),
    UntilClose,
}

enum ChunkState {
    Size,
    Data(usize),
    DataEnd,
    Done,
}

/// An open connection after the response head. Every read goes through
/// `fill`, whose only await is a cancel-safe `read`, and all parsing
/// state lives in the struct: a timed-out wait loses nothing.
pub struct Connection {
    stream: TcpStream,
    raw: Vec<u8>,
    decoded: Vec<u8>,
    framing: Framing,
    received: usize,
    eof: bool,
    pending: Message,
    comment: Option<String>,
    /// The response's status code.
    pub status: u16,
    /// The response's headers, in the order sent.
    pub headers: Vec<(String, String)>,
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

impl Connection {
    async fn open(
        addr: SocketAddr,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Connection {
        let stream = TcpStream::connect(addr).await.expect("connect");
        Self::open_on(stream, addr, method, path, headers, body).await
    }

    async fn open_on(
        stream: TcpStream,
        addr: SocketAddr,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Connection {
        let mut conn = Self::send(stream, addr, method, path, headers, body)
            .await
            .expect("send request");
        conn.read_head().await;
        conn
    }

    /// Send the request on `stream`; the connection before its response.
    async fn send(
        mut stream: TcpStream,
        addr: SocketAddr,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> std::io::Result<Connection> {
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if let Some(body) = body {
            req.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        if let Some(body) = body {
            bytes.extend_from_slice(body);
        }
        stream.write_all(&bytes).await?;
        Ok(Connection {
            stream,
            raw: Vec::new(),
            decoded: Vec::new(),
            framing: Framing::UntilClose,
            received: 0,
            eof: false,
            pending: Message::default(),
            comment: None,
            status: 0,
            headers: Vec::new(),
        })
    }

    async fn read_head(&mut self) {
        assert!(
            self.try_read_head().await,
            "connection closed before the response head"
        );
    }

    /// Read the response head; `false` when the connection closed first.
    async fn try_read_head(&mut self) -> bool {
        let end = loop {
            if let Some(end) = find(&self.raw, b"\r\n\r\n") {
                break end;
            }
            if !self.read_more().await {
                return false;
            }
        };
        let head = String::from_utf8(self.raw[..end].to_vec()).expect("ASCII head");
        self.raw.drain(..end + 4);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().expect("status line");
        self.status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status code");
        for line in lines {
            let (k, v) = line.split_once(':').expect("header line");
            self.headers
                .push((k.trim().to_owned(), v.trim().to_owned()));
        }
        let header = |name: &str| {
            self.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        self.framing = if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            Framing::Chunked(ChunkState::Size)
        } else if let Some(n) = header("content-length") {
            Framing::Length(n.parse().expect("content-length"))
        } else {
            Framing::UntilClose
        };
        self.decode();
        true
    }

    async fn read_more(&mut self) -> bool {
        let mut buf = [0u8; 16 * 1024];
        match self.stream.read(&mut buf).await {
            Ok(0) | Err(_) => {
                self.eof = true;
                false
            }
            Ok(n) => {
                self.raw.extend_from_slice(&buf[..n]);
                true
            }
        }
    }

    fn body_done(&self) -> bool {
        match &self.framing {
            Framing::Chunked(ChunkState::Done) => true,
            Framing::Length(n) => self.received >= *n,
            _ => false,
        }
    }

    fn decode(&mut self) {
        match &mut self.framing {
            Framing::Length(_) | Framing::UntilClose => {
                self.received += self.raw.len();
                self.decoded.append(&mut self.raw);
            }
            Framing::Chunked(state) => loop {
                match state {
                    ChunkState::Size => {
                        let Some(end) = find(&self.raw, b"\r\n") else {
                            break;
                        };
                        let line = String::from_utf8_lossy(&self.raw[..end]).into_owned();
                        self.raw.drain(..end + 2);
                        let size =
                            usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
                                .expect("chunk size");
                        *state = if size == 0 {
                            ChunkState::Done
                        } else {
                            ChunkState::Data(size)
                        };
                    }
                    ChunkState::Data(left) => {
                        if self.raw.is_empty() {
                            break;
                        }
                        let take = (*left).min(self.raw.len());
                        self.decoded.extend(self.raw.drain(..take));
                        *left -= take;
                        if *left == 0 {
                            *state = ChunkState::DataEnd;
                        }
                    }
                    ChunkState::DataEnd => {
                        if self.raw.len() < 2 {
                            break;
                        }
                        self.raw.drain(..2);
                        *state = ChunkState::Size;
                    }
                    ChunkState::Done => break,
                }
            },
        }
    }

    /// Read more of the body; `false` at its end.
    async fn fill(&mut self) -> bool {
        if self.body_done() || self.eof {
            return false;
        }
        let more = self.read_more().await;
        self.decode();
        more || !self.raw.is_empty()
    }

    async fn read_body(mut self) -> Response {
        while self.fill().await {}
        Response {
            status: self.status,
            headers: self.headers,
            body: self.decoded,
        }
    }

    async fn next_line(&mut self) -> Option<String> {
        loop {
            if let Some(pos) = self.decoded.iter().position(|b| *b == b'\n') {
                let mut line: Vec<u8> = self.decoded.drain(..=pos).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Some(String::from_utf8(line).expect("UTF-8 SSE line"));
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    /// The next frame; `None` when the server ended the response.
    pub async fn next_frame_raw(&mut self) -> Option<Frame> {
        loop {
            let line = self.next_line().await?;
            if line.is_empty() {
                let msg = std::mem::take(&mut self.pending);
                if msg != Message::default() {
                    return Some(Frame::Message(msg));
                }
                if let Some(c) = self.comment.take() {
                    return Some(Frame::Comment(c));
                }
                continue;
            }
            if let Some(comment) = line.strip_prefix(':') {
                self.comment = Some(comment.trim().to_owned());
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line.as_str(), ""));
            let value = value.strip_prefix(' ').unwrap_or(value).to_owned();
            match field {
                "id" => self.pending.id = Some(value),
                "event" => self.pending.event = Some(value),
                "data" => {
                    self.pending.data = Some(match self.pending.data.take() {
                        Some(d) => format!("{d}\n{value}"),
                        None => value,
                    })
                }
                _ => {}
            }
        }
    }

    /// The next frame within `within`; panics on timeout.
    pub async fn next_frame(&mut self, within: Duration) -> Option<Frame> {
        tokio::time::timeout(within, self.next_frame_raw())
            .await
            .unwrap_or_else(|_| panic!("no SSE frame within {within:?}"))
    }

    /// The next message (skipping comments) within `within`; `None`
    /// when the response ended. Panics on timeout.
    pub async fn next_message(&mut self, within: Duration) -> Option<Message> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_frame(left).await? {
                Frame::Message(m) => return Some(m),
                Frame::Comment(_) => {}
            }
        }
    }

    /// Assert that no event or error message arrives within `within`
    /// (comments and position messages may).
    pub async fn expect_quiet(&mut self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.next_frame_raw()).await {
                Err(_) => return,
                Ok(Some(Frame::Comment(_))) => {}
                Ok(Some(Frame::Message(m))) if m.is_position() => {}
                Ok(other) => panic!("expected no event, got {other:?}"),
            }
        }
    }
}

/// Send a request and read the whole response.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Response {
    let mut all = headers.to_vec();
    all.push(("Connection", "close"));
    Connection::open(addr, method, path, &all, body)
        .await
        .read_body()
        .await
}

/// Open an SSE stream on a socket with a small receive buffer and read
/// its response head, for a client that then stops reading: the server
/// soon has nowhere to put more bytes (its own buffers aside).
pub async fn open_stalled(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Connection {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let stream = socket.connect(addr).await.expect("connect");
    let mut all = headers.to_vec();
    all.push(("Accept", "text/event-stream"));
    let conn = Connection::open_on(stream, addr, "GET", path, &all, None).await;
    assert_eq!(conn.status, 200, "GET {path}");
    conn
}

/// Open an SSE stream: `Ok` with the open connection on 200, else the
/// complete error response.
pub async fn open_sse(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Connection, Response> {
    let mut all = headers.to_vec();
    all.push(("Accept", "text/event-stream"));
    let conn = Connection::open(addr, "GET", path, &all, None).await;
    if conn.status == 200 {
        Ok(conn)
    } else {
        Err(conn.read_body().await)
    }
}

/// The status `GET path` is answered with, or `None` when nothing accepts
/// a connection on `addr` yet, or no response head arrives within
/// `within`: for waiting until a server is up.
pub async fn status_of(addr: SocketAddr, path: &str, within: Duration) -> Option<u16> {
    let attempt = async {
        let stream = TcpStream::connect(addr).await.ok()?;
        let headers = [("Connection", "close")];
        let mut conn = Connection::send(stream, addr, "GET", path, &headers, None)
            .await
            .ok()?;
        conn.try_read_head().await.then_some(conn.status)
    };
    tokio::time::timeout(within, attempt).await.ok().flatten()
}
