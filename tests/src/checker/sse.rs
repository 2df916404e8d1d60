//! A minimal SSE client over a plain TCP socket: one `GET`, the response
//! head, its body (chunked, `Content-Length` or read to the close) and the
//! messages in it. Enough to resume with `Last-Event-ID` and to stop
//! reading (a stalled client) at will.
//!
//! Invariant: the socket is read only when the bytes already received hold
//! no complete message, so whatever arrived with the response head is seen
//! at once, and an error body ends where its framing says, not when the
//! server closes a kept-alive connection.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One SSE message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Message {
    /// `id:`.
    pub id: Option<String>,
    /// `event:`.
    pub event: Option<String>,
    /// `data:`.
    pub data: Option<String>,
}

/// How the response body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// `Content-Length`: this many bytes are still due.
    Length(usize),
    /// Neither: the body ends when the server closes.
    UntilClose,
}

impl Framing {
    /// The framing a response head declares.
    fn of(head: &str) -> Self {
        let mut framing = Framing::UntilClose;
        for line in head.lines().skip(1) {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let (name, value) = (name.trim(), value.trim());
            if name.eq_ignore_ascii_case("transfer-encoding")
                && value.to_ascii_lowercase().contains("chunked")
            {
                return Framing::Chunked;
            }
            if name.eq_ignore_ascii_case("content-length") {
                if let Ok(n) = value.parse() {
                    framing = Framing::Length(n);
                }
            }
        }
        framing
    }
}

/// An open SSE response.
pub struct SseConnection {
    socket: TcpStream,
    framing: Framing,
    /// Raw bytes read and not yet decoded into the body.
    raw: Vec<u8>,
    /// Body bytes not yet split into messages.
    body: Vec<u8>,
    done: bool,
}

/// Why a connection could not be opened.
#[derive(Debug)]
pub enum OpenError {
    /// The server answered with a status other than 200.
    Status(u16, String),
    /// Socket trouble.
    Io(String),
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

impl SseConnection {
    /// `GET path` on `addr`, with `Last-Event-ID` when given.
    pub async fn open(
        addr: std::net::SocketAddr,
        path: &str,
        last_event_id: Option<&str>,
    ) -> Result<Self, OpenError> {
        let io = |e: std::io::Error| OpenError::Io(e.to_string());
        let mut socket = TcpStream::connect(addr).await.map_err(io)?;
        let mut request =
            format!("GET {path} HTTP/1.1\r\nHost: checker\r\nAccept: text/event-stream\r\n");
        if let Some(id) = last_event_id {
            request.push_str(&format!("Last-Event-ID: {id}\r\n"));
        }
        request.push_str("\r\n");
        socket.write_all(request.as_bytes()).await.map_err(io)?;
        let mut raw = Vec::new();
        let head_end = loop {
            if let Some(i) = find(&raw, b"\r\n\r\n") {
                break i;
            }
            let mut buf = [0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(30), socket.read(&mut buf))
                .await
                .map_err(|_| OpenError::Io("no response head in 30 s".into()))?
                .map_err(io)?;
            if n == 0 {
                return Err(OpenError::Io("closed before the response head".into()));
            }
            raw.extend_from_slice(&buf[..n]);
        };
        let head = String::from_utf8_lossy(&raw[..head_end]).to_string();
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let rest = raw.split_off(head_end + 4);
        let mut conn = SseConnection {
            socket,
            framing: Framing::of(&head),
            raw: rest,
            body: Vec::new(),
            done: false,
        };
        if status != 200 {
            let mut text = Vec::new();
            while conn.fill().await {
                text.extend_from_slice(&conn.body);
                conn.body.clear();
                if text.len() > 4096 {
                    break;
                }
            }
            text.extend_from_slice(&conn.body);
            return Err(OpenError::Status(
                status,
                String::from_utf8_lossy(&text).into_owned(),
            ));
        }
        Ok(conn)
    }

    /// Move what `raw` holds of the body into `body`; `false` at the end.
    fn decode(&mut self) -> bool {
        match self.framing {
            Framing::Chunked => self.decode_chunks(),
            Framing::Length(due) => {
                let n = due.min(self.raw.len());
                self.body.extend(self.raw.drain(..n));
                self.framing = Framing::Length(due - n);
                if due == n {
                    self.done = true;
                }
                !self.done
            }
            Framing::UntilClose => {
                self.body.append(&mut self.raw);
                !self.done
            }
        }
    }

