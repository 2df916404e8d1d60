//! An in-process [`CursorStore`]: consumer positions in a map.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use ff_core::backend::{validate_consumer_name, CursorStore};
use ff_core::engine_error::EngineError;
use ff_core::stream_subscribe::StreamCursor;

/// Consumer positions kept in memory; last writer wins. Lost with the
/// process, like the memory backend's events.
#[derive(Debug, Default)]
pub struct MemoryCursorStore {
    cursors: Mutex<HashMap<String, StreamCursor>>,
}

impl MemoryCursorStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl CursorStore for MemoryCursorStore {
    async fn load(&self, name: &str) -> Result<Option<StreamCursor>, EngineError> {
        validate_consumer_name(name)?;
        let map = self.cursors.lock().unwrap_or_else(|p| p.into_inner());
        Ok(map.get(name).cloned())
    }

    async fn store(&self, name: &str, cursor: &StreamCursor) -> Result<(), EngineError> {
        validate_consumer_name(name)?;
        let mut map = self.cursors.lock().unwrap_or_else(|p| p.into_inner());
        map.insert(name.to_owned(), cursor.clone());
        Ok(())
    }
}
