//! Opening a backend from a URL: `memory:`, `valkey://` / `redis://`,
//! `postgres://`. Credentials never appear in what this module prints.

use std::sync::Arc;

use anyhow::{bail, Result};
use ff_backend_memory::MemoryBackend;
use ff_backend_postgres::PostgresBackend;
use ff_core::backend::{CursorStore, EventPublisher, StreamBackend};

/// A backend opened from a URL: its subscribe, publish and cursor-store sides.
#[derive(Clone)]
pub struct Opened {
    /// Subscriptions.
    pub backend: Arc<dyn StreamBackend>,
    /// Appends.
    pub publisher: Arc<dyn EventPublisher>,
    /// Consumer positions.
    pub cursors: Arc<dyn CursorStore>,
    /// The URL with any password removed, for display.
    pub label: String,
    /// How many partitions each family is split into: events keep
    /// publish order within a partition (1: one order per family).
    pub partitions: u16,
    /// The Postgres backend, whose pending wake-ups [`Opened::close`]
    /// sends before the process exits.
    pub postgres: Option<PostgresBackend>,
}

impl Opened {
    /// Send what the backend still owes other processes (Postgres
    /// wake-ups for this process's publishes) and close it; call before
    /// exiting.
    pub async fn close(&self) {
        if let Some(postgres) = &self.postgres {
            postgres.close().await;
        }
    }
}

/// The URL with its password hidden (see [`ff_core::redact::redact_url`]).
pub fn redact(url: &str) -> String {
    ff_core::redact::redact_url(url)
}

/// Open the backend `url` names.
pub async fn open(url: &str) -> Result<Opened> {
    let label = redact(url);
    let scheme = url.split(':').next().unwrap_or("");
    match scheme {
        "memory" => {
            let memory = MemoryBackend::new();
            Ok(Opened {
                backend: Arc::new(memory.clone()),
                publisher: Arc::new(memory.clone()),
                cursors: Arc::new(memory),
                label,
                partitions: 1,
                postgres: None,
            })
        }
        "valkey" | "redis" | "valkeys" | "rediss" => crate::backends::open_valkey(url, label).await,
        "postgres" | "postgresql" => crate::backends::open_postgres(url, label).await,
        _ => bail!(
            "unsupported backend URL {label:?}: use memory:, valkey://host:port[,host:port…][/db][?partitions=P] (valkeys:// for TLS; any nodes of a cluster), redis://host:port[/db] or postgres://user@host:port/db"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_survive_redaction() {
        assert_eq!(
            redact("postgres://app:s3cret@db:5432/ff?sslmode=require&password=x"),
            "postgres://app:***@db:5432/ff?sslmode=require&password=***"
        );
        assert_eq!(
            redact("redis://:hunter2@127.0.0.1:6379/0"),
            "redis://:***@127.0.0.1:6379/0"
        );
        assert_eq!(redact("valkey://127.0.0.1:6379"), "valkey://127.0.0.1:6379");
        assert_eq!(redact("memory:"), "memory:");
        assert_eq!(
            redact("host=db password=hunter2"),
            "<URL with credentials, hidden>"
        );
        assert_eq!(
            redact("valkey://app:S3cr/et@db:6379"),
            "valkey://app:***@db:6379"
        );
    }
}
