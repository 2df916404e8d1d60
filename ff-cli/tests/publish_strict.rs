//! `ff publish` types its JSON input as strictly as `POST` does: the same
//! rules, from the same decoder, with the field named in a one-line error.

use std::io::Write;
use std::process::{Command, Stdio};

const EXEC: &str = "{fp:0}:11111111-1111-4111-8111-111111111111";

/// Run `ff publish FAMILY` over memory with `stdin`; (success, stdout, stderr).
fn publish(family: &str, stdin: &str) -> (bool, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ff"))
        .args(["publish", family, "--backend", "memory:"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ff publish");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().expect("ff publish ran");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn ff_publish_rejects_coerced_contradicting_and_unknown_fields_naming_them() {
    let cases = [
        (
            "completion",
            format!(r#"{{"execution_id":"{EXEC}","outcome":1}}"#),
            "outcome",
        ),
        (
            "lease-history",
            format!(r#"{{"type":"acquired","execution_id":"{EXEC}","worker_instance_id":5}}"#),
            "worker_instance_id",
        ),
        (
            "completion",
            format!(r#"{{"type":"failure","execution_id":"{EXEC}","outcome":"success"}}"#),
            "type",
        ),
        (
            "completion",
            format!(r#"{{"execution_id":"{EXEC}","outcome":"success","namepsace":"billing"}}"#),
            "namepsace",
        ),
    ];
    for (family, line, field) in cases {
        let (ok, stdout, stderr) = publish(family, &format!("{line}\n"));
        assert!(!ok, "{line} was accepted: {stdout}");
        assert!(stdout.is_empty(), "nothing may be published: {stdout}");
        assert!(
            stderr.contains(&format!("field `{field}`")) && stderr.contains("line 1"),
            "{stderr}"
        );
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    }
}

#[test]
fn ff_publish_accepts_well_typed_events() {
    let line = format!(
        r#"{{"type":"success","execution_id":"{EXEC}","outcome":"success","namespace":"billing"}}"#
    );
    let (ok, stdout, stderr) = publish("completion", &format!("{line}\n"));
    assert!(ok, "{stderr}");
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
}
