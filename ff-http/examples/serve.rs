//! Serve the gateway over an in-memory backend, with a little demo traffic.
//!
//! ```text
//! cargo run -p ff-http --example serve -- 127.0.0.1:8080
//! curl -N http://127.0.0.1:8080/v1/streams/completion
//! ```
//!
//! Then open <http://127.0.0.1:8080/> for the live viewer. No
//! authentication: loopback demos only.

use std::sync::Arc;
use std::time::Duration;

use ff_backend_memory::MemoryBackend;
use ff_core::backend::EventPublisher;
use ff_core::stream_events::{CompletionOutcome, EventMeta, NewEvent};
use ff_core::types::ExecutionId;
use ff_http::{Auth, Gateway, GatewayConfig};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".to_owned());
    let backend = MemoryBackend::new();
    let gateway = Gateway::new(
        Arc::new(backend.clone()),
        Some(Arc::new(backend.clone())),
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
