//! The conformance suite (feature `testkit`).
