//! A loopback TCP proxy a test controls, to black-hole connections.
//!
//! [`TcpProxy`] forwards each accepted connection to a target address
//! until [`TcpProxy::black_hole_existing`] is called: from then on the
//! connections accepted so far stay open but forward nothing in either
//! direction (what a client sees when a network partition or a moved
//! virtual IP swallows its packets without a reset), while connections
//! accepted later are forwarded normally; [`TcpProxy::retarget`] sends
//! later connections elsewhere. Dropping the proxy closes every
//! connection.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use super::SupportError;

/// One forwarded connection: both sockets, and whether it is black-holed.
struct Link {
    client: TcpStream,
    server: TcpStream,
    silenced: Arc<AtomicBool>,
}

struct Shared {
    links: Mutex<Vec<Link>>,
    accepted: AtomicUsize,
    stopped: AtomicBool,
    target: Mutex<SocketAddr>,
}

/// A forwarding proxy on a free loopback port.
pub struct TcpProxy {
    port: u16,
    shared: Arc<Shared>,
}

impl TcpProxy {
    /// Listen on a free loopback port and forward connections to `target`.
    pub fn start(target: SocketAddr) -> Result<Self, SupportError> {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .map_err(|e| SupportError::io("binding the proxy", e))?;
        let port = listener
            .local_addr()
            .map_err(|e| SupportError::io("reading the proxy's address", e))?
            .port();
        let shared = Arc::new(Shared {
            links: Mutex::new(Vec::new()),
            accepted: AtomicUsize::new(0),
            stopped: AtomicBool::new(false),
            target: Mutex::new(target),
        });
        let accepting = shared.clone();
        thread::Builder::new()
            .name("ff-test-proxy".into())
            .spawn(move || accept_loop(listener, accepting))
            .map_err(|e| SupportError::io("spawning the proxy thread", e))?;
        Ok(Self { port, shared })
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// How many connections the proxy has accepted so far.
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::Acquire)
    }

    /// Forward connections accepted from now on to `target` (a moved
    /// virtual IP); existing ones are left as they are.
    pub fn retarget(&self, target: SocketAddr) {
        *self.shared.target.lock().unwrap_or_else(|e| e.into_inner()) = target;
    }

    /// Stop forwarding on every connection accepted so far (both
    /// directions), keeping the sockets open; later connections are
    /// forwarded as usual.
    pub fn black_hole_existing(&self) {
        for link in self
            .shared
            .links
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            link.silenced.store(true, Ordering::Release);
        }
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::Release);
        for link in self
            .shared
            .links
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            let _ = link.client.shutdown(Shutdown::Both);
            let _ = link.server.shutdown(Shutdown::Both);
        }
        // Wake the accept loop so it sees `stopped`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for client in listener.incoming() {
        if shared.stopped.load(Ordering::Acquire) {
            return;
        }
        let Ok(client) = client else { continue };
        let target = *shared.target.lock().unwrap_or_else(|e| e.into_inner());
        let Ok(server) = TcpStream::connect(target) else {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let silenced = Arc::new(AtomicBool::new(false));
        let handles = (|| {
            Some((
                client.try_clone().ok()?,
                server.try_clone().ok()?,
                server.try_clone().ok()?,
                client.try_clone().ok()?,
            ))
        })();
        let Some((c_read, s_write, s_read, c_write)) = handles else {
            continue;
        };
        shared.accepted.fetch_add(1, Ordering::AcqRel);
        shared
            .links
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Link {
                client,
                server,
                silenced: silenced.clone(),
            });
        spawn_pump(c_read, s_write, silenced.clone());
        spawn_pump(s_read, c_write, silenced);
    }
}

/// Copy `from` to `to` until either side closes; while `silenced`, read
/// and discard.
fn spawn_pump(mut from: TcpStream, mut to: TcpStream, silenced: Arc<AtomicBool>) {
    let _ = thread::Builder::new()
        .name("ff-test-proxy-pump".into())
        .spawn(move || {
            let mut buf = [0u8; 16 * 1024];
            loop {
                match from.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if silenced.load(Ordering::Acquire) {
                            continue;
                        }
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
            if !silenced.load(Ordering::Acquire) {
                let _ = to.shutdown(Shutdown::Write);
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let addr = listener.local_addr().unwrap();
        thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                thread::spawn(move || {
                    let mut conn = conn;
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = conn.read(&mut buf) {
                        if n == 0 || conn.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    fn round_trip(conn: &mut TcpStream) -> std::io::Result<Vec<u8>> {
        conn.write_all(b"ping")?;
        let mut got = [0u8; 4];
        conn.read_exact(&mut got)?;
        Ok(got.to_vec())
    }

    #[test]
    fn black_holed_connections_stay_open_but_silent_and_new_ones_work() {
        let proxy = TcpProxy::start(echo_server()).unwrap();
        let mut old = TcpStream::connect(("127.0.0.1", proxy.port())).unwrap();
        assert_eq!(round_trip(&mut old).unwrap(), b"ping");
        proxy.black_hole_existing();
        old.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let err = round_trip(&mut old).expect_err("a black-holed connection answers nothing");
        assert!(
            matches!(
                err.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "the connection stays open: {err}"
        );
        let mut new = TcpStream::connect(("127.0.0.1", proxy.port())).unwrap();
        assert_eq!(round_trip(&mut new).unwrap(), b"ping");
        assert_eq!(proxy.accepted(), 2);
    }
}
