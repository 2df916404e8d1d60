//! Server URLs: `valkey://` and `redis://`, or `valkeys://` and
//! `rediss://` for TLS with the `ca_cert=`, `client_cert=` and
//! `client_key=` query parameters, and `partitions=P` on either, checked
//! with messages that name the problem and never echo a password.
//!
//! A URL may name several seed nodes — `valkey://a:1,b:2` and/or repeated
//! `?node=host:port` — tried in turn at startup and kept as places to ask
//! for the topology; the scheme, credentials, database and TLS settings
//! apply to every one of them.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use ff_core::engine_error::EngineError;
use ff_core::stream_subscribe::MAX_PARTITIONS;
use redis::RedisConnectionInfo;

use crate::tls::{Tls, TlsOptions};
use crate::transport::Endpoint;

/// The port when the URL names none.
const DEFAULT_PORT: u16 = 6379;
/// Most seed nodes one URL may name.
pub(crate) const MAX_SEEDS: usize = 64;

/// One seed node of a URL: where to connect first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Seed {
    /// Host name or IP address (no brackets).
    pub(crate) host: String,
    /// TCP port.
    pub(crate) port: u16,
}

/// A checked server URL: its parts, and a redacted form for messages, logs
/// and `Debug`.
#[derive(Clone)]
pub(crate) struct ServerUrl {
    /// At least one; the first named first.
    seeds: Vec<Seed>,
    db: u16,
    username: Option<String>,
    password: Option<String>,
    tls: Option<TlsOptions>,
    partitions: Option<u16>,
    redacted: String,
}

impl fmt::Debug for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted)
    }
}

impl ServerUrl {
    /// The URL with any password replaced by `***`.
    pub(crate) fn redacted(&self) -> &str {
        &self.redacted
    }

    /// The partition count the URL's `partitions=` asks for, if any.
    pub(crate) fn partitions(&self) -> Option<u16> {
        self.partitions
    }

    /// The endpoint of each seed node, in order, with the URL's TLS
    /// configuration (loaded once, from the certificate files),
    /// credentials and database. `Err` names the parameter and file at
    /// fault.
    pub(crate) fn endpoints(&self) -> Result<Vec<Endpoint>, EngineError> {
        let first = self.endpoint()?;
        Ok(self
            .seeds
            .iter()
            .map(|seed| {
                let mut endpoint = first.clone();
                endpoint.host.clone_from(&seed.host);
                endpoint.port = seed.port;
                endpoint
            })
            .collect())
    }

    /// The endpoint of the first seed, with its TLS configuration loaded
    /// (reads the certificate files). `Err` names the parameter and file
    /// at fault.
    pub(crate) fn endpoint(&self) -> Result<Endpoint, EngineError> {
        let tls = match &self.tls {
            None => None,
            Some(options) => Some(Arc::new(Tls::load(options).map_err(|why| {
                EngineError::validation(format!("backend URL {}: {why}", self.redacted))
            })?)),
        };
        Ok(Endpoint {
            host: self.seeds[0].host.clone(),
            port: self.seeds[0].port,
            tls,
            redis: RedisConnectionInfo {
                db: i64::from(self.db),
                username: self.username.clone(),
                password: self.password.clone(),
                ..RedisConnectionInfo::default()
            },
            keepalive: None,
        })
    }

