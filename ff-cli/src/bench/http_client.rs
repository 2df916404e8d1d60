//! A minimal HTTP/1.1 client for the SSE benchmark: one GET whose chunked
//! `text/event-stream` body is read incrementally, and one-shot POSTs.
//! Thousands of these are cheap, which is the point.

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Send a JSON `POST` and return the status code and body.
pub async fn post_json(port: u16, path: &str, body: &str) -> Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await?;
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf);
    let status = text
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .context("malformed HTTP response")?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    Ok((status, body))
}

/// `GET` a text resource (e.g. `/metrics`).
pub async fn get_text(port: u16, path: &str) -> Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("malformed HTTP response")?;
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut decoder = Dechunker::default();
        Ok(String::from_utf8_lossy(&decoder.feed(body.as_bytes())).into_owned())
    } else {
        Ok(body.to_owned())
    }
}

/// Incremental decoder of `Transfer-Encoding: chunked` bodies.
#[derive(Default)]
pub struct Dechunker {
    pending: Vec<u8>,
    /// Bytes left in the current chunk, `None` while reading a size line.
    remaining: Option<usize>,
}

impl Dechunker {
    /// Feed raw bytes; return the body bytes they complete.
    pub fn feed(&mut self, input: &[u8]) -> Vec<u8> {
        self.pending.extend_from_slice(input);
        let mut out = Vec::new();
        let mut pos = 0;
        loop {
            match self.remaining {
                Some(0) => {
                    // The CRLF after a chunk's data.
                    if self.pending.len() - pos < 2 {
                        break;
                    }
                    pos += 2;
                    self.remaining = None;
                }
                Some(n) => {
                    let take = n.min(self.pending.len() - pos);
                    if take == 0 {
                        break;
                    }
                    out.extend_from_slice(&self.pending[pos..pos + take]);
                    pos += take;
                    self.remaining = Some(n - take);
                }
                None => {
                    let Some(eol) = self.pending[pos..].windows(2).position(|w| w == b"\r\n")
                    else {
                        break;
                    };
                    let line = String::from_utf8_lossy(&self.pending[pos..pos + eol]).into_owned();
                    pos += eol + 2;
                    let size =
                        usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
                            .unwrap_or(0);
                    self.remaining = Some(size);
                }
            }
        }
        self.pending.drain(..pos);
        out
    }
}

/// An open SSE response: read with [`SseReader::next_chunk`].
pub struct SseReader {
    stream: TcpStream,
    dechunk: Dechunker,
    chunked: bool,
    buf: Vec<u8>,
}

impl SseReader {
    /// Open `GET path` and check the response is a `200` event stream.
    pub async fn open(port: u16, path: &str) -> Result<(Self, Vec<u8>)> {
        Self::open_after(port, path, None).await
    }

    /// [`SseReader::open`] resuming with a `Last-Event-ID`.
    pub async fn open_after(
        port: u16,
        path: &str,
        last_event_id: Option<&str>,
    ) -> Result<(Self, Vec<u8>)> {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
        let resume = last_event_id.map_or(String::new(), |id| format!("Last-Event-ID: {id}\r\n"));
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n{resume}\r\n"
        );
        stream.write_all(req.as_bytes()).await?;
        let mut head = Vec::new();
        let mut byte = [0u8; 4096];
        let body_start = loop {
            let n = stream.read(&mut byte).await?;
            if n == 0 {
                bail!("connection closed before the response head");
            }
            head.extend_from_slice(&byte[..n]);
            if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        let head_text = String::from_utf8_lossy(&head[..body_start]).to_ascii_lowercase();
        if !head_text.starts_with("http/1.1 200") {
            bail!(
                "SSE request answered {}",
                head_text.lines().next().unwrap_or("")
            );
        }
        let chunked = head_text.contains("transfer-encoding: chunked");
        let mut reader = Self {
            stream,
            dechunk: Dechunker::default(),
            chunked,
            buf: vec![0; 16 * 1024],
        };
        let first = reader.decode(&head[body_start..]);
        Ok((reader, first))
    }

    fn decode(&mut self, raw: &[u8]) -> Vec<u8> {
        if self.chunked {
            self.dechunk.feed(raw)
        } else {
            raw.to_vec()
        }
    }

    /// The next body bytes; empty at end of stream.
    pub async fn next_chunk(&mut self) -> Result<Vec<u8>> {
        loop {
            let n = self.stream.read(&mut self.buf).await?;
            if n == 0 {
                return Ok(Vec::new());
            }
            let raw = self.buf[..n].to_vec();
            let out = self.decode(&raw);
            if !out.is_empty() {
                return Ok(out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dechunker_handles_split_chunks() {
        let body = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
        let mut d = Dechunker::default();
        let mut out = Vec::new();
        for piece in body.chunks(3) {
            out.extend(d.feed(piece));
        }
        assert_eq!(out, b"hello world");
    }
}
