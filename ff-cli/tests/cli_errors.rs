//! What a person sees when `ff` fails: one line, the cause once, the
//! password never, and what to do.

use std::io::{Read, Write};
use std::net::TcpListener;

mod common;

/// Run `ff` with `args`; its exit success and stderr.
fn ff(args: &[&str]) -> (bool, String) {
    let (ok, _, stderr) = common::ff(args, None);
    (ok, stderr)
}

/// A loopback port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

fn assert_one_line(stderr: &str) {
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "not one line:\n{stderr}"
    );
    assert!(stderr.starts_with("ff: "), "{stderr}");
}

#[test]
fn nothing_listening_is_one_line_naming_the_cause_once() {
    let url = format!("valkey://ffuser:s3cret-pass@127.0.0.1:{}", closed_port());
    let (ok, stderr) = ff(&["tail", "completion", "--backend", &url]);
    assert!(!ok);
    assert_one_line(&stderr);
    assert!(stderr.contains("nothing is listening"), "{stderr}");
    assert_eq!(stderr.matches("refused").count(), 1, "{stderr}");
    assert!(
        !stderr.contains("s3cret-pass"),
        "the password leaked: {stderr}"
    );
}

#[test]
fn a_server_speaking_http_is_named_as_such() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = std::thread::spawn(move || {
        // Answer every connection the way an HTTP server answers garbage.
        for stream in listener.incoming().take(8) {
            let Ok(mut stream) = stream else { break };
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
        }
    });
    let (ok, stderr) = ff(&[
        "tail",
        "completion",
        "--backend",
        &format!("valkey://127.0.0.1:{port}"),
    ]);
    assert!(!ok);
    assert_one_line(&stderr);
    assert!(stderr.contains("Valkey/Redis protocol"), "{stderr}");
    drop(server);
}

#[test]
fn a_huge_bad_cursor_is_echoed_as_a_short_marked_prefix() {
    let cursor = "A".repeat(100_000);
    let (ok, stderr) = ff(&[
        "tail",
        "completion",
        "--backend",
        "memory:",
        "--from",
        &cursor,
    ]);
    assert!(!ok);
    assert_one_line(&stderr);
    assert!(stderr.len() < 400, "{} characters: {stderr}", stderr.len());
    assert!(stderr.contains("100000 characters"), "{stderr}");
}

#[test]
fn a_missing_token_file_says_so_once() {
    let (ok, stderr) = ff(&[
        "serve",
        "--backend",
        "memory:",
        "--listen",
        "127.0.0.1:0",
        "--token-file",
        "/nonexistent/ff-tokens.txt",
    ]);
    assert!(!ok);
    assert_one_line(&stderr);
    assert_eq!(stderr.matches("No such file").count(), 1, "{stderr}");
}

/// A Valkey server of this test's own, with an ACL user `ffuser` that
/// may only read (`XADD` is refused).
fn valkey_with_reader() -> ff_tests::support::ValkeyServer {
    let server = ff_tests::support::ValkeyServer::start().expect("start valkey-server");
    let client = ff_backend_valkey::redis::Client::open(server.url()).expect("client");
    let mut conn = client.get_connection().expect("connection");
    ff_backend_valkey::redis::cmd("ACL")
        .arg("SETUSER")
        .arg("ffuser")
        .arg("on")
        .arg(">right-pass")
        .arg("~*")
        .arg("+@all")
        .arg("-xadd")
        .query::<()>(&mut conn)
        .expect("ACL SETUSER");
    server
}

