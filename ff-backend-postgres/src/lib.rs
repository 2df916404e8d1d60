//! # ff-backend-postgres: typed event streams over a Postgres outbox
//!
//! Events live in outbox tables, one per family, written in the same
//! transaction as the state change they describe: an event exists if and
//! only if its transaction committed. Subscribers read the tables in
//! gap-free order and are woken by `NOTIFY`.
//!
//! ```no_run
//! use futures::StreamExt;
//! use ff_backend_postgres::{PostgresBackend, PostgresConfig};
//! use ff_core::backend::{EventPublisher, StreamBackend};
//! use ff_core::filter::SubscriptionFilter;
//! use ff_core::stream_events::{CompletionOutcome, EventMeta, NewEvent};
//! use ff_core::stream_subscribe::StreamCursor;
//! use ff_core::types::ExecutionId;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let backend = PostgresBackend::connect("postgres://app@localhost/app", PostgresConfig::default()).await?;
//! let mut completions = backend
//!     .subscribe_completion(StreamCursor::empty(), &SubscriptionFilter::default())
//!     .await?;
//! backend
//!     .publish(NewEvent::completion(ExecutionId::new(0), CompletionOutcome::Success), EventMeta::new())
//!     .await?;
//! let event = completions.next().await.unwrap()?;
//! println!("{} completed; resume after {}", event.execution_id, event.cursor);
//! # Ok(()) }
//! ```
//!
//! ## Producing
//!
//! - [`PostgresBackend::append`] / [`append_batch`](PostgresBackend::append_batch)
//!   insert inside the caller's transaction (`&mut tx`).
//! - [`EventPublisher`](ff_core::backend::EventPublisher) publishes on the
//!   backend's own pool.
//! - Any client can `INSERT` plain SQL (see the schema below).
//!
//! ## Schema
//!
//! Created by [`PostgresBackend::migrate`] (`ff migrate`, or on connect when
//! migrations are pending and `migrate_on_connect` is on) in the
//! configured schema (default `ff`): tables `lease_history`, `completion`,
//! `signal_delivery`, `instance_tags` with a typed column per event field,
//! named as the field's wire name, plus `namespace` (text), `tags` (jsonb
//! object of strings), `v` (schema version), `at` (ms since the epoch) and
//! the position `xid` (`xid8`, defaulting to `pg_current_xact_id()`) and
//! `id` (identity). A plain-SQL producer writes:
//!
//! ```sql
//! INSERT INTO ff.completion (execution_id, outcome, namespace, tags)
//! VALUES ('{fp:3}:0b6f0c1e-4f3b-4c1e-9a57-2f7d9c1e0a11', 'success', 'billing', '{"region": "eu"}');
//! ```
//!
//! An `AFTER INSERT` trigger notifies channel `<schema>.<table>` (empty
//! payload) unless the session set `ff.defer_notify = on` — the backend's
//! own pool does, and notifies after commit instead, because a `NOTIFY`
//! inside a transaction holds a cluster-wide lock through its commit and
//! serialises concurrent committers (the README's benchmark section gives
//! the cost). Subscriptions of the publishing backend instance are
//! also woken in process, without the notification's round trip.
//!
//! Each subscription holds one connection of its own (`application_name`
//! `<application_name>-sub`); publishing and queries share a pool of
//! [`PostgresConfig::pool_size`] connections.
//!
//! ## Ordering and its cost
//!
//! A subscription yields a family's events in `(xid, id)` order and reads
//! only rows of transactions older than its snapshot's `xmin` (the oldest
//! transaction still open), so no event can later commit behind a position
//! already delivered. The tail cursor starts just below that `xmin`.
//! The cost: a transaction that has written anything (any table, any
//! database of the cluster) and stays open holds back delivery of every
//! event committed after it started, until it ends. While rows are held
//! back a subscription re-reads on a short backoff (1 ms doubling to
//! [`PostgresConfig::held_back_poll`]); [`PostgresBackend::held_back`]
//! measures the delay and subscriptions warn past
//! [`PostgresConfig::held_back_warning`].
//!
//! ## Retention
//!
//! [`PostgresBackend::prune_before`] and
//! [`PostgresBackend::prune_older_than`] (or the SQL functions
//! `<schema>.prune_before` / `<schema>.prune_older_than`) delete a prefix of
//! a family and record its horizon; a cursor behind it is `CursorExpired`.
//!
//! ## Production
//!
//! - TLS through the libpq URL parameters (`sslmode`, `sslrootcert`,
//!   `sslcert`, `sslkey`), over rustls (see `tls`).
//! - Least privilege: connecting only reads the schema's migration record
//!   unless migrations are pending and enabled;
//!   [`PostgresBackend::grant_consumer`] / [`PostgresBackend::grant_publisher`]
//!   grant what each role needs.
//! - Every read, wait and pooled query is bounded
//!   ([`PostgresConfig::read_timeout`], [`PostgresConfig::query_timeout`],
//!   [`PostgresConfig::liveness_interval`]).
//! - Cursors carry the history they were read in (format `0x05`): after a
//!   failover or restore that lost their row they are `CursorExpired`.
//! - Filter indexes are opt-in ([`PostgresBackend::create_filter_indexes`]);
//!   high-volume outboxes can be partitioned by time and pruned by whole
//!   ranges ([`PostgresBackend::partition_by_time`]).
//!
//! ## Where to look next
//!
//! [`PostgresConfig`] for settings, `migrations/` for the SQL, and
//! `ff_core::backend` for the traits this crate implements.

mod backend;
mod config;
pub mod cursor_codec;
mod cursor_store;
mod decode;
mod error;
mod event_columns;
mod filter_indexes;
mod grants;
mod group_store;
mod group_wake;
mod held_back;
mod history;
mod inner;
mod migrate;
mod notify;
mod partitions;
mod pool;
mod position;
mod producer;
mod publish;
mod resolve;
mod retention;
mod schema;
mod schema_state;
mod sql;
mod subscription;
mod tls;
mod url_params;
mod well_formed;

pub use backend::PostgresBackend;
pub use config::{validate_schema_name, PostgresConfig, MAX_APPLICATION_NAME_LEN, MAX_SCHEMA_LEN};
pub use error::redact_url;
pub use group_store::PostgresGroupStore;
pub use held_back::HeldBack;

/// The `sqlx` this crate is built with: [`PostgresBackend::append`] takes
/// its `PgConnection`, so callers use the same version.
pub use sqlx;
