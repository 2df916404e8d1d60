//! The conformance suite against the embedded memory backend. It holds no
//! server connections and its store lives in this process, so the
//! reconnect and cross-process tests do not apply.

use ff_tests::harness::memory::harness;

ff_core::conformance_suite!(harness, absent: [reconnect, cross_process]);

/// A standalone `MemoryCursorStore`: its positions live and die with it.
mod standalone_store {
    use ff_backend_memory::MemoryCursorStore;

    async fn store() -> MemoryCursorStore {
        MemoryCursorStore::new()
    }

    ff_core::cursor_store_suite!(store, absent: [reopen]);
}

/// The backend's own cursor store: positions outlive any one handle while
/// the instance lives, so a reopen drops a handle and takes another.
mod backend_store {
    use ff_backend_memory::MemoryBackend;

    async fn store() -> MemoryBackend {
        MemoryBackend::new()
    }

    async fn reopen(store: MemoryBackend) -> MemoryBackend {
        let another = store.clone();
        drop(store);
        another
    }

    ff_core::cursor_store_suite!(store, reopen: reopen);
}

/// The whole suite again through `ffstream::AnyBackend`, the handle
/// `ffstream::connect` returns: it must behave exactly as the backend.
mod through_ffstream {
    use ff_tests::harness::memory::harness_through_ffstream as harness;

    ff_core::conformance_suite!(harness, absent: [reconnect, cross_process]);

    /// Consumer groups reach the backend's group store through the handle.
    mod groups {
        use ff_tests::harness::memory::harness_through_ffstream as harness;

        ff_core::group_suite!(harness);
    }

    /// The handle's cursor store is the backend's.
    mod cursor_store {
        use ff_backend_memory::MemoryBackend;
        use ffstream::AnyBackend;

        async fn store() -> AnyBackend {
            AnyBackend::from(MemoryBackend::new())
        }

        async fn reopen(store: AnyBackend) -> AnyBackend {
            let another = store.clone();
            drop(store);
            another
        }

        ff_core::cursor_store_suite!(store, reopen: reopen);
    }
}
