//! [`Inner`]: the state a [`PostgresBackend`](crate::PostgresBackend) and
//! its clones share — configuration, schema names, the connection pool,
//! the subscription connection options, the prepared insert statements and
//! the notifier.
//!
//! Invariant: this module holds data only, so the backend that builds it
//! and the subscriptions that read it both depend on it, and not on each
//! other.

use std::sync::Arc;

use sqlx::postgres::PgConnectOptions;

use crate::config::PostgresConfig;
use crate::notify::Notifier;
use crate::pool::ConnPool;
use crate::publish::InsertStatements;
use crate::schema::SchemaNames;

/// Shared state of a backend and its clones.
pub(crate) struct Inner {
    pub config: PostgresConfig,
    pub names: SchemaNames,
    /// Pooled connections (publishing, cursor store, queries); they set
    /// `ff.defer_notify` and leave wake-ups to `notifier`.
    pub pool: Arc<ConnPool>,
    /// Options for subscription connections.
    pub sub_options: PgConnectOptions,
    pub statements: InsertStatements,
    pub notifier: Notifier,
}
