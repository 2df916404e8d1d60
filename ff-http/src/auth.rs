//! Bearer-token authentication: [`Auth`], [`Token`], the token file format,
//! and the checks the routes apply.
//!
//! # Token file / variable format
//!
//! One token per line (commas and spaces also separate tokens, which suits
//! an environment variable). Blank lines and lines starting with `#` are
//! ignored. A token is read-only unless prefixed `rw:`; `ro:` marks a
//! read-only token explicitly (use it for a secret that itself starts with
//! `rw:`). Secrets are 16 to 512 characters of `A-Z a-z 0-9 - . _ ~ + / =`
//! (the RFC 6750 bearer-token alphabet).
//!
//! ```text
//! # dashboards
//! ro:3f9c1e7a0b5d4c2e8f6a
//! 9d8c7b6a5f4e3d2c1b0a
//! # the billing service publishes
//! rw:a1b2c3d4e5f6a7b8c9d0e1f2
//! ```
//!
//! # Where a token may be presented
//!
//! - `Authorization: Bearer TOKEN`: reads, and publishing with an `rw:` token;
//! - `?access_token=TOKEN` (a browser's `EventSource` cannot send headers):
//!   reads only;
//! - the `ff_token` cookie set by `POST /v1/session`: reads only. It holds a
//!   read-only session value derived from the token (see `session`), never
//!   the token itself, so a write token presented at sign-in is exchanged
//!   for a read session.
//!
//! Tokens are compared in constant time and never logged or echoed.

use std::fmt;
use std::path::{Path, PathBuf};

use axum::http::{header, HeaderMap, StatusCode};

use crate::errors::ApiError;
use crate::session;

/// Name of the session cookie the viewer page sets.
pub const SESSION_COOKIE: &str = "ff_token";
/// Name of the query parameter that may carry a read token.
pub const ACCESS_TOKEN_PARAM: &str = "access_token";

const MIN_TOKEN_LEN: usize = 16;
const MAX_TOKEN_LEN: usize = 512;
const CHALLENGE: &str = "Bearer realm=\"ff\"";
const CHALLENGE_INVALID: &str = "Bearer realm=\"ff\", error=\"invalid_token\"";
const CHALLENGE_SCOPE: &str = "Bearer realm=\"ff\", error=\"insufficient_scope\"";

/// One accepted bearer token. Its `Debug` output never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    secret: String,
    can_write: bool,
}

impl Token {
    /// A token that may subscribe but not publish.
    pub fn read_only(secret: impl Into<String>) -> Result<Self, TokenError> {
        Self::new(secret.into(), false)
    }

    /// A token that may subscribe and publish.
    pub fn read_write(secret: impl Into<String>) -> Result<Self, TokenError> {
        Self::new(secret.into(), true)
    }

    fn new(secret: String, can_write: bool) -> Result<Self, TokenError> {
        check_secret(&secret).map_err(|detail| TokenError::Invalid {
            location: "token".into(),
            detail,
        })?;
        Ok(Self { secret, can_write })
    }

    /// Whether this token may publish.
    pub fn can_write(&self) -> bool {
        self.can_write
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("secret", &"<redacted>")
            .field("can_write", &self.can_write)
            .finish()
    }
}

/// Who may use the gateway.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Auth {
    /// Every request must present one of these tokens (reads: any token;
    /// publishing: an `rw:` token in the `Authorization` header). An empty
    /// list refuses everything.
    Tokens(Vec<Token>),
    /// No authentication at all: anyone who can reach the address may read
    /// and publish. Only for loopback development setups; never the default.
    NoAuth,
}

impl Auth {
    /// Token authentication.
    pub fn tokens(tokens: Vec<Token>) -> Self {
        Self::Tokens(tokens)
    }

    /// No authentication (explicit opt-in).
    pub fn no_auth() -> Self {
        Self::NoAuth
    }

    /// `true` for [`Auth::NoAuth`].
    pub fn is_no_auth(&self) -> bool {
        matches!(self, Self::NoAuth)
    }
}

