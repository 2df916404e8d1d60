//! Binding the gateway's listening socket with an accept queue sized for
//! reconnect storms.
//!
//! After a gateway restart every client reconnects within a second or two.
//! The kernel holds connections the server has not accepted yet in the
//! listening socket's accept queue; when it is full, new connection
//! attempts are dropped and each client retries only after 1, 3, 7, 15 s
//! and so on. A plain `TcpListener::bind` asks for 128 places, far fewer
//! than the clients a gateway serves; [`bind`] asks for
//! [`LISTEN_BACKLOG`] (the kernel caps it at `net.core.somaxconn`).

use std::io;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket};

/// Places asked for in the accept queue (the kernel may grant fewer).
pub const LISTEN_BACKLOG: u32 = 4096;

/// A listener on `addr` with an accept queue of [`LISTEN_BACKLOG`]
/// places, for [`Gateway::serve`](crate::Gateway::serve).
///
/// ```no_run
/// # async fn demo() -> std::io::Result<()> {
/// let listener = ff_http::bind("127.0.0.1:8080".parse().unwrap())?;
/// # let _ = listener; Ok(()) }
/// ```
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    // A restarted gateway binds again at once, though its old connections
    // linger in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_listener_accepts_a_connection() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) =
            tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
        assert!(client.is_ok() && accepted.is_ok());
    }
}
