//! [`EngineError`]: every failure a subscription or publish can report.
//!
//! Errors are `Clone` (sources sit behind `Arc`) so one error can be handed
//! to many fan-out clients. [`EngineError::is_terminal`] says whether a
//! stream ends after yielding it.

use std::sync::Arc;

use crate::cursor::StreamCursor;

/// A boxed, shareable error source.
pub type ErrorSource = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong. Messages name the problem and what to do about it, and
/// never contain credentials.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The backend does not support this operation. Terminal.
    #[error("{op} is not supported by this backend")]
    Unavailable {
        /// The unsupported operation.
        op: String,
    },

    /// A cursor was malformed, or belongs to another backend or family.
    #[error("invalid cursor: {detail}")]
    InvalidCursor {
        /// What was wrong and what to pass instead.
        detail: String,
    },

    /// Bad input other than a cursor (filter, event, configuration).
    #[error("invalid input: {detail}")]
    Validation {
        /// What was wrong.
        detail: String,
    },

    /// The position is no longer (or not yet) in the store's history: it
    /// was trimmed/pruned away, or lies beyond the store's head (restore,
    /// failover, another process's memory backend). Terminal; resume from
    /// `oldest` to continue with the oldest retained event. The message
    /// shows `oldest` as cursor text, ready to pass back (`ff tail --from`,
    /// `?cursor=`).
    #[error("cursor {cursor} has expired: {detail}; {}", resume_hint(oldest.as_ref()))]
    CursorExpired {
        /// The expired position.
        cursor: StreamCursor,
        /// Resume here to read from the oldest retained event.
        oldest: Option<StreamCursor>,
        /// Why it is expired.
        detail: String,
    },

    /// One stored entry could not be decoded. Not terminal: the stream
    /// continues with the next entry; `cursor` is the bad entry's position.
    #[error("corrupt entry at {cursor}: {detail}")]
    Corrupt {
        /// The undecodable entry's position.
        cursor: StreamCursor,
        /// What could not be decoded.
        detail: String,
    },

    /// Reconnection gave up. Terminal; subscribe again with `cursor` to
    /// continue exactly where the stream stopped.
    #[error("stream disconnected and reconnection gave up; resume from cursor {cursor}")]
    StreamDisconnected {
        /// The position to resume from.
        cursor: StreamCursor,
    },

    /// The server could not be reached or the connection failed.
    #[error("{backend} transport error: {source}")]
    Transport {
        /// Which backend (`valkey`, `postgres`).
        backend: &'static str,
        /// The underlying error (credentials redacted).
        source: ErrorSource,
    },

    /// A consumer group refused a commit or lease operation because the
    /// unit changed hands (its epoch moved on) or its stored cursor is not
    /// the one the member last committed. The unit is no longer this
    /// member's to advance: its events are redelivered to the owner, from
    /// the stored cursor.
    #[error("fenced: {detail}")]
    Fenced {
        /// Which group and unit, and what moved.
        detail: String,
    },

    /// The server answered with an error that is not a transport failure.
    #[error("{backend} error: {detail}")]
    Backend {
        /// Which backend.
        backend: &'static str,
        /// What the server said (credentials redacted).
        detail: String,
    },
}

/// How to go on after `CursorExpired`, naming `oldest` as cursor text.
fn resume_hint(oldest: Option<&StreamCursor>) -> String {
    match oldest {
        Some(oldest) => {
            format!("resume from the oldest retained event with cursor {oldest}")
        }
        None => "resume from the tail or the beginning".to_owned(),
    }
}

impl EngineError {
    /// An `InvalidCursor` error.
    pub fn invalid_cursor(detail: impl Into<String>) -> Self {
        Self::InvalidCursor {
            detail: detail.into(),
        }
    }

    /// A `Validation` error.
    pub fn validation(detail: impl Into<String>) -> Self {
        Self::Validation {
            detail: detail.into(),
        }
    }

    /// An `Unavailable` error for `op`.
    pub fn unavailable(op: impl Into<String>) -> Self {
        Self::Unavailable { op: op.into() }
    }

    /// A `Transport` error wrapping `source`.
    pub fn transport(
        backend: &'static str,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Transport {
            backend,
            source: Arc::new(source),
        }
    }

    /// Whether a stream ends after yielding this error. Only `Corrupt` is
    /// not terminal.
    pub fn is_terminal(&self) -> bool {
        !matches!(self, Self::Corrupt { .. })
    }
}

/// Bad input as an error message echoes it: quoted, and cut to a marked
/// prefix when long, so a 100 KB value never becomes a 100 KB message.
///
/// ```
/// use ff_core::error::excerpt;
/// assert_eq!(excerpt("abc"), "\"abc\"");
/// assert_eq!(excerpt(&"x".repeat(1000)), format!("\"{}…\" (1000 characters)", "x".repeat(40)));
/// ```
pub fn excerpt(input: &str) -> String {
    const KEEP: usize = 40;
    let chars = input.chars().count();
    if chars <= KEEP + 8 {
        return format!("{input:?}");
    }
    let head: String = input.chars().take(KEEP).collect();
    format!("{:?} ({chars} characters)", format!("{head}…"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_corrupt_is_not_terminal() {
        let c = StreamCursor::beginning();
        assert!(!EngineError::Corrupt {
            cursor: c.clone(),
            detail: "x".into()
        }
        .is_terminal());
        assert!(EngineError::StreamDisconnected { cursor: c.clone() }.is_terminal());
        assert!(EngineError::CursorExpired {
            cursor: c,
            oldest: None,
            detail: "trimmed".into()
        }
        .is_terminal());
        assert!(EngineError::unavailable("bounds").is_terminal());
    }

    #[test]
    fn errors_are_clone_and_name_the_problem() {
        let e = EngineError::transport("valkey", std::io::Error::other("connection refused"));
        let copy = e.clone();
        assert!(copy.to_string().contains("connection refused"));
        let s = EngineError::StreamDisconnected {
            cursor: StreamCursor::beginning(),
        }
        .to_string();
        assert!(s.contains("resume from cursor AA"), "{s}");
        let expired = EngineError::CursorExpired {
            cursor: StreamCursor::new(vec![3u8, 2, 1]),
            oldest: Some(StreamCursor::new(vec![3u8, 2, 9])),
            detail: "it was trimmed".into(),
        }
        .to_string();
        assert!(
            expired.ends_with(
                "it was trimmed; resume from the oldest retained event with cursor AwIJ"
            ),
            "{expired}"
        );
    }
}
