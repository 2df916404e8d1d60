//! [`NodeConn`]: the one connection to a node on which every subscription
//! of a backend sends its paired reads (lean RESP2, see [`super::conn`]),
//! pipelined: requests are written as they come, in order, and each reply
//! goes back to the request it answers. Publishes and other commands go
//! on the router's connection, so a large catch-up page never holds a
//! publish up behind it on one socket.
//!
//! Invariants: replies are matched to requests by order alone, and a
//! request's bytes are written contiguously (an `ASKING` goes with the
//! command it is for); each reply is bounded by the limit its request
//! gave ([`crate::limits`]), so a reply larger than asked is a protocol
//! error that ends the connection, never a buffer that grows; the task
//! that drives the socket never waits on a requester (a reply is handed
//! over, or dropped when its requester has gone). A connection that
//! failed, or that a requester gave up on, is never handed out again, and
//! the socket closes once the last subscription holding it lets go.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::conn::{Conn, ConnError, Reply};
use crate::limits::ReplyLimit;
use crate::resp::{self, Parser};
use crate::routing::NodeAddr;
use crate::transport::{Endpoint, Stream};

/// Commands sent together, and the limit of each one's reply.
#[derive(Default)]
pub(crate) struct Request {
    out: Vec<u8>,
    limits: Vec<ReplyLimit>,
}

impl Request {
    /// Add a command whose reply may be at most `limit`.
    pub(crate) fn push(&mut self, args: &[&[u8]], limit: ReplyLimit) {
        resp::encode(&mut self.out, args);
        self.limits.push(limit);
    }
}

/// The replies of a request, once they came.
pub(crate) type Replies = oneshot::Receiver<Result<Vec<Reply>, ConnError>>;

struct Queued {
    request: Request,
    reply: oneshot::Sender<Result<Vec<Reply>, ConnError>>,
}

struct Awaited {
    limits: Vec<ReplyLimit>,
    reply: oneshot::Sender<Result<Vec<Reply>, ConnError>>,
}

/// A node's shared read connection; see the module docs.
pub(crate) struct NodeConn {
    requests: mpsc::UnboundedSender<Queued>,
    broken: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl Drop for NodeConn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl NodeConn {
    async fn open(
        endpoint: &Endpoint,
        name: &str,
        connect_timeout: Duration,
    ) -> Result<Self, ConnError> {
        let (stream, buf) = Conn::open(endpoint, name, connect_timeout)
            .await?
            .into_parts();
        let (requests, rx) = mpsc::unbounded_channel();
        let broken = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(drive(stream, buf, rx, broken.clone()));
        Ok(Self {
            requests,
            broken,
            task,
        })
    }

    /// Send `request`; its replies come on the receiver (an error when the
    /// connection failed first).
    pub(crate) fn send(&self, request: Request) -> Replies {
        let (reply, rx) = oneshot::channel();
        if let Err(mpsc::error::SendError(queued)) = self.requests.send(Queued { request, reply }) {
            let _ = queued.reply.send(Err(closed()));
        }
        rx
    }

    /// Whether the connection failed or was given up on.
    pub(crate) fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Acquire) || self.task.is_finished()
    }

    /// Never hand this connection out again (a reply did not come in
    /// time, or broke the protocol): requests already sent on it finish
    /// or fail on their own.
    pub(crate) fn discard(&self) {
        self.broken.store(true, Ordering::Release);
    }
}

/// The replies of a request sent with [`NodeConn::send`], within `timeout`.
pub(crate) async fn replies(rx: Replies, timeout: Duration) -> Result<Vec<Reply>, ConnError> {
    match tokio::time::timeout(timeout, rx).await {
        Ok(Ok(replies)) => replies,
        Ok(Err(_)) => Err(closed()),
        Err(_) => Err(ConnError::Timeout(timeout)),
    }
}

fn closed() -> ConnError {
    ConnError::Io(io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "the connection closed before the reply came",
    ))
}

