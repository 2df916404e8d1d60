//! Every `ff` subcommand logs through `tracing` filtered by `FF_LOG` or
//! `RUST_LOG`, in colour only when stderr is a terminal.

use std::process::{Command, Output};

const EXEC: &str = "{fp:0}:11111111-1111-4111-8111-111111111111";

/// `ff publish` one event over memory with `env` set, stderr redirected.
fn publish_with(env: &[(&str, &str)]) -> Output {
    let event = format!(r#"{{"execution_id":"{EXEC}","outcome":"success"}}"#);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ff"));
    cmd.args([
        "publish",
        "completion",
        "--backend",
        "memory:",
        "--event",
        &event,
    ])
    .env_remove("RUST_LOG")
    .env_remove("FF_LOG")
    .env_remove("NO_COLOR");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run ff publish");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn rust_log_is_honoured_and_redirected_logs_have_no_colour() {
    let out = publish_with(&[("RUST_LOG", "debug")]);
    let err = stderr(&out);
    assert!(
        err.contains("ff starting"),
        "RUST_LOG=debug shows debug lines: {err}"
    );
    assert!(
        !err.contains('\u{1b}'),
        "no ANSI codes when redirected: {err:?}"
    );
}

#[test]
fn ff_log_is_an_alias_that_overrides_rust_log() {
    let err = stderr(&publish_with(&[("FF_LOG", "debug")]));
    assert!(err.contains("ff starting"), "{err}");
    let err = stderr(&publish_with(&[("FF_LOG", "warn"), ("RUST_LOG", "debug")]));
    assert!(!err.contains("ff starting"), "{err}");
    let err = stderr(&publish_with(&[]));
    assert!(
        !err.contains("ff starting"),
        "warnings only by default: {err}"
    );
}

#[test]
fn a_malformed_filter_is_reported_in_one_line() {
    let err = stderr(&publish_with(&[("RUST_LOG", "ff=notalevel")]));
    let lines: Vec<&str> = err.lines().filter(|l| l.contains("RUST_LOG")).collect();
    assert_eq!(lines.len(), 1, "{err}");
}

#[test]
fn logs_on_a_terminal_are_coloured_unless_no_color_is_set() {
    let event = format!(r#"{{"execution_id":"{EXEC}","outcome":"success"}}"#);
    let ff = env!("CARGO_BIN_EXE_ff");
    let on_tty = |no_color: bool| {
        // `script` runs the command on a pseudo-terminal.
        let inner = format!(
            "RUST_LOG=debug {} '{ff}' publish completion --backend memory: --event '{event}'",
            if no_color { "NO_COLOR=1" } else { "" }
        );
        let out = Command::new("script")
            .args(["-qec", &inner, "/dev/null"])
            .env_remove("NO_COLOR")
            .output()
            .expect("run `script` (util-linux)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let coloured = on_tty(false);
    assert!(coloured.contains("ff starting"), "{coloured}");
    assert!(
        coloured.contains('\u{1b}'),
        "colour on a terminal: {coloured:?}"
    );
    let plain = on_tty(true);
    assert!(plain.contains("ff starting"), "{plain}");
    assert!(
        !plain.contains('\u{1b}'),
        "NO_COLOR disables colour: {plain:?}"
    );
}
