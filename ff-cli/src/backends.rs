//! Opening the networked backends with their default configuration.

use std::sync::Arc;

use anyhow::Result;
use ff_backend_postgres::{PostgresBackend, PostgresConfig};
use ff_backend_valkey::{ValkeyBackend, ValkeyConfig};

use crate::backend_url::Opened;

/// Connect to Valkey (`valkey://` or `redis://`, a standalone server or
/// any node of a cluster; `?partitions=P` splits each family).
pub async fn open_valkey(url: &str, label: String) -> Result<Opened> {
    let backend = ValkeyBackend::connect(url, ValkeyConfig::default()).await?;
    Ok(Opened {
        partitions: backend.partitions(),
        backend: Arc::new(backend.clone()),
        publisher: Arc::new(backend.clone()),
        cursors: Arc::new(backend),
        label,
        postgres: None,
    })
}

/// Connect to Postgres (applying migrations).
pub async fn open_postgres(url: &str, label: String) -> Result<Opened> {
    let backend = PostgresBackend::connect(url, PostgresConfig::default()).await?;
    Ok(Opened {
        backend: Arc::new(backend.clone()),
        publisher: Arc::new(backend.clone()),
        cursors: Arc::new(backend.clone()),
        label,
        partitions: 1,
        postgres: Some(backend),
    })
}
