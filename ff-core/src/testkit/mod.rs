//! The conformance suite every backend runs (feature `testkit`).
//!
//! Modelled on a storage abstraction's shared integration module: each
//! public async function checks one semantic of the contract over all four
//! families against a [`Harness`] the backend author builds, and panics
//! with a message naming the family, the scenario and the first differing
//! event. [`conformance_suite!`](crate::conformance_suite) expands to one
//! test per function, so proving a new backend takes one test file and no
//! dependency besides `ff-core` with the `testkit` feature:
//!
//! ```ignore
//! async fn harness() -> MyHarness { MyHarness::new().await }
//! // Every capability present:
//! ff_core::conformance_suite!(harness);
//! // Or, for a backend without server connections:
//! // ff_core::conformance_suite!(harness, absent: [reconnect, cross_process]);
//!
//! async fn store() -> MyCursorStore { MyCursorStore::new().await }
//! // Drop the store and open another on the same backing:
//! async fn reopen(store: MyCursorStore) -> MyCursorStore { store.reopen().await }
//! ff_core::cursor_store_suite!(store, reopen: reopen);
//! ```
//!
//! The numbered semantics are the guarantees of the design page
//! (`docs/design.md` in the repository).
//!
//! | semantic | function |
//! |---|---|
//! | 1 order | [`order_is_total_and_matches_cursors`], [`cursors_compare_by_bytes_past_256_and_65536_events`] |
//! | 2 exactly-after resume | [`resume_from_any_cursor_yields_exactly_the_rest`] |
//! | 3 tail / beginning | [`tail_yields_only_later_events`] |
//! | 4 live | [`live_events_arrive_promptly`], [`live_events_from_another_process_arrive_promptly`] |
//! | 5 reconnect | [`reconnect_continues_exactly_after_the_last_event`] |
//! | 6 backpressure | [`slow_consumer_receives_a_large_backlog_exactly_once`] |
//! | 7 retention | [`expired_cursors_are_reported_never_skipped`] |
//! | 8 bad input | [`bad_cursors_are_rejected_at_subscribe`], [`cursors_of_another_instance_are_refused`], [`corrupt_entries_are_flagged_and_the_stream_goes_on`] |
//! | 9 filters | [`filters_admit_exactly_the_matching_events`], [`filters_treat_non_canonical_records_like_canonical_ones`], [`checkpoints_advance_past_filtered_out_events`], [`filtered_subscriptions_skip_long_rejected_runs_promptly`] |
//! | 10 drop | [`dropping_a_subscription_releases_it`] |
//! | 5 reconnect, publisher side | [`publishes_across_a_connection_loss_are_delivered_or_refused`] |
//! | 8 / evolution: schema version | [`records_of_an_unreadable_schema_version_are_corrupt`] |
//! | 9 filters over text | [`filters_tell_apart_text_differing_only_in_case_or_normalisation`] |
//! | `CaughtUp` once | [`caught_up_is_yielded_exactly_once`], [`caught_up_follows_backlogs_sized_around_the_read_batch`] |
//! | typed API | [`typed_subscriptions_yield_each_family`] |
//! | batch atomicity | [`publish_batch_is_all_or_none`] |
//! | bounds, cursor_at | [`bounds_and_cursor_at_agree_with_published_events`] |
//! | resolve_cursor | [`resolve_cursor_matches_subscription`] |
//! | consumer groups | [`group_units_are_owned_exclusively_and_ordered`], [`group_resumes_each_unit_exactly_after_its_last_commit`], [`group_refuses_a_zombie_commit`], [`group_refuses_another_unit_count`], [`group_hands_over_at_once_on_a_clean_leave`], [`group_hands_over_a_crashed_members_units_after_its_lease`], [`group_keeps_a_members_lease_and_epochs_across_heartbeats`], [`group_loses_no_event_under_member_churn`], [`group_reports_a_trimmed_units_cursor_as_expired`], [`group_reads_a_unit_taken_behind_the_reader_from_its_cursor`] ([`group_suite!`](crate::group_suite)) |
//! | cursor store | [`cursor_store_round_trips`], [`cursor_store_last_writer_wins`], [`cursor_store_keeps_names_and_cursors_exactly`], [`cursor_store_survives_a_reopen`] |
//!
//! Tests that need an optional hook ([`Capability`]) fail when the hook
//! answers `Unavailable`, unless the macro's `absent:` list names the
//! capability — then the test runner reports them as ignored. To check
//! that the suite catches a bug you switch on in your backend, run it
//! programmatically with [`SuiteRun`].