#[test]
fn a_wrong_password_says_authentication_failed_once() {
    let server = valkey_with_reader();
    let url = format!("valkey://ffuser:wrong-pass@127.0.0.1:{}", server.port());
    let (ok, stderr) = ff(&["tail", "completion", "--backend", &url, "--limit", "1"]);
    assert!(!ok);
    assert_one_line(&stderr);
    assert!(stderr.contains("authentication failed"), "{stderr}");
    assert!(
        stderr.contains("check the user name and password"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("valkeys://"),
        "not a TLS problem: {stderr}"
    );
    assert!(
        !stderr.contains("wrong-pass"),
        "the password leaked: {stderr}"
    );
}

#[test]
fn a_missing_right_names_the_command_and_the_account() {
    let server = valkey_with_reader();
    let url = format!("valkey://ffuser:right-pass@127.0.0.1:{}", server.port());
    let (ok, stderr) = ff_with_stdin(
        &["publish", "completion", "--backend", &url],
        r#"{"execution_id":"{fp:1}:11111111-1111-4111-8111-111111111111","outcome":"success"}"#,
    );
    assert!(!ok);
    assert_one_line(&stderr);
    assert!(stderr.contains("XADD"), "{stderr}");
    assert!(stderr.contains("ffuser"), "{stderr}");
    assert!(!stderr.contains("ExtensionError"), "{stderr}");
}

#[test]
fn publishing_to_a_killed_server_is_one_line() {
    let mut server = ff_tests::support::ValkeyServer::start().expect("start valkey-server");
    let url = format!("valkey://127.0.0.1:{}", server.port());
    server.kill().expect("kill valkey-server");
    let (ok, stderr) = ff_with_stdin(
        &["publish", "completion", "--backend", &url],
        r#"{"execution_id":"{fp:1}:11111111-1111-4111-8111-111111111111","outcome":"success"}"#,
    );
    assert!(!ok);
    assert_one_line(&stderr);
    assert!(stderr.contains("nothing is listening"), "{stderr}");
}

#[test]
fn a_postgres_url_at_a_valkey_port_times_out_in_one_line() {
    let server = ff_tests::support::ValkeyServer::start().expect("start valkey-server");
    let url = format!(
        "postgres://ff@127.0.0.1:{}/ff?connect_timeout=1",
        server.port()
    );
    let (ok, stderr) = ff(&["tail", "completion", "--backend", &url]);
    assert!(!ok);
    assert_one_line(&stderr);
    assert!(stderr.contains("within 1s"), "{stderr}");
    assert!(stderr.contains("kind of server"), "{stderr}");
    assert_eq!(stderr.matches("within 1s").count(), 1, "{stderr}");
}

/// Run `ff` with `args` and `input` on stdin; its exit success and stderr.
fn ff_with_stdin(args: &[&str], input: &str) -> (bool, String) {
    let (ok, _, stderr) = common::ff(args, Some(input));
    (ok, stderr)
}

#[test]
fn a_cursor_ahead_of_a_flushed_server_names_where_to_resume() {
    let server = ff_tests::support::ValkeyServer::start().expect("start valkey-server");
    let url = format!("valkey://127.0.0.1:{}", server.port());
    let (ok, out, err) = common::ff(
        &["publish", "completion", "--backend", &url],
        Some(
            r#"{"execution_id":"{fp:1}:11111111-1111-4111-8111-111111111111","outcome":"success"}"#,
        ),
    );
    assert!(ok, "ff publish failed: {err}");
    let cursor = out.trim().to_owned();
    // The server loses its data (a restore from an older backup, a flush).
    assert!(matches!(
        server.command(&["FLUSHALL"]).expect("FLUSHALL"),
        ff_tests::support::Reply::Simple(_)
    ));
    let (ok, stderr) = ff(&["tail", "completion", "--backend", &url, "--from", &cursor]);
    assert!(!ok);
    assert_one_line(&stderr);
    assert!(stderr.contains("has expired"), "{stderr}");
    // The line ends naming the cursor to resume from.
    let resume = stderr
        .trim_end()
        .rsplit_once(" cursor ")
        .map(|(_, cursor)| cursor)
        .filter(|c| !c.contains(' '))
        .unwrap_or_else(|| panic!("no resume cursor named at the end: {stderr}"));
    let (ok, _, err) = common::ff(
        &[
            "tail",
            "completion",
            "--backend",
            &url,
            "--from",
            resume,
            "--idle-timeout",
            "1",
        ],
        None,
    );
    assert!(ok, "resuming from {resume:?} failed: {err}");
}