    /// Parse `valkey[s]://[user[:password]@]host[:port][,host[:port]…][/db][?params]`
    /// (or `redis[s]://`), where `params` may repeat `node=host[:port]` to
    /// name more seeds.
    pub(crate) fn parse(url: &str) -> Result<Self, EngineError> {
        let url = url.trim();
        let invalid =
            |why: String| EngineError::validation(format!("backend URL {}{why}", redact(url)));
        let (scheme, rest) = url.split_once("://").ok_or_else(|| {
            invalid(" has no scheme; use valkey://host:port[/db] (valkeys:// for TLS)".into())
        })?;
        let tls = match scheme.to_ascii_lowercase().as_str() {
            "valkey" | "redis" => false,
            "valkeys" | "rediss" => true,
            _ => {
                return Err(invalid(format!(
                    ": unknown scheme {scheme:?}; use valkey:// or redis:// (valkeys:// or rediss:// for TLS)"
                )))
            }
        };
        // The user-info first: a password may hold `/ ? # @` unencoded.
        let (userinfo, rest) = ff_core::redact::split_userinfo(rest);
        if rest.contains('#') {
            return Err(invalid(": fragments are not allowed".into()));
        }
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (host_port, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let mut seeds = Vec::new();
        for part in host_port.split(',') {
            seeds.push(parse_seed(part).map_err(&invalid)?);
        }
        let db = path.trim_start_matches('/');
        let db = if db.is_empty() {
            0
        } else {
            db.parse::<u16>().map_err(|_| {
                invalid(format!(
                    ": database {db:?} is not a number (use /0, /1, ...)"
                ))
            })?
        };
        let (username, password) = match userinfo {
            None => (None, None),
            Some(info) => {
                let decode = |s: &str, what: &str| {
                    percent_decode(s).ok_or_else(|| {
                        invalid(format!(": the {what} is not valid percent-encoded UTF-8"))
                    })
                };
                match info.split_once(':') {
                    Some((u, p)) => (
                        Some(decode(u, "user name")?).filter(|u| !u.is_empty()),
                        Some(decode(p, "password")?),
                    ),
                    // `redis://secret@host` puts the password in the user slot.
                    None => (None, Some(decode(info, "password")?)),
                }
            }
        };
        let mut options = TlsOptions::default();
        let mut partitions = None;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            if name == "node" {
                let value = percent_decode(value)
                    .ok_or_else(|| invalid(": node= is not valid percent-encoded UTF-8".into()))?;
                seeds.push(parse_seed(&value).map_err(&invalid)?);
                continue;
            }
            if name == "partitions" {
                partitions = Some(
                    value
                        .parse::<u16>()
                        .ok()
                        .filter(|p| (1..=MAX_PARTITIONS).contains(p))
                        .ok_or_else(|| {
                            invalid(format!(
                                ": partitions={:?} is not a number from 1 to {MAX_PARTITIONS}",
                                value.chars().take(20).collect::<String>()
                            ))
                        })?,
                );
                continue;
            }
            if !TlsOptions::PARAMETERS.contains(&name) {
                return Err(invalid(format!(
                    ": unknown parameter {name:?}; the parameters are node=, partitions=, and ca_cert=, client_cert= and client_key= (TLS only)"
                )));
            }
            if !tls {
                return Err(invalid(format!(
                    ": {name}= needs a TLS URL (valkeys:// or rediss://)"
                )));
            }
            let value = percent_decode(value)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| invalid(format!(": {name}= needs a file path")))?;
            options.set(name, PathBuf::from(value));
        }
        let mut unique: Vec<Seed> = Vec::with_capacity(seeds.len());
        for seed in seeds {
            if !unique.contains(&seed) {
                unique.push(seed);
            }
        }
        if unique.len() > MAX_SEEDS {
            return Err(invalid(format!(
                " names {} seed nodes; name at most {MAX_SEEDS} (any few nodes of a cluster lead to the rest)",
                unique.len()
            )));
        }
        Ok(Self {
            seeds: unique,
            db,
            username,
            password,
            tls: tls.then_some(options),
            partitions,
            redacted: redact(url),
        })
    }
}

