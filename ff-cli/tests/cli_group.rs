//! `ff tail --group` as a consumer-group member and `ff group status`
//! against a real PostgreSQL server, as a least-privilege consumer role.

use ff_tests::support::PostgresServer;

use common::ff;

mod common;

fn event(n: usize) -> String {
    format!(
        r#"{{"execution_id":"{{fp:{n}}}:11111111-1111-4111-8111-1111111111{n:02}","outcome":"success","tags":{{"n":"{n}"}}}}"#
    )
}

#[test]
fn a_group_member_prints_each_event_with_its_unit_and_status_shows_no_lag() {
    let server = PostgresServer::start().expect("start postgres");
    let owner = server.url();
    server.psql("CREATE ROLE app LOGIN").expect("create role");
    let app = owner.replacen("postgres@", "app@", 1);
    let (ok, _, err) = ff(
        &["migrate", "--backend", &owner, "--grant-consumer", "app"],
        None,
    );
    assert!(ok, "ff migrate failed: {err}");
    let input = (0..12).map(event).collect::<Vec<_>>().join("\n");
    let (ok, _, err) = ff(
        &["publish", "completion", "--backend", &owner],
        Some(&input),
    );
    assert!(ok, "ff publish failed: {err}");

    let (ok, out, err) = ff(
        &[
            "tail",
            "completion",
            "--backend",
            &app,
            "--group",
            "g",
            "--member",
            "one",
            "--units",
            "4",
            "--from",
            "beginning",
            "--limit",
            "12",
            "--idle-timeout",
            "20",
        ],
        None,
    );
    assert!(ok, "ff tail --group failed: {err}");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert_eq!(lines.len(), 12, "{out}");
    for line in &lines {
        let n: u64 = line["tags"]["n"].as_str().unwrap().parse().unwrap();
        assert_eq!(line["unit"], n % 4, "{line}");
    }

    let (ok, out, err) = ff(&["group", "status", "g", "--backend", &app, "--json"], None);
    assert!(ok, "ff group status failed: {err}");
    let status: serde_json::Value = serde_json::from_str(out.trim()).expect("JSON status");
    assert_eq!(status["units"], 4, "{status}");
    assert_eq!(
        status["members"].as_array().unwrap().len(),
        0,
        "the member left: {status}"
    );
    for unit in status["unit_states"].as_array().unwrap() {
        assert_eq!(unit["lag"], 0, "every printed event was committed: {unit}");
        assert_eq!(unit["epoch"], 1, "{unit}");
    }
    let (ok, out, err) = ff(&["group", "status", "g", "--backend", &app], None);
    assert!(ok, "ff group status failed: {err}");
    assert!(out.contains("4 units") && out.contains("epoch"), "{out}");

    let (ok, _, err) = ff(
        &[
            "tail",
            "completion",
            "--backend",
            &app,
            "--group",
            "g",
            "--units",
            "8",
            "--limit",
            "1",
            "--idle-timeout",
            "5",
        ],
        None,
    );
    assert!(!ok, "joining with another unit count must fail");
    assert!(
        err.contains('4') && err.contains('8') && err.lines().count() == 1,
        "{err}"
    );
}
