//! The conformance suite, the cursor-store suite and the group suite
//! against the mutant backend with no bug switched on: the baseline the
//! mutation test relies on (a suite failure under a mutation means something only if the
//! unmutated backend passes).

async fn harness() -> ff_tests::mutant::MutantHarness {
    ff_tests::mutant::harness(None).await
}

ff_core::conformance_suite!(harness);
ff_core::group_suite!(harness);

async fn cursor_store() -> ff_tests::mutant::MutantCursorStore {
    ff_tests::mutant::cursor_store(None).await
}

ff_core::cursor_store_suite!(cursor_store, reopen: ff_tests::mutant::reopen_cursor_store);