/// Why tokens could not be loaded. Never contains a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The token file could not be read.
    #[error("cannot read token file {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The environment variable is not set (or not UTF-8).
    #[error("environment variable {var} is not set or not valid UTF-8")]
    MissingEnv {
        /// The variable's name.
        var: String,
    },
    /// A token is malformed.
    #[error("invalid token at {location}: {detail}")]
    Invalid {
        /// Where (`line 3 of tokens.txt`).
        location: String,
        /// What is wrong (without the secret).
        detail: String,
    },
    /// The source holds no token at all.
    #[error("{source_name} contains no token; add one token per line (`rw:` marks write tokens)")]
    Empty {
        /// The file or variable.
        source_name: String,
    },
}

fn check_secret(secret: &str) -> Result<(), String> {
    let len = secret.chars().count();
    if !(MIN_TOKEN_LEN..=MAX_TOKEN_LEN).contains(&len) {
        return Err(format!(
            "a token must be {MIN_TOKEN_LEN}..={MAX_TOKEN_LEN} characters, this one has {len}"
        ));
    }
    if let Some(bad) = secret
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-._~+/=".contains(*c)))
    {
        let shown = if bad.is_ascii_graphic() {
            format!("{bad:?}")
        } else {
            format!("U+{:04X}", bad as u32)
        };
        return Err(format!(
            "character {shown} is not allowed; use A-Z a-z 0-9 - . _ ~ + / ="
        ));
    }
    Ok(())
}

/// Parse tokens in the documented format. `source_name` names the origin
/// in errors (a file name, a variable name).
pub fn parse_tokens(text: &str, source_name: &str) -> Result<Vec<Token>, TokenError> {
    let mut tokens = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        for entry in line
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|e| !e.is_empty())
        {
            let (secret, can_write) = if let Some(s) = entry.strip_prefix("rw:") {
                (s, true)
            } else if let Some(s) = entry.strip_prefix("ro:") {
                (s, false)
            } else {
                (entry, false)
            };
            check_secret(secret).map_err(|detail| TokenError::Invalid {
                location: format!("line {} of {source_name}", i + 1),
                detail,
            })?;
            tokens.push(Token {
                secret: secret.to_owned(),
                can_write,
            });
        }
    }
    if tokens.is_empty() {
        return Err(TokenError::Empty {
            source_name: source_name.to_owned(),
        });
    }
    Ok(tokens)
}

/// Load tokens from a file in the documented format. Warns (through
/// `tracing`) when the file is readable by other users.
pub fn load_tokens_from_file(path: impl AsRef<Path>) -> Result<Vec<Token>, TokenError> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|source| TokenError::Io {
        path: path.to_owned(),
        source,
    })?;
    warn_if_shared(path);
    parse_tokens(&text, &path.display().to_string())
}

#[cfg(unix)]
fn warn_if_shared(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                "token file is readable by other users; consider `chmod 600`"
            );
        }
    }
}

#[cfg(not(unix))]
fn warn_if_shared(_path: &Path) {}

/// Load tokens from environment variable `var` in the documented format
/// (tokens separated by newlines, commas or spaces).
pub fn load_tokens_from_env(var: &str) -> Result<Vec<Token>, TokenError> {
    let text = std::env::var(var).map_err(|_| TokenError::MissingEnv {
        var: var.to_owned(),
    })?;
    parse_tokens(&text, &format!("${var}"))
}

/// Compare in time that depends only on the configured secret's length.
fn constant_time_eq(presented: &[u8], secret: &[u8]) -> bool {
    let mut diff = u8::from(presented.len() != secret.len());
    for (i, s) in secret.iter().enumerate() {
        let p = presented.get(i).copied().unwrap_or(0);
        diff |= p ^ s;
    }
    std::hint::black_box(diff) == 0
}

/// The rights of a presented secret: `None` if no token matches. Every
/// configured token is compared, whatever matched earlier.
fn lookup(tokens: &[Token], presented: &str) -> Option<bool> {
    let mut found = false;
    let mut can_write = false;
    for t in tokens {
        let hit = constant_time_eq(presented.as_bytes(), t.secret.as_bytes());
        found |= hit;
        can_write |= hit & t.can_write;
    }
    found.then_some(can_write)
}

/// What a request needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Need {
    Read,
    Write,
}

fn unauthorized(detail: &str, challenge: &'static str) -> ApiError {
    let mut e = ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", detail);
    e.www_authenticate = Some(challenge);
    e
}