/// One seed, `host[:port]` (IPv6 in brackets): `Err` says what is wrong,
/// as the end of a sentence about the URL.
fn parse_seed(s: &str) -> Result<Seed, String> {
    let (host, port) = split_host_port(s);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(
            " names no host (or an empty one in a list); use valkey://host:port[,host:port…][/db]"
                .into(),
        );
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => match p.parse::<u16>() {
            Ok(p) if p != 0 => p,
            _ => {
                return Err(format!(
                    ": port {:?} of {:?} is not a number in 1..=65535",
                    p.chars().take(20).collect::<String>(),
                    host.chars().take(80).collect::<String>()
                ))
            }
        },
    };
    Ok(Seed {
        host: host.to_owned(),
        port,
    })
}

/// `%XX`-decode `s`; `None` for a bad escape or invalid UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
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

/// `url` with its password hidden (see [`ff_core::redact::redact_url`]).
pub(crate) fn redact(url: &str) -> String {
    ff_core::redact::redact_url(url)
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
    fn urls_parse_into_host_port_db_and_credentials() {
        let u = ServerUrl::parse("valkey://127.0.0.1:6379/2").unwrap();
        assert_eq!(
            (u.seeds[0].host.as_str(), u.seeds[0].port, u.db),
            ("127.0.0.1", 6379, 2)
        );
        assert!(u.tls.is_none());
        let u = ServerUrl::parse("redis://localhost").unwrap();
        assert_eq!(
            (u.seeds[0].host.as_str(), u.seeds[0].port, u.db),
            ("localhost", 6379, 0)
        );
        let u = ServerUrl::parse("VALKEY://[::1]:7000").unwrap();
        assert_eq!((u.seeds[0].host.as_str(), u.seeds[0].port), ("::1", 7000));
        let u = ServerUrl::parse("valkey://app:p%40ss%3Aword@h:1").unwrap();
        assert_eq!(u.username.as_deref(), Some("app"));
        assert_eq!(u.password.as_deref(), Some("p@ss:word"));
        let u = ServerUrl::parse("redis://:secret@h").unwrap();
        assert_eq!((u.username, u.password.as_deref()), (None, Some("secret")));
    }

    fn seeds(u: &ServerUrl) -> Vec<(String, u16)> {
        u.seeds.iter().map(|s| (s.host.clone(), s.port)).collect()
    }

    #[test]
    fn several_seeds_come_from_a_host_list_and_repeated_node_parameters() {
        let u = ServerUrl::parse("valkey://app:hunter2@a:7000,b,[::1]:7002/0?node=c:7003&node=%5B::2%5D:7004&partitions=4").unwrap();
        assert_eq!(
            seeds(&u),
            [
                ("a".to_owned(), 7000),
                ("b".to_owned(), 6379),
                ("::1".to_owned(), 7002),
                ("c".to_owned(), 7003),
                ("::2".to_owned(), 7004),
            ]
        );
        assert_eq!(u.partitions(), Some(4));
        let endpoints = u.endpoints().unwrap();
        assert_eq!(endpoints.len(), 5);
        for (e, (host, port)) in endpoints.iter().zip(seeds(&u)) {
            assert_eq!((e.host.as_str(), e.port), (host.as_str(), port));
            assert_eq!(
                e.redis.username.as_deref(),
                Some("app"),
                "credentials apply to every seed"
            );
            assert_eq!(e.redis.password.as_deref(), Some("hunter2"));
            assert!(!format!("{e:?}").contains("hunter2"));
        }
        assert!(!format!("{u:?}").contains("hunter2"));
        let u = ServerUrl::parse("valkey://h:1?node=h:1&node=h:2").unwrap();
        assert_eq!(
            seeds(&u),
            [("h".to_owned(), 1), ("h".to_owned(), 2)],
            "duplicates once"
        );
        let u = ServerUrl::parse("valkeys://a:1,b:2?ca_cert=/ca.pem&node=c:3").unwrap();
        assert_eq!(seeds(&u).len(), 3);
        assert!(u.tls.is_some(), "TLS applies to every seed");
    }

    #[test]
    fn bad_seed_lists_name_the_problem_without_the_password() {
        invalid("valkey://u:hunter2@a:1,", "names no host");
        invalid("valkey://u:hunter2@a:1,,b:2", "names no host");
        invalid("valkey://u:hunter2@,a:1", "names no host");
        invalid("valkey://u:hunter2@a:1,b:x", "port \"x\" of \"b\"");
        invalid("valkey://u:hunter2@a:1?node=", "names no host");
        invalid(
            "valkey://u:hunter2@a:1?node=b:70000",
            "port \"70000\" of \"b\"",
        );
        invalid("valkey://u:hunter2@a:1?node=%zz", "node= is not valid");
        let many: Vec<String> = (1..=65).map(|p| format!("h:{p}")).collect();
        invalid(
            &format!("valkey://u:hunter2@{}", many.join(",")),
            "at most 64",
        );
    }

    #[test]
    fn partitions_come_from_the_query_on_either_scheme() {
        assert_eq!(ServerUrl::parse("valkey://h").unwrap().partitions(), None);
        let u = ServerUrl::parse("valkey://h:7000?partitions=8").unwrap();
        assert_eq!(u.partitions(), Some(8));
        let u = ServerUrl::parse("valkeys://h?partitions=256&ca_cert=/ca.pem").unwrap();
        assert_eq!(u.partitions(), Some(256));
        assert!(u.tls.is_some());
    }

    #[test]
    fn tls_urls_carry_their_certificate_paths() {
        let u = ServerUrl::parse(
            "valkeys://h:6380/0?ca_cert=/etc/ff/ca.pem&client_cert=/c%20d.pem&client_key=/k.pem",
        )
        .unwrap();
        let tls = u.tls.clone().unwrap();
        assert_eq!(tls.ca_cert, Some(PathBuf::from("/etc/ff/ca.pem")));
        assert_eq!(tls.client_cert, Some(PathBuf::from("/c d.pem")));
        assert_eq!(tls.client_key, Some(PathBuf::from("/k.pem")));
        assert_eq!(
            ServerUrl::parse("rediss://h").unwrap().tls,
            Some(TlsOptions::default()),
            "system roots by default"
        );
    }

    #[test]
    fn passwords_are_redacted_everywhere() {
        let u = ServerUrl::parse("valkey://app:hunter2@db.example:6379/0").unwrap();
        assert_eq!(u.redacted(), "valkey://app:***@db.example:6379/0");
        assert!(!format!("{u:?}").contains("hunter2"));
        let e = u.endpoint().unwrap();
        assert!(!format!("{e:?}").contains("hunter2"));
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
        invalid("valkey://u:hunter2@:6379", "no host");
        invalid("valkey://u:hunter2@h:port", "port");
        invalid("valkey://u:hunter2@h:0", "port");
        invalid("valkey://u:hunter2@h:6379/abc", "database");
        invalid("valkey://u:hunter2@h?ca_cert=/ca.pem", "needs a TLS URL");
        invalid("valkeys://u:hunter2@h?sslmode=require", "unknown parameter");
        invalid("valkeys://u:hunter2@h?ca_cert=", "needs a file path");
        invalid("valkey://u:hunter2@h#frag", "fragments");
        invalid(
            "valkey://u:hunter2@h?partitions=0",
            "partitions=\"0\" is not a number",
        );
        invalid("valkey://u:hunter2@h?partitions=eight", "from 1 to 256");
        invalid("valkey://u:hunter2@h?partitions=257", "from 1 to 256");
        invalid("valkey://u:hunter2@h?partitions=", "partitions=");
        let u = ServerUrl::parse("valkeys://u:hunter2@h?ca_cert=/nonexistent.pem").unwrap();
        match u.endpoint() {
            Err(EngineError::Validation { detail }) => {
                assert!(detail.contains("ca_cert=/nonexistent.pem"), "{detail}");
                assert!(!detail.contains("hunter2"), "{detail}");
            }
            other => panic!("expected Validation, got {other:?}"),
        }
    }
}
