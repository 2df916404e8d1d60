//! `ff serve --tls-cert --tls-key` terminates TLS itself (rustls) and marks
//! the session cookie `Secure`; behind a proxy, `--secure-cookie` and a
//! trusted `X-Forwarded-Proto` do the same over plain HTTP. Certificates
//! come from the suite's throwaway test CA (`ff_tests::support::tls_ca`).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::time::Instant;

use ff_tests::support::serve_process::start_listening;
use ff_tests::support::{tls_ca, ServerCert, TlsFiles};

const WAIT: Duration = Duration::from_secs(15);
const READ: &str = "read-token-aaaaaaaaaaaaaaaa";

/// A scratch directory removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(label: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "ff-{label}-{}-{:x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A CA (`ca`) and a leaf for localhost/127.0.0.1 (`server_cert`,
/// `server_key`) signed by it, plus a key that belongs to neither
/// (`client_key`), from the suite's one test CA.
fn make_certs(dir: &Path) -> TlsFiles {
    tls_ca::make(dir, ServerCert::Valid).expect("make the test certificates")
}

fn serve_command(dir: &Path, extra: &[&str]) -> Command {
    std::fs::write(dir.join("tokens"), format!("{READ}\n")).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.join("tokens"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
    }
    let mut c = Command::new(env!("CARGO_BIN_EXE_ff"));
    c.args(["serve", "--backend", "memory:"])
        .args(["--listen", "127.0.0.1:0"])
        .arg("--token-file")
        .arg(dir.join("tokens"))
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    c
}

