//! Running the whole suite from code rather than through the test macro:
//! for backend authors who switch a bug on in their backend and want to
//! see which suite functions catch it (the workspace's own mutation test
//! does exactly that), and for harnesses that cannot use `#[test]`.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::time::Duration;

use crate::testkit::{Capability, Harness};

/// Run a future to completion on a fresh two-worker multi-threaded runtime
/// (what each test of [`conformance_suite!`](crate::conformance_suite)
/// does).
pub fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("build a tokio runtime")
        .block_on(future)
}

/// One suite function, boxed for running from a list.
pub(crate) type BoxedTest<H> = for<'a> fn(&'a H) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// A suite function, its name and the capability it needs.
pub(crate) struct SuiteEntry<H> {
    pub name: &'static str,
    pub capability: Option<Capability>,
    pub run: BoxedTest<H>,
}

#[doc(hidden)]
#[macro_export]
macro_rules! __ff_suite_entries {
    ($($name:ident : $cap:ident),+ $(,)?) => {
        vec![$(
            $crate::testkit::runner_entry(
                stringify!($name),
                $crate::__ff_suite_entries!(@cap $cap),
                |h| Box::pin($crate::testkit::$name(h)),
            )
        ),+]
    };
    (@cap none) => { None };
    (@cap $cap:ident) => { Some($crate::testkit::capability::$cap) };
}

/// Build one entry (a function, so the closure gets its higher-ranked
/// signature from the parameter type).
pub(crate) fn runner_entry<H>(
    name: &'static str,
    capability: Option<Capability>,
    run: BoxedTest<H>,
) -> SuiteEntry<H> {
    SuiteEntry {
        name,
        capability,
        run,
    }
}

fn entries<H: Harness>() -> Vec<SuiteEntry<H>> {
    crate::__ff_suite_list!(__ff_suite_entries! {})
}

/// How one suite function ended.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TestOutcome {
    /// It passed.
    Passed,
    /// It panicked (or exceeded the run's time limit), with the message.
    Failed(String),
    /// Not run: its capability was declared absent, or an earlier failure
    /// stopped the run.
    Skipped,
}

/// One suite function's name and outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SuiteOutcome {
    /// The suite function's name (`order_is_total_and_matches_cursors`...).
    pub test: &'static str,
    /// How it ended.
    pub outcome: TestOutcome,
}

impl SuiteOutcome {
    /// The outcome of the suite function `test` (for runners of their own,
    /// such as one over the cursor-store suite).
    pub fn new(test: &'static str, outcome: TestOutcome) -> Self {
        Self { test, outcome }
    }
}

/// The outcomes of a [`SuiteRun`], in suite order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SuiteReport {
    /// One outcome per suite function.
    pub outcomes: Vec<SuiteOutcome>,
}

impl SuiteReport {
    /// The functions that failed, with their messages.
    pub fn failures(&self) -> impl Iterator<Item = (&'static str, &str)> {
        self.outcomes.iter().filter_map(|o| match &o.outcome {
            TestOutcome::Failed(msg) => Some((o.test, msg.as_str())),
            _ => None,
        })
    }

    /// `true` when no function failed.
    pub fn passed(&self) -> bool {
        self.failures().next().is_none()
    }
}

/// Runs every suite function against fresh harnesses from `make`, each in
/// its own task, catching failures instead of panicking.
///
/// ```ignore
/// let report = SuiteRun::new(|| MyHarness::with_bug(Bug::SkipEveryTenth))
///     .stop_at_first_failure()
///     .run()
///     .await;
/// assert!(!report.passed(), "the suite must catch the bug");
/// ```
pub struct SuiteRun<H, F> {
    make: F,
    absent: Vec<Capability>,
    stop_at_first_failure: bool,
    only: Option<Vec<String>>,
    time_limit: Duration,
    _harness: PhantomData<fn() -> H>,
}

impl<H, F, Fut> SuiteRun<H, F>
where
    H: Harness,
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = H> + Send + 'static,
{
    /// A run building each function's harness with `make`.
    pub fn new(make: F) -> Self {
        Self {
            make,
            absent: Vec::new(),
            stop_at_first_failure: false,
            only: None,
            time_limit: Duration::from_secs(300),
            _harness: PhantomData,
        }
    }

    /// Skip the functions needing these capabilities.
    pub fn absent(mut self, capabilities: impl IntoIterator<Item = Capability>) -> Self {
        self.absent.extend(capabilities);
        self
    }

    /// Skip every function after the first failure.
    pub fn stop_at_first_failure(mut self) -> Self {
        self.stop_at_first_failure = true;
        self
    }

    /// Run only the functions with these names.
    pub fn only(mut self, names: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.only = Some(names.into_iter().map(Into::into).collect());
        self
    }

    /// Fail a function that runs longer than `limit` (default 300 s).
    pub fn time_limit(mut self, limit: Duration) -> Self {
        self.time_limit = limit;
        self
    }

    /// The names of every suite function, in the order a run takes them.
    pub fn names() -> Vec<&'static str> {
        entries::<H>().iter().map(|e| e.name).collect()
    }

    /// Run the suite (inside a tokio runtime).
    pub async fn run(self) -> SuiteReport {
        let mut report = SuiteReport::default();
        let mut stopped = false;
        for entry in entries::<H>() {
            let wanted = self
                .only
                .as_ref()
                .is_none_or(|only| only.iter().any(|n| n == entry.name));
            if !wanted {
                continue;
            }
            let skip = stopped || entry.capability.is_some_and(|c| self.absent.contains(&c));
            let outcome = if skip {
                TestOutcome::Skipped
            } else {
                run_one(self.make.clone(), entry.run, self.time_limit).await
            };
            if matches!(outcome, TestOutcome::Failed(_)) && self.stop_at_first_failure {
                stopped = true;
            }
            report.outcomes.push(SuiteOutcome {
                test: entry.name,
                outcome,
            });
        }
        report
    }
}

async fn run_one<H, F, Fut>(make: F, run: BoxedTest<H>, limit: Duration) -> TestOutcome
where
    H: Harness,
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = H> + Send + 'static,
{
    let task = tokio::spawn(async move {
        let harness = make().await;
        run(&harness).await;
    });
    let abort = task.abort_handle();
    match tokio::time::timeout(limit, task).await {
        Err(_) => {
            abort.abort();
            TestOutcome::Failed(format!("did not finish within {limit:?}"))
        }
        Ok(Ok(())) => TestOutcome::Passed,
        Ok(Err(e)) if e.is_panic() => {
            let payload = e.into_panic();
            let msg = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "panicked".to_owned());
            TestOutcome::Failed(msg)
        }
        Ok(Err(e)) => TestOutcome::Failed(format!("the test task ended abnormally: {e}")),
    }
}
