//! Opening named connections, and the backend's shared multiplexed
//! connection, replaced after it breaks.

use std::io;
use std::sync::Mutex;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Cmd, Pipeline, RedisError, RedisResult, Value};

use crate::error::breaks_connection;
use crate::transport::Endpoint;

/// Open a multiplexed connection to `endpoint` (over TLS when it says so)
/// named `name` (`CLIENT SETNAME`), so an operator (or a test) can find it
/// in `CLIENT LIST`. Its I/O runs on a task of its own, which ends when
/// the last clone of the connection is dropped.
pub(crate) async fn open(
    endpoint: &Endpoint,
    name: &str,
    connect_timeout: Duration,
    response_timeout: Duration,
) -> RedisResult<MultiplexedConnection> {
    let stream = endpoint.connect(connect_timeout).await?;
    let config = AsyncConnectionConfig::new().set_response_timeout(response_timeout);
    let setup = async {
        let (mut conn, driver) =
            MultiplexedConnection::new_with_config(&endpoint.redis, stream, config).await?;
        tokio::spawn(driver);
        let reply = conn
            .send_packed_command(redis::cmd("CLIENT").arg("SETNAME").arg(name))
            .await?;
        reply.extract_error()?;
        Ok::<_, RedisError>(conn)
    };
    match tokio::time::timeout(connect_timeout, setup).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) if e.is_io_error() || e.is_unrecoverable_error() => Err(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            endpoint.setup_hint(&format!("the connection failed during setup ({e})")),
        )
        .into()),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            endpoint.setup_hint(&format!(
                "no reply to the connection setup within {connect_timeout:?}"
            )),
        )
        .into()),
    }
}

/// The connection ordinary commands (publishes, catch-up reads, bounds)
/// share. Requests are pipelined on it; when a request fails in a way that
/// breaks the connection, the next request opens a new one.
pub(crate) struct SharedConnection {
    endpoint: Endpoint,
    name: String,
    connect_timeout: Duration,
    response_timeout: Duration,
    current: Mutex<Option<(u64, MultiplexedConnection)>>,
    opening: tokio::sync::Mutex<u64>,
}

impl SharedConnection {
    /// A connection that opens lazily.
    pub(crate) fn new(
        endpoint: Endpoint,
        name: String,
        connect_timeout: Duration,
        response_timeout: Duration,
    ) -> Self {
        Self {
            endpoint,
            name,
            connect_timeout,
            response_timeout,
            current: Mutex::new(None),
            opening: tokio::sync::Mutex::new(0),
        }
    }

    fn cached(&self) -> Option<(u64, MultiplexedConnection)> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The current connection (opening one if there is none) and its
    /// generation.
    async fn get(&self) -> RedisResult<(u64, MultiplexedConnection)> {
        if let Some(c) = self.cached() {
            return Ok(c);
        }
        let mut generation = self.opening.lock().await;
        if let Some(c) = self.cached() {
            return Ok(c);
        }
        let conn = open(
            &self.endpoint,
            &self.name,
            self.connect_timeout,
            self.response_timeout,
        )
        .await?;
        *generation += 1;
        let entry = (*generation, conn);
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(entry.clone());
        Ok(entry)
    }

    /// Forget generation `generation` if it is still current.
    fn discard(&self, generation: u64) {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if matches!(&*current, Some((g, _)) if *g == generation) {
            *current = None;
        }
    }

    /// Make sure a connection is open (used to fail fast at connect time).
    pub(crate) async fn ensure_open(&self) -> RedisResult<()> {
        self.get().await.map(drop)
    }

    /// Send one command; the raw reply (a server error is `Ok(Value::ServerError)`).
    pub(crate) async fn command(&self, cmd: &Cmd) -> RedisResult<Value> {
        let (generation, mut conn) = self.get().await?;
        let result = conn.send_packed_command(cmd).await;
        if let Err(e) = &result {
            if breaks_connection(e) {
                self.discard(generation);
            }
        }
        result
    }

    /// Send a `MULTI`/`EXEC` pipeline; the raw `EXEC` reply (an array with
    /// one reply per command, `Nil` if the transaction was aborted).
    pub(crate) async fn transaction(&self, pipe: &Pipeline) -> RedisResult<Value> {
        debug_assert!(pipe.is_transaction());
        let (generation, mut conn) = self.get().await?;
        let result = conn
            .send_packed_commands(pipe, pipe.len() + 1, 1)
            .await
            .map(|mut replies| replies.pop().unwrap_or(Value::Nil));
        if let Err(e) = &result {
            if breaks_connection(e) {
                self.discard(generation);
            }
        }
        result
    }
}