mod backlogs;
mod bad_input;
mod connection_loss;
mod cursor_store;
mod delivery;
mod faults;
mod filter_text;
mod filters;
pub mod group_crowd;
mod groups;
mod harness;
mod publish;
mod resolve;
mod runner;
mod schema_version;
pub mod support;

pub use backlogs::{backlog_sizes, caught_up_follows_backlogs_sized_around_the_read_batch};
pub use bad_input::{
    bad_cursors_are_rejected_at_subscribe, corrupt_entries_are_flagged_and_the_stream_goes_on,
    cursors_of_another_instance_are_refused,
};
pub use connection_loss::publishes_across_a_connection_loss_are_delivered_or_refused;
pub use cursor_store::{
    cursor_store_keeps_names_and_cursors_exactly, cursor_store_last_writer_wins,
    cursor_store_round_trips, cursor_store_survives_a_reopen,
};
pub use delivery::{
    caught_up_is_yielded_exactly_once, cursors_compare_by_bytes_past_256_and_65536_events,
    live_events_arrive_promptly, live_events_from_another_process_arrive_promptly,
    order_is_total_and_matches_cursors, resume_from_any_cursor_yields_exactly_the_rest,
    tail_yields_only_later_events, typed_subscriptions_yield_each_family,
};
pub use faults::{
    dropping_a_subscription_releases_it, expired_cursors_are_reported_never_skipped,
    reconnect_continues_exactly_after_the_last_event,
    slow_consumer_receives_a_large_backlog_exactly_once,
};
pub use filter_text::{
    filters_tell_apart_text_differing_only_in_case_or_normalisation, LOOKALIKES,
};
pub use filters::{
    checkpoints_advance_past_filtered_out_events,
    filtered_subscriptions_skip_long_rejected_runs_promptly,
    filters_admit_exactly_the_matching_events,
    filters_treat_non_canonical_records_like_canonical_ones,
};
pub use groups::{
    group_hands_over_a_crashed_members_units_after_its_lease,
    group_hands_over_at_once_on_a_clean_leave,
    group_keeps_a_members_lease_and_epochs_across_heartbeats,
    group_loses_no_event_under_member_churn,
    group_reads_a_unit_taken_behind_the_reader_from_its_cursor, group_refuses_a_zombie_commit,
    group_refuses_another_unit_count, group_reports_a_trimmed_units_cursor_as_expired,
    group_resumes_each_unit_exactly_after_its_last_commit,
    group_units_are_owned_exclusively_and_ordered,
};
#[doc(hidden)]
pub use harness::capability;
pub use harness::{capability_is_absent, Capability, EventOrder, Harness};
pub use publish::{bounds_and_cursor_at_agree_with_published_events, publish_batch_is_all_or_none};
pub use resolve::resolve_cursor_matches_subscription;
pub(crate) use runner::runner_entry;
pub use runner::{block_on, SuiteOutcome, SuiteReport, SuiteRun, TestOutcome};
pub use schema_version::{
    records_of_an_unreadable_schema_version_are_corrupt, unreadable_versions,
};

/// `#[ff_core::testkit::async_trait]` for implementing [`Harness`] without
/// a dependency of your own on `async-trait`.
pub use async_trait::async_trait;

/// Call `$callback!` with every suite function and the capability it
/// needs (`none`, or a [`capability`] name), prefixed by `$args`.
#[doc(hidden)]
#[macro_export]
macro_rules! __ff_suite_list {
    ($callback:ident! { $($args:tt)* }) => {
        $crate::$callback! { $($args)*
            order_is_total_and_matches_cursors: none,
            cursors_compare_by_bytes_past_256_and_65536_events: none,
            resume_from_any_cursor_yields_exactly_the_rest: none,
            tail_yields_only_later_events: none,
            live_events_arrive_promptly: none,
            live_events_from_another_process_arrive_promptly: cross_process,
            caught_up_is_yielded_exactly_once: none,
            caught_up_follows_backlogs_sized_around_the_read_batch: none,
            typed_subscriptions_yield_each_family: none,
            reconnect_continues_exactly_after_the_last_event: reconnect,
            publishes_across_a_connection_loss_are_delivered_or_refused: reconnect,
            slow_consumer_receives_a_large_backlog_exactly_once: none,
            expired_cursors_are_reported_never_skipped: none,
            bad_cursors_are_rejected_at_subscribe: none,
            cursors_of_another_instance_are_refused: foreign_cursor,
            corrupt_entries_are_flagged_and_the_stream_goes_on: raw_records,
            records_of_an_unreadable_schema_version_are_corrupt: raw_records,
            dropping_a_subscription_releases_it: none,
            filters_admit_exactly_the_matching_events: none,
            filters_tell_apart_text_differing_only_in_case_or_normalisation: none,
            filters_treat_non_canonical_records_like_canonical_ones: raw_records,
            checkpoints_advance_past_filtered_out_events: none,
            filtered_subscriptions_skip_long_rejected_runs_promptly: none,
            publish_batch_is_all_or_none: none,
            bounds_and_cursor_at_agree_with_published_events: none,
            resolve_cursor_matches_subscription: none,
        }
    };
}

