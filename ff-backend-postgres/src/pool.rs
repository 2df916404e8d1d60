//! A small pool of publishing/query connections.
//!
//! `sqlx`'s pool pings every connection when it is returned (one more
//! round trip per publish, measured at about a quarter of single-event
//! publish throughput). Here a connection goes back to the pool only when
//! the operation that used it finished successfully — after an error or a
//! cancelled future its state is unknown, so it is closed instead — and
//! is reused without a ping — unless it sat idle for [`IDLE_CHECK`] or
//! longer: the server behind it may have restarted or failed over
//! meanwhile, and a publish on a dead connection fails, so such a
//! connection is pinged first and replaced if the ping fails. Steady
//! traffic pays nothing.
//!
//! Every operation run through [`with_conn!`] is bounded by the query
//! timeout: a server that stopped answering fails the call with
//! `Transport` in bounded time, and the connection is closed, never
//! reused.

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ff_core::engine_error::EngineError;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{map_sqlx, BACKEND};

/// How long a connection may sit idle before it is pinged on reuse.
pub(crate) const IDLE_CHECK: Duration = Duration::from_secs(1);

/// Up to `size` connections made with `options`.
pub(crate) struct ConnPool {
    options: PgConnectOptions,
    /// Idle connections, each with when it was returned.
    idle: Mutex<Vec<(PgConnection, Instant)>>,
    permits: Arc<Semaphore>,
    connect_timeout: Duration,
    query_timeout: Duration,
    closed: AtomicBool,
    /// The system identifier the newest connection reported.
    system: AtomicU64,
}

/// A connection checked out of a [`ConnPool`]. Call
/// [`PooledConn::release`] after a successful operation to return it;
/// dropped otherwise, it is closed.
pub(crate) struct PooledConn {
    conn: Option<PgConnection>,
    pool: Arc<ConnPool>,
    reusable: bool,
    _permit: OwnedSemaphorePermit,
}

impl ConnPool {
    /// A pool of at most `size` connections, none opened yet.
    pub fn new(
        options: PgConnectOptions,
        size: u32,
        connect_timeout: Duration,
        query_timeout: Duration,
    ) -> Arc<Self> {
        Arc::new(Self {
            options,
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(size as usize)),
            connect_timeout,
            query_timeout,
            closed: AtomicBool::new(false),
            system: AtomicU64::new(0),
        })
    }

    /// Check out a connection: an idle one, or a new one. Waits at most the
    /// connect timeout for a free slot and again for connecting.
    pub async fn acquire(self: &Arc<Self>) -> Result<PooledConn, EngineError> {
        let timed_out = |what: &str| {
            EngineError::transport(
                BACKEND,
                std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("{what} within {:?}", self.connect_timeout),
                ),
            )
        };
        if self.closed.load(Ordering::Acquire) {
            return Err(EngineError::transport(BACKEND, sqlx::Error::PoolClosed));
        }
        let permit =
            tokio::time::timeout(self.connect_timeout, self.permits.clone().acquire_owned())
                .await
                .map_err(|_| timed_out("no pooled connection became free"))?
                .map_err(|_| EngineError::transport(BACKEND, sqlx::Error::PoolClosed))?;
        let conn = match self.take_idle().await {
            Some(conn) => conn,
            None => tokio::time::timeout(self.connect_timeout, self.connect())
                .await
                .map_err(|_| timed_out("could not connect"))??,
        };
        Ok(PooledConn {
            conn: Some(conn),
            pool: self.clone(),
            reusable: false,
            _permit: permit,
        })
    }

    /// The most recently returned idle connection that is still alive:
    /// one idle for [`IDLE_CHECK`] or longer must answer a ping within
    /// the connect timeout, or it is dropped and the next one tried.
    async fn take_idle(&self) -> Option<PgConnection> {
        loop {
            let (mut conn, since) = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop()?;
            if since.elapsed() < IDLE_CHECK {
                return Some(conn);
            }
            if let Ok(Ok(())) = tokio::time::timeout(self.connect_timeout, conn.ping()).await {
                return Some(conn);
            }
        }
    }

    /// Open a connection and note the server's system identifier.
    async fn connect(&self) -> Result<PgConnection, EngineError> {
        let mut conn = self.options.connect().await.map_err(map_sqlx)?;
        let system: i64 = sqlx::query_scalar(crate::sql::SYSTEM_IDENTIFIER)
            .fetch_one(&mut conn)
            .await
            .map_err(map_sqlx)?;
        self.system.store(system as u64, Ordering::Release);
        Ok(conn)
    }

    /// The system identifier of the cluster the pool's newest connection
    /// reached (the one `0x05` cursors of its writes carry).
    pub fn system(&self) -> u64 {
        self.system.load(Ordering::Acquire)
    }

    /// The longest one operation on a pooled connection may take.
    pub fn query_timeout(&self) -> Duration {
        self.query_timeout
    }

    /// Run `op` within the query timeout; past it, a `Transport` error.
    pub async fn timed<T>(
        &self,
        op: impl std::future::Future<Output = Result<T, EngineError>>,
    ) -> Result<T, EngineError> {
        tokio::time::timeout(self.query_timeout, op)
            .await
            .unwrap_or_else(|_| {
                Err(EngineError::transport(
                    BACKEND,
                    std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!(
                            "the server did not answer within {:?} (query_timeout); \
                             the connection was closed",
                            self.query_timeout
                        ),
                    ),
                ))
            })
    }

    /// Close every idle connection; later acquires fail.
    pub async fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let idle = std::mem::take(&mut *self.idle.lock().unwrap_or_else(|e| e.into_inner()));
        for (conn, _) in idle {
            let _ = conn.close().await;
        }
    }
}

impl PooledConn {
    /// The operation succeeded: return the connection to the pool.
    pub fn release(mut self) {
        self.reusable = true;
    }
}

impl Deref for PooledConn {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        self.conn.as_ref().expect("connection present until drop")
    }
}

impl DerefMut for PooledConn {
    fn deref_mut(&mut self) -> &mut PgConnection {
        self.conn.as_mut().expect("connection present until drop")
    }
}

impl Drop for PooledConn {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            if self.reusable && !self.pool.closed.load(Ordering::Acquire) {
                self.pool
                    .idle
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((conn, Instant::now()));
            }
            // Otherwise the connection is dropped, which closes its socket.
        }
    }
}

/// Run `op` on a pooled connection within the query timeout, returning
/// the connection to the pool only if `op` succeeded in time. The
/// `untimed` form has no timeout, for schema changes that may
/// legitimately run long.
macro_rules! with_conn {
    ($pool:expr, untimed |$conn:ident| $body:expr) => {{
        let mut __pooled = $pool.acquire().await?;
        let result = {
            let $conn: &mut ::sqlx::PgConnection = &mut __pooled;
            $body
        };
        if result.is_ok() {
            __pooled.release();
        }
        result
    }};
    ($pool:expr, |$conn:ident| $body:expr) => {{
        let __pool = &$pool;
        let mut __pooled = __pool.acquire().await?;
        let result = __pool
            .timed(async {
                let $conn: &mut ::sqlx::PgConnection = &mut __pooled;
                $body
            })
            .await;
        if result.is_ok() {
            __pooled.release();
        }
        result
    }};
}
pub(crate) use with_conn;
