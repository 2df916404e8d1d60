//! The conformance suite every backend runs (feature `testkit`).
//!
//! Modelled on a storage abstraction's shared integration module: each
//! public async function checks one semantic of the contract over all four
//! families against a [`Harness`] the backend author builds, and panics
//! with a message naming what broke. [`conformance_suite!`](crate::conformance_suite)
//! expands to one `#[tokio::test]` per function, so proving a new backend
//! takes one test file:
//!
//! ```ignore
//! async fn harness() -> MyHarness { MyHarness::new().await }
//! ff_core::conformance_suite!(harness);
//!
//! async fn store() -> MyCursorStore { MyCursorStore::new().await }
//! ff_core::cursor_store_suite!(store);
//! ```
//!
//! | semantic | function |
//! |---|---|
//! | 1 order | [`order_is_total_and_matches_cursors`] |
//! | 2 exactly-after resume | [`resume_from_any_cursor_yields_exactly_the_rest`] |
//! | 3 tail / beginning | [`tail_yields_only_later_events`] |
//! | 4 live | [`live_events_arrive_promptly`] |
//! | 5 reconnect | [`reconnect_continues_exactly_after_the_last_event`] |
//! | 6 backpressure | [`slow_consumer_receives_a_large_backlog_exactly_once`] |
//! | 7 retention | [`expired_cursors_are_reported_never_skipped`] |
//! | 8 bad input | [`bad_input_is_rejected_and_corrupt_entries_are_flagged`] |
//! | 9 filters | [`filters_admit_exactly_the_matching_events`], [`checkpoints_advance_past_filtered_out_events`], [`filtered_subscriptions_skip_long_rejected_runs_promptly`] |
//! | 10 drop | [`dropping_a_subscription_releases_it`] |
//! | `CaughtUp` once | [`caught_up_is_yielded_exactly_once`] |
//! | typed API | [`typed_subscriptions_yield_each_family`] |
//! | batch atomicity | [`publish_batch_is_all_or_none`] |
//! | bounds, cursor_at | [`bounds_and_cursor_at_agree_with_published_events`] |

mod cursor_store;
mod delivery;
mod faults;
mod filters;
mod harness;
mod publish;
pub mod support;

pub use cursor_store::{cursor_store_last_writer_wins, cursor_store_round_trips};
pub use delivery::{
    caught_up_is_yielded_exactly_once, live_events_arrive_promptly,
    order_is_total_and_matches_cursors, resume_from_any_cursor_yields_exactly_the_rest,
    tail_yields_only_later_events, typed_subscriptions_yield_each_family,
};
pub use faults::{
    bad_input_is_rejected_and_corrupt_entries_are_flagged, dropping_a_subscription_releases_it,
    expired_cursors_are_reported_never_skipped, reconnect_continues_exactly_after_the_last_event,
    slow_consumer_receives_a_large_backlog_exactly_once,
};
pub use filters::{
    checkpoints_advance_past_filtered_out_events,
    filtered_subscriptions_skip_long_rejected_runs_promptly,
    filters_admit_exactly_the_matching_events,
};
pub use harness::Harness;
pub use publish::{bounds_and_cursor_at_agree_with_published_events, publish_batch_is_all_or_none};

/// Expand to one `#[tokio::test]` per conformance function, each building
/// a fresh harness with `$make().await`.
#[macro_export]
macro_rules! conformance_suite {
    ($make:path) => {
        $crate::conformance_suite!(@tests $make;
            order_is_total_and_matches_cursors,
            resume_from_any_cursor_yields_exactly_the_rest,
            tail_yields_only_later_events,
            live_events_arrive_promptly,
            caught_up_is_yielded_exactly_once,
            typed_subscriptions_yield_each_family,
            reconnect_continues_exactly_after_the_last_event,
            slow_consumer_receives_a_large_backlog_exactly_once,
            expired_cursors_are_reported_never_skipped,
            bad_input_is_rejected_and_corrupt_entries_are_flagged,
            dropping_a_subscription_releases_it,
            filters_admit_exactly_the_matching_events,
            checkpoints_advance_past_filtered_out_events,
            filtered_subscriptions_skip_long_rejected_runs_promptly,
            publish_batch_is_all_or_none,
            bounds_and_cursor_at_agree_with_published_events,
        );
    };
    (@tests $make:path; $($name:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let harness = $make().await;
                $crate::testkit::$name(&harness).await;
            }
        )+
    };
}

/// Expand to the [`CursorStore`](crate::backend::CursorStore) suite, each
/// test building a store with `$make().await`.
#[macro_export]
macro_rules! cursor_store_suite {
    ($make:path) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn cursor_store_round_trips() {
            let store = $make().await;
            $crate::testkit::cursor_store_round_trips(&store).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn cursor_store_last_writer_wins() {
            let store = $make().await;
            $crate::testkit::cursor_store_last_writer_wins(&store).await;
        }
    };
}
