//! `ff serve` under hostile and careless clients, over real sockets: it
//! authorises before reading a body, refuses oversized bodies at once,
//! times out slow bodies, slow headers and idle connections, caps its
//! connections with a clear answer, and its memory stays flat meanwhile.
//! Every wait is a deadline on a condition, never a timing threshold.
//!
//! Well-behaved requests go through the suite's shared client
//! (`ff_tests::http_client`); the hostile ones are written by hand on the
//! socket, since half a head, a stalled body or a lying `Content-Length`
//! is exactly what a real client never sends.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::time::Instant;

use ff_tests::http_client;
use ff_tests::support::serve_process::start_listening;

/// Deadline for anything the server must do promptly.
const WAIT: Duration = Duration::from_secs(15);
const READ: &str = "read-token-aaaaaaaaaaaaaaaa";
const WRITE: &str = "write-token-bbbbbbbbbbbbbbbb";
const MIB: usize = 1024 * 1024;

/// A running `ff serve` process.
struct Serve {
    child: Child,
    port: u16,
    _tokens: TempFile,
}

struct TempFile(std::path::PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl Serve {
    /// Start `ff serve` over memory with tokens and `extra` options,
    /// optionally under an open-file limit, and wait for `/healthz`.
    async fn start(extra: &[&str], open_file_limit: Option<u32>) -> Self {
        let _ = rlimit::increase_nofile_limit(u64::MAX);
        let tokens = TempFile(std::env::temp_dir().join(format!(
            "ff-hostile-{}-{:x}.tokens",
            std::process::id(),
            rand::random::<u64>()
        )));
        std::fs::write(&tokens.0, format!("ro:{READ}\nrw:{WRITE}\n")).expect("token file");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&tokens.0, std::fs::Permissions::from_mode(0o600))
                .expect("chmod token file");
        }
        let token_file = tokens.0.display().to_string();
        let mut args: Vec<&str> = vec![
            "serve",
            "--backend",
            "memory:",
            "--listen",
            "127.0.0.1:0",
            "--token-file",
            &token_file,
        ];
        args.extend_from_slice(extra);
        let exe = env!("CARGO_BIN_EXE_ff");
        let mut command = match open_file_limit {
            None => {
                let mut c = Command::new(exe);
                c.args(&args);
                c
            }
            Some(limit) => {
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\""))
                    .arg(exe)
                    .args(&args);
                c
            }
        };
        command.stdin(Stdio::null()).stdout(Stdio::null());
        let (child, port) = start_listening(command).await;
        let serve = Self {
            child,
            port,
            _tokens: tokens,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while healthz(port).await != Some(200) {
            assert!(
                Instant::now() < deadline,
                "ff serve did not answer /healthz within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        serve
    }

    fn proc_kib(&self, field: &str) -> u64 {
        let pid = self.child.id().expect("ff serve is running");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
        status
            .lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
    }

    /// Resident memory now, in MiB.
    fn rss_mib(&self) -> f64 {
        self.proc_kib("VmRSS:") as f64 / 1024.0
    }

    /// Peak resident memory so far, in MiB.
    fn peak_rss_mib(&self) -> f64 {
        self.proc_kib("VmHWM:") as f64 / 1024.0
    }

    async fn connect(&self) -> TcpStream {
        TcpStream::connect(("127.0.0.1", self.port))
            .await
            .expect("connect to ff serve")
    }
}

/// `GET /healthz` on a fresh connection: the status, or `None` if the
/// server did not answer.
async fn healthz(port: u16) -> Option<u16> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    http_client::status_of(addr, "/healthz", Duration::from_secs(5)).await
}

/// Read until the end of a response head; returns everything read (the
/// head and any body bytes that came with it), `None` if the connection
/// closed first.
async fn read_head(s: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        head.extend_from_slice(&buf[..n]);
        if head.windows(4).any(|w| w == b"\r\n\r\n") {
            return Some(String::from_utf8_lossy(&head).into_owned());
        }
    }
}

fn status_of(head: &str) -> Option<u16> {
    head.get(9..12)?.parse().ok()
}

/// Read a response head within the deadline, failing the test otherwise.
async fn answer(s: &mut TcpStream, what: &str) -> String {
    tokio::time::timeout(WAIT, read_head(s))
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {WAIT:?}"))
        .unwrap_or_else(|| panic!("{what}: the connection closed without an answer"))
}

/// Wait until the server closes `s` (EOF or reset); `false` if the deadline
/// passed first.
async fn closed_by_server(s: &mut TcpStream, deadline: Instant) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

