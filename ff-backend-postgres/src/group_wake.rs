//! Wake-ups of a consumer group: `LISTEN` on the schema's group channel,
//! whose payload names the group whose members or leases changed.
//!
//! Invariant: no change is missed silently — each (re)connection yields a
//! wake-up of its own once it listens, since notifications sent while no
//! connection listened are lost, and the member re-reads the group on
//! every wake-up. The listener runs in a task that ends when the wake-up
//! stream is dropped.

use std::time::Duration;

use ff_core::engine_error::EngineError;
use ff_core::group::GroupWake;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use tokio::sync::mpsc;

use crate::error::map_sqlx;

/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

async fn listen(
    options: &PgConnectOptions,
    channel: &str,
    timeout: Duration,
) -> Result<(PgListener, sqlx::PgPool), sqlx::Error> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .min_connections(0)
        .acquire_timeout(timeout)
        .idle_timeout(None)
        .max_lifetime(None)
        .connect_lazy_with(options.clone());
    let listener = tokio::time::timeout(timeout, async {
        let mut listener = PgListener::connect_with(&pool).await?;
        listener.eager_reconnect(false);
        listener.ignore_pool_close_event(true);
        listener.listen(channel).await?;
        Ok::<_, sqlx::Error>(listener)
    })
    .await
    .unwrap_or_else(|_| {
        Err(sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("listening for group wake-ups took over {timeout:?}"),
        )))
    })?;
    Ok((listener, pool))
}

/// Wake-ups of `group` on `channel`. The first connection is made here,
/// so an unreachable server fails the call.
pub(crate) async fn watch_group(
    options: PgConnectOptions,
    channel: String,
    group: String,
    timeout: Duration,
) -> Result<GroupWake, EngineError> {
    let first = listen(&options, &channel, timeout)
        .await
        .map_err(map_sqlx)?;
    let (tx, rx) = mpsc::channel::<()>(1);
    tokio::spawn(async move {
        let mut conn = Some(first);
        let mut backoff = Duration::from_millis(100);
        loop {
            let (mut listener, pool) = match conn.take() {
                Some(c) => c,
                None => {
                    tokio::select! {
                        () = tx.closed() => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    match listen(&options, &channel, timeout).await {
                        Ok(c) => {
                            backoff = Duration::from_millis(100);
                            let _ = tx.try_send(());
                            c
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "group wake-up listener could not reconnect");
                            continue;
                        }
                    }
                }
            };
            loop {
                tokio::select! {
                    () = tx.closed() => {
                        drop(listener);
                        pool.close().await;
                        return;
                    }
                    n = listener.try_recv() => match n {
                        Ok(Some(n)) => {
                            if n.payload() == group {
                                let _ = tx.try_send(());
                            }
                        }
                        Ok(None) | Err(_) => break,
                    }
                }
            }
            drop(listener);
            pool.close().await;
        }
    });
    Ok(Box::pin(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await?;
        Some(((), rx))
    })))
}
