//! Mapping `sqlx` failures into [`EngineError`], and keeping credentials
//! out of messages.

use ff_core::engine_error::EngineError;

/// The backend name used in errors.
pub(crate) const BACKEND: &str = "postgres";

/// Whether `e` means the connection is gone (or could not be made), so
/// reconnecting may help: I/O and TLS failures, pool timeouts, protocol
/// breakage, and server errors of SQLSTATE class 08 (connection
/// exception), 57P01–57P03 (shutdown, crash, not yet accepting) and 53300
/// (too many connections).
pub(crate) fn is_connection_error(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            code.starts_with("08") || code.starts_with("57P") || code == "53300"
        }),
        _ => false,
    }
}

/// Convert a `sqlx` error: connection failures become `Transport`, server
/// errors `Backend` with their SQLSTATE, and a missing schema or table
/// says how to create it.
pub(crate) fn map_sqlx(e: sqlx::Error) -> EngineError {
    // rustls reports a refused certificate as invalid data on the socket.
    let tls = match &e {
        sqlx::Error::Tls(tls) => Some(tls.to_string()),
        sqlx::Error::Io(io) if io.kind() == std::io::ErrorKind::InvalidData => Some(io.to_string()),
        _ => None,
    };
    if let Some(tls) = tls {
        return EngineError::transport(
            BACKEND,
            std::io::Error::other(format!(
                "TLS with the server failed ({tls}): check the URL's sslmode, and sslrootcert \
                 (the CA that signed the server's certificate) or sslcert/sslkey"
            )),
        );
    }
    if is_connection_error(&e) {
        return EngineError::transport(BACKEND, e);
    }
    match &e {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            let hint = match code.as_str() {
                "42P01" | "3F000" | "42883" => {
                    " (the ff schema is missing or out of date: run PostgresBackend::migrate, `ff migrate`, or connect with migrate_on_connect)"
                }
                "28000" | "28P01" => {
                    " (the server refused the login: check the URL's user, password, sslmode and sslcert/sslkey; a server that admits only TLS refuses sslmode=disable)"
                }
                "42501" => {
                    " (this role lacks a grant ff needs: as the schema's owner run `ff migrate --grant-consumer ROLE` or `--grant-publisher ROLE`; docs/postgres.md lists the grants)"
                }
                _ => "",
            };
            EngineError::Backend {
                backend: BACKEND,
                detail: format!("{} [SQLSTATE {code}]{hint}", db.message()),
            }
        }
        _ => EngineError::Backend {
            backend: BACKEND,
            detail: e.to_string(),
        },
    }
}

/// `url` with any password replaced by `***` (in the user-info part and in
/// a `password=` query parameter), for error messages.
pub fn redact_url(url: &str) -> String {
    ff_core::redact::redact_url(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_everywhere() {
        assert_eq!(
            redact_url("postgres://alice:s3cret@db:5432/app"),
            "postgres://alice:***@db:5432/app"
        );
        assert_eq!(
            redact_url("postgres://alice@db/app?password=s3cret&sslmode=require"),
            "postgres://alice@db/app?password=***&sslmode=require"
        );
        assert_eq!(redact_url("postgres://db/app"), "postgres://db/app");
        assert_eq!(
            redact_url("postgresql://a:p%40ss@h/d?x=1"),
            "postgresql://a:***@h/d?x=1"
        );
        assert!(!redact_url("postgres://u:pw@h:notaport/d").contains("pw"));
    }

    #[test]
    fn connection_errors_are_transport() {
        let io = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(is_connection_error(&io));
        assert!(matches!(map_sqlx(io), EngineError::Transport { .. }));
        assert!(!is_connection_error(&sqlx::Error::RowNotFound));
        assert!(matches!(
            map_sqlx(sqlx::Error::RowNotFound),
            EngineError::Backend { .. }
        ));
    }
}
