//! The conformance suite catches every bug the mutant backend can switch
//! on: for each [`Mutation`], a suite function meant to catch it fails on
//! one of its assertions (not by running out of time), while the
//! unmutated backend passes the whole suite (`mutant_conformance`).

use std::sync::Arc;
use std::time::Duration;

use ff_core::testkit::{SuiteRun, TestOutcome};
use ff_tests::mutant::{harness, Mutation};
use tokio::sync::Semaphore;

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
                let report = SuiteRun::new(move || harness(Some(m)))
                    .only(m.caught_by().iter().copied())
                    .time_limit(TIME_LIMIT)
                    .run()
                    .await;
                (m, report)
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
