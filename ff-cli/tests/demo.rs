//! `ff demo` (the main job) on the embedded backend reports every event
//! delivered exactly once, in order, across consumer restarts.

use std::process::Command;

#[test]
fn demo_reports_nothing_lost_duplicated_or_reordered() {
    let out = Command::new(env!("CARGO_BIN_EXE_ff"))
        .args(["demo", "--events", "20000", "--json"])
        .output()
        .expect("run ff demo");
    assert!(
        out.status.success(),
        "ff demo failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("the report is one JSON object");
    assert!(report["published"].as_u64().unwrap() >= 20_000, "{report}");
    assert_eq!(report["delivered"], report["published"], "{report}");
    for field in ["lost", "duplicated", "out_of_order"] {
        assert_eq!(report[field], 0, "{field}: {report}");
    }
    assert!(report["events_per_sec"].as_f64().unwrap() > 0.0);
    let families = report["families"].as_array().unwrap();
    assert_eq!(families.len(), 4);
    for f in families {
        assert_eq!(
            f["restarts"], 1,
            "each consumer is interrupted and resumed once: {f}"
        );
    }
    let filtered = &report["filtered_consumer"];
    assert_eq!(filtered["published"], filtered["delivered"], "{report}");
    assert!(filtered["published"].as_u64().unwrap() > 0, "{report}");
    for field in [
        "lost",
        "duplicated",
        "out_of_order",
        "mismatched",
        "unexpected",
    ] {
        assert_eq!(filtered[field], 0, "filtered consumer {field}: {report}");
    }
}

#[test]
fn a_bad_backend_url_is_a_clear_error_without_the_password() {
    let out = Command::new(env!("CARGO_BIN_EXE_ff"))
        .args([
            "tail",
            "completion",
            "--backend",
            "ftp://user:hunter2@host/x",
        ])
        .output()
        .expect("run ff tail");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unsupported backend URL"), "{err}");
    assert!(!err.contains("hunter2"), "the password leaked: {err}");
}
