//! [`AckedConnection`]: acknowledged writes (`with_replica_acks`) to one
//! node. They go on a connection of their own, so `WAIT` — which blocks
//! the connection it is sent on until enough replicas acknowledge or its
//! timeout passes — never holds up the commands on the node's shared
//! connection (subscribes, `bounds`, plain publishes). And they are
//! acknowledged as a group: one `WAIT` answers for every write whose reply
//! had arrived when it was sent (group commit), so concurrent acknowledged
//! publishes wait for their replicas together rather than one after
//! another.
//!
//! Invariant: a write's acknowledgement is the reply of a `WAIT` sent on
//! the same connection (the same generation of it) after that write's
//! reply arrived. `WAIT` counts the replicas holding everything the
//! connection wrote before it, and a connection runs its commands in
//! order, so that `WAIT` covers the write.

use std::sync::atomic::{AtomicU64, Ordering};

use redis::{Cmd, Pipeline, Value};

use crate::connection::{SendError, SharedConnection};

/// Which write a [`AckedConnection::acknowledged`] call waits for.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ticket {
    generation: u64,
    /// The write's place among the writes whose replies arrived.
    number: u64,
}

/// The last `WAIT` and what it covered.
struct Covered {
    generation: u64,
    /// It covers the writes numbered up to this one.
    through: u64,
    reply: Value,
}

/// A node's connection for acknowledged writes; see the module docs.
pub(crate) struct AckedConnection {
    conn: SharedConnection,
    /// Writes whose reply arrived, ever.
    completed: AtomicU64,
    /// The last `WAIT`; locked while one is in flight, so callers queue
    /// behind it and most find their write covered when it returns.
    last: tokio::sync::Mutex<Option<Covered>>,
}

impl AckedConnection {
    /// Acknowledged writes over `conn`.
    pub(crate) fn new(conn: SharedConnection) -> Self {
        Self {
            conn,
            completed: AtomicU64::new(0),
            last: tokio::sync::Mutex::new(None),
        }
    }

    /// Send `pipe` (written as it is); every reply, and the ticket to wait
    /// for its acknowledgement with.
    pub(crate) async fn write(&self, pipe: &Pipeline) -> Result<(Vec<Value>, Ticket), SendError> {
        let (generation, replies) = self.conn.pipeline_tagged(pipe).await?;
        let number = self.completed.fetch_add(1, Ordering::AcqRel) + 1;
        Ok((replies, Ticket { generation, number }))
    }

    /// The reply of a `wait` command that covers the ticket's write: one
    /// already answered, or one sent now. Fails when the write's
    /// connection was replaced before a `WAIT` covered it (the write is
    /// applied; whether replicas have it is unknown).
    pub(crate) async fn acknowledged(
        &self,
        ticket: Ticket,
        wait: &Cmd,
    ) -> Result<Value, SendError> {
        let mut last = self.last.lock().await;
        if let Some(covered) = last.as_ref() {
            if covered.generation == ticket.generation && covered.through >= ticket.number {
                return Ok(covered.reply.clone());
            }
        }
        let through = self.completed.load(Ordering::Acquire);
        let reply = self.conn.command_on(ticket.generation, wait).await?;
        *last = Some(Covered {
            generation: ticket.generation,
            through,
            reply: reply.clone(),
        });
        Ok(reply)
    }
}
