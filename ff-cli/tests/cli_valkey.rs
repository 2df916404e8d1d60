//! `ff publish`, `ff tail` and `ff demo` against a real Valkey server.

use ff_tests::support::ValkeyServer;

use common::ff;

mod common;

fn lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[test]
fn publish_then_tail_round_trips_json_lines_and_resumes_from_a_cursor() {
    let server = ValkeyServer::start().expect("start valkey-server");
    let url = server.url().replace("redis://", "valkey://");
    let input = [
        r#"{"execution_id":"{fp:1}:11111111-1111-4111-8111-111111111111","outcome":"success","namespace":"billing","tags":{"region":"eu"}}"#,
        r#"{"execution_id":"{fp:1}:22222222-2222-4222-8222-222222222222","outcome":"failure"}"#,
        r#"{"execution_id":"{fp:1}:33333333-3333-4333-8333-333333333333","outcome":"timed_out"}"#,
    ]
    .join("\n");
    let (ok, out, err) = ff(&["publish", "completion", "--backend", &url], Some(&input));
    assert!(ok, "ff publish failed: {err}");
    let cursors: Vec<&str> = out.lines().collect();
    assert_eq!(cursors.len(), 3, "one cursor per event: {out}");

    let (ok, out, err) = ff(
        &[
            "tail",
            "completion",
            "--backend",
            &url,
            "--from",
            "beginning",
            "--limit",
            "3",
        ],
        None,
    );
    assert!(ok, "ff tail failed: {err}");
    let events = lines(&out);
    assert_eq!(events.len(), 3);
    for (event, cursor) in events.iter().zip(&cursors) {
        assert_eq!(event["cursor"], *cursor);
        assert!(event["at"].is_i64());
        assert!(event["execution_id"].is_string());
    }
    assert_eq!(events[0]["type"], "success");
    assert_eq!(events[0]["namespace"], "billing");
    assert_eq!(events[0]["tags"]["region"], "eu");
    assert_eq!(events[2]["type"], "other");
    assert_eq!(events[2]["outcome"], "timed_out");

    let (ok, out, err) = ff(
        &[
            "tail",
            "completion",
            "--backend",
            &url,
            "--from",
            cursors[0],
            "--idle-timeout",
            "1",
        ],
        None,
    );
    assert!(ok, "ff tail --from CURSOR failed: {err}");
    let rest = lines(&out);
    let rest_cursors: Vec<&str> = rest.iter().map(|e| e["cursor"].as_str().unwrap()).collect();
    assert_eq!(
        rest_cursors,
        cursors[1..],
        "exactly the events after the cursor"
    );

    let (ok, out, err) = ff(
        &[
            "tail",
            "completion",
            "--backend",
            &url,
            "--from",
            "beginning",
            "--kinds",
            "failure",
            "--idle-timeout",
            "1",
        ],
        None,
    );
    assert!(ok, "{err}");
    assert_eq!(lines(&out).len(), 1, "the kinds filter admits one event");

    let (ok, _, err) = ff(
        &["tail", "completion", "--backend", &url, "--from", "AAAA"],
        None,
    );
    assert!(!ok);
    assert!(err.contains("invalid cursor"), "{err}");
}

#[test]
fn demo_on_valkey_reports_nothing_lost() {
    let server = ValkeyServer::start().expect("start valkey-server");
    let (ok, out, err) = ff(
        &[
            "demo",
            "--backend",
            &server.url(),
            "--events",
            "5000",
            "--json",
        ],
        None,
    );
    assert!(ok, "ff demo failed: {err}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("JSON report");
    for field in ["lost", "duplicated", "out_of_order", "mismatched"] {
        assert_eq!(report[field], 0, "{field}: {report}");
    }
    assert_eq!(report["delivered"], report["published"]);
}
