//! The Postgres backend on real PostgreSQL servers: the conformance suite,
//! groups, history, filters, ordering, partitions, privileges, pruning,
//! timeouts, TLS, two-phase commits, upgrades, wake-ups and faults.
//!
//! One binary per area: every test binary links every backend, so the
//! area's test files are modules of this one binary rather than binaries of
//! their own. Run one file's tests with
//! `cargo test -p ff-tests --test postgres <module>::`.

mod postgres_conformance;
mod postgres_durable_positions;
mod postgres_faults;
mod postgres_filters;
mod postgres_groups;
mod postgres_history;
mod postgres_listen;
mod postgres_ordering;
mod postgres_partitions;
mod postgres_privileges;
mod postgres_prune_isolation;
mod postgres_prune_locks;
mod postgres_timeouts;
mod postgres_tls;
mod postgres_two_phase;
mod postgres_upgrade;
mod postgres_wakeups;
