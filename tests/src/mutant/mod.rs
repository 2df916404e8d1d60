//! A small third-party backend with switchable bugs, to prove the
//! conformance suite catches each of them.
//!
//! [`MutantBackend`] is a complete in-process backend written only against
//! ff-core's public API, the way an outside author would write one: it
//! uses the third-party cursor range (`0x80`), simulates server
//! connections (so reconnection can be tested), and separates wake-ups of
//! its own "process" from wake-ups that cross processes. With no
//! [`Mutation`] it passes the whole suite; each mutation switches on one
//! bug a real backend could have, and the `suite_mutations` test asserts
//! that the suite fails for every one.
//!
//! - `store`: the shared log (the "server"), its retention and its
//!   connections;
//! - `cursor`: the `0x80` cursor format;
//! - `subscription`: the read loop;
//! - `backend`: the [`StreamBackend`](ff_core::backend::StreamBackend)
//!   and [`EventPublisher`](ff_core::backend::EventPublisher) glue;
//! - `harness`: the suite's [`Harness`](ff_core::testkit::Harness);
//! - `cursor_store`: the [`CursorStore`](ff_core::backend::CursorStore)
//!   and its reopen hook for the cursor-store suite;
//! - `groups`: the [`GroupStore`](ff_core::group::GroupStore) of its
//!   consumer groups, for the group suite.

mod backend;
mod cursor;
mod cursor_store;
mod groups;
mod harness;
mod store;
mod subscription;
mod text;

pub use backend::MutantBackend;
pub use cursor_store::{cursor_store, reopen_cursor_store, MutantCursorStore};
pub use groups::MutantGroups;
pub use harness::{harness, MutantHarness};

