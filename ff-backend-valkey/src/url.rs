//! Server URLs: `valkey://` and `redis://`, checked with messages that
//! name the problem and never echo a password.

use std::fmt;

use ff_core::engine_error::EngineError;

/// A checked server URL: the form handed to the client (`redis://…`) and a
/// redacted form for messages, logs and `Debug`.
#[derive(Clone)]
pub(crate) struct ServerUrl {
    client_url: String,
    redacted: String,
}

impl fmt::Debug for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted)
    }
}

impl ServerUrl {
    /// The URL for the `redis` client (scheme `redis://`).
    pub(crate) fn client_url(&self) -> &str {
        &self.client_url
    }

    /// The URL with any password replaced by `***`.
    pub(crate) fn redacted(&self) -> &str {
        &self.redacted
    }

    /// Parse `valkey://[user[:password]@]host[:port][/db]` (or `redis://`).
    pub(crate) fn parse(url: &str) -> Result<Self, EngineError> {
        let url = url.trim();
        let (scheme, rest) = url.split_once("://").ok_or_else(|| {
            EngineError::validation(format!(
                "backend URL {} has no scheme; use valkey://host:port[/db] or redis://host:port[/db]",
                redact(url)
            ))
        })?;
        match scheme.to_ascii_lowercase().as_str() {
            "valkey" | "redis" => {}
            "valkeys" | "rediss" => {
                return Err(EngineError::validation(format!(
                    "backend URL {}: TLS ({scheme}://) is not supported by this build; use valkey:// over a trusted network or a TLS proxy",
                    redact(url)
                )))
            }
            _ => {
                return Err(EngineError::validation(format!(
                    "backend URL {}: unknown scheme {scheme:?}; use valkey:// or redis://",
                    redact(url)
                )))
            }
        }
        let (authority, path) = match rest.find(['/', '?', '#']) {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let (host, port) = split_host_port(host_port);
        if host.is_empty() {
            return Err(EngineError::validation(format!(
                "backend URL {} names no host; use valkey://host:port[/db]",
                redact(url)
            )));
        }
        if let Some(port) = port {
            if port.parse::<u16>().map_or(true, |p| p == 0) {
                return Err(EngineError::validation(format!(
                    "backend URL {}: port {port:?} is not a number in 1..=65535",
                    redact(url)
                )));
            }
        }
        if path.starts_with('#') {
            return Err(EngineError::validation(format!(
                "backend URL {}: fragments are not allowed",
                redact(url)
            )));
        }
        let db = path.split('?').next().unwrap_or("").trim_start_matches('/');
        if !db.is_empty() && db.parse::<u16>().is_err() {
            return Err(EngineError::validation(format!(
                "backend URL {}: database {db:?} is not a number (use /0, /1, ...)",
                redact(url)
            )));
        }
        Ok(Self {
            client_url: format!("redis://{rest}"),
            redacted: redact(url),
        })
    }
}

/// Split `host[:port]`, keeping IPv6 brackets with the host.
fn split_host_port(s: &str) -> (&str, Option<&str>) {
    if let Some(end) = s.strip_prefix('[').and_then(|r| r.find(']')) {
        let host = &s[..end + 2];
        let rest = &s[end + 2..];
        return (host, rest.strip_prefix(':'));
    }
    match s.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (s, None),
    }
}

/// `url` with the password of its user-info (if any) replaced by `***`.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        // Without a scheme we cannot tell a password apart: show nothing
        // that could be one.
        return if url.contains('@') {
            "<url with credentials>".to_owned()
        } else {
            url.to_owned()
        };
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            let hidden = if userinfo.contains(':') || user.is_empty() {
                format!("{user}:***")
            } else {
                // `redis://secret@host` puts the password in the user slot.
                "***".to_owned()
            };
            format!("{scheme}://{hidden}@{host}{tail}")
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid(url: &str, needle: &str) {
        match ServerUrl::parse(url) {
            Err(EngineError::Validation { detail }) => {
                assert!(detail.contains(needle), "{detail:?} lacks {needle:?}");
                assert!(!detail.contains("hunter2"), "{detail:?} leaks the password");
            }
            other => panic!("expected Validation for {url}, got {other:?}"),
        }
    }

    #[test]
    fn valkey_and_redis_schemes_map_to_the_client_scheme() {
        let u = ServerUrl::parse("valkey://127.0.0.1:6379/2").unwrap();
        assert_eq!(u.client_url(), "redis://127.0.0.1:6379/2");
        let u = ServerUrl::parse("redis://localhost").unwrap();
        assert_eq!(u.client_url(), "redis://localhost");
        let u = ServerUrl::parse("VALKEY://[::1]:7000").unwrap();
        assert_eq!(u.client_url(), "redis://[::1]:7000");
    }

    #[test]
    fn passwords_are_redacted_everywhere() {
        let u = ServerUrl::parse("valkey://app:hunter2@db.example:6379/0").unwrap();
        assert_eq!(u.redacted(), "valkey://app:***@db.example:6379/0");
        assert!(!format!("{u:?}").contains("hunter2"));
        assert_eq!(
            redact("redis://:hunter2@h:1"),
            "redis://:***@h:1",
            "password without user"
        );
        assert_eq!(redact("redis://hunter2@h"), "redis://***@h");
        assert!(!redact("hunter2@h").contains("hunter2"));
    }

    #[test]
    fn bad_urls_name_the_problem_without_the_password() {
        invalid("127.0.0.1:6379", "no scheme");
        invalid("postgres://u:hunter2@h/db", "unknown scheme");
        invalid("rediss://u:hunter2@h", "TLS");
        invalid("valkey://u:hunter2@:6379", "no host");
        invalid("valkey://u:hunter2@h:port", "port");
        invalid("valkey://u:hunter2@h:0", "port");
        invalid("valkey://u:hunter2@h:6379/abc", "database");
    }
}
