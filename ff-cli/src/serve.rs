//! `ff serve`: the SSE gateway (`ff-http`) over any backend.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use ff_http::{load_tokens_from_env, load_tokens_from_file, Auth, Gateway, GatewayConfig};

use crate::backend_url::Opened;

/// `ff serve` options.
#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Backend URL: memory:, valkey://host:port[/db] (any node of a cluster; ?partitions=P splits each family; valkeys://…?ca_cert=PATH for TLS), postgres://...
    #[arg(long, env = "FF_BACKEND", default_value = "memory:")]
    pub backend: String,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// File of bearer tokens, one per line; `rw:` marks a token allowed to publish.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<std::path::PathBuf>,
    /// Environment variable holding tokens (same format, also comma separated).
    #[arg(long, value_name = "VAR")]
    pub token_env: Option<String>,
    /// Serve without authentication (anyone who can reach the address may
    /// read and publish). Never the default.
    #[arg(long, conflicts_with_all = ["token_file", "token_env"])]
    pub no_auth: bool,
    /// Allowed CORS origin (repeatable); none by default.
    #[arg(long = "cors-origin", value_name = "ORIGIN")]
    pub cors_origins: Vec<String>,
    /// Seconds between keep-alive comments.
    #[arg(long, default_value = "15", value_parser = crate::duration_arg::parse_secs)]
    pub keep_alive: Duration,
    /// Milliseconds between checkpoint messages while a filter admits nothing.
    #[arg(long, default_value_t = 1000)]
    pub checkpoint_ms: u64,
    /// Most concurrent SSE clients.
    #[arg(long, default_value_t = 20_000)]
    pub max_clients: usize,
}

/// Raise the open-file soft limit to the hard limit, so thousands of
/// clients each holding a socket can connect. Returns the new limit.
fn raise_open_file_limit() -> Option<u64> {
    rlimit::increase_nofile_limit(u64::MAX).ok()
}

fn auth(args: &ServeArgs) -> Result<Auth> {
    if args.no_auth {
        if !args.listen.ip().is_loopback() {
            tracing::warn!(
                listen = %args.listen,
                "serving WITHOUT authentication on a non-loopback address: anyone who can reach it may read and publish"
            );
        }
        return Ok(Auth::no_auth());
    }
    let tokens = match (&args.token_file, &args.token_env) {
        (Some(path), _) => load_tokens_from_file(path)?,
        (None, Some(var)) => load_tokens_from_env(var)?,
        (None, None) => bail!(
            "no tokens: pass --token-file FILE or --token-env VAR (or --no-auth, explicitly, for a local setup)"
        ),
    };
    Ok(Auth::tokens(tokens))
}

/// Run `ff serve` until Ctrl-C or SIGTERM.
pub async fn run(args: ServeArgs, opened: Opened) -> Result<()> {
    let auth = auth(&args)?;
    let limit = raise_open_file_limit();
    let config = GatewayConfig::new(auth)
        .with_keep_alive(args.keep_alive)
        .with_checkpoint_interval(Duration::from_millis(args.checkpoint_ms.max(10)))
        .with_cors_allowed_origins(args.cors_origins.clone())
        .with_max_clients(args.max_clients);
    let gateway = Gateway::new(
        opened.backend.clone(),
        Some(opened.publisher.clone()),
        config,
    );
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let local = listener.local_addr()?;
    eprintln!(
        "ff serve: listening on http://{local} (backend {}, open-file limit {})",
        opened.label,
        limit.map_or("unchanged".to_owned(), |l| l.to_string())
    );
    gateway
        .serve(listener, async {
            shutdown_signal().await;
            eprintln!("ff serve: shutting down");
        })
        .await
        .context("serving HTTP")?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
