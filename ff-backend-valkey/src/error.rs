//! Classifying client errors: which mean "the connection is gone, retry on
//! a new one" and which are the server refusing a command, and how each
//! maps into [`EngineError`].

use std::fmt;

use ff_core::engine_error::EngineError;
use redis::{ErrorKind, RedisError};

/// The backend name in errors.
pub(crate) const BACKEND: &str = "valkey";

/// An error with what the backend was doing, e.g. `reading ff:completion
/// on valkey://127.0.0.1:6379: connection refused` (the address is always
/// the redacted form).
#[derive(Debug)]
pub(crate) struct InContext<E> {
    context: String,
    source: E,
}

impl<E> InContext<E> {
    pub(crate) fn new(context: impl Into<String>, source: E) -> Self {
        Self {
            context: context.into(),
            source,
        }
    }
}

impl<E: fmt::Display> fmt::Display for InContext<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.context, self.source)
    }
}

impl<E: std::error::Error + 'static> std::error::Error for InContext<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// Whether the error means the connection is unusable and must be
/// replaced (socket closed, reset, timed out, protocol desynchronised).
pub(crate) fn breaks_connection(e: &RedisError) -> bool {
    e.is_io_error() || e.is_unrecoverable_error()
}

/// Whether retrying later, on a new connection if need be, can succeed:
/// connection failures and the server's transient states (loading the
/// dataset after a restart, failover in progress).
pub(crate) fn is_transient(e: &RedisError) -> bool {
    breaks_connection(e)
        || matches!(
            e.kind(),
            ErrorKind::BusyLoadingError
                | ErrorKind::TryAgain
                | ErrorKind::MasterDown
                | ErrorKind::ClusterDown
                | ErrorKind::ReadOnly
        )
}

/// Map a client error into an [`EngineError`]: `Transport` when the server
/// could not be reached or is temporarily unable to serve, `Backend` when
/// it refused the command.
pub(crate) fn to_engine(e: RedisError, context: impl Into<String>) -> EngineError {
    let context = context.into();
    if is_transient(&e) {
        EngineError::transport(BACKEND, InContext::new(context, e))
    } else {
        EngineError::Backend {
            backend: BACKEND,
            detail: format!("{context}: {e}"),
        }
    }
}

/// A reply of an unexpected shape.
pub(crate) fn unexpected(context: &str, what: impl fmt::Display) -> EngineError {
    EngineError::Backend {
        backend: BACKEND,
        detail: format!("{context}: unexpected reply ({what}); is this a Valkey/Redis 7+ server?"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_failures_are_transport_and_refusals_are_backend() {
        let io: RedisError = std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into();
        assert!(is_transient(&io) && breaks_connection(&io));
        assert!(matches!(
            to_engine(io, "connecting to valkey://h:1"),
            EngineError::Transport { .. }
        ));
        let loading: RedisError = (ErrorKind::BusyLoadingError, "loading").into();
        assert!(is_transient(&loading) && !breaks_connection(&loading));
        let wrong: RedisError = (ErrorKind::TypeError, "WRONGTYPE").into();
        assert!(!is_transient(&wrong));
        let e = to_engine(wrong, "reading ff:completion");
        assert!(matches!(e, EngineError::Backend { .. }));
        assert!(e.to_string().contains("reading ff:completion"), "{e}");
    }
}
