//! TLS settings of a Postgres URL, checked before connecting.
//!
//! TLS is `sqlx`'s, over rustls, for the pool and the subscriptions alike,
//! driven by the libpq URL parameters: `sslmode` (`disable`, `allow`,
//! `prefer` — the default —, `require`, `verify-ca`, `verify-full`),
//! `sslrootcert` (the CA file; without it, the system's root certificates),
//! `sslcert` and `sslkey` (a client certificate and its key). This module
//! checks them up front, so that a misspelt mode or an unreadable file is
//! one `Validation` error naming the parameter instead of a failed
//! handshake later.

use std::path::Path;

use ff_core::engine_error::EngineError;
use url::Url;

use crate::error::redact_url;

/// The `sslmode` values libpq (and `sqlx`) accept.
const MODES: [&str; 6] = [
    "disable",
    "allow",
    "prefer",
    "require",
    "verify-ca",
    "verify-full",
];

/// Check the TLS parameters of `url` (a `postgres://` URL).
pub(crate) fn check_tls_params(url: &str) -> Result<(), EngineError> {
    let invalid = |why: String| {
        EngineError::validation(format!("invalid Postgres URL {}: {why}", redact_url(url)))
    };
    let parsed = Url::parse(url).map_err(|e| invalid(e.to_string()))?;
    let (mut cert, mut key) = (false, false);
    for (name, value) in parsed.query_pairs() {
        match &*name {
            "sslmode" | "ssl-mode" if !MODES.contains(&&*value) => {
                return Err(invalid(format!(
                    "sslmode={value} is not one of {}",
                    MODES.join(", ")
                )));
            }
            "sslrootcert" | "ssl-root-cert" | "ssl-ca" => {
                if value == "system" {
                    return Err(invalid(
                        "sslrootcert=system is not supported: omit sslrootcert to verify the \
                         server against the system's root certificates"
                            .into(),
                    ));
                }
                readable(&name, &value).map_err(invalid)?;
            }
            "sslcert" | "ssl-cert" => {
                readable(&name, &value).map_err(invalid)?;
                cert = true;
            }
            "sslkey" | "ssl-key" => {
                readable(&name, &value).map_err(invalid)?;
                key = true;
            }
            _ => {}
        }
    }
    if cert != key {
        return Err(invalid(
            "a client certificate needs both sslcert and sslkey".into(),
        ));
    }
    Ok(())
}

/// `Ok` when the file `value` names can be read.
fn readable(name: &str, value: &str) -> Result<(), String> {
    std::fs::File::open(Path::new(value))
        .map(drop)
        .map_err(|e| format!("{name}={value} cannot be read: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_and_files_are_checked_and_named() {
        assert!(check_tls_params("postgres://u@h/db").is_ok());
        assert!(check_tls_params("postgres://u@h/db?sslmode=verify-full").is_ok());
        let err = check_tls_params("postgres://u:pw@h/db?sslmode=verify_full")
            .unwrap_err()
            .to_string();
        assert!(err.contains("sslmode=verify_full"), "{err}");
        assert!(!err.contains("pw@"), "{err}");
        let err = check_tls_params("postgres://u@h/db?sslrootcert=/nonexistent/ca.pem")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("sslrootcert=/nonexistent/ca.pem cannot be read"),
            "{err}"
        );
        let existing = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
        let err = check_tls_params(&format!("postgres://u@h/db?sslcert={existing}"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("both sslcert and sslkey"), "{err}");
        assert!(check_tls_params(&format!(
            "postgres://u@h/db?sslmode=verify-ca&sslrootcert={existing}&sslcert={existing}&sslkey={existing}"
        ))
        .is_ok());
        assert!(check_tls_params("postgres://u@h/db?sslrootcert=system").is_err());
    }
}
