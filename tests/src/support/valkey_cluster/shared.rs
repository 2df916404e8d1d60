//! The cluster tests share, and the external one that replaces it.
//!
//! Tests that only need *a* cluster use [`shared_valkey_cluster_url`]: the
//! cluster named by `FF_TEST_VALKEY_CLUSTER_URL`, or one started on first
//! use and kept for the life of the test process (tests isolate themselves
//! by key prefix, and never change its topology). Tests that kill nodes or
//! move slots start their own [`ValkeyCluster`] and call
//! [`skip_if_external_valkey_cluster`] first.

use std::sync::OnceLock;

use super::{ClusterOptions, ValkeyCluster};
use crate::support::{env_nonempty, say_loudly, SupportError};

/// Environment variable naming an external Valkey Cluster (the URL of any
/// one of its nodes) for the suite.
pub const VALKEY_CLUSTER_URL_ENV: &str = "FF_TEST_VALKEY_CLUSTER_URL";

/// Whether `FF_TEST_VALKEY_CLUSTER_URL` points the suite at an external
/// cluster.
pub fn external_valkey_cluster() -> bool {
    env_nonempty(VALKEY_CLUSTER_URL_ENV).is_some()
}

/// For fault tests that must start (and break) their own cluster: returns
/// `true`, after printing a loud SKIPPED notice naming `test`, when
/// `FF_TEST_VALKEY_CLUSTER_URL` is set; the test should then return early.
pub fn skip_if_external_valkey_cluster(test: &str) -> bool {
    let external = external_valkey_cluster();
    if external {
        say_loudly(&format!(
            "SKIPPED {test}: {VALKEY_CLUSTER_URL_ENV} is set, and this fault test must start \
             and break its own Valkey Cluster"
        ));
    }
    external
}

static SHARED: OnceLock<Result<ValkeyCluster, String>> = OnceLock::new();

fn shared() -> Result<&'static ValkeyCluster, SupportError> {
    SHARED
        .get_or_init(|| {
            ValkeyCluster::start_with(ClusterOptions::default()).map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|message| SupportError::SharedServer {
            server: "valkey cluster",
            message: message.clone(),
        })
}

/// The URL of one node of the cluster tests share: `FF_TEST_VALKEY_CLUSTER_URL`
/// when set, otherwise a three-primary, three-replica cluster started on
/// first use and kept for the life of the test process.
pub fn shared_valkey_cluster_url() -> Result<String, SupportError> {
    if let Some(url) = env_nonempty(VALKEY_CLUSTER_URL_ENV) {
        return Ok(url);
    }
    shared().map(ValkeyCluster::url)
}

/// The shared cluster itself, read-only (to inspect its topology), or
/// `None` when the suite runs against an external cluster.
pub fn shared_valkey_cluster() -> Result<Option<&'static ValkeyCluster>, SupportError> {
    if external_valkey_cluster() {
        return Ok(None);
    }
    shared().map(Some)
}
