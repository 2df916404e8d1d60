//! Valkey over TLS (Debian's `redis-server`, which has TLS, with a
//! throwaway CA made by the test support): every connection ff opens —
//! publishing, the subscription's own read path, the cursor store,
//! retention — goes over TLS; mutual TLS works; and a bad, expired or
//! wrong-host certificate, a plaintext server behind a TLS URL and a TLS
//! server behind a plain URL are each one clear line, never a hang, never
//! with the password.

use std::time::Duration;

use ff_backend_valkey::redis;
use ff_backend_valkey::{Retention, ValkeyBackend, ValkeyConfig};
use ff_core::backend::{CursorStore, DeliveryItem, EventPublisher, StreamBackend};
use ff_core::engine_error::EngineError;
use ff_core::filter::SubscriptionFilter;
use ff_core::stream_events::{CompletionOutcome, EventMeta, Family, NewEvent};
use ff_core::stream_subscribe::StreamCursor;
use ff_core::types::ExecutionId;
use ff_tests::support::{self, ServerCert, TlsServerOptions, ValkeyServer};
use futures::StreamExt;
use tokio::time::{timeout_at, Instant};

const DEADLINE: Duration = Duration::from_secs(20);

async fn tls_server(options: TlsServerOptions) -> ValkeyServer {
    tokio::task::spawn_blocking(move || ValkeyServer::start_tls(options))
        .await
        .expect("support thread")
        .expect("a TLS server (redis-server with TLS)")
}

fn config(label: &str) -> ValkeyConfig {
    let name = support::unique_name(label);
    ValkeyConfig::default()
        .with_key_prefix(format!("{name}:"))
        .with_client_name(name)
        .with_timeouts(Duration::from_secs(5), Duration::from_secs(10))
}

/// `url` with `user:hunter2@` put in front of the host.
fn with_password(url: &str) -> String {
    url.replacen("://", "://ffuser:hunter2@", 1)
}

fn completion(n: usize) -> (NewEvent, EventMeta) {
    (
        NewEvent::completion(ExecutionId::new(1), CompletionOutcome::Success),
        EventMeta::new().with_tag("n", n.to_string()),
    )
}

/// The local ports of every connection named `name` or `name:…`.
fn connection_ports(server: &ValkeyServer, name: &str) -> Vec<u16> {
    let list = match server.command(&["CLIENT", "LIST"]).expect("CLIENT LIST") {
        support::Reply::Bulk(Some(b)) => String::from_utf8_lossy(&b).into_owned(),
        other => panic!("CLIENT LIST: {other:?}"),
    };
    list.lines()
        .filter(|l| {
            l.split(' ').any(|kv| {
                kv.strip_prefix("name=")
                    .is_some_and(|n| n == name || n.starts_with(&format!("{name}:")))
            })
        })
        .filter_map(|l| {
            l.split(' ')
                .find_map(|kv| kv.strip_prefix("laddr="))
                .and_then(|a| a.rsplit(':').next()?.parse().ok())
        })
        .collect()
}

#[tokio::test]
async fn publishing_subscribing_cursors_and_retention_all_go_over_tls() {
    let server = tls_server(TlsServerOptions::default()).await;
    let url = server.tls_url().expect("a TLS URL");
    let config = config("fftls").with_retention(Family::Completion, Retention::MaxLen(5));
    let name = config.client_name.clone();
    let b = ValkeyBackend::connect(&url, config)
        .await
        .expect("connect over TLS");
    let cursors = b
        .publish_batch((0..20).map(completion).collect())
        .await
        .expect("publish");
    b.apply_retention(Family::Completion).await.expect("trim");
    let mut sub = b
        .subscribe_family(
            Family::Completion,
            cursors[14].clone(),
            &SubscriptionFilter::default(),
        )
        .await
        .expect("subscribe");
    let mut got = Vec::new();
    loop {
        match timeout_at(Instant::now() + DEADLINE, sub.next()).await {
            Ok(Some(Ok(DeliveryItem::Event { meta, .. }))) => got.push(meta.tags["n"].clone()),
            Ok(Some(Ok(DeliveryItem::CaughtUp { .. }))) => break,
            other => panic!("over TLS: {other:?}"),
        }
    }
    assert_eq!(got, ["15", "16", "17", "18", "19"]);
    // Live, through the subscription's own TLS connection.
    let live = b
        .publish(completion(20).0, completion(20).1)
        .await
        .expect("publish");
    match timeout_at(Instant::now() + DEADLINE, sub.next()).await {
        Ok(Some(Ok(DeliveryItem::Event { event, .. }))) => assert_eq!(event.cursor(), &live),
        other => panic!("live over TLS: {other:?}"),
    }
    b.store("tls-consumer", &live).await.expect("store");
    assert_eq!(b.load("tls-consumer").await.expect("load"), Some(live));
    let mut app = b.connection().await.expect("an application connection");
    let pong: String = redis::cmd("PING")
        .query_async(&mut app)
        .await
        .expect("PING over TLS");
    assert_eq!(pong, "PONG");

    let ports = connection_ports(&server, &name);
    assert!(
        ports.len() >= 3,
        "shared, subscription and application: {ports:?}"
    );
    let tls_port = server.tls_port().expect("TLS port");
    assert!(
        ports.iter().all(|p| *p == tls_port),
        "every connection on the TLS port {tls_port}: {ports:?}"
    );
}

