//! The in-memory backend: the conformance, cursor-store and group suites.
//!
//! One binary per area: every test binary links every backend, so the
//! area's test files are modules of this one binary rather than binaries of
//! their own. Run one file's tests with
//! `cargo test -p ff-tests --test memory <module>::`.

mod memory_conformance;
mod memory_groups;
