//! The conformance suite against the embedded memory backend. It holds no
//! server connections and its store lives in this process, so the
//! reconnect and cross-process tests do not apply.

use ff_backend_memory::MemoryCursorStore;
use ff_tests::harness::memory::harness;

ff_core::conformance_suite!(harness, absent: [reconnect, cross_process]);

async fn store() -> MemoryCursorStore {
    MemoryCursorStore::new()
}

ff_core::cursor_store_suite!(store);