/// Expand to one test per conformance function, each building a fresh
/// harness with `$make().await` on its own multi-threaded runtime.
///
/// `absent: [..]` names the [`Capability`]s (`reconnect`, `foreign_cursor`,
/// `cross_process`, `raw_records`) the backend genuinely lacks: their tests
/// are marked `#[ignore]` — reported as ignored, not `ok` — and, when run
/// anyway with `--ignored`, check that the harness's hooks really answer
/// `Unavailable`.
#[macro_export]
macro_rules! conformance_suite {
    ($make:path) => {
        $crate::conformance_suite!($make, absent: []);
    };
    ($make:path, absent: [$($absent:ident),* $(,)?]) => {
        const _: () = { $( let _ = $crate::testkit::capability::$absent; )* };
        $crate::__ff_suite_list!(__ff_suite_tests! { $make; [$($absent)*]; });
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __ff_suite_tests {
    ($make:path; $absent:tt; $($name:ident : $cap:ident),+ $(,)?) => {
        $( $crate::__ff_suite_test!($make; $absent; $name; $cap); )+
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __ff_suite_test {
    ($make:path; $absent:tt; $name:ident; none) => {
        $crate::__ff_suite_test!(@present $make; $name);
    };
    ($make:path; [$($absent:ident)*]; $name:ident; $cap:ident) => {
        $crate::__ff_suite_test!(@scan $make; $name; $cap; [$($absent)*]);
    };
    (@scan $make:path; $name:ident; $cap:ident; []) => {
        $crate::__ff_suite_test!(@present $make; $name);
    };
    (@scan $make:path; $name:ident; reconnect; [reconnect $($rest:ident)*]) => {
        $crate::__ff_suite_test!(@absent $make; $name; reconnect);
    };
    (@scan $make:path; $name:ident; foreign_cursor; [foreign_cursor $($rest:ident)*]) => {
        $crate::__ff_suite_test!(@absent $make; $name; foreign_cursor);
    };
    (@scan $make:path; $name:ident; cross_process; [cross_process $($rest:ident)*]) => {
        $crate::__ff_suite_test!(@absent $make; $name; cross_process);
    };
    (@scan $make:path; $name:ident; raw_records; [raw_records $($rest:ident)*]) => {
        $crate::__ff_suite_test!(@absent $make; $name; raw_records);
    };
    (@scan $make:path; $name:ident; $cap:ident; [$other:ident $($rest:ident)*]) => {
        $crate::__ff_suite_test!(@scan $make; $name; $cap; [$($rest)*]);
    };
    (@present $make:path; $name:ident) => {
        #[test]
        fn $name() {
            $crate::testkit::block_on(async {
                let harness = $make().await;
                $crate::testkit::$name(&harness).await;
            });
        }
    };
    (@absent $make:path; $name:ident; $cap:ident) => {
        #[test]
        #[ignore = "the harness declares the capability this test needs absent"]
        fn $name() {
            $crate::testkit::block_on(async {
                let harness = $make().await;
                $crate::testkit::capability_is_absent(&harness, $crate::testkit::capability::$cap)
                    .await;
            });
        }
    };
}

/// Expand to the [`CursorStore`](crate::backend::CursorStore) suite, each
/// test building a store with `$make().await`.
///
/// `reopen: $reopen` names an async function that takes a store, drops it
/// — its clients, pools, buffers and background writers with it — and
/// opens a new store on the same backing (the same database, key prefix or
/// file): [`cursor_store_survives_a_reopen`] stores through the first and
/// loads through the second. A store whose positions live and die with
/// the value itself (an in-process map) declares `absent: [reopen]`: that
/// test is reported as ignored. Without either, the reopen test fails and
/// says which to add.
#[macro_export]
macro_rules! cursor_store_suite {
    ($make:path) => {
        $crate::__ff_cursor_store_tests!($make);

        #[test]
        fn cursor_store_survives_a_reopen() {
            panic!(
                "cursor_store_suite! was given no way to reopen the store: pass `reopen: f`, an \
                 async fn that takes the store, drops it and opens a new one on the same backing \
                 (`cursor_store_suite!(store, reopen: f)`), or, for a store whose positions live \
                 and die with it, declare `cursor_store_suite!(store, absent: [reopen])`"
            );
        }
    };
    ($make:path, reopen: $reopen:path) => {
        $crate::__ff_cursor_store_tests!($make);

        #[test]
        fn cursor_store_survives_a_reopen() {
            $crate::testkit::block_on(async {
                let store = $make().await;
                $crate::testkit::cursor_store_survives_a_reopen(store, $reopen).await;
            });
        }
    };
    ($make:path, absent: [reopen $(,)?]) => {
        $crate::__ff_cursor_store_tests!($make);

        #[test]
        #[ignore = "the store declares that its positions do not outlive it (absent: [reopen])"]
        fn cursor_store_survives_a_reopen() {}
    };
}

/// The cursor-store tests that need no hook.
#[doc(hidden)]
#[macro_export]
macro_rules! __ff_cursor_store_tests {
    ($make:path) => {
        #[test]
        fn cursor_store_round_trips() {
            $crate::testkit::block_on(async {
                let store = $make().await;
                $crate::testkit::cursor_store_round_trips(&store).await;
            });
        }

        #[test]
        fn cursor_store_last_writer_wins() {
            $crate::testkit::block_on(async {
                let store = $make().await;
                $crate::testkit::cursor_store_last_writer_wins(&store).await;
            });
        }

        #[test]
        fn cursor_store_keeps_names_and_cursors_exactly() {
            $crate::testkit::block_on(async {
                let store = $make().await;
                $crate::testkit::cursor_store_keeps_names_and_cursors_exactly(&store).await;
            });
        }
    };
}

/// Expand to the consumer-group suite (`docs/groups.md`), one test per function, each
/// building a fresh harness with `$make().await`. A backend that keeps no
/// groups declares `absent: [groups]`: its tests are reported as ignored
/// and, run with `--ignored`, check that `group_store()` answers
/// `Unavailable`.
#[macro_export]
macro_rules! group_suite {
    ($make:path) => {
        $crate::__ff_group_tests!($make; present;
            group_units_are_owned_exclusively_and_ordered,
            group_resumes_each_unit_exactly_after_its_last_commit,
            group_refuses_a_zombie_commit,
            group_refuses_another_unit_count,
            group_hands_over_at_once_on_a_clean_leave,
            group_hands_over_a_crashed_members_units_after_its_lease,
            group_keeps_a_members_lease_and_epochs_across_heartbeats,
            group_loses_no_event_under_member_churn,
            group_reports_a_trimmed_units_cursor_as_expired,
            group_reads_a_unit_taken_behind_the_reader_from_its_cursor,
        );
    };
    ($make:path, absent: [groups $(,)?]) => {
        $crate::__ff_group_tests!($make; absent;
            group_units_are_owned_exclusively_and_ordered,
            group_resumes_each_unit_exactly_after_its_last_commit,
            group_refuses_a_zombie_commit,
            group_refuses_another_unit_count,
            group_hands_over_at_once_on_a_clean_leave,
            group_hands_over_a_crashed_members_units_after_its_lease,
            group_keeps_a_members_lease_and_epochs_across_heartbeats,
            group_loses_no_event_under_member_churn,
            group_reports_a_trimmed_units_cursor_as_expired,
            group_reads_a_unit_taken_behind_the_reader_from_its_cursor,
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __ff_group_tests {
    ($make:path; present; $($name:ident),+ $(,)?) => {
        $(
            #[test]
            fn $name() {
                $crate::testkit::block_on(async {
                    let harness = $make().await;
                    $crate::testkit::$name(&harness).await;
                });
            }
        )+
    };
    ($make:path; absent; $($name:ident),+ $(,)?) => {
        $(
            #[test]
            #[ignore = "the harness declares consumer groups absent"]
            fn $name() {
                $crate::testkit::block_on(async {
                    let harness = $make().await;
                    let store = $crate::testkit::Harness::backend(&harness).group_store();
                    assert!(
                        matches!(store, Err($crate::error::EngineError::Unavailable { .. })),
                        "consumer groups are declared absent, but the backend has a group store: remove `absent: [groups]`"
                    );
                });
            }
        )+
    };
}
