//! [`MutantCursorStore`]: consumer positions kept in the mutant store (the
//! "server"), so they outlive any one handle — unless a mutation keeps
//! them in the handle, compares names loosely, or cuts cursors short.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use ff_core::backend::{validate_consumer_name, CursorStore};
use ff_core::engine_error::EngineError;
use ff_core::stream_subscribe::StreamCursor;

use super::store::Store;
use super::Mutation;

/// Positions a write-behind handle holds before it writes them through.
const WRITE_BEHIND: usize = 16;

/// One handle on a mutant store's consumer positions.
#[derive(Debug)]
pub struct MutantCursorStore {
    store: Arc<Store>,
    /// Positions not yet written through (only under
    /// [`Mutation::CursorStoreWriteBehind`]).
    pending: Mutex<HashMap<String, StreamCursor>>,
}

/// A cursor store on a fresh mutant store with `mutation` switched on.
pub async fn cursor_store(mutation: Option<Mutation>) -> MutantCursorStore {
    MutantCursorStore::on(Arc::new(Store::new(mutation)))
}

/// Drop `store` and open another handle on the same mutant store.
pub async fn reopen_cursor_store(store: MutantCursorStore) -> MutantCursorStore {
    let backing = store.store.clone();
    drop(store);
    MutantCursorStore::on(backing)
}

impl MutantCursorStore {
    fn on(store: Arc<Store>) -> Self {
        Self {
            store,
            pending: Mutex::new(HashMap::new()),
        }
    }

    /// The key a name is kept under.
    fn key(&self, name: &str) -> String {
        if self.store.has(Mutation::CursorStoreFoldsNameCase) {
            name.to_lowercase()
        } else {
            name.to_owned()
        }
    }
}

#[async_trait]
impl CursorStore for MutantCursorStore {
    async fn load(&self, name: &str) -> Result<Option<StreamCursor>, EngineError> {
        validate_consumer_name(name)?;
        let key = self.key(name);
        if let Some(c) = self.pending.lock().expect("lock").get(&key) {
            return Ok(Some(c.clone()));
        }
        Ok(self.store.load_cursor(&key).map(StreamCursor::new))
    }

    async fn store(&self, name: &str, cursor: &StreamCursor) -> Result<(), EngineError> {
        validate_consumer_name(name)?;
        let key = self.key(name);
        let mut bytes = cursor.as_bytes().to_vec();
        if self.store.has(Mutation::CursorStoreTruncatesLongCursors) {
            bytes.truncate(64);
        }
        if self.store.has(Mutation::CursorStoreWriteBehind) {
            let mut pending = self.pending.lock().expect("lock");
            pending.insert(key, StreamCursor::new(bytes));
            if pending.len() >= WRITE_BEHIND {
                for (k, c) in pending.drain() {
                    self.store.store_cursor(k, c.as_bytes().to_vec());
                }
            }
            return Ok(());
        }
        self.store.store_cursor(key, bytes);
        Ok(())
    }
}
