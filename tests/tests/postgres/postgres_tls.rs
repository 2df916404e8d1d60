//! TLS to a real PostgreSQL server with `ssl = on`, a throwaway CA and a
//! `pg_hba.conf` that admits TCP only over TLS: every `sslmode` behaves as
//! libpq's does, a client certificate authenticates, and the pool and the
//! subscriptions both run over TLS.

use ff_backend_postgres::sqlx;
use ff_backend_postgres::{PostgresBackend, PostgresConfig};
use ff_core::backend::{DeliveryItem, EventPublisher, StreamBackend};
use ff_core::engine_error::EngineError;
use ff_core::filter::SubscriptionFilter;
use ff_core::stream_events::{CompletionOutcome, EventMeta, Family, NewEvent};
use ff_core::stream_subscribe::StreamCursor;
use ff_core::testkit::support::{next_item, take_events, Sub, ITEM_DEADLINE};
use ff_core::types::ExecutionId;
use ff_tests::harness::postgres::own_server;
use ff_tests::support::{PostgresTlsFiles, CERT_ROLE};

const FAMILY: Family = Family::Completion;

fn config(name: &str) -> PostgresConfig {
    PostgresConfig::default()
        .with_schema("tls")
        .with_application_name(name)
}

fn url(user: &str, host: &str, port: u16, params: &str) -> String {
    format!("postgres://{user}@{host}:{port}/postgres?{params}")
}

async fn connect_err(url: &str) -> EngineError {
    match PostgresBackend::connect(url, config("ff-tls-refused")).await {
        Ok(_) => panic!("{url} connected"),
        Err(e) => e,
    }
}

#[cfg_attr(
    ff_external_postgres,
    ignore = "needs a PostgreSQL server of its own; FF_TEST_POSTGRES_URL is set"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sslmode_behaves_as_libpq_and_everything_runs_over_tls() {
    let Some(server) =
        own_server("every_sslmode_behaves_as_libpq_and_everything_runs_over_tls").await
    else {
        return;
    };
    let files: PostgresTlsFiles = {
        let server = server.clone();
        tokio::task::spawn_blocking(move || server.enable_tls())
            .await
            .expect("support thread")
            .expect("turn TLS on")
    };
    server
        .psql(&format!("CREATE ROLE {CERT_ROLE} LOGIN SUPERUSER"))
        .expect("create the certificate role");
    let port = server.port();
    let ca = files.ca.display().to_string();
    let verify_full = format!("sslmode=verify-full&sslrootcert={ca}");

    // Only TLS is admitted: without it the server refuses the login.
    let err = connect_err(&url("postgres", "127.0.0.1", port, "sslmode=disable")).await;
    assert!(err.to_string().contains("sslmode"), "{err}");

    // Encrypted without verification, then verified by name and by IP.
    for params in [
        "sslmode=prefer",
        "sslmode=require",
        &format!("sslmode=verify-ca&sslrootcert={ca}"),
    ] {
        PostgresBackend::connect(
            &url("postgres", "127.0.0.1", port, params),
            config("ff-tls"),
        )
        .await
        .unwrap_or_else(|e| panic!("{params}: {e}"));
    }
    for host in ["localhost", "127.0.0.1"] {
        PostgresBackend::connect(&url("postgres", host, port, &verify_full), config("ff-tls"))
            .await
            .unwrap_or_else(|e| panic!("verify-full to {host}: {e}"));
    }

    // A server certificate the given CA did not sign is refused, clearly.
    let other = files.other_ca.display().to_string();
    for mode in ["verify-ca", "verify-full"] {
        let err = connect_err(&url(
            "postgres",
            "localhost",
            port,
            &format!("sslmode={mode}&sslrootcert={other}"),
        ))
        .await;
        assert!(
            matches!(err, EngineError::Transport { .. }),
            "{mode}: {err:?}"
        );
        assert!(err.to_string().contains("TLS"), "{mode}: {err}");
    }

    // Certificate authentication: the role needs the client certificate.
    let err = connect_err(&url(CERT_ROLE, "localhost", port, &verify_full)).await;
    assert!(!matches!(err, EngineError::Transport { .. }), "{err:?}");
    let with_cert = format!(
        "{verify_full}&sslcert={}&sslkey={}",
        files.client_cert.display(),
        files.client_key.display()
    );
    let backend = PostgresBackend::connect(
        &url(CERT_ROLE, "localhost", port, &with_cert),
        config("ff-tls-cert"),
    )
    .await
    .expect("connect with a client certificate");

    // Publishing and a live subscription, both over TLS.
    let mut sub = Sub::new(
        backend
            .subscribe_family(
                FAMILY,
                StreamCursor::empty(),
                &SubscriptionFilter::default(),
            )
            .await
            .expect("subscribe"),
    );
    assert!(matches!(
        next_item(&mut sub, ITEM_DEADLINE, "CaughtUp").await,
        DeliveryItem::CaughtUp { .. }
    ));
    let published = backend
        .publish(
            NewEvent::completion(ExecutionId::new(4), CompletionOutcome::Success),
            EventMeta::new(),
        )
        .await
        .expect("publish");
    let events = take_events(&mut sub, 1, "the event over TLS").await;
    assert_eq!(events[0].0.cursor(), &published);
    let admin = sqlx::PgPool::connect(&url("postgres", "localhost", port, &verify_full))
        .await
        .expect("admin connection");
    let (ours, encrypted): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE s.ssl) FROM pg_stat_activity a \
         JOIN pg_stat_ssl s USING (pid) WHERE a.application_name IN ('ff-tls-cert', 'ff-tls-cert-sub')",
    )
    .fetch_one(&admin)
    .await
    .expect("connection states");
    assert!(
        ours >= 2,
        "the pool and the subscription are connected ({ours})"
    );
    assert_eq!(encrypted, ours, "every connection of the backend uses TLS");
}
