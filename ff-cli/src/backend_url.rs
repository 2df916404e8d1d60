//! Opening the backend a URL names (`memory:`, `valkey://`, `postgres://`)
//! as one shared [`ffstream::AnyBackend`]: the command subscribes,
//! publishes and stores cursors through the same handle.

use std::sync::Arc;

use anyhow::Result;
use ffstream::AnyBackend;

/// An opened backend, shared by the tasks of one command.
pub type Opened = Arc<AnyBackend>;

/// Open the backend `url` names; errors show the URL without its password.
pub async fn open(url: &str) -> Result<Opened> {
    Ok(Arc::new(ffstream::connect(url).await?))
}
