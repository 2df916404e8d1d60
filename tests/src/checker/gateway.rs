//! The SSE gateway under test, served on a loopback port that survives a
//! restart (clients reconnect to the same address with `Last-Event-ID`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ff_core::backend::StreamBackend;
use ff_http::{Auth, Gateway, GatewayConfig};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

/// A gateway and its serving task.
pub struct CheckerGateway {
    addr: SocketAddr,
    running: Mutex<Option<(Gateway, JoinHandle<()>)>>,
}

fn config() -> GatewayConfig {
    GatewayConfig::new(Auth::NoAuth)
        .with_checkpoint_interval(Duration::from_millis(200))
        .with_hub_linger(Duration::from_millis(500))
        .with_max_family_subscriptions(3)
}

async fn serve(
    backend: Arc<dyn StreamBackend>,
    addr: SocketAddr,
) -> Result<(Gateway, JoinHandle<()>, SocketAddr), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let listener = loop {
        match ff_http::bind(addr) {
            Ok(l) => break l,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(format!("binding the gateway to {addr}: {e}")),
        }
    };
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    let gateway = Gateway::new(backend, None, config());
    let serving = gateway.clone();
    let task = tokio::spawn(async move {
        let _ = serving.serve(listener, std::future::pending()).await;
    });
    Ok((gateway, task, bound))
}

impl CheckerGateway {
    /// Serve `backend` on a free loopback port.
    pub async fn start(backend: Arc<dyn StreamBackend>) -> Result<Self, String> {
        let (gateway, task, addr) = serve(backend, "127.0.0.1:0".parse().expect("addr")).await?;
        Ok(Self {
            addr,
            running: Mutex::new(Some((gateway, task))),
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Shut it down (every client's response ends) and serve `backend` again
    /// on the same address.
    pub async fn restart(&self, backend: Arc<dyn StreamBackend>) -> Result<(), String> {
        let mut running = self.running.lock().await;
        if let Some((gateway, task)) = running.take() {
            gateway.shutdown();
            task.abort();
            let _ = task.await;
        }
        let (gateway, task, _) = serve(backend, self.addr).await?;
        *running = Some((gateway, task));
        Ok(())
    }

    /// Stop serving.
    pub async fn stop(&self) {
        if let Some((gateway, task)) = self.running.lock().await.take() {
            gateway.shutdown();
            task.abort();
            let _ = task.await;
        }
    }
}