/// The secret of an `Authorization: Bearer` header: `Ok(None)` when absent.
fn bearer(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let malformed = || {
        unauthorized(
            "the Authorization header must be `Bearer TOKEN`",
            CHALLENGE_INVALID,
        )
    };
    let text = value.to_str().map_err(|_| malformed())?;
    let (scheme, rest) = text.trim().split_once(' ').ok_or_else(malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(malformed());
    }
    Ok(Some(rest.trim()))
}

/// The value of the session cookie, if the request carries one.
pub(crate) fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim_matches('"'))
}

/// Check a request's credentials. `query_token` is the `access_token`
/// query parameter, if any. The header wins over the query parameter,
/// which wins over the cookie; only the header can authorise a write.
pub(crate) fn authorize(
    auth: &Auth,
    headers: &HeaderMap,
    query_token: Option<&str>,
    need: Need,
) -> Result<(), ApiError> {
    let tokens = match auth {
        Auth::NoAuth => return Ok(()),
        Auth::Tokens(tokens) => tokens,
    };
    if let Some(secret) = bearer(headers)? {
        return match lookup(tokens, secret) {
            None => Err(unauthorized(
                "the bearer token is not valid",
                CHALLENGE_INVALID,
            )),
            Some(false) if need == Need::Write => {
                let mut e = ApiError::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "this token is read-only; publishing needs a token marked `rw:`",
                );
                e.www_authenticate = Some(CHALLENGE_SCOPE);
                Err(e)
            }
            Some(_) => Ok(()),
        };
    }
    if need == Need::Write {
        return Err(unauthorized(
            "publishing needs a write token in the `Authorization: Bearer` header; query and cookie tokens authorise reads only",
            CHALLENGE,
        ));
    }
    let (presented, what) = match (query_token, session_cookie(headers)) {
        (Some(t), _) => (t, "the `access_token` parameter is not a valid token"),
        (None, Some(t)) => (
            t,
            "the session has expired or its token is no longer valid; sign in again",
        ),
        (None, None) => {
            return Err(unauthorized(
                "a token is required: `Authorization: Bearer TOKEN`, `?access_token=TOKEN`, or sign in on the viewer page",
                CHALLENGE,
            ))
        }
    };
    let valid = if query_token.is_some() {
        lookup(tokens, presented).is_some()
    } else {
        session::verify(
            tokens.iter().map(|t| t.secret.as_bytes()),
            presented,
            session::now_secs(),
        )
    };
    if valid {
        Ok(())
    } else {
        Err(unauthorized(what, CHALLENGE_INVALID))
    }
}

/// Whether `secret` is any valid token (for `POST /v1/session`).
pub(crate) fn is_valid(auth: &Auth, secret: &str) -> bool {
    match auth {
        Auth::NoAuth => true,
        Auth::Tokens(tokens) => lookup(tokens, secret).is_some(),
    }
}

/// The `Set-Cookie` value of a read-only session for the valid token
/// `secret`, ending [`session::SESSION_LIFETIME`] from now.
pub(crate) fn session_set_cookie(secret: &str, secure: bool) -> String {
    let lifetime = session::SESSION_LIFETIME.as_secs();
    let value = session::mint(secret.as_bytes(), session::now_secs() + lifetime);
    let secure = if secure { "; Secure" } else { "" };
    format!(
        "{SESSION_COOKIE}={value}; Path=/; Max-Age={lifetime}; HttpOnly; SameSite=Strict{secure}"
    )
}