    /// Decode complete chunks from `raw` into `body`; `false` at the end.
    fn decode_chunks(&mut self) -> bool {
        loop {
            let Some(line_end) = find(&self.raw, b"\r\n") else {
                return true;
            };
            let size_text = String::from_utf8_lossy(&self.raw[..line_end]).to_string();
            let Ok(size) = usize::from_str_radix(size_text.trim(), 16) else {
                self.done = true;
                return false;
            };
            if size == 0 {
                self.done = true;
                return false;
            }
            if self.raw.len() < line_end + 2 + size + 2 {
                return true;
            }
            let start = line_end + 2;
            self.body.extend_from_slice(&self.raw[start..start + size]);
            self.raw.drain(..start + size + 2);
        }
    }

    /// Add to the body: from bytes already received if they hold more of
    /// it, else from the socket; `false` when the body ended.
    async fn fill(&mut self) -> bool {
        let before = self.body.len();
        let open = self.decode();
        if self.body.len() > before {
            return true;
        }
        if !open || self.done {
            return false;
        }
        let mut buf = [0u8; 16384];
        match self.socket.read(&mut buf).await {
            Ok(0) | Err(_) => {
                self.done = true;
                self.raw.clear();
                false
            }
            Ok(n) => {
                self.raw.extend_from_slice(&buf[..n]);
                true
            }
        }
    }

    /// The next message (comments skipped); `None` when the body ended.
    pub async fn next(&mut self) -> Option<Message> {
        loop {
            if let Some(end) = find(&self.body, b"\n\n") {
                let block: Vec<u8> = self.body.drain(..end + 2).collect();
                let text = String::from_utf8_lossy(&block);
                let mut m = Message::default();
                for line in text.lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        m.id = Some(v.to_owned());
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        m.event = Some(v.to_owned());
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        m.data = Some(v.to_owned());
                    }
                }
                if m == Message::default() {
                    continue;
                }
                return Some(m);
            }
            if self.done && self.raw.is_empty() {
                return None;
            }
            if !self.fill().await && find(&self.body, b"\n\n").is_none() {
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_secs(10);

    /// A server that answers the one request with `response` in a single
    /// write and keeps the connection open until the client leaves.
    async fn serve_once(response: &'static str) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while find(&request, b"\r\n\r\n").is_none() {
                let n = socket.read(&mut buf).await.unwrap();
                assert!(n > 0, "the client left before its request");
                request.extend_from_slice(&buf[..n]);
            }
            socket.write_all(response.as_bytes()).await.unwrap();
            while socket.read(&mut buf).await.is_ok_and(|n| n > 0) {}
        });
        addr
    }

    #[tokio::test]
    async fn messages_that_arrive_with_the_head_are_read_without_waiting_for_more() {
        let addr = serve_once(
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n\
             9\r\nid: c-1\n\n\r\n1b\r\nid: c-2\nevent: e\ndata: {}\n\n\r\n",
        )
        .await;
        let mut conn = tokio::time::timeout(WAIT, SseConnection::open(addr, "/s", Some("c-0")))
            .await
            .expect("the head arrived")
            .expect("200");
        let first = tokio::time::timeout(WAIT, conn.next())
            .await
            .expect("the message that came with the head is read at once");
        assert_eq!(first.and_then(|m| m.id).as_deref(), Some("c-1"));
        let second = tokio::time::timeout(WAIT, conn.next())
            .await
            .expect("the second message is read at once")
            .expect("a message");
        assert_eq!(second.id.as_deref(), Some("c-2"));
        assert_eq!(second.data.as_deref(), Some("{}"));
    }

    #[tokio::test]
    async fn an_error_body_with_a_content_length_ends_on_a_kept_alive_connection() {
        let addr = serve_once(
            "HTTP/1.1 410 Gone\r\ncontent-type: application/json\r\ncontent-length: 27\r\n\r\n\
             {\"error\":\"cursor_expired\"}\n",
        )
        .await;
        let opened = tokio::time::timeout(WAIT, SseConnection::open(addr, "/s", Some("c-0")))
            .await
            .expect("the error is read without waiting for the server to close");
        match opened {
            Err(OpenError::Status(410, body)) => {
                assert_eq!(body, "{\"error\":\"cursor_expired\"}\n")
            }
            Err(other) => panic!("{other:?}"),
            Ok(_) => panic!("a 410 opened a stream"),
        }
    }
}
