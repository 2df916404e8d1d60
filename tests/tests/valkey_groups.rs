//! The consumer-group suite against a real Valkey server and a real
//! Valkey Cluster (each family one partition): a group's keys share one
//! hash slot, and its wake-ups come from a stream on the node serving it.
//! A family split into partitions has no groups yet: those tests are
//! reported as ignored, and check that the backend says `Unavailable`.

use ff_tests::harness::valkey::ValkeyHarness;
use ff_tests::harness::valkey_cluster::ValkeyClusterHarness;

async fn harness() -> ValkeyHarness {
    ValkeyHarness::new().await
}

ff_core::group_suite!(harness);

mod cluster {
    use super::*;

    async fn harness() -> ValkeyClusterHarness {
        ValkeyClusterHarness::new(1).await
    }

    ff_core::group_suite!(harness);
}

mod partitioned {
    use super::*;

    async fn harness() -> ValkeyClusterHarness {
        ValkeyClusterHarness::new(6).await
    }

    ff_core::group_suite!(harness, absent: [groups]);
}
