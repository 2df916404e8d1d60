//! The consumer-group suite against the embedded memory backend: leases,
//! members and unit cursors live in the backend instance.

use ff_tests::harness::memory::harness;

ff_core::group_suite!(harness);
