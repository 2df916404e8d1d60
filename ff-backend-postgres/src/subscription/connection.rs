//! A subscription's own connection: `LISTEN` on the family's channel, and
//! the reads between wake-ups.
//!
//! Each subscription holds one connection (named
//! `<application_name>-sub`), so dropping the subscription releases
//! exactly its connection, and operators can see subscriptions in
//! `pg_stat_activity`. It is built from a one-connection pool only because
//! `sqlx`'s notification listener requires one; reconnecting is the
//! subscription's business (see [`ReconnectPolicy`](ff_core::backend::ReconnectPolicy)),
//! so the listener's own reconnection is switched off.
//!
//! Nothing here waits unboundedly: opening (connect and `LISTEN`) is
//! bounded by the connect timeout, and [`within`] bounds each read, so a
//! server that stops answering without closing the connection (a network
//! partition, a moved virtual IP, a stopped host) reads as a lost
//! connection in seconds. A connection abandoned that way is dropped;
//! `sqlx` then sends `UNLISTEN` on it from a background task that ends
//! when the socket fails or the kernel gives it up.

use std::future::Future;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::PgPool;

/// `fut`, unless it takes longer than `limit`: then [`timed_out`], which
/// callers treat as a lost connection.
pub(crate) async fn within<T, E: From<sqlx::Error>>(
    limit: Duration,
    what: &str,
    fut: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    tokio::time::timeout(limit, fut)
        .await
        .unwrap_or_else(|_| Err(E::from(timed_out(limit, what))))
}

/// The error for a server that did not answer `what` within `limit`.
pub(crate) fn timed_out(limit: Duration, what: &str) -> sqlx::Error {
    sqlx::Error::Io(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("the server did not answer within {limit:?} ({what})"),
    ))
}

/// Why a wait for a wake-up ended.
#[derive(Debug)]
pub(crate) enum Wake {
    /// A notification arrived on the channel.
    Notified,
    /// The timeout passed.
    TimedOut,
}

/// A connection listening on one channel.
pub(crate) struct SubConnection {
    listener: PgListener,
    pool: PgPool,
}

impl SubConnection {
    /// Connect with `options` and `LISTEN` on `channel`, within `timeout`.
    pub async fn open(
        options: &PgConnectOptions,
        channel: &str,
        timeout: Duration,
    ) -> Result<Self, sqlx::Error> {
        within(
            timeout,
            "connecting and listening",
            Self::open_unbounded(options, channel, timeout),
        )
        .await
    }

    async fn open_unbounded(
        options: &PgConnectOptions,
        channel: &str,
        timeout: Duration,
    ) -> Result<Self, sqlx::Error> {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .acquire_timeout(timeout)
            .test_before_acquire(false)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_lazy_with(options.clone());
        let listener = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.eager_reconnect(false);
            listener.ignore_pool_close_event(true);
            listener.listen(channel).await?;
            Ok::<_, sqlx::Error>(listener)
        }
        .await;
        match listener {
            Ok(listener) => Ok(Self { listener, pool }),
            Err(e) => {
                pool.close().await;
                Err(e)
            }
        }
    }

    /// The connection, to run queries on.
    pub fn executor(&mut self) -> &mut PgListener {
        &mut self.listener
    }

    /// Forget notifications that arrived before now: the next read sees
    /// everything they announced.
    pub fn drain_notifications(&mut self) {
        while self.listener.next_buffered().is_some() {}
    }

    /// Wait up to `timeout` for a notification. `Err` when the connection
    /// is lost (a lost connection reads as `Io(UnexpectedEof)`).
    pub async fn wait(&mut self, timeout: Duration) -> Result<Wake, sqlx::Error> {
        match tokio::time::timeout(timeout, self.listener.try_recv()).await {
            Err(_) => Ok(Wake::TimedOut),
            Ok(Ok(Some(_))) => Ok(Wake::Notified),
            Ok(Ok(None)) => Err(sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the subscription's connection was closed by the server",
            ))),
            Ok(Err(e)) => Err(e),
        }
    }

    /// Drop a connection known to be lost, without waiting for it.
    pub fn abandon(self) {
        let Self { listener, pool } = self;
        drop(listener);
        drop(pool);
    }

    /// Close the connection (gracefully where it still works).
    pub async fn close(self) {
        let Self { listener, pool } = self;
        // Dropping the listener hands its connection back to the pool
        // (after an UNLISTEN); closing the pool then closes it.
        drop(listener);
        let _ = tokio::time::timeout(Duration::from_secs(2), pool.close()).await;
    }
}