/// One bug a backend (or its harness) could have. Each must make the
/// conformance suite fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mutation {
    /// Every tenth event is never delivered.
    SkipsAnEvent,
    /// Every tenth event is delivered twice.
    RepeatsAnEvent,
    /// Two neighbouring events of a read batch swap places.
    ReordersEvents,
    /// `CaughtUp` is never yielded.
    NeverCaughtUp,
    /// `CaughtUp` is yielded again with the first live event.
    CaughtUpTwice,
    /// A cursor of another instance (epoch) is taken as a position here.
    AcceptsAnotherInstancesCursor,
    /// A cursor of another family is taken as a position here.
    AcceptsAnotherFamilysCursor,
    /// Positions are encoded little-endian, so they do not compare by bytes.
    LittleEndianPositions,
    /// The tail starts one event early (includes the last committed one).
    TailIncludesTheLastEvent,
    /// The tail is resolved at the first read rather than at subscribe.
    TailResolvedLate,
    /// No wake-up at all: new events wait for the safety-net poll.
    NoWakeUp,
    /// Wake-ups reach only subscribers in the publisher's own process.
    NoCrossProcessWakeUp,
    /// After a connection loss the stream restarts from its subscribe
    /// position, repeating events.
    ReconnectRepeats,
    /// After a connection loss the stream resumes at the head, skipping
    /// what was appended meanwhile.
    ReconnectSkips,
    /// `kill_connections` answers `Ok` and kills nothing.
    KillHookDoesNothing,
    /// `expire_before` answers `Ok` and evicts nothing.
    ExpireHookDoesNothing,
    /// A cursor behind the retained history restarts at the oldest
    /// retained event instead of `CursorExpired`.
    ExpiredCursorsRestart,
    /// A cursor beyond the head waits for events instead of `CursorExpired`.
    BeyondHeadWaits,
    /// A subscription reads the whole backlog ahead of its consumer.
    UnboundedReadAhead,
    /// Undecodable records are skipped silently.
    DropsCorruptRecords,
    /// An undecodable record ends the stream.
    CorruptIsTerminal,
    /// Undecodable records are reported only when no filter is set.
    FilteredSubscriptionsDropCorrupt,
    /// The namespace filter is ignored.
    FilterIgnoresNamespace,
    /// Only the first kind of a `kinds` filter is honoured.
    FilterHonoursFirstKindOnly,
    /// The execution-id filter compares stored text, so an upper-case UUID
    /// from an outside producer is missed.
    FilterComparesRawText,
    /// `Checkpoint` is never yielded.
    NoCheckpoints,
    /// A batch with an invalid event stores the events before it.
    BatchIsNotAtomic,
    /// A dropped subscription keeps running.
    DropLeaksTheSubscription,
    /// `bounds` reports the oldest event as the head.
    BoundsHeadIsOldest,
    /// `cursor_at` starts after the first event at the time.
    CursorAtSkipsOne,
    /// Event metadata is not delivered.
    DropsMetadata,
    /// The worker instance id is not stored (delivered as `None`).
    DropsAnOptionalField,
    /// `CursorExpired` carries no `oldest`.
    ExpiredWithoutOldest,
    /// `inject_raw` answers with a cursor but stores nothing.
    RawHookDoesNothing,
    /// `kill_connections` answers `Unavailable` although the suite was not
    /// told the capability is absent.
    KillHookUnavailable,
    /// `CaughtUp` comes at once, before the backlog.
    CaughtUpBeforeTheBacklog,
    /// `resolve_cursor` checks only the cursor's format, not what a
    /// subscription checks: an expired position resolves to itself.
    ResolveSkipsTheSubscriptionsProof,
    /// A first read that fills the read batch and reaches the
    /// subscribe-time head yields `CaughtUp` before its events.
    CaughtUpBeforeAFullFirstRead,
    /// The tag filter compares keys ignoring case.
    FilterFoldsCase,
    /// The namespace filter compares Unicode-normalised text (composed
    /// accents, compatibility forms).
    FilterNormalisesUnicode,
    /// The namespace filter is a SQL `LIKE` pattern (`_`, `%` wildcards).
    FilterMatchesLikePattern,
    /// The tag filter ignores trailing spaces in values (SQL `CHAR`
    /// padding semantics).
    FilterIgnoresTrailingSpaces,
    /// A record of a higher (or any numeric) schema version is decoded as
    /// if it were the current one.
    HigherVersionDecodedAnyway,
    /// A record of schema version `0` is read as version 1.
    VersionZeroReadAsOne,
    /// A non-numeric schema version stops the read loop at that record,
    /// which it retries on every wake-up instead of yielding `Corrupt`.
    NonNumericVersionRetriesForever,
    /// A publish on a severed connection is acknowledged but not stored.
    AcksAPublishOnADeadConnection,
    /// A publish on a severed connection waits forever.
    PublishWaitsOnADeadConnection,
    /// `kill_connections` severs subscriptions but spares the publisher's
    /// connection (which `connection_ids` lists).
    KillHookSparesThePublisher,
    /// The harness lists and severs only subscription connections, never
    /// the publisher's.
    ConnectionIdsOmitThePublisher,
    /// The cursor store keeps the newest positions in the handle and
    /// writes them through only now and then: a dropped store loses them.
    CursorStoreWriteBehind,
    /// The cursor store compares consumer names ignoring case.
    CursorStoreFoldsNameCase,
    /// The cursor store keeps at most 64 bytes of a cursor.
    CursorStoreTruncatesLongCursors,
    /// A group's acquire ignores the owner's unexpired lease: two members
    /// own a unit at once, as after a lost race on its expiry.
    GroupAcquireTakesALiveUnit,
    /// A group commit checks neither the owner nor the epoch: a zombie's
    /// commit moves the new owner's cursor.
    GroupCommitUnfenced,
    /// A group commit does not compare the stored cursor with the previous
    /// one: a commit after a lost write moves the cursor anyway.
    GroupCommitIgnoresThePreviousCursor,
    /// An acquired unit resumes from the next unit's committed cursor.
    GroupResumesFromAnotherUnit,
    /// A heartbeat moves the epoch of every unit its member holds, so the
    /// holder's own commits are fenced (false fencing).
    GroupEpochMovesOnRenew,
    /// A release or a leave does not wake the group: hand-overs are found
    /// only by the next heartbeat's poll.
    GroupReleaseDoesNotWake,
    /// A member's heartbeat keeps it live for half the time it asked for.
    GroupLeasesExpireEarly,
}

