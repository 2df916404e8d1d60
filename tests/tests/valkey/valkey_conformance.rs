//! The conformance suite and the cursor-store suite against a real Valkey
//! server (one per test binary, or `FF_TEST_VALKEY_URL`). Every test gets
//! its own key prefix and client name, so tests share the server safely.

use ff_backend_valkey::ValkeyBackend;
use ff_tests::harness::valkey::ValkeyHarness;

async fn harness() -> ValkeyHarness {
    ValkeyHarness::new().await
}

// A Valkey cursor is an entry id and nothing else: another stream's
// cursor is caught only beyond this stream's head or behind its trims.
ff_core::conformance_suite!(harness, absent: [foreign_cursor]);

async fn cursor_store() -> ValkeyBackend {
    harness().await.backend
}

ff_core::cursor_store_suite!(cursor_store, reopen: ff_tests::harness::valkey::reopen);
