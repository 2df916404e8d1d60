//! The Valkey backend on real Valkey Clusters: the conformance suite,
//! routing, TLS, faults and dead nodes.
//!
//! One binary per area: every test binary links every backend, so the
//! area's test files are modules of this one binary rather than binaries of
//! their own. Run one file's tests with
//! `cargo test -p ff-tests --test valkey_cluster <module>::`.

mod valkey_cluster_conformance;
mod valkey_cluster_faults;
mod valkey_cluster_routing;
mod valkey_cluster_tls;
mod valkey_dead_nodes;