impl Mutation {
    /// Every mutation.
    pub const ALL: &'static [Mutation] = &[
        Mutation::SkipsAnEvent,
        Mutation::RepeatsAnEvent,
        Mutation::ReordersEvents,
        Mutation::NeverCaughtUp,
        Mutation::CaughtUpTwice,
        Mutation::AcceptsAnotherInstancesCursor,
        Mutation::AcceptsAnotherFamilysCursor,
        Mutation::LittleEndianPositions,
        Mutation::TailIncludesTheLastEvent,
        Mutation::TailResolvedLate,
        Mutation::NoWakeUp,
        Mutation::NoCrossProcessWakeUp,
        Mutation::ReconnectRepeats,
        Mutation::ReconnectSkips,
        Mutation::KillHookDoesNothing,
        Mutation::ExpireHookDoesNothing,
        Mutation::ExpiredCursorsRestart,
        Mutation::BeyondHeadWaits,
        Mutation::UnboundedReadAhead,
        Mutation::DropsCorruptRecords,
        Mutation::CorruptIsTerminal,
        Mutation::FilteredSubscriptionsDropCorrupt,
        Mutation::FilterIgnoresNamespace,
        Mutation::FilterHonoursFirstKindOnly,
        Mutation::FilterComparesRawText,
        Mutation::NoCheckpoints,
        Mutation::BatchIsNotAtomic,
        Mutation::DropLeaksTheSubscription,
        Mutation::BoundsHeadIsOldest,
        Mutation::CursorAtSkipsOne,
        Mutation::DropsMetadata,
        Mutation::DropsAnOptionalField,
        Mutation::ExpiredWithoutOldest,
        Mutation::RawHookDoesNothing,
        Mutation::KillHookUnavailable,
        Mutation::CaughtUpBeforeTheBacklog,
        Mutation::ResolveSkipsTheSubscriptionsProof,
        Mutation::CaughtUpBeforeAFullFirstRead,
        Mutation::FilterFoldsCase,
        Mutation::FilterNormalisesUnicode,
        Mutation::FilterMatchesLikePattern,
        Mutation::FilterIgnoresTrailingSpaces,
        Mutation::HigherVersionDecodedAnyway,
        Mutation::VersionZeroReadAsOne,
        Mutation::NonNumericVersionRetriesForever,
        Mutation::AcksAPublishOnADeadConnection,
        Mutation::PublishWaitsOnADeadConnection,
        Mutation::KillHookSparesThePublisher,
        Mutation::ConnectionIdsOmitThePublisher,
        Mutation::CursorStoreWriteBehind,
        Mutation::CursorStoreFoldsNameCase,
        Mutation::CursorStoreTruncatesLongCursors,
        Mutation::GroupAcquireTakesALiveUnit,
        Mutation::GroupCommitUnfenced,
        Mutation::GroupCommitIgnoresThePreviousCursor,
        Mutation::GroupResumesFromAnotherUnit,
        Mutation::GroupEpochMovesOnRenew,
        Mutation::GroupReleaseDoesNotWake,
        Mutation::GroupLeasesExpireEarly,
    ];
}