/// Write requests as they come and read their replies in order, until the
/// socket fails or the connection is dropped.
async fn drive(
    stream: Stream,
    mut buf: BytesMut,
    mut requests: mpsc::UnboundedReceiver<Queued>,
    broken: Arc<AtomicBool>,
) {
    let (mut rd, mut wr) = tokio::io::split(stream);
    let (awaited_tx, mut awaited) = mpsc::unbounded_channel::<Awaited>();
    let write = async move {
        let mut out = Vec::with_capacity(4096);
        while let Some(first) = requests.recv().await {
            out.clear();
            let mut next = Some(first);
            while let Some(Queued { request, reply }) = next {
                out.extend_from_slice(&request.out);
                let _ = awaited_tx.send(Awaited {
                    limits: request.limits,
                    reply,
                });
                next = requests.try_recv().ok();
            }
            if wr.write_all(&out).await.is_err() || wr.flush().await.is_err() {
                return;
            }
        }
    };
    let read = async move {
        let mut parser = Parser::default();
        loop {
            let next = if buf.is_empty() {
                // Idle: notice a socket the server closed meanwhile.
                tokio::select! {
                    next = awaited.recv() => next,
                    read = rd.read_buf(&mut buf) => match read {
                        Ok(0) | Err(_) => return,
                        Ok(_) => continue,
                    },
                }
            } else {
                awaited.recv().await
            };
            let Some(Awaited { limits, reply }) = next else {
                return;
            };
            let mut replies = Vec::with_capacity(limits.len());
            for limit in limits {
                match read_reply(&mut rd, &mut buf, &mut parser, limit).await {
                    Ok(r) => replies.push(r),
                    Err(e) => {
                        let _ = reply.send(Err(e));
                        return;
                    }
                }
            }
            let _ = reply.send(Ok(replies));
        }
    };
    tokio::select! {
        () = write => {}
        () = read => {}
    }
    broken.store(true, Ordering::Release);
}

async fn read_reply(
    rd: &mut tokio::io::ReadHalf<Stream>,
    buf: &mut BytesMut,
    parser: &mut Parser,
    limit: ReplyLimit,
) -> Result<Reply, ConnError> {
    loop {
        if let Some(end) = parser.advance(buf, limit)? {
            let tokens = parser.take();
            let data = buf.split_to(end).freeze();
            return Ok(Reply { data, tokens });
        }
        if buf.capacity() - buf.len() < 16 * 1024 {
            buf.reserve(64 * 1024);
        }
        if rd.read_buf(buf).await? == 0 {
            return Err(ConnError::Io(io::ErrorKind::UnexpectedEof.into()));
        }
    }
}

/// What a [`NodeConns`] knows of one node: the open connection, or the
/// opening under way.
#[derive(Default)]
struct Slot {
    conn: Weak<NodeConn>,
    opening: Option<watch::Receiver<Option<Opened>>>,
}

/// The outcome of an opening, for every caller waiting on it.
type Opened = Result<Arc<NodeConn>, Arc<ConnError>>;

/// One backend's [`NodeConn`]s, one per node while a subscription holds
/// it. An opening runs on a task of its own and callers wait for its
/// outcome without holding any lock, so a caller that is not polled for
/// a while (its subscription's consumer is slow) never holds up another.
#[derive(Default)]
pub(crate) struct NodeConns {
    nodes: Arc<Mutex<HashMap<NodeAddr, Slot>>>,
}

impl NodeConns {
    /// The connection to `node` (opened when there is none that works;
    /// concurrent callers share one opening).
    pub(crate) async fn get(
        &self,
        node: &NodeAddr,
        endpoint: &Endpoint,
        name: &str,
        connect_timeout: Duration,
    ) -> Result<Arc<NodeConn>, ConnError> {
        let mut opened = {
            let mut nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
            let slot = nodes.entry(node.clone()).or_default();
            if let Some(conn) = slot.conn.upgrade().filter(|c| !c.is_broken()) {
                return Ok(conn);
            }
            match &slot.opening {
                Some(opening) => opening.clone(),
                None => {
                    let (tx, rx) = watch::channel(None);
                    slot.opening = Some(rx.clone());
                    let (nodes, node) = (Arc::downgrade(&self.nodes), node.clone());
                    let (endpoint, name) = (endpoint.clone(), name.to_owned());
                    tokio::spawn(async move {
                        let result = NodeConn::open(&endpoint, &name, connect_timeout)
                            .await
                            .map(Arc::new);
                        if let Some(nodes) = nodes.upgrade() {
                            let mut nodes = nodes.lock().unwrap_or_else(|e| e.into_inner());
                            let slot = nodes.entry(node).or_default();
                            slot.opening = None;
                            if let Ok(conn) = &result {
                                slot.conn = Arc::downgrade(conn);
                            }
                        }
                        let _ = tx.send(Some(result.map_err(Arc::new)));
                    });
                    rx
                }
            }
        };
        let outcome = match opened.wait_for(Option::is_some).await {
            Ok(outcome) => outcome.clone(),
            Err(_) => None,
        };
        match outcome {
            Some(Ok(conn)) => Ok(conn),
            Some(Err(e)) => Err(e.duplicate()),
            None => Err(closed()),
        }
    }

    /// Hand out no connection to `node` that is open now (it was demoted
    /// or stopped answering: the next read opens a new one).
    pub(crate) fn discard(&self, node: &NodeAddr) {
        let nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(conn) = nodes.get(node).and_then(|slot| slot.conn.upgrade()) {
            conn.discard();
        }
    }
}
