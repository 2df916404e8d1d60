//! `ff bench`: throughput and latency through ff beside raw-client
//! baselines measured in the same run.

pub mod cpu;
mod http_client;
mod measure;
mod memory;
pub mod postgres;
mod postgres_prune;
pub mod report;
pub mod rss;
mod sse;
mod sse_storm;
pub mod valkey;
mod valkey_operations;

use anyhow::Result;
use clap::{Args, Subcommand};

use crate::backend_url;

/// `ff bench` options.
#[derive(Args, Debug, Clone)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    /// Benchmark the SSE gateway instead of a backend.
    #[command(subcommand)]
    pub which: Option<BenchWhich>,
    /// Backend URL: memory:, valkey://host:port[,host:port…][/db] (any nodes of a cluster, the first that answers used; ?partitions=P splits each family; valkeys://…?ca_cert=PATH for TLS), postgres://...
    #[arg(long, env = "FF_BACKEND", default_value = "memory:")]
    pub backend: String,
    /// Events to publish and catch up on (at least 200,000 for Valkey and Postgres).
    #[arg(long, default_value_t = 200_000)]
    pub events: usize,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Also measure everyday operations on the Valkey Cluster the URL names
    /// (dead_node_detect_s: DEBUG SLEEP on a primary a subscription reads).
    /// It disturbs that cluster: primaries with a replica each and
    /// enable-debug-command yes.
    #[arg(long)]
    pub operations: bool,
}

/// Benchmarks other than a backend's.
#[derive(Subcommand, Debug, Clone)]
pub enum BenchWhich {
    /// N concurrent SSE clients on one `ff serve` while events are published
    /// at a steady rate.
    Sse(sse::SseBenchArgs),
}

/// Run the chosen benchmark and print its report.
pub async fn run(args: BenchArgs) -> Result<()> {
    let (report, json) = match &args.which {
        Some(BenchWhich::Sse(sse_args)) => (sse::run(sse_args).await?, sse_args.json),
        None => {
            let scheme = args.backend.split(':').next().unwrap_or("");
            let valkey = matches!(scheme, "valkey" | "redis" | "valkeys" | "rediss");
            if args.operations && !valkey {
                anyhow::bail!("--operations needs a Valkey Cluster URL (valkey://node:port)");
            }
            let report = match scheme {
                _ if valkey => {
                    let mut report = valkey::run(&args.backend, args.events).await?;
                    if args.operations {
                        eprintln!("bench: operations (the cluster is disturbed on purpose)");
                        report
                            .figures
                            .extend(valkey_operations::run(&args.backend).await?);
                    }
                    report
                }
                "postgres" | "postgresql" => postgres::run(&args.backend, args.events).await?,
                _ => {
                    let opened = backend_url::open(&args.backend).await?;
                    memory::run(&opened, args.events).await?
                }
            };
            (report, args.json)
        }
    };
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        report.print_table();
    }
    Ok(())
}
