//! The viewer's session: what a sign-in request must look like, and the
//! read-only value the session cookie holds instead of a token.
//!
//! Invariants:
//! - a sign-in is accepted only as `Content-Type: application/json` from
//!   the gateway's own origin, so an HTML form on another site (which can
//!   send only `text/plain`, urlencoded or multipart bodies, and only with
//!   its own `Origin`) cannot set the cookie;
//! - the cookie never holds a token: it holds `r1.EXPIRY.MAC`, where MAC is
//!   HMAC-SHA256 keyed by the token's secret over the expiry. The value
//!   proves a valid token was presented, reveals nothing of it, authorises
//!   reads only (a bearer header never accepts it), ends at EXPIRY, and
//!   stops working once the token is removed from the gateway's tokens.
//!   Being derived from the token alone, it survives a restart and is
//!   accepted by every gateway that shares the token file.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{header, HeaderMap, StatusCode};
use ring::hmac;

use crate::errors::ApiError;

/// How long a session value stays valid after sign-in.
pub(crate) const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 60 * 60);

const VERSION: &str = "r1";
const CONTEXT: &[u8] = b"ff read-only viewer session r1\n";

/// Seconds since the Unix epoch, now.
pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn tag(secret: &[u8], expires: u64) -> hmac::Tag {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(CONTEXT);
    ctx.update(expires.to_string().as_bytes());
    ctx.sign()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

/// The session value for a token with `secret`, valid until `expires`
/// (seconds since the epoch).
pub(crate) fn mint(secret: &[u8], expires: u64) -> String {
    format!("{VERSION}.{expires}.{}", hex(tag(secret, expires).as_ref()))
}

/// Whether `value` is an unexpired session value minted for one of
/// `secrets`. Every secret is tried, whatever matched earlier.
pub(crate) fn verify<'a>(secrets: impl Iterator<Item = &'a [u8]>, value: &str, now: u64) -> bool {
    let mut parts = value.split('.');
    let (Some(VERSION), Some(expires), Some(mac), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let (Ok(expires), Some(mac)) = (expires.parse::<u64>(), unhex(mac)) else {
        return false;
    };
    if expires <= now {
        return false;
    }
    let mut found = false;
    for secret in secrets {
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
        let mut msg = CONTEXT.to_vec();
        msg.extend_from_slice(expires.to_string().as_bytes());
        found |= hmac::verify(&key, &msg, &mac).is_ok();
    }
    found
}

/// Refuse a sign-in that a page on another site could have sent: a body
/// that is not `application/json`, a browser's `Sec-Fetch-Site` other
/// than `same-origin` (or `none`), or, without that header, an `Origin`
/// other than the request's own host. `authority` is the request URI's authority (HTTP/2 carries the
/// host there rather than in a `Host` header).
pub(crate) fn check_sign_in_request(
    headers: &HeaderMap,
    authority: Option<&str>,
) -> Result<(), ApiError> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "sign in with `Content-Type: application/json` and a body {\"token\": \"...\"}",
        )
        .with_parameter("Content-Type"));
    }
    let cross_site = || {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "cross_site_sign_in",
            "sign-in is accepted only from the gateway's own viewer page; a page on another site cannot sign a browser in",
        )
    };
    let fetch_site = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    // Only a browser sets `Sec-Fetch-Site`, and no page can forge it; it
    // stays right behind a proxy that rewrites `Host`, so it decides when
    // present, and `Origin` against `Host` decides otherwise.
    if let Some(site) = fetch_site {
        return if site.eq_ignore_ascii_case("same-origin") || site.eq_ignore_ascii_case("none") {
            Ok(())
        } else {
            Err(cross_site())
        };
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .or(authority);
        let origin_authority = origin
            .to_str()
            .ok()
            .and_then(|o| o.split_once("://"))
            .map(|(_, authority)| authority.trim_end_matches('/'));
        match (origin_authority, host) {
            (Some(o), Some(h)) if o.eq_ignore_ascii_case(h.trim()) => {}
            _ => return Err(cross_site()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const S: &[u8] = b"read-token-0123456789";
    const OTHER: &[u8] = b"other-token-0123456789";

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn a_session_value_is_valid_for_its_token_until_it_expires() {
        let value = mint(S, 1_000);
        assert!(!value.contains(std::str::from_utf8(S).unwrap()));
        assert!(verify([OTHER, S].into_iter(), &value, 999));
        assert!(!verify([OTHER].into_iter(), &value, 999));
        assert!(!verify([S].into_iter(), &value, 1_000));
        let forged_expiry = value.replacen("1000", "9000", 1);
        assert!(!verify([S].into_iter(), &forged_expiry, 999));
        for bad in [
            "",
            "r1",
            "r1.x.00",
            "r1.5000.zz",
            "r2.5000.00",
            "r1.5000.00.00",
        ] {
            assert!(!verify([S].into_iter(), bad, 999), "{bad}");
        }
    }

    #[test]
    fn a_token_is_not_a_session_value() {
        let token = std::str::from_utf8(S).unwrap();
        assert!(!verify([S].into_iter(), token, 0));
    }

    #[test]
    fn sign_in_needs_a_json_body() {
        for ct in [
            None,
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
            Some("multipart/form-data; boundary=x"),
        ] {
            let h = match ct {
                Some(ct) => headers(&[("content-type", ct)]),
                None => HeaderMap::new(),
            };
            let e = check_sign_in_request(&h, None).unwrap_err();
            assert_eq!(e.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{ct:?}");
        }
        let h = headers(&[("content-type", "Application/JSON; charset=utf-8")]);
        assert!(check_sign_in_request(&h, None).is_ok());
    }

    #[test]
    fn sign_in_from_another_origin_or_site_is_refused() {
        let json = ("content-type", "application/json");
        let same = headers(&[json, ("host", "gw:8080"), ("origin", "http://gw:8080")]);
        assert!(check_sign_in_request(&same, None).is_ok());
        let other = headers(&[
            json,
            ("host", "gw:8080"),
            ("origin", "https://evil.example"),
        ]);
        assert_eq!(
            check_sign_in_request(&other, None).unwrap_err().status,
            StatusCode::FORBIDDEN
        );
        let null = headers(&[json, ("host", "gw:8080"), ("origin", "null")]);
        assert!(check_sign_in_request(&null, None).is_err());
        let site = headers(&[json, ("sec-fetch-site", "cross-site")]);
        assert!(check_sign_in_request(&site, None).is_err());
        let own = headers(&[json, ("sec-fetch-site", "same-origin")]);
        assert!(check_sign_in_request(&own, None).is_ok());
        let proxied = headers(&[
            json,
            ("host", "127.0.0.1:8080"),
            ("origin", "https://events.example"),
            ("sec-fetch-site", "same-origin"),
        ]);
        assert!(check_sign_in_request(&proxied, None).is_ok());
        let sibling = headers(&[
            json,
            ("origin", "http://gw:8080"),
            ("sec-fetch-site", "same-site"),
        ]);
        assert!(check_sign_in_request(&sibling, None).is_err());
    }
}
