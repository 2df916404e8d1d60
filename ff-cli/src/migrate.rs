//! `ff migrate`: create or upgrade the Postgres outbox schema.

use anyhow::{bail, Result};
use clap::Args;
use ff_backend_postgres::{PostgresBackend, PostgresConfig};

use crate::backend_url::redact;

/// `ff migrate` options.
#[derive(Args, Debug, Clone)]
pub struct MigrateArgs {
    /// Postgres URL, e.g. postgres://user@host:5432/db
    #[arg(long, env = "FF_BACKEND")]
    pub backend: String,
    /// Schema holding the outbox tables.
    #[arg(long, default_value = "ff")]
    pub schema: String,
}

/// Apply every pending migration and list the versions applied.
pub async fn run(args: MigrateArgs) -> Result<()> {
    if !args.backend.starts_with("postgres://") && !args.backend.starts_with("postgresql://") {
        bail!(
            "ff migrate needs a postgres:// URL, got {}",
            redact(&args.backend)
        );
    }
    let config = PostgresConfig::default()
        .with_schema(args.schema.clone())
        .with_migrate_on_connect(false);
    let backend = PostgresBackend::connect(&args.backend, config).await?;
    let applied = backend.migrate().await?;
    if applied.is_empty() {
        println!("schema {:?} is up to date", args.schema);
    } else {
        for v in applied {
            println!("applied migration {v} to schema {:?}", args.schema);
        }
    }
    backend.close().await;
    Ok(())
}
