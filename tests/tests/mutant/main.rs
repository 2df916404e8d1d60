//! The mutant backend: the suites pass over it unmutated, and catch every
//! bug it can switch on.
//!
//! One binary per area: every test binary links every backend, so the
//! area's test files are modules of this one binary rather than binaries of
//! their own. Run one file's tests with
//! `cargo test -p ff-tests --test mutant <module>::`.

mod mutant_conformance;
mod suite_mutations;
