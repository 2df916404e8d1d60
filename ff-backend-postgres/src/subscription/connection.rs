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

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::PgPool;

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
    /// Connect with `options` (waiting at most `timeout`) and `LISTEN` on
    /// `channel`.
    pub async fn open(
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

    /// Close the connection (gracefully where it still works).
    pub async fn close(self) {
        let Self { listener, pool } = self;
        // Dropping the listener hands its connection back to the pool
        // (after an UNLISTEN); closing the pool then closes it.
        drop(listener);
        let _ = tokio::time::timeout(Duration::from_secs(2), pool.close()).await;
    }
}