fn tls_connector(ca: &Path) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(ring_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// Send `request` and read until the head is complete (plus what came with it).
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, request: &str) -> String {
    s.write_all(request.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(WAIT, async {
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("an answer within the deadline");
    String::from_utf8_lossy(&got).into_owned()
}

async fn https(port: u16, connector: &tokio_rustls::TlsConnector, request: &str) -> String {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("TLS handshake with ff serve");
    exchange(&mut tls, request).await
}

async fn http(port: u16, request: &str) -> String {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    exchange(&mut tcp, request).await
}

fn session_request(extra_headers: &str) -> String {
    let body = format!("{{\"token\":\"{READ}\"}}");
    format!(
        "POST /v1/session HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n{extra_headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

fn set_cookie(head: &str) -> String {
    head.lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_else(|| panic!("no Set-Cookie in {head}"))
        .to_owned()
}

/// Wait until `probe` answers, failing if the child exits first.
async fn wait_up<F, Fut>(child: &mut Child, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while !probe().await {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("ff serve exited early: {status}");
        }
        assert!(Instant::now() < deadline, "ff serve did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ff_serve_terminates_tls_and_marks_the_session_cookie_secure() {
    let dir = Scratch::new("tls");
    let files = make_certs(&dir.0);
    let cert = files.server_cert.display().to_string();
    let key = files.server_key.display().to_string();
    let (mut child, port) = start_listening(serve_command(
        &dir.0,
        &["--tls-cert", &cert, "--tls-key", &key],
    ))
    .await;
    let connector = tls_connector(&files.ca);
    let health = "GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    wait_up(&mut child, || async {
        match TcpStream::connect(("127.0.0.1", port)).await {
            Ok(tcp) => match connector
                .connect(ServerName::try_from("localhost").unwrap(), tcp)
                .await
            {
                Ok(mut tls) => exchange(&mut tls, health).await.starts_with("HTTP/1.1 200"),
                Err(_) => false,
            },
            Err(_) => false,
        }
    })
    .await;

    let head = https(port, &connector, &session_request("")).await;
    assert!(head.starts_with("HTTP/1.1 204"), "{head}");
    let cookie = set_cookie(&head);
    assert!(cookie.contains("; Secure"), "{cookie}");
    assert!(cookie.contains("HttpOnly"), "{cookie}");

    let stream = format!(
        "GET /v1/streams/completion HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {READ}\r\n\r\n"
    );
    let head = https(port, &connector, &stream).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/event-stream"), "{head}");

    // Plain HTTP on the TLS port gets no HTTP answer.
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    tcp.write_all(health.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(WAIT, tcp.read_to_end(&mut got)).await;
    assert!(
        !got.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_that_does_not_match_the_certificate_fails_at_startup_in_one_line() {
    let dir = Scratch::new("tls-mismatch");
    let files = make_certs(&dir.0);
    let cert = files.server_cert.display().to_string();
    let key = files.client_key.display().to_string();
    let child = serve_command(&dir.0, &["--tls-cert", &cert, "--tls-key", &key])
        .spawn()
        .unwrap();
    let out = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .expect("ff serve must exit")
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("ff:")).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].contains("key"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_proxy_forwarded_https_marks_the_cookie_secure_only_when_trusted() {
    let dir = Scratch::new("proxy");
    let forwarded = "X-Forwarded-Proto: https\r\n";
    let healthy = |port: u16| async move {
        TcpStream::connect(("127.0.0.1", port)).await.is_ok()
            && http(
                port,
                "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            )
            .await
            .starts_with("HTTP/1.1 200")
    };

    let (mut untrusting, port) = start_listening(serve_command(&dir.0, &[])).await;
    wait_up(&mut untrusting, || healthy(port)).await;
    let cookie = set_cookie(&http(port, &session_request(forwarded)).await);
    assert!(
        !cookie.contains("Secure"),
        "X-Forwarded-Proto is not trusted by default: {cookie}"
    );
    drop(untrusting);

    let (mut trusting, port) =
        start_listening(serve_command(&dir.0, &["--trust-forwarded-proto"])).await;
    wait_up(&mut trusting, || healthy(port)).await;
    let cookie = set_cookie(&http(port, &session_request(forwarded)).await);
    assert!(cookie.contains("; Secure"), "{cookie}");
    let cookie = set_cookie(&http(port, &session_request("")).await);
    assert!(
        !cookie.contains("Secure"),
        "a direct plain request: {cookie}"
    );
    drop(trusting);

    let (mut secure, port) = start_listening(serve_command(&dir.0, &["--secure-cookie"])).await;
    wait_up(&mut secure, || healthy(port)).await;
    let cookie = set_cookie(&http(port, &session_request("")).await);
    assert!(cookie.contains("; Secure"), "{cookie}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_connection_cap_an_https_newcomer_gets_503_after_the_handshake() {
    let dir = Scratch::new("tls-cap");
    let files = make_certs(&dir.0);
    let cert = files.server_cert.display().to_string();
    let key = files.server_key.display().to_string();
    let (mut child, port) = start_listening(serve_command(
        &dir.0,
        &[
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--max-connections",
            "2",
        ],
    ))
    .await;
    let connector = tls_connector(&files.ca);
    let health = "GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    wait_up(&mut child, || async {
        match TcpStream::connect(("127.0.0.1", port)).await {
            Ok(tcp) => match connector
                .connect(ServerName::try_from("localhost").unwrap(), tcp)
                .await
            {
                Ok(mut tls) => exchange(&mut tls, health).await.starts_with("HTTP/1.1 200"),
                Err(_) => false,
            },
            Err(_) => false,
        }
    })
    .await;
    // Two streams fill the cap with requests in flight: nothing to evict.
    let stream = format!(
        "GET /v1/streams/completion HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {READ}\r\n\r\n"
    );
    let mut streams = Vec::new();
    for _ in 0..2 {
        let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let mut tls = connector
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .expect("TLS handshake under the cap");
        let head = exchange(&mut tls, &stream).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        streams.push(tls);
    }
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("a newcomer past the cap still completes the TLS handshake");
    let head = exchange(&mut tls, health).await;
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert!(head.to_ascii_lowercase().contains("retry-after:"), "{head}");
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(WAIT, tls.read_to_end(&mut rest)).await;
    let whole = head + &String::from_utf8_lossy(&rest);
    assert!(whole.contains("too_many_connections"), "{whole}");
    drop(streams);
}

/// The *ring* crypto provider. rustls 0.23.48 deprecates it for lacking
/// post-quantum key exchange; ff keeps *ring* on purpose (it builds without
/// a C toolchain, and sqlx here is built with it too), and allowing the
/// deprecation in this one place keeps the builds of applications that
/// resolve a fresh rustls free of warnings.
#[allow(deprecated)]
fn ring_provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}
