//! The conformance suite catches every bug the mutant backend can switch
//! on: for each [`Mutation`], at least one suite function fails.

use std::sync::Arc;
use std::time::Duration;

use ff_core::testkit::{SuiteRun, TestOutcome};
use ff_tests::mutant::{harness, Mutation};
use tokio::sync::Semaphore;

/// Mutations checked at once (each runs the suite until a function fails).
const PARALLEL: usize = 4;

#[test]
fn the_suite_fails_for_every_mutation() {
    ff_core::testkit::block_on(async {
        let permits = Arc::new(Semaphore::new(PARALLEL));
        let runs = Mutation::ALL.iter().copied().map(|m| {
            let permits = permits.clone();
            tokio::spawn(async move {
                let _permit = permits.acquire_owned().await.expect("semaphore");
                let report = SuiteRun::new(move || harness(Some(m)))
                    .stop_at_first_failure()
                    .time_limit(Duration::from_secs(60))
                    .run()
                    .await;
                (m, report)
            })
        });
        let mut survivors = Vec::new();
        for run in futures::future::join_all(runs).await {
            let (mutation, report) = run.expect("a mutation run");
            let caught = report
                .failures()
                .next()
                .map(|(test, message)| (test, message.lines().next().unwrap_or("").to_owned()));
            match caught {
                Some((test, first_line)) => {
                    let short: String = first_line.chars().take(160).collect();
                    println!("{mutation:?}: caught by {test}: {short}");
                }
                None => {
                    let ran = report
                        .outcomes
                        .iter()
                        .filter(|o| o.outcome == TestOutcome::Passed)
                        .count();
                    println!("{mutation:?}: NOT CAUGHT ({ran} suite functions passed)");
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