#[tokio::test]
async fn mutual_tls_needs_the_client_certificate_and_says_so_without_it() {
    let server = tls_server(TlsServerOptions {
        require_client_cert: true,
        ..TlsServerOptions::default()
    })
    .await;
    let files = server.tls_files().expect("files").clone();
    let url = server.tls_url().expect("a TLS URL");
    let mtls = format!(
        "{url}&client_cert={}&client_key={}",
        files.client_cert.display(),
        files.client_key.display()
    );
    let b = ValkeyBackend::connect(&mtls, config("ffmtls"))
        .await
        .expect("connect with a client certificate");
    let cursor = b
        .publish(completion(0).0, completion(0).1)
        .await
        .expect("publish");
    let mut sub = b
        .subscribe_family(
            Family::Completion,
            StreamCursor::beginning(),
            &SubscriptionFilter::default(),
        )
        .await
        .expect("subscribe");
    match timeout_at(Instant::now() + DEADLINE, sub.next()).await {
        Ok(Some(Ok(DeliveryItem::Event { event, .. }))) => assert_eq!(event.cursor(), &cursor),
        other => panic!("over mutual TLS: {other:?}"),
    }

    let err = ValkeyBackend::connect(&with_password(&url), config("ffmtls"))
        .await
        .expect_err("no client certificate");
    let text = err.to_string();
    assert!(text.contains("client_cert="), "{text}");
    assert!(
        !text.contains('\n') && !format!("{err:?}").contains("hunter2"),
        "{text}"
    );
}

/// Connecting to `url` fails promptly with one line containing `needle`.
async fn refused(url: &str, needle: &str) {
    let started = Instant::now();
    let err = ValkeyBackend::connect(&with_password(url), config("ffbadtls"))
        .await
        .expect_err("must not connect");
    let text = err.to_string();
    assert!(
        matches!(err, EngineError::Transport { .. }),
        "{url}: {err:?}"
    );
    assert!(text.contains(needle), "{url}: {text:?} lacks {needle:?}");
    assert!(!text.contains('\n'), "one line: {text}");
    let debug = format!("{err:?}");
    assert!(
        !text.contains("hunter2") && !debug.contains("hunter2"),
        "{debug}"
    );
    assert!(
        started.elapsed() < DEADLINE,
        "{url}: took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn untrusted_expired_and_wrong_host_certificates_are_each_one_clear_error() {
    for (cert, needle) in [
        (ServerCert::UntrustedCa, "not signed by the CA in ca_cert="),
        (ServerCert::Expired, "has expired"),
        (ServerCert::WrongHost, "not valid for host 127.0.0.1"),
    ] {
        let server = tls_server(TlsServerOptions {
            cert,
            ..TlsServerOptions::default()
        })
        .await;
        refused(&server.tls_url().expect("TLS URL"), needle).await;
    }
}

#[tokio::test]
async fn without_ca_cert_the_system_roots_decide() {
    let server = tls_server(TlsServerOptions::default()).await;
    let port = server.tls_port().expect("TLS port");
    refused(
        &format!("valkeys://127.0.0.1:{port}"),
        "not signed by the system's CA certificates; pass ca_cert=",
    )
    .await;
}

#[tokio::test]
async fn a_plaintext_server_behind_a_tls_url_and_the_reverse_are_clear_errors() {
    let server = tls_server(TlsServerOptions::default()).await;
    let files = server.tls_files().expect("files");
    let plain_port = server.port();
    let tls_port = server.tls_port().expect("TLS port");
    refused(
        &format!(
            "valkeys://127.0.0.1:{plain_port}?ca_cert={}",
            files.ca.display()
        ),
        "valkey://",
    )
    .await;
    refused(&format!("valkey://127.0.0.1:{tls_port}"), "use valkeys://").await;
}
