//! The conformance suite against the mutant backend with no bug switched
//! on: the baseline the mutation test relies on (a suite failure under a
//! mutation means something only if the unmutated backend passes).

async fn harness() -> ff_tests::mutant::MutantHarness {
    ff_tests::mutant::harness(None).await
}

ff_core::conformance_suite!(harness);
