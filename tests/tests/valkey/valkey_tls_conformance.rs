//! The conformance suite and the cursor-store suite over TLS: a Redis 7.0
//! server with TLS (started once per test binary, certificates from a
//! throwaway CA), every backend connection over TLS; the fault hooks act
//! over the server's plaintext port.

use ff_backend_valkey::ValkeyBackend;
use ff_tests::harness::valkey::ValkeyHarness;

async fn harness() -> ValkeyHarness {
    ValkeyHarness::new_tls().await
}

// A Valkey cursor is an entry id and nothing else: another stream's
// cursor is caught only beyond this stream's head or behind its trims.
ff_core::conformance_suite!(harness, absent: [foreign_cursor]);

async fn cursor_store() -> ValkeyBackend {
    harness().await.backend
}

ff_core::cursor_store_suite!(cursor_store, reopen: ff_tests::harness::valkey::reopen);
