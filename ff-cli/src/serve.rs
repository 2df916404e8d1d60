//! `ff serve`: the SSE gateway (`ff-http`) over any backend.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use ff_http::{
    load_tokens_from_env, load_tokens_from_file, Auth, Gateway, GatewayConfig, TlsConfig,
};

use crate::backend_url::Opened;

/// `ff serve` options.
#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Backend URL: memory:, valkey://host:port[/db] (several seeds: valkey://a:1,b:2; any nodes of a cluster, the first that answers used; ?partitions=P splits each family; valkeys://…?ca_cert=PATH for TLS), postgres://...
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
    /// Most connections served at once; at the cap the connection evictable
    /// longest (idle, or still sending an unauthenticated sign-in body) is
    /// closed to admit a new one, and when none is, the newcomer gets 503
    /// (over HTTPS too). Lowered to fit the open-file limit.
    #[arg(long, default_value_t = 24_000)]
    pub max_connections: usize,
    /// Seconds a connection may take to send a complete request head.
    #[arg(long, default_value = "10", value_parser = crate::duration_arg::parse_secs)]
    pub header_timeout: Duration,
    /// Seconds a kept-alive connection may wait for its next request.
    #[arg(long, default_value = "30", value_parser = crate::duration_arg::parse_secs)]
    pub idle_timeout: Duration,
    /// Seconds a response may go without the client accepting a byte
    /// before the connection is closed (an SSE client then resumes with
    /// Last-Event-ID).
    #[arg(long, default_value = "30", value_parser = crate::duration_arg::parse_secs)]
    pub write_stall_timeout: Duration,
    /// Seconds a `POST` body may take to arrive (the unauthenticated
    /// sign-in body gets the shorter of this and --header-timeout).
    #[arg(long, default_value = "30", value_parser = crate::duration_arg::parse_secs)]
    pub body_timeout: Duration,
    /// Serve HTTPS with this PEM certificate chain (leaf first); needs --tls-key.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
    /// Mark the viewer's session cookie `Secure` (implied by --tls-cert); use
    /// it when a proxy terminates TLS in front of ff serve.
    #[arg(long)]
    pub secure_cookie: bool,
    /// Trust `X-Forwarded-Proto: https` from a proxy to mark the session
    /// cookie `Secure`. Only behind a proxy that sets or strips the header.
    #[arg(long)]
    pub trust_forwarded_proto: bool,
}

/// File descriptors kept free of client connections (backend connections,
/// the listener, log files, rejections in progress): a quarter of the
/// limit, at most this many.
const RESERVED_FILES: u64 = 512;

/// Raise the open-file soft limit to the hard limit, so thousands of
/// clients each holding a socket can connect. Returns the new limit.
fn raise_open_file_limit() -> Option<u64> {
    rlimit::increase_nofile_limit(u64::MAX).ok()
}

/// The connection cap that leaves room under the open-file limit for
/// everything else the server opens.
fn connection_cap(wanted: usize, open_files: Option<u64>) -> usize {
    let Some(limit) = open_files else {
        return wanted;
    };
    let reserve = (limit / 4).min(RESERVED_FILES);
    let room = usize::try_from(limit.saturating_sub(reserve)).unwrap_or(usize::MAX);
    wanted.min(room).max(1)
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
    let max_connections = connection_cap(args.max_connections, limit);
    let config = GatewayConfig::new(auth)
        .with_keep_alive(args.keep_alive)
        .with_checkpoint_interval(Duration::from_millis(args.checkpoint_ms.max(10)))
        .with_cors_allowed_origins(args.cors_origins.clone())
        .with_max_clients(args.max_clients)
        .with_max_connections(max_connections)
        .with_header_read_timeout(args.header_timeout)
        .with_idle_timeout(args.idle_timeout)
        .with_write_stall_timeout(args.write_stall_timeout)
        .with_body_read_timeout(args.body_timeout)
        .with_secure_cookie(args.secure_cookie || args.tls_cert.is_some())
        .with_trust_forwarded_proto(args.trust_forwarded_proto);
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsConfig::from_pem_files(cert, key)?),
        _ => None,
    };
    let gateway = Gateway::new(opened.clone(), Some(opened.clone()), config);
    let listener =
        ff_http::bind(args.listen).with_context(|| format!("cannot listen on {}", args.listen))?;
    let local = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    eprintln!(
        "ff serve: listening on {scheme}://{local} (backend {}, open-file limit {}, at most {max_connections} connections)",
        opened.label().to_owned(),
        limit.map_or("unchanged".to_owned(), |l| l.to_string())
    );
    let signal = async {
        shutdown_signal().await;
        eprintln!("ff serve: shutting down");
    };
    match tls {
        Some(tls) => gateway.serve_tls(listener, tls, signal).await,
        None => gateway.serve(listener, signal).await,
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_cap_leaves_room_under_the_open_file_limit() {
        assert_eq!(connection_cap(24_000, Some(256)), 192);
        assert_eq!(connection_cap(24_000, Some(1_048_576)), 24_000);
        assert_eq!(connection_cap(24_000, Some(20_000)), 19_488);
        assert_eq!(connection_cap(100, None), 100);
    }
}
