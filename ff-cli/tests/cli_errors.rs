//! What a person sees when `ff` fails: one line, the cause once, the
//! password never, and what to do.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;

/// Run `ff` with `args`; its exit success and stderr.
fn ff(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ff"))
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("FF_LOG")
        .output()
        .expect("run ff");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
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