impl Mutation {
    /// The suite functions meant to catch this bug: the mutation test
    /// runs these and requires one of them to fail on an assertion (a run
    /// cut off by its time limit does not count).
    pub fn caught_by(self) -> &'static [&'static str] {
        use Mutation::*;
        match self {
            SkipsAnEvent | RepeatsAnEvent | ReordersEvents | DropsMetadata
            | DropsAnOptionalField => &["order_is_total_and_matches_cursors"],
            NeverCaughtUp | CaughtUpBeforeTheBacklog => &["caught_up_is_yielded_exactly_once"],
            CaughtUpTwice | TailIncludesTheLastEvent | TailResolvedLate => {
                &["tail_yields_only_later_events"]
            }
            AcceptsAnotherInstancesCursor => &["cursors_of_another_instance_are_refused"],
            AcceptsAnotherFamilysCursor => &["bad_cursors_are_rejected_at_subscribe"],
            LittleEndianPositions => &["cursors_compare_by_bytes_past_256_and_65536_events"],
            NoWakeUp => &["live_events_arrive_promptly"],
            NoCrossProcessWakeUp => &["live_events_from_another_process_arrive_promptly"],
            ReconnectRepeats | ReconnectSkips | KillHookDoesNothing | KillHookUnavailable => {
                &["reconnect_continues_exactly_after_the_last_event"]
            }
            ExpireHookDoesNothing
            | ExpiredCursorsRestart
            | BeyondHeadWaits
            | ExpiredWithoutOldest => &["expired_cursors_are_reported_never_skipped"],
            UnboundedReadAhead => &["slow_consumer_receives_a_large_backlog_exactly_once"],
            DropsCorruptRecords
            | CorruptIsTerminal
            | FilteredSubscriptionsDropCorrupt
            | RawHookDoesNothing => &["corrupt_entries_are_flagged_and_the_stream_goes_on"],
            FilterIgnoresNamespace | FilterHonoursFirstKindOnly => {
                &["filters_admit_exactly_the_matching_events"]
            }
            FilterComparesRawText => &["filters_treat_non_canonical_records_like_canonical_ones"],
            NoCheckpoints => &["checkpoints_advance_past_filtered_out_events"],
            BatchIsNotAtomic => &["publish_batch_is_all_or_none"],
            DropLeaksTheSubscription => &["dropping_a_subscription_releases_it"],
            BoundsHeadIsOldest | CursorAtSkipsOne => {
                &["bounds_and_cursor_at_agree_with_published_events"]
            }
            ResolveSkipsTheSubscriptionsProof => &["resolve_cursor_matches_subscription"],
            CaughtUpBeforeAFullFirstRead => {
                &["caught_up_follows_backlogs_sized_around_the_read_batch"]
            }
            FilterFoldsCase
            | FilterNormalisesUnicode
            | FilterMatchesLikePattern
            | FilterIgnoresTrailingSpaces => {
                &["filters_tell_apart_text_differing_only_in_case_or_normalisation"]
            }
            HigherVersionDecodedAnyway | VersionZeroReadAsOne | NonNumericVersionRetriesForever => {
                &["records_of_an_unreadable_schema_version_are_corrupt"]
            }
            AcksAPublishOnADeadConnection
            | PublishWaitsOnADeadConnection
            | KillHookSparesThePublisher
            | ConnectionIdsOmitThePublisher => {
                &["publishes_across_a_connection_loss_are_delivered_or_refused"]
            }
            CursorStoreWriteBehind => &["cursor_store_survives_a_reopen"],
            CursorStoreFoldsNameCase | CursorStoreTruncatesLongCursors => {
                &["cursor_store_keeps_names_and_cursors_exactly"]
            }
            GroupAcquireTakesALiveUnit => &["group_units_are_owned_exclusively_and_ordered"],
            GroupCommitUnfenced | GroupCommitIgnoresThePreviousCursor => {
                &["group_refuses_a_zombie_commit"]
            }
            GroupResumesFromAnotherUnit => {
                &["group_resumes_each_unit_exactly_after_its_last_commit"]
            }
            GroupEpochMovesOnRenew | GroupLeasesExpireEarly => {
                &["group_keeps_a_members_lease_and_epochs_across_heartbeats"]
            }
            GroupReleaseDoesNotWake => &["group_hands_over_at_once_on_a_clean_leave"],
        }
    }
}
