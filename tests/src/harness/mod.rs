//! [`Harness`](ff_core::testkit::Harness) implementations for the built-in
//! backends, shared by the conformance, HTTP and CLI tests.

pub mod memory;
pub mod postgres;
pub mod tagged;
pub mod valkey;
pub mod valkey_cluster;
