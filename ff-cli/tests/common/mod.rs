//! What the CLI test binaries share: running the `ff` binary.

use std::io::Write;
use std::process::{Command, Stdio};

/// Run `ff` with `args`, feeding it `stdin` (an empty input when `None`),
/// with no `RUST_LOG`/`FF_LOG` of the caller's to add log lines; answers
/// whether it succeeded, its stdout and its stderr.
pub fn ff(args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ff"))
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("FF_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ff");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).expect("write stdin");
    }
    drop(input);
    let out = child.wait_with_output().expect("wait for ff");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
