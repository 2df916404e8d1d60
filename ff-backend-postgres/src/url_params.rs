//! libpq URL parameters ff reads itself rather than handing to `sqlx`.
//!
//! `connect_timeout` (seconds, as libpq reads it) bounds connecting; sqlx
//! does not know it (it logs a warning and ignores it), so it is taken out
//! of the URL here and applied to the backend's configuration.

use std::time::Duration;

use ff_core::engine_error::EngineError;
use url::Url;

use crate::error::redact_url;

/// `url` without its `connect_timeout` parameter, and that timeout.
pub(crate) fn take_connect_timeout(url: &str) -> Result<(String, Option<Duration>), EngineError> {
    let invalid = |why: String| {
        EngineError::validation(format!("invalid Postgres URL {}: {why}", redact_url(url)))
    };
    let mut parsed = Url::parse(url).map_err(|e| invalid(e.to_string()))?;
    let mut timeout = None;
    let mut kept = Vec::new();
    for (name, value) in parsed.query_pairs() {
        if name == "connect_timeout" {
            let secs: u64 = value
                .trim()
                .parse()
                .ok()
                .filter(|s| *s > 0)
                .ok_or_else(|| {
                    invalid(format!(
                        "connect_timeout={value} is not a whole number of seconds above 0"
                    ))
                })?;
            timeout = Some(Duration::from_secs(secs));
        } else {
            kept.push((name.into_owned(), value.into_owned()));
        }
    }
    if timeout.is_none() {
        return Ok((url.to_owned(), None));
    }
    if kept.is_empty() {
        parsed.set_query(None);
    } else {
        parsed.query_pairs_mut().clear().extend_pairs(kept);
    }
    Ok((parsed.to_string(), timeout))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_timeout_is_taken_out_and_read_in_seconds() {
        let (url, t) =
            take_connect_timeout("postgres://u:p@h:5432/d?connect_timeout=3&sslmode=disable")
                .unwrap();
        assert_eq!(t, Some(Duration::from_secs(3)));
        assert_eq!(url, "postgres://u:p@h:5432/d?sslmode=disable");
        let (url, t) = take_connect_timeout("postgres://h/d?connect_timeout=1").unwrap();
        assert_eq!(
            (url.as_str(), t),
            ("postgres://h/d", Some(Duration::from_secs(1)))
        );
        let (url, t) = take_connect_timeout("postgres://h/d?sslmode=require").unwrap();
        assert_eq!((url.as_str(), t), ("postgres://h/d?sslmode=require", None));
    }

    #[test]
    fn a_bad_connect_timeout_is_named_and_the_password_hidden() {
        for bad in ["0", "-1", "2.5", "soon"] {
            let err =
                take_connect_timeout(&format!("postgres://u:hunter2@h/d?connect_timeout={bad}"))
                    .unwrap_err()
                    .to_string();
            assert!(err.contains("connect_timeout"), "{err}");
            assert!(!err.contains("hunter2"), "{err}");
        }
    }
}
