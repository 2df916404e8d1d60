//! `ff bench group` on the memory backend, cut short: the JSON report
//! names every consumer-group figure and no event was lost.

use common::ff;

mod common;

const FIGURES: &[&str] = &[
    "group_handover_clean_p99_ms",
    "group_handover_crash_s",
    "group_redelivered_per_crash",
    "group_throughput_vs_subscription",
    "group_lost",
];

#[test]
fn the_group_bench_reports_every_figure_and_loses_nothing() {
    let (ok, out, err) = ff(
        &[
            "bench",
            "group",
            "--backend",
            "memory:",
            "--handovers",
            "2",
            "--crashes",
            "1",
            "--events",
            "500",
            "--lease",
            "1",
            "--json",
        ],
        None,
    );
    assert!(ok, "ff bench group failed: {err}");
    assert!(
        err.contains("lease 1000 ms"),
        "the settings used are printed: {err}"
    );
    let report: serde_json::Value = serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("the report is not one JSON object ({e}): {out}"));
    let figures = report["figures"].as_array().expect("a figures list");
    let value = |name: &str| {
        figures
            .iter()
            .find(|f| f["name"] == name)
            .unwrap_or_else(|| panic!("figure {name} is missing: {report}"))["ff"]
            .as_f64()
            .unwrap_or_else(|| panic!("figure {name} has no number: {report}"))
    };
    for name in FIGURES {
        value(name);
    }
    assert_eq!(value("group_lost"), 0.0, "{report}");
    let throughput = figures
        .iter()
        .find(|f| f["name"] == "group_throughput_vs_subscription")
        .unwrap();
    assert!(
        throughput["raw"].as_f64().is_some() && throughput["ratio"].as_f64().is_some(),
        "the group's throughput stands beside the plain subscription's: {throughput}"
    );
}