/// The `Set-Cookie` value that removes the session cookie.
pub(crate) fn session_clear_cookie(secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const R: &str = "read-token-0123456789";
    const W: &str = "write-token-0123456789";

    fn auth() -> Auth {
        Auth::tokens(parse_tokens(&format!("# comment\n{R}\n\nrw:{W}\n"), "test").unwrap())
    }

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(k.clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn token_file_marks_write_tokens_with_rw_prefix() {
        let tokens = parse_tokens(&format!("{R}, ro:{W}\n  rw:{W}\n"), "t").unwrap();
        assert_eq!(tokens.len(), 3);
        assert!(!tokens[0].can_write());
        assert!(!tokens[1].can_write());
        assert_eq!(tokens[1].secret, W);
        assert!(tokens[2].can_write());
        assert!(parse_tokens(&format!("ro:rw:{W}"), "t").is_err());
    }

    #[test]
    fn bad_tokens_are_rejected_without_echoing_them() {
        let err = parse_tokens("short", "tokens.txt").unwrap_err().to_string();
        assert!(err.contains("line 1 of tokens.txt"), "{err}");
        assert!(!err.contains("short"), "{err}");
        let err = parse_tokens("# only a comment\n", "tokens.txt").unwrap_err();
        assert!(matches!(err, TokenError::Empty { .. }));
        let secret = "abcdefghijklmnop\u{e9}q";
        let err = parse_tokens(secret, "t").unwrap_err().to_string();
        assert!(!err.contains(secret), "{err}");
        assert!(format!("{:?}", Token::read_only(R).unwrap()).contains("redacted"));
        assert!(!format!("{:?}", Token::read_only(R).unwrap()).contains(R));
    }

    #[test]
    fn tokens_load_from_an_environment_variable() {
        let var = "FF_HTTP_TEST_TOKENS_7F3A";
        std::env::set_var(var, format!("{R},rw:{W}"));
        let tokens = load_tokens_from_env(var).unwrap();
        assert_eq!(tokens.len(), 2);
        assert!(tokens[1].can_write());
        std::env::remove_var(var);
        assert!(matches!(
            load_tokens_from_env(var),
            Err(TokenError::MissingEnv { .. })
        ));
    }

    #[test]
    fn constant_time_eq_matches_only_equal_strings() {
        assert!(constant_time_eq(b"abcdef", b"abcdef"));
        assert!(!constant_time_eq(b"abcdeg", b"abcdef"));
        assert!(!constant_time_eq(b"abcde", b"abcdef"));
        assert!(!constant_time_eq(b"abcdefg", b"abcdef"));
        assert!(!constant_time_eq(b"", b"abcdef"));
    }

    #[test]
    fn header_tokens_read_and_write_by_their_rights() {
        let a = auth();
        let read = headers(&[(header::AUTHORIZATION, &format!("Bearer {R}"))]);
        let write = headers(&[(header::AUTHORIZATION, &format!("bearer  {W}"))]);
        assert!(authorize(&a, &read, None, Need::Read).is_ok());
        let e = authorize(&a, &read, None, Need::Write).unwrap_err();
        assert_eq!(e.status, StatusCode::FORBIDDEN);
        assert!(authorize(&a, &write, None, Need::Write).is_ok());
        let bad = headers(&[(header::AUTHORIZATION, "Bearer nope-nope-nope-nope")]);
        let e = authorize(&a, &bad, Some(R), Need::Read).unwrap_err();
        assert_eq!(e.status, StatusCode::UNAUTHORIZED);
        assert!(!e.detail.contains("nope"));
        let basic = headers(&[(header::AUTHORIZATION, "Basic dXNlcjpwYXNz")]);
        assert_eq!(
            authorize(&a, &basic, None, Need::Read).unwrap_err().status,
            StatusCode::UNAUTHORIZED
        );
    }

    #[test]
    fn query_and_cookie_tokens_authorise_reads_only() {
        let a = auth();
        let none = HeaderMap::new();
        assert!(authorize(&a, &none, Some(W), Need::Read).is_ok());
        assert_eq!(
            authorize(&a, &none, Some(W), Need::Write)
                .unwrap_err()
                .status,
            StatusCode::UNAUTHORIZED
        );
        let raw = headers(&[(header::COOKIE, &format!("theme=dark; ff_token={W}"))]);
        assert!(authorize(&a, &raw, None, Need::Read).is_err());
        let set = session_set_cookie(W, false);
        assert!(!set.contains(W), "{set}");
        let value = set.split(';').next().unwrap();
        let cookie = headers(&[(header::COOKIE, &format!("theme=dark; {value}"))]);
        assert!(authorize(&a, &cookie, None, Need::Read).is_ok());
        assert_eq!(
            authorize(&a, &cookie, None, Need::Write)
                .unwrap_err()
                .status,
            StatusCode::UNAUTHORIZED
        );
        let e = authorize(&a, &none, None, Need::Read).unwrap_err();
        assert_eq!(e.status, StatusCode::UNAUTHORIZED);
        assert_eq!(e.www_authenticate, Some(CHALLENGE));
        assert!(authorize(&Auth::NoAuth, &none, None, Need::Write).is_ok());
    }
}
