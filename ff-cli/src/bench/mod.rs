//! `ff bench`: throughput and latency through ff beside raw-client
//! baselines measured in the same run.

mod cluster_admin;
pub mod cpu;
mod group;
mod group_crowd;
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
    /// Backend URL: memory:, valkey://host:port[/db] (any node of a cluster; ?partitions=P splits each family; valkeys://…?ca_cert=PATH for TLS), postgres://...
    #[arg(long, env = "FF_BACKEND", default_value = "memory:")]
    pub backend: String,
    /// Events to publish and catch up on (at least 200,000 for Valkey and Postgres).
    #[arg(long, default_value_t = 200_000)]
    pub events: usize,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Also measure what routine operations cost a live subscription on the
    /// Valkey Cluster the URL names: a planned failover, a slot migration, an
    /// unresponsive primary, sockets per subscription, replica acks. It FAILS
    /// OVER, MIGRATES AND STOPS NODES of that cluster (primaries with one
    /// replica each, `enable-debug-command yes`); `scripts/bench-cluster.sh`
    /// starts a throwaway one.
    #[arg(long)]
    pub operations: bool,
}

/// Benchmarks other than a backend's.
#[derive(Subcommand, Debug, Clone)]
pub enum BenchWhich {
    /// N concurrent SSE clients on one `ff serve` while events are published
    /// at a steady rate.
    Sse(sse::SseBenchArgs),
    /// Consumer groups: clean and crash hand-over times, redeliveries per
    /// crash, a one-member group's throughput beside a plain subscription's,
    /// and events lost across member churn.
    Group(group::GroupBenchArgs),
}

/// Run the chosen benchmark and print its report.
pub async fn run(args: BenchArgs) -> Result<()> {
    let (report, json) = match &args.which {
        Some(BenchWhich::Sse(sse_args)) => (sse::run(sse_args).await?, sse_args.json),
        Some(BenchWhich::Group(group_args)) => (group::run(group_args).await?, group_args.json),
        None => {
            let scheme = args.backend.split(':').next().unwrap_or("");
            if args.operations && !matches!(scheme, "valkey" | "redis" | "valkeys" | "rediss") {
                anyhow::bail!("--operations measures a Valkey Cluster: give its URL with --backend valkey://host:port");
            }
            let report = match scheme {
                "valkey" | "redis" | "valkeys" | "rediss" => {
                    valkey::run(&args.backend, args.events, args.operations).await?
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
