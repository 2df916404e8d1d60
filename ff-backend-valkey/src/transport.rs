//! [`Endpoint`]: where a server is and how to reach it — TCP, then TLS
//! when the URL asks for it — and the credentials and database every
//! connection starts with. Every connection the backend opens (the shared
//! one, each subscription's own, and a cluster client's per-node ones) is
//! opened by [`Endpoint::connect`], so all of them use the same TLS
//! configuration and TCP keepalive, and fail with the same one-line
//! messages.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use redis::RedisConnectionInfo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::tls::Tls;

/// A server and how to connect to it.
#[derive(Clone)]
pub(crate) struct Endpoint {
    /// Host name or IP address (no brackets), as in the URL.
    pub(crate) host: String,
    /// TCP port.
    pub(crate) port: u16,
    /// TLS, when the URL's scheme is `valkeys://` or `rediss://`.
    pub(crate) tls: Option<Arc<Tls>>,
    /// Database and credentials (`AUTH`, `SELECT`).
    pub(crate) redis: RedisConnectionInfo,
    /// TCP keepalive's idle time (probes then every [`KEEPALIVE_INTERVAL`],
    /// [`KEEPALIVE_PROBES`] of them); `None`: off.
    pub(crate) keepalive: Option<Duration>,
}

/// Time between two TCP keepalive probes.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
/// Unanswered TCP keepalive probes after which the connection fails.
const KEEPALIVE_PROBES: u32 = 3;

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("db", &self.redis.db)
            .field("username", &self.redis.username)
            .field("keepalive", &self.keepalive)
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// The account connections authenticate as: the URL's user name, or
    /// `default`.
    pub(crate) fn account(&self) -> &str {
        self.redis.username.as_deref().unwrap_or("default")
    }

    /// Open a byte stream to the server: TCP, then the TLS handshake when
    /// configured, all within `timeout`. `Err` is one line (an
    /// `io::Error` whose message says what to do).
    pub(crate) async fn connect(&self, timeout: Duration) -> io::Result<Stream> {
        let attempt = async {
            let tcp = TcpStream::connect((self.host.as_str(), self.port)).await?;
            tcp.set_nodelay(true)?;
            if let Some(idle) = self.keepalive {
                let keepalive = socket2::TcpKeepalive::new()
                    .with_time(idle)
                    .with_interval(KEEPALIVE_INTERVAL)
                    .with_retries(KEEPALIVE_PROBES);
                socket2::SockRef::from(&tcp).set_tcp_keepalive(&keepalive)?;
            }
            match &self.tls {
                None => Ok(Stream::Plain(tcp)),
                Some(tls) => tls
                    .handshake(&self.host, tcp)
                    .await
                    .map(|s| Stream::Tls(Box::new(s)))
                    .map_err(|why| io::Error::new(io::ErrorKind::ConnectionAborted, why)),
            }
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                match self.tls {
                    None => format!("no connection within {timeout:?}"),
                    Some(_) => format!(
                        "no TLS connection within {timeout:?}; is the server speaking TLS? (a plaintext server needs valkey://)"
                    ),
                },
            )),
        }
    }

    /// `failure` while setting up a connection (`AUTH`, `CLIENT SETNAME`),
    /// with a hint when it looks like a TLS server reached without TLS.
    pub(crate) fn setup_hint(&self, failure: &str) -> String {
        match &self.tls {
            None => format!("{failure} (if the server expects TLS, use valkeys://)"),
            // TLS 1.3 servers check the client certificate after the
            // client finished its handshake: the refusal comes as an alert
            // on the first read.
            Some(tls) if !tls.presents_client_cert() && failure.contains("alert") => format!(
                "{failure}; if the server requires a client certificate, pass client_cert= and client_key="
            ),
            Some(_) => failure.to_owned(),
        }
    }
}

/// A connection's byte stream: plain TCP or TLS over TCP.
pub(crate) enum Stream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn connect(keepalive: Option<Duration>) -> (TcpStream, tokio::net::TcpListener) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = Endpoint {
            host: "127.0.0.1".into(),
            port: listener.local_addr().unwrap().port(),
            tls: None,
            redis: RedisConnectionInfo::default(),
            keepalive,
        };
        match endpoint.connect(Duration::from_secs(5)).await.unwrap() {
            Stream::Plain(tcp) => (tcp, listener),
            Stream::Tls(_) => panic!("a plain endpoint gave a TLS stream"),
        }
    }

    #[tokio::test]
    async fn connections_carry_tcp_keepalive_as_configured() {
        let (tcp, _listener) = connect(Some(Duration::from_secs(2))).await;
        let socket = socket2::SockRef::from(&tcp);
        assert!(socket.keepalive().unwrap());
        assert_eq!(socket.tcp_keepalive_time().unwrap(), Duration::from_secs(2));
        assert_eq!(socket.tcp_keepalive_interval().unwrap(), KEEPALIVE_INTERVAL);
        assert_eq!(socket.tcp_keepalive_retries().unwrap(), KEEPALIVE_PROBES);
        let (tcp, _listener) = connect(None).await;
        assert!(!socket2::SockRef::from(&tcp).keepalive().unwrap());
    }
}
