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
/// dataset after a restart, failover in progress, a primary demoted while
/// a blocking command waited on it).
pub(crate) fn is_transient(e: &RedisError) -> bool {
    breaks_connection(e)
        || e.code()
            .is_some_and(|code| code == "UNBLOCKED" || code == "REDIRECT")
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
/// it refused the command — naming the command and `account` when the
/// account lacks the right (see [`refusal`]).
pub(crate) fn to_engine(e: RedisError, account: &str, context: impl Into<String>) -> EngineError {
    let context = context.into();
    if is_transient(&e) {
        return EngineError::transport(BACKEND, InContext::new(context, e));
    }
    let text = match (e.code(), e.detail()) {
        (Some(code), Some(detail)) => format!("{code} {detail}"),
        _ => e.to_string(),
    };
    server_error(&text, account, &context)
}

/// The `Backend` error for the error reply `text` (`CODE message`).
pub(crate) fn server_error(text: &str, account: &str, context: &str) -> EngineError {
    let text = one_line(text);
    EngineError::Backend {
        backend: BACKEND,
        detail: match refusal(&text, account) {
            Some(why) => format!("{context}: {why}"),
            None => format!("{context}: the server answered {text}"),
        },
    }
}

/// When `text` is an ACL refusal (`NOPERM …`, or a script's ACL failure):
/// one line naming the account and what it may not do.
pub(crate) fn refusal(text: &str, account: &str) -> Option<String> {
    let is_acl = text.contains("NOPERM")
        || text.contains("ACL failure")
        || text.contains("can't run this command");
    if !is_acl {
        return None;
    }
    let command = text
        .split_once("run the '")
        .and_then(|(_, rest)| rest.split_once('\''))
        .map(|(cmd, _)| cmd.to_ascii_uppercase());
    let what = match command {
        Some(cmd) if text.contains("script") => {
            format!("run {cmd} (called by ff's retention script)")
        }
        Some(cmd) => format!("run {cmd}"),
        None if text.contains("script") => {
            "run a command of ff's retention script (EXISTS, XLEN, XRANGE, XREVRANGE, XTRIM, XINFO, XSETID, TIME, SET)".to_owned()
        }
        None if text.contains("key") => "access a key under the key prefix".to_owned(),
        None => "run a command ff needs".to_owned(),
    };
    Some(format!(
        "the account {account:?} may not {what} ({text}); grant the rights docs/valkey.md lists for its role"
    ))
}

/// The text of an error reply: `CODE message`.
pub(crate) fn reply_text(code: &str, details: Option<&str>) -> String {
    match details {
        Some(details) => format!("{code} {details}"),
        None => code.to_owned(),
    }
}

/// `text` on one line (server messages can carry newlines).
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
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
            to_engine(io, "default", "connecting to valkey://h:1"),
            EngineError::Transport { .. }
        ));
        let loading: RedisError = (ErrorKind::BusyLoadingError, "loading").into();
        assert!(is_transient(&loading) && !breaks_connection(&loading));
        let wrong: RedisError = (ErrorKind::TypeError, "WRONGTYPE").into();
        assert!(!is_transient(&wrong));
        let e = to_engine(wrong, "app", "reading ff:completion");
        assert!(matches!(e, EngineError::Backend { .. }));
        assert!(e.to_string().contains("reading ff:completion"), "{e}");
    }

    #[test]
    fn acl_refusals_name_the_command_and_the_account() {
        for text in [
            "NOPERM User c has no permissions to run the 'xrange' command",
            "NOPERM this user has no permissions to run the 'xrange' command",
        ] {
            let why = refusal(text, "c").unwrap();
            assert!(why.contains("\"c\" may not run XRANGE"), "{why}");
        }
        let keys = refusal("NOPERM No permissions to access a key", "c").unwrap();
        assert!(keys.contains("access a key"), "{keys}");
        let script = refusal(
            "ERR ACL failure in script: User p has no permissions to run the 'xtrim' command script: on @user_script:1.",
            "p",
        )
        .unwrap();
        assert!(
            script.contains("may not run XTRIM (called by ff's retention script)"),
            "{script}"
        );
        let old = refusal(
            "ERR The user executing the script can't run this command or subcommand script: f6b7, on @user_script:1.",
            "p",
        )
        .unwrap();
        assert!(old.contains("retention script (EXISTS"), "{old}");
        assert_eq!(refusal("WRONGTYPE Operation against a key", "c"), None);
        let exec = refusal(
            "EXECABORT Transaction discarded because of: NOPERM User c has no permissions to run the 'exec' command",
            "c",
        )
        .unwrap();
        assert!(exec.contains("may not run EXEC"), "{exec}");
        let e = server_error(
            "NOPERM this user has no permissions to run the 'get' command",
            "c",
            "ctx",
        );
        assert!(!e.to_string().contains('\n'));
        assert!(
            e.to_string().starts_with("valkey error: ctx: the account"),
            "{e}"
        );
    }
}