fn post_head(length: &str, token: Option<&str>) -> String {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    format!(
        "POST /v1/streams/completion HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n{auth}Content-Length: {length}\r\n\r\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unauthenticated_post_is_refused_before_its_body_arrives() {
    let serve = Serve::start(&[], None).await;
    let mut s = serve.connect().await;
    s.write_all(post_head("1000", None).as_bytes())
        .await
        .unwrap();
    let head = answer(&mut s, "unauthenticated POST without its body").await;
    assert_eq!(status_of(&head), Some(401), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_unauthenticated_megabyte_posts_are_refused_and_memory_stays_flat() {
    let serve = Serve::start(&[], None).await;
    let baseline = serve.rss_mib();
    let body = vec![b'x'; MIB - 1];
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let mut s = serve.connect().await;
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            s.write_all(post_head(&MIB.to_string(), None).as_bytes())
                .await
                .unwrap();
            let (mut r, mut w) = s.into_split();
            // All but the last byte; the server may stop reading at any time.
            let writer = tokio::spawn(async move {
                let _ = w.write_all(&body).await;
                w
            });
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            let got = tokio::time::timeout(WAIT, async {
                loop {
                    match r.read(&mut buf).await {
                        Ok(0) | Err(_) => return head,
                        Ok(n) => {
                            head.extend_from_slice(&buf[..n]);
                            if head.windows(4).any(|w| w == b"\r\n\r\n") {
                                return head;
                            }
                        }
                    }
                }
            })
            .await;
            writer.abort();
            got.map(|h| String::from_utf8_lossy(&h).into_owned())
        }));
    }
    let mut answered = 0;
    for t in tasks {
        let head = t
            .await
            .unwrap()
            .expect("the server neither answered nor closed within the deadline");
        if !head.is_empty() {
            assert_eq!(status_of(&head), Some(401), "{head}");
            answered += 1;
        }
    }
    assert!(answered > 0, "no POST got its 401");
    let grown = serve.peak_rss_mib() - baseline;
    eprintln!("server memory: {baseline:.1} MiB at start, peak {grown:+.1} MiB");
    assert!(
        grown < 32.0,
        "server memory grew by {grown:.1} MiB (from {baseline:.1} MiB) for refused bodies"
    );
    assert_eq!(healthz(serve.port).await, Some(200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_token_with_a_ten_gigabyte_content_length_gets_413_at_once() {
    let serve = Serve::start(&[], None).await;
    let mut s = serve.connect().await;
    s.write_all(post_head("10000000000", Some(WRITE)).as_bytes())
        .await
        .unwrap();
    let head = answer(&mut s, "a 10 GB Content-Length").await;
    assert_eq!(status_of(&head), Some(413), "{head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_body_is_refused_with_413_once_it_passes_the_limit() {
    let serve = Serve::start(&[], None).await;
    let mut s = serve.connect().await;
    let head = "POST /v1/streams/completion HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer write-token-bbbbbbbbbbbbbbbb\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
    s.write_all(head.as_bytes()).await.unwrap();
    let chunk = format!("{:x}\r\n{}\r\n", 64 * 1024, "x".repeat(64 * 1024));
    let (mut r, mut w) = s.into_split();
    // 17 chunks of 64 KiB pass the 1 MiB limit; the body never ends.
    let writer = tokio::spawn(async move {
        for _ in 0..17 {
            if w.write_all(chunk.as_bytes()).await.is_err() {
                break;
            }
        }
        w
    });
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let head = tokio::time::timeout(WAIT, async {
        loop {
            let n = r.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
            if got.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
        String::from_utf8_lossy(&got).into_owned()
    })
    .await
    .expect("no answer to an endless chunked body within the deadline");
    writer.abort();
    assert_eq!(status_of(&head), Some(413), "{head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stalls_is_answered_408_after_the_body_timeout() {
    let serve = Serve::start(&["--body-timeout", "1"], None).await;
    let mut s = serve.connect().await;
    s.write_all(post_head("1000", Some(WRITE)).as_bytes())
        .await
        .unwrap();
    s.write_all(b"[{\"execution_id\"").await.unwrap();
    let head = answer(&mut s, "a stalled body").await;
    assert_eq!(status_of(&head), Some(408), "{head}");
    assert!(closed_by_server(&mut s, Instant::now() + WAIT).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_connections_trickling_headers_are_closed_and_memory_stays_flat() {
    let serve = Serve::start(&["--header-timeout", "1"], None).await;
    let baseline = serve.rss_mib();
    // A head that would take minutes at one byte per 100 ms.
    let head = format!(
        "GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Padding: {}\r\n\r\n",
        "p".repeat(4000)
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let mut s = serve.connect().await;
        let head = head.clone();
        tasks.push(tokio::spawn(async move {
            for byte in head.as_bytes() {
                if s.write_all(std::slice::from_ref(byte)).await.is_err() {
                    return true;
                }
                // The pause between bytes is a read: it ends early when the
                // server closes the connection.
                let mut buf = [0u8; 64];
                match tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => return true,
                    Ok(Ok(_)) => return false,
                    Err(_) if Instant::now() > deadline => return false,
                    Err(_) => {}
                }
            }
            false
        }));
    }
    for t in tasks {
        assert!(
            t.await.unwrap(),
            "a connection trickling its head was not closed by the server"
        );
    }
    let grown = serve.peak_rss_mib() - baseline;
    eprintln!("server memory: {baseline:.1} MiB at start, peak {grown:+.1} MiB");
    assert!(grown < 32.0, "server memory grew by {grown:.1} MiB");
    assert_eq!(healthz(serve.port).await, Some(200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_kept_alive_connection_is_closed_after_the_idle_timeout() {
    let serve = Serve::start(&["--idle-timeout", "1"], None).await;
    let mut s = serve.connect().await;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let head = answer(&mut s, "a kept-alive GET").await;
    assert_eq!(status_of(&head), Some(200), "{head}");
    assert!(
        closed_by_server(&mut s, Instant::now() + WAIT).await,
        "the idle connection stayed open"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_past_the_open_file_limit_do_not_lock_out_healthz() {
    let serve = Serve::start(&[], Some(256)).await;
    let baseline = serve.rss_mib();
    let mut silent = Vec::new();
    for _ in 0..300 {
        // Some connects may fail once the backlog is full; that is fine.
        if let Ok(Ok(s)) = tokio::time::timeout(
            Duration::from_secs(2),
            TcpStream::connect(("127.0.0.1", serve.port)),
        )
        .await
        {
            silent.push(s);
        }
    }
    let deadline = Instant::now() + WAIT;
    loop {
        if healthz(serve.port).await == Some(200) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/healthz did not answer 200 with {} silent connections open",
            silent.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let grown = serve.peak_rss_mib() - baseline;
    eprintln!("server memory: {baseline:.1} MiB at start, peak {grown:+.1} MiB");
    assert!(grown < 32.0, "server memory grew by {grown:.1} MiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_connection_cap_with_every_connection_busy_a_newcomer_gets_503() {
    let serve = Serve::start(&["--max-connections", "20"], None).await;
    let mut streams = Vec::new();
    for _ in 0..20 {
        let mut s = serve.connect().await;
        let req = format!(
            "GET /v1/streams/completion HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {READ}\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let head = answer(&mut s, "an SSE stream").await;
        assert_eq!(status_of(&head), Some(200), "{head}");
        streams.push(s);
    }
    let mut s = serve.connect().await;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let head = answer(&mut s, "a connection past the cap").await;
    assert_eq!(status_of(&head), Some(503), "{head}");
    assert!(head.to_ascii_lowercase().contains("retry-after:"), "{head}");
    let mut rest = String::new();
    let _ = tokio::time::timeout(WAIT, s.read_to_string(&mut rest)).await;
    let whole = head + &rest;
    assert!(whole.contains("too_many_connections"), "{whole}");
    drop(streams);
    let deadline = Instant::now() + WAIT;
    while healthz(serve.port).await != Some(200) {
        assert!(
            Instant::now() < deadline,
            "the server did not admit connections again after the streams closed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Open a `POST /v1/session` that sends part of its body and stalls; returns
/// once the server has begun reading the body (it answered the
/// `Expect: 100-continue`).
async fn stalled_sign_in(serve: &Serve) -> TcpStream {
    let mut s = serve.connect().await;
    let head = "POST /v1/session HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100\r\nExpect: 100-continue\r\n\r\n";
    s.write_all(head.as_bytes()).await.unwrap();
    let interim = answer(&mut s, "a sign-in expecting 100-continue").await;
    assert_eq!(status_of(&interim), Some(100), "{interim}");
    s.write_all(b"{\"token\":\"").await.unwrap();
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_sign_ins_filling_the_connection_cap_do_not_lock_out_healthz() {
    // Timeouts far beyond the test's deadline: only evicting the stalled
    // sign-ins can make room.
    let serve = Serve::start(
        &[
            "--max-connections",
            "20",
            "--body-timeout",
            "600",
            "--header-timeout",
            "600",
        ],
        None,
    )
    .await;
    let mut stalled = Vec::new();
    for _ in 0..20 {
        stalled.push(stalled_sign_in(&serve).await);
    }
    // Twenty kept-alive /healthz connections, each needing a slot: every one
    // is answered, and the stalled sign-ins (evictable since their reads
    // began, before these went idle) make the room.
    let mut kept = Vec::new();
    for i in 0..20 {
        let mut s = serve.connect().await;
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        let head = answer(&mut s, "/healthz with stalled sign-ins at the cap").await;
        assert_eq!(status_of(&head), Some(200), "/healthz #{i}: {head}");
        kept.push(s);
    }
    let deadline = Instant::now() + WAIT;
    for (i, s) in stalled.iter_mut().enumerate() {
        assert!(
            closed_by_server(s, deadline).await,
            "stalled sign-in #{i} was not closed to make room"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_sign_in_body_gets_408_after_the_header_timeout() {
    // The body timeout is far beyond the test's deadline; the sign-in gets
    // the header timeout.
    let serve = Serve::start(&["--header-timeout", "1", "--body-timeout", "600"], None).await;
    let mut s = stalled_sign_in(&serve).await;
    let head = answer(&mut s, "a stalled sign-in").await;
    assert_eq!(status_of(&head), Some(408), "{head}");
    assert!(closed_by_server(&mut s, Instant::now() + WAIT).await);
}
