//! `ff`: run the demo, tail and publish streams, serve them over
//! Server-Sent Events, and benchmark backends.

mod backend_url;
mod bench;
mod demo;
mod duration_arg;
mod error_line;
mod filter_args;
mod group_cmd;
mod group_tail;
mod logging;
mod migrate;
mod publish;
mod serve;
mod tail;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// Typed, resumable event streams over Valkey, Postgres or memory.
#[derive(Parser, Debug)]
#[command(name = "ff", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Publish a realistic workload, consume it with checkpointing consumers
    /// that are interrupted and resumed, and prove nothing was lost.
    Demo(demo::DemoArgs),
    /// Print a family's events as JSON lines, each with its cursor.
    Tail(tail::TailArgs),
    /// Append events (JSON lines on stdin, or --event) and print their cursors.
    Publish(publish::PublishArgs),
    /// Serve the streams over HTTP: Server-Sent Events per family, publish
    /// by POST, and a live viewer page.
    Serve(serve::ServeArgs),
    /// Measure publish, catch-up and live latency beside raw-client
    /// baselines (`ff bench sse` for the HTTP gateway).
    Bench(bench::BenchArgs),
    /// Create or upgrade the Postgres outbox schema.
    Migrate(migrate::MigrateArgs),
    /// Inspect consumer groups (`ff group status NAME`).
    Group(group_cmd::GroupArgs),
}

impl Command {
    /// The subcommand's name, for logs.
    fn name(&self) -> &'static str {
        match self {
            Command::Demo(_) => "demo",
            Command::Tail(_) => "tail",
            Command::Publish(_) => "publish",
            Command::Serve(_) => "serve",
            Command::Bench(_) => "bench",
            Command::Migrate(_) => "migrate",
            Command::Group(_) => "group",
        }
    }
}

fn main() -> std::process::ExitCode {
    logging::init();
    let cli = Cli::parse();
    tracing::debug!(
        version = env!("CARGO_PKG_VERSION"),
        command = cli.command.name(),
        "ff starting"
    );
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ff: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ff: {}", error_line::one_line(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Demo(args) => {
            let opened = backend_url::open(&args.backend).await?;
            let ran = demo::run(args, opened.clone()).await;
            opened.close().await;
            ran
        }
        Command::Tail(args) => {
            let opened = backend_url::open(&args.backend).await?;
            tail::run(args, opened).await
        }
        Command::Publish(args) => {
            let opened = backend_url::open(&args.backend).await?;
            // Other processes' subscribers are woken only once the
            // pending wake-ups are sent.
            let published = publish::run(args, opened.clone()).await;
            opened.close().await;
            published
        }
        Command::Bench(args) => bench::run(args).await,
        Command::Migrate(args) => migrate::run(args).await,
        Command::Group(args) => group_cmd::run(args).await,
        Command::Serve(args) => {
            let opened = backend_url::open(&args.backend).await?;
            let ran = serve::run(args, opened.clone()).await;
            opened.close().await;
            ran
        }
    }
}
