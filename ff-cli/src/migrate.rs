//! `ff migrate`: create or upgrade the Postgres outbox schema.

use anyhow::{bail, Result};
use clap::Args;
use ff_backend_postgres::{PostgresBackend, PostgresConfig};

use ff_core::redact::redact_url as redact;

/// `ff migrate` options.
#[derive(Args, Debug, Clone)]
pub struct MigrateArgs {
    /// Postgres URL, e.g. postgres://user@host:5432/db
    #[arg(long, env = "FF_BACKEND")]
    pub backend: String,
    /// Schema holding the outbox tables.
    #[arg(long, default_value = "ff")]
    pub schema: String,
    /// After migrating, grant ROLE what a consumer needs (read the outbox,
    /// keep its own positions in the cursor store). Repeatable.
    #[arg(long, value_name = "ROLE")]
    pub grant_consumer: Vec<String>,
    /// After migrating, grant ROLE what a publisher needs (insert events).
    /// Repeatable.
    #[arg(long, value_name = "ROLE")]
    pub grant_publisher: Vec<String>,
    /// Create the indexes narrow filtered subscriptions read by (execution
    /// id, namespace, tags). Every insert pays for them; without them
    /// filtered subscriptions scan, correctly.
    #[arg(long, conflicts_with = "drop_filter_indexes")]
    pub filter_indexes: bool,
    /// Drop the filter indexes.
    #[arg(long)]
    pub drop_filter_indexes: bool,
    /// Partition every (still empty) outbox table by time, so that old
    /// events are pruned by dropping whole ranges (for millions of events
    /// a day).
    #[arg(long)]
    pub partitioned: bool,
    /// Width of each time range with --partitioned, in seconds.
    #[arg(long, value_name = "SECS", default_value = "86400", value_parser = crate::duration_arg::parse_secs)]
    pub partition_interval: std::time::Duration,
}

/// Apply every pending migration, list the versions applied, then apply
/// the requested grants.
pub async fn run(args: MigrateArgs) -> Result<()> {
    if !args.backend.starts_with("postgres://") && !args.backend.starts_with("postgresql://") {
        bail!(
            "ff migrate needs a postgres:// URL, got {}",
            redact(&args.backend)
        );
    }
    let config = PostgresConfig::default().with_schema(args.schema.clone());
    let (backend, applied) = PostgresBackend::connect_and_migrate(&args.backend, config).await?;
    if applied.is_empty() {
        println!("schema {:?} is up to date", args.schema);
    } else {
        for v in applied {
            println!("applied migration {v} to schema {:?}", args.schema);
        }
    }
    if args.partitioned {
        backend.partition_by_time(args.partition_interval).await?;
        println!(
            "schema {:?} is partitioned by time in ranges of {}s",
            args.schema,
            args.partition_interval.as_secs()
        );
    }
    if args.filter_indexes {
        backend.create_filter_indexes().await?;
        println!("created the filter indexes in schema {:?}", args.schema);
    }
    if args.drop_filter_indexes {
        backend.drop_filter_indexes().await?;
        println!("dropped the filter indexes in schema {:?}", args.schema);
    }
    for role in &args.grant_consumer {
        backend.grant_consumer(role).await?;
        println!(
            "granted consumer rights on schema {:?} to {role:?}",
            args.schema
        );
    }
    for role in &args.grant_publisher {
        backend.grant_publisher(role).await?;
        println!(
            "granted publisher rights on schema {:?} to {role:?}",
            args.schema
        );
    }
    backend.close().await;
    Ok(())
}
