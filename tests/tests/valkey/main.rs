//! The Valkey backend on real Valkey servers: the conformance suite (plain
//! and over TLS), groups, history, partitions, ACLs, foreign trims, faults
//! and a hostile server.
//!
//! One binary per area: every test binary links every backend, so the
//! area's test files are modules of this one binary rather than binaries of
//! their own. Run one file's tests with
//! `cargo test -p ff-tests --test valkey <module>::`.

mod valkey_acl;
mod valkey_backend;
mod valkey_conformance;
mod valkey_faults;
mod valkey_foreign_trims;
mod valkey_groups;
mod valkey_history;
mod valkey_hostile_server;
mod valkey_partitions;
mod valkey_tls;
mod valkey_tls_conformance;
