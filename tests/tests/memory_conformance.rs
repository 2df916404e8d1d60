//! The conformance suite against the embedded memory backend.

use ff_backend_memory::MemoryCursorStore;
use ff_tests::harness::memory::harness;

ff_core::conformance_suite!(harness);

async fn store() -> MemoryCursorStore {
    MemoryCursorStore::new()
}

ff_core::cursor_store_suite!(store);
