//! The conformance suite and the cursor-store suite over a real Valkey
//! Cluster (three primaries with a replica each, or
//! `FF_TEST_VALKEY_CLUSTER_URL`), each family one partition: its four
//! streams share a slot, and every request goes to the node serving it.

use ff_backend_valkey::ValkeyBackend;
use ff_tests::harness::valkey_cluster::ValkeyClusterHarness;

async fn harness() -> ValkeyClusterHarness {
    ValkeyClusterHarness::new(1).await
}

// Valkey cursors carry no stream identity (see valkey_conformance.rs).
ff_core::conformance_suite!(harness, absent: [foreign_cursor]);

async fn cursor_store() -> ValkeyBackend {
    harness().await.backend
}

ff_core::cursor_store_suite!(cursor_store, reopen: ff_tests::harness::valkey::reopen);

mod partitioned {
    use super::*;

    async fn harness() -> ValkeyClusterHarness {
        ValkeyClusterHarness::new(6).await
    }

    ff_core::conformance_suite!(harness, absent: [foreign_cursor]);
}
