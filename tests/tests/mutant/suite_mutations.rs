//! The conformance, cursor-store and group suites catch every bug the
//! mutant backend can switch on: for each [`Mutation`], a suite function meant to catch it fails on
//! one of its assertions (not by running out of time), while the
//! unmutated backend passes the whole suite (`mutant_conformance`).

use std::sync::Arc;
use std::time::Duration;

use ff_core::testkit::{SuiteOutcome, SuiteReport, SuiteRun, TestOutcome};
use ff_tests::mutant::{cursor_store, harness, reopen_cursor_store, Mutation};
use tokio::sync::Semaphore;

/// The cursor-store suite's functions, which take a store rather than a
/// harness.
const CURSOR_STORE_SUITE: &[&str] = &[
    "cursor_store_round_trips",
    "cursor_store_last_writer_wins",
    "cursor_store_keeps_names_and_cursors_exactly",
    "cursor_store_survives_a_reopen",
];

/// The group suite's functions, which the suite runner does not list.
const GROUP_SUITE: &[&str] = &[
    "group_units_are_owned_exclusively_and_ordered",
    "group_resumes_each_unit_exactly_after_its_last_commit",
    "group_refuses_a_zombie_commit",
    "group_refuses_another_unit_count",
    "group_hands_over_at_once_on_a_clean_leave",
    "group_hands_over_a_crashed_members_units_after_its_lease",
    "group_keeps_a_members_lease_and_epochs_across_heartbeats",
    "group_loses_no_event_under_member_churn",
    "group_reports_a_trimmed_units_cursor_as_expired",
];

/// Run the group suite function `name` on a mutant backend with
/// `mutation`, in a task of its own, catching its failure.
async fn run_group_test(name: &'static str, mutation: Mutation) -> SuiteOutcome {
    use ff_core::testkit as kit;
    let task = tokio::spawn(async move {
        let h = harness(Some(mutation)).await;
        match name {
            "group_units_are_owned_exclusively_and_ordered" => {
                kit::group_units_are_owned_exclusively_and_ordered(&h).await
            }
            "group_resumes_each_unit_exactly_after_its_last_commit" => {
                kit::group_resumes_each_unit_exactly_after_its_last_commit(&h).await
            }
            "group_refuses_a_zombie_commit" => kit::group_refuses_a_zombie_commit(&h).await,
            "group_refuses_another_unit_count" => kit::group_refuses_another_unit_count(&h).await,
            "group_hands_over_at_once_on_a_clean_leave" => {
                kit::group_hands_over_at_once_on_a_clean_leave(&h).await
            }
            "group_hands_over_a_crashed_members_units_after_its_lease" => {
                kit::group_hands_over_a_crashed_members_units_after_its_lease(&h).await
            }
            "group_keeps_a_members_lease_and_epochs_across_heartbeats" => {
                kit::group_keeps_a_members_lease_and_epochs_across_heartbeats(&h).await
            }
            "group_loses_no_event_under_member_churn" => {
                kit::group_loses_no_event_under_member_churn(&h).await
            }
            "group_reports_a_trimmed_units_cursor_as_expired" => {
                kit::group_reports_a_trimmed_units_cursor_as_expired(&h).await
            }
            other => unreachable!("{other} is not a group suite function"),
        }
    });
    SuiteOutcome::new(name, outcome_of(task).await)
}

/// How a suite function's task ended: passed, or failed with its panic
/// message (or cut off at [`TIME_LIMIT`]).
async fn outcome_of(task: tokio::task::JoinHandle<()>) -> TestOutcome {
    match tokio::time::timeout(TIME_LIMIT, task).await {
        Err(_) => TestOutcome::Failed(format!("did not finish within {TIME_LIMIT:?}")),
        Ok(Ok(())) => TestOutcome::Passed,
        Ok(Err(e)) => {
            let payload = e.into_panic();
            TestOutcome::Failed(
                payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_else(|| "panicked".to_owned()),
            )
        }
    }
}

/// Run the cursor-store suite function `name` on a mutant store with
/// `mutation`, in a task of its own, catching its failure.
async fn run_cursor_store_test(name: &'static str, mutation: Mutation) -> SuiteOutcome {
    let task = tokio::spawn(async move {
        let store = cursor_store(Some(mutation)).await;
        match name {
            "cursor_store_round_trips" => ff_core::testkit::cursor_store_round_trips(&store).await,
            "cursor_store_last_writer_wins" => {
                ff_core::testkit::cursor_store_last_writer_wins(&store).await
            }
            "cursor_store_keeps_names_and_cursors_exactly" => {
                ff_core::testkit::cursor_store_keeps_names_and_cursors_exactly(&store).await
            }
            "cursor_store_survives_a_reopen" => {
                ff_core::testkit::cursor_store_survives_a_reopen(store, reopen_cursor_store).await
            }
            other => unreachable!("{other} is not a cursor-store suite function"),
        }
    });
    SuiteOutcome::new(name, outcome_of(task).await)
}

/// Run the suite functions meant to catch `mutation` against the mutant
/// backend (or its cursor store) with it switched on.
async fn run_catchers(mutation: Mutation) -> SuiteReport {
    let (group_tests, others): (Vec<&'static str>, Vec<&'static str>) = mutation
        .caught_by()
        .iter()
        .copied()
        .partition(|name| GROUP_SUITE.contains(name));
    let (store_tests, suite_tests): (Vec<&'static str>, Vec<&'static str>) = others
        .into_iter()
        .partition(|name| CURSOR_STORE_SUITE.contains(name));
    let mut report = if suite_tests.is_empty() {
        SuiteReport::default()
    } else {
        SuiteRun::new(move || harness(Some(mutation)))
            .only(suite_tests)
            .time_limit(TIME_LIMIT)
            .run()
            .await
    };
    for name in store_tests {
        report
            .outcomes
            .push(run_cursor_store_test(name, mutation).await);
    }
    for name in group_tests {
        report.outcomes.push(run_group_test(name, mutation).await);
    }
    report
}

/// Mutations checked at once.
const PARALLEL: usize = 4;
/// A run cut off at this limit proves nothing about the bug.
const TIME_LIMIT: Duration = Duration::from_secs(90);

#[test]
fn the_suite_fails_for_every_mutation() {
    ff_core::testkit::block_on(async {
        let permits = Arc::new(Semaphore::new(PARALLEL));
        let runs = Mutation::ALL.iter().copied().map(|m| {
            let permits = permits.clone();
            tokio::spawn(async move {
                let _permit = permits.acquire_owned().await.expect("semaphore");
                (m, run_catchers(m).await)
            })
        });
        let mut survivors = Vec::new();
        for run in futures::future::join_all(runs).await {
            let (mutation, report) = run.expect("a mutation run");
            assert_eq!(
                report.outcomes.len(),
                mutation.caught_by().len(),
                "{mutation:?}: a catching function is not in the suite: {:?}",
                mutation.caught_by()
            );
            let caught = report.outcomes.iter().find_map(|o| match &o.outcome {
                TestOutcome::Failed(msg) if !msg.starts_with("did not finish within") => {
                    Some((o.test, msg.lines().next().unwrap_or("").to_owned()))
                }
                _ => None,
            });
            match caught {
                Some((test, first_line)) => {
                    let short: String = first_line.chars().take(160).collect();
                    println!("{mutation:?}: caught by {test}: {short}");
                }
                None => {
                    println!("{mutation:?}: NOT CAUGHT: {:?}", report.outcomes);
                    survivors.push(mutation);
                }
            }
        }
        assert!(
            survivors.is_empty(),
            "the conformance suite passed a backend with these bugs: {survivors:?}"
        );
    });
}
