//! Opening named connections, and the backend's shared multiplexed
//! connection, replaced after it breaks.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Cmd, ErrorKind, Pipeline, RedisError, RedisResult, Value};

use tokio::task::JoinHandle;

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
    open_driven(endpoint, name, connect_timeout, response_timeout)
        .await
        .map(|(conn, _)| conn)
}

/// [`open`], also returning the task that drives the connection's I/O: it
/// has finished once the connection is closed.
async fn open_driven(
    endpoint: &Endpoint,
    name: &str,
    connect_timeout: Duration,
    response_timeout: Duration,
) -> RedisResult<(MultiplexedConnection, JoinHandle<()>)> {
    let stream = endpoint.connect(connect_timeout).await?;
    let config = AsyncConnectionConfig::new().set_response_timeout(response_timeout);
    let setup = async {
        let (mut conn, driver) =
            MultiplexedConnection::new_with_config(&endpoint.redis, stream, config).await?;
        let driver = tokio::spawn(driver);
        let reply = conn
            .send_packed_command(redis::cmd("CLIENT").arg("SETNAME").arg(name))
            .await?;
        reply.extract_error()?;
        Ok::<_, RedisError>((conn, driver))
    };
    match tokio::time::timeout(connect_timeout, setup).await {
        Ok(Ok(conn)) => Ok(conn),
        // The server answered, refusing the credentials: nothing about TLS.
        Ok(Err(e)) if e.kind() == ErrorKind::AuthenticationFailed => Err(e),
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

/// A [`SharedConnection`]'s open connection.
struct Current {
    generation: u64,
    conn: MultiplexedConnection,
    driver: JoinHandle<()>,
    /// Whether a request on it got its reply.
    answered: Arc<AtomicBool>,
}

/// The connection ordinary commands (publishes, catch-up reads, bounds)
/// share. Requests are pipelined on it; when a request fails in a way that
/// breaks the connection, the next request opens a new one. A connection
/// that breaks before any request on it was answered (its setup was)
/// fails those requests with a `ParseError` saying so: the client
/// crate reports a reply it cannot parse only as the connection closing,
/// and a server that garbles every reply looks exactly like that.
pub(crate) struct SharedConnection {
    endpoint: Endpoint,
    name: String,
    connect_timeout: Duration,
    response_timeout: Duration,
    current: Mutex<Option<Current>>,
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

    /// The open connection, unless its I/O task has ended (the server
    /// closed it): a request on it would fail without reaching the server,
    /// and could not tell that it did not.
    fn cached(&self) -> Option<(u64, MultiplexedConnection)> {
        self.cached_with_answered().map(|(g, conn, _)| (g, conn))
    }

    fn cached_with_answered(&self) -> Option<(u64, MultiplexedConnection, Arc<AtomicBool>)> {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if current.as_ref().is_some_and(|c| c.driver.is_finished()) {
            *current = None;
        }
        current
            .as_ref()
            .map(|c| (c.generation, c.conn.clone(), c.answered.clone()))
    }

    /// Whether generation `generation` got a reply to a request.
    fn answered(&self, generation: u64) -> Option<Arc<AtomicBool>> {
        let current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        current
            .as_ref()
            .filter(|c| c.generation == generation)
            .map(|c| c.answered.clone())
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
        let (conn, driver) = open_driven(
            &self.endpoint,
            &self.name,
            self.connect_timeout,
            self.response_timeout,
        )
        .await?;
        *generation += 1;
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(Current {
            generation: *generation,
            conn: conn.clone(),
            driver,
            answered: Arc::new(AtomicBool::new(false)),
        });
        Ok((*generation, conn))
    }

    /// Forget generation `generation` if it is still current.
    fn discard(&self, generation: u64) {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if matches!(&*current, Some(c) if c.generation == generation) {
            *current = None;
        }
    }

    /// Make sure a connection is open (used to fail fast at connect time).
    pub(crate) async fn ensure_open(&self) -> RedisResult<()> {
        self.get().await.map(drop)
    }

    /// Send one command; the raw reply (a server error is `Ok(Value::ServerError)`).
    pub(crate) async fn command(&self, cmd: &Cmd) -> Result<Value, SendError> {
        let (generation, mut conn) = self.get().await.map_err(SendError::Connect)?;
        let result = conn.send_packed_command(cmd).await;
        self.check(generation, result)
    }

    /// Send an atomic pipeline (`MULTI`/`EXEC` around its commands): the
    /// raw `EXEC` reply (an array with one reply per command, or a refusal
    /// of the transaction as `Value::ServerError`); a command refused while
    /// queueing is the error.
    pub(crate) async fn transaction(&self, pipe: &Pipeline) -> Result<Value, SendError> {
        debug_assert!(pipe.is_transaction());
        let (generation, mut conn) = self.get().await.map_err(SendError::Connect)?;
        let result = conn
            .send_packed_commands(pipe, pipe.len() + 1, 1)
            .await
            .map(|mut replies| replies.pop().unwrap_or(Value::Nil));
        self.check(generation, result)
    }

    /// Send a pipeline and return every reply, in order (server errors as
    /// `Value::ServerError`). The pipeline is written as it is: callers
    /// spell out `MULTI`/`EXEC` (and `ASKING`) themselves.
    pub(crate) async fn pipeline(&self, pipe: &Pipeline) -> Result<Vec<Value>, SendError> {
        debug_assert!(!pipe.is_transaction());
        let (generation, mut conn) = self.get().await.map_err(SendError::Connect)?;
        let result = conn.send_packed_commands(pipe, 0, pipe.len()).await;
        self.check(generation, result)
    }

    /// [`SharedConnection::pipeline`], also answering the generation of
    /// the connection it was sent on.
    pub(crate) async fn pipeline_tagged(
        &self,
        pipe: &Pipeline,
    ) -> Result<(u64, Vec<Value>), SendError> {
        debug_assert!(!pipe.is_transaction());
        let (generation, mut conn) = self.get().await.map_err(SendError::Connect)?;
        let result = conn.send_packed_commands(pipe, 0, pipe.len()).await;
        self.check(generation, result).map(|r| (generation, r))
    }

    /// Send `cmd` on generation `generation` of the connection only: when
    /// that one was replaced, fail without sending (`Exchange`: what was
    /// sent on the old one may have been applied).
    pub(crate) async fn command_on(&self, generation: u64, cmd: &Cmd) -> Result<Value, SendError> {
        let conn = self
            .cached()
            .filter(|(g, _)| *g == generation)
            .map(|(_, conn)| conn);
        let Some(mut conn) = conn else {
            return Err(SendError::Exchange(
                io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    "the connection the write went on was lost before its acknowledgement was read",
                )
                .into(),
            ));
        };
        let result = conn.send_packed_command(cmd).await;
        self.check(generation, result)
    }

    fn check<T>(&self, generation: u64, result: RedisResult<T>) -> Result<T, SendError> {
        let answered = self.answered(generation);
        match result {
            Ok(reply) => {
                if let Some(answered) = answered {
                    answered.store(true, Ordering::Release);
                }
                Ok(reply)
            }
            Err(e) if breaks_connection(&e) => {
                self.discard(generation);
                let unanswered = answered.is_some_and(|a| !a.load(Ordering::Acquire));
                Err(SendError::Exchange(if unanswered {
                    RedisError::from((
                        ErrorKind::ParseError,
                        "no valid reply",
                        format!(
                            "the server broke the connection before answering any request on it ({e}): it sent a reply that is not valid RESP, or closed it"
                        ),
                    ))
                } else {
                    e
                }))
            }
            Err(e) => Err(SendError::Exchange(e)),
        }
    }
}

/// Why a request on a [`SharedConnection`] failed.
#[derive(Debug)]
pub(crate) enum SendError {
    /// No connection could be opened: nothing was sent.
    Connect(RedisError),
    /// The request may have been sent (and applied) before it failed.
    Exchange(RedisError),
}

impl SendError {
    /// The client error.
    pub(crate) fn into_inner(self) -> RedisError {
        match self {
            Self::Connect(e) | Self::Exchange(e) => e,
        }
    }
}
