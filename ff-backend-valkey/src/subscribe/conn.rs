//! [`Conn`]: a connection of the subscription path (TCP or TLS, opened by
//! [`Endpoint::connect`]), driven by the task that owns it (a stream's
//! wake-up; or split into the halves of a [`super::node_conn::NodeConn`]),
//! speaking RESP2 through [`crate::resp`], every reply bounded by what was
//! asked ([`crate::limits`]). Dropping it closes the socket.

use std::fmt;
use std::io;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::limits::{self, ReplyLimit};
use crate::resp::{self, Parser, ProtocolError, Token};
use crate::transport::{Endpoint, Stream};

/// A failed exchange on a [`Conn`].
#[derive(Debug)]
pub(crate) enum ConnError {
    /// The socket failed or closed.
    Io(io::Error),
    /// No reply within the timeout.
    Timeout(Duration),
    /// The server sent something that is not RESP2.
    Protocol(String),
    /// The server answered with an error reply (`-CODE text`).
    Server(String),
}

impl fmt::Display for ConnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(e) => write!(f, "{e}"),
            Self::Timeout(d) => write!(f, "no reply within {d:?}"),
            Self::Protocol(why) => write!(f, "protocol error: {why}"),
            Self::Server(msg) => write!(f, "server error: {msg}"),
        }
    }
}

impl std::error::Error for ConnError {}

impl ConnError {
    /// Whether retrying on a new connection, later, can succeed: every
    /// connection failure, and the server's transient states.
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            Self::Io(_) | Self::Timeout(_) | Self::Protocol(_) => true,
            Self::Server(msg) => [
                "LOADING",
                "BUSY",
                "TRYAGAIN",
                "MASTERDOWN",
                "CLUSTERDOWN",
                "READONLY",
                "UNBLOCKED",
                "REDIRECT",
            ]
            .iter()
            .any(|code| msg.starts_with(code)),
        }
    }
}

impl ConnError {
    /// The same error (an I/O error's kind and text), for one more caller.
    pub(crate) fn duplicate(&self) -> Self {
        match self {
            Self::Io(e) => Self::Io(io::Error::new(e.kind(), e.to_string())),
            Self::Timeout(d) => Self::Timeout(*d),
            Self::Protocol(why) => Self::Protocol(why.clone()),
            Self::Server(msg) => Self::Server(msg.clone()),
        }
    }
}

impl From<io::Error> for ConnError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

impl From<ProtocolError> for ConnError {
    fn from(e: ProtocolError) -> Self {
        Self::Protocol(e.0)
    }
}

/// One complete reply: its bytes and its tokens (ranges into the bytes).
pub(crate) struct Reply {
    pub(crate) data: Bytes,
    pub(crate) tokens: Vec<Token>,
}

impl Reply {
    /// The bytes of a string token.
    pub(crate) fn bytes(&self, r: &std::ops::Range<usize>) -> &[u8] {
        &self.data[r.clone()]
    }

    /// `Err(Server)` when the reply is an error reply.
    pub(crate) fn check(self) -> Result<Self, ConnError> {
        match self.tokens.first() {
            Some(Token::Error(r)) => Err(ConnError::Server(
                String::from_utf8_lossy(self.bytes(r)).into_owned(),
            )),
            _ => Ok(self),
        }
    }
}

/// A subscription's connection.
pub(crate) struct Conn {
    stream: Stream,
    buf: BytesMut,
    parser: Parser,
    out: Vec<u8>,
}

impl Conn {
    /// Connect (over TLS when the endpoint says so), authenticate, select
    /// the database and set the client name.
    pub(crate) async fn open(
        endpoint: &Endpoint,
        name: &str,
        connect_timeout: Duration,
    ) -> Result<Self, ConnError> {
        let stream = endpoint.connect(connect_timeout).await?;
        let mut conn = Self {
            stream,
            buf: BytesMut::with_capacity(64 * 1024),
            parser: Parser::default(),
            out: Vec::with_capacity(512),
        };
        let redis = &endpoint.redis;
        let mut replies = 1;
        if let Some(password) = &redis.password {
            match &redis.username {
                Some(user) => conn.push(&[b"AUTH", user.as_bytes(), password.as_bytes()]),
                None => conn.push(&[b"AUTH", password.as_bytes()]),
            }
            replies += 1;
        }
        if redis.db != 0 {
            conn.push(&[b"SELECT", redis.db.to_string().as_bytes()]);
            replies += 1;
        }
        conn.push(&[b"CLIENT", b"SETNAME", name.as_bytes()]);
        let setup = async {
            conn.flush().await?;
            for _ in 0..replies {
                conn.read(limits::SMALL_REPLY).await?.check()?;
            }
            Ok::<_, ConnError>(())
        };
        match tokio::time::timeout(connect_timeout, setup).await {
            Ok(Ok(())) => Ok(conn),
            Ok(Err(ConnError::Io(e))) => Err(ConnError::Io(io::Error::new(
                e.kind(),
                endpoint.setup_hint(&format!("the connection failed during setup ({e})")),
            ))),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ConnError::Io(io::Error::new(
                io::ErrorKind::TimedOut,
                endpoint.setup_hint(&format!(
                    "no reply to the connection setup within {connect_timeout:?}"
                )),
            ))),
        }
    }

    /// The socket and whatever was read from it past the last reply.
    pub(crate) fn into_parts(self) -> (Stream, BytesMut) {
        (self.stream, self.buf)
    }

    /// Queue one command (sent by [`Conn::flush`]).
    pub(crate) fn push(&mut self, args: &[&[u8]]) {
        resp::encode(&mut self.out, args);
    }

    /// Send every queued command. Over TLS, `write_all` may leave the
    /// last records in the session's buffer (it accepts bytes once they
    /// are encrypted, not once they are on the socket), so the stream is
    /// flushed too: otherwise a command can sit unsent while we wait for
    /// its reply.
    pub(crate) async fn flush(&mut self) -> Result<(), ConnError> {
        let mut result = self.stream.write_all(&self.out).await;
        if result.is_ok() {
            result = self.stream.flush().await;
        }
        self.out.clear();
        Ok(result?)
    }

    /// Read the next reply (error replies included: see [`Reply::check`]);
    /// a reply larger than `limit` is a protocol error.
    pub(crate) async fn read(&mut self, limit: ReplyLimit) -> Result<Reply, ConnError> {
        loop {
            if let Some(end) = self.parser.advance(&self.buf, limit)? {
                let tokens = self.parser.take();
                let data = self.buf.split_to(end).freeze();
                return Ok(Reply { data, tokens });
            }
            if self.buf.capacity() - self.buf.len() < 16 * 1024 {
                self.buf.reserve(64 * 1024);
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(ConnError::Io(io::ErrorKind::UnexpectedEof.into()));
            }
        }
    }
}
