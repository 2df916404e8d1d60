//! Serve the gateway over the backend a URL names (`memory:` unless given),
//! with a little demo traffic.
//!
//! ```text
//! cargo run -p ff-http --example serve -- 127.0.0.1:8080 [memory: | valkey://… | postgres://…]
//! curl -N http://127.0.0.1:8080/v1/streams/completion
//! ```
//!
//! Then open <http://127.0.0.1:8080/> for the live viewer. No
//! authentication: loopback demos only.

use std::sync::Arc;
use std::time::Duration;

use ff_http::{Auth, Gateway, GatewayConfig};
use ffstream::{CompletionOutcome, EventMeta, EventPublisher, ExecutionId, NewEvent};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8080".to_owned());
    let url = args.next().unwrap_or_else(|| "memory:".to_owned());
    // One handle subscribes for the gateway and publishes for it and the demo.
    let backend = Arc::new(
        ffstream::connect(&url)
            .await
            .map_err(std::io::Error::other)?,
    );
    let gateway = Gateway::new(
        backend.clone(),
        Some(backend.clone()),
        GatewayConfig::new(Auth::NoAuth),
    );
    tokio::spawn(async move {
        let outcomes = [
            CompletionOutcome::Success,
            CompletionOutcome::Failure,
            CompletionOutcome::Cancelled,
        ];
        for i in 0usize.. {
            let draft = NewEvent::completion(ExecutionId::new(0), outcomes[i % 3].clone());
            let meta = EventMeta::new().with_namespace("demo");
            if backend.publish(draft, meta).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    let addr: std::net::SocketAddr = addr.parse().map_err(std::io::Error::other)?;
    let listener = ff_http::bind(addr)?;
    println!("serving on http://{}/", listener.local_addr()?);
    gateway
        .serve(listener, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
}
